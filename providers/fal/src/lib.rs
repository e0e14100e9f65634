//! `imgproxy-provider-fal`: the fal.ai queue API adapter of imgproxy. A job is submitted to
//! `{base}/{model}`, its returned `status_url` polled until a terminal status, and its output
//! fetched from the returned `response_url`; a job given up on is cancelled at `cancel_url`.
//!
//! `client` holds the provider and its HTTP, `convert` the per-model input mapping (catalog
//! data) and output reading, `errors` the error mapping, `wire` fal's serde types.

mod client;
mod convert;
mod errors;
mod wire;

pub use client::{Fal, FalProvider};

/// The provider instance name the embedded catalog's fal models use.
pub const PROVIDER_ID: &str = "fal";
/// fal's queue API root; the adapter appends the model id.
pub const DEFAULT_BASE_URL: &str = "https://queue.fal.run";
