//! Upstream failures into [`ProviderError`]s, as far as every upstream agrees: transport
//! errors, `Retry-After`, the usual meaning of a status, and messages cut to a size fit for a
//! client, and FastAPI's error body, which several upstreams answer with. An adapter reads its
//! own error bodies and special statuses before falling back here.

use std::{fmt::Display, time::Duration};

use reqwest::header::HeaderMap;
use serde::Deserialize;
use serde_json::Value;

use crate::ProviderError;

/// Longest upstream text carried into an error message, in characters: enough to diagnose,
/// short enough that an HTML error page never ends up in a client's error.
pub const MAX_MESSAGE_CHARS: usize = 300;

/// What [`short`] puts where it cut a message.
pub const CUT_MARK: char = '…';
/// What a secret is replaced with wherever an upstream's text carried it.
pub const REDACTED: &str = "[redacted]";
/// The shortest start of a secret that is redacted where a message was cut after it: fewer
/// characters tell nothing (they are the key's public prefix, or ordinary text).
const MIN_PARTIAL_SECRET: usize = 4;

/// `text` without `secret`: every whole occurrence replaced, and, where the text was cut
/// ([`CUT_MARK`]) right after the first characters of the secret, those characters too. The
/// second half is the net under adapters that cut an upstream's words before the client's
/// scrub ran: a key straddling the cut would otherwise leak up to its last character.
pub fn scrub_text(text: &str, secret: &str) -> String {
    if secret.is_empty() {
        return text.to_owned();
    }
    let whole = text.replace(secret, REDACTED);
    if !whole.contains(CUT_MARK) {
        return whole;
    }
    let mut out = String::with_capacity(whole.len());
    let mut pieces = whole.split(CUT_MARK).peekable();
    while let Some(piece) = pieces.next() {
        let mut piece = piece;
        if pieces.peek().is_some() {
            // The longest start of the secret this piece ends with, if long enough to matter.
            let partial = secret
                .char_indices()
                .map(|(at, _)| at)
                .chain([secret.len()])
                .filter(|&len| len >= MIN_PARTIAL_SECRET && piece.ends_with(&secret[..len]))
                .max();
            if let Some(len) = partial {
                piece = &piece[..piece.len() - len];
                out.push_str(piece);
                out.push_str(REDACTED);
                out.push(CUT_MARK);
                continue;
            }
            out.push_str(piece);
            out.push(CUT_MARK);
        } else {
            out.push_str(piece);
        }
    }
    out
}

/// A `Failed` error.
pub fn failed(message: impl Into<String>) -> ProviderError {
    ProviderError::Failed {
        message: message.into(),
    }
}

/// A `Failed` "malformed upstream response": a 2xx body that is not the documented shape.
pub fn malformed(detail: impl Display) -> ProviderError {
    failed(format!(
        "malformed upstream response: {}",
        short(&detail.to_string())
    ))
}

/// `message` cut to a length fit for a client's error.
pub fn short(message: &str) -> String {
    let mut text: String = message.chars().take(MAX_MESSAGE_CHARS).collect();
    if message.chars().count() > MAX_MESSAGE_CHARS {
        text.push(CUT_MARK);
    }
    text
}

/// A body that is not the upstream's error shape, as a short message: on one line, cut like
/// [`short`]; empty if the body has no text.
pub fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    short(&text.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// Maps a failure to talk to the upstream at all. The URL is left out: an operator's
/// endpoint, or a signed download URL, is none of a client's business.
pub fn transport_error(error: reqwest::Error) -> ProviderError {
    if error.is_timeout() {
        return ProviderError::Timeout;
    }
    if error.is_connect() {
        // Nothing was sent: DNS, TCP or TLS failed first.
        return ProviderError::Unavailable {
            message: format!("cannot reach upstream: {}", chain(&error.without_url())),
            retry_after: None,
        };
    }
    let what = if error.is_body() || error.is_decode() {
        "reading the upstream response failed"
    } else {
        "upstream request failed"
    };
    failed(format!("{what}: {}", chain(&error.without_url())))
}

/// An error and its sources, as one line.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// How long the upstream asked us to wait: `retry-after-ms`, else `Retry-After` in seconds.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let number = |name: &str| headers.get(name)?.to_str().ok()?.trim().parse::<f64>().ok();
    let valid = |v: f64| v.is_finite() && v >= 0.0;
    if let Some(ms) = number("retry-after-ms").filter(|v| valid(*v)) {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    number("retry-after")
        .filter(|v| valid(*v))
        .map(Duration::from_secs_f64)
}

/// The error for a non-2xx upstream status, by the usual meaning of the status:
/// 400/409/422 → the upstream's `message` as an invalid request; 401/403 → our key was
/// rejected (the upstream's text is dropped: it may echo the key); 429 → rate limited;
/// 503 with `Retry-After` → unavailable (the upstream says it started nothing); anything else
/// → failed. Providers handle their own moderation signals before this.
pub fn status_error(status: u16, retry_after: Option<Duration>, message: &str) -> ProviderError {
    match status {
        400 | 409 | 422 => ProviderError::InvalidRequest {
            message: format!("upstream rejected the request: {}", short(message)),
            param: None,
            code: Some("upstream_invalid_request".into()),
        },
        401 | 403 => ProviderError::Unauthorized { status },
        429 => ProviderError::RateLimited { retry_after },
        503 if retry_after.is_some() => ProviderError::Unavailable {
            message: format!("upstream answered HTTP 503: {}", short(message)),
            retry_after,
        },
        _ if message.is_empty() => failed(format!("upstream answered HTTP {status}")),
        _ => failed(format!(
            "upstream answered HTTP {status}: {}",
            short(message)
        )),
    }
}

/// An error body in FastAPI's shape, which BFL and fal answer with: `{"detail": "text"}`,
/// `{"detail": [{"loc", "msg", "type"}]}` (validation) or `{"message": "text"}`. What the
/// texts mean, and how they are told to a client, is each adapter's to say.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct FastApiError {
    /// A text, a list of validation items, or (undocumented) anything else.
    pub detail: Option<Value>,
    pub message: Option<String>,
}

