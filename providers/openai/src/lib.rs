//! `imgproxy-provider-openai`: the OpenAI Images API adapter of imgproxy. It also serves any
//! OpenAI-compatible endpoint: configure another instance with its own `name`, `base_url` and
//! key, and point catalog entries at that name.
//!
//! `client` holds the provider and its HTTP, `convert` the request fields and response
//! reading, `edits` the multipart form of calls with reference images, `errors` the mapping of
//! upstream failures, `wire` OpenAI's serde types.

mod client;
mod convert;
mod edits;
mod errors;
mod stream;
mod wire;

pub use client::{
    OpenAIConfig, OpenAIProvider, DEFAULT_BASE_URL, DEFAULT_MAX_DOWNLOAD_BYTES, DEFAULT_TIMEOUT,
};

/// The default provider instance name, which the embedded catalog's OpenAI models use.
pub const PROVIDER_ID: &str = "openai";
