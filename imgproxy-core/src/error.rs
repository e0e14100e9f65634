//! The one error type of the core crate. Each variant knows its HTTP status and OpenAI error
//! `type` / `code` / `param` as plain data, so the server maps it to a response in one place.

use std::{borrow::Cow, time::Duration};

/// Everything that can go wrong between receiving a request and answering it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// The client's request is invalid (400).
    #[error("{message}")]
    InvalidRequest {
        /// Human-readable reason.
        message: String,
        /// The offending parameter.
        param: Option<String>,
        /// Machine-readable code, for example `invalid_value`.
        code: Option<String>,
    },
    /// The model is not in the catalog, or no provider serves it (404).
    #[error("{message}")]
    ModelNotFound {
        /// Human-readable reason.
        message: String,
    },
    /// A provider refused the content (400 `moderation_blocked`).
    #[error("{message}")]
    ModerationBlocked {
        /// The provider's explanation.
        message: String,
    },
    /// The upstream rate-limited us (429).
    #[error("upstream `{provider}` is rate limiting requests; retry later")]
    RateLimited {
        /// Provider name.
        provider: String,
        /// How long to wait, when the upstream said.
        retry_after: Option<Duration>,
    },
    /// The upstream rejected imgproxy's own credentials (502): an operator problem.
    #[error("upstream `{provider}` rejected the gateway's credentials; the operator must check its API key")]
    UpstreamAuth {
        /// Provider name.
        provider: String,
    },
    /// The upstream failed or answered something unusable (502).
    #[error("upstream `{provider}` failed: {message}")]
    Upstream {
        /// Provider name.
        provider: String,
        /// What went wrong.
        message: String,
    },
    /// The upstream did not answer in time (504).
    #[error("upstream `{provider}` timed out")]
    UpstreamTimeout {
        /// Provider name.
        provider: String,
    },
    /// The API key's balance does not cover the request's worst-case price (402).
    #[error("insufficient credits: this request needs {needed} credits and the key has {balance}")]
    InsufficientCredits {
        /// Credits the request reserves.
        needed: u64,
        /// Credits the key has.
        balance: i64,
    },
    /// An addressed object, such as an API key id in the admin API, does not exist (404).
    #[error("{message}")]
    NotFound {
        /// Human-readable reason.
        message: String,
    },
    /// The caller may not do this: a model outside its key's list, an unpriced model (403).
    #[error("{message}")]
    Forbidden {
        /// Why.
        message: String,
    },
    /// The caller's key went over one of its own limits (429).
    #[error("this key exceeded its limit of {limit}; retry later")]
    LimitExceeded {
        /// Which limit, e.g. `requests per minute`.
        limit: String,
        /// When a retry can succeed.
        retry_after: Option<Duration>,
    },
    /// Too much work is waiting already: the provider's generations are all taken and its
    /// queue is full, or the wait for a slot ran out (503, with `Retry-After`).
    #[error(
        "imgproxy is busy: too many `{provider}` generations are running or waiting; retry later"
    )]
    Overloaded {
        /// Provider name.
        provider: String,
        /// When a retry may find room.
        retry_after: Duration,
    },
    /// Every provider that could serve the request failed repeatedly just before, and its
    /// circuit is open: it is skipped, uncalled, for a cool-down (503, with `Retry-After`).
    #[error("upstream `{provider}` is failing and is skipped for a cool-down; retry later")]
    CircuitOpen {
        /// Provider name.
        provider: String,
        /// When its circuit lets a probe through.
        retry_after: Duration,
    },
    /// The request conflicts with an earlier one (409): an `Idempotency-Key` reused for
    /// another request, or still held by the request it was first sent with.
    #[error("{message}")]
    Conflict {
        /// Human-readable reason.
        message: String,
        /// Machine-readable code, for example `idempotency_key_reused`.
        code: &'static str,
        /// The parameter (or header) at fault.
        param: &'static str,
    },
    /// A bug or an environment failure inside imgproxy (500). The detail is logged, not sent.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Whose fault a failure is, so that an operator can alert on the gateway's own faults alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The request was wrong: bad input, unknown model or route, missing key.
    Caller,
    /// A rule refused it: credits, key limits, model access, moderation.
    Policy,
    /// The upstream failed, timed out, rate-limited the gateway or refused its credentials.
    Provider,
    /// imgproxy itself: a bug, a broken database or store, shed load.
    Gateway,
}

impl Fault {
    /// Its label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Caller => "caller",
            Self::Policy => "policy",
            Self::Provider => "provider",
            Self::Gateway => "gateway",
        }
    }
}

impl Error {
    /// A 400 naming `param`, with code `invalid_value`.
    pub fn invalid_param(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidRequest {
            message: message.into(),
            param: Some(param.into()),
            code: Some("invalid_value".into()),
        }
    }

