//! OpenAI's wire types that this adapter reads: `ImagesResponse` and the error envelope.
//! Private to the crate. The request body is a plain JSON object built in `convert`, because
//! its fields come from the catalog rather than from a fixed struct.

use serde::Deserialize;
use serde_json::Value;

/// The success body of `POST /images/generations`. Unknown fields are ignored so that newer
/// upstream fields (`safety_identifier`, `svg_usage`, ...) never break a paid-for generation.
#[derive(Debug, Deserialize)]
pub(crate) struct ImagesResponse {
    /// Optional in OpenAI's SDK type, but a response without it carries no image.
    pub data: Option<Vec<Image>>,
    pub background: Option<String>,
    pub output_format: Option<String>,
    pub quality: Option<String>,
    pub size: Option<String>,
    /// Kept loose and parsed on its own: a compatible gateway's odd `usage` must not cost us
    /// the images.
    pub usage: Option<Value>,
}

/// One item of `data`: inline base64 (GPT image models) or a URL (DALL·E-style gateways).
#[derive(Debug, Deserialize)]
pub(crate) struct Image {
    pub b64_json: Option<String>,
    pub url: Option<String>,
    pub revised_prompt: Option<String>,
}

/// `{"error": {...}}`, the envelope of every OpenAI error.
#[derive(Debug, Deserialize)]
pub(crate) struct ErrorEnvelope {
    pub error: ErrorBody,
}

/// The fields of an OpenAI error. All optional: compatible gateways fill them unevenly.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ErrorBody {
    pub message: Option<String>,
    pub param: Option<String>,
    /// A string at OpenAI; some compatible gateways send a number.
    pub code: Option<Value>,
}

impl ErrorBody {
    /// `code` as text, whatever JSON type the upstream used.
    pub fn code(&self) -> Option<String> {
        match self.code.as_ref()? {
            Value::String(code) => Some(code.clone()),
            Value::Number(code) => Some(code.to_string()),
            _ => None,
        }
    }
}
