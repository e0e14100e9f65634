//! The provider itself: its configuration, the provider type and its [`UpstreamAdapter`].
//! Everything that touches the network lives here; what goes into a request and how answers
//! are read is `convert`'s job.

use imgproxy_core::{
    upstream::{ApiClient, KeyHeader, Outcome, Upstream, UpstreamAdapter, UpstreamProvider},
    ProviderRequest,
};

use crate::{convert, error, DEFAULT_BASE_URL, PROVIDER_ID};

/// The Gemini provider, built from [`UpstreamSettings`] by [`UpstreamProvider::new`].
///
/// The key goes as `x-goog-api-key`; the adapter appends `v1beta/models/{model}:generateContent` to
/// the API root. Gemini returns images inline as base64, so `max_download_bytes` bounds the images
/// too.
///
/// [`UpstreamSettings`]: imgproxy_core::upstream::UpstreamSettings
pub type GeminiProvider = UpstreamProvider<Gemini>;

/// The [`UpstreamAdapter`] of Gemini image models through `generateContent`. One call makes
/// one image; the gateway fans `n` out (the catalog sets `n_per_call = 1`).
///
/// It never retries: a failure after the image was made is ambiguous, and a retry could bill
/// the generation twice.
#[derive(Debug)]
pub enum Gemini {}

impl UpstreamAdapter for Gemini {
    const UPSTREAM: Upstream = Upstream::new(PROVIDER_ID, DEFAULT_BASE_URL)
        .key_header(KeyHeader::Named("x-goog-api-key"))
        .genai_name("gcp.gemini");

    async fn try_generate(api: &ApiClient, request: ProviderRequest<'_>) -> Outcome {
        let model = request.upstream_model();
        let body = convert::request_body(&request)?;
        tracing::debug!(
            provider = PROVIDER_ID,
            model,
            references = request.references.len(),
            "calling generateContent"
        );
        let url = api.url(&format!("v1beta/models/{model}:generateContent"));
        let response = api
            .send(api.post(url).json(&body), |status, wait, body| {
                error::error_from_status(status, wait, body, model)
            })
            .await?;
        let body = api.read_body(response).await?;
        convert::parse_response(&body)
    }
}
