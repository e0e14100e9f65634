//! `Idempotency-Key`: a client that may have lost an answer (its connection dropped during a
//! 40-second generation) asks again with the same key and gets the same images, without a
//! second upstream call or a second charge.
//!
//! Keys are a tenant's own and live for the retention window (24 hours by default) from the
//! first request that sent them. The first request with a key runs detached from its caller
//! ([`Attempt::run`]): a client that goes away no longer cancels (and refunds) it; it is
//! finished, charged and remembered for the retry. A later request with the key and the same
//! request (its fingerprint: route, how it is answered, the request as parsed) answers what
//! the first one made — stored images answered again, or the same task — while the first
//! still runs, it waits for it, up to the model's deadline (then 409
//! `idempotency_key_in_progress`). The same key with another request is 409
//! `idempotency_key_reused`. A first request that failed is not remembered: its charge was
//! refunded, so a retry runs again (a failure is nothing a client wants replayed).

use std::{future::Future, time::Duration};

use sha2::{Digest as _, Sha256};
use tracing::Instrument as _;

use super::{
    db::{CachedResult, IdempotencyClaim, IdempotencyRecord, Remembered, TaskRecord},
    serving::{
        claim_owner, random_below, ClaimKind, HeldClaim, CLAIM_MARGIN_SECS, DEFAULT_DEADLINE_SECS,
    },
    Call, Served, Service,
};
use crate::{Error, ImageRequest, Result};

/// The header a client sends its key in, and the `param` of errors about it.
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";
/// The header set on an answer that repeats an earlier request's.
pub const IDEMPOTENT_REPLAYED: &str = "Idempotent-Replayed";
/// How long a key is remembered by default.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// Longest key.
pub const MAX_KEY_CHARS: usize = 255;

/// How often a request waiting on its key's first request looks whether it is done (one
/// read), plus up to [`POLL_JITTER_MS`] drawn per wait.
const POLL: Duration = Duration::from_millis(200);
const POLL_JITTER_MS: u64 = 100;

