//! Ideogram's wire types that this adapter reads: the answer of `generate` and `remix`, and its
//! error bodies. Private to the crate. Requests are multipart forms built in `convert`, because
//! which fields they carry depends on the catalog entry.
//!
//! Unknown fields are ignored: a new upstream field must never cost a paid-for image.

use serde::Deserialize;
use serde_json::Value;

/// The 200 body of `POST /v1/ideogram-v3/generate` and `/remix`:
/// `{"created": "<ISO time>", "data": [ImageObject, ...]}` (`created` is not read).
#[derive(Debug, Deserialize)]
pub(crate) struct GenerateResponse {
    pub data: Vec<ImageObject>,
}

/// One image of the answer.
#[derive(Debug, Deserialize)]
pub(crate) struct ImageObject {
    /// Where the image is, for a limited time; empty or null when the image was withheld.
    #[serde(default)]
    pub url: Option<String>,
    /// The prompt the image was made from: MagicPrompt's rewrite when it ran.
    #[serde(default)]
    pub prompt: Option<String>,
    /// `false` when Ideogram's safety check withheld this image (and only this one).
    #[serde(default)]
    pub is_image_safe: Option<bool>,
}

/// An error body. Its shape is not documented: `{"error": "text"}` is what third parties
/// quote (providers-2.md §12), so the usual other places of a message are read too.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ErrorBody {
    /// A text, or an object with a `message`.
    pub error: Option<Value>,
    /// FastAPI's `detail`, when it is a text.
    pub detail: Option<Value>,
    pub message: Option<String>,
}

impl ErrorBody {
    /// `body` read as an error; a body of any other shape reads as empty.
    pub fn read(body: &[u8]) -> Self {
        serde_json::from_slice(body).unwrap_or_default()
    }

    /// The first message found, trimmed; `None` when there is none.
    pub fn message(&self) -> Option<&str> {
        let error = self.error.as_ref();
        [
            error.and_then(Value::as_str),
            error.and_then(|e| e.get("message")).and_then(Value::as_str),
            self.detail.as_ref().and_then(Value::as_str),
            self.message.as_deref(),
        ]
        .into_iter()
        .flatten()
        .map(str::trim)
        .find(|text| !text.is_empty())
    }
}
