//! The public edge, in HTTP terms only: which browser origins may call (CORS, with preflight),
//! the headers every answer carries (`nosniff`; a content-security policy on SVG) and the
//! validators of cacheable answers (`ETag`, `If-None-Match` → 304). What is cached and for how
//! long is each handler's decision; who may call at all is `auth`.

use std::time::Duration;

use axum::{
    extract::Request,
    http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};

use crate::config::CorsSettings;

/// The policy of SVG answers (generated images and uploaded files alike): an SVG opened
/// directly runs no script, loads nothing and cannot navigate; inline styles still render.
pub const SVG_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; sandbox";

/// Header saying whether a generated answer came from the cache (`HIT`, `MISS-GENERATED`, ...).
pub const CACHE_STATUS: &str = "x-cache-status";

/// Answer headers a page on an allowed origin may read (besides the CORS-safelisted ones).
const EXPOSED: [&str; 11] = [
    "etag",
    "location",
    "retry-after",
    "content-disposition",
    "x-cache-status",
    "x-cache-store",
    "x-model",
    "x-credits-remaining",
    "x-request-id",
    "x-upstream-attempts",
    "x-fallbacks",
];

/// Which browser origins may call the API and load its images with `crossorigin`.
#[derive(Debug, Clone, Default)]
pub struct Cors {
    /// The allowed origins.
    pub origins: Origins,
    /// How long a browser may keep a preflight's answer.
    pub max_age: Duration,
}

/// Allowed origins.
#[derive(Debug, Clone, Default)]
pub enum Origins {
    /// None: no CORS headers at all, so browsers keep pages on other origins out.
    #[default]
    None,
    /// Any origin (`*`); the API is keyed by a bearer token, never by cookies.
    Any,
    /// These origins, exactly as browsers send them (`https://app.example.com`).
    List(Vec<HeaderValue>),
}

impl Cors {
    /// The policy the checked settings describe.
    pub fn from_settings(settings: &CorsSettings) -> Self {
        let origins = match settings.allowed_origins.as_slice() {
            [] => Origins::None,
            [any] if any == "*" => Origins::Any,
            // Checked at start to be origins, so they are valid header values.
            list => Origins::List(
                list.iter()
                    .filter_map(|o| HeaderValue::from_str(o).ok())
                    .collect(),
            ),
        };
        Self {
            origins,
            max_age: settings.max_age,
        }
    }

    /// The layer that answers preflights and adds `Access-Control-Allow-Origin` to the
    /// answers of allowed origins; `None` when no origin is allowed.
    pub fn layer(&self) -> Option<CorsLayer> {
        let origins = match &self.origins {
            Origins::None => return None,
            Origins::Any => AllowOrigin::any(),
            Origins::List(list) => AllowOrigin::list(list.iter().cloned()),
        };
        Some(
            CorsLayer::new()
                .allow_origin(origins)
                .allow_methods([Method::GET, Method::HEAD, Method::POST, Method::DELETE])
                // SDKs add headers of their own (OpenAI's sends `x-stainless-*`); the bearer
                // token, not the header list, is what guards the API.
                .allow_headers(AllowHeaders::mirror_request())
                .expose_headers(EXPOSED.map(HeaderName::from_static))
                .max_age(self.max_age),
        )
    }
}

/// Adds the headers every answer carries: `X-Content-Type-Options: nosniff`, so a browser
/// never runs an answer as something other than its declared type, and [`SVG_CSP`] on SVG.
pub async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    let svg = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("image/svg+xml"))
        });
    if svg {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(SVG_CSP),
        );
    }
    response
}

/// A strong entity tag for `id` (a content hash, so equal tags mean equal bytes).
pub fn etag(id: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!("\"{id}\"")).ok()
}

/// Whether the request's `If-None-Match` names `etag` (or is `*`), compared weakly as RFC 9110
/// §13.1.2 asks for `If-None-Match`.
pub fn not_modified(request: &HeaderMap, etag: &HeaderValue) -> bool {
    let Ok(ours) = etag.to_str() else {
        return false;
    };
    let ours = ours.trim_start_matches("W/");
    request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.trim_start_matches("W/") == ours)
}

/// `304 Not Modified` with the validator and the cache policy a 200 would have carried.
pub fn not_modified_response(etag: HeaderValue, cache_control: HeaderValue) -> Response {
    (
        StatusCode::NOT_MODIFIED,
        [(header::ETAG, etag), (header::CACHE_CONTROL, cache_control)],
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_compares_weakly_and_takes_lists_and_star() {
        let tag = etag("abc.png").unwrap();
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::IF_NONE_MATCH, HeaderValue::from_str(value).unwrap());
            not_modified(&headers, &tag)
        };
        assert!(with("\"abc.png\""));
        assert!(with("W/\"abc.png\""));
        assert!(with("\"x\", \"abc.png\""));
        assert!(with("*"));
        assert!(!with("\"abc\""));
        assert!(!not_modified(&HeaderMap::new(), &tag));
    }
}
