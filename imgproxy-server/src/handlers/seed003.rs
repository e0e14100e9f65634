//! Seed 003's door, `POST /api/v1/image/generate`: its body translated by `crate::seed003`,
//! queued as a task, answered `{"inferenceJobId"}`; the job is read at `GET /v1/tasks/{id}`.

use axum::{extract::State, Extension, Json};
use imgproxy_core::service::tasks::{Submitter, TaskKind};

use crate::{
    auth::Caller,
    calls,
    error::ApiError,
    extract::OpenAIJson,
    handlers::tasks,
    seed003::{self, InferenceJob, SeedRequest},
    state::AppState,
    telemetry::RequestNote,
};

/// Queues seed 003's request as a task. Errors keep OpenAI's envelope (seed 003 documents
/// none), with the field named as seed 003 spells it.
pub async fn generate(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(note): Extension<RequestNote>,
    OpenAIJson(body): OpenAIJson<SeedRequest>,
) -> Result<Json<InferenceJob>, ApiError> {
    let request = seed003::translate(body)?;
    if let Some(model) = &request.model {
        note.model(model);
    }
    let runner = tasks::service(&state)?;
    // Rate limits count a submission like a request; the workers bound what runs.
    drop(calls::admit(&state, &caller, &note, 1).await?);
    let submitter = Submitter {
        tenant: caller.tenant(),
        key: caller.paying_key(),
        request_id: Some(note.id().as_str()),
    };
    let task = runner
        .submit(submitter, TaskKind::Generation, request)
        .await?;
    Ok(Json(InferenceJob {
        inference_job_id: task.id,
    }))
}
