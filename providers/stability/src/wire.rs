//! Stability's wire types that this adapter reads (the JSON form of a generation, the error
//! envelope), and the shape of the catalog's `upstream_input` for Stability models. Private to
//! the crate. The request is a multipart form built in `convert`, because which fields it
//! carries comes from the catalog rather than from a fixed struct.

use serde::Deserialize;
use serde_json::Value;

/// A Stability model's `upstream_input` table in the catalog.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct InputMapping {
    /// The route under `v2beta/stable-image/generate/`.
    pub endpoint: Endpoint,
    /// `strength` sent with an input image when the request gives none; Stability requires
    /// one with an image (providers-2.md §11, "What an adapter must do" 6).
    #[serde(default)]
    pub default_strength: Option<f64>,
}

/// The three generation routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Endpoint {
    /// Stable Image Ultra: takes an input image with `strength`.
    Ultra,
    /// Stable Image Core: text to image only.
    Core,
    /// Stable Diffusion 3.5: the variant goes as `model`, and `mode` says whether an input
    /// image comes with it.
    Sd3,
}

impl Endpoint {
    /// Its path segment.
    pub fn segment(self) -> &'static str {
        match self {
            Self::Ultra => "ultra",
            Self::Core => "core",
            Self::Sd3 => "sd3",
        }
    }
}

/// A 200 answered as JSON (`Accept: application/json`, or a proxy that re-encodes):
/// `{"image": "<base64>", "finish_reason": "SUCCESS" | "CONTENT_FILTERED", "seed": 123}`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct JsonImage {
    pub image: Option<String>,
    pub finish_reason: Option<String>,
}

/// Stability's error envelope, `{"id": "<hex>", "name": "<code>", "errors": ["..."]}`
/// (providers-2.md §11.1). Loose: a proxy in front may answer with any part of it, or with
/// `message` instead of `errors`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ErrorEnvelope {
    /// The error's kind, for example `content_moderation` or `invalid_prompts`.
    pub name: Option<String>,
    /// What went wrong, one text per fault; kept loose, as only the texts are read.
    pub errors: Vec<Value>,
    pub message: Option<String>,
}
