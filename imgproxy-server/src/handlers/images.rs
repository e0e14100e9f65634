//! `GET /images/{key}`: stored images, by content hash. The key is unguessable without the
//! image, and the bytes behind a key never change, so responses are cacheable forever.

use axum::{
    extract::{Path, State},
    http::header,
    response::IntoResponse,
};

use crate::{error::ApiError, state::AppState};

/// Serves one stored image.
pub async fn get(
    State(state): State<AppState>,
    Path(key): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let not_found = || ApiError::NotFound {
        message: format!("no image `{key}`"),
    };
    let Some(store) = state.gateway.store() else {
        return Err(not_found());
    };
    let Some((bytes, mime)) = store.get(&key).await? else {
        return Err(not_found());
    };
    Ok((
        [
            (header::CONTENT_TYPE, mime),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        bytes,
    ))
}
