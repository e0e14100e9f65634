//! Together's wire types that this adapter reads: its own field on the OpenAI-compatible images
//! body (whose shape, error envelope included, and reading are
//! `imgproxy_provider_openai::compat`). Private to the crate. Request bodies are plain JSON
//! objects built in `convert`, because which optional fields they carry depends on the catalog
//! entry.

use serde::Deserialize;

/// Together's field on each item of `data`, which is `{index, b64_json, type: "b64_json"}` or
/// `{index, url, type: "url"}`. Read by which field is present rather than by `type`, which
/// the docs' example omits.
#[derive(Debug, Deserialize)]
pub(crate) struct ImageFields {
    /// The item's place among the images; items may come in any order.
    pub index: Option<u32>,
}