    /// A 400 for a parameter the model does not take, with code `unknown_parameter`.
    pub fn unsupported_param(param: &str, model: &str) -> Self {
        Self::InvalidRequest {
            message: format!("model `{model}` does not accept the parameter `{param}`"),
            param: Some(param.into()),
            code: Some("unknown_parameter".into()),
        }
    }

    /// HTTP status code.
    pub fn status(&self) -> u16 {
        match self {
            Self::InvalidRequest { .. } | Self::ModerationBlocked { .. } => 400,
            Self::InsufficientCredits { .. } => 402,
            Self::ModelNotFound { .. } | Self::NotFound { .. } => 404,
            Self::Forbidden { .. } => 403,
            Self::Conflict { .. } => 409,
            Self::RateLimited { .. } | Self::LimitExceeded { .. } => 429,
            Self::UpstreamAuth { .. } | Self::Upstream { .. } => 502,
            Self::UpstreamTimeout { .. } => 504,
            Self::Overloaded { .. } | Self::CircuitOpen { .. } => 503,
            Self::Internal(_) => 500,
        }
    }

    /// OpenAI error `type`.
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::InvalidRequest { .. }
            | Self::ModelNotFound { .. }
            | Self::InsufficientCredits { .. }
            | Self::NotFound { .. }
            | Self::Forbidden { .. }
            | Self::Conflict { .. } => "invalid_request_error",
            Self::ModerationBlocked { .. } => "image_generation_user_error",
            Self::RateLimited { .. } | Self::LimitExceeded { .. } => "rate_limit_error",
            Self::UpstreamAuth { .. }
            | Self::Upstream { .. }
            | Self::UpstreamTimeout { .. }
            | Self::CircuitOpen { .. } => "upstream_error",
            Self::Overloaded { .. } | Self::Internal(_) => "server_error",
        }
    }

    /// Whose fault it is, and a label per variant from a closed vocabulary (for metrics and
    /// alerts; never free text).
    pub fn fault(&self) -> (Fault, &'static str) {
        match self {
            Self::InvalidRequest { .. } => (Fault::Caller, "invalid_request"),
            Self::ModelNotFound { .. } => (Fault::Caller, "model_not_found"),
            Self::NotFound { .. } => (Fault::Caller, "not_found"),
            Self::Conflict { .. } => (Fault::Caller, "conflict"),
            Self::ModerationBlocked { .. } => (Fault::Policy, "moderation_blocked"),
            Self::InsufficientCredits { .. } => (Fault::Policy, "insufficient_credits"),
            Self::Forbidden { .. } => (Fault::Policy, "permission_denied"),
            Self::LimitExceeded { .. } => (Fault::Policy, "key_limit_exceeded"),
            Self::RateLimited { .. } => (Fault::Provider, "upstream_rate_limited"),
            Self::UpstreamAuth { .. } => (Fault::Provider, "upstream_auth_failed"),
            Self::Upstream { .. } => (Fault::Provider, "upstream_error"),
            Self::UpstreamTimeout { .. } => (Fault::Provider, "upstream_timeout"),
            Self::CircuitOpen { .. } => (Fault::Provider, "circuit_open"),
            Self::Overloaded { .. } => (Fault::Gateway, "overloaded"),
            Self::Internal(_) => (Fault::Gateway, "internal_error"),
        }
    }

    /// OpenAI error `code`.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::InvalidRequest { code, .. } => code.as_deref(),
            Self::ModelNotFound { .. } => Some("model_not_found"),
            Self::InsufficientCredits { .. } => Some("insufficient_credits"),
            Self::NotFound { .. } => Some("not_found"),
            Self::ModerationBlocked { .. } => Some("moderation_blocked"),
            Self::Forbidden { .. } => Some("permission_denied"),
            Self::Conflict { code, .. } => Some(code),
            Self::RateLimited { .. } | Self::LimitExceeded { .. } => Some("rate_limit_exceeded"),
            Self::UpstreamAuth { .. } => Some("upstream_auth_failed"),
            Self::Upstream { .. } => Some("upstream_error"),
            Self::UpstreamTimeout { .. } => Some("upstream_timeout"),
            Self::CircuitOpen { .. } => Some("circuit_open"),
            Self::Overloaded { .. } => Some("overloaded"),
            Self::Internal(_) => Some("internal_error"),
        }
    }

    /// OpenAI error `param`.
    pub fn param(&self) -> Option<&str> {
        match self {
            Self::InvalidRequest { param, .. } => param.as_deref(),
            Self::ModelNotFound { .. } => Some("model"),
            Self::Conflict { param, .. } => Some(param),
            _ => None,
        }
    }

    /// How long the client should wait before retrying, for 429s and 503s.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. } | Self::LimitExceeded { retry_after, .. } => {
                *retry_after
            }
            Self::Overloaded { retry_after, .. } | Self::CircuitOpen { retry_after, .. } => {
                Some(*retry_after)
            }
            _ => None,
        }
    }

    /// The message safe to show a client: internal details stay in the logs.
    pub fn public_message(&self) -> String {
        match self {
            Self::Internal(_) => "internal server error".to_owned(),
            other => other.to_string(),
        }
    }
}

