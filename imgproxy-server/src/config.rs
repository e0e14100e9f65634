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
/// Database URL: `sqlite://PATH` or `postgres://...`.
pub const ENV_DATABASE_URL: &str = "IMGPROXY_DATABASE_URL";
/// Master key: when set, every API request must carry it as a Bearer token.
pub const ENV_MASTER_KEY: &str = "IMGPROXY_MASTER_KEY";
/// Base URL under which clients reach this server (for image URLs).
pub const ENV_PUBLIC_URL: &str = "IMGPROXY_PUBLIC_URL";
/// Largest request body in bytes.
pub const ENV_MAX_BODY_BYTES: &str = "IMGPROXY_MAX_BODY_BYTES";
/// Hosts (`host` or `host:port`, comma-separated) that reference-image fetches may reach even
/// though they are private or loopback. For tests and trusted internal image hosts.
pub const ENV_FETCH_ALLOW_HOSTS: &str = "IMGPROXY_FETCH_ALLOW_HOSTS";
/// Largest reference image fetched by URL, in bytes.
pub const ENV_FETCH_MAX_BYTES: &str = "IMGPROXY_FETCH_MAX_BYTES";
/// S3 bucket for images; when set, images go to S3 instead of the data dir.
pub const ENV_S3_BUCKET: &str = "IMGPROXY_S3_BUCKET";
/// Endpoint of an S3-compatible server (MinIO, R2, ...).
pub const ENV_S3_ENDPOINT: &str = "IMGPROXY_S3_ENDPOINT";
/// S3 region (else the usual AWS variables, else `us-east-1`).
pub const ENV_S3_REGION: &str = "IMGPROXY_S3_REGION";
/// Secret that signs URLs (at least 32 characters); instances sharing URLs must share it.
pub const ENV_URL_SECRET: &str = "IMGPROXY_URL_SECRET";
/// Lifetime in seconds of the image URLs that `response_format=url` returns.
pub const ENV_URL_TTL_SECS: &str = "IMGPROXY_URL_TTL_SECS";
/// Default model of the URL API (`GET /api/generate`).
pub const ENV_URL_API_DEFAULT_MODEL: &str = "IMGPROXY_URL_API_DEFAULT_MODEL";
/// Tasks one instance runs at once.
pub const ENV_TASK_WORKERS: &str = "IMGPROXY_TASK_WORKERS";
/// Seconds after which a running task whose instance went silent is failed.
pub const ENV_TASK_ABANDONED_SECS: &str = "IMGPROXY_TASK_ABANDONED_SECS";
/// Seconds after a task's end during which its webhook is retried.
pub const ENV_WEBHOOK_WINDOW_SECS: &str = "IMGPROXY_WEBHOOK_WINDOW_SECS";
/// Key id that public (unauthenticated) URL-API requests are billed to; enables public mode.
pub const ENV_PUBLIC_KEY_ID: &str = "IMGPROXY_PUBLIC_KEY_ID";

const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
const DEFAULT_MAX_BODY_BYTES: usize = 25 * 1024 * 1024;
const DEFAULT_UPSTREAM_TIMEOUT_SECS: u64 = 300;
/// Image URLs stay valid a week: long enough to be durable links, short enough to expire.
const DEFAULT_URL_TTL_SECS: u64 = 7 * 24 * 60 * 60;

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

