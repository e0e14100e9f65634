//! xAI's wire types that this adapter reads: the images response and the three error shapes
//! xAI answers with. Private to the crate. Request bodies are plain JSON objects built in
//! `convert`, because which optional fields they carry depends on the catalog entry.

use serde::Deserialize;
use serde_json::Value;

/// The success body of `POST /images/generations` and `POST /images/edits`. Unknown fields
/// are ignored so that a new upstream field never breaks a paid-for generation.
#[derive(Debug, Deserialize)]
pub(crate) struct ImagesResponse {
    /// Empty when xAI moderated the request silently; absent only in a malformed answer.
    pub data: Option<Vec<Image>>,
    /// `{"cost_in_usd_ticks": ...}`; kept loose so that an odd shape costs only the usage.
    pub usage: Option<Value>,
    /// Non-null when xAI blocked the request (third-party API reference only).
    pub block_reason: Option<Value>,
}

/// One item of `data`: inline base64 (we ask for `b64_json`) or, failing that, a URL.
#[derive(Debug, Deserialize)]
pub(crate) struct Image {
    pub b64_json: Option<String>,
    pub url: Option<String>,
    /// `image/png`, `image/jpeg`, ...
    pub mime_type: Option<String>,
    /// Often `""`, which means "not rewritten".
    pub revised_prompt: Option<String>,
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

/// `error`: a message, or an OpenAI-style object.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum ErrorField {
    Text(String),
    Object(ErrorObject),
}

/// The OpenAI-style error object.
#[derive(Debug, Deserialize)]
pub(crate) struct ErrorObject {
    pub message: Option<String>,
    pub code: Option<Value>,
}

impl ErrorBody {
    /// The upstream's message, whichever shape carried it.
    pub fn message(&self) -> Option<&str> {
        match self.error.as_ref()? {
            ErrorField::Text(text) => Some(text.as_str()),
            ErrorField::Object(object) => object.message.as_deref(),
        }
        .map(str::trim)
        .filter(|m| !m.is_empty())
    }

    /// The upstream's error code, as text, whichever shape carried it.
    pub fn code(&self) -> Option<String> {
        let nested = match &self.error {
            Some(ErrorField::Object(object)) => object.code.as_ref(),
            _ => None,
        };
        match self.code.as_ref().or(nested)? {
            Value::String(code) => Some(code.clone()),
            Value::Number(code) => Some(code.to_string()),
            _ => None,
        }
    }
}
