//! The one fetcher of reference images given by URL or `data:` URL, shared by every provider
//! that needs bytes: the SSRF guard (no private, loopback, link-local, multicast or metadata
//! targets, on the resolved address of every hop), the size and time limits and the
//! image-only content check all live here, so no provider ever fetches a client URL itself.

use std::error::Error as StdError;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::BytesMut;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{HeaderValue, ACCEPT, CONTENT_TYPE};
use url::{Host, Url};

use crate::provider::sniff_mime;
use crate::{Error, ImageInput};

/// A reference image, fetched and checked. It is the provider module's type, re-exported so
/// that what the fetcher returns is exactly what `ProviderRequest::references` holds.
pub use crate::provider::ReferenceImage;

/// The id of an uploaded file, when `input` names one rather than a URL: the `file_id`
/// form, or bare text that is not a URL. The gateway resolves those from its own store.
pub fn file_id_of(input: &ImageInput) -> Option<&str> {
    match input {
        ImageInput::FileId { file_id } => Some(file_id.trim()),
        ImageInput::Text(text) if Url::parse(text.trim()).is_err() => Some(text.trim()),
        ImageInput::Text(_) | ImageInput::ImageUrl { .. } => None,
    }
}

/// The request parameter every refusal names.
const PARAM: &str = "image";

/// Host names of cloud metadata services. They resolve to link-local addresses only inside
/// the cloud, which the resolver check would catch there; refusing the names as well keeps
/// the refusal independent of how (or whether) the local DNS answers.
const METADATA_HOSTS: &[&str] = &[
    "metadata",
    "metadata.google.internal",
    "metadata.goog",
    "instance-data",
    "instance-data.ec2.internal",
];

/// What the fetcher may fetch.
#[derive(Debug, Clone)]
pub struct FetchPolicy {
    /// Largest accepted image, in bytes (default 20 MiB).
    pub max_bytes: usize,
    /// Deadline of the whole fetch, redirects and body included (default 15 s).
    pub timeout: Duration,
    /// Most redirects followed (default 3).
    pub max_redirects: usize,
    /// Hosts (name or IP literal, optionally with `:port`) allowed even though they resolve to
    /// private/loopback addresses. Empty by default; tests use it to reach a local fake.
    pub allow_hosts: Vec<String>,
}

impl Default for FetchPolicy {
    fn default() -> Self {
        Self {
            max_bytes: 20 * 1024 * 1024,
            timeout: Duration::from_secs(15),
            max_redirects: 3,
            allow_hosts: Vec::new(),
        }
    }
}

/// Fetches reference images under a [`FetchPolicy`]. Cheap to clone: clones share one
/// connection pool.
#[derive(Debug, Clone)]
pub struct ReferenceFetcher {
    client: reqwest::Client,
    policy: Arc<FetchPolicy>,
    allow: Arc<AllowList>,
}

