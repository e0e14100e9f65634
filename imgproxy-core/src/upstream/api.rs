//! The client of one upstream API, written once for every adapter: the HTTP client, the key
//! in its header (marked sensitive, sent to the API only, never to download hosts), the
//! status check that hands the adapter a whole non-2xx answer with the key already scrubbed,
//! and the scrub of every error that leaves the adapter. What the answers mean is not here.

use std::{any::Any, fmt, sync::Arc, time::Duration};

use bytes::Bytes;
use reqwest::{
    header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION},
    IntoUrl, Method, RequestBuilder, Response, Url,
};

use super::{
    download::{download, read_capped, ImageSource, DEFAULT_MAX_DOWNLOAD_BYTES},
    failure::{chain, failed, retry_after, transport_error},
};
use crate::ProviderError;

/// The `User-Agent` of upstream calls.
pub const USER_AGENT: &str = concat!("imgproxy/", env!("CARGO_PKG_VERSION"));
/// What the key is replaced with wherever an upstream echoed it.
const REDACTED: &[u8] = super::failure::REDACTED.as_bytes();

/// An HTTP client for upstream APIs: rustls, `timeout` per request, no environment proxy
/// surprises beyond reqwest's defaults.
pub fn http_client(timeout: Duration) -> Result<reqwest::Client, ProviderError> {
    reqwest::Client::builder()
        .timeout(timeout)
        .user_agent(USER_AGENT)
        .build()
        .map_err(|e| failed(format!("cannot build the HTTP client: {}", chain(&e))))
}

/// Where an upstream API takes its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyHeader {
    /// `Authorization: <scheme> <key>`: `Bearer` at most APIs, `Key` at fal.
    Authorization(&'static str),
    /// `<name>: <key>`, the key alone in a header of its own (BFL's `x-key`, Google's
    /// `x-goog-api-key`). The name must be lowercase.
    Named(&'static str),
}

impl KeyHeader {
    /// `Authorization: Bearer <key>`.
    pub const BEARER: Self = Self::Authorization("Bearer");
}

/// The client of one upstream API at its root URL: requests made with [`ApiClient::request`]
/// carry the key, [`ApiClient::http`] and downloads never do.
#[derive(Clone)]
pub struct ApiClient {
    /// The API root, its path ending with `/`.
    root: Url,
    http: reqwest::Client,
    /// The limit on each request.
    timeout: Duration,
    /// Sent with every API call and nowhere else: the key, marked sensitive so that `Debug`
    /// never shows it, and any fixed headers.
    headers: HeaderMap,
    /// The key itself, to scrub from upstream messages. Never printed.
    key: String,
    /// What logs and readiness name the key by (see [`fingerprint`]).
    fingerprint: String,
    /// Largest body read from a download, a non-2xx answer or [`ApiClient::read_body`].
    max_body_bytes: usize,
    /// The adapter's own settings (Azure's API version and deployment names), for its calls
    /// to read: adapters hold no state, the client of each key carries them.
    adapter_settings: Option<Arc<dyn Any + Send + Sync>>,
}

impl fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiClient")
            .field("root", &self.root.as_str())
            .field("headers", &self.headers)
            .field("key", &"[redacted]")
            .field("fingerprint", &self.fingerprint)
            .field("max_body_bytes", &self.max_body_bytes)
            .finish_non_exhaustive()
    }
}

/// A non-2xx upstream answer, read whole (within the client's limit) for the adapter's error
/// mapping. The key is already scrubbed from `body`, before anything reads or cuts it.
#[derive(Debug)]
pub struct Rejection {
    /// The HTTP status.
    pub status: u16,
    /// The response headers.
    pub headers: HeaderMap,
    /// The body; empty when it could not be read, since the status alone decides the kind.
    pub body: Bytes,
}

impl Rejection {
    /// How long the upstream asked us to wait (`retry-after-ms` or `Retry-After`).
    pub fn retry_after(&self) -> Option<Duration> {
        retry_after(&self.headers)
    }

