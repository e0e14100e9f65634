//! Conversions between imgproxy's types and OpenAI's wire format: the request body, the
//! response into images and metadata, and upstream failures into [`ProviderError`]s. Pure
//! functions only; every byte sent or received goes through `client`.

use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use imgproxy_core::{
    provider::{sniff_mime, ImageMeta},
    GeneratedImage, ProviderError, ProviderRequest, Usage,
};
use serde_json::{Map, Value};

use crate::wire::{ErrorEnvelope, ImagesResponse};

/// Longest upstream text carried into a `Failed` message, in characters: enough to diagnose,
/// short enough that an HTML error page does not end up in a client's error.
const MAX_MESSAGE_CHARS: usize = 300;

/// Error codes with which OpenAI refuses content (`content_policy_violation` is DALL·E's).
const MODERATION_CODES: [&str; 2] = ["moderation_blocked", "content_policy_violation"];

/// Whether `upstream` is a GPT image model. These answer 400 to `response_format`.
pub(crate) fn is_gpt_image(upstream: &str) -> bool {
    upstream.starts_with("gpt-image") || upstream.starts_with("chatgpt-image")
}

/// The JSON body of `POST /images/generations` for one upstream call.
///
/// The validated parameters already carry OpenAI's names, so they go through as they are.
/// The catalog's `upstream_params` come after them: they are the operator's constants for a
/// particular gateway and win. `model`, `prompt` and `n` come last, so nothing can change what
/// is asked for or how many images are billed.
pub(crate) fn generation_body(request: &ProviderRequest<'_>) -> Value {
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
    Value::Object(body)
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
        usage: response.usage.and_then(usage),
        meta: ImageMeta {
            background: response.background,
            output_format: response.output_format,
            quality: response.quality,
            size: response.size,
        },
    })
}

/// Reads `usage`, keeping fields imgproxy does not know in `extra`. A `usage` of an
/// unexpected shape is dropped with a warning rather than failing a paid-for generation.
fn usage(value: Value) -> Option<Usage> {
    if value.is_null() {
        return None;
    }
    serde_json::from_value(value)
        .inspect_err(|e| tracing::warn!(error = %e, "ignoring an unreadable upstream `usage`"))
        .ok()
}

/// A finished image. The bytes decide the MIME type; failing that, a download's
/// `Content-Type`, then the `output_format` the upstream reported or we asked for.
pub(crate) fn generated_image(
    bytes: Bytes,
    content_type: Option<&str>,
    output_format: Option<&str>,
    revised_prompt: Option<String>,
) -> GeneratedImage {
    let mime = sniff_mime(&bytes)
        .map(str::to_owned)
        .or_else(|| {
            content_type
                .filter(|t| t.starts_with("image/"))
                .map(|t| t.split(';').next().unwrap_or(t).trim().to_owned())
        })
        .or_else(|| output_format.and_then(mime_of_format).map(str::to_owned))
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

/// How long a 429 asks us to wait: `retry-after-ms` (more precise, sent by OpenAI) or
/// `Retry-After` in seconds. HTTP-date forms are ignored.
pub(crate) fn retry_after(millis: Option<&str>, seconds: Option<&str>) -> Option<Duration> {
    let parse = |text: &str, per_second: f64| {
        let value = text.trim().parse::<f64>().ok()?;
        Duration::try_from_secs_f64(value / per_second).ok()
    };
    millis
        .and_then(|text| parse(text, 1000.0))
        .or_else(|| seconds.and_then(|text| parse(text, 1.0)))
}

/// The error for a non-2xx upstream answer. `body` may be anything: OpenAI's envelope, another
/// gateway's JSON, HTML, or nothing.
pub(crate) fn error_from_status(
    status: u16,
    retry_after: Option<Duration>,
    body: &[u8],
    model: &str,
) -> ProviderError {
    let error = serde_json::from_slice::<ErrorEnvelope>(body)
        .map(|envelope| envelope.error)
        .unwrap_or_default();
    let code = error.code();
    let message = error.message.filter(|m| !m.trim().is_empty());
    match status {
        // Never carry the upstream message: OpenAI's echoes part of the key we sent.
        401 | 403 => ProviderError::Unauthorized { status },
        // OpenAI also answers 429 when the account's quota is spent; waiting will not help
        // there, and it is the operator's problem, not the client's.
        429 if code.as_deref() == Some("insufficient_quota") => ProviderError::Failed {
            message: "the upstream account has exhausted its quota".into(),
        },
        429 => ProviderError::RateLimited { retry_after },
        400 | 409 | 422 => {
            let message = message
                .unwrap_or_else(|| format!("upstream rejected the request: {}", excerpt(body)));
            if code
                .as_deref()
                .is_some_and(|c| MODERATION_CODES.contains(&c))
            {
                ProviderError::ModerationBlocked { message }
            } else {
                ProviderError::InvalidRequest {
                    message,
                    param: error.param,
                    code,
                }
            }
        }
        404 => ProviderError::Failed {
            message: format!("upstream does not know model `{model}`"),
        },
        _ => {
            let detail = message.map_or_else(|| excerpt(body), |m| shorten(&m));
            ProviderError::Failed {
                message: format!("upstream answered HTTP {status}: {detail}"),
            }
        }
    }
}

/// Removes `secret` from every message of `error`: whatever an upstream echoes back, the key
/// must not reach a client or a log line.
pub(crate) fn without_secret(error: ProviderError, secret: &str) -> ProviderError {
    if secret.is_empty() {
        return error;
    }
    let scrub = |text: String| {
        if text.contains(secret) {
            text.replace(secret, "[redacted]")
        } else {
            text
        }
    };
    match error {
        ProviderError::InvalidRequest {
            message,
            param,
            code,
        } => ProviderError::InvalidRequest {
            message: scrub(message),
            param: param.map(scrub),
            code: code.map(scrub),
        },
        ProviderError::ModerationBlocked { message } => ProviderError::ModerationBlocked {
            message: scrub(message),
        },
        ProviderError::Failed { message } => ProviderError::Failed {
            message: scrub(message),
        },
        other => other,
    }
}

fn malformed(detail: String) -> ProviderError {
    ProviderError::Failed {
        message: format!("malformed upstream response: {detail}"),
    }
}

/// A short excerpt of a non-JSON body.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    if text.trim().is_empty() {
        "(empty body)".into()
    } else {
        shorten(&text)
    }
}

