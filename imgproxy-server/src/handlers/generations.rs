//! `POST /v1/images/generations`: unmetered for the master key and open servers; for issued
//! keys, limited, then metered (reserve, generate, settle) with the balance in a header.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::{
    extract::State,
    http::HeaderValue,
    response::{IntoResponse, Response},
    Extension, Json,
};
use imgproxy_core::{metering::Meter, ImageRequest};

use crate::{auth::Caller, error::ApiError, extract::OpenAIJson, state::AppState};

/// Header with the calling key's balance after the request.
const CREDITS_REMAINING: &str = "x-credits-remaining";

/// Generates images.
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    OpenAIJson(request): OpenAIJson<ImageRequest>,
) -> Result<Response, ApiError> {
    let Caller::Key(key) = caller else {
        return Ok(Json(state.gateway.generate(request).await?).into_response());
    };
    let _admission = state.limits.admit(&key, request.n.unwrap_or(1))?;
    let request_id = new_request_id(&state.instance_id);
    let meter = Meter {
        accounts: &state.accounts,
        key: &key,
        request_id: &request_id,
        owner: &state.instance_id,
    };
    let metered = state.gateway.generate_metered(meter, request).await?;
    let mut response = Json(metered.response).into_response();
    response
        .headers_mut()
        .insert(CREDITS_REMAINING, HeaderValue::from(metered.balance));
    Ok(response)
}

/// A request id unique across instances and restarts: instance id, start time, counter.
fn new_request_id(instance_id: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "req_{instance_id}_{nanos:x}_{:x}",
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}
