//! Which browser origins may call the API (`[cors]`, declared in `config`): the environment
//! variable over the file, and each origin checked to be one a browser can send. The layer
//! that answers preflights is `edge`'s.

use std::time::Duration;

use super::{CorsConfig, Env};

/// Origins allowed to call from a browser, comma-separated (`*` for any).
pub const ENV_CORS_ALLOWED_ORIGINS: &str = "IMGPROXY_CORS_ALLOWED_ORIGINS";

/// How long browsers keep a preflight's answer when `max_age_secs` is not set: ten minutes,
/// Chromium's own cap.
const DEFAULT_MAX_AGE_SECS: u64 = 600;
/// Most origins listed: each is compared per request.
const MAX_ORIGINS: usize = 100;

/// The checked CORS settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CorsSettings {
    /// Origins exactly as browsers send them; `["*"]` for any; empty for none.
    pub allowed_origins: Vec<String>,
    /// How long a preflight's answer may be kept.
    pub max_age: Duration,
}

impl CorsConfig {
    /// The file's table with the environment's origins over it, every origin checked.
    pub(super) fn settings(self, env: &dyn Env) -> anyhow::Result<CorsSettings> {
        let origins = env
            .over(ENV_CORS_ALLOWED_ORIGINS, Some(self.allowed_origins))?
            .unwrap_or_default();
        anyhow::ensure!(
            origins.len() <= MAX_ORIGINS,
            "`cors.allowed_origins` lists {} origins; at most {MAX_ORIGINS}",
            origins.len()
        );
        if origins.iter().any(|o| o == "*") {
            anyhow::ensure!(
                origins.len() == 1,
                "`cors.allowed_origins`: `*` allows every origin, so it stands alone"
            );
        } else {
            for origin in &origins {
                check_origin(origin)?;
            }
        }
        Ok(CorsSettings {
            allowed_origins: origins,
            max_age: Duration::from_secs(self.max_age_secs.unwrap_or(DEFAULT_MAX_AGE_SECS)),
        })
    }
}

/// An origin as a browser sends it in `Origin`: `http` or `https`, the host, a port only if
/// not the default, nothing else (no path, not even `/`). Anything else would never match.
fn check_origin(origin: &str) -> anyhow::Result<()> {
    let serialized = url::Url::parse(origin)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .map(|u| u.origin().ascii_serialization());
    match serialized {
        Some(canonical) if canonical == origin => Ok(()),
        Some(canonical) => anyhow::bail!(
            "`cors.allowed_origins` entry `{origin}` is not an origin as browsers send it: write `{canonical}`"
        ),
        None => anyhow::bail!(
            "`cors.allowed_origins` entry `{origin}` is not an origin: expected `https://host[:port]` (or `*` alone)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::check_origin;

    #[test]
    fn origins_must_be_spelled_as_browsers_send_them() {
        for good in ["https://app.example.com", "http://127.0.0.1:5173"] {
            check_origin(good).unwrap();
        }
        for bad in [
            "https://app.example.com/",
            "https://app.example.com/path",
            "https://app.example.com:443",
            "HTTPS://APP.example.com",
            "app.example.com",
            "ftp://x.example",
            "null",
        ] {
            assert!(check_origin(bad).is_err(), "{bad}");
        }
    }
}
