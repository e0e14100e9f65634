//! `GET /v1/credits`: the calling key's balance and recent charges.

use axum::{extract::State, Extension, Json};
use serde_json::{json, Value};

use crate::{auth::Caller, error::ApiError, state::AppState};

/// How many recent ledger entries to show.
const RECENT: u32 = 50;

/// The caller's balance and recent charges.
pub async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Value>, ApiError> {
    let Caller::Key(key) = caller else {
        return Err(ApiError::Core(imgproxy_core::Error::Forbidden {
            message: "credits belong to issued keys; this request used none".into(),
        }));
    };
    let balance = state.service.db().balance(&key.id).await?;
    let recent = state.service.db().recent_charges(&key.id, RECENT).await?;
    Ok(Json(
        json!({"object": "credits", "key_id": key.id, "name": key.name, "balance": balance, "recent": recent}),
    ))
}