    /// The error an adapter's status mapping makes of this answer.
    pub fn map(
        &self,
        to_error: impl FnOnce(u16, Option<Duration>, &[u8]) -> ProviderError,
    ) -> ProviderError {
        to_error(self.status, self.retry_after(), &self.body)
    }
}

impl ApiClient {
    /// A client of the API at `root` (its path ending with `/`) whose calls send `key` as
    /// `key_header` says, each call limited to `timeout`. Bodies are read up to
    /// [`DEFAULT_MAX_DOWNLOAD_BYTES`] unless [`ApiClient::with_max_body_bytes`] says otherwise.
    pub fn new(
        root: Url,
        key_header: KeyHeader,
        key: &str,
        timeout: Duration,
    ) -> Result<Self, ProviderError> {
        let (name, value) = match key_header {
            KeyHeader::Authorization(scheme) => (AUTHORIZATION, format!("{scheme} {key}")),
            KeyHeader::Named(name) => (HeaderName::from_static(name), key.to_owned()),
        };
        // The message must not quote the value: it is the key.
        let mut value = HeaderValue::try_from(value)
            .map_err(|_| failed("the API key contains characters not allowed in a header"))?;
        value.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(name, value);
        Ok(Self {
            root,
            http: http_client(timeout)?,
            timeout,
            headers,
            key: key.to_owned(),
            fingerprint: fingerprint(key),
            max_body_bytes: DEFAULT_MAX_DOWNLOAD_BYTES,
            adapter_settings: None,
        })
    }

    /// The same client reading bodies up to `max_bytes`.
    #[must_use]
    pub fn with_max_body_bytes(mut self, max_bytes: usize) -> Self {
        self.max_body_bytes = max_bytes;
        self
    }

    /// The key's fingerprint, which logs and readiness detail name it by.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The API root, its path ending with `/`: the origin that may see the key.
    pub fn root(&self) -> &Url {
        &self.root
    }

