//! The provider itself: its configuration, the HTTP client and the [`ImageProvider`] impl.
//! Everything that touches the network lives here; what goes into a request and how answers
//! are read is `convert`'s job.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use imgproxy_core::{
    upstream::{self, failed, transport_error},
    Generation, ImageProvider, ProviderError, ProviderRequest,
};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use secrecy::{ExposeSecret as _, SecretString};

use crate::{convert, error, DEFAULT_BASE_URL, PROVIDER_ID};

/// How long one upstream call may take by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// The header that carries the API key.
const API_KEY_HEADER: &str = "x-goog-api-key";

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
    /// The key header, marked sensitive so that it never shows in `Debug` output.
    api_headers: HeaderMap,
    /// Kept to scrub it from upstream messages.
    api_key: SecretString,
    max_body_bytes: usize,
    client: reqwest::Client,
}

impl GeminiProvider {
    /// Builds the provider and its HTTP client (rustls, `config.timeout`).
    pub fn new(config: GeminiConfig) -> Result<Self, ProviderError> {
        // The message must not quote the value: it is the key.
        let mut key = HeaderValue::try_from(config.api_key.expose_secret())
            .map_err(|_| failed("the API key contains characters not allowed in a header"))?;
        key.set_sensitive(true);
        let mut api_headers = HeaderMap::new();
        api_headers.insert(HeaderName::from_static(API_KEY_HEADER), key);
        Ok(Self {
            models_url: format!("{}/v1beta/models/", config.base_url.trim_end_matches('/')),
            api_headers,
            api_key: config.api_key,
            max_body_bytes: config.max_download_bytes,
            client: upstream::http_client(config.timeout)?,
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
            .map_err(|e| e.without_secret(self.api_key.expose_secret()))
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
        let response = self
            .client
            .post(url)
            .headers(self.api_headers.clone())
            .json(&body)
            .send()
            .await
            .map_err(transport_error)?;
        let status = response.status();
        if !status.is_success() {
            let wait = upstream::retry_after(response.headers());
            // The status alone decides the error kind, so an unreadable body is no worse than
            // an empty one.
            let body = self.read_body(response).await.unwrap_or_default();
            return Err(error::error_from_status(
                status.as_u16(),
                wait,
                &body,
                model,
            ));
        }
        let body = self.read_body(response).await?;
        convert::parse_response(&body)
    }

    /// Reads a response body within `max_body_bytes`, counted as it streams since
    /// `Content-Length` may be absent or wrong.
    async fn read_body(&self, mut response: reqwest::Response) -> Result<Bytes, ProviderError> {
        let limit = self.max_body_bytes;
        let too_large = || {
            failed(format!(
                "the upstream response is larger than {limit} bytes"
            ))
        };
        if response
            .content_length()
            .is_some_and(|length| length > limit as u64)
        {
            return Err(too_large());
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
            if bytes.len() + chunk.len() > limit {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(bytes))
    }
}
