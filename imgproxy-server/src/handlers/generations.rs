//! `POST /v1/images/generations`: served through the cache (the `X-Cache-Status` header says
//! hit or miss); for issued keys limited, then metered, with the balance in a header; with an
//! `Idempotency-Key`, answered once and replayed to retries. Edits end in [`serve`] too.

use axum::{
    extract::State,
    http::HeaderMap,
    response::{IntoResponse, Response},
    Extension, Json,
};
use imgproxy_core::{
    service::{
        cache::CacheMode,
        idempotency::{self, Begun, IdempotencyKey},
        tasks::TaskKind,
    },
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
/// Server-Sent Events for `stream: true`. With an `Idempotency-Key`, the first request with
/// the key runs detached from the client and every retry answers what it made.
pub async fn serve(
    state: AppState,
    caller: Caller,
    note: &RequestNote,
    headers: &HeaderMap,
    mut request: ImageRequest,
    surface: Surface,
) -> Result<Response, ApiError> {
    // The key's default goes in before anything reads the request, so that tasks, streams,
    // synchronous answers and the idempotency fingerprint all see the request as it is served;
    // without one, `Gateway::validate` fills in the server's.
    if request.response_format.is_none() {
        request.response_format = caller
            .default_response_format()
            .map(|format| format.name().to_owned());
    }
    if let Some(model) = &request.model {
        note.model(model);
    }
    let key = calls::idempotency_key(headers)?;
    if tasks::wants_async(headers, &request) {
        let kind = match surface {
            Surface::Generation => TaskKind::Generation,
            Surface::Edit => TaskKind::Edit,
        };
        // Rate limits count a submission like a request; the workers bound what runs.
        drop(calls::admit(&state, &caller, note, request.n.unwrap_or(1)).await?);
        let begun = match &key {
            Some(key) => {
                let mut asked = request.clone();
                asked.run_async = None;
                let route = idempotent_route(surface, "async");
                Some(begin(&state, &caller, key, &route, &asked).await?)
            }
            None => None,
        };
        if calls::cache_mode(headers, false) == CacheMode::Refresh {
            request.reroll = Some(true);
        }
        return tasks::submit(&state, &caller, note, kind, request, begun).await;
    }
    let admitted = calls::admit(&state, &caller, note, request.n.unwrap_or(1)).await?;
    let cache = calls::cache_mode(headers, request.reroll == Some(true));
    if request.stream == Some(true) {
        // Refuse a bad request with its status before the stream says 200.
        state.service.gateway().validate(request.clone())?;
        let begun = match &key {
            Some(key) => {
                let route = idempotent_route(surface, "stream");
                Some(begin(&state, &caller, key, &route, &request).await?)
            }
            None => None,
        };
        return Ok(stream::respond(
            state, caller, admitted, cache, request, surface, begun,
        ));
    }
    let begun = match &key {
        Some(key) => {
            let route = idempotent_route(surface, "sync");
            Some(begin(&state, &caller, key, &route, &request).await?)
        }
        None => None,
    };
    let (served, replayed) = match begun {
        None => {
            let call = calls::call(&state, &caller, &admitted, cache, None, None, None);
            let served = state.service.serve(call, request).await?;
            admitted.served(&served);
            (served, false)
        }
        Some(Begun::Replay(remembered)) => {
            let call = calls::call(&state, &caller, &admitted, cache, None, None, None);
            let served = state.service.replay(call, request, &remembered).await?;
            admitted.served(&served);
            (served, true)
        }
        Some(Begun::Run(attempt)) => {
            // The work owns the admission and the charge: a client that goes away leaves it
            // to finish, be charged and be remembered for its retry.
            let service_state = state.clone();
            let served = attempt
                .run(async move {
                    let state = service_state;
                    let call = calls::call(&state, &caller, &admitted, cache, None, None, None);
                    let served = state.service.serve(call, request).await?;
                    admitted.served(&served);
                    Ok(served)
                })
                .await?;
            (served, false)
        }
    };
    let mut response = Json(state.service.response(&served)).into_response();
    calls::annotate(&mut response, served.cache, served.balance);
    calls::report_failover(&mut response, &served);
    if replayed {
        calls::mark_replayed(&mut response);
    }
    Ok(response)
}

/// What a key's fingerprint covers besides the request: the endpoint and how it answers.
fn idempotent_route(surface: Surface, answered: &str) -> String {
    let endpoint = match surface {
        Surface::Generation => "generations",
        Surface::Edit => "edits",
    };
    format!("{endpoint} {answered}")
}

/// Begins `request` under the caller's idempotency `key` (see
/// `imgproxy_core::service::idempotency`).
async fn begin(
    state: &AppState,
    caller: &Caller,
    key: &IdempotencyKey,
    route: &str,
    request: &ImageRequest,
) -> Result<Begun, ApiError> {
    let fingerprint = idempotency::fingerprint(route, request)?;
    Ok(state
        .service
        .begin_idempotent(caller.tenant(), key, &fingerprint, request)
        .await?)
}