    /// `path` below the API root.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.root)
    }

    /// The limit on each request.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The largest body read from a download, a non-2xx answer or [`ApiClient::read_body`].
    pub fn max_body_bytes(&self) -> usize {
        self.max_body_bytes
    }

    /// The same client sending `name: value` with every API call (an organisation, a project).
    pub fn with_header(mut self, name: &'static str, value: &str) -> Result<Self, ProviderError> {
        let value = HeaderValue::try_from(value)
            .map_err(|_| failed(format!("`{name}` is not a valid header value")))?;
        self.headers.insert(HeaderName::from_static(name), value);
        Ok(self)
    }

    /// The same client carrying `settings`, the adapter's own (see
    /// [`ApiClient::adapter_settings`]).
    #[must_use]
    pub fn with_adapter_settings<T: Any + Send + Sync>(mut self, settings: Arc<T>) -> Self {
        self.adapter_settings = Some(settings);
        self
    }

    /// The adapter's own settings, if the client carries settings of type `T`.
    pub fn adapter_settings<T: Any>(&self) -> Option<&T> {
        self.adapter_settings.as_deref()?.downcast_ref()
    }

    /// The HTTP client without the key: for downloads and any host that may not see it.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// An API request carrying the key; the caller adds the body.
    pub fn request(&self, method: Method, url: impl IntoUrl) -> RequestBuilder {
        self.http.request(method, url).headers(self.headers.clone())
    }

    /// A keyed `GET`.
    pub fn get(&self, url: impl IntoUrl) -> RequestBuilder {
        self.request(Method::GET, url)
    }

    /// A keyed `POST`.
    pub fn post(&self, url: impl IntoUrl) -> RequestBuilder {
        self.request(Method::POST, url)
    }

    /// Sends `request`: its 2xx response; a failure to reach the upstream as a
    /// [`transport_error`]; any other status as `to_error`, the adapter's mapping of a status,
    /// `Retry-After` and error body, makes of it (see [`Rejection::map`]).
    pub async fn send(
        &self,
        request: RequestBuilder,
        to_error: impl FnOnce(u16, Option<Duration>, &[u8]) -> ProviderError,
    ) -> Result<Response, ProviderError> {
        let response = request.send().await.map_err(transport_error)?;
        self.check(response).await.map_err(|r| r.map(to_error))
    }

    /// [`ApiClient::send`], and the whole body of the 2xx response.
    pub async fn send_for_body(
        &self,
        request: RequestBuilder,
        to_error: impl FnOnce(u16, Option<Duration>, &[u8]) -> ProviderError,
    ) -> Result<Bytes, ProviderError> {
        let response = self.send(request, to_error).await?;
        self.read_body(response).await
    }

    /// The whole body of `response` if its status is a 2xx, else the error `to_error` makes of
    /// its [`Rejection`]: [`ApiClient::send_for_body`] for a response already received.
    pub async fn checked_body(
        &self,
        response: Response,
        to_error: impl FnOnce(u16, Option<Duration>, &[u8]) -> ProviderError,
    ) -> Result<Bytes, ProviderError> {
        let response = self.check(response).await.map_err(|r| r.map(to_error))?;
        self.read_body(response).await
    }

    /// `response` if its status is a 2xx, else its [`Rejection`].
    pub async fn check(&self, response: Response) -> Result<Response, Rejection> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let headers = response.headers().clone();
        // The status alone decides the error kind, so an unreadable body is no worse than an
        // empty one.
        let body = read_capped(response, self.max_body_bytes, "an error body")
            .await
            .unwrap_or_default();
        Err(Rejection {
            status: status.as_u16(),
            headers,
            body: self.scrub_bytes(body),
        })
    }

    /// The body of a 2xx `response`, within the client's limit.
    pub async fn read_body(&self, response: Response) -> Result<Bytes, ProviderError> {
        read_capped(response, self.max_body_bytes, "the upstream response").await
    }

    /// Downloads a generated image from `url` without the key, within the client's limit.
    /// Returns the bytes and the `Content-Type`.
    pub async fn download(&self, url: &str) -> Result<(Bytes, Option<String>), ProviderError> {
        download(&self.http, url, self.max_body_bytes).await
    }

    /// The bytes of an image wherever they are (downloaded without the key), and the
    /// `Content-Type` of a download.
    pub async fn fetch(
        &self,
        source: ImageSource,
    ) -> Result<(Bytes, Option<String>), ProviderError> {
        match source {
            ImageSource::Inline(bytes) => Ok((bytes, None)),
            ImageSource::Url(url) => self.download(&url).await,
        }
    }

    /// `error` with the key replaced wherever an upstream echoed it. Every error leaving an
    /// adapter goes through this; [`Rejection`] bodies are scrubbed earlier, before any
    /// excerpt of them could cut the key in half.
    pub fn scrub(&self, error: ProviderError) -> ProviderError {
        error.without_secret(&self.key)
    }

    fn scrub_bytes(&self, body: Bytes) -> Bytes {
        let key = self.key.as_bytes();
        let found = |text: &[u8]| text.windows(key.len()).position(|w| w == key);
        if key.is_empty() || found(&body).is_none() {
            return body;
        }
        let mut scrubbed = Vec::with_capacity(body.len());
        let mut rest = &body[..];
        while let Some(at) = found(rest) {
            scrubbed.extend_from_slice(&rest[..at]);
            scrubbed.extend_from_slice(REDACTED);
            rest = &rest[at + key.len()..];
        }
        scrubbed.extend_from_slice(rest);
        Bytes::from(scrubbed)
    }
}

