//! Asynchronous tasks over HTTP: `GET /v1/tasks/{id}`, `POST /v1/tasks/{id}/cancel`, seed
//! 004's `GET /api/v1/images/generations?task_id=`, and `GET /v1/webhooks/secret` (the key's
//! signing secret for callbacks). Submitting is `generations` / `edits` with `async`.

use std::sync::Arc;

use axum::{
    extract::State,
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Extension, Json,
};
use imgproxy_core::{
    service::{
        db::{Remembered, TaskRecord, TaskStatus},
        idempotency::Begun,
        tasks::{Submitter, TaskKind, TaskObject, Tasks},
    },
    Error, ImageRequest,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    auth::Caller,
    calls,
    error::ApiError,
    extract::{OpenAIPath, OpenAIQuery},
    state::AppState,
    telemetry::RequestNote,
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

/// Queues `request` as a task: 202 with the task and its `Location`. Begun under an
/// idempotency key, the key's first request submits it and every retry answers that task.
pub async fn submit(
    state: &AppState,
    caller: &Caller,
    note: &RequestNote,
    kind: TaskKind,
    request: ImageRequest,
    begun: Option<Begun>,
) -> Result<Response, ApiError> {
    let tasks = service(state)?;
    let (task, replayed) = match begun {
        None => {
            let submitter = Submitter {
                tenant: caller.tenant(),
                key: caller.paying_key(),
                request_id: Some(note.id().as_str()),
            };
            (tasks.submit(submitter, kind, request).await?, false)
        }
        Some(Begun::Run(attempt)) => {
            let (runner, caller, request_id) = (
                Arc::clone(tasks),
                caller.clone(),
                note.id().as_str().to_owned(),
            );
            let task = attempt
                .run(async move {
                    let submitter = Submitter {
                        tenant: caller.tenant(),
                        key: caller.paying_key(),
                        request_id: Some(&request_id),
                    };
                    runner.submit(submitter, kind, request).await
                })
                .await?;
            (task, false)
        }
        Some(Begun::Replay(Remembered::Task(id))) => {
            let (_, task) = find(state, caller, &id).await?;
            (task, true)
        }
        Some(Begun::Replay(Remembered::Images(_))) => {
            return Err(Error::Internal(
                "an idempotency key of a synchronous request answered a task".into(),
            )
            .into())
        }
    };
    let location = format!("/v1/tasks/{}", task.id);
    let object = tasks.object(&task).await?;
    let mut response = (StatusCode::ACCEPTED, Json(object)).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    if replayed {
        calls::mark_replayed(&mut response);
    }
    Ok(response)
}

/// `GET /v1/tasks/{id}`.
pub async fn retrieve(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    OpenAIPath(id): OpenAIPath<String>,
) -> Result<Json<TaskObject>, ApiError> {
    let (tasks, task) = find(&state, &caller, &id).await?;
    Ok(Json(tasks.object(&task).await?))
}

/// `POST /v1/tasks/{id}/cancel`: the task as it is after the request (a queued task is
/// canceled at once; a running one within a heartbeat).
pub async fn cancel(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    OpenAIPath(id): OpenAIPath<String>,
) -> Result<Json<TaskObject>, ApiError> {
    let tasks = service(&state)?;
    let Some(task) = tasks.cancel(caller.tenant(), &id).await? else {
        return Err(not_found(&id));
    };
    Ok(Json(tasks.object(&task).await?))
}

/// The query of seed 004's poll.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct TaskQuery {
    /// The task's id.
    #[schemars(required)]
    task_id: Option<String>,
}

/// Seed 004's envelope of a task.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SeedPoll {
    /// Always 200.
    pub code: u16,
    /// Always `success`.
    pub msg: &'static str,
    /// The task.
    pub data: SeedTask,
}

/// A task as seed 004 shows it.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SeedTask {
    /// `task_...`.
    pub task_id: String,
    /// The model asked for.
    pub model: String,
    /// `pending`, `processing`, `completed`, `failed` or `canceled`.
    pub state: &'static str,
    /// The signed URLs of the images, once completed.
    pub result_urls: Vec<String>,
    /// The error's code, on failure.
    pub fail_code: Option<String>,
    /// The error's message, on failure.
    pub fail_msg: Option<String>,
    /// Unix milliseconds.
    pub create_time: i64,
    /// When it ended, Unix milliseconds.
    pub complete_time: Option<i64>,
    /// How long it ran, in milliseconds.
    pub cost_time: Option<i64>,
}

