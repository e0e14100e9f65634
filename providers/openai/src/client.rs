//! The provider itself: its configuration, the provider type and its [`UpstreamAdapter`].
//! Everything that touches the network lives here; building requests and reading answers is
//! the job of `convert` and `edits`, mapping failures that of `errors`.

use std::time::Duration;

use imgproxy_core::{
    upstream::{
        self, AdapterConfig, ApiClient, Outcome, Upstream, UpstreamAdapter, UpstreamProvider,
        UpstreamSettings,
    },
    Generation, ProviderError, ProviderRequest,
};

use crate::{
    compat, convert, edits,
    errors::{self, ErrorMapping},
    stream, PROVIDER_ID,
};

/// OpenAI's API root.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";
/// How long one upstream call may take. GPT image models at high quality can take minutes.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
/// The largest image downloaded from a `url` item.
pub const DEFAULT_MAX_DOWNLOAD_BYTES: usize = upstream::DEFAULT_MAX_DOWNLOAD_BYTES;

/// Settings of one OpenAI (or OpenAI-compatible) upstream.
#[derive(Debug, Clone)]
pub struct OpenAIConfig {
    /// Provider instance name that catalog entries refer to (default `openai`). Another name
    /// with another base URL and key serves an OpenAI-compatible gateway.
    pub name: String,
    /// The key (sent as `Authorization: Bearer <key>`), the API root (for example
    /// `https://api.openai.com/v1`), the timeout (default 300 s) and the largest image
    /// downloaded from a `url` item.
    pub upstream: UpstreamSettings,
    /// Sent as `OpenAI-Organization` when set.
    pub organization: Option<String>,
    /// Sent as `OpenAI-Project` when set.
    pub project: Option<String>,
}

impl OpenAIConfig {
    /// The settings for OpenAI itself with `api_key`, everything else at its default.
    pub fn new(api_key: impl Into<secrecy::SecretString>) -> Self {
        Self::from(UpstreamSettings::new(api_key))
    }
}

impl From<UpstreamSettings> for OpenAIConfig {
    /// OpenAI itself, or a compatible endpoint, reached as `upstream` says; no organisation or
    /// project.
    fn from(upstream: UpstreamSettings) -> Self {
        Self {
            name: PROVIDER_ID.to_owned(),
            upstream,
            organization: None,
            project: None,
        }
    }
}

impl AdapterConfig<OpenAI> for OpenAIConfig {
    /// The provider under the configured name; the organisation and project headers go with
    /// every API call, as the key does, and never to download URLs.
    fn start(self) -> Result<OpenAIProvider, ProviderError> {
        let with_headers = |mut api: ApiClient| {
            for (name, value) in [
                ("openai-organization", &self.organization),
                ("openai-project", &self.project),
            ] {
                if let Some(value) = value {
                    api = api.with_header(name, value)?;
                }
            }
            Ok(api)
        };
        let keys = self
            .upstream
            .api_clients(&OpenAI::UPSTREAM)?
            .into_iter()
            .map(with_headers)
            .collect::<Result<_, ProviderError>>()?;
        OpenAIProvider::named(self.name, keys)
    }
}

/// The OpenAI provider, built from an [`OpenAIConfig`] by [`UpstreamProvider::new`].
pub type OpenAIProvider = UpstreamProvider<OpenAI>;

/// The [`UpstreamAdapter`] of OpenAI's Images API.
///
/// It never retries: an upstream failure after the image was made (a timeout, a dropped
/// connection) is ambiguous, and a retry could bill the generation twice.
#[derive(Debug)]
pub enum OpenAI {}

impl UpstreamAdapter for OpenAI {
    const UPSTREAM: Upstream =
        Upstream::new(PROVIDER_ID, DEFAULT_BASE_URL).timeout(DEFAULT_TIMEOUT);

    async fn try_generate(api: &ApiClient, request: ProviderRequest<'_>) -> Outcome {
        let route = ImagesRoute {
            generations: api.url("images/generations"),
            edits: api.url("images/edits"),
            model: request.upstream_model().to_owned(),
        };
        images_call(api, request, &route, errors::error_from_status).await
    }
}

/// Where one call of OpenAI's Images API goes, and the model name it carries: OpenAI's own
/// layout (below the API root, under the catalog's upstream id), or that of a service serving
/// the same API under other URLs and names (Azure's deployments).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImagesRoute {
    /// Where a call without reference images is posted, as JSON.
    pub generations: String,
    /// Where a call with reference images is posted, as a multipart form.
    pub edits: String,
    /// The `model` the body names.
    pub model: String,
}

/// One call of OpenAI's Images API through `api`, where `route` says; `to_error` reads its
/// failures. The upstream's wire is OpenAI's throughout: the body, the edits form, streamed
/// partial images, the answer.
pub async fn images_call(
    api: &ApiClient,
    request: ProviderRequest<'_>,
    route: &ImagesRoute,
    to_error: ErrorMapping,
) -> Outcome {
    let model = route.model.as_str();
    let references = request.references.len();
    tracing::debug!(provider = %request.request.model.provider, model, n = request.n, references, "calling upstream");
    // Reference images need the edits endpoint: generations would silently ignore them.
    let call = if references == 0 {
        api.post(&route.generations)
            .json(&convert::generation_body(&request, model))
    } else {
        api.post(&route.edits)
            .multipart(edits::form(&request, model)?)
    };
    let response = api
        .send(call, |status, wait, body| {
            to_error(status, wait, body, model)
        })
        .await?;
    let parsed = match request
        .partials
        .filter(|_| convert::streamed_partials(&request).is_some())
    {
        Some(partials) => {
            stream::read(response, partials, model, to_error, api.max_body_bytes()).await?
        }
        None => {
            let status = response.status().as_u16();
            let answer = api.read_body(response).await?;
            convert::parse_response(&answer).map_err(|malformed| {
                // Some services refuse with a success status and the error envelope (Azure's
                // older content filter answer, providers-2.md §10.4): that is their error.
                let error = compat::read_error(&answer);
                if error.message().is_some() || error.code().is_some() {
                    to_error(status, None, &answer, model)
                } else {
                    malformed
                }
            })?
        }
    };

    let output_format = parsed
        .extra
        .output_format
        .as_deref()
        .or_else(|| request.request.param_str("output_format"));
    let mut images = Vec::with_capacity(parsed.images.len());
    // Sequential on purpose: URL items come from DALL·E-style gateways, typically n=1.
    for image in parsed.images {
        // No API headers go to the download host: it must never see the key.
        let (bytes, content_type) = api.fetch(image.source).await?;
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
        meta: parsed.extra,
    })
}
