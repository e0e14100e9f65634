//! Conversions between imgproxy's types and xAI's wire format: the request body (and which
//! endpoint it goes to), the response into images, and upstream failures into
//! [`ProviderError`]s. Pure functions only; every byte sent or received goes through `client`.

use std::{collections::BTreeMap, time::Duration};

use imgproxy_core::{
    upstream::{self, ImageSource},
    ProviderError, ProviderRequest, Usage,
};
use imgproxy_provider_openai::compat;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::wire::{ErrorBody, ImagesResponse};

/// The per-model mapping data of a catalog entry's `[models.upstream_input]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct UpstreamInput {
    /// Our `image_size` tier → xAI's `resolution` (`1K` → `1k`).
    resolution_values: BTreeMap<String, String>,
    /// Our `aspect_ratio` → xAI's, where xAI writes a ratio core cannot parse
    /// (`6:13` → `9:19.5`).
    aspect_ratio_values: BTreeMap<String, String>,
}

/// Which xAI endpoint a body goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `POST /images/generations`: text only.
    Generations,
    /// `POST /images/edits`: with reference images (JSON, not multipart).
    Edits,
}

/// The endpoint and JSON body of one upstream call.
///
/// The catalog's `upstream_params` come after the mapped parameters (they are the operator's
/// constants); `model`, `prompt`, `n`, `response_format` and the images come last, so that
/// nothing can change what is asked for, how many images are billed, or how they come back.
pub(crate) fn request_body(call: &ProviderRequest<'_>) -> Result<(Endpoint, Value), ProviderError> {
    let request = call.request;
    let model = &request.model;
    let input: UpstreamInput = upstream::upstream_input(model)?;
    let mapped = |map: &BTreeMap<String, String>, value: &str| {
        map.get(value).cloned().unwrap_or_else(|| value.to_owned())
    };
    let mut body = Map::new();
    if let Some(ratio) = request.param_str("aspect_ratio") {
        let ratio = mapped(&input.aspect_ratio_values, ratio);
        body.insert("aspect_ratio".into(), Value::String(ratio));
    }
    if let Some(tier) = request.param_str("image_size") {
        let resolution = mapped(&input.resolution_values, tier);
        body.insert("resolution".into(), Value::String(resolution));
    }
    compat::copy_text_params(&mut body, call, &["quality", "user"]);
    compat::finish_body(&mut body, call);
    body.insert("response_format".into(), Value::from("b64_json"));

    let image = |reference: &imgproxy_core::ReferenceImage| json!({"url": reference.data_url(), "type": "image_url"});
    let endpoint = match call.references {
        [] => Endpoint::Generations,
        // xAI takes one input as `image` and several as `images`.
        [one] => {
            body.insert("image".into(), image(one));
            Endpoint::Edits
        }
        several => {
            let images = several.iter().map(image).collect();
            body.insert("images".into(), Value::Array(images));
            Endpoint::Edits
        }
    };
    Ok((endpoint, Value::Object(body)))
}

/// One item of a parsed response.
#[derive(Debug, PartialEq)]
pub(crate) struct ParsedImage {
    pub source: ImageSource,
    /// The `mime_type` xAI reported.
    pub mime: Option<String>,
    pub revised_prompt: Option<String>,
}

/// A successful response, before any URL is downloaded.
#[derive(Debug, PartialEq)]
pub(crate) struct ParsedResponse {
    pub images: Vec<ParsedImage>,
    pub usage: Option<Usage>,
}

/// Parses a 200 body. xAI moderates silently with a 200, so moderation is read here:
/// a non-null `block_reason`, an empty `data` or any item with `respect_moderation: false`
/// is a `ModerationBlocked`. Anything else unusable is a `Failed` "malformed upstream
/// response".
pub(crate) fn parse_response(body: &[u8]) -> Result<ParsedResponse, ProviderError> {
    let response: ImagesResponse = compat::read(body)?;
    if let Some(reason) = response.extra.block_reason.as_ref().and_then(block_reason) {
        return Err(ProviderError::ModerationBlocked {
            message: format!("xAI blocked the request: {}", upstream::short(&reason)),
        });
    }
    let data = response.data()?;
    if data.is_empty()
        || data
            .iter()
            .any(|item| item.extra.respect_moderation == Some(false))
    {
        return Err(ProviderError::ModerationBlocked {
            message: "xAI's moderation withheld the image".into(),
        });
    }
    let parsed = response.parse()?;
    let images = parsed
        .images
        .into_iter()
        .map(|image| ParsedImage {
            source: image.source,
            mime: image.extra.mime_type,
            // xAI sends `""` when it kept the prompt.
            revised_prompt: image.revised_prompt.filter(|p| !p.trim().is_empty()),
        })
        .collect();
    Ok(ParsedResponse {
        images,
        usage: parsed.usage,
    })
}