/// The answer of `GET /v1/webhooks/secret`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct WebhookSecret {
    /// Always `webhook_secret`.
    pub object: &'static str,
    /// `whsec_...`: the key of the callbacks' signatures.
    pub secret: String,
    /// How callbacks are signed.
    pub scheme: &'static str,
}

/// `GET /api/v1/images/generations?task_id=`: seed 004's envelope (`pending`, `processing`,
/// `completed`, `failed`; result URLs; millisecond times).
pub async fn seed_poll(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    OpenAIQuery(query): OpenAIQuery<TaskQuery>,
) -> Result<Json<SeedPoll>, ApiError> {
    let Some(task_id) = query.task_id else {
        return Err(Error::invalid_param("task_id", "`task_id` is required").into());
    };
    let (tasks, task) = find(&state, &caller, &task_id).await?;
    let object = tasks.object(&task).await?;
    Ok(Json(SeedPoll {
        code: 200,
        msg: "success",
        data: seed_task(&task, object),
    }))
}

/// `task` as seed 004 shows it; `object` is the task as `GET /v1/tasks/{id}` shows it.
pub fn seed_task(task: &TaskRecord, object: TaskObject) -> SeedTask {
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
    SeedTask {
        fail_code: task.error.as_ref().and_then(|e| e.code.clone()),
        fail_msg: task.error.as_ref().map(|e| e.message.clone()),
        cost_time: task
            .finished_at_ms
            .zip(task.started_at_ms)
            .map(|(end, start)| end - start),
        task_id: task.id.clone(),
        model: task.model.clone(),
        state: state_name,
        result_urls: urls,
        create_time: task.created_at_ms,
        complete_time: task.finished_at_ms,
    }
}

/// `GET /v1/webhooks/secret`: the secret that signs this caller's callbacks.
pub async fn webhook_secret(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<WebhookSecret>, ApiError> {
    let secret = state.service.db().webhook_secret(caller.tenant()).await?;
    Ok(Json(WebhookSecret {
        object: "webhook_secret",
        secret,
        scheme: "Standard Webhooks: webhook-id, webhook-timestamp, webhook-signature (v1, HMAC-SHA256 of `id.timestamp.body`)",
    }))
}

/// Queues `request` as a generation task for `caller`, counted by its rate limits like a
/// request (the workers bound what runs), its webhook in the registered body shape `callback`
/// if one is given: the drop-in routes' one way to a task (each answers in its own shape).
pub(crate) async fn queue(
    state: &AppState,
    caller: &Caller,
    note: &RequestNote,
    request: ImageRequest,
    callback: Option<&'static str>,
) -> Result<TaskRecord, ApiError> {
    if let Some(model) = &request.model {
        note.model(model);
    }
    let runner = service(state)?;
    drop(calls::admit(state, caller, note, request.n.unwrap_or(1)).await?);
    let submitter = Submitter {
        tenant: caller.tenant(),
        key: caller.paying_key(),
        request_id: Some(note.id().as_str()),
    };
    let kind = TaskKind::Generation;
    let task = match callback {
        None => runner.submit(submitter, kind, request).await?,
        Some(format) => {
            runner
                .submit_with_callback_format(submitter, kind, request, format)
                .await?
        }
    };
    Ok(task)
}

/// The task runner, or 400 when tasks are not enabled.
pub(crate) fn service(state: &AppState) -> Result<&Arc<Tasks>, ApiError> {
    state.tasks.as_ref().ok_or_else(|| {
        Error::invalid_param("async", "asynchronous tasks are not enabled on this server").into()
    })
}

/// The task runner and the caller's task `id`.
async fn find<'a>(
    state: &'a AppState,
    caller: &Caller,
    id: &str,
) -> Result<(&'a Arc<Tasks>, TaskRecord), ApiError> {
    let tasks = service(state)?;
    let task = state.service.db().task(caller.tenant(), id).await?;
    Ok((tasks, task.ok_or_else(|| not_found(id))?))
}

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound {
        message: format!("no task `{id}`"),
    }
}
