//! The server's configuration: one typed, strict struct read from an optional TOML file,
//! overlaid with environment variables and command-line flags (flags > env > file > default).

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::Context as _;
use imgproxy_core::ModelSpec;
use secrecy::SecretString;
use serde::Deserialize;

/// Listen address.
pub const ENV_LISTEN: &str = "IMGPROXY_LISTEN";
/// Config file path.
pub const ENV_CONFIG: &str = "IMGPROXY_CONFIG";
/// Data folder.
pub const ENV_DATA_DIR: &str = "IMGPROXY_DATA_DIR";
/// Master key: when set, every API request must carry it as a Bearer token.
pub const ENV_MASTER_KEY: &str = "IMGPROXY_MASTER_KEY";
/// Base URL under which clients reach this server (for image URLs).
pub const ENV_PUBLIC_URL: &str = "IMGPROXY_PUBLIC_URL";
/// Largest request body in bytes.
pub const ENV_MAX_BODY_BYTES: &str = "IMGPROXY_MAX_BODY_BYTES";
/// OpenAI API key; enables the OpenAI models.
pub const ENV_OPENAI_API_KEY: &str = "OPENAI_API_KEY";
/// OpenAI endpoint.
pub const ENV_OPENAI_BASE_URL: &str = "OPENAI_BASE_URL";

const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
const DEFAULT_MAX_BODY_BYTES: usize = 25 * 1024 * 1024;
const DEFAULT_UPSTREAM_TIMEOUT_SECS: u64 = 300;

/// Everything the server can be told.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to listen on.
    pub listen: Option<SocketAddr>,
    /// Folder for images (and, later, the database).
    pub data_dir: Option<PathBuf>,
    /// Base URL clients use to reach this server; image URLs start with it.
    pub public_url: Option<String>,
    /// Master key (prefer the environment variable).
    pub master_key: Option<SecretString>,
    /// Largest request body in bytes.
    pub max_body_bytes: Option<usize>,
    /// Model used when a request names none.
    pub default_model: Option<String>,
    /// Upstream providers.
    pub providers: ProvidersConfig,
    /// Catalog entries to add, or to replace by id.
    pub models: Vec<ModelSpec>,
    /// Requests for the key model go to the value model (e.g. a retired model's stand-in).
    pub remap: BTreeMap<String, String>,
}

/// Upstream providers.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProvidersConfig {
    /// OpenAI itself (also enabled by `OPENAI_API_KEY`).
    pub openai: Option<OpenAICompatible>,
    /// Other OpenAI-compatible endpoints, each a provider of its own name.
    pub compatible: Vec<OpenAICompatible>,
}

/// An OpenAI-compatible endpoint.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpenAICompatible {
    /// Provider name that catalog entries use (`openai` for the `[providers.openai]` table).
    pub name: Option<String>,
    /// API base URL, e.g. `https://api.openai.com/v1`.
    pub base_url: Option<String>,
    /// API key, inline.
    pub api_key: Option<SecretString>,
    /// Name of an environment variable holding the API key.
    pub api_key_env: Option<String>,
    /// Upstream timeout in seconds.
    pub timeout_secs: Option<u64>,
}

/// The configuration after layering, with defaults applied.
#[derive(Debug)]
pub struct Settings {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Data folder.
    pub data_dir: PathBuf,
    /// Explicit public URL.
    pub public_url: Option<String>,
    /// Master key.
    pub master_key: Option<SecretString>,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Default model.
    pub default_model: Option<String>,
    /// OpenAI-compatible providers to start, `openai` first.
    pub openai_providers: Vec<ProviderSettings>,
    /// Catalog additions.
    pub models: Vec<ModelSpec>,
    /// Model remaps.
    pub remap: BTreeMap<String, String>,
}

/// One OpenAI-compatible provider to start.
#[derive(Debug)]
pub struct ProviderSettings {
    /// Provider name.
    pub name: String,
    /// Base URL.
    pub base_url: String,
    /// API key.
    pub api_key: SecretString,
    /// Upstream timeout.
    pub timeout: Duration,
}

