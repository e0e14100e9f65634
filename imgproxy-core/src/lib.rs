//! `imgproxy-core`: the OpenAI-shaped image types, the model catalog, request validation,
//! the provider trait, the image store and the [`Gateway`] that ties them together.
//!
//! This crate knows nothing of HTTP frameworks: the server crate maps [`Error`] to HTTP.
//!
//! Providers are dynamically dispatched (`Arc<dyn ImageProvider>`, via `async-trait`) because
//! the set of configured providers is only known at start-up, from the config file and the
//! environment; one registry keyed by provider name serves every model of the catalog.

pub mod accounts;
pub mod cache;
pub mod catalog;
pub mod convert;
pub mod dimensions;
mod error;
pub mod fetch;
pub mod gateway;
pub mod metering;
pub mod pricing;
pub mod provider;
pub mod request;
pub mod response;
pub mod schema;
pub mod serving;
pub mod signing;
pub mod store;
pub mod tasks;
pub mod text_params;
pub mod upstream;
pub mod url_api;
pub mod validate;

pub use accounts::Accounts;
pub use catalog::{Capability, Catalog, ModelSpec};
pub use error::Error;
pub use gateway::{Gateway, GatewayBuilder};
pub use provider::{
    GeneratedImage, Generation, ImageProvider, ProviderError, ProviderRequest, ReferenceImage,
};
pub use request::{ImageInput, ImageRequest};
pub use response::{ImageData, ImageResponse, Usage};
pub use serving::{Call, Served, StoredImage};
pub use store::ImageStore;
pub use validate::{ResponseFormat, ValidatedRequest};

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
