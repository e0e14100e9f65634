//! `POST /v1/images/generations`: served through the cache (the `X-Cache-Status` header says
//! hit or miss); for issued keys limited, then metered, with the balance in a header. Edits
//! end in [`serve`] too.

use axum::{
    extract::State,
    http::HeaderMap,
    response::{IntoResponse, Response},
    Extension, Json,
};
use imgproxy_core::{
    service::{cache::CacheMode, tasks::TaskKind},
    ImageRequest,
};

use crate::{
    auth::Caller,
    calls,
    error::ApiError,
    extract::OpenAIJson,
    handlers::{
        stream::{self, Surface},
        tasks,
    },
    state::AppState,
    telemetry::RequestNote,
};

/// Generates images.
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(note): Extension<RequestNote>,
    headers: HeaderMap,
    OpenAIJson(request): OpenAIJson<ImageRequest>,
) -> Result<Response, ApiError> {
    serve(state, caller, &note, &headers, request, Surface::Generation).await
}

/// Serves a generation or an edit for `caller` and answers in OpenAI's shape: JSON, or
/// Server-Sent Events for `stream: true`.
pub async fn serve(
    state: AppState,
    caller: Caller,
    note: &RequestNote,
    headers: &HeaderMap,
    request: ImageRequest,
    surface: Surface,
) -> Result<Response, ApiError> {
    if let Some(model) = &request.model {
        note.model(model);
    }
    if tasks::wants_async(headers, &request) {
        let kind = match surface {
            Surface::Generation => TaskKind::Generation,
            Surface::Edit => TaskKind::Edit,
        };
        let mut request = request;
        if calls::cache_mode(headers, false) == CacheMode::Refresh {
            request.reroll = Some(true);
        }
        // Rate limits count a submission like a request; the workers bound what runs.
        drop(calls::admit(&state, &caller, note, request.n.unwrap_or(1)).await?);
        return tasks::submit(&state, &caller, note, kind, request).await;
    }
    let admitted = calls::admit(&state, &caller, note, request.n.unwrap_or(1)).await?;
    let cache = calls::cache_mode(headers, request.reroll == Some(true));
    if request.stream == Some(true) {
        // Refuse a bad request with its status before the stream says 200.
        state.service.gateway().validate(request.clone())?;
        return Ok(stream::respond(
            state, caller, admitted, cache, request, surface,
        ));
    }
    let call = calls::call(&state, &caller, &admitted, cache, None, None, None);
    let served = state.service.serve(call, request).await?;
    admitted.served(&served);
    let mut response = Json(state.service.response(&served)).into_response();
    calls::annotate(&mut response, served.cache, served.balance);
    calls::report_failover(&mut response, &served);
    Ok(response)
}
