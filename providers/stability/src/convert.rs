//! Conversions between imgproxy's types and Stability's wire format: the multipart form of one
//! generation (driven by the catalog's `upstream_input`) and a 200 answer into an image or a
//! refusal. Pure functions only; every byte sent or received goes through `client`, and
//! non-2xx answers are `error`'s job.

use std::collections::BTreeMap;

use base64::Engine as _;
use bytes::Bytes;
use imgproxy_core::{
    provider::extension_of,
    text_params::form_text,
    upstream::{self, failed, malformed},
    GeneratedImage, ModelSpec, ProviderError, ProviderRequest,
};
use reqwest::{
    header::{HeaderMap, CONTENT_TYPE},
    multipart::{Form, Part},
};

use crate::wire::{Endpoint, InputMapping, JsonImage};

/// Stability's largest seed; 0 asks it for a random one (providers-2.md §11).
const MAX_SEED: i64 = 4_294_967_294;

/// The `finish-reason` (header, or `finish_reason` field) of an image Stability's filter
/// flagged: it sends a blurred image, which is no result (providers-2.md §11.1).
const CONTENT_FILTERED: &str = "CONTENT_FILTERED";
/// The `finish-reason` of an image that is the result.
const SUCCESS: &str = "SUCCESS";

/// The model's `upstream_input`, typed. A bad table is the operator's catalog error.
pub(crate) fn input_mapping(model: &ModelSpec) -> Result<InputMapping, ProviderError> {
    upstream::upstream_input(model)
}

/// The path of the model's route below the API root.
pub(crate) fn path(mapping: &InputMapping) -> String {
    format!(
        "v2beta/stable-image/generate/{}",
        mapping.endpoint.segment()
    )
}

/// The text fields of image number `offset` of `call`, by name.
///
/// Validated parameters go under their own names, `seed` offset per image; `strength` only
/// with an input image (the request's, else the mapping's default). The catalog's
/// `upstream_params` (the operator's constants) come next, then `prompt` and, on `sd3`,
/// `model` and `mode`, so that nothing can change what is asked for or which model bills it.
pub(crate) fn text_fields(
    call: &ProviderRequest<'_>,
    offset: u32,
    mapping: &InputMapping,
) -> Result<BTreeMap<String, String>, ProviderError> {
    let validated = call.request;
    let with_image = check_references(call, mapping)?;
    let mut fields = BTreeMap::new();
    let mut insert = |name: &str, value: serde_json::Value| {
        if let Some(text) = form_text(value) {
            fields.insert(name.to_owned(), text);
        }
    };
    for (name, value) in &validated.params {
        if !matches!(name.as_str(), "seed" | "strength") {
            insert(name, value.clone());
        }
    }
    if let Some(seed) = upstream_seed(call, offset) {
        insert("seed", seed.into());
    }
    let strength = validated.params.get("strength").cloned();
    match (with_image, strength) {
        (true, strength) => {
            let default = mapping.default_strength.map(serde_json::Value::from);
            if let Some(strength) = strength.or(default) {
                insert("strength", strength);
            }
        }
        (false, Some(_)) => {
            // Validation cannot tie a parameter to the presence of an image; refuse rather
            // than drop it.
            return Err(ProviderError::InvalidRequest {
                message: "`strength` says how much an input image counts: give one in `image`"
                    .into(),
                param: Some("strength".into()),
                code: None,
            });
        }
        (false, None) => {}
    }
    for (name, value) in &validated.model.upstream_params {
        insert(name, value.clone());
    }
    insert("prompt", validated.prompt.as_str().into());
    if mapping.endpoint == Endpoint::Sd3 {
        insert("model", call.upstream_model().into());
        let mode = if with_image {
            "image-to-image"
        } else {
            "text-to-image"
        };
        insert("mode", mode.into());
    }
    Ok(fields)
}

