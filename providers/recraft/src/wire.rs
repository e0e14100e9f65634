//! Recraft's wire types that this adapter reads. Private to the crate. A generation answers
//! OpenAI's `data[]` body (its shape and reading are `imgproxy_provider_openai::compat`) plus
//! Recraft's `credits`; a tool answers with a singular `image` instead of `data[]`
//! (providers-2.md §13). Request bodies are built in `convert`, because which optional fields
//! they carry depends on the catalog entry.

use imgproxy_provider_openai::compat;
use serde::Deserialize;
use serde_json::Value;

/// Recraft's top-level field on every answer: the API units (1000 = $1) the call cost. Kept
/// loose, it is only logged: an odd value must not cost us a paid-for image.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Charged {
    pub credits: Option<Value>,
}

/// The answer of a tool (`vectorize`, `removeBackground`):
/// `{"created", "credits", "image": {"image_id", "url" | "b64_json"}}`.
#[derive(Debug, Deserialize)]
pub(crate) struct ToolResponse {
    /// Optional here so that its absence is reported as such, not as a parse error.
    pub image: Option<compat::Image>,
    #[serde(flatten)]
    pub charged: Charged,
}

/// A non-2xx body. Its shape is undocumented (providers-2.md §13: read `message`, `error` or
/// `detail` leniently), so every field is optional and loosely typed: `{code, message}`,
/// `{"error": "text"}`, OpenAI's `{"error": {message, code}}` and FastAPI's `{"detail": ...}`
/// all read.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ErrorBody {
    pub code: Option<Value>,
    pub message: Option<String>,
    pub error: Option<Value>,
    pub detail: Option<Value>,
}
