//! Asynchronous tasks over HTTP: `GET /v1/tasks/{id}`, `POST /v1/tasks/{id}/cancel`, seed
//! 004's `GET /api/v1/images/generations?task_id=`, and `GET /v1/webhooks/secret` (the key's
//! signing secret for callbacks). Submitting is `generations` / `edits` with `async`.

use axum::{
    extract::{Query, State},
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Extension, Json,
};
use imgproxy_core::{
    service::{
        db::{TaskRecord, TaskStatus},
        tasks::{Submitter, TaskKind, Tasks},
    },
    Error, ImageRequest,
};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{
    auth::Caller, error::ApiError, extract::OpenAIPath, state::AppState, telemetry::RequestNote,
};

/// Whether a request asks to run as a task: `"async": true`, or `Prefer: respond-async`.
pub fn wants_async(headers: &HeaderMap, request: &ImageRequest) -> bool {
    request.run_async == Some(true)
        || headers
            .get_all("prefer")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| p.trim().eq_ignore_ascii_case("respond-async"))
}

/// Queues `request` as a task: 202 with the task and its `Location`.
pub async fn submit(
    state: &AppState,
    caller: &Caller,
    note: &RequestNote,
    kind: TaskKind,
    request: ImageRequest,
) -> Result<Response, ApiError> {
    let tasks = service(state)?;
    let submitter = Submitter {
        tenant: caller.tenant(),
        key: caller.paying_key(),
        request_id: Some(note.id().as_str()),
    };
    let task = tasks.submit(submitter, kind, request).await?;
    let location = format!("/v1/tasks/{}", task.id);
    let object = tasks.object(&task).await?;
    let mut response = (StatusCode::ACCEPTED, Json(object)).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

/// `GET /v1/tasks/{id}`.
pub async fn retrieve(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    OpenAIPath(id): OpenAIPath<String>,
) -> Result<Json<Value>, ApiError> {
    let tasks = service(&state)?;
    let task = find(&state, &caller, &id).await?;
    Ok(Json(json!(tasks.object(&task).await?)))
}

/// `POST /v1/tasks/{id}/cancel`: the task as it is after the request (a queued task is
/// canceled at once; a running one within a heartbeat).
pub async fn cancel(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    OpenAIPath(id): OpenAIPath<String>,
) -> Result<Json<Value>, ApiError> {
    let tasks = service(&state)?;
    let Some(task) = tasks.cancel(caller.tenant(), &id).await? else {
        return Err(not_found(&id));
    };
    Ok(Json(json!(tasks.object(&task).await?)))
}

/// The query of seed 004's poll.
#[derive(Debug, Deserialize)]
pub struct TaskQuery {
    task_id: String,
}

/// `GET /api/v1/images/generations?task_id=`: seed 004's envelope (`pending`, `processing`,
/// `completed`, `failed`; result URLs; millisecond times).
pub async fn seed_poll(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<TaskQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Ok(Query(query)) = query else {
        return Err(Error::invalid_param("task_id", "`task_id` is required").into());
    };
    let tasks = service(&state)?;
    let task = find(&state, &caller, &query.task_id).await?;
    let object = tasks.object(&task).await?;
    let state_name = match task.status {
        TaskStatus::Queued => "pending",
        TaskStatus::Processing => "processing",
        TaskStatus::Succeeded => "completed",
        TaskStatus::Failed => "failed",
        TaskStatus::Canceled => "canceled",
    };
    let urls: Vec<String> = object
        .result
        .map(|result| result.data.into_iter().filter_map(|d| d.url).collect())
        .unwrap_or_default();
    Ok(Json(json!({
        "code": 200,
        "msg": "success",
        "data": {
            "taskId": task.id,
            "model": task.model,
            "state": state_name,
            "resultUrls": urls,
            "failCode": task.error.as_ref().and_then(|e| e.code.clone()),
            "failMsg": task.error.as_ref().map(|e| e.message.clone()),
            "createTime": task.created_at_ms,
            "completeTime": task.finished_at_ms,
            "costTime": task.finished_at_ms.zip(task.started_at_ms).map(|(end, start)| end - start),
        }
    })))
}

/// `GET /v1/webhooks/secret`: the secret that signs this caller's callbacks.
pub async fn webhook_secret(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Value>, ApiError> {
    let secret = state.service.db().webhook_secret(caller.tenant()).await?;
    Ok(Json(json!({
        "object": "webhook_secret",
        "secret": secret,
        "scheme": "Standard Webhooks: webhook-id, webhook-timestamp, webhook-signature (v1, HMAC-SHA256 of `id.timestamp.body`)",
    })))
}

fn service(state: &AppState) -> Result<&Tasks, ApiError> {
    state.tasks.as_deref().ok_or_else(|| {
        Error::invalid_param("async", "asynchronous tasks are not enabled on this server").into()
    })
}

async fn find(state: &AppState, caller: &Caller, id: &str) -> Result<TaskRecord, ApiError> {
    state
        .service
        .db()
        .task(caller.tenant(), id)
        .await?
        .ok_or_else(|| not_found(id))
}

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound {
        message: format!("no task `{id}`"),
    }
}
