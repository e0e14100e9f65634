//! How a handler turns its caller into a core [`Call`]: the tenant, the per-key limits, the
//! meter (with a request id unique across instances) and the cache mode.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::{header, HeaderMap, HeaderValue, Response};
use imgproxy_core::service::{cache::CacheMode, metering::Meter, Call};

use crate::{auth::Caller, error::ApiError, limits::Admission, state::AppState};

/// Header with the paying key's balance after the request.
pub const CREDITS_REMAINING: &str = "x-credits-remaining";
/// Header saying whether the answer came from the cache.
pub const CACHE_STATUS: &str = "x-cache-status";

/// What a call needs to outlive the handler's borrow: the admission and the request id.
#[derive(Debug)]
pub struct Admitted {
    _admission: Option<Admission>,
    request_id: String,
}

/// Admits a request of `images` images under the caller's limits (429 when over).
pub async fn admit(state: &AppState, caller: &Caller, images: u32) -> Result<Admitted, ApiError> {
    let admission = match caller.limited_as() {
        Some(key) => Some(state.limits.admit(state.service.db(), key, images).await?),
        None => None,
    };
    Ok(Admitted {
        _admission: admission,
        request_id: new_request_id(&state.instance_id),
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
            request_id: &admitted.request_id,
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

/// A request id unique across instances and restarts: instance id, start time, counter.
fn new_request_id(instance_id: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "req_{instance_id}_{nanos:x}_{:x}",
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}
