//! `POST /v1/images/generations`: served through the cache (the `X-Cache-Status` header says
//! hit or miss); for issued keys limited, then metered, with the balance in a header; with an
//! `Idempotency-Key`, answered once and replayed to retries. Edits end in [`serve`] too.

use axum::{extract::State, http::HeaderMap, response::Response, Extension};
use imgproxy_core::{
    service::{
        cache::CacheMode,
        idempotency::{self, Begun, IdempotencyKey},
        tasks::TaskKind,
        Served,
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
    caller.fill_response_format(&mut request);
    if let Some(model) = &request.model {
        note.model(model);
    }
    let endpoint = match surface {
        Surface::Generation => "generations",
        Surface::Edit => "edits",
    };
    if tasks::wants_async(headers, &request) {
        let key = calls::idempotency_key(headers)?;
        let kind = match surface {
            Surface::Generation => TaskKind::Generation,
            Surface::Edit => TaskKind::Edit,
        };
        // Rate limits count a submission like a request; the workers bound what runs.
        drop(calls::admit(&state, &caller, note, request.n.unwrap_or(1)).await?);
        // `async: true` and `Prefer: respond-async` ask for the same task.
        let begun = if key.is_some() {
            let mut asked = request.clone();
            asked.run_async = None;
            let route = format!("{endpoint} async");
            begin(&state, &caller, key.as_ref(), &route, &asked).await?
        } else {
            None
        };
        if calls::cache_mode(headers, false) == CacheMode::Refresh {
            request.reroll = Some(true);
        }
        return tasks::submit(&state, &caller, note, kind, request, begun).await;
    }
    if request.stream == Some(true) {
        return open_stream(
            state,
            caller,
            note,
            headers,
            request,
            endpoint,
            Box::new(surface),
        )
        .await;
    }
    let (served, replayed) = run(state.clone(), caller, note, headers, request, endpoint).await?;
    let mut response = super::parts::image_json(state.service.response(&served))?;
    annotate(&mut response, &served, replayed);
    Ok(response)
}

/// Serves `request` to its end for `caller`, under its `Idempotency-Key` if it sent one
/// (`endpoint` names what answers, for the key's fingerprint): what was served, and whether
/// it is the replay of an earlier request's.
pub async fn run(
    state: AppState,
    caller: Caller,
    note: &RequestNote,
    headers: &HeaderMap,
    request: ImageRequest,
    endpoint: &str,
) -> Result<(Served, bool), ApiError> {
    let key = calls::idempotency_key(headers)?;
    let admitted = calls::admit(&state, &caller, note, request.n.unwrap_or(1)).await?;
    let cache = calls::cache_mode(headers, request.reroll == Some(true));
    let begun = begin(
        &state,
        &caller,
        key.as_ref(),
        &format!("{endpoint} sync"),
        &request,
    )
    .await?;
    match begun {
        None => {
            let call = calls::call(&state, &caller, &admitted, cache, None, None, None);
            let served = state.service.serve(call, request).await?;
            admitted.served(&served);
            Ok((served, false))
        }
        Some(Begun::Replay(remembered)) => {
            let call = calls::call(&state, &caller, &admitted, cache, None, None, None);
            let served = state.service.replay(call, request, &remembered).await?;
            admitted.served(&served);
            Ok((served, true))
        }
        Some(Begun::Run(attempt)) => {
            // The work owns the admission and the charge: a client that goes away leaves it
            // to finish, be charged and be remembered for its retry.
            let served = attempt
                .run(async move {
                    let call = calls::call(&state, &caller, &admitted, cache, None, None, None);
                    let served = state.service.serve(call, request).await?;
                    admitted.served(&served);
                    Ok(served)
                })
                .await?;
            Ok((served, false))
        }
    }
}

/// Admits and validates `request` (a bad one is refused with its status before the stream
/// says 200) and answers with its stream, written by `shape`; under its `Idempotency-Key`
/// if it sent one (`endpoint` as for [`run`]).
pub async fn open_stream(
    state: AppState,
    caller: Caller,
    note: &RequestNote,
    headers: &HeaderMap,
    request: ImageRequest,
    endpoint: &str,
    shape: Box<dyn stream::Shape>,
) -> Result<Response, ApiError> {
    let key = calls::idempotency_key(headers)?;
    let admitted = calls::admit(&state, &caller, note, request.n.unwrap_or(1)).await?;
    let cache = calls::cache_mode(headers, request.reroll == Some(true));
    state.service.gateway().validate(request.clone())?;
    let begun = begin(
        &state,
        &caller,
        key.as_ref(),
        &format!("{endpoint} stream"),
        &request,
    )
    .await?;
    Ok(stream::respond(
        state, caller, admitted, cache, request, shape, begun,
    ))
}

/// The headers of a served answer: cache status, balance, what failover did, and whether it
/// is a replay.
pub fn annotate(response: &mut Response, served: &Served, replayed: bool) {
    calls::annotate(response, served.cache, served.balance);
    calls::report_failover(response, served);
    if replayed {
        calls::mark_replayed(response);
    }
}

/// Begins `request` under the caller's idempotency `key`, if it sent one (see
/// `imgproxy_core::service::idempotency`); `route` is what else the key's fingerprint covers.
async fn begin(
    state: &AppState,
    caller: &Caller,
    key: Option<&IdempotencyKey>,
    route: &str,
    request: &ImageRequest,
) -> Result<Option<Begun>, ApiError> {
    let Some(key) = key else {
        return Ok(None);
    };
    let fingerprint = idempotency::fingerprint(route, request)?;
    Ok(Some(
        state
            .service
            .begin_idempotent(caller.tenant(), key, &fingerprint, request)
            .await?,
    ))
}
