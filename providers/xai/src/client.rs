//! The provider itself: its configuration, the HTTP client and the [`ImageProvider`] impl.
//! Everything that touches the network lives here; what goes into a request and how answers
//! are read is `convert`'s job.

use std::time::Duration;

use async_trait::async_trait;
use imgproxy_core::{
    upstream::{ApiClient, KeyHeader, DEFAULT_MAX_DOWNLOAD_BYTES},
    Generation, ImageProvider, ProviderError, ProviderRequest,
};
use secrecy::{ExposeSecret as _, SecretString};

use crate::{
    convert::{self, Endpoint},
    DEFAULT_BASE_URL, PROVIDER_ID,
};

/// How long one upstream call may take by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// Settings of the xAI upstream.
#[derive(Debug, Clone)]
pub struct XaiConfig {
    /// Sent as `Authorization: Bearer <key>`.
    pub api_key: SecretString,
    /// API root, for example `https://api.x.ai/v1`; a trailing slash is fine.
    pub base_url: String,
    /// Limit on each upstream request, including reading its body (default 120 s).
    pub timeout: Duration,
    /// Largest image downloaded from a `url` item.
    pub max_download_bytes: usize,
}

impl XaiConfig {
    /// The settings for xAI with `api_key`, everything else at its default.
    pub fn new(api_key: impl Into<SecretString>) -> Self {
        Self {
            api_key: api_key.into(),
            base_url: DEFAULT_BASE_URL.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            max_download_bytes: DEFAULT_MAX_DOWNLOAD_BYTES,
        }
    }
}

/// An [`ImageProvider`] speaking xAI's images API.
///
/// It never retries: a failure after the image was made is ambiguous, and a retry could bill
/// the generation twice.
#[derive(Debug)]
pub struct XaiProvider {
    generations_url: String,
    edits_url: String,
    /// Bearer auth, sent to the API only, never to download URLs.
    api: ApiClient,
}

impl XaiProvider {
    /// Builds the provider and its HTTP client (rustls, `config.timeout`).
    pub fn new(config: XaiConfig) -> Result<Self, ProviderError> {
        let api = ApiClient::new(
            KeyHeader::BEARER,
            config.api_key.expose_secret(),
            config.timeout,
        )?
        .max_body_bytes(config.max_download_bytes);
        let base = config.base_url.trim_end_matches('/');
        Ok(Self {
            generations_url: format!("{base}/images/generations"),
            edits_url: format!("{base}/images/edits"),
            api,
        })
    }
}

#[async_trait]
impl ImageProvider for XaiProvider {
    fn name(&self) -> &str {
        PROVIDER_ID
    }

    async fn generate(&self, call: ProviderRequest<'_>) -> Result<Generation, ProviderError> {
        self.try_generate(call).await.map_err(|e| self.api.scrub(e))
    }
}

impl XaiProvider {
    async fn try_generate(&self, call: ProviderRequest<'_>) -> Result<Generation, ProviderError> {
        let (endpoint, body) = convert::request_body(&call)?;
        let url = match endpoint {
            Endpoint::Generations => &self.generations_url,
            Endpoint::Edits => &self.edits_url,
        };
        tracing::debug!(
            provider = PROVIDER_ID,
            model = call.upstream_model(),
            n = call.n,
            references = call.references.len(),
            ?endpoint,
            "calling xAI"
        );
        let answer = self
            .api
            .send_for_body(self.api.post(url).json(&body), convert::error_from_status)
            .await?;
        let parsed = convert::parse_response(&answer)?;

        let mut images = Vec::with_capacity(parsed.images.len());
        // Sequential on purpose: URL items only appear if xAI ignores `b64_json`.
        for image in parsed.images {
            let (bytes, content_type) = self.api.fetch(image.source).await?;
            images.push(convert::generated_image(
                bytes,
                image.mime.as_deref(),
                content_type.as_deref(),
                image.revised_prompt,
            ));
        }
        let mut generation = Generation {
            usage: parsed.usage,
            ..Generation::default()
        };
        // xAI takes no `output_format`; report what it actually returned.
        generation.meta.output_format = images
            .first()
            .and_then(|image| image.mime.strip_prefix("image/"))
            .map(str::to_owned);
        generation.images = images;
        Ok(generation)
    }
}
