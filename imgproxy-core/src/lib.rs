//! `imgproxy-core`: the kernel of imgproxy (the OpenAI-shaped image types, the model catalog,
//! request validation, pricing, the provider trait and upstream helpers, the guarded
//! reference fetcher, image conversion and the [`Gateway`] that ties them together) and,
//! behind the `service` feature, the service layer around it (`service`: image store, cache,
//! database, metering, signing, tasks).
//!
//! This crate knows nothing of HTTP frameworks: the server crate maps [`Error`] to HTTP. With
//! its default features it depends on no database, object store or cache crate.
//!
//! Providers are dynamically dispatched (`Arc<dyn ImageProvider>`, via `async-trait`) because
//! the set of configured providers is only known at start-up, from the config file and the
//! environment; one registry keyed by provider name serves every model of the catalog.

pub mod b64;
pub mod blocking;
pub mod catalog;
pub mod clock;
pub mod convert;
pub mod dimensions;
mod error;
pub mod failover;
pub mod fetch;
pub mod gateway;
pub mod pricing;
pub mod provider;
mod relay;
pub mod request;
pub mod response;
pub mod schema;
#[cfg(feature = "service")]
pub mod service;
pub mod surface;
pub mod telemetry;
pub mod text_params;
pub mod upstream;
pub mod validate;

pub use catalog::{Capability, Catalog, ModelSpec};
pub use error::{quote, Error, ErrorBody, ErrorEnvelope, Fault, QUOTED_CHARS};
pub use gateway::{Gateway, GatewayBuilder};
pub use provider::{
    GeneratedImage, Generation, ImageProvider, KeyStatus, ProviderError, ProviderRequest,
    ReferenceImage,
};
pub use request::{ImageInput, ImageRequest};
pub use response::{ImageData, ImageResponse, Usage};
pub use validate::{ResponseFormat, ValidatedRequest};

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
