//! Per-key limits: requests per minute, images per minute (at most N in any 60 seconds) and
//! requests in flight. Exceeding one is a 429 with `Retry-After`; a limit of 0 (only found in
//! config, or in rows written before keys refused it) allows nothing and is a 403.
//!
//! Where they are counted follows the database: on Postgres, which several instances share,
//! in the database (`Database::admit_shared`), so N instances still give a key its limits once;
//! on SQLite, in this process, with the same per-second window (`MinuteWindow`).

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, OnceLock, Weak},
    time::Duration,
};

use imgproxy_core::service::db::{
    ApiKey, Database, KeyLimitsSpec, MinuteWindow, SharedAdmission, LEASE_RENEW_EVERY,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;

/// The limiters of every key seen by this instance.
#[derive(Debug, Default)]
pub struct KeyLimits {
    keys: Mutex<HashMap<String, Arc<KeyLimiter>>>,
    /// The leases this process holds in the database, started on the first one.
    leases: OnceLock<Arc<Leases>>,
}

/// One key's in-process limiters, rebuilt when its configured limits change.
#[derive(Debug)]
struct KeyLimiter {
    settings: KeyLimitsSpec,
    windows: Mutex<Windows>,
    in_flight: Option<Arc<Semaphore>>,
}

#[derive(Debug, Default)]
struct Windows {
    requests: MinuteWindow,
    images: MinuteWindow,
}

/// The live concurrency leases of this process, renewed together in the background.
#[derive(Debug)]
struct Leases {
    /// One id per process: a restarted process never renews its predecessor's leases.
    owner: String,
    live: Mutex<HashSet<String>>,
}

/// Held for the life of a request; frees its concurrency slot when dropped.
#[derive(Debug)]
pub struct Admission {
    _slot: Option<OwnedSemaphorePermit>,
    _lease: Option<LeaseGuard>,
}

/// A concurrency lease in the database: dropped, it stops being renewed and is deleted.
#[derive(Debug)]
struct LeaseGuard {
    id: String,
    leases: Arc<Leases>,
    db: Database,
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        lock(&self.leases.live).remove(&self.id);
        // Without a runtime (shutdown) the lease simply expires.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (db, id) = (self.db.clone(), std::mem::take(&mut self.id));
            runtime.spawn(async move {
                if let Err(error) = db.release_lease(&id).await {
                    tracing::warn!(%error, lease = %id, "releasing a concurrency lease failed; it will expire");
                }
            });
        }
    }
}

impl KeyLimits {
    /// Admits one request of `images` images for `key`, or refuses it (429 over a limit, 403
    /// for a limit of 0, 400 on `n` for more images than the key may make in a minute).
    pub async fn admit(
        &self,
        db: &Database,
        key: &ApiKey,
        images: u32,
    ) -> Result<Admission, ApiError> {
        let spec = KeyLimitsSpec {
            rpm: key.rpm,
            images_per_minute: key.images_per_minute,
            max_concurrent: key.max_concurrent,
        };
        check_spec(spec, images)?;
        if spec == KeyLimitsSpec::default() {
            // Unlimited: nothing to count, and no entry kept for the key.
            return Ok(Admission {
                _slot: None,
                _lease: None,
            });
        }
        if db.shares_limits() {
            return self.admit_shared(db, &key.id, spec, images).await;
        }
        self.admit_local(key, spec, images)
    }

    async fn admit_shared(
        &self,
        db: &Database,
        key_id: &str,
        spec: KeyLimitsSpec,
        images: u32,
    ) -> Result<Admission, ApiError> {
        let leases = self.leases(db);
        match db.admit_shared(key_id, spec, images, &leases.owner).await? {
            SharedAdmission::Refused(refusal) => Err(too_many(refusal.limit, refusal.retry_after)),
            SharedAdmission::Admitted { lease } => Ok(Admission {
                _slot: None,
                _lease: lease.map(|id| {
                    lock(&leases.live).insert(id.clone());
                    LeaseGuard {
                        id,
                        leases: leases.clone(),
                        db: db.clone(),
                    }
                }),
            }),
        }
    }

