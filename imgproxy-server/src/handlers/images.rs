//! `GET /images/{key}?exp=..&sig=..`: stored images, by content hash, behind a signature with
//! an expiry (the URLs `response_format=url` hands out). Unsigned, altered or expired → 403.
//! The bytes behind a key never change, so the answer is cacheable by anyone holding the URL
//! until it expires, with the key as a strong `ETag`.

use axum::{
    extract::{RawQuery, State},
    http::{header, HeaderMap, HeaderValue},
    response::{IntoResponse, Response},
};
use imgproxy_core::service::{
    signing::{SignatureError, EXPIRES},
    IMAGE_PATH,
};

use crate::{edge, error::ApiError, extract::OpenAIPath, state::AppState};

/// Serves one stored image, or a 304 when the client's copy (`If-None-Match`) is this one.
pub async fn get(
    State(state): State<AppState>,
    OpenAIPath(key): OpenAIPath<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let params: Vec<(String, String)> =
        url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let Some((signer, _)) = state.service.signer() else {
        return Err(ApiError::Signature(SignatureError::Missing));
    };
    let now = imgproxy_core::clock::now_secs();
    signer
        .verify(&format!("{IMAGE_PATH}{key}"), &params, now)
        .map_err(ApiError::Signature)?;
    // Verified, so `exp` is there and not past: caches may keep the answer until then, and
    // no longer, because the URL stops working then.
    let expires = params
        .iter()
        .find(|(k, _)| k == EXPIRES)
        .and_then(|(_, v)| v.parse::<i64>().ok())
        .unwrap_or(now);
    let max_age = expires.saturating_sub(now).max(0);
    let cache_control = HeaderValue::from_str(&format!("public, max-age={max_age}, immutable"))
        .unwrap_or(HeaderValue::from_static("no-cache"));
    let etag = edge::etag(&key);
    if let Some(etag) = etag.as_ref().filter(|e| edge::not_modified(&headers, e)) {
        return Ok(edge::not_modified_response(etag.clone(), cache_control));
    }
    let Some((bytes, mime)) = state.service.store().get(&key).await? else {
        return Err(ApiError::NotFound {
            message: format!("no image `{}`", imgproxy_core::quote(&key)),
        });
    };
    let mut response = ([(header::CONTENT_TYPE, mime)], bytes).into_response();
    let answer = response.headers_mut();
    answer.insert(header::CACHE_CONTROL, cache_control);
    if let Some(etag) = etag {
        answer.insert(header::ETAG, etag);
    }
    Ok(response)
}
