//! `POST /v1/images/estimate`: what a generation would cost, before it runs. The body is the
//! generation's; it is validated as `POST /v1/images/generations` validates it (a bad
//! parameter is the same 400 naming it) and priced by the catalog's one pricing function.
//! Nothing is generated, reserved or charged. The playground shows it next to its form.

use axum::{extract::State, Extension, Json};
use imgproxy_core::{pricing, service::metering, ImageRequest};
use schemars::JsonSchema;
use serde::Serialize;

use crate::{auth::Caller, error::ApiError, extract::OpenAIJson, state::AppState};

/// The answer of `POST /v1/images/estimate`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Estimate {
    /// Always `image.estimate`.
    pub object: &'static str,
    /// The catalog model the request resolves to.
    pub model: String,
    /// Images asked for.
    pub n: u32,
    /// Credits one image costs; `null` for a model without a price (metered keys cannot use
    /// it).
    pub credits_per_image: Option<u64>,
    /// Credits the request costs at most: what its run reserves, `n` images of the dearest of
    /// its model and fallbacks (a cache hit costs nothing). For a metered key, a model it may
    /// not use or one without a price is refused as its run would be.
    pub credits: Option<u64>,
    /// The quality it is priced at, where the price depends on one.
    pub quality: Option<String>,
    /// The resolution tier it is priced at, where known.
    pub tier: Option<String>,
}

/// Validates and prices `request` for the caller.
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    OpenAIJson(mut request): OpenAIJson<ImageRequest>,
) -> Result<Json<Estimate>, ApiError> {
    caller.fill_response_format(&mut request);
    let validated = state.service.gateway().validate(request)?;
    let per_image = pricing::credits_per_image(&validated);
    let credits = match caller.paying_key() {
        Some(key) => Some(metering::reservation_for(Some(key), &validated)?),
        // Unmetered: nothing is refused; a model without a price has no estimate.
        None => metering::reservation_for(None, &validated).ok(),
    };
    Ok(Json(Estimate {
        object: "image.estimate",
        model: validated.model.id.clone(),
        n: validated.n,
        credits_per_image: per_image,
        credits,
        quality: pricing::priced_quality(&validated).map(str::to_owned),
        tier: validated.tier().map(str::to_owned),
    }))
}
