//! `imgproxy-provider-together`: the Together AI images adapter of imgproxy. One synchronous
//! JSON call per request (`n` images at once), images returned inline as base64.
//!
//! `client` holds the provider and its HTTP, `convert` the body building, response reading and
//! error mapping, `wire` Together's serde types on top of the OpenAI-compatible wire
//! (`imgproxy_provider_openai::compat`).

mod client;
mod convert;
mod wire;

pub use client::{Together, TogetherProvider};

/// The provider name catalog entries use in `provider = ...`.
pub const PROVIDER_ID: &str = "together";
/// Together's API root; the adapter appends `/images/generations`.
pub const DEFAULT_BASE_URL: &str = "https://api.together.xyz/v1";