impl ReferenceFetcher {
    /// A fetcher for `policy`. Fails only on an unusable `allow_hosts` entry or when the HTTP
    /// client cannot be built.
    pub fn new(policy: FetchPolicy) -> crate::Result<Self> {
        let allow = Arc::new(AllowList::parse(&policy.allow_hosts)?);
        let redirect_allow = Arc::clone(&allow);
        let max_redirects = policy.max_redirects;
        // Each redirect target is checked before reqwest connects to it: the scheme, an IP
        // literal host (the resolver never sees literals) and the hop count. Names are
        // checked again, on their resolved addresses, by the resolver.
        let redirect = reqwest::redirect::Policy::custom(move |attempt| {
            // `previous` holds the original URL plus every URL already redirected to.
            if attempt.previous().len() > max_redirects {
                return attempt.error(Refused(format!(
                    "the reference image URL redirected more than {max_redirects} times"
                )));
            }
            match check_url(attempt.url(), &redirect_allow, Target::Reference) {
                Ok(()) => attempt.follow(),
                Err(refused) => attempt.error(refused),
            }
        });
        let client = reqwest::Client::builder()
            // An environment proxy would resolve and connect on our behalf, past the resolver
            // check, so proxies are off whatever the environment says.
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver {
                allow: Arc::clone(&allow),
            }))
            .redirect(redirect)
            // The client's URL may carry tokens; do not pass it on to the next hop.
            .referer(false)
            .user_agent(concat!("imgproxy/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Internal(format!("cannot build the reference fetcher: {e}")))?;
        Ok(Self {
            client,
            policy: Arc::new(policy),
            allow,
        })
    }

    /// The policy this fetcher enforces.
    pub fn policy(&self) -> &FetchPolicy {
        &self.policy
    }

    /// Checks a client-given URL that imgproxy will POST to (a task's `callback_url`) as
    /// reference URLs are checked: http(s) only, no private, loopback, link-local or metadata
    /// host. A refusal is a 400 naming `callback_url`.
    pub async fn check_callback(&self, url: &str) -> crate::Result<Url> {
        let callback_error = |message: String| Error::invalid_param("callback_url", message);
        let parsed = Url::parse(url.trim())
            .map_err(|_| callback_error("`callback_url` is not a URL".into()))?;
        check_url(&parsed, &self.allow, Target::Callback)
            .map_err(|refused| callback_error(refused.0))?;
        // A name is resolved now too, so that `localhost` or a name pointing inside is refused
        // when the task is submitted, not only when its webhook is sent (the resolver guard
        // checks again then: DNS answers may change).
        if let (Some(Host::Domain(name)), Some(port)) =
            (parsed.host(), parsed.port_or_known_default())
        {
            let name = normalise_name(name);
            if !self.allow.allows(&HostKey::Name(name.clone()), port) {
                let addresses = tokio::net::lookup_host((name.as_str(), port))
                    .await
                    .map_err(|_| {
                        callback_error(format!(
                            "the callback host `{}` does not resolve",
                            printable(&name)
                        ))
                    })?;
                for address in addresses {
                    let ip = address.ip();
                    if self.allow.allows(&HostKey::Ip(ip), port) {
                        continue;
                    }
                    if let Some(reason) = forbidden_reason(ip) {
                        return Err(callback_error(format!(
                            "the callback host `{}` resolves to a {reason} address; only public addresses may be called",
                            printable(&name)
                        )));
                    }
                }
            }
        }
        Ok(parsed)
    }

    /// An HTTP client for POSTs to URLs checked by [`ReferenceFetcher::check_callback`]: the
    /// same resolver check on every connection, no redirects, no proxies.
    pub fn callback_client(&self, timeout: Duration) -> crate::Result<reqwest::Client> {
        reqwest::Client::builder()
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver {
                allow: Arc::clone(&self.allow),
            }))
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .user_agent(concat!("imgproxy/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Internal(format!("cannot build the webhook client: {e}")))
    }

    /// Resolves one reference: `data:` URLs are decoded, http(s) URLs fetched under the policy.
    /// File ids (anything not a URL, see [`file_id_of`]) are the gateway's to resolve: here
    /// they are a 400 naming `image`.
    pub async fn fetch(&self, input: &ImageInput) -> crate::Result<ReferenceImage> {
        let text = match input {
            ImageInput::Text(text) | ImageInput::ImageUrl { image_url: text } => text.trim(),
            ImageInput::FileId { .. } => {
                return Err(refuse("file ids need the gateway's file store"))
            }
        };
        if text
            .get(..5)
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("data:"))
        {
            return decode_data_url(text, self.policy.max_bytes).map_err(Refused::into_error);
        }
        let Ok(url) = Url::parse(text) else {
            // Not a URL: the only other form a reference takes is an uploaded file's id.
            return Err(refuse("not a URL, a data URL or a known file id"));
        };
        check_url(&url, &self.allow, Target::Reference).map_err(Refused::into_error)?;
        let timeout = self.policy.timeout;
        match tokio::time::timeout(timeout, self.fetch_http(url)).await {
            Ok(result) => result.map_err(Refused::into_error),
            Err(_elapsed) => Err(refuse(format!(
                "fetching the reference image timed out after {}",
                describe_duration(timeout)
            ))),
        }
    }

    /// GETs `url` (already checked) and reads an image body within the size limit.
    async fn fetch_http(&self, url: Url) -> Result<ReferenceImage, Refused> {
        let max = self.policy.max_bytes;
        let mut response = self
            .client
            .get(url)
            .header(ACCEPT, HeaderValue::from_static("image/*"))
            .send()
            .await
            .map_err(refusal_of)?;
        let status = response.status();
        if !status.is_success() {
            return Err(Refused(format!(
                "the reference image URL answered HTTP {}",
                status.as_u16()
            )));
        }
        let header_mime = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .map(media_type)
            .filter(|mime| !mime.is_empty());
        // Refuse an explicit non-image type before reading a byte of the body.
        if let Some(mime) = &header_mime {
            if !mime.starts_with("image/") && !is_unlabelled(mime) {
                return Err(Refused(format!(
                    "the reference image URL is not an image (content type `{}`)",
                    printable(mime)
                )));
            }
        }
        if let Some(length) = response.content_length() {
            if length > max as u64 {
                return Err(too_large(max));
            }
        }
        // Content-Length may be absent or lie, so the body is counted as it streams.
        let capacity = response
            .content_length()
            .map_or(0, |length| usize::try_from(length).unwrap_or(max).min(max));
        let mut body = BytesMut::with_capacity(capacity);
        while let Some(chunk) = response.chunk().await.map_err(refusal_of)? {
            if body.len().saturating_add(chunk.len()) > max {
                return Err(too_large(max));
            }
            body.extend_from_slice(&chunk);
        }
        if body.is_empty() {
            return Err(Refused(
                "the reference image URL returned an empty body".into(),
            ));
        }
        // The bytes decide: a declared `image/*` type on other content (an HTML error page
        // served as `image/png`) is not an image.
        let Some(mime) = sniff_mime(&body).map(str::to_owned) else {
            return Err(Refused(
                "the reference image URL is not an image (unrecognised content)".into(),
            ));
        };
        Ok(ReferenceImage {
            bytes: body.freeze(),
            mime,
        })
    }
}