/// Everything the server can be told.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to listen on.
    pub listen: Option<SocketAddr>,
    /// Folder for images and the default SQLite database.
    pub data_dir: Option<PathBuf>,
    /// Database URL (default: `sqlite://<data_dir>/imgproxy.db`).
    pub database_url: Option<String>,
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
    /// Fetching reference images by URL.
    pub fetch: FetchConfig,
    /// Model id → providers in the order they should serve it, when several can.
    pub routing: BTreeMap<String, Vec<String>>,
    /// Model id → total deadline in seconds of its asynchronous upstream jobs.
    pub deadlines: BTreeMap<String, u64>,
    /// Catalog entries to add, or to replace by id and provider.
    pub models: Vec<ModelSpec>,
    /// Requests for the key model go to the value model (e.g. a retired model's stand-in).
    pub remap: BTreeMap<String, String>,
    /// Where images are stored.
    pub storage: StorageConfig,
    /// Signed URLs.
    pub urls: UrlsConfig,
    /// The generation cache.
    pub cache: CacheConfig,
    /// The URL API (`GET /api/generate`).
    pub url_api: UrlApiConfig,
    /// Unauthenticated URL-API access, billed to one key under its own limits.
    pub public: Option<PublicConfig>,
    /// Asynchronous tasks and webhooks.
    pub tasks: TasksConfig,
}

/// Asynchronous tasks and webhooks.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TasksConfig {
    /// Tasks one instance runs at once (default 4).
    pub workers: Option<usize>,
    /// Seconds of silence after which a running task's instance counts as dead (default 30).
    pub abandoned_after_secs: Option<u64>,
    /// Seconds of one webhook attempt (default 10).
    pub webhook_timeout_secs: Option<u64>,
    /// Seconds after a task's end during which its webhook is retried (default 1800).
    pub webhook_window_secs: Option<u64>,
}

/// Image storage: the data dir unless an S3 bucket is set.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// S3 bucket.
    pub s3_bucket: Option<String>,
    /// S3-compatible endpoint.
    pub s3_endpoint: Option<String>,
    /// S3 region.
    pub s3_region: Option<String>,
    /// Bytes of recently used images kept in memory (default 64 MiB; 0 turns it off).
    pub memory_cache_bytes: Option<usize>,
}

/// Signed URLs.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UrlsConfig {
    /// Signing secret (prefer the environment variable); default: generated into the data dir.
    pub secret: Option<SecretString>,
    /// Lifetime of image URLs in seconds (default a week).
    pub ttl_secs: Option<u64>,
}

/// The generation cache.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Serve identical requests from the cache (default true).
    pub enabled: Option<bool>,
}

/// The URL API.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UrlApiConfig {
    /// Model of requests that name none (default `flux-1.1-pro` when a provider serves it).
    pub default_model: Option<String>,
    /// Serve `/{prompt}` and `/{prompt}/{model}` (default true).
    pub path_form: Option<bool>,
}

/// Public URL-API access.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PublicConfig {
    /// The key billed for public requests.
    pub key_id: String,
    /// Public requests per minute, per instance.
    pub rpm: Option<u32>,
    /// Public images per minute, per instance.
    pub images_per_minute: Option<u32>,
    /// Public requests in flight at once, per instance.
    pub max_concurrent: Option<u32>,
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
}

/// One upstream's settings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProviderTable {
    /// Provider name (only for `[[providers.compatible]]`).
    pub name: Option<String>,
    /// API base URL.
    pub base_url: Option<String>,
    /// API key, inline.
    pub api_key: Option<SecretString>,
    /// Name of an environment variable holding the API key.
    pub api_key_env: Option<String>,
    /// Per-request upstream timeout in seconds.
    pub timeout_secs: Option<u64>,
    /// Most calls to this provider in flight at once, across all requests (default: no cap).
    pub max_concurrent: Option<usize>,
}

/// Reference-image fetching.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FetchConfig {
    /// Hosts allowed although private or loopback.
    pub allow_hosts: Vec<String>,
    /// Largest image in bytes.
    pub max_bytes: Option<usize>,
    /// Whole-fetch timeout in seconds.
    pub timeout_secs: Option<u64>,
}

/// What the command line set (each flag already merged with its environment variable by
/// `clap`); every one beats the environment and the file.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    /// The config file to read, if any.
    pub config: Option<PathBuf>,
    /// Address to listen on.
    pub listen: Option<SocketAddr>,
    /// Data folder.
    pub data_dir: Option<PathBuf>,
    /// Database URL.
    pub database_url: Option<String>,
}