impl FastApiError {
    /// `body` read as FastAPI's error shape; a body of any other shape reads as empty.
    pub fn read(body: &[u8]) -> Self {
        serde_json::from_slice(body).unwrap_or_default()
    }

    /// `detail`, when it is a text.
    pub fn detail_text(&self) -> Option<&str> {
        self.detail.as_ref()?.as_str()
    }

    /// `detail`, when it is a list of validation items, every one of them well formed.
    pub fn items(&self) -> Option<Vec<ValidationItem>> {
        Vec::deserialize(self.detail.as_ref()?).ok()
    }
}

/// One item of FastAPI's validation `detail`. Its `input` (which may echo a whole base64 image)
/// is never read.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ValidationItem {
    /// Where the fault is, outermost first: `["body", "width"]`.
    pub loc: Vec<Value>,
    pub msg: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    #[test]
    fn retry_after_prefers_milliseconds() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_static("20"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(20)));
        headers.insert("retry-after-ms", HeaderValue::from_static("1500"));
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(1500)));
        headers.insert("retry-after-ms", HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(20)));
    }

    #[test]
    fn statuses_map_by_meaning() {
        assert!(matches!(
            status_error(422, None, "bad"),
            ProviderError::InvalidRequest { .. }
        ));
        assert_eq!(
            status_error(401, None, "key sk-123"),
            ProviderError::Unauthorized { status: 401 }
        );
        assert_eq!(
            status_error(429, Some(Duration::from_secs(3)), ""),
            ProviderError::RateLimited {
                retry_after: Some(Duration::from_secs(3))
            }
        );
        assert!(
            matches!(status_error(503, None, &"x".repeat(1000)), ProviderError::Failed { message } if message.len() < 400)
        );
    }

    #[test]
    fn a_secret_cut_anywhere_by_short_is_scrubbed() {
        let key = "sk-0123456789abcdefghij";
        for offset in 0..=MAX_MESSAGE_CHARS + 5 {
            let message = format!("{}{key} and more", "x".repeat(offset));
            let scrubbed = scrub_text(&short(&message), key);
            for start in 0..key.len() - MIN_PARTIAL_SECRET {
                let piece = &key[start..start + MIN_PARTIAL_SECRET + 1];
                assert!(
                    !scrubbed.contains(piece),
                    "offset {offset}: `{piece}` in {scrubbed}"
                );
            }
        }
        assert_eq!(
            scrub_text("a sk-0123456789abcdefghij b", key),
            "a [redacted] b"
        );
        // Text that merely ends like the key's first characters before a cut loses them only
        // when there are enough of them to be the key's.
        assert_eq!(scrub_text("ask…", key), "ask…");
        assert_eq!(scrub_text("a sk-01…", key), "a [redacted]…");
        assert_eq!(scrub_text("no secret", ""), "no secret");
    }

    #[test]
    fn excerpts_are_one_short_line() {
        assert_eq!(
            excerpt(b"<html>\n  bad   gateway</html>\n"),
            "<html> bad gateway</html>"
        );
        assert_eq!(excerpt(b" \n "), "");
        assert_eq!(
            excerpt(&[b'x'; 1000]).chars().count(),
            MAX_MESSAGE_CHARS + 1
        );
    }
}
