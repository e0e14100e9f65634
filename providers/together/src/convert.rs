//! Conversions between imgproxy's types and Together's wire format: the request body, the
//! response into images, and upstream failures into [`ProviderError`]s. Pure functions only;
//! every byte sent or received goes through `client`.

use std::time::Duration;

use bytes::Bytes;
use imgproxy_core::{
    dimensions::Size,
    upstream::{self, ImageSource},
    GeneratedImage, ProviderError, ProviderRequest,
};
use imgproxy_provider_openai::compat;
use serde_json::{Map, Value};

use crate::wire::ImageFields;

/// The size rendered when a request carries none (Together's own default).
const DEFAULT_SIZE: Size = Size {
    width: 1024,
    height: 1024,
};
/// FLUX sizes are multiples of 16; a size derived from an aspect ratio is rounded to that.
const SIZE_MULTIPLE: u32 = 16;

/// Words in a 4xx message by which Together's NSFW refusal is recognised. Unverified: the
/// wire format documents no moderation signal ("probably a 4xx error", providers.md §8), so
/// a 4xx that talks about NSFW content or the safety checker is taken for one.
const MODERATION_WORDS: [&str; 2] = ["nsfw", "safety"];

/// The JSON body of `POST /images/generations` for one upstream call.
///
/// Only parameters the catalog entry declares reach the body. The catalog's `upstream_params`
/// come after them (the operator's constants); `model`, `prompt`, `n` and `response_format`
/// come last, so that nothing can change what is asked for, how many images are billed, or
/// how they come back. `response_format` is `base64`, Together's name for inline images.
pub(crate) fn request_body(call: &ProviderRequest<'_>) -> Result<Value, ProviderError> {
    if !call.references.is_empty() {
        // Validation keeps them out (`max_reference_images = 0`); never drop them silently.
        return Err(ProviderError::Unsupported {
            feature: "reference images",
        });
    }
    let request = call.request;
    let size = pixel_size(call);
    let mut body = Map::new();
    body.insert("width".into(), Value::from(size.width));
    body.insert("height".into(), Value::from(size.height));
    if let Some(steps) = request.param_i64("steps") {
        body.insert("steps".into(), Value::from(steps));
    }
    if let Some(seed) = call.seed() {
        body.insert("seed".into(), Value::from(seed));
    }
    compat::copy_text_params(&mut body, call, &["negative_prompt", "output_format"]);
    compat::finish_body(&mut body, call);
    body.insert("response_format".into(), Value::from("base64"));
    Ok(Value::Object(body))
}

/// The size to render: the validated `size` (core derives it from an aspect ratio too).
pub(crate) fn pixel_size(call: &ProviderRequest<'_>) -> Size {
    call.request.pixel_size(DEFAULT_SIZE, SIZE_MULTIPLE)
}

/// Parses a 200 body into its images, in `index` order. An answer without `data`, with no
/// image, or with an item that carries neither `b64_json` nor `url` is a `Failed`.
pub(crate) fn parse_response(body: &[u8]) -> Result<Vec<ImageSource>, ProviderError> {
    let mut images = compat::read::<(), ImageFields>(body)?.parse()?.images;
    if images.is_empty() {
        return Err(upstream::failed("Together returned no image"));
    }
    // Stable, so items without an index keep their order.
    images.sort_by_key(|image| image.extra.index.unwrap_or(u32::MAX));
    Ok(images.into_iter().map(|image| image.source).collect())
}

/// A finished image. The bytes decide the MIME type; failing that, a download's
/// `Content-Type`, then the `output_format` asked for.
pub(crate) fn generated_image(
    bytes: Bytes,
    content_type: Option<&str>,
    output_format: Option<&str>,
) -> GeneratedImage {
    let from_format = output_format.and_then(compat::mime_of_format);
    compat::generated_image(bytes, &[content_type, from_format], None)
}

/// The error for a non-2xx answer. A 4xx whose message mentions NSFW content or the safety
/// checker is a moderation block (see [`MODERATION_WORDS`]); everything else maps by status
/// (core's generic mapping).
pub(crate) fn error_from_status(
    status: u16,
    retry_after: Option<Duration>,
    body: &[u8],
) -> ProviderError {
    let error = compat::read_error(body);
    let message = error
        .message()
        .map(str::to_owned)
        .or_else(|| error.code())
        .unwrap_or_else(|| upstream::excerpt(body));
    let lower = message.to_lowercase();
    let client_error = (400..500).contains(&status) && ![401, 403, 429].contains(&status);
    if client_error && MODERATION_WORDS.iter().any(|word| lower.contains(word)) {
        return ProviderError::ModerationBlocked {
            message: format!(
                "Together refused the content: {}",
                upstream::short(&message)
            ),
        };
    }
    upstream::status_error(status, retry_after, &message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(message: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({"error": {"message": message,
            "type": "invalid_request_error", "param": null, "code": null}}))
        .unwrap()
    }

    #[test]
    fn nsfw_and_safety_refusals_are_moderation_only_for_client_errors() {
        for status in [400, 422] {
            assert!(matches!(
                error_from_status(status, None, &envelope("NSFW content detected in image")),
                ProviderError::ModerationBlocked { .. }
            ));
        }
        assert!(matches!(
            error_from_status(
                422,
                None,
                &envelope("The safety checker flagged the prompt")
            ),
            ProviderError::ModerationBlocked { .. }
        ));
        assert!(matches!(
            error_from_status(400, None, &envelope("width must be a multiple of 16")),
            ProviderError::InvalidRequest { .. }
        ));
        assert!(matches!(
            error_from_status(500, None, &envelope("safety service down")),
            ProviderError::Failed { .. }
        ));
        assert_eq!(
            error_from_status(401, None, &envelope("Invalid API key: tgp_v1_secret")),
            ProviderError::Unauthorized { status: 401 }
        );
    }

    #[test]
    fn images_come_back_in_index_order_and_bad_items_fail() {
        let images = parse_response(
            br#"{"object": "list", "data": [{"index": 1, "url": "http://x/b.png", "type": "url"},
                {"index": 0, "b64_json": "iVBORw==", "type": "b64_json"}]}"#,
        )
        .unwrap();
        assert!(matches!(images[0], ImageSource::Inline(_)));
        assert_eq!(images[1], ImageSource::Url("http://x/b.png".into()));
        for body in [
            &br#"{"id": "x"}"#[..],
            br#"{"data": [{"index": 0}]}"#,
            br#"{"data": []}"#,
        ] {
            assert!(matches!(
                parse_response(body),
                Err(ProviderError::Failed { .. })
            ));
        }
    }

    #[test]
    fn mime_comes_from_bytes_then_content_type_then_format() {
        let jpeg = generated_image(Bytes::from_static(b"\xFF\xD8\xFF\xE0"), None, Some("png"));
        assert_eq!(jpeg.mime, "image/jpeg");
        assert_eq!(
            generated_image(Bytes::new(), Some("image/png; x=1"), None).mime,
            "image/png"
        );
        assert_eq!(
            generated_image(Bytes::new(), None, Some("jpeg")).mime,
            "image/jpeg"
        );
    }
}
