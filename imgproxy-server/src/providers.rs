//! The provider registry: every built-in provider family in one table, with the environment
//! variables that configure it and how to start its client. A new provider is its crate, one
//! entry in [`PROVIDERS`] and its catalog file; reading its settings lives in `config`,
//! nothing provider-specific lives anywhere else in the server.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use imgproxy_core::{upstream::UpstreamSettings, ImageProvider};
use secrecy::{ExposeSecret as _, SecretString};

/// One built-in provider family.
pub struct ProviderEntry {
    /// The provider name catalog entries use, and the key of its `[providers.<name>]` table.
    pub name: &'static str,
    /// Environment variables holding the key, first match wins.
    pub key_vars: &'static [&'static str],
    /// The environment variable that moves the endpoint.
    pub base_url_var: &'static str,
    /// Builds the client.
    pub start: fn(&ProviderSettings) -> anyhow::Result<Arc<dyn ImageProvider>>,
}

impl std::fmt::Debug for ProviderEntry {
    /// The name says which family; the rest is fixed by it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ProviderEntry").field(&self.name).finish()
    }
}

/// One provider to start.
#[derive(Debug)]
pub struct ProviderSettings {
    /// Its family.
    pub family: &'static ProviderEntry,
    /// Provider name catalog entries use.
    pub name: String,
    /// Base URL; `None` means the family's default.
    pub base_url: Option<String>,
    /// API key: the first of its pool.
    pub api_key: SecretString,
    /// The other keys of its pool.
    pub more_keys: Vec<SecretString>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Largest body read from the upstream.
    pub max_response_bytes: usize,
    /// Cap on calls in flight.
    pub max_concurrent: Option<usize>,
    /// Azure OpenAI's `api-version`; `None` means its default.
    pub api_version: Option<String>,
    /// Azure OpenAI's deployment names by upstream model id.
    pub deployments: BTreeMap<String, String>,
}

impl ProviderSettings {
    /// Builds the client of this provider.
    pub fn start(&self) -> anyhow::Result<Arc<dyn ImageProvider>> {
        (self.family.start)(self)
    }
}

/// Every provider crate takes the same settings (`UpstreamSettings`: keys, base URL, timeout);
/// OpenAI's adds the `name` it serves under (a compatible endpoint's own), Azure's its
/// `api_version` and `deployments`.
macro_rules! start {
    ($settings:expr, $provider:ident, $config:ident $(, $also:ident)*) => {{
        let settings: &ProviderSettings = $settings;
        let mut upstream = UpstreamSettings::new(settings.api_key.expose_secret())
            .with_more_keys(settings.more_keys.iter().cloned())
            .with_timeout(settings.timeout)
            .with_max_download_bytes(settings.max_response_bytes);
        upstream.base_url.clone_from(&settings.base_url);
        let config = <$config>::from(upstream);
        $(let config = $config { $also: settings.$also.clone(), ..config };)*
        Ok(Arc::new(<$provider>::new(config)?) as Arc<dyn ImageProvider>)
    }};
}

/// OpenAI, which also serves every `[[providers.compatible]]` endpoint under its own name.
pub const OPENAI: ProviderEntry = ProviderEntry {
    name: imgproxy_provider_openai::PROVIDER_ID,
    key_vars: &["OPENAI_API_KEY"],
    base_url_var: "OPENAI_BASE_URL",
    start: |settings| {
        use imgproxy_provider_openai::{OpenAIConfig, OpenAIProvider};
        start!(settings, OpenAIProvider, OpenAIConfig, name)
    },
};

