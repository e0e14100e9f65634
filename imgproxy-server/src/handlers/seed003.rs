//! Seed 003's door, `POST /api/v1/image/generate`: its body translated by `crate::seed003`,
//! queued as a task, answered `{"inferenceJobId"}`; the job is read at `GET /v1/tasks/{id}`.

use axum::{extract::State, Extension, Json};

use crate::{
    auth::Caller,
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
    let task = tasks::queue(&state, &caller, &note, request, None).await?;
    Ok(Json(InferenceJob {
        inference_job_id: task.id,
    }))
}
