//! The server's configuration: one typed, strict struct read from an optional TOML file,
//! overlaid with environment variables and command-line flags (flags > env > file > default).
//! This file holds the file's shape (the strict [`Config`] and its tables), the result
//! ([`Settings`]) and the layering that joins them. Each section's environment variables,
//! defaults and resolution live in a file of their own; checks that span sections live in
//! `validate`.

mod catalog;
mod cors;
mod env;
mod failover;
mod fetch;
mod metrics;
mod providers;
mod public;
mod report;
mod server;
mod storage;
mod tasks;
mod urls;
mod validate;

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::Context as _;
use imgproxy_core::{
    failover::FailoverPolicy,
    service::{retention::Retention, store::S3Location, tasks::TaskSettings},
    ModelSpec, ResponseFormat,
};
use secrecy::SecretString;
use serde::Deserialize;

pub use self::{
    catalog::ENV_RESPONSES_IMAGE_MODEL,
    cors::{CorsSettings, ENV_CORS_ALLOWED_ORIGINS},
    env::{Env, EnvValue, ProcessEnv},
    fetch::{ENV_FETCH_ALLOW_HOSTS, ENV_FETCH_MAX_BYTES},
    metrics::{MetricsSettings, ENV_METRICS_LISTEN, ENV_METRICS_TOKEN},
    providers::{ApiKeys, ProvidersConfig, ENV_AZURE_API_VERSION, ENV_AZURE_DEPLOYMENTS},
    public::ENV_PUBLIC_KEY_ID,
    server::{
        ServerSettings, ENV_BODY_READ_TIMEOUT_SECS, ENV_CPU_WORKERS, ENV_DEFAULT_RESPONSE_FORMAT,
        ENV_GENERATION_QUEUE, ENV_GENERATION_QUEUE_TIMEOUT_SECS, ENV_HEADER_READ_TIMEOUT_SECS,
        ENV_IDLE_TIMEOUT_SECS, ENV_LISTEN, ENV_MASTER_KEY, ENV_MAX_BODY_BYTES, ENV_MAX_CONNECTIONS,
        ENV_MAX_GENERATIONS, ENV_PLACEHOLDER_MAX_GENERATIONS, ENV_PUBLIC_URL,
        ENV_SHUTDOWN_DRAIN_SECS,
    },
    storage::{ENV_DATABASE_URL, ENV_DATA_DIR, ENV_S3_BUCKET, ENV_S3_ENDPOINT, ENV_S3_REGION},
    tasks::{
        ENV_INSTANCE_LEASE_SECS, ENV_INSTANCE_RENEW_SECS, ENV_TASK_WORKERS, ENV_WEBHOOK_WINDOW_SECS,
    },
    urls::{
        ENV_URL_API_DEFAULT_MODEL, ENV_URL_API_PATH_FORM_HOST, ENV_URL_SECRET, ENV_URL_TTL_SECS,
    },
};
use crate::providers::ProviderSettings;

/// Config file path.
pub const ENV_CONFIG: &str = "IMGPROXY_CONFIG";

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
    /// `response_format` of requests that name none: `b64_json` (the default) or `url`.
    pub default_response_format: Option<String>,
    /// The image model of `/v1/responses` requests whose tool names none (default: the
    /// request's model when it is an image model, else `default_model`).
    pub responses_image_model: Option<String>,
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
    /// Browser origins allowed to call (CORS).
    pub cors: CorsConfig,
    /// Connection hygiene and bounds on concurrent work.
    pub server: ServerConfig,
    /// The Prometheus endpoint.
    pub metrics: MetricsConfig,
    /// Retries, fallbacks and circuit breakers.
    pub failover: FailoverConfig,
    /// Model id → models to try, in order, when its providers turn a request away before
    /// starting work.
    pub fallbacks: BTreeMap<String, Vec<String>>,
}

/// Retries, fallbacks and circuit breakers (`[failover]`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FailoverConfig {
    /// Upstream attempts per request at most, retries and fallbacks included (default 3).
    pub max_attempts: Option<u32>,
    /// Longest `Retry-After` waited for before retrying the same provider; a longer one moves
    /// on to the next candidate (default 10).
    pub max_retry_after_secs: Option<u64>,
    /// Consecutive pre-start failures that open a provider's circuit; 0 turns breakers off
    /// (default 5).
    pub breaker_failures: Option<u32>,
    /// The span those failures must fall within, in seconds (default 60).
    pub breaker_window_secs: Option<u64>,
    /// Seconds an open circuit skips its provider before one probe goes through (default 30).
    pub breaker_cooldown_secs: Option<u64>,
}

