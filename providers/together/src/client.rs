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

use crate::{convert, DEFAULT_BASE_URL, PROVIDER_ID};

/// How long one upstream call may take by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// Settings of the Together AI upstream.
#[derive(Debug, Clone)]
pub struct TogetherConfig {
    /// Sent as `Authorization: Bearer <key>`.
    pub api_key: SecretString,
    /// API root, for example `https://api.together.xyz/v1`; a trailing slash is fine.
    pub base_url: String,
    /// Limit on each upstream request, including reading its body (default 120 s).
    pub timeout: Duration,
    /// Largest image downloaded from a `url` item.
    pub max_download_bytes: usize,
}

impl TogetherConfig {
    /// The settings for Together with `api_key`, everything else at its default.
    pub fn new(api_key: impl Into<SecretString>) -> Self {
        Self {
            api_key: api_key.into(),
            base_url: DEFAULT_BASE_URL.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            max_download_bytes: DEFAULT_MAX_DOWNLOAD_BYTES,
        }
    }
}

/// An [`ImageProvider`] speaking Together's images API.
///
/// It never retries: a failure after the image was made is ambiguous, and a retry could bill
/// the generation twice.
#[derive(Debug)]
pub struct TogetherProvider {
    generations_url: String,
    /// Bearer auth, sent to the API only, never to download URLs.
    api: ApiClient,
}

impl TogetherProvider {
    /// Builds the provider and its HTTP client (rustls, `config.timeout`).
    pub fn new(config: TogetherConfig) -> Result<Self, ProviderError> {
        let api = ApiClient::new(
            KeyHeader::BEARER,
            config.api_key.expose_secret(),
            config.timeout,
        )?
        .max_body_bytes(config.max_download_bytes);
        let base = config.base_url.trim_end_matches('/');
        Ok(Self {
            generations_url: format!("{base}/images/generations"),
            api,
        })
    }
}

#[async_trait]
impl ImageProvider for TogetherProvider {
    fn name(&self) -> &str {
        PROVIDER_ID
    }

    async fn generate(&self, call: ProviderRequest<'_>) -> Result<Generation, ProviderError> {
        self.try_generate(call).await.map_err(|e| self.api.scrub(e))
    }
}

impl TogetherProvider {
    async fn try_generate(&self, call: ProviderRequest<'_>) -> Result<Generation, ProviderError> {
        let body = convert::request_body(&call)?;
        tracing::debug!(
            provider = PROVIDER_ID,
            model = call.upstream_model(),
            n = call.n,
            "calling Together images/generations"
        );
        let post = self.api.post(&self.generations_url).json(&body);
        let answer = self
            .api
            .send_for_body(post, convert::error_from_status)
            .await?;
        let sources = convert::parse_response(&answer)?;

        let output_format = call.request.param_str("output_format");
        let mut images = Vec::with_capacity(sources.len());
        // Sequential on purpose: URL items only appear if Together ignores `base64`.
        for source in sources {
            let (bytes, content_type) = self.api.fetch(source).await?;
            images.push(convert::generated_image(
                bytes,
                content_type.as_deref(),
                output_format,
            ));
        }
        let mut generation = Generation {
            images,
            ..Generation::default()
        };
        // Together renders exactly the width and height it was sent.
        generation.meta.size = Some(convert::pixel_size(&call).to_string());
        Ok(generation)
    }
}
