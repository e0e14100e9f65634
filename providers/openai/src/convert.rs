//! Conversions between imgproxy's types and OpenAI's wire format: the request fields and the
//! response into images and metadata. Pure functions only; every byte sent or received goes
//! through `client`, failures are mapped in `errors`, the edits form is built in `edits`.

use base64::Engine as _;
use bytes::Bytes;
use imgproxy_core::{
    provider::{image_mime, ImageMeta},
    GeneratedImage, ProviderError, ProviderRequest, Usage,
};
use serde_json::{Map, Value};

use crate::wire::ImagesResponse;

/// Whether `upstream` is a GPT image model. These answer 400 to `response_format`.
pub(crate) fn is_gpt_image(upstream: &str) -> bool {
    upstream.starts_with("gpt-image") || upstream.starts_with("chatgpt-image")
}

/// The fields of one upstream call: the JSON body of `POST /images/generations`, and the
/// text fields of `POST /images/edits`.
///
/// The validated parameters already carry OpenAI's names, so they go through as they are.
/// The catalog's `upstream_params` come after them: they are the operator's constants for a
/// particular gateway and win. `model`, `prompt` and `n` come last, so nothing can change what
/// is asked for or how many images are billed.
pub(crate) fn generation_body(request: &ProviderRequest<'_>) -> Map<String, Value> {
    let validated = request.request;
    let model = &validated.model;
    let mut body: Map<String, Value> = validated
        .params
        .iter()
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    body.extend(model.upstream_params.clone());
    body.insert("model".into(), Value::from(model.upstream.as_str()));
    body.insert("prompt".into(), Value::from(validated.prompt.as_str()));
    body.insert("n".into(), Value::from(request.n));
    if is_gpt_image(&model.upstream) {
        body.remove("response_format");
    }
    if let Some(partials) = streamed_partials(request) {
        body.insert("stream".into(), Value::Bool(true));
        body.insert("partial_images".into(), Value::from(partials));
    }
    body
}

/// How many partial images to ask the upstream to stream: only when the client streams and
/// asked for at least one (else a plain call answers just as well).
pub(crate) fn streamed_partials(request: &ProviderRequest<'_>) -> Option<u32> {
    request
        .partials
        .and(request.request.partial_images)
        .filter(|&k| k > 0)
}

/// Where the bytes of one returned image are.
#[derive(Debug, PartialEq)]
pub(crate) enum ImageSource {
    /// Decoded from `b64_json`.
    Inline(Bytes),
    /// To download from `url`.
    Url(String),
}

/// One item of a parsed response.
#[derive(Debug, PartialEq)]
pub(crate) struct ParsedImage {
    pub source: ImageSource,
    pub revised_prompt: Option<String>,
}

/// A successful response, before any URL is downloaded.
#[derive(Debug, PartialEq)]
pub(crate) struct ParsedResponse {
    pub images: Vec<ParsedImage>,
    pub usage: Option<Usage>,
    pub meta: ImageMeta,
}

/// Parses a 200 body. Anything unusable is a `Failed` "malformed upstream response".
pub(crate) fn parse_response(body: &[u8]) -> Result<ParsedResponse, ProviderError> {
    let response: ImagesResponse =
        serde_json::from_slice(body).map_err(|e| malformed(e.to_string()))?;
    let Some(data) = response.data else {
        return Err(malformed("no `data`".into()));
    };
    let images = data
        .into_iter()
        .enumerate()
        .map(|(index, image)| {
            let source = match (image.b64_json, image.url) {
                (Some(b64), _) => base64::engine::general_purpose::STANDARD
                    .decode(b64.trim())
                    .map(|bytes| ImageSource::Inline(Bytes::from(bytes)))
                    .map_err(|e| malformed(format!("`data[{index}].b64_json`: {e}")))?,
                (None, Some(url)) => ImageSource::Url(url),
                (None, None) => {
                    return Err(malformed(format!(
                        "`data[{index}]` has neither `b64_json` nor `url`"
                    )))
                }
            };
            Ok(ParsedImage {
                source,
                revised_prompt: image.revised_prompt,
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(ParsedResponse {
        images,
        usage: response.usage.and_then(Usage::lenient),
        meta: ImageMeta {
            background: response.background,
            output_format: response.output_format,
            quality: response.quality,
            size: response.size,
        },
    })
}

/// A finished image. The bytes decide the MIME type; failing that, a download's
/// `Content-Type`, then the `output_format` the upstream reported or we asked for.
pub(crate) fn generated_image(
    bytes: Bytes,
    content_type: Option<&str>,
    output_format: Option<&str>,
    revised_prompt: Option<String>,
) -> GeneratedImage {
    let mime = image_mime(
        &bytes,
        &[content_type, output_format.and_then(mime_of_format)],
    )
    .unwrap_or_else(|| "application/octet-stream".to_owned());
    GeneratedImage {
        bytes,
        mime,
        revised_prompt,
    }
}

/// The MIME type of an OpenAI `output_format`.
fn mime_of_format(format: &str) -> Option<&'static str> {
    match format {
        "png" => Some("image/png"),
        "jpeg" | "jpg" => Some("image/jpeg"),
        "webp" => Some("image/webp"),
        "gif" => Some("image/gif"),
        "svg" => Some("image/svg+xml"),
        _ => None,
    }
}

fn malformed(detail: String) -> ProviderError {
    ProviderError::Failed {
        message: format!("malformed upstream response: {detail}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_need_data_with_an_image_in_each_item() {
        let failed = |body: &[u8]| match parse_response(body) {
            Err(ProviderError::Failed { message }) => message,
            other => panic!("expected a failure, got {other:?}"),
        };
        assert!(failed(br#"{"created": 1}"#).starts_with("malformed upstream response: "));
        assert!(failed(br#"{"data": [{"revised_prompt": "x"}]}"#).contains("data[0]"));
        assert!(failed(br#"{"data": [{"b64_json": "!!"}]}"#).contains("b64_json"));
        let parsed =
            parse_response(br#"{"data": [{"url": "http://x/a.png"}], "usage": 3}"#).unwrap();
        assert_eq!(
            parsed.images[0].source,
            ImageSource::Url("http://x/a.png".into())
        );
        assert_eq!(parsed.usage, None, "an unreadable usage is dropped");
    }

    #[test]
    fn mime_comes_from_bytes_then_content_type_then_format() {
        let png = generated_image(
            Bytes::from_static(b"\x89PNG\r\n\x1a\n"),
            None,
            Some("jpeg"),
            None,
        );
        assert_eq!(png.mime, "image/png");
        let typed = generated_image(Bytes::new(), Some("image/avif; q=1"), Some("png"), None);
        assert_eq!(typed.mime, "image/avif");
        let gif = generated_image(Bytes::new(), Some("text/plain"), Some("gif"), None);
        assert_eq!(gif.mime, "image/gif");
    }
}
