//! `POST /v1/images/generations`: served through the cache (the `X-Cache-Status` header says
//! hit or miss); for issued keys limited, then metered, with the balance in a header. Edits
//! end in [`serve`] too.

use axum::{
    extract::State,
    http::HeaderMap,
    response::{IntoResponse, Response},
    Extension, Json,
};
use imgproxy_core::ImageRequest;

use crate::{auth::Caller, calls, error::ApiError, extract::OpenAIJson, state::AppState};

/// Generates images.
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    OpenAIJson(request): OpenAIJson<ImageRequest>,
) -> Result<Response, ApiError> {
    serve(&state, &caller, &headers, request).await
}

/// Serves a generation or an edit for `caller` and answers in OpenAI's shape.
pub async fn serve(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    request: ImageRequest,
) -> Result<Response, ApiError> {
    let admitted = calls::admit(state, caller, request.n.unwrap_or(1))?;
    let cache = calls::cache_mode(headers, request.reroll == Some(true));
    let call = calls::call(state, caller, &admitted, cache, None);
    let served = state.gateway.serve(call, request).await?;
    let mut response = Json(state.gateway.response(&served)).into_response();
    calls::annotate(&mut response, served.cache, served.balance);
    Ok(response)
}