/// Reads the environment; injected so that tests never mutate the process environment.
pub trait Env {
    /// The value of `name`, if set and not empty.
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl Config {
    /// Parses a TOML config; errors name the offending field.
    pub fn from_toml(text: &str) -> anyhow::Result<Self> {
        let deserializer =
            toml::de::Deserializer::parse(text).context("config is not valid TOML")?;
        serde_path_to_error::deserialize(deserializer)
            .map_err(|e| anyhow::anyhow!("config field `{}`: {}", e.path(), e.inner()))
    }

    /// Reads the config file at `path`.
    pub fn load(path: &std::path::Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        Self::from_toml(&text).with_context(|| format!("in config {}", path.display()))
    }

    /// Layers flags (already merged with their env vars by clap) and env over this file.
    pub fn into_settings(
        self,
        listen: Option<SocketAddr>,
        data_dir: Option<PathBuf>,
        env: &dyn Env,
    ) -> anyhow::Result<Settings> {
        let listen = match listen.or(self.listen) {
            Some(addr) => addr,
            None => DEFAULT_LISTEN.parse().context("default listen address")?,
        };
        let max_body_bytes = match env.var(ENV_MAX_BODY_BYTES) {
            Some(text) => text
                .parse()
                .with_context(|| format!("{ENV_MAX_BODY_BYTES} is not a number"))?,
            None => self.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES),
        };

        let mut openai_providers = Vec::new();
        let openai = self.providers.openai.unwrap_or_default();
        let openai_key = env
            .var(ENV_OPENAI_API_KEY)
            .map(SecretString::from)
            .or(openai.api_key.clone());
        if let Some(api_key) = openai_key {
            openai_providers.push(ProviderSettings {
                name: imgproxy_provider_openai::PROVIDER_ID.to_owned(),
                base_url: env
                    .var(ENV_OPENAI_BASE_URL)
                    .or(openai.base_url)
                    .unwrap_or_else(|| imgproxy_provider_openai::DEFAULT_BASE_URL.to_owned()),
                api_key,
                timeout: Duration::from_secs(
                    openai.timeout_secs.unwrap_or(DEFAULT_UPSTREAM_TIMEOUT_SECS),
                ),
            });
        }
        for compatible in self.providers.compatible {
            let name = compatible
                .name
                .context("every [[providers.compatible]] needs a `name`")?;
            let base_url = compatible
                .base_url
                .with_context(|| format!("provider `{name}` needs a `base_url`"))?;
            let api_key = match (&compatible.api_key, &compatible.api_key_env) {
                (Some(key), _) => key.clone(),
                (None, Some(var)) => SecretString::from(env.var(var).with_context(|| {
                    format!("provider `{name}`: environment variable {var} is not set")
                })?),
                (None, None) => anyhow::bail!("provider `{name}` needs `api_key` or `api_key_env`"),
            };
            openai_providers.push(ProviderSettings {
                name,
                base_url,
                api_key,
                timeout: Duration::from_secs(
                    compatible
                        .timeout_secs
                        .unwrap_or(DEFAULT_UPSTREAM_TIMEOUT_SECS),
                ),
            });
        }

        Ok(Settings {
            listen,
            data_dir: data_dir
                .or(self.data_dir)
                .unwrap_or_else(|| PathBuf::from("data")),
            public_url: env
                .var(ENV_PUBLIC_URL)
                .or(self.public_url)
                .map(|u| u.trim_end_matches('/').to_owned()),
            master_key: env
                .var(ENV_MASTER_KEY)
                .map(SecretString::from)
                .or(self.master_key),
            max_body_bytes,
            default_model: self.default_model,
            openai_providers,
            models: self.models,
            remap: self.remap,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use secrecy::ExposeSecret as _;

    use super::*;

    struct FakeEnv(HashMap<&'static str, &'static str>);

    impl Env for FakeEnv {
        fn var(&self, name: &str) -> Option<String> {
            self.0.get(name).map(|v| (*v).to_owned())
        }
    }

    #[test]
    fn defaults_without_config_or_env() {
        let settings = Config::default()
            .into_settings(None, None, &FakeEnv(HashMap::new()))
            .unwrap();
        assert_eq!(settings.listen.to_string(), "127.0.0.1:8080");
        assert!(settings.openai_providers.is_empty());
        assert!(settings.master_key.is_none());
    }

    #[test]
    fn openai_is_enabled_by_its_key_and_env_beats_file() {
        let config = Config::from_toml("[providers.openai]\nbase_url = \"http://file\"\n").unwrap();
        let env = FakeEnv(HashMap::from([
            (ENV_OPENAI_API_KEY, "sk-1"),
            (ENV_OPENAI_BASE_URL, "http://env/v1"),
        ]));
        let settings = config.into_settings(None, None, &env).unwrap();
        let openai = &settings.openai_providers[0];
        assert_eq!(
            (openai.name.as_str(), openai.base_url.as_str()),
            ("openai", "http://env/v1")
        );
        assert_eq!(openai.api_key.expose_secret(), "sk-1");
    }

    #[test]
    fn unknown_fields_are_rejected_by_name() {
        let err = Config::from_toml("[providers.openai]\nbase_ur = \"x\"\n").unwrap_err();
        assert!(format!("{err:#}").contains("base_ur"), "{err:#}");
    }

    #[test]
    fn catalog_overrides_and_compatible_providers_parse() {
        let text = r#"
            listen = "127.0.0.1:9000"
            [remap]
            "dall-e-3" = "gpt-image-2"
            [[providers.compatible]]
            name = "gw"
            base_url = "http://gw/v1"
            api_key_env = "GW_KEY"
            [[models]]
            id = "gw-flux"
            provider = "gw"
            upstream = "flux-dev"
            upstream_params = { response_format = "b64_json" }
            [models.pricing]
            per_image = 3
        "#;
        let env = FakeEnv(HashMap::from([("GW_KEY", "k")]));
        let settings = Config::from_toml(text)
            .unwrap()
            .into_settings(None, None, &env)
            .unwrap();
        assert_eq!(settings.listen.port(), 9000);
        assert_eq!(settings.openai_providers[0].name, "gw");
        assert_eq!(settings.models[0].id, "gw-flux");
        assert_eq!(settings.remap["dall-e-3"], "gpt-image-2");
    }

    #[test]
    fn secrets_do_not_show_in_debug() {
        let config = Config::from_toml("master_key = \"super-secret\"").unwrap();
        assert!(!format!("{config:?}").contains("super-secret"));
    }
}
