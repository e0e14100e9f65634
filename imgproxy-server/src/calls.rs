//! How a handler turns its caller into a core [`Call`]: the tenant, the per-key limits, the
//! meter (with a request id unique across instances), the cache mode and the idempotency key.

use axum::http::{header, HeaderMap, HeaderValue, Response};
use imgproxy_core::service::{
    cache::CacheMode,
    idempotency::{IdempotencyKey, IDEMPOTENCY_KEY},
    metering::Meter,
    serving::Served,
    Call,
};

use crate::{
    auth::Caller, edge::CACHE_STATUS, error::ApiError, limits::Admission, state::AppState,
    telemetry::RequestNote,
};

/// Header of an answer that repeats an earlier request's (`Idempotent-Replayed`).
pub const REPLAYED: &str = "idempotent-replayed";

/// Header with the paying key's balance after the request.
pub const CREDITS_REMAINING: &str = "x-credits-remaining";

/// What a call needs to outlive the handler's borrow: the admission, the charge's id and the
/// request's note (which the access log reads).
#[derive(Debug)]
pub struct Admitted {
    _admission: Option<Admission>,
    charge_id: String,
    note: RequestNote,
}

impl Admitted {
    /// Notes what served the request and what it cost, for the access log.
    pub fn served(&self, served: &Served) {
        self.note
            .served(&served.model.id, served.credits_used, served.upstream_time);
    }

    /// The request's note.
    pub fn note(&self) -> &RequestNote {
        &self.note
    }
}

/// Admits a request of `images` images under the caller's limits (429 when over).
pub async fn admit(
    state: &AppState,
    caller: &Caller,
    note: &RequestNote,
    images: u32,
) -> Result<Admitted, ApiError> {
    if let Some(key) = caller.paying_key() {
        note.key(&key.id);
    }
    let admission = match caller.limited_as() {
        Some(key) => Some(state.limits.admit(state.service.db(), key, images).await?),
        None => None,
    };
    Ok(Admitted {
        _admission: admission,
        charge_id: note.id().charge_id(),
        note: note.clone(),
    })
}

/// The core call for `caller`.
pub fn call<'a>(
    state: &'a AppState,
    caller: &'a Caller,
    admitted: &'a Admitted,
    cache: CacheMode,
    name: Option<&'a str>,
    partials: Option<&'a imgproxy_core::provider::PartialSender>,
    delivered: Option<&'a std::sync::Arc<std::sync::atomic::AtomicBool>>,
) -> Call<'a> {
    Call {
        tenant: caller.tenant(),
        meter: caller.paying_key().map(|key| Meter {
            db: state.service.db(),
            key,
            request_id: &admitted.charge_id,
            surface: admitted.note.matched_route(),
            owner: &state.instance_id,
            delivered,
            task: None,
        }),
        cache: if state.url_api.cache_enabled {
            cache
        } else {
            CacheMode::Off
        },
        name,
        partials,
        jobs: None,
        resume: None,
    }
}

/// `Refresh` when asked to (`reroll`, or `Cache-Control: no-cache` / `no-store`), else `Use`.
pub fn cache_mode(headers: &HeaderMap, reroll: bool) -> CacheMode {
    let no_cache = headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|d| {
            matches!(
                d.trim().to_ascii_lowercase().as_str(),
                "no-cache" | "no-store"
            )
        });
    if reroll || no_cache {
        CacheMode::Refresh
    } else {
        CacheMode::Use
    }
}

/// The model that made the images (the fallback's, when one served).
pub const SERVED_MODEL: &str = "x-model";
/// Upstream calls made for the request (0 for a cache hit).
pub const ATTEMPTS: &str = "x-upstream-attempts";
/// Times the request moved on to another provider or model.
pub const FALLBACKS: &str = "x-fallbacks";

/// Adds what failover did: the model that served, the upstream calls and the fallbacks.
pub fn report_failover<B>(response: &mut Response<B>, served: &imgproxy_core::service::Served) {
    let headers = response.headers_mut();
    if let Ok(model) = HeaderValue::from_str(&served.model.id) {
        headers.insert(SERVED_MODEL, model);
    }
    headers.insert(ATTEMPTS, HeaderValue::from(served.attempts.calls()));
    headers.insert(FALLBACKS, HeaderValue::from(served.attempts.served));
}

/// The request's `Idempotency-Key`, if it sent one (400 if it is not a valid key).
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<IdempotencyKey>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    Ok(Some(IdempotencyKey::parse(value.as_bytes())?))
}

/// Marks an answer as the replay of an earlier request's (`Idempotent-Replayed: true`).
pub fn mark_replayed<B>(response: &mut Response<B>) {
    response
        .headers_mut()
        .insert(REPLAYED, HeaderValue::from_static("true"));
}

/// Adds the cache status and, for metered callers, the balance.
pub fn annotate<B>(
    response: &mut Response<B>,
    cache: imgproxy_core::service::cache::CacheStatus,
    balance: Option<i64>,
) {
    let headers = response.headers_mut();
    headers.insert(CACHE_STATUS, HeaderValue::from_static(cache.header_value()));
    if let Some(balance) = balance {
        headers.insert(CREDITS_REMAINING, HeaderValue::from(balance));
    }
}
