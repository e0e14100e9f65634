//! What the operator console reads, behind the master key (`app.rs` layers
//! `admin::require_master` on every route here): `GET /v1/admin/ledger` (every key's ledger,
//! each settled charge with the images it paid for), `GET /v1/admin/tasks` and
//! `GET /v1/admin/webhooks` (every tenant's tasks and webhook deliveries and where they
//! stand) and `GET /v1/admin/summary` (counts from the database and this instance's
//! counters). Nothing here changes anything.

use std::collections::BTreeMap;

use axum::{extract::State, Json};
use imgproxy_core::{
    service::db::{DeliveryRecord, LedgerEntry, LedgerQuery, TaskListing, TaskStatus},
    telemetry as core_metrics, Error, ErrorBody,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    error::ApiError,
    extract::OpenAIQuery,
    handlers::{checked_limit, image_urls, List},
    state::AppState,
    telemetry::metrics,
};

/// Rows a listing shows when the query names no `limit`.
const DEFAULT_LIMIT: u32 = 50;
/// Most rows one listing shows.
pub const MAX_LIMIT: u32 = 500;
/// The kinds of ledger rows.
const LEDGER_KINDS: [&str; 4] = ["reserve", "settle", "refund", "credit"];
/// The states of a task.
const TASK_STATES: [TaskStatus; 5] = [
    TaskStatus::Queued,
    TaskStatus::Processing,
    TaskStatus::Succeeded,
    TaskStatus::Failed,
    TaskStatus::Canceled,
];
/// The states of a webhook delivery.
const DELIVERY_STATES: [&str; 3] = ["pending", "delivered", "failed"];

/// The query of `GET /v1/admin/ledger`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct LedgerFilter {
    /// Only this key's rows.
    key_id: Option<String>,
    /// Only rows of this kind.
    #[schemars(extend("enum" = LEDGER_KINDS))]
    kind: Option<String>,
    /// Most rows to list (default 50).
    #[schemars(range(min = 1, max = MAX_LIMIT))]
    limit: Option<u32>,
    /// Only rows older than this one: the `id` of the last row of the page before.
    before: Option<i64>,
}

/// One row of the ledger, as the console lists it.
#[derive(Debug, Serialize, JsonSchema)]
pub struct LedgerLine {
    /// The row's id; the `before` of the next page.
    pub id: i64,
    /// The key whose balance changed.
    pub key_id: String,
    /// What changed.
    #[serde(flatten)]
    pub entry: LedgerEntry,
    /// Signed URLs of the images a settled charge paid for; empty for other rows.
    pub images: Vec<String>,
}

/// The query of `GET /v1/admin/tasks`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct TaskFilter {
    /// Only tasks in this state.
    #[schemars(extend("enum" = TASK_STATES.map(TaskStatus::as_str)))]
    status: Option<String>,
    /// Most tasks to list (default 50).
    #[schemars(range(min = 1, max = MAX_LIMIT))]
    limit: Option<u32>,
}

/// A task of any tenant, as the console lists it (its request and result left out).
#[derive(Debug, Serialize, JsonSchema)]
pub struct TaskLine {
    /// `task_...`.
    pub id: String,
    /// The paying key, for metered callers.
    pub key_id: Option<String>,
    /// `generation` or `edit`.
    pub kind: String,
    /// The model asked for.
    pub model: String,
    /// Where it is.
    pub status: TaskStatus,
    /// Credits charged.
    pub credits_used: Option<i64>,
    /// OpenAI's error object, on failure.
    pub error: Option<ErrorBody>,
    /// Where its end is POSTed.
    pub callback_url: Option<String>,
    /// The id of the HTTP request that submitted it.
    pub request_id: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// When a worker took it.
    pub started_at: Option<i64>,
    /// When it ended.
    pub finished_at: Option<i64>,
}

impl From<TaskListing> for TaskLine {
    fn from(task: TaskListing) -> Self {
        Self {
            id: task.id,
            key_id: task.key_id,
            kind: task.kind,
            model: task.model,
            status: task.status,
            credits_used: task.credits_used,
            error: task.error,
            callback_url: task.callback_url,
            request_id: task.request_id,
            created_at: task.created_at_ms / 1000,
            started_at: task.started_at_ms.map(|ms| ms / 1000),
            finished_at: task.finished_at_ms.map(|ms| ms / 1000),
        }
    }
}

/// The query of `GET /v1/admin/webhooks`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct DeliveryFilter {
    /// Only deliveries in this state.
    #[schemars(extend("enum" = DELIVERY_STATES))]
    status: Option<String>,
    /// Most deliveries to list (default 50).
    #[schemars(range(min = 1, max = MAX_LIMIT))]
    limit: Option<u32>,
}

/// A webhook delivery, as the console lists it.
#[derive(Debug, Serialize, JsonSchema)]
pub struct DeliveryLine {
    /// The task it reports.
    pub task_id: String,
    /// The receiver.
    pub url: String,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    /// Attempts made.
    pub attempts: i64,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When the task ended, Unix seconds.
    pub created_at: i64,
    /// When it was delivered or given up.
    pub finished_at: Option<i64>,
}

impl From<DeliveryRecord> for DeliveryLine {
    fn from(delivery: DeliveryRecord) -> Self {
        Self {
            task_id: delivery.task_id,
            url: delivery.url,
            status: delivery.status,
            attempts: delivery.attempts,
            last_error: delivery.last_error,
            created_at: delivery.created_at_ms / 1000,
            finished_at: delivery.finished_at_ms.map(|ms| ms / 1000),
        }
    }
}