/// The text of a `block_reason` that says something was blocked; `null` and `""` do not.
fn block_reason(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(text) if text.trim().is_empty() => None,
        Value::String(text) => Some(text.clone()),
        other => Some(other.to_string()),
    }
}

/// The error for a non-2xx answer, by status (core's generic mapping, after a 400 about the
/// key); the message comes from whichever of xAI's error shapes the body has, else a short
/// excerpt of the body.
pub(crate) fn error_from_status(
    status: u16,
    retry_after: Option<Duration>,
    body: &[u8],
) -> ProviderError {
    let parsed = serde_json::from_slice::<ErrorBody>(body).unwrap_or_default();
    let message = match (parsed.message(), parsed.code()) {
        (Some(message), Some(code)) if !message.contains(&code) => format!("{message} ({code})"),
        (Some(message), _) => message.to_owned(),
        (None, Some(code)) => code,
        (None, None) => upstream::excerpt(body),
    };
    // xAI answers a wrong key with a 400 rather than a 401 (its API reference): that is the
    // operator's problem, not a fault in the client's request.
    if status == 400 && message.to_lowercase().contains("api key") {
        return ProviderError::Unauthorized { status };
    }
    upstream::status_error(status, retry_after, &message)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn message(error: ProviderError) -> String {
        match error {
            ProviderError::InvalidRequest { message, .. }
            | ProviderError::Failed { message }
            | ProviderError::ModerationBlocked { message } => message,
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn all_three_error_shapes_give_their_message() {
        let openai = br#"{"error": {"message": "bad ratio", "type": "invalid_request_error", "param": null, "code": "invalid_argument"}}"#;
        assert!(
            message(error_from_status(400, None, openai)).ends_with("bad ratio (invalid_argument)")
        );
        let coded =
            br#"{"code": "Client specified an invalid argument", "error": "n must be at most 10"}"#;
        assert!(message(error_from_status(422, None, coded)).contains("n must be at most 10"));
        let plain = br#"{"error": "Argument not supported: size"}"#;
        assert!(
            message(error_from_status(400, None, plain)).ends_with("Argument not supported: size")
        );
        assert!(
            message(error_from_status(502, None, b"<html>\n bad gateway</html>"))
                .ends_with("<html> bad gateway</html>")
        );
        assert_eq!(
            error_from_status(401, None, br#"{"error": "key xai-123"}"#),
            ProviderError::Unauthorized { status: 401 }
        );
    }

    #[test]
    fn silent_moderation_signals_are_moderation_blocked() {
        for body in [
            &br#"{"data": []}"#[..],
            br#"{"data": [{"respect_moderation": false}]}"#,
            br#"{"data": [{"b64_json": "iVBORw=="}], "block_reason": "nsfw"}"#,
        ] {
            assert!(
                matches!(
                    parse_response(body),
                    Err(ProviderError::ModerationBlocked { .. })
                ),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let kept = parse_response(
            br#"{"data": [{"b64_json": "iVBORw==", "respect_moderation": true, "revised_prompt": ""}], "block_reason": null}"#,
        )
        .unwrap();
        assert_eq!(kept.images.len(), 1);
        assert_eq!(kept.images[0].revised_prompt, None);
    }

    #[test]
    fn responses_need_data_with_an_image_in_each_item() {
        imgproxy_testkit::assert_data_items_required(
            parse_response,
            br#"{"data": [{"mime_type": "image/png"}]}"#,
        );
        let parsed = parse_response(
            br#"{"data": [{"url": "http://x/a.jpeg", "b64_json": null, "mime_type": "image/jpeg"}], "usage": {"cost_in_usd_ticks": 200000000}}"#,
        )
        .unwrap();
        assert_eq!(
            parsed.images[0].source,
            ImageSource::Url("http://x/a.jpeg".into())
        );
        assert_eq!(parsed.images[0].mime.as_deref(), Some("image/jpeg"));
        // The bytes decide the MIME type; the reported one is the fallback.
        let png = compat::generated_image(
            Bytes::from_static(b"\x89PNG\r\n\x1a\n"),
            &[Some("image/jpeg"), None],
            None,
        );
        assert_eq!(png.mime, "image/png");
        assert_eq!(
            compat::generated_image(Bytes::new(), &[Some("image/avif"), None], None).mime,
            "image/avif"
        );
        let usage = parsed.usage.unwrap();
        assert_eq!(usage.extra["cost_in_usd_ticks"], 200_000_000);
    }

    #[test]
    fn a_bad_key_is_unauthorized_and_secrets_are_scrubbed() {
        let bad_key = br#"{"code": "Client specified an invalid argument", "error": "Incorrect API key provided: xa***23"}"#;
        assert_eq!(
            error_from_status(400, None, bad_key),
            ProviderError::Unauthorized { status: 400 }
        );
        let error = upstream::status_error(422, None, "prompt echoes xai-secret");
        assert!(!message(error.without_secret("xai-secret")).contains("xai-secret"));
    }
}
