//! The admin API behind the master key: `POST /v1/admin/keys`, `GET /v1/admin/keys`,
//! `PATCH /v1/admin/keys/{id}` (limits and models), `POST /v1/admin/keys/{id}/revoke`,
//! `POST /v1/admin/keys/{id}/credit`. A key's limits and models are checked here (400 naming
//! the field) before anything is stored, when it is created and when they change.

use axum::{
    extract::{Request, State},
    http::StatusCode,
    middleware::Next,
    response::Response,
    Extension, Json,
};
use imgproxy_core::service::db::{ApiKey, CreatedKey, KeyChange, NewKey};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::{
    auth::Caller,
    error::ApiError,
    extract::{OpenAIJson, OpenAIPath},
    handlers::List,
    state::AppState,
};

/// Body of `POST /v1/admin/keys/{id}/credit`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Credit {
    amount: i64,
}

/// Lets only the master key through to the admin API: `app.rs` layers it on every admin
/// route, inside authentication.
pub async fn require_master(
    Extension(caller): Extension<Caller>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    match caller {
        Caller::Master => Ok(next.run(request).await),
        _ => Err(ApiError::Core(imgproxy_core::Error::Forbidden {
            message: "the admin API needs the master key (IMGPROXY_MASTER_KEY)".into(),
        })),
    }
}

/// Issues a key; the answer holds its secret, shown this once.
pub async fn create(
    State(state): State<AppState>,
    OpenAIJson(mut new): OpenAIJson<NewKey>,
) -> Result<(StatusCode, Json<CreatedKey>), ApiError> {
    new.check_limits()?;
    // Against the catalog this server routes with, overrides and remaps included.
    new.resolve_models(state.service.gateway().catalog())?;
    let created = state.service.db().create_key(new).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Lists keys, never their secrets.
pub async fn list(State(state): State<AppState>) -> Result<Json<List<ApiKey>>, ApiError> {
    Ok(Json(List::new(state.service.db().list_keys().await?)))
}

/// Changes a key's limits or models: a field left out stays, `null` removes the limit.
pub async fn update(
    State(state): State<AppState>,
    OpenAIPath(id): OpenAIPath<String>,
    OpenAIJson(change): OpenAIJson<KeyChange>,
) -> Result<Json<ApiKey>, ApiError> {
    let db = state.service.db();
    let mut limits = change.applied_to(&db.get_key(&id).await?);
    limits.check_limits()?;
    if change.models.is_some() {
        // Only names being set now are checked: a kept list was checked when it was set.
        limits.resolve_models(state.service.gateway().catalog())?;
    }
    Ok(Json(db.set_key_limits(&id, &limits).await?))
}

/// Revokes a key; it is refused from the next request on.
pub async fn revoke(
    State(state): State<AppState>,
    OpenAIPath(id): OpenAIPath<String>,
) -> Result<Json<ApiKey>, ApiError> {
    Ok(Json(state.service.db().revoke_key(&id).await?))
}

/// Adds credits to a key.
pub async fn credit(
    State(state): State<AppState>,
    OpenAIPath(id): OpenAIPath<String>,
    OpenAIJson(body): OpenAIJson<Credit>,
) -> Result<Json<ApiKey>, ApiError> {
    Ok(Json(state.service.db().credit_key(&id, body.amount).await?))
}