/// The Prometheus endpoint `/metrics`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Serve `/metrics` (default true).
    pub enabled: Option<bool>,
    /// Serve it only on this address (e.g. `127.0.0.1:9464`), not on the main one.
    pub listen: Option<SocketAddr>,
    /// Bearer token scrapes must send (prefer the environment variable); default none.
    pub token: Option<SecretString>,
    /// Label credits charged by the paying key's id: one series per key (default false).
    pub key_labels: Option<bool>,
}

/// Browser access from other origins (CORS).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorsConfig {
    /// Origins (`https://app.example.com`) allowed to call the API and to read its images
    /// (`<img crossorigin>`, canvas); `["*"]` for any; default none.
    pub allowed_origins: Vec<String>,
    /// Seconds a browser may keep a preflight's answer (default 600).
    pub max_age_secs: Option<u64>,
}

/// How connections are served and how much work runs at once.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Seconds a new connection has to send its request headers (default 10).
    pub header_read_timeout_secs: Option<u64>,
    /// Seconds a request has to send its whole body after its headers (default 60).
    pub body_read_timeout_secs: Option<u64>,
    /// Seconds a kept-alive connection may wait for its next request (default 60).
    pub idle_timeout_secs: Option<u64>,
    /// Client connections open at once (default 4096).
    pub max_connections: Option<usize>,
    /// Image jobs (drawing, encoding, converting) run at once (default: one per CPU).
    pub cpu_workers: Option<usize>,
    /// Generations of one upstream provider run at once (default 64).
    pub max_generations: Option<usize>,
    /// Placeholder generations run at once (default `cpu_workers`).
    pub placeholder_max_generations: Option<usize>,
    /// Generations that may wait for a slot, per provider (default 256; 0: none wait).
    pub generation_queue: Option<usize>,
    /// Seconds a generation may wait for a slot before a 503 (default 30).
    pub generation_queue_timeout_secs: Option<u64>,
    /// Seconds a shutdown waits for requests in flight before abandoning them (default 30).
    pub shutdown_drain_secs: Option<u64>,
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
    /// Cache entries and unneeded images older than this many seconds are swept (off).
    pub retention_max_age_secs: Option<u64>,
    /// Unneeded images are swept, oldest first, while the store holds more bytes (off).
    pub retention_max_bytes: Option<u64>,
    /// Seconds between retention sweeps (default 3600).
    pub retention_sweep_every_secs: Option<u64>,
    /// Seconds an `Idempotency-Key` is remembered from its first request (default 86400).
    pub idempotency_window_secs: Option<u64>,
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

/// Asynchronous tasks and webhooks.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TasksConfig {
    /// Tasks one instance runs at once (default 4).
    pub workers: Option<usize>,
    /// Seconds an instance's lease lasts: one that has not renewed it for this long counts as
    /// dead, and any other recovers its tasks, reservations and generation claims (default 15).
    pub instance_lease_secs: Option<u64>,
    /// Seconds between renewals of the lease, and between looks for dead instances (default
    /// 5, or a third of a shorter lease; less than the lease).
    pub instance_renew_secs: Option<u64>,
    /// Seconds of one webhook attempt (default 10).
    pub webhook_timeout_secs: Option<u64>,
    /// Seconds after a task's end during which its webhook is retried (default 1800).
    pub webhook_window_secs: Option<u64>,
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
    /// Serve the path form only for requests to this host (`Host` header), e.g.
    /// `api.example.com`; default any host.
    pub path_form_host: Option<String>,
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

