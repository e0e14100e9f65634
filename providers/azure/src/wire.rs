//! Azure's own fields on OpenAI's error envelope (whose shape and reading are
//! `imgproxy_provider_openai::compat`): the `inner_error` of a content-filter refusal.
//! Private to the crate.

use serde::Deserialize;

/// `{"error": {"inner_error": {...}}}`, read for the inner error alone.
#[derive(Debug, Default, Deserialize)]
struct Envelope {
    #[serde(default)]
    error: Outer,
}

#[derive(Debug, Default, Deserialize)]
struct Outer {
    inner_error: Option<InnerError>,
}

/// What Azure adds under `error.inner_error` when its safety system refuses a prompt:
/// `{"code": "ResponsibleAIPolicyViolation", "content_filter_results": {...},
/// "revised_prompt": "..."}` (providers-2.md §10.4).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct InnerError {
    /// `ResponsibleAIPolicyViolation` for a content-filter refusal.
    pub code: Option<String>,
    /// The prompt as the service rewrote it before refusing it.
    pub revised_prompt: Option<String>,
}

/// The `inner_error` of an error body; empty when there is none or the body is not JSON.
pub(crate) fn inner_error(body: &[u8]) -> InnerError {
    serde_json::from_slice::<Envelope>(body)
        .ok()
        .and_then(|envelope| envelope.error.inner_error)
        .unwrap_or_default()
}