/// A refusal with its client-facing message, carried through reqwest's error chain (from the
/// resolver and the redirect policy) so that it comes out as a 400 naming the reason.
#[derive(Debug)]
struct Refused(String);

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for Refused {}

impl Refused {
    fn into_error(self) -> Error {
        Error::invalid_param(PARAM, self.0)
    }
}

fn refuse(message: impl Into<String>) -> Error {
    Error::invalid_param(PARAM, message)
}

fn too_large(max: usize) -> Refused {
    Refused(format!(
        "the reference image is larger than the limit of {max} bytes"
    ))
}

/// The client-facing reason of a reqwest failure. reqwest's own message embeds the URL, which
/// may carry a token, so only our refusal or a generic kind is shown.
fn refusal_of(error: reqwest::Error) -> Refused {
    let mut source: Option<&(dyn StdError + 'static)> = Some(&error);
    while let Some(current) = source {
        if let Some(refused) = current.downcast_ref::<Refused>() {
            return Refused(refused.0.clone());
        }
        source = current.source();
    }
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else if error.is_redirect() {
        "bad redirect"
    } else if error.is_body() || error.is_decode() {
        "the body could not be read"
    } else {
        "the request failed"
    };
    tracing::debug!(error = %error.without_url(), "reference image fetch failed");
    Refused(format!("could not fetch the reference image: {kind}"))
}

/// A timeout as an operator wrote it: `15s`, `250ms`.
fn describe_duration(duration: Duration) -> String {
    if duration.subsec_millis() == 0 {
        format!("{}s", duration.as_secs())
    } else {
        format!("{}ms", duration.as_millis())
    }
}

/// The media type of a `Content-Type` value, without parameters, lower-cased.
fn media_type(value: &str) -> String {
    value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// Types servers use when they do not know: the bytes must then speak for themselves.
fn is_unlabelled(mime: &str) -> bool {
    matches!(mime, "application/octet-stream" | "binary/octet-stream")
}

/// `image/<token>`, with only characters that are safe to pass on (for example into a `data:`
/// URL for an upstream).
fn is_image_mime(mime: &str) -> bool {
    mime.strip_prefix("image/").is_some_and(|subtype| {
        !subtype.is_empty()
            && subtype
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    })
}

/// A client-supplied string, cut and stripped of control characters so a message stays sane.
fn printable(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(80).collect()
}

/// Decodes a `data:` URL: base64 only, an `image/*` type, at most `max` bytes.
fn decode_data_url(url: &str, max: usize) -> Result<ReferenceImage, Refused> {
    let rest = url.get(5..).unwrap_or_default();
    let Some((meta, payload)) = rest.split_once(',') else {
        return Err(Refused("the reference image data URL has no `,`".into()));
    };
    let mut params = meta.split(';');
    let declared = media_type(params.next().unwrap_or_default());
    let is_base64 = meta
        .rsplit(';')
        .next()
        .is_some_and(|last| last.trim().eq_ignore_ascii_case("base64"));
    if !is_base64 {
        return Err(Refused(
            "the reference image data URL must be base64-encoded (`;base64,`)".into(),
        ));
    }
    if !is_image_mime(&declared) {
        return Err(Refused(format!(
            "the reference image data URL must have an image/* media type, not `{}`",
            printable(&declared)
        )));
    }
    // A cheap bound before allocating: base64 is 4/3 of the data, and the factor 2 leaves
    // room for line breaks some encoders insert. The exact limit is checked after decoding.
    if payload.len() / 2 > max.saturating_add(2) {
        return Err(too_large(max));
    }
    let compact: Vec<u8> = payload
        .bytes()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let bytes = LENIENT_STANDARD
        .decode(&compact)
        .or_else(|_| LENIENT_URL_SAFE.decode(&compact))
        .map_err(|_| Refused("the reference image data URL is not valid base64".into()))?;
    if bytes.len() > max {
        return Err(too_large(max));
    }
    if bytes.is_empty() {
        return Err(Refused("the reference image data URL is empty".into()));
    }
    let Some(mime) = sniff_mime(&bytes).map(str::to_owned) else {
        return Err(Refused(format!(
            "the reference image data URL is not an image (its content is not `{}`)",
            printable(&declared)
        )));
    };
    Ok(ReferenceImage {
        bytes: bytes.into(),
        mime,
    })
}

/// Clients differ on padding; what matters is that the bytes decode.
const LENIENT_STANDARD: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);
const LENIENT_URL_SAFE: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

/// What a checked URL is for: it names the URL in refusals.
#[derive(Debug, Clone, Copy)]
enum Target {
    Reference,
    Callback,
}

impl Target {
    fn noun(self) -> &'static str {
        match self {
            Self::Reference => "the reference image",
            Self::Callback => "the callback",
        }
    }

    fn verb(self) -> &'static str {
        match self {
            Self::Reference => "fetched",
            Self::Callback => "called",
        }
    }
}

