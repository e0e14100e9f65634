//! The provider itself: its configuration, the HTTP client and the [`UpstreamAdapter`] impl.
//! Everything that touches the network lives here; what goes into a request and how answers
//! are read is `convert`'s job.

use async_trait::async_trait;
use imgproxy_core::{
    upstream::{ApiClient, KeyHeader, Upstream, UpstreamAdapter, UpstreamSettings},
    Generation, ProviderError, ProviderRequest,
};

use crate::{convert, error, DEFAULT_BASE_URL, PROVIDER_ID};

/// Settings of the Gemini API upstream: the key goes as `x-goog-api-key`; the adapter appends
/// `v1beta/models/{model}:generateContent` to the API root. Gemini returns images inline as
/// base64, so `max_download_bytes` bounds the images too.
pub type GeminiConfig = UpstreamSettings;

/// An [`UpstreamAdapter`] for Gemini image models through `generateContent`. One call makes
/// one image; the gateway fans `n` out (the catalog sets `n_per_call = 1`).
///
/// It never retries: a failure after the image was made is ambiguous, and a retry could bill
/// the generation twice.
#[derive(Debug)]
pub struct GeminiProvider {
    /// `{root}v1beta/models/`, to which `{model}:generateContent` is appended.
    models_url: String,
    /// The key header; every body is read within `max_download_bytes`.
    api: ApiClient,
}

impl GeminiProvider {
    /// Builds the provider and its HTTP client (rustls, `config.timeout`).
    pub fn new(config: GeminiConfig) -> Result<Self, ProviderError> {
        Ok(Self {
            models_url: format!("{}v1beta/models/", config.api_root(&Self::UPSTREAM)?),
            api: config.api_client(&Self::UPSTREAM)?,
        })
    }
}

#[async_trait]
impl UpstreamAdapter for GeminiProvider {
    const UPSTREAM: Upstream =
        Upstream::new(PROVIDER_ID, DEFAULT_BASE_URL).key_header(KeyHeader::Named("x-goog-api-key"));

    fn api(&self) -> &ApiClient {
        &self.api
    }

    async fn try_generate(
        &self,
        request: ProviderRequest<'_>,
    ) -> Result<Generation, ProviderError> {
        let model = request.upstream_model();
        let body = convert::request_body(&request)?;
        tracing::debug!(
            provider = PROVIDER_ID,
            model,
            references = request.references.len(),
            "calling generateContent"
        );
        let url = format!("{}{model}:generateContent", self.models_url);
        let post = self.api.post(url).json(&body);
        let response = self
            .api
            .send(post, |status, wait, body| {
                error::error_from_status(status, wait, body, model)
            })
            .await?;
        let body = self.api.read_body(response).await?;
        convert::parse_response(&body)
    }
}
