//! Metering: the worst case (n × the price of one image) is reserved before any upstream
//! call, the images actually returned are settled, and the rest is refunded, also on failure
//! and when the caller goes away mid-request. `serving` decides when a request is charged
//! (never for a cache hit).

use std::{
    future::Future,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use serde_json::json;

use super::db::{ApiKey, Charge, Database, Reservation, ServedBy, TaskResult};
use crate::{pricing, Error, Result, ValidatedRequest};

/// Who pays for a request, and under which id.
#[derive(Debug, Clone, Copy)]
pub struct Meter<'a> {
    /// The ledger.
    pub db: &'a Database,
    /// The paying key.
    pub key: &'a ApiKey,
    /// Unique id of this request: every ledger step is idempotent by it.
    pub request_id: &'a str,
    /// The surface the request came through (a route such as `/v1/chat/completions`), which
    /// its charge records; `None` for work that has no route (a task's run).
    pub surface: Option<&'a str>,
    /// Id of this instance, which owns the reservation until it is settled.
    pub owner: &'a str,
    /// Set once part of the answer reached the client (a streamed partial image): a request
    /// dropped after that is charged for one image instead of refunded.
    pub delivered: Option<&'a Arc<AtomicBool>>,
    /// The task this request runs for: the settle records the task's result in the same
    /// transaction, so that no crash leaves a task charged without its result.
    pub task: Option<&'a str>,
}

/// What charged work delivered: the images it is billed for, and what a task records of it.
pub(crate) trait Billed {
    /// The images delivered.
    fn images(&self) -> usize;
    /// The result a task keeps (`{"images", "usage"}`).
    fn task_result(&self) -> serde_json::Value;
    /// The candidate that served (0 is the request's own model; see
    /// [`crate::failover::Attempts`]) and every upstream attempt, for the ledger.
    fn served(&self) -> (usize, &[crate::failover::Attempt]);
    /// The image-store keys of the images delivered, for the ledger.
    fn image_keys(&self) -> Vec<&str>;
}

/// A request's price, known before anything runs: what one image of each candidate costs
/// (the request's model, then its fallbacks), and the most the request can cost.
#[derive(Debug, Clone)]
pub(crate) struct Price {
    per_image: Vec<(String, u64)>,
    worst: u64,
    charge: Charge,
}

/// What a charged piece of work cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Charged {
    /// Credits kept.
    pub used: u64,
    /// The key's balance afterwards.
    pub balance: i64,
}

impl Meter<'_> {
    /// Checks that the key may use the request's model and that the model has a price, and
    /// drops the fallbacks it may not use or that have none (they are recorded as skipped).
    /// The reservation covers the most expensive candidate.
    pub(crate) fn price(&self, request: &mut ValidatedRequest) -> Result<Price> {
        let (prices, worst) = candidates(Some(self.key), request)?;
        let per_image = prices[0].1;
        let model = &request.model;
        Ok(Price {
            per_image: prices,
            worst,
            charge: Charge {
                model: model.id.clone(),
                owner: self.owner.to_owned(),
                inputs: json!({
                    "provider": model.provider,
                    "n": request.n,
                    "credits_per_image": per_image,
                    "quality": pricing::priced_quality(request),
                    "tier": request.tier(),
                    "reference_images": request.reference_images.len(),
                    "surface": self.surface,
                }),
            },
        })
    }

    /// Reserves `price`'s worst case, runs `work`, and settles the images it returned (with
    /// the task's result, for a task) or refunds everything if it failed or was dropped.
    pub(crate) async fn charge<T: Billed>(
        &self,
        price: Price,
        work: impl Future<Output = Result<T>>,
    ) -> Result<(T, Charged)> {
        let reservation = self
            .db
            .reserve(&self.key.id, self.request_id, price.worst, price.charge)
            .await?;
        let guard = RefundOnDrop {
            db: self.db.clone(),
            reservation: Some(reservation.clone()),
            delivered: self.delivered.cloned(),
            kept_if_delivered: price.per_image[0].1.min(price.worst),
        };
        let outcome = match work.await {
            Ok(value) => {
                let count = u64::try_from(value.images()).unwrap_or(u64::MAX);
                let (served, attempts) = value.served();
                // The model that served sets the price, whatever was reserved for.
                let (served_model, per_image) =
                    price.per_image.get(served).unwrap_or(&price.per_image[0]);
                let used = per_image.saturating_mul(count).min(price.worst);
                let images = value.image_keys();
                let served_by = ServedBy {
                    model: served_model,
                    attempts,
                    images: &images,
                };
                let result = self.task.map(|task_id| (task_id, value.task_result()));
                let task = result.as_ref().map(|(task_id, result)| TaskResult {
                    task_id,
                    owner: self.owner,
                    result,
                });
                // A failed settle returns early with the guard armed: the reservation is refunded.
                let settled = self
                    .db
                    .settle_as(&reservation, used, task, Some(served_by))
                    .await?;
                crate::telemetry::credits_charged(served_model, settled.kept);
                // What the ledger kept, which is nothing if the reservation was refunded
                // meanwhile (this instance was taken for dead): the answer says what it cost.
                let charged = Charged {
                    used: settled.kept,
                    balance: settled.balance,
                };
                Ok((value, charged))
            }
            Err(error) => {
                self.db.refund(&reservation).await?;
                Err(error)
            }
        };
        guard.disarm();
        outcome
    }
}