/// Checks what can be checked on a URL before connecting: the scheme, an IP-literal host,
/// metadata host names and the allow-list's ports. Names are checked again on their resolved
/// addresses by [`GuardedResolver`].
fn check_url(url: &Url, allow: &AllowList, target: Target) -> Result<(), Refused> {
    let noun = target.noun();
    let scheme = url.scheme();
    if scheme != "http" && scheme != "https" {
        return Err(Refused(format!(
            "{noun} URL must use http, https or data, not `{}`",
            printable(scheme)
        )));
    }
    let Some(host) = url.host() else {
        return Err(Refused(format!("{noun} URL has no host")));
    };
    let port = url.port_or_known_default().unwrap_or(80);
    match host {
        Host::Ipv4(ip) => check_literal(IpAddr::V4(ip), port, allow, target),
        Host::Ipv6(ip) => check_literal(IpAddr::V6(ip), port, allow, target),
        Host::Domain(name) => {
            let name = normalise_name(name);
            if allow.allows(&HostKey::Name(name.clone()), port) {
                return Ok(());
            }
            if is_metadata_name(&name) {
                return Err(Refused(format!(
                    "{noun} host `{}` is a cloud metadata service",
                    printable(&name)
                )));
            }
            // The resolver lets an allow-listed name reach private addresses on any port (it
            // does not see the port), so an entry restricted to other ports is enforced here.
            if allow.lists_name(&name) {
                return Err(Refused(format!(
                    "{noun} host `{}` is not allowed on port {port}",
                    printable(&name)
                )));
            }
            Ok(())
        }
    }
}

fn check_literal(ip: IpAddr, port: u16, allow: &AllowList, target: Target) -> Result<(), Refused> {
    if allow.allows(&HostKey::Ip(ip), port) {
        return Ok(());
    }
    match forbidden_reason(ip) {
        Some(reason) => Err(Refused(format!(
            "{} host `{ip}` is a {reason} address; only public addresses may be {}",
            target.noun(),
            target.verb()
        ))),
        None => Ok(()),
    }
}

