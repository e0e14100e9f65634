//! `GET /v1/models` and `GET /v1/models/{id}` (also `{owner}/{id}`): OpenAI's model objects plus imgproxy's
//! catalog data (allowed parameters, capabilities, pricing, aliases, JSON Schema).

use axum::{extract::State, Json};
use imgproxy_core::catalog::describe;
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    error::ApiError,
    extract::{OpenAIPath, OpenAIQuery},
    handlers::List,
    state::AppState,
};

/// Filters of the list.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct Filters {
    /// Only this provider's models (`openai`, `replicate`, ...).
    provider: Option<String>,
    /// Only models with this capability (`text-to-image`, `edit`, `mask`, `streaming`, ...).
    capability: Option<String>,
    /// `image` lists every model; any other modality none.
    modality: Option<String>,
}

/// A model as clients see it: `describe::model_object`, OpenAI's `Model` plus the catalog's
/// data. Its `schema` is the JSON Schema of a request to that model.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct ModelObject(Value);

impl JsonSchema for ModelObject {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Model".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "OpenAI's model object plus imgproxy's catalog data.",
            "type": "object",
            "required": ["id", "object", "created", "owned_by", "provider", "aliases",
                         "capabilities", "allowedParams", "pricing", "schema"],
            "properties": {
                "id": {"type": "string"},
                "object": {"const": "model"},
                "created": {"type": "integer"},
                "owned_by": {"type": "string"},
                "provider": {"type": "string"},
                "aliases": {"type": "array", "items": {"type": "string"}},
                "capabilities": {"type": "array", "items": {"type": "string"}},
                "allowedParams": {
                    "description": "The parameters the model takes, their values and defaults.",
                    "type": "object"
                },
                "pricing": {"description": "Credits per image, by tier where priced so."},
                "schema": {
                    "description": "The JSON Schema (2020-12) of a request body for this model.",
                    "type": "object"
                },
                "shutdown_date": {"description": "Retired models: when it shut down upstream.", "type": "string"},
                "replacement": {"description": "Retired models: the model to use instead.", "type": "string"},
                "redirected_to_replacement": {"type": "boolean"}
            }
        })
    }
}

/// Lists the models this server can serve.
pub async fn list(
    State(state): State<AppState>,
    OpenAIQuery(filters): OpenAIQuery<Filters>,
) -> Result<Json<List<ModelObject>>, ApiError> {
    if filters.modality.as_deref().is_some_and(|m| m != "image") {
        return Ok(Json(List::new(Vec::new())));
    }
    let data = state
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
        .map(|m| ModelObject(describe::model_object(m)))
        .collect();
    Ok(Json(List::new(data)))
}

/// Describes one model, by id or alias.
pub async fn retrieve(
    State(state): State<AppState>,
    OpenAIPath(id): OpenAIPath<String>,
) -> Result<Json<ModelObject>, ApiError> {
    describe_named(&state, &id)
}

/// Describes one model whose id or alias has a slash (`google/nano-banana-pro`): the router
/// splits the path at it, so the name is put back together here.
pub async fn retrieve_owned(
    State(state): State<AppState>,
    OpenAIPath((owner, name)): OpenAIPath<(String, String)>,
) -> Result<Json<ModelObject>, ApiError> {
    describe_named(&state, &format!("{owner}/{name}"))
}

fn describe_named(state: &AppState, id: &str) -> Result<Json<ModelObject>, ApiError> {
    match state
        .service
        .gateway()
        .catalog()
        .get(id)
        .filter(|m| state.service.gateway().answers(m))
    {
        Some(model) => Ok(Json(ModelObject(describe::model_object(model)))),
        None => Err(imgproxy_core::Error::ModelNotFound {
            message: format!("the model `{id}` does not exist"),
        }
        .into()),
    }
}
