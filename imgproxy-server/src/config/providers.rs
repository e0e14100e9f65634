//! The `[providers]` section: one table per built-in family, plus the
//! `[[providers.compatible]]` endpoints, and how they and each family's environment variables
//! become the providers to start.

use std::time::Duration;

use anyhow::Context as _;
use secrecy::SecretString;
use serde::Deserialize;

use super::{Env, ProviderTable};

const DEFAULT_UPSTREAM_TIMEOUT_SECS: u64 = 300;

/// The provider families imgproxy ships, with the environment variables that configure them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    /// OpenAI, or any OpenAI-compatible endpoint.
    OpenAI,
    /// Google Gemini API.
    Gemini,
    /// Replicate.
    Replicate,
    /// xAI.
    Xai,
    /// Black Forest Labs.
    Bfl,
    /// fal.ai queue.
    Fal,
    /// Together AI.
    Together,
}

impl ProviderKind {
    /// Every built-in family, in the order providers are registered.
    pub const ALL: [Self; 7] = [
        Self::OpenAI,
        Self::Gemini,
        Self::Replicate,
        Self::Xai,
        Self::Bfl,
        Self::Fal,
        Self::Together,
    ];

    /// The provider name catalog entries use.
    pub fn name(self) -> &'static str {
        match self {
            Self::OpenAI => "openai",
            Self::Gemini => "gemini",
            Self::Replicate => "replicate",
            Self::Xai => "xai",
            Self::Bfl => "bfl",
            Self::Fal => "fal",
            Self::Together => "together",
        }
    }

    /// Environment variables holding the key, first match wins.
    pub fn key_vars(self) -> &'static [&'static str] {
        match self {
            Self::OpenAI => &["OPENAI_API_KEY"],
            Self::Gemini => &[
                "GEMINI_API_KEY",
                "GOOGLE_API_KEY",
                "GOOGLE_GENERATIVE_AI_API_KEY",
            ],
            Self::Replicate => &["REPLICATE_API_TOKEN"],
            Self::Xai => &["XAI_API_KEY"],
            Self::Bfl => &["BFL_API_KEY"],
            Self::Fal => &["FAL_KEY"],
            Self::Together => &["TOGETHER_API_KEY"],
        }
    }

    /// The environment variable that moves the endpoint.
    pub fn base_url_var(self) -> &'static str {
        match self {
            Self::OpenAI => "OPENAI_BASE_URL",
            Self::Gemini => "GEMINI_BASE_URL",
            Self::Replicate => "REPLICATE_BASE_URL",
            Self::Xai => "XAI_BASE_URL",
            Self::Bfl => "BFL_BASE_URL",
            Self::Fal => "FAL_BASE_URL",
            Self::Together => "TOGETHER_BASE_URL",
        }
    }
}

/// Upstream providers: one table per built-in family, plus OpenAI-compatible endpoints.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProvidersConfig {
    /// OpenAI.
    pub openai: Option<ProviderTable>,
    /// Google Gemini API.
    pub gemini: Option<ProviderTable>,
    /// Replicate.
    pub replicate: Option<ProviderTable>,
    /// xAI.
    pub xai: Option<ProviderTable>,
    /// Black Forest Labs.
    pub bfl: Option<ProviderTable>,
    /// fal.ai.
    pub fal: Option<ProviderTable>,
    /// Together AI.
    pub together: Option<ProviderTable>,
    /// Other OpenAI-compatible endpoints, each a provider of its own `name`.
    pub compatible: Vec<ProviderTable>,
}

/// One provider to start.
#[derive(Debug)]
pub struct ProviderSettings {
    /// Its family.
    pub kind: ProviderKind,
    /// Provider name catalog entries use.
    pub name: String,
    /// Base URL; `None` means the family's default.
    pub base_url: Option<String>,
    /// API key.
    pub api_key: SecretString,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Cap on calls in flight.
    pub max_concurrent: Option<usize>,
}

impl ProvidersConfig {
    fn take(&mut self, kind: ProviderKind) -> ProviderTable {
        let table = match kind {
            ProviderKind::OpenAI => &mut self.openai,
            ProviderKind::Gemini => &mut self.gemini,
            ProviderKind::Replicate => &mut self.replicate,
            ProviderKind::Xai => &mut self.xai,
            ProviderKind::Bfl => &mut self.bfl,
            ProviderKind::Fal => &mut self.fal,
            ProviderKind::Together => &mut self.together,
        };
        table.take().unwrap_or_default()
    }

    /// The providers to start: each built-in family that has a key (from its environment
    /// variables, else its table), in order, then the compatible endpoints.
    pub(super) fn settings(mut self, env: &dyn Env) -> anyhow::Result<Vec<ProviderSettings>> {
        let mut providers = Vec::new();
        for kind in ProviderKind::ALL {
            let table = self.take(kind);
            let key = kind
                .key_vars()
                .iter()
                .find_map(|var| env.var(var))
                .map(SecretString::from);
            let Some(api_key) = key.map_or_else(|| table.key(kind.name(), env), |k| Ok(Some(k)))?
            else {
                continue;
            };
            let base_url = env.over(kind.base_url_var(), table.base_url.clone())?;
            providers.push(table.start(kind, kind.name().to_owned(), base_url, api_key));
        }
        for table in self.compatible {
            let name = table
                .name
                .clone()
                .context("every [[providers.compatible]] needs a `name`")?;
            let base_url = table
                .base_url
                .clone()
                .with_context(|| format!("provider `{name}` needs a `base_url`"))?;
            let api_key = table
                .key(&name, env)?
                .with_context(|| format!("provider `{name}` needs `api_key` or `api_key_env`"))?;
            providers.push(table.start(ProviderKind::OpenAI, name, Some(base_url), api_key));
        }
        Ok(providers)
    }
}

impl ProviderTable {
    /// The key this table gives, inline or through `api_key_env`.
    fn key(&self, name: &str, env: &dyn Env) -> anyhow::Result<Option<SecretString>> {
        match (&self.api_key, &self.api_key_env) {
            (Some(key), _) => Ok(Some(key.clone())),
            (None, Some(var)) => {
                env.var(var)
                    .map(SecretString::from)
                    .map(Some)
                    .with_context(|| {
                        format!("provider `{name}`: environment variable {var} is not set")
                    })
            }
            (None, None) => Ok(None),
        }
    }

    /// The provider this table, under `name`, starts.
    fn start(
        self,
        kind: ProviderKind,
        name: String,
        base_url: Option<String>,
        api_key: SecretString,
    ) -> ProviderSettings {
        ProviderSettings {
            kind,
            name,
            base_url,
            api_key,
            timeout: Duration::from_secs(
                self.timeout_secs.unwrap_or(DEFAULT_UPSTREAM_TIMEOUT_SECS),
            ),
            max_concurrent: self.max_concurrent,
        }
    }
}