    fn admit_local(
        &self,
        key: &ApiKey,
        spec: KeyLimitsSpec,
        images: u32,
    ) -> Result<Admission, ApiError> {
        let limiter = self.limiter(key, spec);
        // Both windows are checked before either counts, so a refused request uses nothing.
        let slot = match &limiter.in_flight {
            Some(semaphore) => Some(
                semaphore
                    .clone()
                    .try_acquire_owned()
                    .map_err(|_| too_many("concurrent requests", Duration::from_secs(1)))?,
            ),
            None => None,
        };
        let now = imgproxy_core::clock::now_secs();
        let mut windows = lock(&limiter.windows);
        let mut requests = windows.requests.clone();
        if let Some(rpm) = spec.rpm {
            requests
                .try_add(now, 1, u64::from(rpm))
                .map_err(|wait| too_many("requests per minute", wait))?;
        }
        if let Some(per_minute) = spec.images_per_minute {
            windows
                .images
                .try_add(now, u64::from(images.max(1)), u64::from(per_minute))
                .map_err(|wait| too_many("images per minute", wait))?;
        }
        windows.requests = requests;
        Ok(Admission {
            _slot: slot,
            _lease: None,
        })
    }

    fn limiter(&self, key: &ApiKey, settings: KeyLimitsSpec) -> Arc<KeyLimiter> {
        let mut keys = lock(&self.keys);
        if let Some(existing) = keys.get(&key.id).filter(|l| l.settings == settings) {
            return existing.clone();
        }
        let limiter = Arc::new(KeyLimiter {
            settings,
            windows: Mutex::default(),
            in_flight: settings
                .max_concurrent
                .map(|n| Arc::new(Semaphore::new(n as usize))),
        });
        keys.insert(key.id.clone(), limiter.clone());
        limiter
    }

    /// The lease set, and its renewer started with it.
    fn leases(&self, db: &Database) -> Arc<Leases> {
        self.leases
            .get_or_init(|| {
                let mut random = [0_u8; 8];
                // Without randomness the id is still unique per process start in practice.
                let _ = getrandom::fill(&mut random);
                let leases = Arc::new(Leases {
                    owner: format!(
                        "proc_{}_{:x}",
                        std::process::id(),
                        u64::from_le_bytes(random)
                    ),
                    live: Mutex::default(),
                });
                tokio::spawn(renew(Arc::downgrade(&leases), db.clone()));
                leases
            })
            .clone()
    }
}

/// Renews this process's live leases until the limits are dropped.
async fn renew(leases: Weak<Leases>, db: Database) {
    let mut tick = tokio::time::interval(LEASE_RENEW_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(leases) = leases.upgrade() else {
            return;
        };
        let ids: Vec<String> = lock(&leases.live).iter().cloned().collect();
        drop(leases);
        if let Err(error) = db.renew_leases(&ids).await {
            tracing::warn!(%error, leases = ids.len(), "renewing concurrency leases failed");
        }
    }
}

/// Refuses what no waiting can admit: a limit of 0, or more images than a minute allows.
fn check_spec(spec: KeyLimitsSpec, images: u32) -> Result<(), ApiError> {
    let zero = [
        ("rpm", spec.rpm),
        ("images_per_minute", spec.images_per_minute),
        ("max_concurrent", spec.max_concurrent),
    ]
    .into_iter()
    .find(|(_, value)| *value == Some(0));
    if let Some((field, _)) = zero {
        return Err(ApiError::Core(imgproxy_core::Error::Forbidden {
            message: format!("this key's `{field}` is 0, which allows no requests"),
        }));
    }
    if let Some(per_minute) = spec.images_per_minute {
        if images > per_minute {
            return Err(ApiError::Core(imgproxy_core::Error::invalid_param(
                "n",
                format!("this key may generate at most {per_minute} images per minute"),
            )));
        }
    }
    Ok(())
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn too_many(limit: &str, wait: Duration) -> ApiError {
    ApiError::Core(imgproxy_core::Error::LimitExceeded {
        limit: limit.to_owned(),
        retry_after: Some(wait.max(Duration::from_secs(1))),
    })
}
