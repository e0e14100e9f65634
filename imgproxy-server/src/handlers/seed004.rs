//! Seed 004's door, `POST /api/v1/images/generations`: its request read into the one
//! `ImageRequest` and queued as a task, answered and refused in its `{code, msg, data}`
//! envelope, and its task's webhook in its callback shape. Its poll is `tasks::seed_poll`.

use std::collections::BTreeMap;

use axum::{
    body::Body,
    extract::{Request, State},
    http::{header, HeaderMap, HeaderValue},
    middleware::Next,
    response::Response,
    Extension, Json,
};
use imgproxy_core::{
    service::{
        cache::CacheMode,
        db::{TaskRecord, TaskStatus},
        tasks::TaskObject,
    },
    Error, ErrorEnvelope, ImageRequest,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::{
    auth::Caller, calls, error::ApiError, extract::OpenAIJson, handlers::tasks, state::AppState,
    telemetry::RequestNote,
};

/// The name its tasks' webhook body shape is registered under (`Tasks::with_callback_format`).
pub const CALLBACK_FORMAT: &str = "seed004";

/// The most of an error answer read to reshape it (they are small; this is a guard).
const MAX_ERROR_BYTES: usize = 64 * 1024;

/// Seed 004's create request. Any other parameter the model's catalog entry declares (`n`,
/// `seed`, ...) is taken as on `POST /v1/images/generations`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct SeedRequest {
    /// A model name of seed 004 (`gemini-3-pro-image`, `nanobanana2/gemini-3.1-flash-image-preview`,
    /// ...) or any catalog model.
    model: String,
    /// What to draw, or how to edit the reference.
    prompt: String,
    /// `16:9`, `1:1`, ... as the model lists them.
    aspect_ratio: Option<String>,
    /// `1k`, `2k`, `4k` (either case) where the model takes a resolution.
    resolution: Option<String>,
    /// The reference image (or several) to edit.
    image_url: Option<ImageUrls>,
    /// Where the terminal state is POSTed, in seed 004's callback shape.
    callback_url: Option<String>,
    /// The model's other parameters.
    #[serde(flatten)]
    other: BTreeMap<String, Value>,
}

/// One reference URL or a list of them.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ImageUrls {
    /// One URL.
    One(String),
    /// Several.
    Many(Vec<String>),
}

/// Seed 004's answer to a create.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SeedCreated {
    /// Always 200.
    pub code: u16,
    /// Always `success`.
    pub msg: &'static str,
    /// The queued task.
    pub data: SeedCreatedTask,
}

/// The task a create queued.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SeedCreatedTask {
    /// `task_...`: poll it with `GET /api/v1/images/generations?task_id=` or `GET /v1/tasks/{id}`.
    pub task_id: String,
    /// Always `pending`.
    pub state: &'static str,
}

/// Seed 004's refusal: the HTTP status again in `code`, the reason in `msg`.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct SeedError {
    /// The HTTP status.
    pub code: u16,
    /// What is wrong.
    pub msg: String,
    /// Always `null`.
    pub data: Option<Value>,
}

/// `POST /api/v1/images/generations`: checks the request as a synchronous one and queues it
/// as a task whose webhook speaks seed 004's callback shape.
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(note): Extension<RequestNote>,
    headers: HeaderMap,
    OpenAIJson(asked): OpenAIJson<SeedRequest>,
) -> Result<Json<SeedCreated>, ApiError> {
    let mut request = image_request(asked)?;
    if calls::cache_mode(&headers, false) == CacheMode::Refresh {
        request.reroll = Some(true);
    }
    let task = tasks::queue(&state, &caller, &note, request, Some(CALLBACK_FORMAT)).await?;
    Ok(Json(SeedCreated {
        code: 200,
        msg: "success",
        data: SeedCreatedTask {
            task_id: task.id,
            state: "pending",
        },
    }))
}

/// Seed 004's request as the one `ImageRequest`: `resolution` in the catalog's case (`2k` is
/// `2K`), `image_url` as reference images.
fn image_request(asked: SeedRequest) -> Result<ImageRequest, Error> {
    let mut fields: Map<String, Value> = asked.other.into_iter().collect();
    fields.insert("model".into(), Value::String(asked.model));
    fields.insert("prompt".into(), Value::String(asked.prompt));
    if let Some(ratio) = asked.aspect_ratio {
        fields.insert("aspect_ratio".into(), Value::String(ratio));
    }
    if let Some(resolution) = asked.resolution {
        fields.insert(
            "image_size".into(),
            Value::String(resolution.to_ascii_uppercase()),
        );
    }
    if let Some(urls) = asked.image_url {
        let urls = match urls {
            ImageUrls::One(url) => vec![url],
            ImageUrls::Many(urls) => urls,
        };
        fields.insert("images".into(), json!(urls));
    }
    if let Some(url) = asked.callback_url {
        fields.insert("callback_url".into(), Value::String(url));
    }
    serde_json::from_value(Value::Object(fields)).map_err(|e| Error::InvalidRequest {
        message: e.to_string(),
        param: None,
        code: Some("invalid_value".into()),
    })
}

