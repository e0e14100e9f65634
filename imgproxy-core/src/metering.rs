//! Metered generation: the worst case (n × the price of one image) is reserved before any
//! upstream call, the images actually returned are settled, and the rest is refunded, also
//! on failure and when the caller goes away mid-request.

use serde_json::json;

use crate::{
    accounts::{Accounts, ApiKey, Charge, Reservation},
    pricing, Error, Gateway, ImageRequest, ImageResponse, Result,
};

/// Who pays for a request, and under which id.
#[derive(Debug, Clone, Copy)]
pub struct Meter<'a> {
    /// The ledger.
    pub accounts: &'a Accounts,
    /// The paying key.
    pub key: &'a ApiKey,
    /// Unique id of this request: every ledger step is idempotent by it.
    pub request_id: &'a str,
    /// Id of this instance, which owns the reservation until it is settled.
    pub owner: &'a str,
}

/// A metered response and the key's balance after it.
#[derive(Debug, Clone, PartialEq)]
pub struct Metered {
    /// The response, with `credits_used`.
    pub response: ImageResponse,
    /// Credits left.
    pub balance: i64,
}

/// Refunds a reservation if dropped before it is settled: a request whose future is dropped
/// (client gone, server shutting down) must not keep the credits.
struct RefundOnDrop {
    accounts: Accounts,
    reservation: Option<Reservation>,
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
        let accounts = self.accounts.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(error) = accounts.refund(&reservation).await {
                    // Still not lost: the next start (`release_stale`) or the hourly sweep (`release_expired`) refunds it.
                    tracing::error!(%error, request_id = %reservation.request_id, "refund of an abandoned request failed");
                }
            });
        }
    }
}

impl Gateway {
    /// Validates, prices, reserves, generates and settles `request` for `meter.key`.
    pub async fn generate_metered(
        &self,
        meter: Meter<'_>,
        request: ImageRequest,
    ) -> Result<Metered> {
        let validated = self.validate(request)?;
        let model = &validated.model;
        if meter
            .key
            .models
            .as_ref()
            .is_some_and(|allowed| !allowed.iter().any(|m| *m == model.id))
        {
            return Err(Error::Forbidden {
                message: format!("this key may not use the model `{}`", model.id),
            });
        }
        // Fail closed: a model without a price is never free by accident.
        let Some(per_image) = pricing::credits_per_image(&validated) else {
            return Err(Error::Forbidden {
                message: format!(
                    "the model `{}` has no price, so metered keys cannot use it",
                    model.id
                ),
            });
        };
        let worst = per_image.saturating_mul(u64::from(validated.n));
        let charge = Charge {
            model: model.id.clone(),
            owner: meter.owner.to_owned(),
            inputs: json!({
                "provider": model.provider,
                "n": validated.n,
                "credits_per_image": per_image,
                "quality": validated.param_str("quality"),
                "tier": validated.tier(),
                "reference_images": validated.reference_images.len(),
            }),
        };
        let reservation = meter
            .accounts
            .reserve(&meter.key.id, meter.request_id, worst, charge)
            .await?;
        let guard = RefundOnDrop {
            accounts: meter.accounts.clone(),
            reservation: Some(reservation.clone()),
        };

        let outcome = async {
            let references = self.fetch_references(&validated).await?;
            let generation = self.run(&validated, &references).await?;
            self.respond(&validated, generation).await
        }
        .await;
        let metered = match outcome {
            Ok(mut response) => {
                let images = u64::try_from(response.data.len()).unwrap_or(u64::MAX);
                let used = per_image.saturating_mul(images).min(worst);
                let balance = meter.accounts.settle(&reservation, used).await?;
                response.credits_used = Some(used);
                Ok(Metered { response, balance })
            }
            Err(error) => {
                meter.accounts.refund(&reservation).await?;
                Err(error)
            }
        };
        guard.disarm();
        metered
    }
}