/// The built-in families, in the order their providers are registered.
pub const PROVIDERS: &[ProviderEntry] = &[
    OPENAI,
    ProviderEntry {
        name: imgproxy_provider_gemini::PROVIDER_ID,
        key_vars: &[
            "GEMINI_API_KEY",
            "GOOGLE_API_KEY",
            "GOOGLE_GENERATIVE_AI_API_KEY",
        ],
        base_url_var: "GEMINI_BASE_URL",
        start: |settings| {
            use imgproxy_provider_gemini::GeminiProvider;
            start!(settings, GeminiProvider, UpstreamSettings)
        },
    },
    ProviderEntry {
        name: imgproxy_provider_replicate::PROVIDER_ID,
        key_vars: &["REPLICATE_API_TOKEN"],
        base_url_var: "REPLICATE_BASE_URL",
        start: |settings| {
            use imgproxy_provider_replicate::ReplicateProvider;
            start!(settings, ReplicateProvider, UpstreamSettings)
        },
    },
    ProviderEntry {
        name: imgproxy_provider_xai::PROVIDER_ID,
        key_vars: &["XAI_API_KEY"],
        base_url_var: "XAI_BASE_URL",
        start: |settings| {
            use imgproxy_provider_xai::XaiProvider;
            start!(settings, XaiProvider, UpstreamSettings)
        },
    },
    ProviderEntry {
        name: imgproxy_provider_bfl::PROVIDER_ID,
        key_vars: &["BFL_API_KEY"],
        base_url_var: "BFL_BASE_URL",
        start: |settings| {
            use imgproxy_provider_bfl::BflProvider;
            start!(settings, BflProvider, UpstreamSettings)
        },
    },
    ProviderEntry {
        name: imgproxy_provider_fal::PROVIDER_ID,
        key_vars: &["FAL_KEY"],
        base_url_var: "FAL_BASE_URL",
        start: |settings| {
            use imgproxy_provider_fal::FalProvider;
            start!(settings, FalProvider, UpstreamSettings)
        },
    },
    ProviderEntry {
        name: imgproxy_provider_together::PROVIDER_ID,
        key_vars: &["TOGETHER_API_KEY"],
        base_url_var: "TOGETHER_BASE_URL",
        start: |settings| {
            use imgproxy_provider_together::TogetherProvider;
            start!(settings, TogetherProvider, UpstreamSettings)
        },
    },
    ProviderEntry {
        name: imgproxy_provider_ideogram::PROVIDER_ID,
        key_vars: &["IDEOGRAM_API_KEY"],
        base_url_var: "IDEOGRAM_BASE_URL",
        start: |settings| {
            use imgproxy_provider_ideogram::IdeogramProvider;
            start!(settings, IdeogramProvider, UpstreamSettings)
        },
    },
    ProviderEntry {
        name: imgproxy_provider_dashscope::PROVIDER_ID,
        key_vars: &["DASHSCOPE_API_KEY"],
        base_url_var: "DASHSCOPE_BASE_URL",
        start: |settings| {
            use imgproxy_provider_dashscope::DashScopeProvider;
            start!(settings, DashScopeProvider, UpstreamSettings)
        },
    },
    ProviderEntry {
        name: imgproxy_provider_stability::PROVIDER_ID,
        key_vars: &["STABILITY_API_KEY"],
        base_url_var: "STABILITY_BASE_URL",
        start: |settings| {
            use imgproxy_provider_stability::StabilityProvider;
            start!(settings, StabilityProvider, UpstreamSettings)
        },
    },
    ProviderEntry {
        name: imgproxy_provider_recraft::PROVIDER_ID,
        key_vars: &["RECRAFT_API_TOKEN"],
        base_url_var: "RECRAFT_BASE_URL",
        start: |settings| {
            use imgproxy_provider_recraft::RecraftProvider;
            start!(settings, RecraftProvider, UpstreamSettings)
        },
    },
    ProviderEntry {
        name: imgproxy_provider_azure::PROVIDER_ID,
        key_vars: &["AZURE_OPENAI_API_KEY"],
        base_url_var: "AZURE_OPENAI_ENDPOINT",
        start: |settings| {
            use imgproxy_provider_azure::{AzureConfig, AzureProvider};
            anyhow::ensure!(
                settings.base_url.is_some(),
                "Azure OpenAI has no default endpoint: set {} (or `base_url` in [providers.azure]) to the resource's, https://<resource>.openai.azure.com",
                settings.family.base_url_var
            );
            start!(
                settings,
                AzureProvider,
                AzureConfig,
                api_version,
                deployments
            )
        },
    },
];

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn names_and_env_vars_are_unique() {
        let names: BTreeSet<_> = PROVIDERS.iter().map(|p| p.name).collect();
        assert_eq!(names.len(), PROVIDERS.len());
        let vars: Vec<_> = PROVIDERS
            .iter()
            .flat_map(|p| p.key_vars.iter().chain([&p.base_url_var]))
            .collect();
        assert_eq!(vars.iter().collect::<BTreeSet<_>>().len(), vars.len());
    }
}
