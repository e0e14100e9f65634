//! `GET /healthz`: the process is up.

use axum::Json;
use schemars::JsonSchema;
use serde::Serialize;

/// The answer of `GET /healthz`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: &'static str,
}

/// Liveness.
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}
