//! Signed URLs and the URL API (`GET /api/generate`): their environment variables and
//! defaults over the `[urls]`, `[url_api]` and `[cache]` tables (declared in `config`). Who may
//! use the URL API without a key is `public`.

use std::time::Duration;

use secrecy::SecretString;

use super::{Env, UrlsConfig};

/// Secret that signs URLs (at least 32 characters); instances sharing URLs must share it.
pub const ENV_URL_SECRET: &str = "IMGPROXY_URL_SECRET";
/// Lifetime in seconds of the image URLs that `response_format=url` returns.
pub const ENV_URL_TTL_SECS: &str = "IMGPROXY_URL_TTL_SECS";
/// Default model of the URL API (`GET /api/generate`).
pub const ENV_URL_API_DEFAULT_MODEL: &str = "IMGPROXY_URL_API_DEFAULT_MODEL";
/// The one host the URL API's path form answers on.
pub const ENV_URL_API_PATH_FORM_HOST: &str = "IMGPROXY_URL_API_PATH_FORM_HOST";

/// Image URLs stay valid a week: long enough to be durable links, short enough to expire.
const DEFAULT_URL_TTL_SECS: u64 = 7 * 24 * 60 * 60;

impl UrlsConfig {
    /// The lifetime of image URLs.
    pub(super) fn ttl(&self, env: &dyn Env) -> anyhow::Result<Duration> {
        Ok(Duration::from_secs(
            env.over(ENV_URL_TTL_SECS, self.ttl_secs)?
                .unwrap_or(DEFAULT_URL_TTL_SECS),
        ))
    }

    /// The configured signing secret, if any (else the data dir's is used).
    pub(super) fn secret(self, env: &dyn Env) -> anyhow::Result<Option<SecretString>> {
        env.over(ENV_URL_SECRET, self.secret)
    }
}

/// The host the path form is restricted to: `host` or `host:port` as clients send it in
/// `Host`, lower-cased; anything else (a scheme, a path) is refused at start.
pub(super) fn path_form_host(
    env: &dyn Env,
    file: Option<String>,
) -> anyhow::Result<Option<String>> {
    let Some(host) = env.over(ENV_URL_API_PATH_FORM_HOST, file)? else {
        return Ok(None);
    };
    let parsed = url::Url::parse(&format!("http://{host}/")).ok();
    let authority = parsed.as_ref().and_then(|u| {
        let name = u.host_str()?;
        Some(match u.port() {
            Some(port) => format!("{name}:{port}"),
            None => name.to_owned(),
        })
    });
    match authority {
        Some(authority) if authority.eq_ignore_ascii_case(&host) => Ok(Some(authority)),
        _ => anyhow::bail!(
            "`url_api.path_form_host` = `{host}` is not a host: expected `api.example.com` or `api.example.com:8080` (no scheme, no path)"
        ),
    }
}
