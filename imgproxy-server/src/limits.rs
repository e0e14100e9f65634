//! Per-key limits of this instance: requests per minute and images per minute (governor
//! token buckets) and requests in flight (a semaphore). Exceeding one is a 429 with
//! `Retry-After`.

use std::{
    collections::HashMap,
    num::NonZeroU32,
    sync::{Arc, Mutex},
    time::Duration,
};

use governor::{
    clock::Clock as _, clock::DefaultClock, DefaultDirectRateLimiter, Quota, RateLimiter,
};
use imgproxy_core::service::db::ApiKey;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;

/// The limiters of every key seen by this instance.
#[derive(Debug, Default)]
pub struct KeyLimits {
    keys: Mutex<HashMap<String, Arc<KeyLimiter>>>,
}

/// One key's limiters, rebuilt when its configured limits change.
#[derive(Debug)]
struct KeyLimiter {
    settings: (Option<u32>, Option<u32>, Option<u32>),
    requests: Option<DefaultDirectRateLimiter>,
    images: Option<DefaultDirectRateLimiter>,
    in_flight: Option<Arc<Semaphore>>,
}

/// Held for the life of a request; releases the concurrency slot when dropped.
#[derive(Debug)]
pub struct Admission {
    _slot: Option<OwnedSemaphorePermit>,
}

impl KeyLimits {
    /// Admits one request of `images` images for `key`, or refuses it with a 429.
    pub fn admit(&self, key: &ApiKey, images: u32) -> Result<Admission, ApiError> {
        let limiter = self.limiter(key);
        if let Some(requests) = &limiter.requests {
            requests.check().map_err(|not_until| {
                too_many(
                    "requests per minute",
                    not_until.wait_time_from(DefaultClock::default().now()),
                )
            })?;
        }
        if let (Some(limit), Some(per_minute)) = (&limiter.images, key.images_per_minute) {
            let cells = NonZeroU32::new(images.max(1)).unwrap_or(NonZeroU32::MIN);
            match limit.check_n(cells) {
                Ok(Ok(())) => {}
                Ok(Err(not_until)) => {
                    return Err(too_many(
                        "images per minute",
                        not_until.wait_time_from(DefaultClock::default().now()),
                    ));
                }
                // More images in one request than the key may make in a minute: never admissible.
                Err(_) => {
                    return Err(ApiError::Core(imgproxy_core::Error::invalid_param(
                        "n",
                        format!("this key may generate at most {per_minute} images per minute"),
                    )))
                }
            }
        }
        let slot = match &limiter.in_flight {
            Some(semaphore) => Some(
                semaphore
                    .clone()
                    .try_acquire_owned()
                    .map_err(|_| too_many("concurrent requests", Duration::from_secs(1)))?,
            ),
            None => None,
        };
        Ok(Admission { _slot: slot })
    }

    fn limiter(&self, key: &ApiKey) -> Arc<KeyLimiter> {
        let settings = (key.rpm, key.images_per_minute, key.max_concurrent);
        let mut keys = self
            .keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(existing) = keys.get(&key.id).filter(|l| l.settings == settings) {
            return existing.clone();
        }
        let per_minute = |n: Option<u32>| {
            n.and_then(NonZeroU32::new)
                .map(|n| RateLimiter::direct(Quota::per_minute(n)))
        };
        let limiter = Arc::new(KeyLimiter {
            settings,
            requests: per_minute(key.rpm),
            images: per_minute(key.images_per_minute),
            in_flight: key
                .max_concurrent
                .map(|n| Arc::new(Semaphore::new(n as usize))),
        });
        keys.insert(key.id.clone(), limiter.clone());
        limiter
    }
}

fn too_many(limit: &str, wait: Duration) -> ApiError {
    ApiError::Core(imgproxy_core::Error::LimitExceeded {
        limit: limit.to_owned(),
        retry_after: Some(wait.max(Duration::from_secs(1))),
    })
}
