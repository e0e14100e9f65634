//! `POST /v1/images/generations`.

use axum::{extract::State, Json};
use imgproxy_core::{ImageRequest, ImageResponse};

use crate::{error::ApiError, extract::OpenAIJson, state::AppState};

/// Generates images.
pub async fn create(
    State(state): State<AppState>,
    OpenAIJson(request): OpenAIJson<ImageRequest>,
) -> Result<Json<ImageResponse>, ApiError> {
    Ok(Json(state.gateway.generate(request).await?))
}
