//! Upstream failures into [`ProviderError`]s: the status and OpenAI's error envelope decide
//! the kind, `Retry-After` the wait, and messages stay short. Pure functions, shared by the
//! generation and edit calls; the key is scrubbed by `ProviderError::without_secret`.

use std::time::Duration;

use imgproxy_core::{upstream, ProviderError};

use crate::compat;

/// Error codes with which OpenAI refuses content (`content_policy_violation` is DALL·E's).
const MODERATION_CODES: [&str; 2] = ["moderation_blocked", "content_policy_violation"];

/// How an Images API failure reads: the status, how long the upstream asked us to wait, the
/// body and the model name the call used, into the error. [`error_from_status`] is OpenAI's; a
/// service speaking the same API with errors of its own brings its own.
pub type ErrorMapping = fn(u16, Option<Duration>, &[u8], &str) -> ProviderError;

/// The error for a failed upstream answer: a non-2xx one, or a 2xx whose body is the error
/// envelope. `body` may be anything: OpenAI's envelope, another gateway's JSON, HTML, or
/// nothing.
pub fn error_from_status(
    status: u16,
    retry_after: Option<Duration>,
    body: &[u8],
    model: &str,
) -> ProviderError {
    let error = compat::read_error(body);
    let code = error.code();
    let message = error.message.clone().filter(|m| !m.trim().is_empty());
    match status {
        // Never carry the upstream message: OpenAI's echoes part of the key we sent.
        401 | 403 => ProviderError::Unauthorized { status },
        // OpenAI also answers 429 when the account's quota is spent; waiting will not help
        // there, and it is the operator's problem, not the client's.
        429 if code.as_deref() == Some("insufficient_quota") => ProviderError::QuotaExhausted {
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
                    param: error.param(),
                    code,
                }
            }
        }
        404 => ProviderError::Failed {
            message: format!("upstream does not know model `{model}`"),
        },
        503 if retry_after.is_some() => upstream::status_error(
            status,
            retry_after,
            &message.unwrap_or_else(|| excerpt(body)),
        ),
        _ => {
            let detail = message.map_or_else(|| excerpt(body), |m| upstream::excerpt(m.as_bytes()));
            ProviderError::Failed {
                message: format!("upstream answered HTTP {status}: {detail}"),
            }
        }
    }
}

/// A short excerpt of a non-JSON body, on one line.
fn excerpt(body: &[u8]) -> String {
    let text = upstream::excerpt(body);
    if text.is_empty() {
        "(empty body)".into()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use imgproxy_core::upstream::MAX_MESSAGE_CHARS;
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
            ProviderError::QuotaExhausted { .. }
        ));
        assert!(matches!(
            error_from_status(503, wait, b"busy", "m"),
            ProviderError::Unavailable { retry_after, .. } if retry_after == wait
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
}
