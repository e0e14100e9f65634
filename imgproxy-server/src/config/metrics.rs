//! The Prometheus endpoint (`[metrics]`, declared in `config`): on or off, on the main
//! address or its own, behind a token or not, and whether key ids may be labels.

use std::net::SocketAddr;

use secrecy::SecretString;

use super::{Env, MetricsConfig};

/// Serve `/metrics` only on this address (e.g. `127.0.0.1:9464`) instead of the main one.
pub const ENV_METRICS_LISTEN: &str = "IMGPROXY_METRICS_LISTEN";
/// A Bearer token that scrapes must send.
pub const ENV_METRICS_TOKEN: &str = "IMGPROXY_METRICS_TOKEN";

/// The checked metrics settings.
#[derive(Debug, Clone, Default)]
pub struct MetricsSettings {
    /// Whether `/metrics` is served at all.
    pub enabled: bool,
    /// Its own address, if any; else it is served on the main listener.
    pub listen: Option<SocketAddr>,
    /// The token scrapes must send as `Authorization: Bearer`, if any.
    pub token: Option<SecretString>,
    /// Label credits charged with the paying key's id (one series per key).
    pub key_labels: bool,
}

impl MetricsConfig {
    /// The file's table with the environment over it.
    pub(super) fn settings(self, env: &dyn Env) -> anyhow::Result<MetricsSettings> {
        let token = env.over(ENV_METRICS_TOKEN, self.token)?;
        if let Some(token) = &token {
            use secrecy::ExposeSecret as _;
            anyhow::ensure!(
                token.expose_secret().len() >= 16,
                "`metrics.token` ({ENV_METRICS_TOKEN}) must be at least 16 characters"
            );
        }
        Ok(MetricsSettings {
            enabled: self.enabled.unwrap_or(true),
            listen: env.over(ENV_METRICS_LISTEN, self.listen)?,
            token,
            key_labels: self.key_labels.unwrap_or(false),
        })
    }
}
