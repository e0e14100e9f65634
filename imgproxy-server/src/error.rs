//! `ApiError`: the one place where any failure becomes an HTTP status and OpenAI's error
//! envelope `{"error": {"message", "type", "param", "code"}}`.

use axum::{
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use imgproxy_core::{quote, ErrorBody, ErrorEnvelope, Fault, QUOTED_CHARS};

/// Longest error message answered, in characters: the last guard, after every quoted value in
/// it was cut, so that no path (a serde message quoting a whole field, say) answers 1 MB.
const MAX_MESSAGE_CHARS: usize = 1024;

/// A failure answered to a client.
#[derive(Debug)]
pub enum ApiError {
    /// A gateway error from the core.
    Core(imgproxy_core::Error),
    /// Missing or wrong API key (401).
    Unauthorized,
    /// The body is not JSON (415).
    UnsupportedMediaType,
    /// The body is over the limit (413).
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The body is not valid JSON, or a field has the wrong type (400).
    BadBody {
        /// What is wrong.
        message: String,
        /// The field at fault, if known.
        param: Option<String>,
    },
    /// No such route (404), or no such resource.
    NotFound {
        /// What was not found.
        message: String,
    },
    /// A path parameter that names nothing (not UTF-8, or not of its type): 404.
    BadPath {
        /// What is wrong.
        message: String,
        /// The path parameter at fault, if known.
        param: Option<String>,
    },
    /// The route exists, but not for this method (405).
    MethodNotAllowed,
    /// No image is stored under this name for the caller (404, param `filename`).
    UnknownName {
        /// The name asked for.
        name: String,
    },
    /// A URL that must be signed is not, or its signature is wrong or expired (403).
    Signature(imgproxy_core::service::signing::SignatureError),
}

impl ApiError {
    /// The error in the terms of the surface the request came through (see
    /// [`imgproxy_core::surface::ParamPaths`]).
    #[must_use]
    pub fn in_terms_of(self, paths: &imgproxy_core::surface::ParamPaths) -> Self {
        match self {
            Self::Core(error) => Self::Core(paths.rename(error)),
            other => other,
        }
    }
}

impl From<imgproxy_core::Error> for ApiError {
    fn from(error: imgproxy_core::Error) -> Self {
        Self::Core(error)
    }
}

/// Whose fault an error answer is and its kind, carried on the answer for the metrics that
/// `telemetry` records once the answer is sent.
#[derive(Debug, Clone, Copy)]
pub struct ErrorClass(pub (Fault, &'static str));

/// An error answer before it is written: status, envelope fields and retry hint.
struct Answer {
    status: StatusCode,
    message: String,
    kind: &'static str,
    param: Option<String>,
    code: Option<String>,
    retry_after: Option<std::time::Duration>,
}

impl Answer {
    /// A caller's mistake: `invalid_request_error` with `code`.
    fn invalid(status: StatusCode, message: impl Into<String>, code: &str) -> Self {
        Self {
            status,
            message: message.into(),
            kind: "invalid_request_error",
            param: None,
            code: Some(code.to_owned()),
            retry_after: None,
        }
    }

    fn param(mut self, param: Option<&str>) -> Self {
        self.param = param.map(str::to_owned);
        self
    }
}

impl ApiError {
    /// Whose fault it is, and a label from a closed vocabulary (never free text).
    pub fn classify(&self) -> (Fault, &'static str) {
        match self {
            Self::Core(error) => error.fault(),
            Self::Unauthorized => (Fault::Caller, "unauthorized"),
            Self::UnsupportedMediaType => (Fault::Caller, "unsupported_media_type"),
            Self::PayloadTooLarge { .. } => (Fault::Caller, "payload_too_large"),
            Self::BadBody { .. } => (Fault::Caller, "invalid_body"),
            Self::NotFound { .. } | Self::BadPath { .. } | Self::UnknownName { .. } => {
                (Fault::Caller, "not_found")
            }
            Self::MethodNotAllowed => (Fault::Caller, "method_not_allowed"),
            Self::Signature(_) => (Fault::Caller, "invalid_signature"),
        }
    }

    fn answer(&self) -> Answer {
        match self {
            Self::Core(error) => {
                if let imgproxy_core::Error::Overloaded { .. } = error {
                    // Expected under load, and answered with a retry hint: not a fault.
                    tracing::warn!(%error, "request shed");
                } else if error.status() >= 500 {
                    tracing::error!(%error, "request failed");
                }
                Answer {
                    status: StatusCode::from_u16(error.status())
                        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                    message: error.public_message(),
                    kind: error.error_type(),
                    param: error.param().map(str::to_owned),
                    code: error.code().map(str::to_owned),
                    retry_after: error.retry_after(),
                }
            }
            Self::Unauthorized => Answer::invalid(
                StatusCode::UNAUTHORIZED,
                "missing or invalid API key: send `Authorization: Bearer <key>`",
                "invalid_api_key",
            ),
            Self::UnsupportedMediaType => Answer::invalid(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "expected `Content-Type: application/json`",
                "unsupported_media_type",
            ),
            Self::PayloadTooLarge { limit } => Answer::invalid(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body is larger than the limit of {limit} bytes"),
                "payload_too_large",
            ),
            Self::BadBody { message, param } => {
                Answer::invalid(StatusCode::BAD_REQUEST, message, "invalid_json")
                    .param(param.as_deref())
            }
            Self::NotFound { message } => {
                Answer::invalid(StatusCode::NOT_FOUND, message, "not_found")
            }
            Self::BadPath { message, param } => {
                Answer::invalid(StatusCode::NOT_FOUND, message, "not_found").param(param.as_deref())
            }
            Self::UnknownName { name } => Answer::invalid(
                StatusCode::NOT_FOUND,
                format!("no image is stored under the name `{name}`"),
                "not_found",
            )
            .param(Some("filename")),
            Self::Signature(error) => Answer::invalid(
                StatusCode::FORBIDDEN,
                error.to_string(),
                "invalid_signature",
            )
            .param(Some("sig")),
            Self::MethodNotAllowed => Answer::invalid(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this route",
                "method_not_allowed",
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let class = ErrorClass(self.classify());
        let Answer {
            status,
            message,
            kind,
            param,
            code,
            retry_after,
        } = self.answer();
        let body = ErrorEnvelope {
            error: ErrorBody {
                message: bounded(&message),
                kind: kind.to_owned(),
                param: param.map(|p| quote(&p).into_owned()),
                code,
            },
        };
        let mut response = (status, Json(body)).into_response();
        response.extensions_mut().insert(class);
        if let Some(wait) = retry_after {
            // Round up: telling a client to retry sooner than the upstream allows is useless.
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

/// `message` with every run between backticks or double quotes cut to [`QUOTED_CHARS`] (a run
/// already cut by `quote` is left alone), then the whole to [`MAX_MESSAGE_CHARS`].
fn bounded(message: &str) -> String {
    let mut out = String::with_capacity(message.len().min(MAX_MESSAGE_CHARS + 4));
    let mut quoted: Option<(char, usize)> = None;
    let mut chars = message.chars().peekable();
    while let Some(c) = chars.next() {
        match quoted {
            Some((close, _)) if c == close => quoted = None,
            Some((close, ref mut run)) => {
                *run += 1;
                // `quote` leaves QUOTED_CHARS + `…`; one more than that means uncut.
                if *run == QUOTED_CHARS + 2 {
                    out.push('…');
                }
                if *run > QUOTED_CHARS + 1 {
                    // Skip to the closing quote.
                    while chars.peek().is_some_and(|next| *next != close) {
                        chars.next();
                    }
                    continue;
                }
            }
            None if c == '`' || c == '"' => quoted = Some((c, 0)),
            None => {}
        }
        out.push(c);
    }
    match out.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((cut, _)) => format!("{}…", &out[..cut]),
        None => out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_quoted_runs_are_cut_and_short_ones_kept() {
        assert_eq!(bounded("model `x` says \"hi\""), "model `x` says \"hi\"");
        let long = "a".repeat(10_000);
        let cut = bounded(&format!("invalid type: string \"{long}\", expected u32"));
        assert_eq!(
            cut,
            format!(
                "invalid type: string \"{}…\", expected u32",
                "a".repeat(QUOTED_CHARS + 1)
            )
        );
        // Already cut by `quote`: unchanged.
        let quoted = format!("size `{}` is bad", quote(&long));
        assert_eq!(bounded(&quoted), quoted);
        // Unbalanced quotes or long unquoted text: the total is capped.
        let open = bounded(&format!("`{long} and {long}"));
        assert!(open.chars().count() <= QUOTED_CHARS + 4, "{}", open.len());
        let plain = bounded(&"b ".repeat(5_000));
        assert_eq!(plain.chars().count(), MAX_MESSAGE_CHARS + 1);
    }
}
