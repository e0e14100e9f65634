//! Stability's non-2xx answers as [`ProviderError`]s: its error envelope, the moderation
//! refusal of the input, an account out of credits and the rate limit's wait. Pure functions,
//! like `convert`.

use std::time::Duration;

use imgproxy_core::{
    upstream::{excerpt, short, status_error},
    ProviderError,
};
use serde_json::Value;

use crate::wire::ErrorEnvelope;

/// The `name` of Stability's refusal of the prompt or input image (403, providers-2.md §11.1).
const CONTENT_MODERATION: &str = "content_moderation";

/// How long a rate-limited caller is shut out: 150 requests per 10 s, then 60 s
/// (providers-2.md §11.1, third-party). Used when a 429 carries no `Retry-After` (unverified
/// whether Stability sends one), so that keys and failover wait as long as Stability does.
const RATE_LIMIT_WAIT: Duration = Duration::from_secs(60);

/// The error for a non-2xx answer. `body` may be Stability's envelope, a proxy's HTML, or
/// nothing; `retry_after` is the `Retry-After` header.
pub(crate) fn error_from_status(
    status: u16,
    retry_after: Option<Duration>,
    body: &[u8],
) -> ProviderError {
    let envelope: ErrorEnvelope = serde_json::from_slice(body).unwrap_or_default();
    let message = message_of(&envelope).unwrap_or_else(|| excerpt(body));
    match status {
        _ if is_moderation(status, &envelope, &message) => ProviderError::ModerationBlocked {
            message: format!(
                "Stability's content moderation refused the request: {}",
                short(&message)
            ),
        },
        // Out of credits: waiting does not help, another key may (the key pool takes it out).
        402 => ProviderError::QuotaExhausted {
            message: "the Stability account is out of credits".into(),
        },
        // The form (in practice the input image) is larger than Stability takes.
        413 => ProviderError::InvalidRequest {
            message: format!(
                "Stability refused the request as too large: {}",
                short(&message)
            ),
            param: Some("image".into()),
            code: Some("upstream_invalid_request".into()),
        },
        429 => ProviderError::RateLimited {
            retry_after: retry_after.or(Some(RATE_LIMIT_WAIT)),
        },
        _ => status_error(status, retry_after, &message),
    }
}

/// Whether a 4xx is the refusal of the content: named `content_moderation`, or (the name
/// being third-party knowledge) a 403 whose words say moderation. A refusal taken for a
/// rejected key would take a good key out of the pool.
fn is_moderation(status: u16, envelope: &ErrorEnvelope, message: &str) -> bool {
    let named = envelope.name.as_deref() == Some(CONTENT_MODERATION);
    let worded = status == 403 && message.to_lowercase().contains("moderation");
    (400..500).contains(&status) && (named || worded)
}

/// The envelope's texts joined, else its `message`, else its `name`.
fn message_of(envelope: &ErrorEnvelope) -> Option<String> {
    let texts: Vec<&str> = envelope
        .errors
        .iter()
        .filter_map(Value::as_str)
        .map(str::trim)
        .filter(|text| !text.is_empty())
        .collect();
    if !texts.is_empty() {
        return Some(texts.join("; "));
    }
    envelope
        .message
        .clone()
        .or_else(|| envelope.name.clone())
        .filter(|text| !text.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(name: &str, errors: &[&str]) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "id": "a1b2c3d4e5f6a1b2c3d4e5f6a1b2c3d4", "name": name, "errors": errors
        }))
        .unwrap()
    }

    #[test]
    fn content_moderation_is_a_refusal_and_other_403s_are_our_key() {
        let refusal = error_from_status(
            403,
            None,
            &envelope(
                CONTENT_MODERATION,
                &["Your request was flagged by our content moderation system"],
            ),
        );
        let ProviderError::ModerationBlocked { message } = refusal else {
            panic!("{refusal:?}");
        };
        assert!(
            message.contains("flagged by our content moderation"),
            "{message}"
        );
        assert!(matches!(
            error_from_status(
                403,
                None,
                &envelope("forbidden", &["Flagged by content moderation"])
            ),
            ProviderError::ModerationBlocked { .. }
        ));
        assert_eq!(
            error_from_status(403, None, &envelope("forbidden", &["sk-secret is banned"])),
            ProviderError::Unauthorized { status: 403 }
        );
        assert_eq!(
            error_from_status(401, None, &envelope("unauthorized", &["bad key"])),
            ProviderError::Unauthorized { status: 401 }
        );
    }

    #[test]
    fn statuses_map_by_meaning_with_the_envelope_texts() {
        let invalid = error_from_status(
            400,
            None,
            &envelope(
                "bad_request",
                &["prompt: cannot be empty", "seed: too large"],
            ),
        );
        let ProviderError::InvalidRequest { message, .. } = invalid else {
            panic!("{invalid:?}");
        };
        assert!(
            message.ends_with("prompt: cannot be empty; seed: too large"),
            "{message}"
        );
        assert!(matches!(
            error_from_status(402, None, &envelope("payment_required", &["no credits"])),
            ProviderError::QuotaExhausted { .. }
        ));
        assert!(matches!(
            error_from_status(413, None, b""),
            ProviderError::InvalidRequest { param: Some(param), .. } if param == "image"
        ));
        let server = error_from_status(500, None, b"<html>\n bad   gateway</html>");
        assert_eq!(
            server,
            ProviderError::Failed {
                message: "upstream answered HTTP 500: <html> bad gateway</html>".into()
            }
        );
    }

    #[test]
    fn a_429_waits_as_long_as_stability_says_else_its_documented_minute() {
        assert_eq!(
            error_from_status(429, Some(Duration::from_secs(7)), b""),
            ProviderError::RateLimited {
                retry_after: Some(Duration::from_secs(7))
            }
        );
        assert_eq!(
            error_from_status(429, None, &envelope("rate_limit_exceeded", &["slow down"])),
            ProviderError::RateLimited {
                retry_after: Some(RATE_LIMIT_WAIT)
            }
        );
    }
}
