//! `imgproxy-provider-dashscope`: the Alibaba Cloud Model Studio (DashScope) adapter of
//! imgproxy, for the Qwen-Image models. Most models answer one synchronous call
//! (`multimodal-generation`); `qwen-image` and `qwen-image-plus` also run as tasks on the
//! asynchronous `text2image` API, submitted, polled and resumable after a restart
//! (providers-2.md §8.1).
//!
//! `client` holds the provider and its HTTP, `convert` the body building, answer reading and
//! error mapping, `wire` DashScope's serde types and the catalog's input mapping.

mod client;
mod convert;
mod wire;

pub use client::{DashScope, DashScopeProvider};

/// The provider name catalog entries use in `provider = ...`.
pub const PROVIDER_ID: &str = "dashscope";
/// The international (Singapore) API root; keys are bound to their region, so a Beijing key
/// needs `https://dashscope.aliyuncs.com/api/v1` (providers-2.md §8).
pub const DEFAULT_BASE_URL: &str = "https://dashscope-intl.aliyuncs.com/api/v1";