/// The configuration after layering, with defaults applied.
#[derive(Debug)]
pub struct Settings {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Data folder.
    pub data_dir: PathBuf,
    /// Database URL.
    pub database_url: String,
    /// Explicit public URL.
    pub public_url: Option<String>,
    /// Master key.
    pub master_key: Option<SecretString>,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Default model.
    pub default_model: Option<String>,
    /// Providers to start.
    pub providers: Vec<ProviderSettings>,
    /// Reference-image fetching.
    pub fetch: FetchConfig,
    /// Routing preferences.
    pub routing: BTreeMap<String, Vec<String>>,
    /// Deadline overrides.
    pub deadlines: BTreeMap<String, u64>,
    /// Catalog additions.
    pub models: Vec<ModelSpec>,
    /// Model remaps.
    pub remap: BTreeMap<String, String>,
    /// S3 storage, if configured.
    pub s3: Option<imgproxy_core::store::S3Location>,
    /// Bytes of recently used images kept in memory.
    pub memory_cache_bytes: usize,
    /// URL signing secret, if configured (else the data dir's).
    pub url_secret: Option<SecretString>,
    /// Lifetime of image URLs.
    pub url_ttl: Duration,
    /// Whether the cache is on.
    pub cache_enabled: bool,
    /// Default model of the URL API.
    pub url_api_default_model: Option<String>,
    /// Whether the path form is served.
    pub path_form: bool,
    /// Public URL-API access.
    pub public: Option<PublicConfig>,
    /// Tasks and webhooks.
    pub tasks: imgproxy_core::tasks::TaskSettings,
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

impl Settings {
    /// The settings the flags, the environment and the config file they name give.
    pub fn load(flags: Flags, env: &dyn Env) -> anyhow::Result<Self> {
        let config = match &flags.config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        config.into_settings(flags, env)
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
    pub fn into_settings(mut self, flags: Flags, env: &dyn Env) -> anyhow::Result<Settings> {
        let listen = match flags.listen.or(self.listen) {
            Some(addr) => addr,
            None => DEFAULT_LISTEN.parse().context("default listen address")?,
        };
        let number = |var: &str| -> anyhow::Result<Option<usize>> {
            env.var(var)
                .map(|text| {
                    text.parse()
                        .with_context(|| format!("{var} is not a number"))
                })
                .transpose()
        };
        let max_body_bytes = number(ENV_MAX_BODY_BYTES)?
            .or(self.max_body_bytes)
            .unwrap_or(DEFAULT_MAX_BODY_BYTES);

        let mut providers = Vec::new();
        for kind in ProviderKind::ALL {
            let table = self.providers.take(kind);
            let key = kind
                .key_vars()
                .iter()
                .find_map(|var| env.var(var))
                .map(SecretString::from);
            let Some(api_key) =
                key.map_or_else(|| table_key(&table, kind.name(), env), |k| Ok(Some(k)))?
            else {
                continue;
            };
            providers.push(ProviderSettings {
                kind,
                name: kind.name().to_owned(),
                timeout: timeout(&table),
                max_concurrent: table.max_concurrent,
                base_url: env.var(kind.base_url_var()).or(table.base_url),
                api_key,
            });
        }
        for table in std::mem::take(&mut self.providers.compatible) {
            let name = table
                .name
                .clone()
                .context("every [[providers.compatible]] needs a `name`")?;
            let base_url = table
                .base_url
                .clone()
                .with_context(|| format!("provider `{name}` needs a `base_url`"))?;
            let api_key = table_key(&table, &name, env)?
                .with_context(|| format!("provider `{name}` needs `api_key` or `api_key_env`"))?;
            providers.push(ProviderSettings {
                kind: ProviderKind::OpenAI,
                timeout: timeout(&table),
                max_concurrent: table.max_concurrent,
                name,
                base_url: Some(base_url),
                api_key,
            });
        }

        let data_dir = flags
            .data_dir
            .or(self.data_dir)
            .unwrap_or_else(|| PathBuf::from("data"));
        let database_url = flags
            .database_url
            .or(self.database_url)
            .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("imgproxy.db").display()));