/// Lower case, without the trailing dot of a fully-qualified name, so `Metadata.` matches.
fn normalise_name(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn is_metadata_name(name: &str) -> bool {
    METADATA_HOSTS.contains(&name)
}

/// Why `ip` must not be fetched, or `None` for a public address. IPv4-mapped, NAT64 and 6to4
/// IPv6 addresses are judged by the IPv4 address they carry; IPv6 outside global unicast
/// (`2000::/3`) is refused as reserved.
pub fn forbidden_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_reason(v4),
        IpAddr::V6(v6) => v6_reason(v6),
    }
}

fn v4_reason(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    let reason = match (a, b, c) {
        _ if ip.is_broadcast() => "broadcast",
        (0, _, _) => "unspecified",
        (127, _, _) => "loopback",
        (10, _, _) | (192, 168, _) => "private",
        (172, 16..=31, _) => "private",
        (169, 254, _) => "link-local",
        (100, 64..=127, _) => "shared (CGNAT)",
        (224..=239, _, _) => "multicast",
        (240..=255, _, _) => "reserved",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (198, 18..=19, _) => "benchmarking",
        (192, 0, 0) => "reserved",
        _ => return None,
    };
    Some(reason)
}

fn v6_reason(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return v4_reason(v4);
    }
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    let s = ip.segments();
    let embedded = |hi: u16, lo: u16| {
        let [h1, h2] = hi.to_be_bytes();
        let [l1, l2] = lo.to_be_bytes();
        Ipv4Addr::new(h1, h2, l1, l2)
    };
    // NAT64 (64:ff9b::/96) translates to the embedded IPv4 address, so that address decides.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return v4_reason(embedded(s[6], s[7]));
    }
    let reason = match s[0] {
        0xff00..=0xffff => "multicast",
        0xfe80..=0xfebf => "link-local",
        0xfc00..=0xfdff => "unique-local",
        // 6to4 tunnels to the IPv4 address in bits 16..48.
        0x2002 => return v4_reason(embedded(s[1], s[2])),
        0x2001 if s[1] == 0x0db8 => "documentation",
        // 2001::/23: IETF protocol assignments (Teredo, benchmarking, ORCHID, ...).
        0x2001 if s[1] < 0x0200 => "reserved",
        0x2000..=0x3fff => return None,
        _ => "reserved",
    };
    Some(reason)
}

/// A host in the allow-list or in a URL.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostKey {
    Ip(IpAddr),
    Name(String),
}

/// `FetchPolicy::allow_hosts`, parsed: each entry a host and, optionally, the only port it is
/// allowed on.
#[derive(Debug, Default)]
struct AllowList {
    entries: Vec<(HostKey, Option<u16>)>,
}

impl AllowList {
    fn parse(entries: &[String]) -> crate::Result<Self> {
        let entries = entries
            .iter()
            .map(|entry| {
                parse_allow_entry(entry.trim()).ok_or_else(|| {
                    Error::Internal(format!(
                        "reference fetch allow-list entry `{entry}` is not `host` or `host:port`"
                    ))
                })
            })
            .collect::<crate::Result<_>>()?;
        Ok(Self { entries })
    }

    fn allows(&self, host: &HostKey, port: u16) -> bool {
        self.entries
            .iter()
            .any(|(key, only)| key == host && only.is_none_or(|p| p == port))
    }

    /// Whether `name` appears at all, whatever its port: the resolver, which sees no port,
    /// lets such names reach private addresses.
    fn lists_name(&self, name: &str) -> bool {
        self.entries
            .iter()
            .any(|(key, _)| matches!(key, HostKey::Name(listed) if listed == name))
    }
}

fn parse_allow_entry(entry: &str) -> Option<(HostKey, Option<u16>)> {
    if entry.is_empty() || entry.contains(['/', '@', ' ']) {
        return None;
    }
    if let Ok(addr) = entry.parse::<SocketAddr>() {
        return Some((HostKey::Ip(addr.ip()), Some(addr.port())));
    }
    let bare = entry
        .strip_prefix('[')
        .and_then(|e| e.strip_suffix(']'))
        .unwrap_or(entry);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Some((HostKey::Ip(ip), None));
    }
    let (host, port) = match entry.rsplit_once(':') {
        Some((host, port)) => (host, Some(port.parse::<u16>().ok()?)),
        None => (entry, None),
    };
    // Let the URL parser normalise the host exactly as it normalises URLs (case, IPv4 forms).
    let url = Url::parse(&format!("http://{host}/")).ok()?;
    let key = match url.host()? {
        Host::Ipv4(ip) => HostKey::Ip(IpAddr::V4(ip)),
        Host::Ipv6(ip) => HostKey::Ip(IpAddr::V6(ip)),
        Host::Domain(name) => HostKey::Name(normalise_name(name)),
    };
    Some((key, port))
}

