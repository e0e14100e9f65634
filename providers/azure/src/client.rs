//! The provider itself: its configuration, the provider type and its [`UpstreamAdapter`].
//! Everything that touches the network lives here, through the OpenAI crate's call of the
//! Images API; where a call goes and what a failure means is `convert`'s job.

use std::{collections::BTreeMap, sync::Arc};

use imgproxy_core::{
    upstream::{
        failed, AdapterConfig, ApiClient, KeyHeader, Outcome, Upstream, UpstreamAdapter,
        UpstreamProvider, UpstreamSettings,
    },
    ProviderError, ProviderRequest,
};
use imgproxy_provider_openai::{images_call, DEFAULT_TIMEOUT};

use crate::{
    convert::{self, Routing},
    DEFAULT_API_VERSION, PROVIDER_ID,
};

/// Settings of one Azure OpenAI resource.
#[derive(Debug, Clone)]
pub struct AzureConfig {
    /// The key (sent as `api-key: <key>`), the resource endpoint
    /// (`https://<resource>.openai.azure.com`; required, there is no default), the timeout
    /// (default 300 s, as OpenAI's) and the largest body read.
    pub upstream: UpstreamSettings,
    /// A dated `api-version` selects the deployment form,
    /// `/openai/deployments/{deployment}/images/...?api-version=...`;
    /// [`V1_API`](crate::V1_API) selects the v1 API, `/openai/v1/images/...`. `None` is
    /// [`DEFAULT_API_VERSION`].
    pub api_version: Option<String>,
    /// Deployment names by upstream model id, for models not deployed under their own id.
    pub deployments: BTreeMap<String, String>,
}

impl AzureConfig {
    /// The resource at `endpoint` keyed with `api_key`: the deployment form at the default
    /// `api-version`, every model deployed under its own id.
    pub fn new(api_key: impl Into<secrecy::SecretString>, endpoint: &str) -> Self {
        Self::from(UpstreamSettings::new(api_key).with_base_url(endpoint))
    }
}

impl From<UpstreamSettings> for AzureConfig {
    /// The resource `upstream` names (its base URL is the endpoint), at the default
    /// `api-version`, every model deployed under its own id.
    fn from(upstream: UpstreamSettings) -> Self {
        Self {
            upstream,
            api_version: None,
            deployments: BTreeMap::new(),
        }
    }
}

impl AdapterConfig<Azure> for AzureConfig {
    /// The provider; every key's client carries the routing, which `try_generate` reads.
    fn start(mut self) -> Result<AzureProvider, ProviderError> {
        let endpoint = self.upstream.base_url.take().ok_or_else(|| {
            failed("the `azure` provider needs its resource endpoint as its base URL")
        })?;
        self.upstream.base_url = Some(resource_root(&endpoint).to_owned());
        let api_version = self.api_version.as_deref().unwrap_or(DEFAULT_API_VERSION);
        let routing = Arc::new(Routing::new(api_version, self.deployments)?);
        let keys = self
            .upstream
            .api_clients(&Azure::UPSTREAM)?
            .into_iter()
            .map(|api| api.with_adapter_settings(Arc::clone(&routing)))
            .collect();
        AzureProvider::named(PROVIDER_ID, keys)
    }
}

/// The resource endpoint in `endpoint`, without a trailing `/openai` or `/openai/v1` (the v1
/// API's base URL is often written so): each form adds its own path below the resource.
fn resource_root(endpoint: &str) -> &str {
    let endpoint = endpoint.trim_end_matches('/');
    endpoint
        .strip_suffix("/openai/v1")
        .or_else(|| endpoint.strip_suffix("/openai"))
        .unwrap_or(endpoint)
}

/// The Azure OpenAI provider, built from an [`AzureConfig`] by [`UpstreamProvider::new`].
pub type AzureProvider = UpstreamProvider<Azure>;

/// The [`UpstreamAdapter`] of Azure OpenAI's image generation.
///
/// It never retries: a failure after the image was made is ambiguous, and a retry could bill
/// the generation twice.
#[derive(Debug)]
pub enum Azure {}

impl UpstreamAdapter for Azure {
    // No default endpoint: every resource has its own. The key goes in `api-key`
    // (providers-2.md §10.1), marked sensitive like every key header.
    const UPSTREAM: Upstream = Upstream::new(PROVIDER_ID, "")
        .key_header(KeyHeader::Named("api-key"))
        .timeout(DEFAULT_TIMEOUT)
        .genai_name("azure.ai.openai");

    async fn try_generate(api: &ApiClient, call: ProviderRequest<'_>) -> Outcome {
        // `AzureConfig` puts the routing on every client; a provider started from bare
        // `UpstreamSettings` routes by the defaults.
        let routing = api
            .adapter_settings::<Routing>()
            .cloned()
            .unwrap_or_default();
        let route = routing.route(api.root().as_str(), call.upstream_model());
        images_call(api, call, &route, convert::error_from_status).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resource_endpoint_loses_the_api_paths_written_after_it() {
        for written in [
            "https://r.openai.azure.com",
            "https://r.openai.azure.com/",
            "https://r.openai.azure.com/openai",
            "https://r.openai.azure.com/openai/v1/",
        ] {
            assert_eq!(resource_root(written), "https://r.openai.azure.com");
        }
    }

    #[test]
    fn an_endpoint_is_required() {
        let mut config = AzureConfig::new("k", "https://r.openai.azure.com");
        config.upstream.base_url = None;
        let error = AzureProvider::new(config).unwrap_err();
        assert!(error.to_string().contains("resource endpoint"), "{error}");
    }
}
