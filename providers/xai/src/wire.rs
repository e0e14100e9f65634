//! xAI's wire types that this adapter reads: its own fields on the OpenAI-compatible images
//! body (whose shape and reading are `imgproxy_provider_openai::compat`), and the three error
//! shapes xAI answers with. Private to the crate. Request bodies are plain JSON objects built
//! in `convert`, because which optional fields they carry depends on the catalog entry.

use imgproxy_provider_openai::compat::{self, ErrorObject};
use serde::Deserialize;
use serde_json::Value;

/// The success body of `POST /images/generations` and `POST /images/edits`. `data` is empty
/// when xAI moderated the request silently; `usage` is `{"cost_in_usd_ticks": ...}`.
pub(crate) type ImagesResponse = compat::ImagesResponse<ResponseFields, ImageFields>;

/// xAI's top-level fields.
#[derive(Debug, Deserialize)]
pub(crate) struct ResponseFields {
    /// Non-null when xAI blocked the request (third-party API reference only).
    pub block_reason: Option<Value>,
}

/// xAI's fields on each item of `data`. Its `revised_prompt` is often `""`, which means "not
/// rewritten".
#[derive(Debug, Deserialize)]
pub(crate) struct ImageFields {
    /// `image/png`, `image/jpeg`, ...
    pub mime_type: Option<String>,
    /// `false` when moderation withheld this image.
    pub respect_moderation: Option<bool>,
}

/// An error body. xAI uses three shapes (vercel's `xai-error.ts` union):
/// `{"error": {"message", "type", "param", "code"}}`, `{"code": "...", "error": "..."}` and
/// `{"error": "..."}`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ErrorBody {
    pub error: Option<ErrorField>,
    pub code: Option<Value>,
}

/// `error`: a message, or OpenAI's error object.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum ErrorField {
    Text(String),
    Object(ErrorObject),
}

impl ErrorBody {
    /// The upstream's message, whichever shape carried it.
    pub fn message(&self) -> Option<&str> {
        match self.error.as_ref()? {
            ErrorField::Text(text) => Some(text.trim()).filter(|m| !m.is_empty()),
            ErrorField::Object(object) => object.message(),
        }
    }

    /// The upstream's error code, as text, whichever shape carried it.
    pub fn code(&self) -> Option<String> {
        let nested = match &self.error {
            Some(ErrorField::Object(object)) => object.code.as_ref(),
            _ => None,
        };
        // Read as OpenAI reads a code: a string or a number.
        ErrorObject {
            code: self.code.as_ref().or(nested).cloned(),
            ..ErrorObject::default()
        }
        .code()
    }
}