/// OpenAI's error object: the one body of every error imgproxy reports, in HTTP answers
/// (inside [`ErrorEnvelope`]), streamed error events, failed tasks and webhook payloads.
#[derive(
    Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct ErrorBody {
    /// What went wrong, safe to show the client.
    pub message: String,
    /// OpenAI's error `type`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The parameter at fault, if any.
    pub param: Option<String>,
    /// A machine-readable code.
    pub code: Option<String>,
}

impl ErrorBody {
    /// A body from its parts.
    pub fn new(
        message: impl Into<String>,
        kind: &str,
        param: Option<&str>,
        code: Option<&str>,
    ) -> Self {
        Self {
            message: message.into(),
            kind: kind.to_owned(),
            param: param.map(str::to_owned),
            code: code.map(str::to_owned),
        }
    }
}

impl From<&Error> for ErrorBody {
    fn from(error: &Error) -> Self {
        Self::new(
            error.public_message(),
            error.error_type(),
            error.param(),
            error.code(),
        )
    }
}

/// `{"error": {...}}`: how OpenAI wraps the error object in HTTP answers and stream events.
#[derive(
    Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct ErrorEnvelope {
    /// The error.
    pub error: ErrorBody,
}

/// Characters of a client's value that an error message quotes: enough to recognise it, and
/// a 1 MB value does not make a 1 MB error (nor a 1 MB log line).
pub const QUOTED_CHARS: usize = 64;

/// `value` as an error message quotes it: its first [`QUOTED_CHARS`] characters, with `…`
/// when it was cut.
pub fn quote(value: &str) -> Cow<'_, str> {
    match value.char_indices().nth(QUOTED_CHARS) {
        Some((cut, _)) => Cow::Owned(format!("{}…", &value[..cut])),
        None => Cow::Borrowed(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_maps_to_status_type_and_code() {
        let p = || "openai".to_owned();
        let cases = [
            (
                Error::invalid_param("size", "bad"),
                400,
                "invalid_request_error",
                Some("invalid_value"),
            ),
            (
                Error::ModelNotFound {
                    message: "x".into(),
                },
                404,
                "invalid_request_error",
                Some("model_not_found"),
            ),
            (
                Error::InsufficientCredits {
                    needed: 3,
                    balance: 1,
                },
                402,
                "invalid_request_error",
                Some("insufficient_credits"),
            ),
            (
                Error::NotFound {
                    message: "x".into(),
                },
                404,
                "invalid_request_error",
                Some("not_found"),
            ),
            (
                Error::ModerationBlocked {
                    message: "x".into(),
                },
                400,
                "image_generation_user_error",
                Some("moderation_blocked"),
            ),
            (
                Error::RateLimited {
                    provider: p(),
                    retry_after: None,
                },
                429,
                "rate_limit_error",
                Some("rate_limit_exceeded"),
            ),
            (
                Error::UpstreamAuth { provider: p() },
                502,
                "upstream_error",
                Some("upstream_auth_failed"),
            ),
            (
                Error::Upstream {
                    provider: p(),
                    message: "x".into(),
                },
                502,
                "upstream_error",
                Some("upstream_error"),
            ),
            (
                Error::UpstreamTimeout { provider: p() },
                504,
                "upstream_error",
                Some("upstream_timeout"),
            ),
            (
                Error::Forbidden {
                    message: "x".into(),
                },
                403,
                "invalid_request_error",
                Some("permission_denied"),
            ),
            (
                Error::LimitExceeded {
                    limit: "rpm".into(),
                    retry_after: None,
                },
                429,
                "rate_limit_error",
                Some("rate_limit_exceeded"),
            ),
            (
                Error::Overloaded {
                    provider: p(),
                    retry_after: Duration::from_secs(2),
                },
                503,
                "server_error",
                Some("overloaded"),
            ),
            (
                Error::Internal("secret detail".into()),
                500,
                "server_error",
                Some("internal_error"),
            ),
        ];
        for (error, status, kind, code) in cases {
            assert_eq!(
                (error.status(), error.error_type(), error.code()),
                (status, kind, code),
                "{error:?}"
            );
        }
    }

    #[test]
    fn internal_detail_is_not_public() {
        assert!(!Error::Internal("db password".into())
            .public_message()
            .contains("password"));
    }
}