/// The answer of `GET /v1/admin/summary`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Summary {
    /// Always `summary`.
    pub object: &'static str,
    /// Keys that authenticate.
    pub active_keys: i64,
    /// Keys revoked.
    pub revoked_keys: i64,
    /// Credits held by the keys that authenticate.
    pub balance: i64,
    /// Tasks by state, every instance's.
    pub tasks: BTreeMap<String, i64>,
    /// Webhook deliveries by state, every instance's.
    pub webhooks: BTreeMap<String, i64>,
    /// This instance's counters since it started, from its metrics; `null` when metrics are
    /// off.
    pub instance: Option<InstanceCounters>,
}

/// An instance's counters (totals since it started; gauges as they are now).
#[derive(Debug, Serialize, JsonSchema)]
pub struct InstanceCounters {
    /// HTTP requests answered.
    pub requests: f64,
    /// Of them, answered with a 5xx.
    pub server_errors: f64,
    /// Error answers of every kind (4xx and 5xx).
    pub errors: f64,
    /// Images made upstream.
    pub images_generated: f64,
    /// Credits settled.
    pub credits_charged: f64,
    /// Generations answered from the cache (or by an identical one in flight).
    pub cache_hits: f64,
    /// Generations made upstream for the request.
    pub cache_misses: f64,
    /// Upstream calls.
    pub upstream_requests: f64,
    /// Generations running upstream now.
    pub generations_in_flight: f64,
}

/// A page of every key's ledger, newest first.
pub async fn ledger(
    State(state): State<AppState>,
    OpenAIQuery(filter): OpenAIQuery<LedgerFilter>,
) -> Result<Json<List<LedgerLine>>, ApiError> {
    let limit = checked_limit(filter.limit, DEFAULT_LIMIT, MAX_LIMIT)?;
    if let Some(kind) = filter.kind.as_deref() {
        if !LEDGER_KINDS.contains(&kind) {
            let message = format!("kind must be one of {}", LEDGER_KINDS.join(", "));
            return Err(Error::invalid_param("kind", message).into());
        }
    }
    let page = state
        .service
        .db()
        .ledger_page(&LedgerQuery {
            key_id: filter.key_id.as_deref(),
            kind: filter.kind.as_deref(),
            before: filter.before,
            limit,
        })
        .await?;
    let data = page
        .into_iter()
        .map(|record| LedgerLine {
            id: record.id,
            images: image_urls(&state, &record.image_keys),
            key_id: record.key_id,
            entry: record.entry,
        })
        .collect();
    Ok(Json(List::new(data)))
}

/// Every tenant's tasks, newest first.
pub async fn tasks(
    State(state): State<AppState>,
    OpenAIQuery(filter): OpenAIQuery<TaskFilter>,
) -> Result<Json<List<TaskLine>>, ApiError> {
    let limit = checked_limit(filter.limit, DEFAULT_LIMIT, MAX_LIMIT)?;
    let status = match filter.status.as_deref() {
        None => None,
        Some(name) => {
            let Some(status) = TASK_STATES.into_iter().find(|s| s.as_str() == name) else {
                let names = TASK_STATES.map(TaskStatus::as_str).join(", ");
                let message = format!("status must be one of {names}");
                return Err(Error::invalid_param("status", message).into());
            };
            Some(status)
        }
    };
    let tasks = state.service.db().list_tasks(status, limit).await?;
    Ok(Json(List::new(
        tasks.into_iter().map(TaskLine::from).collect(),
    )))
}

/// Every webhook delivery, newest first.
pub async fn webhooks(
    State(state): State<AppState>,
    OpenAIQuery(filter): OpenAIQuery<DeliveryFilter>,
) -> Result<Json<List<DeliveryLine>>, ApiError> {
    let limit = checked_limit(filter.limit, DEFAULT_LIMIT, MAX_LIMIT)?;
    if let Some(status) = filter.status.as_deref() {
        if !DELIVERY_STATES.contains(&status) {
            let message = format!("status must be one of {}", DELIVERY_STATES.join(", "));
            return Err(Error::invalid_param("status", message).into());
        }
    }
    let deliveries = state
        .service
        .db()
        .list_deliveries(filter.status.as_deref(), limit)
        .await?;
    Ok(Json(List::new(
        deliveries.into_iter().map(DeliveryLine::from).collect(),
    )))
}

/// The counts the console's overview shows.
pub async fn summary(State(state): State<AppState>) -> Result<Json<Summary>, ApiError> {
    let overview = state.service.db().overview().await?;
    let instance = state.recorder.as_ref().map(|recorder| {
        let rendered = recorder.render();
        let total =
            |name: &str, label: Option<(&str, &str)>| metrics::total(&rendered, name, label);
        InstanceCounters {
            requests: total(metrics::HTTP_REQUESTS, None),
            server_errors: total(metrics::HTTP_REQUESTS, Some(("status", "5xx"))),
            errors: total(metrics::ERRORS, None),
            images_generated: total(core_metrics::IMAGES_GENERATED, None),
            credits_charged: total(core_metrics::CREDITS_CHARGED, None),
            cache_hits: total(core_metrics::CACHE_LOOKUPS, Some(("result", "hit")))
                + total(core_metrics::CACHE_LOOKUPS, Some(("result", "coalesced"))),
            cache_misses: total(core_metrics::CACHE_LOOKUPS, Some(("result", "miss"))),
            upstream_requests: total(core_metrics::UPSTREAM_REQUESTS, None),
            generations_in_flight: total(core_metrics::GENERATIONS_IN_FLIGHT, None),
        }
    });
    Ok(Json(Summary {
        object: "summary",
        active_keys: overview.active_keys,
        revoked_keys: overview.revoked_keys,
        balance: overview.balance,
        tasks: overview.tasks,
        webhooks: overview.deliveries,
        instance,
    }))
}
