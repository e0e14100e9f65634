//! Shared state of the handlers.

use std::sync::Arc;

use imgproxy_core::{
    service::{tasks::Tasks, Service},
    ImageProvider,
};
use metrics_exporter_prometheus::PrometheusHandle;
use secrecy::SecretString;

use crate::{config::PublicConfig, edge::Cors, limits::KeyLimits, telemetry::metrics::Exposition};

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The service: the gateway (catalog, providers), the image store, the URL signer and
    /// the database (keys, ledger, records).
    pub service: Arc<Service>,
    /// Asynchronous tasks; `None` where they are not run (in-process tests).
    pub tasks: Option<Arc<Tasks>>,
    /// Per-key rate and concurrency limits of this instance.
    pub limits: Arc<KeyLimits>,
    /// When set, API requests must carry it or an issued key as a Bearer token.
    pub master_key: Option<Arc<SecretString>>,
    /// This process's instance id (fresh at every start): owner of its credit reservations.
    pub instance_id: Arc<str>,
    /// Largest request body in bytes.
    pub max_body_bytes: usize,
    /// Base URL clients reach this server under (for the URLs it hands out).
    pub public_url: Arc<str>,
    /// The URL API's settings.
    pub url_api: Arc<UrlApi>,
    /// Which browser origins may call (none by default).
    pub cors: Arc<Cors>,
    /// `/metrics` on the main listener, when served there.
    pub metrics: Option<Exposition>,
    /// The installed Prometheus recorder, whose counters the console's summary reads (also
    /// when `/metrics` is served on a listener of its own); `None` when metrics are off.
    pub recorder: Option<PrometheusHandle>,
    /// Whether credits charged are also counted per key id (`[metrics] key_labels`).
    pub key_labels: bool,
    /// The upstream providers started from the configuration, whose keys readiness reports.
    pub upstreams: Upstreams,
    /// The image model of `/v1/responses` requests that name none (`None`: the gateway's
    /// default model).
    pub responses_image_model: Option<Arc<str>>,
}

/// The upstream providers started from the configuration.
pub type Upstreams = Arc<[Arc<dyn ImageProvider>]>;

/// The URL API's settings.
#[derive(Debug, Clone)]
pub struct UrlApi {
    /// Model of requests that name none.
    pub default_model: String,
    /// Whether `/{prompt}` and `/{prompt}/{model}` are served.
    pub path_form: bool,
    /// The one host (`Host` header) the path form answers on, if restricted.
    pub path_form_host: Option<String>,
    /// Whether identical requests are answered from the cache.
    pub cache_enabled: bool,
    /// Unauthenticated access, if the operator enabled it.
    pub public: Option<PublicConfig>,
}

impl Default for UrlApi {
    /// The placeholder as default model, path form and cache on, no public access.
    fn default() -> Self {
        Self {
            default_model: "placeholder".into(),
            path_form: true,
            path_form_host: None,
            cache_enabled: true,
            public: None,
        }
    }
}

/// The body limit, placed in request extensions so that extractors can name it in errors.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);
