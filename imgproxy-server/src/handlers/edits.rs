//! `POST /v1/images/edits`: OpenAI's multipart form exactly as the SDKs send it (`image` or
//! repeated `image[]`, `mask`, every other field a text part) or the JSON variant (`images:
//! [{image_url} | {file_id}]`, `mask`). Parts are read as they stream in, each image under the
//! image size limit and the whole body under the body limit. The edit is then served like a
//! generation, the images as its references; what a model takes (how many images, a mask) is
//! validation's to say.

use axum::{
    extract::{FromRequest, Multipart, Request, State},
    http::header,
    response::Response,
    Extension,
};
use imgproxy_core::{fetch::FetchPolicy, provider::sniff_mime, Error, ImageInput, ImageRequest};

use crate::{
    auth::Caller,
    error::ApiError,
    extract::{multipart_error, OpenAIJson},
    handlers::{generations, stream::Surface},
    state::AppState,
    telemetry::RequestNote,
};

/// Longest text part (a prompt is at most 32000 characters).
const MAX_TEXT_PART_BYTES: usize = 256 * 1024;

/// Edits images.
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(note): Extension<RequestNote>,
    request: Request,
) -> Result<Response, ApiError> {
    let headers = request.headers().clone();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let edit = if content_type.starts_with("multipart/form-data") {
        let form = Multipart::from_request(request, &state)
            .await
            .map_err(|rejection| ApiError::BadBody {
                message: format!("unreadable multipart form: {}", rejection.body_text()),
                param: None,
            })?;
        read_form(&state, form).await?
    } else {
        let OpenAIJson(edit) = OpenAIJson::<ImageRequest>::from_request(request, &state).await?;
        edit
    };
    if edit.images.as_ref().is_none_or(Vec::is_empty) {
        return Err(Error::invalid_param("image", "an edit needs at least one `image`").into());
    }
    generations::serve(state, caller, &note, &headers, edit, Surface::Edit).await
}

/// Reads the form: image and mask files become data URLs (checked like any reference image
/// later), text parts are typed for the model they name.
async fn read_form(state: &AppState, mut form: Multipart) -> Result<ImageRequest, ApiError> {
    let body_limit = state.max_body_bytes;
    let image_limit = state
        .service
        .gateway()
        .fetch_policy()
        .map_or_else(|| FetchPolicy::default().max_bytes, |p| p.max_bytes);
    let (mut texts, mut images, mut mask) = (Vec::new(), Vec::new(), None);
    while let Some(mut field) = form
        .next_field()
        .await
        .map_err(|e| multipart_error(e, body_limit))?
    {
        let name = field.name().unwrap_or_default().to_owned();
        let (param, limit) = match name.as_str() {
            "image" | "image[]" => ("image", image_limit),
            "mask" => ("mask", image_limit),
            _ if field.file_name().is_some() => {
                return Err(Error::invalid_param(
                    name.clone(),
                    format!("`{name}` is a file; only `image`, `image[]` and `mask` are"),
                )
                .into())
            }
            _ => (name.as_str(), MAX_TEXT_PART_BYTES),
        };
        let mut bytes = Vec::new();
        while let Some(chunk) = field
            .chunk()
            .await
            .map_err(|e| multipart_error(e, body_limit))?
        {
            if bytes.len() + chunk.len() > limit {
                return Err(Error::invalid_param(
                    param,
                    format!("the `{name}` part is larger than {limit} bytes"),
                )
                .into());
            }
            bytes.extend_from_slice(&chunk);
        }
        match param {
            "image" => images.push(data_url(&bytes, field.content_type())),
            "mask" => mask = Some(data_url(&bytes, field.content_type())),
            _ => {
                let text = String::from_utf8(bytes).map_err(|_| {
                    Error::invalid_param(name.clone(), format!("`{name}` is not UTF-8 text"))
                })?;
                texts.push((name, text));
            }
        }
    }
    let gateway = &state.service.gateway();
    Ok(imgproxy_core::text_params::form_request(
        &texts,
        images,
        mask,
        gateway.catalog(),
        gateway.default_model(),
        &|m| gateway.serves(m),
    )?)
}

/// An uploaded file as a data URL, typed by its content (else by its part's type), so that
/// the reference checks (image content, size) apply to it as to any other.
fn data_url(bytes: &[u8], declared: Option<&str>) -> ImageInput {
    use base64::Engine as _;
    let mime = sniff_mime(bytes)
        .or(declared)
        .unwrap_or("application/octet-stream");
    ImageInput::Text(format!(
        "data:{mime};base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    ))
}
