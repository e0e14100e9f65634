//! The admin API behind the master key: `POST /v1/admin/keys`, `GET /v1/admin/keys`,
//! `PATCH /v1/admin/keys/{id}` (limits and models), `POST /v1/admin/keys/{id}/revoke`,
//! `POST /v1/admin/keys/{id}/credit`. A key's limits and models are checked here (400 naming
//! the field) before anything is stored, when it is created and when they change.

use axum::{extract::State, http::StatusCode, Extension, Json};
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

/// Body of `POST /v1/admin/keys`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    name: String,
    #[serde(default)]
    credits: i64,
    rpm: Option<u32>,
    images_per_minute: Option<u32>,
    max_concurrent: Option<u32>,
    models: Option<Vec<String>>,
}

/// Body of `POST /v1/admin/keys/{id}/credit`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Credit {
    amount: i64,
}

fn require_master(caller: &Caller) -> Result<(), ApiError> {
    match caller {
        Caller::Master => Ok(()),
        _ => Err(ApiError::Core(imgproxy_core::Error::Forbidden {
            message: "the admin API needs the master key (IMGPROXY_MASTER_KEY)".into(),
        })),
    }
}

/// Issues a key; the answer holds its secret, shown this once.
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    OpenAIJson(body): OpenAIJson<CreateKey>,
) -> Result<(StatusCode, Json<CreatedKey>), ApiError> {
    require_master(&caller)?;
    let mut new = NewKey {
        name: body.name,
        credits: body.credits,
        rpm: body.rpm,
        images_per_minute: body.images_per_minute,
        max_concurrent: body.max_concurrent,
        models: body.models,
    };
    new.check_limits()?;
    // Against the catalog this server routes with, overrides and remaps included.
    new.resolve_models(state.service.gateway().catalog())?;
    let created = state.service.db().create_key(new).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Lists keys, never their secrets.
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<List<ApiKey>>, ApiError> {
    require_master(&caller)?;
    Ok(Json(List::new(state.service.db().list_keys().await?)))
}

/// Changes a key's limits or models: a field left out stays, `null` removes the limit.
pub async fn update(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    OpenAIPath(id): OpenAIPath<String>,
    OpenAIJson(change): OpenAIJson<KeyChange>,
) -> Result<Json<ApiKey>, ApiError> {
    require_master(&caller)?;
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
    Extension(caller): Extension<Caller>,
    OpenAIPath(id): OpenAIPath<String>,
) -> Result<Json<ApiKey>, ApiError> {
    require_master(&caller)?;
    Ok(Json(state.service.db().revoke_key(&id).await?))
}

/// Adds credits to a key.
pub async fn credit(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    OpenAIPath(id): OpenAIPath<String>,
    OpenAIJson(body): OpenAIJson<Credit>,
) -> Result<Json<ApiKey>, ApiError> {
    require_master(&caller)?;
    Ok(Json(state.service.db().credit_key(&id, body.amount).await?))
}