/// What a run of `request` would reserve: the dearest candidate's images, refused as that
/// run would be, for `key` or, without one, as any key that may use every model would be.
/// Nothing is reserved (the playground's estimate).
pub fn reservation_for(key: Option<&ApiKey>, request: &ValidatedRequest) -> Result<u64> {
    Ok(candidates(key, &mut request.clone())?.1)
}

/// What one image of each candidate costs `key` (the request's model, then its fallbacks),
/// and the most the request can cost. The fallbacks the key may not use or that have no
/// price are dropped from `request` (recorded as skipped); the request's own model is refused.
fn candidates(
    key: Option<&ApiKey>,
    request: &mut ValidatedRequest,
) -> Result<(Vec<(String, u64)>, u64)> {
    let own = per_image(key, request)?;
    let mut prices = vec![(request.model.id.clone(), own)];
    let mut worst = own.saturating_mul(u64::from(request.n));
    let mut kept = Vec::with_capacity(request.fallbacks.len());
    for fallback in std::mem::take(&mut request.fallbacks) {
        match per_image(key, &fallback) {
            Ok(per_image) => {
                worst = worst.max(per_image.saturating_mul(u64::from(fallback.n)));
                prices.push((fallback.model.id.clone(), per_image));
                kept.push(fallback);
            }
            Err(error) => request.skipped.push(crate::failover::Skipped {
                model: fallback.model.id.clone(),
                provider: fallback.model.provider.clone(),
                reason: error.public_message(),
            }),
        }
    }
    request.fallbacks = kept;
    Ok((prices, worst))
}

/// What one image of `request`'s model costs `key`: refused if the key may not use the model,
/// or the model has no price (fail closed: never free by accident).
fn per_image(key: Option<&ApiKey>, request: &ValidatedRequest) -> Result<u64> {
    let model = &request.model;
    if key
        .and_then(|key| key.models.as_ref())
        .is_some_and(|allowed| !allowed.iter().any(|m| *m == model.id))
    {
        return Err(Error::Forbidden {
            message: format!("this key may not use the model `{}`", model.id),
        });
    }
    pricing::credits_per_image(request).ok_or_else(|| Error::Forbidden {
        message: format!(
            "the model `{}` has no price, so metered keys cannot use it",
            model.id
        ),
    })
}

/// Refunds a reservation if dropped before it is settled: a request whose future is dropped
/// (client gone, server shutting down) must not keep the credits, unless part of the answer
/// was already delivered (then one image's price is kept).
struct RefundOnDrop {
    db: Database,
    reservation: Option<Reservation>,
    delivered: Option<Arc<AtomicBool>>,
    kept_if_delivered: u64,
}

impl RefundOnDrop {
    fn disarm(mut self) {
        self.reservation = None;
    }
}

impl Drop for RefundOnDrop {
    fn drop(&mut self) {
        let Some(reservation) = self.reservation.take() else {
            return;
        };
        let db = self.db.clone();
        let delivered = self
            .delivered
            .as_ref()
            .is_some_and(|flag| flag.load(Ordering::SeqCst));
        let kept = self.kept_if_delivered;
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let closed = if delivered {
                    db.settle(&reservation, kept).await
                } else {
                    db.refund(&reservation).await
                };
                if let Err(error) = closed {
                    // Still not lost: once this instance is dead (its lease expired), any
                    // instance refunds it (`release_dead`).
                    tracing::error!(%error, request_id = %reservation.request_id, "refund of an abandoned request failed");
                }
            });
        }
    }
}
