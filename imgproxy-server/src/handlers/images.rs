//! `GET /images/{key}?exp=..&sig=..`: stored images, by content hash, behind a signature with
//! an expiry (the URLs `response_format=url` hands out). Unsigned, altered or expired → 403.

use axum::{
    extract::{Path, RawQuery, State},
    http::header,
    response::IntoResponse,
};
use imgproxy_core::service::{signing::SignatureError, IMAGE_PATH};

use crate::{error::ApiError, state::AppState};

/// Serves one stored image.
pub async fn get(
    State(state): State<AppState>,
    Path(key): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<impl IntoResponse, ApiError> {
    let params: Vec<(String, String)> =
        url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let Some((signer, _)) = state.service.signer() else {
        return Err(ApiError::Signature(SignatureError::Missing));
    };
    signer
        .verify(
            &format!("{IMAGE_PATH}{key}"),
            &params,
            imgproxy_core::clock::now_secs(),
        )
        .map_err(ApiError::Signature)?;
    let not_found = || ApiError::NotFound {
        message: format!("no image `{key}`"),
    };
    let Some((bytes, mime)) = state.service.store().get(&key).await? else {
        return Err(not_found());
    };
    Ok((
        [
            (header::CONTENT_TYPE, mime),
            // The bytes behind a key never change; the URL itself expires, so caches may keep
            // the answer only as long as the URL is valid, and only privately.
            (header::CACHE_CONTROL, "private, max-age=3600"),
        ],
        bytes,
    ))
}
