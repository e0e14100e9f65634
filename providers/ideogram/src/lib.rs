//! `imgproxy-provider-ideogram`: the Ideogram 3.0 adapter of imgproxy (providers-2.md §12). One
//! synchronous multipart call per request (`num_images` images at once), to `generate`, or to
//! `remix` with a reference image; the expiring image URLs of the answer are downloaded at once.
//!
//! `client` holds the provider and its HTTP, `convert` the form building, response reading and
//! error mapping, `wire` Ideogram's serde types.

mod client;
mod convert;
mod wire;

pub use client::{Ideogram, IdeogramProvider};

/// The provider name catalog entries use in `provider = ...`.
pub const PROVIDER_ID: &str = "ideogram";
/// Ideogram's API root; the adapter appends `/v1/<upstream>/generate` or `/remix`, where
/// `<upstream>` is the catalog's upstream id (`ideogram-v3`).
pub const DEFAULT_BASE_URL: &str = "https://api.ideogram.ai";
