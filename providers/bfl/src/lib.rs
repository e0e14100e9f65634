//! `imgproxy-provider-bfl`: the Black Forest Labs direct API adapter of imgproxy (FLUX 1.1
//! [pro], Ultra, Kontext). Jobs are submitted, then the returned `polling_url` is polled until
//! the sample is ready, and the sample is downloaded at once (its URL expires in minutes).
//!
//! `client` holds the provider and its HTTP, `convert` the body building, answer reading and
//! error mapping, `wire` BFL's serde types and the catalog's input mapping.

mod client;
mod convert;
mod wire;

pub use client::{Bfl, BflProvider};

/// The provider instance name that the catalog's BFL entries use.
pub const PROVIDER_ID: &str = "bfl";
/// BFL's global API root; the adapter appends `/v1/<model>`.
pub const DEFAULT_BASE_URL: &str = "https://api.bfl.ai";
