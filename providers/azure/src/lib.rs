//! `imgproxy-provider-azure`: the Azure OpenAI image generation adapter of imgproxy. Azure
//! serves OpenAI's own Images API (the GPT image models) under a resource endpoint, a
//! deployment name per model and an `api-key` header (providers-2.md §10), so the calls are
//! the OpenAI crate's (`imgproxy_provider_openai::images_call`, on its `compat` wire): this
//! crate says where they go and how Azure's refusals read.
//!
//! `client` holds the configuration, the provider and its adapter; `convert` the routing of a
//! model to its deployment's URLs and the mapping of Azure's errors; `wire` Azure's own error
//! fields.

mod client;
mod convert;
mod wire;

pub use client::{Azure, AzureConfig, AzureProvider};

/// The provider name catalog entries use in `provider = ...`.
pub const PROVIDER_ID: &str = "azure";
/// The `api-version` of the deployment form unless configured otherwise: the dated version
/// the image how-to documents for the GPT image models and edits (providers-2.md §10.1).
pub const DEFAULT_API_VERSION: &str = "2025-04-01-preview";
/// The `api-version` that selects the v1 API (`/openai/v1/images/...`, no dated version;
/// the body's `model` names the deployment) instead of the deployment form.
pub const V1_API: &str = "v1";