/// A short name of `key` that does not reveal it: the first 8 hex digits of its SHA-256
/// (`printf %s "$KEY" | sha256sum | cut -c1-8`), stable across restarts and versions.
pub fn fingerprint(key: &str) -> String {
    use sha2::{Digest as _, Sha256};
    Sha256::digest(key.as_bytes())[..4]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Whether `url` may be sent the key: the API's own origin (scheme, host and port of `base`),
/// or an https host that is `domain` or under it (the upstream's own hosts). A URL an upstream
/// returns is followed as it is, but one elsewhere would hand the key to a stranger.
pub fn key_may_go_to(url: &Url, base: &Url, domain: &str) -> bool {
    let same_origin = url.scheme() == base.scheme()
        && url.host_str() == base.host_str()
        && url.port_or_known_default() == base.port_or_known_default();
    let upstream_host = url.scheme() == "https"
        && url.host_str().is_some_and(|host| {
            host == domain
                || host
                    .strip_suffix(domain)
                    .is_some_and(|rest| rest.ends_with('.'))
        });
    same_origin || upstream_host
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(key_header: KeyHeader, key: &str) -> Result<ApiClient, ProviderError> {
        let root = Url::parse("https://api.example.com/").unwrap();
        ApiClient::new(root, key_header, key, Duration::from_secs(5))
    }

    #[test]
    fn the_key_header_is_sensitive_and_never_printed() {
        let api = client(KeyHeader::BEARER, "sk-123")
            .unwrap()
            .with_header("openai-project", "p")
            .unwrap();
        let shown = format!("{api:?}");
        assert!(!shown.contains("sk-123"), "{shown}");
        assert!(api.headers[AUTHORIZATION].is_sensitive());
        assert_eq!(api.headers["openai-project"], "p");
        let named = client(KeyHeader::Named("x-key"), "k").unwrap();
        assert_eq!(named.headers["x-key"], "k");
        let with_settings = named.with_adapter_settings(Arc::new(7_u8));
        assert_eq!(with_settings.adapter_settings::<u8>(), Some(&7));
        assert_eq!(with_settings.adapter_settings::<u16>(), None);
        assert!(client(KeyHeader::BEARER, "bad\nkey").is_err());
        // What `printf %s sk-123 | sha256sum | cut -c1-8` prints.
        assert_eq!(api.fingerprint(), "acb42a4f");
        assert!(shown.contains(api.fingerprint()), "{shown}");
    }

    #[test]
    fn bodies_and_errors_lose_the_key() {
        let api = client(KeyHeader::BEARER, "sk-123").unwrap();
        let body = api.scrub_bytes(Bytes::from_static(b"sk-123 and sk-123!"));
        assert_eq!(&body[..], b"[redacted] and [redacted]!");
        let error = api.scrub(failed("key sk-123"));
        assert_eq!(error, failed("key [redacted]"));
    }

    #[tokio::test]
    async fn a_key_cut_in_half_by_an_excerpt_was_scrubbed_before() {
        use wiremock::{matchers::method, Mock, MockServer, ResponseTemplate};

        use crate::upstream::{excerpt, status_error};

        let key = "sk-0123456789abcdef";
        let server = MockServer::start().await;
        // The key straddles the cut of a short message.
        let body = format!("{}{key}", "x".repeat(290));
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(500).set_body_string(body))
            .mount(&server)
            .await;
        let api = client(KeyHeader::BEARER, key).unwrap();
        let error = api
            .send(api.post(server.uri()), |status, wait, body| {
                status_error(status, wait, &excerpt(body))
            })
            .await
            .unwrap_err();
        let ProviderError::Failed { message } = error else {
            panic!("a 500 is a failure: {error:?}");
        };
        assert!(!message.contains("sk-0123"), "{message}");
        assert!(message.contains("[redacted"), "{message}");
    }

    #[test]
    fn the_key_goes_to_the_api_origin_and_the_upstream_domain_only() {
        let base = Url::parse("https://queue.fal.run").unwrap();
        let allowed = |text: &str| key_may_go_to(&Url::parse(text).unwrap(), &base, "fal.run");
        assert!(allowed("https://queue.fal.run:443/x/requests/1"));
        assert!(allowed("https://fal.run/x"));
        assert!(!allowed("http://rest.fal.run/x"));
        assert!(!allowed("https://evilfal.run/x"));
        assert!(!allowed("https://fal.run.example/x"));
    }
}
