//! `imgproxy-provider-xai`: the xAI (Grok Imagine) images adapter of imgproxy. Generations
//! and edits are both JSON calls that answer synchronously; reference images turn a
//! generation into an edit.
//!
//! `client` holds the provider and its HTTP, `convert` the body building, response reading and
//! error mapping, `wire` xAI's serde types on top of the OpenAI-compatible wire
//! (`imgproxy_provider_openai::compat`).

mod client;
mod convert;
mod wire;

pub use client::{Xai, XaiProvider};

/// The provider name catalog entries use in `provider = ...`.
pub const PROVIDER_ID: &str = "xai";
/// xAI's API root; the adapter appends `/images/generations` or `/images/edits`.
pub const DEFAULT_BASE_URL: &str = "https://api.x.ai/v1";