        let mut fetch = self.fetch;
        if let Some(hosts) = env.var(ENV_FETCH_ALLOW_HOSTS) {
            fetch.allow_hosts = hosts
                .split(',')
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .map(str::to_owned)
                .collect();
        }
        fetch.max_bytes = number(ENV_FETCH_MAX_BYTES)?.or(fetch.max_bytes);

        let storage = self.storage;
        let s3 = env.var(ENV_S3_BUCKET).or(storage.s3_bucket).map(|bucket| {
            imgproxy_core::store::S3Location {
                bucket,
                endpoint: env.var(ENV_S3_ENDPOINT).or(storage.s3_endpoint.clone()),
                region: env.var(ENV_S3_REGION).or(storage.s3_region.clone()),
            }
        });
        let url_ttl = Duration::from_secs(
            env.var(ENV_URL_TTL_SECS)
                .map(|text| {
                    text.parse()
                        .with_context(|| format!("{ENV_URL_TTL_SECS} is not a number"))
                })
                .transpose()?
                .or(self.urls.ttl_secs)
                .unwrap_or(DEFAULT_URL_TTL_SECS),
        );
        let mut public = self.public;
        if let Some(key_id) = env.var(ENV_PUBLIC_KEY_ID) {
            public.get_or_insert_with(PublicConfig::default).key_id = key_id;
        }
        if public.as_ref().is_some_and(|p| p.key_id.trim().is_empty()) {
            anyhow::bail!("[public] needs the `key_id` of the key that pays for public requests");
        }

        let mut tasks = imgproxy_core::tasks::TaskSettings::default();
        let secs = |var: &str, file: Option<u64>| -> anyhow::Result<Option<Duration>> {
            let from_env = env
                .var(var)
                .map(|text| {
                    text.parse::<u64>()
                        .with_context(|| format!("{var} is not a number"))
                })
                .transpose()?;
            Ok(from_env.or(file).map(Duration::from_secs))
        };
        if let Some(workers) = number(ENV_TASK_WORKERS)?.or(self.tasks.workers) {
            tasks.workers = workers.max(1);
        }
        if let Some(after) = secs(ENV_TASK_ABANDONED_SECS, self.tasks.abandoned_after_secs)? {
            tasks.abandoned_after = after.max(Duration::from_secs(2));
            // Beat well within the silence that counts as death.
            tasks.heartbeat = tasks.heartbeat.min(tasks.abandoned_after / 4);
        }
        if let Some(timeout) = self.tasks.webhook_timeout_secs {
            tasks.webhook_timeout = Duration::from_secs(timeout.max(1));
        }
        if let Some(window) = secs(ENV_WEBHOOK_WINDOW_SECS, self.tasks.webhook_window_secs)? {
            tasks.webhook_window = window;
        }

        Ok(Settings {
            tasks,
            memory_cache_bytes: storage
                .memory_cache_bytes
                .unwrap_or(imgproxy_core::store::DEFAULT_MEMORY_BYTES),
            s3,
            url_secret: env
                .var(ENV_URL_SECRET)
                .map(SecretString::from)
                .or(self.urls.secret),
            url_ttl,
            cache_enabled: self.cache.enabled.unwrap_or(true),
            url_api_default_model: env
                .var(ENV_URL_API_DEFAULT_MODEL)
                .or(self.url_api.default_model),
            path_form: self.url_api.path_form.unwrap_or(true),
            public,
            listen,
            database_url,
            data_dir,
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
            providers,
            fetch,
            routing: self.routing,
            deadlines: self.deadlines,
            models: self.models,
            remap: self.remap,
        })
    }
}