/// `text` trimmed, on one line, cut at [`MAX_MESSAGE_CHARS`].
fn shorten(text: &str) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= MAX_MESSAGE_CHARS {
        return one_line;
    }
    let cut: String = one_line.chars().take(MAX_MESSAGE_CHARS - 1).collect();
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn envelope(code: &str, param: Option<&str>) -> Vec<u8> {
        serde_json::to_vec(
            &json!({"error": {"message": "nope", "type": "invalid_request_error",
                                             "param": param, "code": code}}),
        )
        .unwrap()
    }

    #[test]
    fn client_errors_keep_param_and_code_and_moderation_is_recognised() {
        assert_eq!(
            error_from_status(400, None, &envelope("invalid_value", Some("size")), "m"),
            ProviderError::InvalidRequest {
                message: "nope".into(),
                param: Some("size".into()),
                code: Some("invalid_value".into())
            }
        );
        for code in MODERATION_CODES {
            assert_eq!(
                error_from_status(400, None, &envelope(code, None), "m"),
                ProviderError::ModerationBlocked {
                    message: "nope".into()
                }
            );
        }
        let numeric = br#"{"error": {"message": "bad", "code": 1214}}"#;
        assert!(matches!(
            error_from_status(422, None, numeric, "m"),
            ProviderError::InvalidRequest { code: Some(c), .. } if c == "1214"
        ));
    }

    #[test]
    fn server_side_errors_are_failures_with_a_short_message() {
        assert_eq!(
            error_from_status(401, None, &envelope("invalid_api_key", None), "m"),
            ProviderError::Unauthorized { status: 401 }
        );
        let wait = Some(Duration::from_secs(2));
        assert_eq!(
            error_from_status(429, wait, b"", "m"),
            ProviderError::RateLimited { retry_after: wait }
        );
        assert!(matches!(
            error_from_status(429, wait, &envelope("insufficient_quota", None), "m"),
            ProviderError::Failed { .. }
        ));
        let ProviderError::Failed { message } = error_from_status(404, None, b"", "flux") else {
            panic!("404 is a failure");
        };
        assert!(message.contains("`flux`"), "{message}");
        let html = format!("<html>{}</html>", "x".repeat(5000));
        let ProviderError::Failed { message } = error_from_status(503, None, html.as_bytes(), "m")
        else {
            panic!("503 is a failure");
        };
        assert!(message.starts_with("upstream answered HTTP 503: <html>"));
        assert!(
            message.chars().count() <= MAX_MESSAGE_CHARS + 30,
            "{message}"
        );
    }

    #[test]
    fn retry_after_prefers_milliseconds_and_ignores_garbage() {
        assert_eq!(
            retry_after(Some("1500"), Some("20")),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(retry_after(None, Some("20")), Some(Duration::from_secs(20)));
        assert_eq!(
            retry_after(Some("soon"), Some("-1")),
            None,
            "negative and non-numeric values are dropped"
        );
    }

    #[test]
    fn secrets_are_scrubbed_from_messages() {
        let error = ProviderError::Failed {
            message: "bad key sk-secret-123 given".into(),
        };
        assert_eq!(
            without_secret(error, "sk-secret-123"),
            ProviderError::Failed {
                message: "bad key [redacted] given".into()
            }
        );
    }

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
