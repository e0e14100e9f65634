//! The provider itself: its configuration, the HTTP client and the [`UpstreamAdapter`] impl.
//! Everything that touches the network lives here; what goes into a request and how answers
//! are read is `convert`'s job.

use async_trait::async_trait;
use imgproxy_core::{
    upstream::{ApiClient, Upstream, UpstreamAdapter, UpstreamSettings},
    Generation, ProviderError, ProviderRequest,
};

use crate::{
    convert::{self, Endpoint},
    DEFAULT_BASE_URL, PROVIDER_ID,
};

/// Settings of the xAI upstream: the key goes as `Authorization: Bearer <key>` to the API
/// only; `max_download_bytes` bounds an image downloaded from a `url` item.
pub type XaiConfig = UpstreamSettings;

/// An [`UpstreamAdapter`] speaking xAI's images API.
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
        let root = config.api_root(&Self::UPSTREAM)?;
        Ok(Self {
            generations_url: format!("{root}images/generations"),
            edits_url: format!("{root}images/edits"),
            api: config.api_client(&Self::UPSTREAM)?,
        })
    }
}

#[async_trait]
impl UpstreamAdapter for XaiProvider {
    const UPSTREAM: Upstream = Upstream::new(PROVIDER_ID, DEFAULT_BASE_URL);

    fn api(&self) -> &ApiClient {
        &self.api
    }

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
