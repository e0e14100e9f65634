//! `imgproxy-provider-gemini`: the adapter for Google's Gemini API image models
//! (`gemini-3-pro-image`, `gemini-3.1-flash-image`) through `generateContent`.
//!
//! `client` holds the provider and its HTTP, `convert` the body building and response reading,
//! `error` the mapping of Google's error answers, `wire` Google's serde types.

mod client;
mod convert;
mod error;
mod wire;

pub use client::{Gemini, GeminiProvider};

/// The provider instance name that the embedded catalog's Gemini models use.
pub const PROVIDER_ID: &str = "gemini";

/// The Gemini API root; the adapter appends `/v1beta/models/{model}:generateContent`.
pub const DEFAULT_BASE_URL: &str = "https://generativelanguage.googleapis.com";
