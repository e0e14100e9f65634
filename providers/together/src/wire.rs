//! Together's wire types that this adapter reads: `ImageResponse` and `ErrorData` of the
//! OpenAPI spec. Private to the crate. Request bodies are plain JSON objects built in
//! `convert`, because which optional fields they carry depends on the catalog entry.

use serde::Deserialize;
use serde_json::Value;

/// The success body of `POST /images/generations`. Unknown fields (`id`, `timings`, ...) are
/// ignored so that a new upstream field never breaks a paid-for generation.
#[derive(Debug, Deserialize)]
pub(crate) struct ImageResponse {
    pub data: Option<Vec<Image>>,
}

/// One item of `data`: `{index, b64_json, type: "b64_json"}` or `{index, url, type: "url"}`.
/// Read by which field is present rather than by `type`, which the docs' example omits.
#[derive(Debug, Deserialize)]
pub(crate) struct Image {
    pub index: Option<u32>,
    pub b64_json: Option<String>,
    pub url: Option<String>,
}

/// `{"error": {...}}`, Together's `ErrorData`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ErrorEnvelope {
    pub error: Option<ErrorBody>,
}

/// The fields of an error; `message` and `type` are required by the spec, but a proxy in
/// front of Together may send less.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ErrorBody {
    pub message: Option<String>,
    pub code: Option<Value>,
}