/// Resolves names with the system resolver and refuses those that reach a forbidden address,
/// so a connection can only ever go to an address that was checked (no window between check
/// and use, as there would be with a lookup before the request).
#[derive(Debug)]
struct GuardedResolver {
    allow: Arc<AllowList>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow = Arc::clone(&self.allow);
        let name = normalise_name(name.as_str());
        Box::pin(async move {
            let shown = printable(&name);
            if !allow.lists_name(&name) && is_metadata_name(&name) {
                return Err(Refused(format!(
                    "the reference image host `{shown}` is a cloud metadata service"
                ))
                .into());
            }
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0))
                .await
                .map_err(|_| {
                    Refused(format!(
                        "the reference image host `{shown}` does not resolve"
                    ))
                })?
                .collect();
            if addrs.is_empty() {
                return Err(Refused(format!(
                    "the reference image host `{shown}` does not resolve"
                ))
                .into());
            }
            if !allow.lists_name(&name) {
                // One forbidden address refuses the host: a name mixing public and private
                // records is suspicious, and the message stays predictable. The address
                // itself is not echoed, so internal DNS is not revealed.
                if let Some(reason) = addrs.iter().find_map(|a| forbidden_reason(a.ip())) {
                    return Err(Refused(format!(
                        "the reference image host `{shown}` resolves to a {reason} address; only public addresses may be fetched"
                    ))
                    .into());
                }
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(ip: &str) -> Option<&'static str> {
        forbidden_reason(ip.parse().unwrap())
    }

    /// Each address is refused for its reason.
    fn assert_refused(cases: &[(&str, &str)]) {
        for &(ip, expected) in cases {
            assert_eq!(reason(ip), Some(expected), "{ip}");
        }
    }

    /// Each address is public.
    fn assert_public(ips: &[&str]) {
        for ip in ips {
            assert_eq!(reason(ip), None, "{ip}");
        }
    }

    #[test]
    fn classifier_refuses_every_non_public_v4_range() {
        assert_refused(&[
            ("127.0.0.1", "loopback"),
            ("127.255.0.2", "loopback"),
            ("10.0.0.1", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local"),
            ("100.64.0.1", "shared (CGNAT)"),
            ("100.127.255.254", "shared (CGNAT)"),
            ("224.0.0.1", "multicast"),
            ("239.255.255.250", "multicast"),
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "unspecified"),
            ("255.255.255.255", "broadcast"),
            ("240.0.0.1", "reserved"),
            ("192.0.2.1", "documentation"),
            ("198.51.100.7", "documentation"),
            ("203.0.113.9", "documentation"),
            ("198.18.0.1", "benchmarking"),
            ("192.0.0.8", "reserved"),
        ]);
    }

    #[test]
    fn classifier_accepts_public_v4_next_to_the_ranges() {
        assert_public(&[
            "8.8.8.8",
            "1.1.1.1",
            "172.15.255.255",
            "172.32.0.1",
            "100.63.255.255",
            "100.128.0.1",
            "169.253.0.1",
            "192.167.1.1",
            "11.0.0.1",
            "223.255.255.255",
        ]);
    }

