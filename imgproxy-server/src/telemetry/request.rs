//! Every request's id, and the one middleware that observes a request from its head to its
//! last body byte: it tags the request's span and answer with the id, then writes the access
//! log line and the HTTP metrics once the body has been sent (or the client went away).

use std::{
    fmt,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, PoisonError,
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::{
    body::{Body, Bytes},
    extract::{MatchedPath, Request, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode},
    middleware::Next,
    response::Response,
};
use http_body::{Body as _, Frame, SizeHint};
use tracing::Instrument as _;

use imgproxy_core::Fault;

use super::metrics;
use crate::{edge::CACHE_STATUS, error::ErrorClass, state::AppState};

/// The header that carries the id, in both directions.
pub const REQUEST_ID: &str = "x-request-id";
/// Longest incoming id taken as it is; a longer or odd one is replaced by a fresh id.
pub const MAX_INCOMING_CHARS: usize = 128;
/// The route label of requests no route matched (the URL API's path form names its own).
const UNMATCHED: &str = "fallback";

/// A request's id: the caller's `X-Request-Id` when it is sane, else one made here. It names
/// the request in the answer's `x-request-id`, in every log line and in what the request
/// leaves behind (ledger rows, tasks, webhooks).
#[derive(Debug, Clone)]
pub struct RequestId {
    /// What is shown: the caller's id, or `unique`.
    shown: Arc<str>,
    /// Made here, unique across instances and restarts.
    unique: Arc<str>,
}

impl RequestId {
    /// The caller's id from `headers` when it has 1 to [`MAX_INCOMING_CHARS`] characters out of
    /// letters, digits and `-_.:+/=@`; else a fresh one.
    pub fn from_headers(headers: &HeaderMap, instance_id: &str) -> Self {
        let unique: Arc<str> = new_unique_id(instance_id).into();
        let incoming = headers
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .filter(|id| is_sane(id));
        Self {
            shown: incoming.map_or_else(|| unique.clone(), Arc::from),
            unique,
        }
    }

    /// The id as shown to the caller and in logs.
    pub fn as_str(&self) -> &str {
        &self.shown
    }

    /// The id of the request's charge: unique per request even when a caller repeats its own
    /// id (a charge id, once used, is never charged again), and starting with the shown id.
    pub fn charge_id(&self) -> String {
        if Arc::ptr_eq(&self.shown, &self.unique) {
            self.unique.to_string()
        } else {
            format!("{}~{}", self.shown, self.unique)
        }
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

fn is_sane(id: &str) -> bool {
    (1..=MAX_INCOMING_CHARS).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:+/=@".contains(&b))
}

/// Instance id, clock, counter: unique across instances and restarts.
fn new_unique_id(instance_id: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "req_{instance_id}_{nanos:x}_{:x}",
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A request's id and what the handlers learn about it that its access log line reports: who
/// paid, which model served, what it cost, how long the upstream took. Shared through the
/// request's extensions; each fact is set by whoever knows it.
#[derive(Debug, Clone)]
pub struct RequestNote {
    id: RequestId,
    route: Option<Arc<str>>,
    noted: Arc<Mutex<Noted>>,
}

#[derive(Debug, Default)]
struct Noted {
    key_id: Option<String>,
    model: Option<String>,
    credits: Option<u64>,
    route: Option<&'static str>,
    upstream: Duration,
}

impl RequestNote {
    /// A note for the request `id` to the route template `route`, with nothing learnt yet.
    pub fn new(id: RequestId, route: Option<&str>) -> Self {
        Self {
            id,
            route: route.map(Arc::from),
            noted: Arc::default(),
        }
    }

    /// The route template the request matched (`/v1/chat/completions`): the surface it came
    /// through, which its charge records.
    pub fn matched_route(&self) -> Option<&str> {
        self.route.as_deref()
    }

    /// The request's id.
    pub fn id(&self) -> &RequestId {
        &self.id
    }

    fn with<T>(&self, f: impl FnOnce(&mut Noted) -> T) -> T {
        f(&mut self.noted.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The key that made (and pays for) the request.
    pub fn key(&self, key_id: &str) {
        self.with(|n| n.key_id = Some(key_id.to_owned()));
    }

    /// The model that served it, and the credits charged (`None` for unmetered callers).
    pub fn served(&self, model: &str, credits: Option<u64>, upstream: Duration) {
        self.with(|n| {
            n.model = Some(model.to_owned());
            n.credits = credits;
            n.upstream = upstream;
        });
    }

    /// The model asked for, before it is served (a stream's answer starts before that).
    pub fn model(&self, model: &str) {
        self.with(|n| n.model = Some(model.to_owned()));
    }

    /// A route label for a request that no route template matched (the URL API's path form).
    pub fn route(&self, route: &'static str) {
        self.with(|n| n.route = Some(route));
    }
}

/// The outermost middleware: gives the request its id and span, puts `x-request-id` on the
/// answer, and reports the request when its body is done.
pub async fn observe(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let key_labels = state.key_labels;
    let start = Instant::now();
    let id = RequestId::from_headers(request.headers(), &state.instance_id);
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let note = RequestNote::new(id.clone(), route.as_deref());
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %method,
        route = route.as_deref().unwrap_or(UNMATCHED),
    );
    super::traces::continue_trace(&span, request.headers());
    request.extensions_mut().insert(note.clone());
    let response = next.run(request).instrument(span.clone()).await;
    let (mut parts, body) = response.into_parts();
    if let Ok(value) = HeaderValue::from_str(id.as_str()) {
        parts.headers.insert(REQUEST_ID, value);
    }
    let report = Report {
        start,
        method,
        route,
        status: parts.status,
        error: parts.extensions.get::<ErrorClass>().map(|class| class.0),
        cache: parts
            .headers
            .get(CACHE_STATUS)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        note,
        key_labels,
    };
    Response::from_parts(
        parts,
        Body::new(Observed {
            inner: body,
            bytes: 0,
            span,
            report: Some(report),
        }),
    )
}

/// What is known of a request when its answer's head is ready.
#[derive(Debug)]
struct Report {
    start: Instant,
    method: Method,
    route: Option<String>,
    status: StatusCode,
    error: Option<(Fault, &'static str)>,
    cache: Option<String>,
    note: RequestNote,
    key_labels: bool,
}

impl Report {
    fn finish(self, span: &tracing::Span, bytes: u64, complete: bool) {
        let elapsed = self.start.elapsed();
        let noted = self.note.with(std::mem::take);
        let route = self.route.as_deref().or(noted.route).unwrap_or(UNMATCHED);
        metrics::http_request(
            route,
            self.method.as_str(),
            self.status,
            elapsed,
            elapsed.saturating_sub(noted.upstream),
            bytes,
        );
        if let Some((fault, kind)) = self.error {
            metrics::error(fault, kind);
        }
        if let (true, Some(key_id), Some(credits)) = (self.key_labels, &noted.key_id, noted.credits)
        {
            metrics::key_credits(key_id, credits);
        }
        super::traces::answered(span, route, self.status);
        span.in_scope(|| {
            tracing::info!(
                target: "imgproxy::access",
                method = %self.method,
                route,
                status = self.status.as_u16(),
                duration_ms = millis(elapsed),
                upstream_ms = millis(noted.upstream),
                bytes,
                complete,
                key_id = noted.key_id.as_deref(),
                model = noted.model.as_deref(),
                cache = self.cache.as_deref(),
                credits = noted.credits,
                "request"
            );
        });
    }
}

/// Milliseconds to the microsecond, for log lines.
fn millis(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1e6).round() / 1e3
}

/// The answer's body, counted, polled in the request's span (a stream's work runs in it); the
/// report goes out when it ends or is dropped unfinished.
struct Observed {
    inner: Body,
    bytes: u64,
    span: tracing::Span,
    report: Option<Report>,
}

impl http_body::Body for Observed {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        let polled = this
            .span
            .in_scope(|| Pin::new(&mut this.inner).poll_frame(cx));
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes += data.len() as u64;
                }
            }
            Poll::Ready(None) => self.finish(true),
            Poll::Ready(Some(Err(_))) => self.finish(false),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Observed {
    fn finish(&mut self, complete: bool) {
        if let Some(report) = self.report.take() {
            report.finish(&self.span, self.bytes, complete);
        }
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        // An empty body may never be polled; any other body dropped early lost its client.
        let complete = self.inner.is_end_stream();
        self.finish(complete);
    }
}

impl fmt::Debug for Observed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Observed")
            .field("bytes", &self.bytes)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id_for(incoming: Option<&str>) -> RequestId {
        let mut headers = HeaderMap::new();
        if let Some(value) = incoming {
            headers.insert(REQUEST_ID, HeaderValue::from_str(value).unwrap());
        }
        RequestId::from_headers(&headers, "inst")
    }

    #[test]
    fn a_sane_incoming_id_is_shown_and_prefixes_a_unique_charge_id() {
        let id = id_for(Some("trace-7f3a:b/c=="));
        assert_eq!(id.as_str(), "trace-7f3a:b/c==");
        let first = id.charge_id();
        assert!(first.starts_with("trace-7f3a:b/c==~req_inst_"), "{first}");
        assert_ne!(first, id_for(Some("trace-7f3a:b/c==")).charge_id());
    }

    #[test]
    fn an_odd_or_long_incoming_id_is_replaced() {
        for odd in [
            "has space",
            "quote\"d",
            "",
            &"x".repeat(MAX_INCOMING_CHARS + 1),
        ] {
            let id = id_for(Some(odd));
            assert!(id.as_str().starts_with("req_inst_"), "{odd:?} → {id}");
            assert_eq!(id.charge_id(), id.as_str());
        }
        let id = id_for(None);
        assert!(id.as_str().starts_with("req_inst_"));
        assert_ne!(id.as_str(), id_for(None).as_str());
    }
}
