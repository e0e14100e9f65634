//! `GET /healthz`: the process is up.

use axum::Json;
use serde_json::{json, Value};

/// Liveness.
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}
