//! `imgproxy-provider-stability`: the adapter for Stability AI's Stable Image generation API,
//! `v2beta/stable-image/generate/{ultra,core,sd3}` (providers-2.md §11). One synchronous
//! multipart call per image, the image's bytes in the answer; the gateway fans `n` out.
//!
//! `client` holds the provider and its HTTP, `convert` the form and the reading of answers,
//! `error` the mapping of Stability's error answers, `wire` its serde types and the catalog's
//! `upstream_input` for its models.

mod client;
mod convert;
mod error;
mod wire;

pub use client::{Stability, StabilityProvider};

/// The provider name catalog entries use in `provider = ...`.
pub const PROVIDER_ID: &str = "stability";

/// Stability's API root; the adapter appends `/v2beta/stable-image/generate/{endpoint}`.
pub const DEFAULT_BASE_URL: &str = "https://api.stability.ai";
