//! `GET /v1/models` and `GET /v1/models/{id}`: OpenAI's model objects plus imgproxy's
//! catalog data (allowed parameters, capabilities, pricing, aliases, JSON Schema).

use axum::{
    extract::{Query, State},
    Json,
};
use imgproxy_core::catalog::describe;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{error::ApiError, extract::OpenAIPath, state::AppState};

/// Filters of the list.
#[derive(Debug, Deserialize)]
pub struct Filters {
    provider: Option<String>,
    capability: Option<String>,
    modality: Option<String>,
}

/// Lists the models this server can serve.
pub async fn list(
    State(state): State<AppState>,
    Query(filters): Query<Filters>,
) -> Result<Json<Value>, ApiError> {
    if filters.modality.as_deref().is_some_and(|m| m != "image") {
        return Ok(Json(json!({"object": "list", "data": []})));
    }
    let data: Vec<Value> = state
        .service
        .gateway()
        .served_models()
        .filter(|m| filters.provider.as_deref().is_none_or(|p| m.provider == p))
        .filter(|m| {
            filters.capability.as_deref().is_none_or(|c| {
                m.capabilities
                    .iter()
                    .any(|have| describe::capability_name(*have) == c)
            })
        })
        .map(|m| describe::model_object(m))
        .collect();
    Ok(Json(json!({"object": "list", "data": data})))
}

/// Describes one model, by id or alias.
pub async fn retrieve(
    State(state): State<AppState>,
    OpenAIPath(id): OpenAIPath<String>,
) -> Result<Json<Value>, ApiError> {
    match state
        .service
        .gateway()
        .catalog()
        .get(&id)
        .filter(|m| state.service.gateway().answers(m))
    {
        Some(model) => Ok(Json(describe::model_object(model))),
        None => Err(imgproxy_core::Error::ModelNotFound {
            message: format!("the model `{id}` does not exist"),
        }
        .into()),
    }
}
