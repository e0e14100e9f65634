//! `imgproxy-provider-openai`: the OpenAI Images API adapter of imgproxy. It also serves any
//! OpenAI-compatible endpoint: configure another instance with its own `name`, `base_url` and
//! key, and point catalog entries at that name.
//!
//! `client` holds the provider and its HTTP, `convert` the request fields and response
//! reading, `edits` the multipart form of calls with reference images, `errors` the mapping of
//! upstream failures, `stream` streamed answers. `compat` is OpenAI's wire (the `data[]` body
//! and the error envelope), public for the adapters of compatible dialects.

mod client;
pub mod compat;
mod convert;
mod edits;
mod errors;
mod stream;

pub use client::{
    OpenAI, OpenAIConfig, OpenAIProvider, DEFAULT_BASE_URL, DEFAULT_MAX_DOWNLOAD_BYTES,
    DEFAULT_TIMEOUT,
};

/// The default provider instance name, which the embedded catalog's OpenAI models use.
pub const PROVIDER_ID: &str = "openai";
