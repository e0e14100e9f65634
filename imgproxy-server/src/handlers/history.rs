//! `GET /v1/generations`: the calling key's recent generations, read from its ledger: each
//! settled charge with its request id, model, credits and the images it paid for (signed
//! URLs). Scoped to the key: another key's charges are never listed, and the master key,
//! which is not metered, has no history. The playground's history panel reads it.

use axum::{extract::State, Extension, Json};
use imgproxy_core::{
    service::db::{LedgerQuery, LedgerRecord},
    Error,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    auth::Caller,
    error::ApiError,
    extract::OpenAIQuery,
    handlers::{checked_limit, image_urls, List},
    state::AppState,
};

/// Generations listed when the query names no `limit`.
const DEFAULT_LIMIT: u32 = 20;
/// Most generations one page lists.
pub const MAX_LIMIT: u32 = 100;

/// The query of `GET /v1/generations`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct HistoryQuery {
    /// Most generations to list (default 20).
    #[schemars(range(min = 1, max = MAX_LIMIT))]
    limit: Option<u32>,
    /// Only generations older than this one: the `id` of the last generation of the page
    /// before.
    before: Option<i64>,
}

/// One generation of the calling key: a settled charge and what it produced.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Generation {
    /// The ledger row of the charge; the `before` of the next page.
    pub id: i64,
    /// Always `image.generation`.
    pub object: &'static str,
    /// The request's id (its `x-request-id`, or the task's id).
    pub request_id: Option<String>,
    /// The catalog model that made the images.
    pub model: Option<String>,
    /// The route the request came through (`/v1/images/generations`, ...), where recorded.
    pub surface: Option<String>,
    /// Credits the charge kept.
    pub credits_used: i64,
    /// The key's balance right after it.
    pub balance_after: i64,
    /// Signed URLs of the images it paid for (empty for charges recorded before imgproxy
    /// kept them).
    pub images: Vec<String>,
    /// Unix seconds.
    pub created_at: i64,
}

impl Generation {
    fn of(state: &AppState, record: LedgerRecord) -> Self {
        let inputs = record.entry.inputs.as_ref();
        let field = |name: &str| inputs.and_then(|inputs| inputs.get(name));
        Self {
            id: record.id,
            object: "image.generation",
            credits_used: field("kept")
                .and_then(serde_json::Value::as_i64)
                .unwrap_or_default(),
            surface: field("surface")
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned),
            request_id: record.entry.request_id,
            model: record.entry.model,
            balance_after: record.entry.balance_after,
            images: image_urls(state, &record.image_keys),
            created_at: record.entry.created_at,
        }
    }
}

/// The caller's latest generations, newest first.
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    OpenAIQuery(query): OpenAIQuery<HistoryQuery>,
) -> Result<Json<List<Generation>>, ApiError> {
    let Caller::Key(key) = caller else {
        return Err(ApiError::Core(Error::Forbidden {
            message: "the history lists the charges of issued keys; this request used none \
                      (the master key is not metered)"
                .into(),
        }));
    };
    let limit = checked_limit(query.limit, DEFAULT_LIMIT, MAX_LIMIT)?;
    let page = state
        .service
        .db()
        .ledger_page(&LedgerQuery {
            key_id: Some(&key.id),
            kind: Some("settle"),
            before: query.before,
            limit,
        })
        .await?;
    let data = page
        .into_iter()
        .map(|record| Generation::of(&state, record))
        .collect();
    Ok(Json(List::new(data)))
}
