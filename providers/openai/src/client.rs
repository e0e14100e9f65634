//! The provider itself: its configuration, the HTTP client and the [`ImageProvider`] impl.
//! Everything that touches the network lives here; building requests and reading answers is
//! the job of `convert` and `edits`, mapping failures that of `errors`.

use std::time::Duration;

use async_trait::async_trait;
use imgproxy_core::{upstream, Generation, ImageProvider, ProviderError, ProviderRequest};
use reqwest::{
    header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION},
    RequestBuilder,
};
use secrecy::{ExposeSecret as _, SecretString};

use crate::{
    convert::{self, ImageSource},
    edits, errors, stream, PROVIDER_ID,
};

/// OpenAI's API root.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";
/// How long one upstream call may take. GPT image models at high quality can take minutes.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
/// The largest image downloaded from a `url` item.
pub const DEFAULT_MAX_DOWNLOAD_BYTES: usize = 50 * 1024 * 1024;

/// Settings of one OpenAI (or OpenAI-compatible) upstream.
#[derive(Debug, Clone)]
pub struct OpenAIConfig {
    /// Provider instance name that catalog entries refer to (default `openai`). Another name
    /// with another base URL and key serves an OpenAI-compatible gateway.
    pub name: String,
    /// API root, for example `https://api.openai.com/v1`; a trailing slash is fine.
    pub base_url: String,
    /// Sent as `Authorization: Bearer <key>`.
    pub api_key: SecretString,
    /// Limit on each upstream request, including reading its body (default 300 s).
    pub timeout: Duration,
    /// Sent as `OpenAI-Organization` when set.
    pub organization: Option<String>,
    /// Sent as `OpenAI-Project` when set.
    pub project: Option<String>,
    /// Largest image downloaded from a `url` item (default 50 MiB).
    pub max_download_bytes: usize,
}

impl OpenAIConfig {
    /// The settings for OpenAI itself with `api_key`, everything else at its default.
    pub fn new(api_key: impl Into<SecretString>) -> Self {
        Self {
            name: PROVIDER_ID.to_owned(),
            base_url: DEFAULT_BASE_URL.to_owned(),
            api_key: api_key.into(),
            timeout: DEFAULT_TIMEOUT,
            organization: None,
            project: None,
            max_download_bytes: DEFAULT_MAX_DOWNLOAD_BYTES,
        }
    }
}

/// An [`ImageProvider`] speaking OpenAI's Images API.
///
/// It never retries: an upstream failure after the image was made (a timeout, a dropped
/// connection) is ambiguous, and a retry could bill the generation twice.
#[derive(Debug)]
pub struct OpenAIProvider {
    name: String,
    generations_url: String,
    /// Where calls with reference images go.
    edits_url: String,
    /// Auth and organisation headers, sent to the API only, never to download URLs.
    api_headers: HeaderMap,
    /// Kept to scrub it from upstream messages.
    api_key: SecretString,
    max_download_bytes: usize,
    client: reqwest::Client,
}

impl OpenAIProvider {
    /// Builds the provider and its HTTP client (rustls, `config.timeout`).
    pub fn new(config: OpenAIConfig) -> Result<Self, ProviderError> {
        let api_headers = api_headers(&config)?;
        let client = upstream::http_client(config.timeout)?;
        let base_url = config.base_url.trim_end_matches('/');
        Ok(Self {
            generations_url: format!("{base_url}/images/generations"),
            edits_url: format!("{base_url}/images/edits"),
            name: config.name,
            api_headers,
            api_key: config.api_key,
            max_download_bytes: config.max_download_bytes,
            client,
        })
    }
}

#[async_trait]
impl ImageProvider for OpenAIProvider {
    fn name(&self) -> &str {
        &self.name
    }

    async fn generate(&self, request: ProviderRequest<'_>) -> Result<Generation, ProviderError> {
        self.try_generate(request)
            .await
            .map_err(|e| e.without_secret(self.api_key.expose_secret()))
    }
}

impl OpenAIProvider {
    async fn try_generate(
        &self,
        request: ProviderRequest<'_>,
    ) -> Result<Generation, ProviderError> {
        let model = request.upstream_model();
        let references = request.references.len();
        tracing::debug!(provider = %self.name, model, n = request.n, references, "calling upstream");
        // Reference images need the edits endpoint: generations would silently ignore them.
        let call = if references == 0 {
            self.api_post(&self.generations_url)
                .json(&convert::generation_body(&request))
        } else {
            self.api_post(&self.edits_url)
                .multipart(edits::form(&request)?)
        };
        let response = self.send(call, model).await?;
        let parsed = match request
            .partials
            .filter(|_| convert::streamed_partials(&request).is_some())
        {
            Some(partials) => stream::read(response, partials, model).await?,
            None => {
                let answer = response.bytes().await.map_err(upstream::transport_error)?;
                convert::parse_response(&answer)?
            }
        };

        let output_format = parsed
            .meta
            .output_format
            .as_deref()
            .or_else(|| request.request.param_str("output_format"));
        let mut images = Vec::with_capacity(parsed.images.len());
        // Sequential on purpose: URL items come from DALL·E-style gateways, typically n=1.
        for image in parsed.images {
            let (bytes, content_type) = match image.source {
                ImageSource::Inline(bytes) => (bytes, None),
                // No API headers go to the download host: it must never see the key.
                ImageSource::Url(url) => {
                    upstream::download(&self.client, &url, self.max_download_bytes).await?
                }
            };
            images.push(convert::generated_image(
                bytes,
                content_type.as_deref(),
                output_format,
                image.revised_prompt,
            ));
        }
        Ok(Generation {
            images,
            usage: parsed.usage,
            meta: parsed.meta,
        })
    }

    /// A POST to the API at `url`, carrying the API headers; the caller adds the body.
    fn api_post(&self, url: &str) -> RequestBuilder {
        self.client.post(url).headers(self.api_headers.clone())
    }

    /// Sends an API call and returns the 2xx response, or the mapped upstream error.
    async fn send(
        &self,
        call: RequestBuilder,
        model: &str,
    ) -> Result<reqwest::Response, ProviderError> {
        let response = call.send().await.map_err(upstream::transport_error)?;
        let status = response.status();
        if !status.is_success() {
            let retry_after = upstream::retry_after(response.headers());
            // The status alone decides the error kind, so an unreadable body is no worse than
            // an empty one.
            let body = response.bytes().await.unwrap_or_default();
            return Err(errors::error_from_status(
                status.as_u16(),
                retry_after,
                &body,
                model,
            ));
        }
        Ok(response)
    }
}

/// The headers of every API call: bearer auth (marked sensitive so that it never shows in
/// `Debug` output) and the optional organisation and project.
fn api_headers(config: &OpenAIConfig) -> Result<HeaderMap, ProviderError> {
    let mut headers = HeaderMap::new();
    // The message must not quote the value: it is the key.
    let mut auth = HeaderValue::try_from(format!("Bearer {}", config.api_key.expose_secret()))
        .map_err(|_| upstream::failed("the API key contains characters not allowed in a header"))?;
    auth.set_sensitive(true);
    headers.insert(AUTHORIZATION, auth);
    for (name, value) in [
        ("openai-organization", &config.organization),
        ("openai-project", &config.project),
    ] {
        if let Some(value) = value {
            let value = HeaderValue::try_from(value.as_str())
                .map_err(|_| upstream::failed(format!("`{name}` is not a valid header value")))?;
            headers.insert(HeaderName::from_static(name), value);
        }
    }
    Ok(headers)
}
