//! `GET /healthz` (the process is up: cheap, touches nothing) and `GET /readyz` (it can serve
//! now: database reachable, image store writable, models served), for orchestrators; the
//! operator also sees the state of each upstream key there.

use std::{collections::BTreeMap, time::Duration};

use axum::{
    extract::State,
    http::{HeaderMap, StatusCode},
    Json,
};
use imgproxy_core::KeyStatus;
use schemars::JsonSchema;
use serde::Serialize;

use crate::{auth, state::AppState};

/// How long one readiness check may take before it counts as failed.
const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// The answer of `GET /healthz`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: &'static str,
}

/// The answer of `GET /readyz`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Readiness {
    /// `ready` (200) or `unready` (503).
    pub status: &'static str,
    /// Each check (`database`, `store`, `models`): `ok` or `failed`.
    pub checks: BTreeMap<&'static str, &'static str>,
    /// The checks that failed.
    pub failed: Vec<&'static str>,
    /// Models served.
    pub models: usize,
    /// Providers whose circuit is not closed (`open`: skipped after repeated failures;
    /// `half_open`: one probe under way). They do not make the instance unready: other
    /// providers, and the probe, still serve.
    pub circuits: BTreeMap<String, &'static str>,
    /// The upstream keys of each provider, by fingerprint, live or disabled (taken out after
    /// the upstream rejected them): shown to the operator only (the master key, or any caller
    /// of a server without one). A disabled key does not make the server unready: every
    /// instance shares the keys, and the provider's other keys, and other providers, still
    /// serve.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_keys: Option<BTreeMap<String, Vec<KeyStatus>>>,
}

/// Liveness.
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Readiness: 200 when every check passes, else 503 naming the failed ones. Details of a
/// failure go to the log, not to the (unauthenticated) caller.
pub async fn readyz(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> (StatusCode, Json<Readiness>) {
    let service = &state.service;
    let (database, store) = tokio::join!(
        bounded("database", service.db().ping()),
        bounded("store", service.store().probe()),
    );
    let models = service.gateway().served_models().count();
    let circuits = service
        .gateway()
        .circuits()
        .into_iter()
        .map(|(provider, circuit)| (provider, circuit.name()))
        .collect();
    let results = [
        ("database", database),
        ("store", store),
        ("models", models > 0),
    ];
    let failed: Vec<&'static str> = results
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(name, _)| *name)
        .collect();
    let checks = results
        .iter()
        .map(|(name, ok)| (*name, if *ok { "ok" } else { "failed" }))
        .collect();
    let (code, status) = match failed.is_empty() {
        true => (StatusCode::OK, "ready"),
        false => (StatusCode::SERVICE_UNAVAILABLE, "unready"),
    };
    (
        code,
        Json(Readiness {
            status,
            checks,
            failed,
            models,
            circuits,
            upstream_keys: auth::is_operator(&state, &headers).then(|| upstream_keys(&state)),
        }),
    )
}

/// The keys of every upstream provider that has any.
fn upstream_keys(state: &AppState) -> BTreeMap<String, Vec<KeyStatus>> {
    state
        .upstreams
        .iter()
        .map(|provider| (provider.name().to_owned(), provider.keys()))
        .filter(|(_, keys)| !keys.is_empty())
        .collect()
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
