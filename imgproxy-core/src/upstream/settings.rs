//! The settings every adapter takes (key, API root, timeout, largest body read), and what an
//! adapter makes of them at start, written once: the keyed client of the validated API root.
//! What differs between upstreams (default root and timeout, the key's header) is an
//! adapter's [`Upstream`].

use std::time::Duration;

use reqwest::Url;
use secrecy::{ExposeSecret as _, SecretString};

use super::{
    api::{ApiClient, KeyHeader},
    download::DEFAULT_MAX_DOWNLOAD_BYTES,
    failure::failed,
};
use crate::ProviderError;

/// The limit on each upstream request where neither the adapter nor its settings say
/// otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// What an adapter knows of its upstream before any settings: its provider name, its default
/// API root and timeout, and where it takes the key.
#[derive(Debug, Clone, Copy)]
pub struct Upstream {
    name: &'static str,
    base_url: &'static str,
    timeout: Duration,
    key_header: KeyHeader,
    genai_name: Option<&'static str>,
}

impl Upstream {
    /// The provider `name`'s API at `base_url`, taking the key as `Authorization: Bearer`,
    /// each request limited to [`DEFAULT_TIMEOUT`].
    pub const fn new(name: &'static str, base_url: &'static str) -> Self {
        Self {
            name,
            base_url,
            timeout: DEFAULT_TIMEOUT,
            key_header: KeyHeader::BEARER,
            genai_name: None,
        }
    }

    /// The same upstream with the OpenTelemetry GenAI conventions' name for it
    /// (`gen_ai.provider.name`), where they have one that differs from the provider's.
    #[must_use]
    pub const fn genai_name(mut self, genai_name: &'static str) -> Self {
        self.genai_name = Some(genai_name);
        self
    }

    /// Its `gen_ai.provider.name`, if the conventions have one of their own.
    pub const fn genai(&self) -> Option<&'static str> {
        self.genai_name
    }

    /// The same upstream taking the key in `key_header`.
    #[must_use]
    pub const fn key_header(mut self, key_header: KeyHeader) -> Self {
        self.key_header = key_header;
        self
    }

    /// The same upstream with another default limit on each request.
    #[must_use]
    pub const fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The provider name catalog entries use for this upstream.
    pub const fn name(&self) -> &'static str {
        self.name
    }
}

/// Settings of one upstream API, the same for every adapter (OpenAI's adds its own around
/// them). What is left `None` is the adapter's default (its crate's `DEFAULT_BASE_URL` and
/// `DEFAULT_TIMEOUT`).
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// Sent to the API's hosts only, in the header the adapter's upstream takes it in. The
    /// first key of the provider's pool.
    pub api_key: SecretString,
    /// The other keys of the pool: each call takes the least busy live key, and a key the
    /// upstream rejects is taken out (see `UpstreamProvider`).
    pub more_keys: Vec<SecretString>,
    /// The API root; a trailing slash is fine.
    pub base_url: Option<String>,
    /// Limit on each upstream request, including reading its body. A polled job as a whole is
    /// bounded by its model's `deadline_secs` instead.
    pub timeout: Option<Duration>,
    /// Largest body read from the upstream: a downloaded image, an answer carrying images
    /// inline, one event of a streamed answer, an error (default
    /// [`DEFAULT_MAX_DOWNLOAD_BYTES`]).
    pub max_download_bytes: usize,
}

impl UpstreamSettings {
    /// The settings for the upstream's own endpoint with `api_key`, everything else at its
    /// default.
    pub fn new(api_key: impl Into<SecretString>) -> Self {
        Self {
            api_key: api_key.into(),
            more_keys: Vec::new(),
            base_url: None,
            timeout: None,
            max_download_bytes: DEFAULT_MAX_DOWNLOAD_BYTES,
        }
    }

    /// The same settings with `keys` added to the pool.
    #[must_use]
    pub fn with_more_keys(mut self, keys: impl IntoIterator<Item = SecretString>) -> Self {
        self.more_keys.extend(keys);
        self
    }

    /// The same settings with another API root.
    #[must_use]
    pub fn with_base_url(mut self, base_url: impl Into<String>) -> Self {
        self.base_url = Some(base_url.into());
        self
    }

    /// The same settings with another limit on each request.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The same settings with another largest body.
    #[must_use]
    pub fn with_max_download_bytes(mut self, max_bytes: usize) -> Self {
        self.max_download_bytes = max_bytes;
        self
    }

    /// The API root of `upstream` as these settings say, parsed and checked (http or https,
    /// with a host). Its path always ends with `/`, so `format!("{root}v1/x")` and
    /// `root.join("v1/x")` both append below it.
    fn api_root(&self, upstream: &Upstream) -> Result<Url, ProviderError> {
        let text = self.base_url.as_deref().unwrap_or(upstream.base_url);
        Url::parse(&format!("{}/", text.trim_end_matches('/')))
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https") && url.host().is_some())
            .ok_or_else(|| {
                failed(format!(
                    "the `{}` base URL `{text}` is not an http(s) URL",
                    upstream.name
                ))
            })
    }

    /// The clients of `upstream`'s API, one per key of the pool, first key first: its checked
    /// root, the key in its header, the settings' timeout and largest body.
    pub fn api_clients(&self, upstream: &Upstream) -> Result<Vec<ApiClient>, ProviderError> {
        let root = self.api_root(upstream)?;
        let timeout = self.timeout.unwrap_or(upstream.timeout);
        std::iter::once(&self.api_key)
            .chain(&self.more_keys)
            .map(|key| {
                let api = ApiClient::new(
                    root.clone(),
                    upstream.key_header,
                    key.expose_secret(),
                    timeout,
                )?;
                Ok(api.with_max_body_bytes(self.max_download_bytes))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: Upstream = Upstream::new("example", "https://api.example.com/v1")
        .timeout(Duration::from_secs(5))
        .key_header(KeyHeader::Named("x-key"));

    #[test]
    fn the_root_ends_with_a_slash_and_must_be_http() {
        let settings = UpstreamSettings::new("k");
        let root = |settings: &UpstreamSettings| settings.api_root(&EXAMPLE).map(String::from);
        assert_eq!(root(&settings).unwrap(), "https://api.example.com/v1/");
        let local = settings.clone().with_base_url("http://127.0.0.1:9/");
        assert_eq!(root(&local).unwrap(), "http://127.0.0.1:9/");
        for bad in ["ftp://example.com", "not a url", "unix:/run/x"] {
            let error = root(&settings.clone().with_base_url(bad)).unwrap_err();
            assert!(
                error.to_string().contains("the `example` base URL"),
                "{error}"
            );
        }
    }

    #[test]
    fn the_key_is_never_printed() {
        let settings = UpstreamSettings::new("sk-123")
            .with_timeout(Duration::from_secs(1))
            .with_more_keys(["sk-456".into()]);
        let shown = format!("{settings:?}");
        assert!(
            !shown.contains("sk-123") && !shown.contains("sk-456"),
            "{shown}"
        );
        let clients = settings.api_clients(&EXAMPLE).unwrap();
        assert_eq!(clients.len(), 2);
        assert!(!format!("{clients:?}").contains("sk-"), "{clients:?}");
    }
}