/// A client's idempotency key: 1 to [`MAX_KEY_CHARS`] printable ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Checks a key as sent (400 naming the header otherwise).
    pub fn parse(value: &[u8]) -> Result<Self> {
        let printable = value.iter().all(|b| (b' '..=b'~').contains(b));
        if value.is_empty() || value.len() > MAX_KEY_CHARS || !printable {
            return Err(Error::invalid_param(
                IDEMPOTENCY_KEY,
                format!(
                    "`{IDEMPOTENCY_KEY}` must be 1 to {MAX_KEY_CHARS} printable ASCII characters"
                ),
            ));
        }
        Ok(Self(String::from_utf8_lossy(value).into_owned()))
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The fingerprint of a request sent with a key: SHA-256 (hex) of `route` (the endpoint and
/// how it is answered, e.g. `generations sync`) and the request as parsed. Two requests with
/// the same key and different fingerprints conflict.
pub fn fingerprint(route: &str, request: &ImageRequest) -> Result<String> {
    let body = serde_json::to_vec(request)
        .map_err(|e| Error::Internal(format!("fingerprinting a request: {e}")))?;
    let mut hash = Sha256::new();
    hash.update(route.as_bytes());
    hash.update([0]);
    hash.update(&body);
    Ok(hex::encode(hash.finalize()))
}

/// What a request with a key does.
#[derive(Debug)]
pub enum Begun {
    /// It is the first with its key: it runs, through the attempt.
    Run(Attempt),
    /// An earlier request with the key answered this: answer it again.
    Replay(Remembered),
}

/// What an attempt's work remembers for the retries of its key.
pub trait Remember {
    /// What a retry answers.
    fn remembered(&self) -> Remembered;
}

impl Remember for Served {
    fn remembered(&self) -> Remembered {
        Remembered::Images(self.task_result())
    }
}

impl Remember for TaskRecord {
    fn remembered(&self) -> Remembered {
        Remembered::Task(self.id.clone())
    }
}

/// The first request with a key, which holds it until its work ends. Dropped without
/// running, it frees the key (in the background).
#[derive(Debug)]
pub struct Attempt {
    claim: HeldClaim,
}

impl Attempt {
    /// Runs `work` on a task of its own, so that dropping the returned future (the client went
    /// away) does not cancel it: it is finished, charged and remembered for the retry. Its
    /// success is remembered under the key; its failure frees the key.
    pub fn run<T, F>(mut self, work: F) -> impl Future<Output = Result<T>> + Send + 'static
    where
        T: Remember + Send + 'static,
        F: Future<Output = Result<T>> + Send + 'static,
    {
        let (attempt, db, tenant, key) = self.claim.take();
        let attempt = attempt.unwrap_or_default();
        let detached = tokio::spawn(
            async move {
                let outcome = work.await;
                let recorded = match &outcome {
                    Ok(value) => {
                        db.finish_idempotency_key(&tenant, &key, &attempt, &value.remembered())
                            .await
                    }
                    Err(_) => db.release_idempotency_key(&tenant, &key, &attempt).await,
                };
                if let Err(error) = recorded {
                    // The key stays running until its attempt counts as abandoned; then a
                    // retry runs again.
                    tracing::error!(%error, "recording an idempotency key's outcome failed");
                }
                outcome
            }
            .in_current_span(),
        );
        async move {
            detached.await.map_err(|e| {
                Error::Internal(format!("the work of an idempotent request failed: {e}"))
            })?
        }
    }
}

impl Service {
    /// How long idempotency keys are remembered (from their first request).
    #[must_use]
    pub fn with_idempotency_window(mut self, window: Duration) -> Self {
        self.idempotency_window = window;
        self
    }

    /// How long idempotency keys are remembered.
    pub fn idempotency_window(&self) -> Duration {
        self.idempotency_window
    }

    /// Begins `request` (whose fingerprint is `fingerprint`) under `key` of `tenant`: it runs
    /// if it is the first with the key (or the key's earlier request failed or expired); it
    /// answers again what the earlier request answered; while that one runs, it waits for it
    /// up to the model's deadline (then 409 `idempotency_key_in_progress`); a key sent with
    /// another request is 409 `idempotency_key_reused`. An invalid request is refused first
    /// (400), holding nothing.
    pub async fn begin_idempotent(
        &self,
        tenant: &str,
        key: &IdempotencyKey,
        fingerprint: &str,
        request: &ImageRequest,
    ) -> Result<Begun> {
        let deadline = Duration::from_secs(self.deadline_secs(request)?);
        let stale_after = deadline + Duration::from_secs(CLAIM_MARGIN_SECS);
        let window = i64::try_from(self.idempotency_window.as_secs()).unwrap_or(i64::MAX);
        let poll = POLL + Duration::from_millis(random_below(POLL_JITTER_MS + 1)?);
        let waiting_since = tokio::time::Instant::now();
        loop {
            let attempt = claim_owner()?;
            let expired_before = crate::clock::now_secs().saturating_sub(window);
            let claim = self
                .db
                .claim_idempotency_key(
                    tenant,
                    key.as_str(),
                    fingerprint,
                    &attempt,
                    &self.instance,
                    stale_after,
                    expired_before,
                )
                .await?;
            let mut record = match claim {
                IdempotencyClaim::Claimed => {
                    return Ok(Begun::Run(Attempt {
                        claim: HeldClaim::new(
                            &self.db,
                            ClaimKind::IdempotencyKey,
                            tenant,
                            key.as_str(),
                            attempt,
                        ),
                    }))
                }
                IdempotencyClaim::Released => continue,
                IdempotencyClaim::Held(record) => record,
            };
            // One read per poll while the first request runs.
            loop {
                if let Some(answer) = held_answer(record, fingerprint)? {
                    return Ok(Begun::Replay(answer));
                }
                if waiting_since.elapsed() >= deadline {
                    return Err(Error::Conflict {
                        message: format!(
                            "a request with this `{IDEMPOTENCY_KEY}` is still running; \
                             retry later"
                        ),
                        code: "idempotency_key_in_progress",
                        param: IDEMPOTENCY_KEY,
                    });
                }
                tokio::time::sleep(poll).await;
                match self
                    .db
                    .idempotency_key(tenant, key.as_str(), stale_after)
                    .await?
                {
                    Some(next) if !next.abandoned || next.remembered.is_some() => record = next,
                    // Freed (it failed) or abandoned: claim it.
                    _ => break,
                }
            }
        }
    }

    /// `request` answered again with the images a remembered answer holds: no upstream call,
    /// no charge (`credits_used` 0 for a metered call).
    pub async fn replay(
        &self,
        call: Call<'_>,
        request: ImageRequest,
        remembered: &Remembered,
    ) -> Result<Served> {
        let Remembered::Images(value) = remembered else {
            return Err(Error::Internal(
                "an idempotency key of a task answered a request that is not one".into(),
            ));
        };
        let result: CachedResult = value
            .get("images")
            .cloned()
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| Error::Internal(format!("a remembered answer is unreadable: {e}")))?
            .unwrap_or_default();
        let request = self.gateway.validate(request)?;
        self.served_again(call, request, result).await
    }

    /// The deadline of the model `request` names, after checking it as it will be served.
    fn deadline_secs(&self, request: &ImageRequest) -> Result<u64> {
        let mut request = request.clone();
        // Tasks take these; validation of what runs does not.
        request.run_async = None;
        request.callback_url = None;
        let validated = self.gateway.validate(request)?;
        Ok(validated
            .model
            .deadline_secs
            .unwrap_or(DEFAULT_DEADLINE_SECS))
    }
}

/// What a held key answers this request: its remembered answer, nothing yet while it runs,
/// or 409 when it was sent with another request.
fn held_answer(record: IdempotencyRecord, fingerprint: &str) -> Result<Option<Remembered>> {
    if record.fingerprint != fingerprint {
        return Err(Error::Conflict {
            message: format!(
                "this `{IDEMPOTENCY_KEY}` was already used with another request; use a new key \
                 for a new request"
            ),
            code: "idempotency_key_reused",
            param: IDEMPOTENCY_KEY,
        });
    }
    Ok(record.remembered)
}
