//! Google's wire types that this adapter reads: the `generateContent` response and the error
//! envelope. Private to the crate. The request body is plain JSON built in `convert`, because
//! its `generationConfig` fields come from the catalog rather than from a fixed struct.
//!
//! REST accepts and some gateways echo proto3 snake_case names, so every field also takes its
//! snake_case alias. Unknown fields are ignored: a new upstream field must never cost a
//! paid-for image.

use serde::Deserialize;
use serde_json::{Map, Value};

/// The success body of `generateContent`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GenerateContentResponse {
    /// Absent when the prompt itself was blocked.
    #[serde(default)]
    pub candidates: Vec<Candidate>,
    #[serde(alias = "prompt_feedback")]
    pub prompt_feedback: Option<PromptFeedback>,
    /// Kept loose and read on its own: an odd usage block must not cost us the images.
    #[serde(alias = "usage_metadata")]
    pub usage_metadata: Option<Map<String, Value>>,
}

/// One candidate answer (image models make one per call).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Candidate {
    /// Absent or empty when the output was blocked.
    pub content: Option<Content>,
    #[serde(alias = "finish_reason")]
    pub finish_reason: Option<String>,
    #[serde(alias = "finish_message")]
    pub finish_message: Option<String>,
}

/// The parts of a candidate.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Content {
    pub parts: Vec<Part>,
}

/// One part: text, an inline blob, or an interim "thought" of either kind.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Part {
    #[serde(alias = "inline_data")]
    pub inline_data: Option<Blob>,
    /// Gemini 3 image models emit interim thought images, which are not the result.
    #[serde(default)]
    pub thought: bool,
}

/// Inline bytes, base64-encoded.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Blob {
    #[serde(alias = "mime_type")]
    pub mime_type: Option<String>,
    #[serde(default)]
    pub data: String,
}

/// Why the prompt was refused.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PromptFeedback {
    #[serde(alias = "block_reason")]
    pub block_reason: Option<String>,
    #[serde(alias = "block_reason_message")]
    pub block_reason_message: Option<String>,
}

/// `{"error": {...}}`, Google's RPC error envelope.
#[derive(Debug, Deserialize)]
pub(crate) struct ErrorEnvelope {
    pub error: ErrorBody,
}

/// The fields of a Google error. All optional: proxies in front of Google fill them unevenly.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ErrorBody {
    pub message: Option<String>,
    /// The RPC status name, for example `INVALID_ARGUMENT` or `RESOURCE_EXHAUSTED`.
    pub status: Option<String>,
    /// `google.rpc` detail messages, told apart by `@type`; loose, as only two are read.
    #[serde(default)]
    pub details: Vec<Value>,
}
