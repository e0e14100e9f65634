//! Google's non-2xx answers as [`ProviderError`]s: the RPC error envelope, `RetryInfo`, and
//! keeping the API key out of every message. Pure functions, like `convert`.

use std::time::Duration;

use imgproxy_core::{
    upstream::{failed, short, status_error},
    ProviderError,
};

use crate::{convert::with_detail, wire::ErrorEnvelope};

/// The error for a non-2xx answer. `body` may be Google's envelope, a proxy's HTML, or
/// nothing; `header_wait` is the `Retry-After` header, used when the body has no `RetryInfo`.
pub(crate) fn error_from_status(
    status: u16,
    header_wait: Option<Duration>,
    body: &[u8],
    model: &str,
) -> ProviderError {
    let error = serde_json::from_slice::<ErrorEnvelope>(body)
        .map(|envelope| envelope.error)
        .unwrap_or_default();
    let message = error
        .message
        .as_deref()
        .map(str::trim)
        .filter(|m| !m.is_empty());
    let rpc_status = error.status.as_deref().unwrap_or("");
    let detail = |kind: &str, field: &str| {
        error
            .details
            .iter()
            .filter(|d| d["@type"].as_str().is_some_and(|t| t.ends_with(kind)))
            .find_map(|d| d[field].as_str())
    };
    match status {
        // Google answers a bad or expired key with 400 INVALID_ARGUMENT and this reason.
        400 if detail("google.rpc.ErrorInfo", "reason")
            .is_some_and(|r| r.starts_with("API_KEY_")) =>
        {
            ProviderError::Unauthorized { status }
        }
        // `FAILED_PRECONDITION` (an unsupported region, no billing) is the operator's problem.
        400 if rpc_status == "FAILED_PRECONDITION" => failed(with_detail(
            format!("upstream refused the call ({rpc_status})"),
            message,
        )),
        400 => ProviderError::InvalidRequest {
            message: format!(
                "upstream rejected the request: {}",
                short(message.unwrap_or("no reason given"))
            ),
            param: None,
            code: Some("upstream_invalid_request".into()),
        },
        429 => ProviderError::RateLimited {
            retry_after: detail("google.rpc.RetryInfo", "retryDelay")
                .and_then(proto_duration)
                .or(header_wait),
        },
        404 => failed(format!("upstream does not know model `{model}`")),
        500..=599 if !(status == 503 && header_wait.is_some()) => {
            let status_text = if rpc_status.is_empty() {
                status.to_string()
            } else {
                format!("{status} {rpc_status}")
            };
            failed(with_detail(
                format!("upstream answered HTTP {status_text}"),
                message,
            ))
        }
        _ => status_error(status, header_wait, message.unwrap_or("")),
    }
}

/// A protobuf JSON `Duration` such as `"34.4s"`.
fn proto_duration(text: &str) -> Option<Duration> {
    let seconds: f64 = text.trim().strip_suffix('s')?.parse().ok()?;
    Duration::try_from_secs_f64(seconds).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_are_protobuf_durations() {
        assert_eq!(proto_duration("34.4s"), Some(Duration::from_millis(34_400)));
        assert_eq!(proto_duration(" 17s"), Some(Duration::from_secs(17)));
        for garbage in ["17", "-1s", "soon", "s"] {
            assert_eq!(proto_duration(garbage), None, "{garbage}");
        }
    }
}
