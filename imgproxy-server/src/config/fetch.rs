//! Fetching reference images (and callback URLs) by URL: the environment variables over the
//! `[fetch]` table (declared in `config`). The fetcher itself lives in `imgproxy_core::fetch`.

use super::{Env, FetchConfig};

/// Hosts (`host` or `host:port`, comma-separated) that reference-image fetches may reach even
/// though they are private or loopback. For tests and trusted internal image hosts.
pub const ENV_FETCH_ALLOW_HOSTS: &str = "IMGPROXY_FETCH_ALLOW_HOSTS";
/// Largest reference image fetched by URL, in bytes.
pub const ENV_FETCH_MAX_BYTES: &str = "IMGPROXY_FETCH_MAX_BYTES";

impl FetchConfig {
    /// The file's settings with the environment's over them.
    pub(super) fn overlay(mut self, env: &dyn Env) -> anyhow::Result<Self> {
        if let Some(hosts) = env.over(ENV_FETCH_ALLOW_HOSTS, None)? {
            self.allow_hosts = hosts;
        }
        self.max_bytes = env.over(ENV_FETCH_MAX_BYTES, self.max_bytes)?;
        Ok(self)
    }
}