/// The key a provider table gives, inline or through `api_key_env`.
fn table_key(
    table: &ProviderTable,
    name: &str,
    env: &dyn Env,
) -> anyhow::Result<Option<SecretString>> {
    match (&table.api_key, &table.api_key_env) {
        (Some(key), _) => Ok(Some(key.clone())),
        (None, Some(var)) => env
            .var(var)
            .map(SecretString::from)
            .map(Some)
            .with_context(|| format!("provider `{name}`: environment variable {var} is not set")),
        (None, None) => Ok(None),
    }
}

fn timeout(table: &ProviderTable) -> Duration {
    Duration::from_secs(table.timeout_secs.unwrap_or(DEFAULT_UPSTREAM_TIMEOUT_SECS))
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

    fn no_state() -> Flags {
        Flags::default()
    }

    fn env(pairs: &[(&'static str, &'static str)]) -> FakeEnv {
        FakeEnv(pairs.iter().copied().collect())
    }

    #[test]
    fn defaults_without_config_or_env() {
        let settings = Config::default()
            .into_settings(no_state(), &env(&[]))
            .unwrap();
        assert_eq!(settings.listen.to_string(), "127.0.0.1:8080");
        assert!(settings.providers.is_empty());
        assert!(settings.master_key.is_none());
    }

    #[test]
    fn providers_are_enabled_by_their_keys_and_env_beats_file() {
        let config = Config::from_toml("[providers.openai]\nbase_url = \"http://file\"\n").unwrap();
        let vars = env(&[
            ("OPENAI_API_KEY", "sk-1"),
            ("OPENAI_BASE_URL", "http://env/v1"),
            ("GOOGLE_GENERATIVE_AI_API_KEY", "g-1"),
            ("FAL_KEY", "f-1"),
        ]);
        let settings = config.into_settings(no_state(), &vars).unwrap();
        let names: Vec<_> = settings.providers.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["openai", "gemini", "fal"]);
        let openai = &settings.providers[0];
        assert_eq!(openai.base_url.as_deref(), Some("http://env/v1"));
        assert_eq!(openai.api_key.expose_secret(), "sk-1");
        assert_eq!(settings.providers[1].api_key.expose_secret(), "g-1");
        assert_eq!(settings.providers[2].base_url, None);
    }

    #[test]
    fn unknown_fields_are_rejected_by_name() {
        let err = Config::from_toml("[providers.openai]\nbase_ur = \"x\"\n").unwrap_err();
        assert!(format!("{err:#}").contains("base_ur"), "{err:#}");
    }

    #[test]
    fn catalog_routing_fetch_and_compatible_providers_parse() {
        let text = r#"
            listen = "127.0.0.1:9000"
            [remap]
            "dall-e-3" = "gpt-image-2"
            [routing]
            "flux-1.1-pro" = ["bfl", "replicate"]
            [deadlines]
            ultra = 90
            [fetch]
            allow_hosts = ["images.internal"]
            [[providers.compatible]]
            name = "gw"
            base_url = "http://gw/v1"
            api_key_env = "GW_KEY"
            max_concurrent = 3
            [[models]]
            id = "gw-flux"
            provider = "gw"
            upstream = "flux-dev"
            upstream_params = { response_format = "b64_json" }
            [models.pricing]
            per_image = 3
        "#;
        let vars = env(&[("GW_KEY", "k"), (ENV_FETCH_MAX_BYTES, "1000")]);
        let settings = Config::from_toml(text)
            .unwrap()
            .into_settings(no_state(), &vars)
            .unwrap();
        assert_eq!(settings.listen.port(), 9000);
        assert_eq!(settings.providers[0].name, "gw");
        assert_eq!(settings.providers[0].max_concurrent, Some(3));
        assert_eq!(settings.models[0].id, "gw-flux");
        assert_eq!(settings.remap["dall-e-3"], "gpt-image-2");
        assert_eq!(settings.routing["flux-1.1-pro"], ["bfl", "replicate"]);
        assert_eq!(settings.deadlines["ultra"], 90);
        assert_eq!(
            (settings.fetch.allow_hosts.len(), settings.fetch.max_bytes),
            (1, Some(1000))
        );
    }

    #[test]
    fn fetch_allow_list_comes_from_the_environment() {
        let vars = env(&[(ENV_FETCH_ALLOW_HOSTS, "127.0.0.1:9999, localhost")]);
        let settings = Config::default().into_settings(no_state(), &vars).unwrap();
        assert_eq!(settings.fetch.allow_hosts, ["127.0.0.1:9999", "localhost"]);
    }

    #[test]
    fn storage_urls_cache_url_api_and_public_mode_layer_env_over_file() {
        let text = r#"
            [storage]
            s3_bucket = "file-bucket"
            s3_region = "eu-west-1"
            [urls]
            secret = "0123456789abcdef0123456789abcdef"
            ttl_secs = 60
            [cache]
            enabled = false
            [url_api]
            default_model = "ultra"
            path_form = false
            [public]
            key_id = "key_file"
            rpm = 5
        "#;
        let vars = env(&[
            (ENV_S3_BUCKET, "env-bucket"),
            (ENV_S3_ENDPOINT, "http://127.0.0.1:9000"),
            (ENV_URL_TTL_SECS, "120"),
            (ENV_PUBLIC_KEY_ID, "key_env"),
        ]);
        let settings = Config::from_toml(text)
            .unwrap()
            .into_settings(no_state(), &vars)
            .unwrap();
        let s3 = settings.s3.unwrap();
        assert_eq!(
            (
                s3.bucket.as_str(),
                s3.endpoint.as_deref(),
                s3.region.as_deref()
            ),
            (
                "env-bucket",
                Some("http://127.0.0.1:9000"),
                Some("eu-west-1")
            )
        );
        assert_eq!(settings.url_ttl, Duration::from_secs(120));
        assert!(settings.url_secret.is_some());
        assert!(!settings.cache_enabled && !settings.path_form);
        assert_eq!(settings.url_api_default_model.as_deref(), Some("ultra"));
        let public = settings.public.unwrap();
        assert_eq!((public.key_id.as_str(), public.rpm), ("key_env", Some(5)));

        let defaults = Config::default()
            .into_settings(no_state(), &env(&[]))
            .unwrap();
        assert!(defaults.s3.is_none() && defaults.public.is_none());
        assert!(defaults.cache_enabled && defaults.path_form);
        assert_eq!(defaults.url_ttl, Duration::from_secs(7 * 24 * 60 * 60));
        let err = Config::from_toml("[public]\nrpm = 1\n")
            .unwrap()
            .into_settings(no_state(), &env(&[]))
            .unwrap_err();
        assert!(err.to_string().contains("key_id"), "{err}");
    }

    #[test]
    fn task_settings_layer_env_over_file() {
        let text = "[tasks]\nworkers = 2\nabandoned_after_secs = 8\nwebhook_timeout_secs = 3\nwebhook_window_secs = 60\n";
        let vars = env(&[(ENV_TASK_WORKERS, "3"), (ENV_WEBHOOK_WINDOW_SECS, "5")]);
        let tasks = Config::from_toml(text)
            .unwrap()
            .into_settings(no_state(), &vars)
            .unwrap()
            .tasks;
        assert_eq!(tasks.workers, 3);
        assert_eq!(tasks.abandoned_after, Duration::from_secs(8));
        assert_eq!(tasks.heartbeat, Duration::from_secs(2));
        assert_eq!(tasks.webhook_timeout, Duration::from_secs(3));
        assert_eq!(tasks.webhook_window, Duration::from_secs(5));
        let err = Config::default()
            .into_settings(no_state(), &env(&[(ENV_TASK_ABANDONED_SECS, "soon")]))
            .unwrap_err();
        assert!(err.to_string().contains(ENV_TASK_ABANDONED_SECS), "{err}");
    }

    #[test]
    fn secrets_do_not_show_in_debug() {
        let config = Config::from_toml("master_key = \"super-secret\"").unwrap();
        assert!(!format!("{config:?}").contains("super-secret"));
    }
}