/// Middleware of the door: every refusal (the key's 401, a bad body, a core error) answered in
/// seed 004's envelope, with the status, headers and error class it had.
pub async fn envelope(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if status.is_success() {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_ERROR_BYTES)
        .await
        .unwrap_or_default();
    let msg = serde_json::from_slice::<ErrorEnvelope>(&bytes)
        .map(|envelope| envelope.error.message)
        .unwrap_or_else(|_| status.canonical_reason().unwrap_or("error").to_owned());
    let refusal = SeedError {
        code: status.as_u16(),
        msg,
        data: None,
    };
    let body = serde_json::to_vec(&refusal).unwrap_or_default();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(body))
}

/// The webhook body of a task created through this door: seed 004's `{code, msg, data}` with
/// `param` (the request) and `resultJson` (`{"resultUrls": [...]}`, `null` on failure) as JSON
/// strings. Its terminal states are `completed` and `failed` (a cancelled task is `failed`).
pub fn callback_body(task: &TaskRecord, object: TaskObject) -> Value {
    let seen = tasks::seed_task(task, object);
    let completed = task.status == TaskStatus::Succeeded;
    let result = completed.then(|| json!({ "resultUrls": seen.result_urls }).to_string());
    let (fail_code, fail_msg) = match task.status {
        TaskStatus::Canceled => (
            Some("canceled".to_owned()),
            Some("the task was canceled".to_owned()),
        ),
        _ => (seen.fail_code, seen.fail_msg),
    };
    json!({
        "code": 200,
        "msg": "success",
        "data": {
            "taskId": seen.task_id,
            "model": seen.model,
            "state": if completed { "completed" } else { "failed" },
            "param": asked_params(task).to_string(),
            "resultJson": result,
            "failCode": fail_code,
            "failMsg": fail_msg,
            "costTime": seen.cost_time,
            "completeTime": seen.complete_time,
            "createTime": seen.create_time,
        },
    })
}

/// The stored request in seed 004's names: `resolution`, `image_url`, and the callback URL.
fn asked_params(task: &TaskRecord) -> Value {
    let mut params = match &task.request {
        Value::Object(fields) => fields.clone(),
        _ => Map::new(),
    };
    params.retain(|_, value| !value.is_null());
    if let Some(size) = params.remove("image_size") {
        params.insert("resolution".into(), size);
    }
    if let Some(images) = params.remove("images") {
        let image_url = match images {
            Value::Array(mut list) if list.len() == 1 => list.remove(0),
            other => other,
        };
        params.insert("image_url".into(), image_url);
    }
    if let Some(url) = &task.callback_url {
        params.insert("callback_url".into(), Value::String(url.clone()));
    }
    Value::Object(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asked(body: Value) -> SeedRequest {
        serde_json::from_value(body).unwrap()
    }

    #[test]
    fn the_seed_examples_read_as_image_requests() {
        let request = image_request(asked(json!({
            "model": "gemini-3-pro-image-lite",
            "prompt": "A futuristic cityscape at sunset with flying cars",
            "aspect_ratio": "16:9",
            "resolution": "2k"
        })))
        .unwrap();
        assert_eq!(request.model.as_deref(), Some("gemini-3-pro-image-lite"));
        assert_eq!(request.aspect_ratio.as_deref(), Some("16:9"));
        assert_eq!(request.image_size.as_deref(), Some("2K"));
        assert!(request.images.is_none());

        let request = image_request(asked(json!({
            "model": "gemini-3-pro-image",
            "prompt": "Add dramatic storm clouds to the sky",
            "image_url": "https://example.com/photo.jpg",
            "aspect_ratio": "16:9",
            "callback_url": "https://example.com/hook",
            "n": 2
        })))
        .unwrap();
        assert_eq!(
            serde_json::to_value(request.images).unwrap(),
            json!(["https://example.com/photo.jpg"])
        );
        assert_eq!(
            request.callback_url.as_deref(),
            Some("https://example.com/hook")
        );
        assert_eq!(request.n, Some(2));
    }

    #[test]
    fn a_mistyped_parameter_is_a_400() {
        let error = image_request(asked(json!({"model": "m", "prompt": "p", "n": "two"})));
        assert_eq!(error.unwrap_err().status(), 400);
    }

    #[test]
    fn params_speak_the_seeds_names() {
        let task = TaskRecord {
            id: "task_1".into(),
            tenant: "t".into(),
            key_id: None,
            kind: "generation".into(),
            model: "nano-banana-pro".into(),
            status: TaskStatus::Failed,
            request: json!({"model": "gemini-3-pro-image", "prompt": "p", "image_size": "2K",
                            "images": ["https://example.com/a.jpg"], "seed": null}),
            result: None,
            error: None,
            credits_used: None,
            callback_url: Some("https://example.com/hook".into()),
            cancel_requested: false,
            created_at_ms: 1,
            started_at_ms: None,
            finished_at_ms: None,
            upstream_jobs: BTreeMap::new(),
            request_id: None,
            callback_format: Some(CALLBACK_FORMAT.into()),
        };
        assert_eq!(
            asked_params(&task),
            json!({"model": "gemini-3-pro-image", "prompt": "p", "resolution": "2K",
                   "image_url": "https://example.com/a.jpg",
                   "callback_url": "https://example.com/hook"})
        );
    }
}