    #[test]
    fn classifier_refuses_non_public_v6_and_judges_embedded_v4() {
        assert_refused(&[
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fe80::1", "link-local"),
            ("febf::1", "link-local"),
            ("fc00::1", "unique-local"),
            ("fd12:3456::1", "unique-local"),
            ("ff02::1", "multicast"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:10.1.2.3", "private"),
            ("::ffff:169.254.169.254", "link-local"),
            ("64:ff9b::7f00:1", "loopback"),
            ("2002:0a00:0001::1", "private"),
            ("2001:db8::1", "documentation"),
            ("2001::1", "reserved"),
            ("::127.0.0.1", "reserved"),
            ("100::1", "reserved"),
            ("fec0::1", "reserved"),
        ]);
        assert_public(&[
            "2606:4700:4700::1111",
            "2a00:1450:4001::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:0808:0808::1",
        ]);
    }

    #[test]
    fn allow_list_entries_parse_with_and_without_ports() {
        let parse = |s: &str| parse_allow_entry(s).unwrap();
        let v4: IpAddr = "127.0.0.1".parse().unwrap();
        let v6: IpAddr = "::1".parse().unwrap();
        assert_eq!(parse("127.0.0.1"), (HostKey::Ip(v4), None));
        assert_eq!(parse("127.0.0.1:8080"), (HostKey::Ip(v4), Some(8080)));
        assert_eq!(parse("::1"), (HostKey::Ip(v6), None));
        assert_eq!(parse("[::1]"), (HostKey::Ip(v6), None));
        assert_eq!(parse("[::1]:9"), (HostKey::Ip(v6), Some(9)));
        assert_eq!(
            parse("LocalHost."),
            (HostKey::Name("localhost".into()), None)
        );
        assert_eq!(
            parse("fake.test:81"),
            (HostKey::Name("fake.test".into()), Some(81))
        );
        for bad in ["", "http://x", "x:notaport", "a b"] {
            assert_eq!(parse_allow_entry(bad), None, "{bad}");
        }
        assert!(AllowList::parse(&["x:99999".into()]).is_err());
    }

    #[test]
    fn urls_are_checked_for_scheme_literal_metadata_and_allowed_ports() {
        let allow = AllowList::parse(&["127.0.0.1:8080".into(), "fake.test:81".into()]).unwrap();
        let check = |u: &str| {
            check_url(&Url::parse(u).unwrap(), &allow, Target::Reference).map_err(|r| r.0)
        };
        assert!(check("http://127.0.0.1:8080/a.png").is_ok());
        assert!(check("https://example.com/a.png").is_ok());
        assert!(check("http://fake.test:81/").is_ok());
        for (url, needle) in [
            ("http://127.0.0.1:8081/a.png", "loopback"),
            ("http://2130706433/", "loopback"),
            ("http://[::ffff:127.0.0.1]/", "loopback"),
            ("http://10.0.0.1/", "private"),
            ("http://169.254.169.254/latest/meta-data", "link-local"),
            ("http://metadata.google.internal/", "metadata"),
            ("http://METADATA./", "metadata"),
            ("http://fake.test:82/", "port 82"),
            ("ftp://example.com/a.png", "`ftp`"),
            ("file:///etc/passwd", "`file`"),
        ] {
            let message = check(url).unwrap_err();
            assert!(message.contains(needle), "{url}: {message}");
        }
    }

    #[test]
    fn data_urls_decode_and_refuse_non_images() {
        let png = b"\x89PNG\r\n\x1a\nrest";
        let b64 = base64::engine::general_purpose::STANDARD.encode(png);
        let image = decode_data_url(&format!("data:image/png;base64,{b64}"), 1024).unwrap();
        assert_eq!(
            (&image.bytes[..], image.mime.as_str()),
            (&png[..], "image/png")
        );
        // The sniffed type wins over a wrong declaration; unpadded and wrapped base64 pass.
        let wrapped = format!(
            "data:image/jpeg;base64,{}\n{}",
            &b64[..4],
            b64[4..].trim_end_matches('=')
        );
        assert_eq!(decode_data_url(&wrapped, 1024).unwrap().mime, "image/png");
        for (url, needle) in [
            (format!("data:text/plain;base64,{b64}"), "image/*"),
            (format!("data:;base64,{b64}"), "image/*"),
            ("data:image/png,rawbytes".to_owned(), "base64"),
            ("data:image/png;base64,%%%%".to_owned(), "valid base64"),
            ("data:image/png;base64,".to_owned(), "empty"),
            ("data:image/png;base64".to_owned(), "`,`"),
            (format!("data:image/png;base64,{b64}"), "limit of 4 bytes"),
        ] {
            let max = if needle.starts_with("limit") { 4 } else { 1024 };
            let message = decode_data_url(&url, max).unwrap_err().0;
            assert!(message.contains(needle), "{url}: {message}");
        }
    }

    #[test]
    fn image_mime_check_accepts_only_clean_image_types() {
        assert!(is_image_mime("image/png"));
        assert!(is_image_mime("image/svg+xml"));
        assert!(!is_image_mime("image/"));
        assert!(!is_image_mime("text/html"));
        assert!(!is_image_mime("image/png\"><script>"));
    }
}
