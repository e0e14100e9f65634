//! `imgproxy-provider-replicate`: the Replicate predictions adapter of imgproxy. It creates a
//! prediction with `Prefer: wait`, polls `urls.get` until it ends, and downloads the output.
//!
//! `client` holds the provider and its HTTP, `convert` the input building, prediction reading
//! and error mapping, `wire` Replicate's serde types and the catalog's `upstream_input` data.

mod client;
mod convert;
mod wire;

pub use client::{Replicate, ReplicateProvider};

/// The provider name that the embedded catalog's Replicate models use.
pub const PROVIDER_ID: &str = "replicate";
/// Replicate's API root; the adapter appends `/v1/models/{owner}/{name}/predictions`.
pub const DEFAULT_BASE_URL: &str = "https://api.replicate.com";