/// One upstream's settings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProviderTable {
    /// Provider name (only for `[[providers.compatible]]`).
    pub name: Option<String>,
    /// API base URL.
    pub base_url: Option<String>,
    /// API key, inline: one key, several separated by commas, or a list of keys (a pool).
    pub api_key: Option<ApiKeys>,
    /// Name of an environment variable holding the API key (or several, comma-separated).
    pub api_key_env: Option<String>,
    /// Per-request upstream timeout in seconds.
    pub timeout_secs: Option<u64>,
    /// Largest body read from this upstream: an answer with its images inline, one event of a
    /// streamed answer, a downloaded image, an error (default 50 MiB).
    pub max_response_bytes: Option<std::num::NonZeroUsize>,
    /// Most calls to this provider in flight at once, across all requests (default: no cap).
    pub max_concurrent: Option<usize>,
    /// Azure OpenAI only: the `api-version`; a dated one selects the deployment form (default
    /// `2025-04-01-preview`), `v1` the v1 API.
    pub api_version: Option<String>,
    /// Azure OpenAI only: deployment names by upstream model id, for models not deployed
    /// under their own id.
    pub deployments: BTreeMap<String, String>,
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
    /// How images are answered when a request names no `response_format`.
    pub default_response_format: ResponseFormat,
    /// The image model of `/v1/responses` requests that name none.
    pub responses_image_model: Option<String>,
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
    pub s3: Option<S3Location>,
    /// Bytes of recently used images kept in memory.
    pub memory_cache_bytes: usize,
    /// What the image store keeps, and how often it is swept.
    pub retention: (Retention, Duration),
    /// How long an `Idempotency-Key` is remembered.
    pub idempotency_window: Duration,
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
    /// The one host the path form answers on, if restricted.
    pub path_form_host: Option<String>,
    /// Browser origins allowed to call.
    pub cors: CorsSettings,
    /// The config file read, if any (named in errors).
    pub config_path: Option<PathBuf>,
    /// Public URL-API access.
    pub public: Option<PublicConfig>,
    /// Tasks and webhooks.
    pub tasks: TaskSettings,
    /// Connection hygiene and bounds on concurrent work.
    pub server: ServerSettings,
    /// The Prometheus endpoint.
    pub metrics: MetricsSettings,
    /// Retries, fallbacks and circuit breakers.
    pub failover: FailoverPolicy,
    /// Fallback chains, by model id.
    pub fallbacks: BTreeMap<String, Vec<String>>,
}

impl Settings {
    /// The settings the flags, the environment and the config file they name give.
    pub fn load(flags: Flags, env: &dyn Env) -> anyhow::Result<Self> {
        let path = flags.config.clone();
        let config = match &path {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        let mut settings = match (config.into_settings(flags, env), &path) {
            (Ok(settings), _) => settings,
            (Err(error), Some(path)) => {
                return Err(error.context(format!("in config {}", path.display())))
            }
            (Err(error), None) => return Err(error),
        };
        settings.config_path = path;
        // The catalog rules (does the default model exist? does a remap target?) need the
        // catalog: checked here, at start, for every command, instead of on the first request.
        settings.check_catalog()?;
        Ok(settings)
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

    /// Layers flags and env over this file, applies the defaults, then checks the result.
    pub fn into_settings(self, flags: Flags, env: &dyn Env) -> anyhow::Result<Settings> {
        let Self {
            listen,
            data_dir,
            database_url,
            public_url,
            master_key,
            max_body_bytes,
            default_model,
            default_response_format,
            responses_image_model,
            providers,
            fetch,
            routing,
            deadlines,
            models,
            remap,
            storage,
            urls,
            cache,
            url_api,
            public,
            tasks,
            cors,
            server,
            metrics,
            failover,
            fallbacks,
        } = self;
        let data_dir = storage::data_dir(flags.data_dir, data_dir);
        // Fields are evaluated as written; the order decides which of several errors shows.
        let settings = Settings {
            listen: server::listen(flags.listen, listen)?,
            max_body_bytes: server::max_body_bytes(env, max_body_bytes)?,
            default_response_format: server::default_response_format(env, default_response_format)?,
            providers: providers.settings(env)?,
            database_url: storage::database_url(flags.database_url, database_url, &data_dir),
            data_dir,
            fetch: fetch.overlay(env)?,
            s3: storage.s3(env)?,
            memory_cache_bytes: storage.memory_cache_bytes(),
            retention: storage.retention(env)?,
            idempotency_window: storage.idempotency_window(env)?,
            url_ttl: urls.ttl(env)?,
            public: public::overlay(public, env)?,
            tasks: tasks.settings(env)?,
            server: server.settings(env)?,
            metrics: metrics.settings(env)?,
            failover: failover.policy(env)?,
            url_secret: urls.secret(env)?,
            cache_enabled: cache.enabled.unwrap_or(true),
            url_api_default_model: env.over(ENV_URL_API_DEFAULT_MODEL, url_api.default_model)?,
            responses_image_model: env.over(ENV_RESPONSES_IMAGE_MODEL, responses_image_model)?,
            path_form: url_api.path_form.unwrap_or(true),
            path_form_host: urls::path_form_host(env, url_api.path_form_host)?,
            cors: cors.settings(env)?,
            config_path: None,
            public_url: server::public_url(env, public_url)?,
            master_key: env.over(ENV_MASTER_KEY, master_key)?,
            default_model,
            routing,
            deadlines,
            models,
            remap,
            fallbacks,
        };
        settings.check()?;
        Ok(settings)
    }
}

#[cfg(test)]
mod tests;
