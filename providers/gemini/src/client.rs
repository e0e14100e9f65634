//! The provider itself: its configuration, the HTTP client and the [`ImageProvider`] impl.
//! Everything that touches the network lives here; what goes into a request and how answers
//! are read is `convert`'s job.

use std::time::Duration;

use async_trait::async_trait;
use imgproxy_core::{
    upstream::{self, ApiClient, KeyHeader},
    Generation, ImageProvider, ProviderError, ProviderRequest,
};
use secrecy::{ExposeSecret as _, SecretString};

use crate::{convert, error, DEFAULT_BASE_URL, PROVIDER_ID};

/// How long one upstream call may take by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// The header that carries the API key.
const API_KEY_HEADER: KeyHeader = KeyHeader::Named("x-goog-api-key");

/// Settings of the Gemini API upstream.
#[derive(Debug, Clone)]
pub struct GeminiConfig {
    /// Sent as `x-goog-api-key`.
    pub api_key: SecretString,
    /// API root, for example `https://generativelanguage.googleapis.com`; a trailing slash is
    /// fine. The adapter appends `/v1beta/models/{model}:generateContent`.
    pub base_url: String,
    /// Limit on each upstream request, including reading its body (default 120 s).
    pub timeout: Duration,
    /// Largest response body read. Gemini returns images inline as base64, so this bounds
    /// the images too (default [`upstream::DEFAULT_MAX_DOWNLOAD_BYTES`]).
    pub max_download_bytes: usize,
}

impl GeminiConfig {
    /// The settings for Google's endpoint with `api_key`, everything else at its default.
    pub fn new(api_key: impl Into<SecretString>) -> Self {
        Self {
            api_key: api_key.into(),
            base_url: DEFAULT_BASE_URL.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            max_download_bytes: upstream::DEFAULT_MAX_DOWNLOAD_BYTES,
        }
    }
}

/// An [`ImageProvider`] for Gemini image models through `generateContent`. One call makes
/// one image; the gateway fans `n` out (the catalog sets `n_per_call = 1`).
///
/// It never retries: a failure after the image was made is ambiguous, and a retry could bill
/// the generation twice.
#[derive(Debug)]
pub struct GeminiProvider {
    /// `{base_url}/v1beta/models/`, to which `{model}:generateContent` is appended.
    models_url: String,
    /// The key header; every body is read within `max_download_bytes`.
    api: ApiClient,
}

impl GeminiProvider {
    /// Builds the provider and its HTTP client (rustls, `config.timeout`).
    pub fn new(config: GeminiConfig) -> Result<Self, ProviderError> {
        let api = ApiClient::new(
            API_KEY_HEADER,
            config.api_key.expose_secret(),
            config.timeout,
        )?
        .max_body_bytes(config.max_download_bytes);
        Ok(Self {
            models_url: format!("{}/v1beta/models/", config.base_url.trim_end_matches('/')),
            api,
        })
    }
}

#[async_trait]
impl ImageProvider for GeminiProvider {
    fn name(&self) -> &str {
        PROVIDER_ID
    }

    async fn generate(&self, request: ProviderRequest<'_>) -> Result<Generation, ProviderError> {
        self.try_generate(request)
            .await
            .map_err(|e| self.api.scrub(e))
    }
}

impl GeminiProvider {
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
