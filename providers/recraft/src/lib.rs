//! `imgproxy-provider-recraft`: the Recraft images adapter of imgproxy (providers-2.md §13).
//! Generation is one synchronous JSON call per request (`n` images at once, SVG from the vector
//! models); the image tools (vectorize, remove background) are one multipart call with the
//! reference image as its `file` part. Results come back as URLs, downloaded at once.
//!
//! `client` holds the provider and its HTTP, `convert` the request building, answer reading and
//! error mapping, `wire` Recraft's serde types on top of the OpenAI-like wire
//! (`imgproxy_provider_openai::compat`).

mod client;
mod convert;
mod wire;

pub use client::{Recraft, RecraftProvider};

/// The provider name catalog entries use in `provider = ...`.
pub const PROVIDER_ID: &str = "recraft";
/// Recraft's API root; the adapter appends `/images/generations` or `/images/<tool>`.
pub const DEFAULT_BASE_URL: &str = "https://external.api.recraft.ai/v1";
