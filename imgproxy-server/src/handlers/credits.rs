//! `GET /v1/credits`: the calling key's balance and recent charges.

use axum::{extract::State, Extension, Json};
use imgproxy_core::service::db::LedgerEntry;
use schemars::JsonSchema;
use serde::Serialize;

use crate::{auth::Caller, error::ApiError, state::AppState};

/// How many recent ledger entries to show.
const RECENT: u32 = 50;

/// The answer of `GET /v1/credits`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Credits {
    /// Always `credits`.
    pub object: &'static str,
    /// The calling key.
    pub key_id: String,
    /// Its label.
    pub name: String,
    /// Credits left.
    pub balance: i64,
    /// Its latest ledger entries, newest first.
    pub recent: Vec<LedgerEntry>,
}

/// The caller's balance and recent charges.
pub async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Credits>, ApiError> {
    let Caller::Key(key) = caller else {
        return Err(ApiError::Core(imgproxy_core::Error::Forbidden {
            message: "credits belong to issued keys; this request used none".into(),
        }));
    };
    let balance = state.service.db().balance(&key.id).await?;
    let recent = state.service.db().recent_charges(&key.id, RECENT).await?;
    Ok(Json(Credits {
        object: "credits",
        key_id: key.id,
        name: key.name,
        balance,
        recent,
    }))
}
