//! `imgproxy-provider-openai`: the OpenAI Images API adapter of imgproxy. It also serves any
//! OpenAI-compatible endpoint: configure another instance with its own `name`, `base_url` and
//! key, and point catalog entries at that name.
//!
//! `client` holds the provider and its HTTP, `convert` the request fields and response
//! reading, `edits` the multipart form of calls with reference images, `errors` the mapping of
//! upstream failures, `stream` streamed answers. `compat` is OpenAI's wire (the `data[]` body
//! and the error envelope), public for the adapters of compatible dialects; [`images_call`]
//! is a whole call of the API wherever a service serves it ([`ImagesRoute`]), public for the
//! adapters of services that serve OpenAI's own API under other URLs (Azure OpenAI).

mod client;
pub mod compat;
mod convert;
mod edits;
mod errors;
mod stream;

pub use client::{
    images_call, ImagesRoute, OpenAI, OpenAIConfig, OpenAIProvider, DEFAULT_BASE_URL,
    DEFAULT_MAX_DOWNLOAD_BYTES, DEFAULT_TIMEOUT,
};
pub use errors::{error_from_status, ErrorMapping};

/// The default provider instance name, which the embedded catalog's OpenAI models use.
pub const PROVIDER_ID: &str = "openai";
