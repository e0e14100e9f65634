//! `GET /healthz` (the process is up: cheap, touches nothing) and `GET /readyz` (it can serve
//! now: database reachable, image store writable, models served), for orchestrators.

use std::time::Duration;

use axum::{extract::State, http::StatusCode, Json};
use serde_json::{json, Map, Value};

use crate::state::AppState;

/// How long one readiness check may take before it counts as failed.
const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// Liveness.
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Readiness: 200 when every check passes, else 503 naming the failed ones. Details of a
/// failure go to the log, not to the (unauthenticated) caller.
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let service = &state.service;
    let (database, store) = tokio::join!(
        bounded("database", service.db().ping()),
        bounded("store", service.store().probe()),
    );
    let served = service.gateway().served_models().count();
    let checks = [
        ("database", database),
        ("store", store),
        ("models", served > 0),
    ];
    let failed: Vec<&str> = checks
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(name, _)| *name)
        .collect();
    let report: Map<String, Value> = checks
        .iter()
        .map(|(name, ok)| ((*name).to_owned(), json!(if *ok { "ok" } else { "failed" })))
        .collect();
    let status = if failed.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if failed.is_empty() { "ready" } else { "unready" },
        "checks": report,
        "failed": failed,
        "models": served,
    });
    (status, Json(body))
}

/// Whether `check` passed within [`CHECK_TIMEOUT`]; a failure is logged with its detail.
async fn bounded(
    name: &str,
    check: impl std::future::Future<Output = imgproxy_core::Result<()>>,
) -> bool {
    match tokio::time::timeout(CHECK_TIMEOUT, check).await {
        Ok(Ok(())) => true,
        Ok(Err(error)) => {
            tracing::warn!(check = name, %error, "readiness check failed");
            false
        }
        Err(_) => {
            tracing::warn!(check = name, timeout = ?CHECK_TIMEOUT, "readiness check timed out");
            false
        }
    }
}