/// Whether the call carries an input image. Validation keeps more than one, and any on Core,
/// out (`max_reference_images`); an operator's catalog entry that lets them through gets an
/// error, never a silently dropped image.
fn check_references(
    call: &ProviderRequest<'_>,
    mapping: &InputMapping,
) -> Result<bool, ProviderError> {
    match (call.references.len(), mapping.endpoint) {
        (0, _) => Ok(false),
        (_, Endpoint::Core) => Err(ProviderError::Unsupported {
            feature: "reference images",
        }),
        (1, _) => Ok(true),
        (count, _) => Err(ProviderError::InvalidRequest {
            message: format!("{count} reference images given; Stability takes one"),
            param: Some("image".into()),
            code: None,
        }),
    }
}

/// The seed of image number `offset`: the request's, offset by the image's index in the
/// request so that fanned-out calls differ, wrapped into `1..=MAX_SEED`. A request seed of 0
/// (Stability's "random") stays 0 for every image.
fn upstream_seed(call: &ProviderRequest<'_>, offset: u32) -> Option<i64> {
    let asked = call.request.param_i64("seed")?;
    if asked == 0 {
        return Some(0);
    }
    let index = i64::from(call.first_index) + i64::from(offset);
    Some((asked - 1 + index).rem_euclid(MAX_SEED) + 1)
}

/// The whole form of image number `offset`: the text fields, then the input image as the
/// `image` file part. reqwest's form is `multipart/form-data` with text parts alone too, so
/// no dummy file part is needed (Stability's Python samples add `files={"none": ''}` only to
/// make `requests` send multipart, providers-2.md §11).
pub(crate) fn form(
    call: &ProviderRequest<'_>,
    offset: u32,
    mapping: &InputMapping,
) -> Result<Form, ProviderError> {
    let mut form = Form::new();
    for (name, value) in text_fields(call, offset, mapping)? {
        form = form.text(name, value);
    }
    if let Some(image) = call.references.first() {
        // From `Bytes`, so the length is known and the request gets a `Content-Length`.
        let part = Part::stream(image.bytes.clone())
            .file_name(format!("image.{}", extension_of(&image.mime)))
            .mime_str(&image.mime)
            .map_err(|_| failed("the input image has an unusable MIME type"))?;
        form = form.part("image", part);
    }
    Ok(form)
}

/// Reads a 200 answer: the image's bytes (`Accept: image/*`), or the JSON form, which a proxy
/// may answer with. A `finish-reason` of `CONTENT_FILTERED`, in the header or the JSON field,
/// is a moderation refusal; any other reason but `SUCCESS` a failure naming it.
pub(crate) fn read_answer(
    headers: &HeaderMap,
    body: Bytes,
) -> Result<GeneratedImage, ProviderError> {
    let header = |name| headers.get(name).and_then(|value| value.to_str().ok());
    let content_type = header(CONTENT_TYPE.as_str());
    let json = content_type.is_some_and(|t| t.trim_start().starts_with("application/json"));
    let (bytes, finish_reason) = if json {
        let answer: JsonImage = serde_json::from_slice(&body).map_err(malformed)?;
        let bytes = match answer.image {
            Some(text) => base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .map_err(|e| malformed(format!("`image` is not base64: {e}")))?,
            None => Vec::new(),
        };
        let reason = answer
            .finish_reason
            .or_else(|| header("finish-reason").map(str::to_owned));
        (Bytes::from(bytes), reason)
    } else {
        (body, header("finish-reason").map(str::to_owned))
    };
    match finish_reason.as_deref().map(str::trim) {
        Some(CONTENT_FILTERED) => {
            return Err(ProviderError::ModerationBlocked {
                message: "Stability's content filter flagged the image (finish-reason \
                          CONTENT_FILTERED)"
                    .into(),
            })
        }
        None | Some(SUCCESS) => {}
        Some(other) => {
            return Err(failed(format!(
                "Stability returned no image (finish-reason {})",
                upstream::short(other)
            )))
        }
    }
    // The bytes alone decide: Stability makes PNG, JPEG or WebP, all recognisable, so bytes
    // that are none of them (an error page labelled `image/png`) are no image.
    upstream::sniffed_image(bytes, &[], "Stability's answer is not an image")
}

#[cfg(test)]
mod tests;
