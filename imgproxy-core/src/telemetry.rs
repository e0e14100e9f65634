//! The gateway's metrics: every name, its meaning and the few functions that record them,
//! through the `metrics` facade. Without an installed recorder (an embedder that installs
//! none) they cost next to nothing; the server installs a Prometheus one. Labels are bounded:
//! provider names, catalog model ids, closed outcome words; never keys, prompts or paths.

use std::time::Duration;

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit,
};

/// Upstream calls, by `provider`, `model` and `outcome` (`ok` or an error kind).
pub const UPSTREAM_REQUESTS: &str = "imgproxy_upstream_requests_total";
/// Latency of upstream calls, by `provider` and `model`.
pub const UPSTREAM_DURATION: &str = "imgproxy_upstream_duration_seconds";
/// Images generated upstream, by `model`.
pub const IMAGES_GENERATED: &str = "imgproxy_images_generated_total";
/// Pixels of the images generated upstream, by `model` (divide by 1e6 for megapixels; an
/// integer counter stays exact).
pub const OUTPUT_PIXELS: &str = "imgproxy_output_pixels_total";
/// Credits charged (settled), by `model`.
pub const CREDITS_CHARGED: &str = "imgproxy_credits_charged_total";
/// Cached-generation lookups, by `result`: `hit`, `miss`, `coalesced` (waited for an equal
/// request in flight), `bypass` (a reroll or a cache turned off).
pub const CACHE_LOOKUPS: &str = "imgproxy_cache_lookups_total";
/// Generations running now, by `provider`.
pub const GENERATIONS_IN_FLIGHT: &str = "imgproxy_generations_in_flight";
/// Generations waiting for a slot now, by `provider`.
pub const GENERATIONS_QUEUED: &str = "imgproxy_generations_queued";
/// Tasks by `state` reached: `queued` when submitted; `succeeded`, `failed`, `canceled` when a
/// worker ends one (a task cancelled while still queued never reaches a worker).
pub const TASKS: &str = "imgproxy_tasks_total";
/// Webhook delivery attempts, by `outcome`: `delivered`, `failed` (to be retried), `gave_up`
/// (failed, and its retry window is over).
pub const WEBHOOK_DELIVERIES: &str = "imgproxy_webhook_deliveries_total";

/// The circuit of each `provider`: 0 closed, 1 open (skipped), 2 half-open (one probe).
pub const CIRCUIT_STATE: &str = "imgproxy_circuit_state";
/// Fallbacks: a request moved from `from` (provider) to another candidate, by `reason` (the
/// failure kind, or `circuit_open`).
pub const FALLBACKS: &str = "imgproxy_fallbacks_total";
/// Retries of the same provider after its `Retry-After`, by `provider`.
pub const RETRIES: &str = "imgproxy_upstream_retries_total";
/// The upstream keys of each `provider`'s pool, by `state`: `live` (in the pool) or
/// `disabled` (taken out after the upstream rejected it or its quota ran out).
pub const UPSTREAM_KEYS: &str = "imgproxy_upstream_keys";

/// Describes the metrics above to the installed recorder (help text and units).
pub fn describe() {
    describe_counter!(
        UPSTREAM_REQUESTS,
        "Upstream calls by provider, model and outcome."
    );
    describe_histogram!(
        UPSTREAM_DURATION,
        Unit::Seconds,
        "Latency of upstream calls."
    );
    describe_counter!(IMAGES_GENERATED, "Images generated upstream.");
    describe_counter!(OUTPUT_PIXELS, "Pixels of the images generated upstream.");
    describe_counter!(CREDITS_CHARGED, "Credits charged (settled).");
    describe_counter!(
        CACHE_LOOKUPS,
        "Generation cache lookups: hit, miss, coalesced, bypass."
    );
    describe_gauge!(GENERATIONS_IN_FLIGHT, "Generations running, per provider.");
    describe_gauge!(
        GENERATIONS_QUEUED,
        "Generations waiting for a slot, per provider."
    );
    describe_counter!(TASKS, "Tasks that reached each state.");
    describe_counter!(WEBHOOK_DELIVERIES, "Webhook delivery attempts by outcome.");
    describe_gauge!(
        CIRCUIT_STATE,
        "Circuit of each provider: 0 closed, 1 open, 2 half-open."
    );
    describe_counter!(
        FALLBACKS,
        "Requests moved on from a provider, by provider and reason."
    );
    describe_counter!(RETRIES, "Retries of a provider after its Retry-After.");
    describe_gauge!(
        UPSTREAM_KEYS,
        "Upstream keys of each provider's pool, live or disabled."
    );
}

/// One upstream call of `provider` for `model`, ended with `outcome` after `elapsed`.
pub fn upstream_call(provider: &str, model: &str, outcome: &'static str, elapsed: Duration) {
    let labels = [
        ("provider", provider.to_owned()),
        ("model", model.to_owned()),
    ];
    histogram!(UPSTREAM_DURATION, &labels).record(elapsed);
    counter!(
        UPSTREAM_REQUESTS,
        &[
            labels[0].clone(),
            labels[1].clone(),
            ("outcome", outcome.to_owned())
        ]
    )
    .increment(1);
}

/// `count` images of `model`, `pixels` in all, made upstream.
pub fn images_generated(model: &str, count: u64, pixels: u64) {
    let labels = [("model", model.to_owned())];
    counter!(IMAGES_GENERATED, &labels).increment(count);
    counter!(OUTPUT_PIXELS, &labels).increment(pixels);
}

/// `credits` settled for `model`.
pub fn credits_charged(model: &str, credits: u64) {
    counter!(CREDITS_CHARGED, "model" => model.to_owned()).increment(credits);
}

/// A cache lookup's result.
pub fn cache_lookup(result: &'static str) {
    counter!(CACHE_LOOKUPS, "result" => result).increment(1);
}

/// The generations of `provider` running and waiting now.
pub fn generations(provider: &str, in_flight: usize, queued: usize) {
    gauge!(GENERATIONS_IN_FLIGHT, "provider" => provider.to_owned()).set(in_flight as f64);
    gauge!(GENERATIONS_QUEUED, "provider" => provider.to_owned()).set(queued as f64);
}

/// A task reached `state`.
pub fn task(state: &'static str) {
    counter!(TASKS, "state" => state).increment(1);
}

/// A webhook delivery attempt ended with `outcome`.
pub fn webhook(outcome: &'static str) {
    counter!(WEBHOOK_DELIVERIES, "outcome" => outcome).increment(1);
}

/// The circuit of `provider` is now `state` (see [`CIRCUIT_STATE`]).
pub fn circuit_state(provider: &str, state: f64) {
    gauge!(CIRCUIT_STATE, "provider" => provider.to_owned()).set(state);
}

/// A request moved on from `provider` because of `reason`.
pub fn fallback(provider: &str, reason: &str) {
    counter!(FALLBACKS, "provider" => provider.to_owned(), "reason" => reason.to_owned())
        .increment(1);
}

/// A retry of `provider` after its `Retry-After`.
pub fn retry(provider: &str) {
    counter!(RETRIES, "provider" => provider.to_owned()).increment(1);
}

/// The key pool of `provider` holds `live` keys and `disabled` ones now.
pub fn upstream_keys(provider: &str, live: usize, disabled: usize) {
    for (state, count) in [("live", live), ("disabled", disabled)] {
        gauge!(UPSTREAM_KEYS, "provider" => provider.to_owned(), "state" => state)
            .set(count as f64);
    }
}
