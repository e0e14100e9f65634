//! Serving HTTP/1.1 on the listening socket under the connection limits: a deadline for a new
//! connection's request headers, for each request's body and for a kept-alive connection's
//! next request; at most `max_connections` open at once (when full, the connection that has
//! waited longest for a request is closed to make room, and if every connection is busy the
//! newcomer waits in the kernel's backlog); the open-file limit raised at start; a graceful
//! drain on shutdown. What is answered is the router's business, not this module's.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    future::Future,
    pin::{pin, Pin},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, PoisonError,
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    body::{Body, Bytes},
    extract::Request,
    Router,
};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{watch, Notify, OwnedSemaphorePermit, Semaphore},
    time::{Instant, Sleep},
};
use tower::ServiceExt as _;

use crate::config::ServerSettings;

/// File descriptors kept free of client connections for the database, stored images,
/// upstream calls and the process itself, when the open-file limit caps `max_connections`.
const RESERVED_FILES: u64 = 256;
/// How often a full listener, still without a free slot, closes another waiting connection.
const RESHED_EVERY: Duration = Duration::from_millis(250);
/// At most one warning about shed connections in this long; the counters keep every one.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// The limits connections are served under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Longest wait for a new connection's request headers.
    pub header_read_timeout: Duration,
    /// Longest wait for a request's whole body, from its headers.
    pub body_read_timeout: Duration,
    /// Longest a kept-alive connection waits for (and reads the headers of) its next request.
    pub idle_timeout: Duration,
    /// Most connections open at once.
    pub max_connections: usize,
    /// Longest wait, once shutting down, for busy connections to finish.
    pub drain_timeout: Duration,
}

impl ConnectionLimits {
    /// The limits `[server]` sets, with `max_connections` held under the open-file limit.
    pub fn from_settings(settings: &ServerSettings, open_files: Option<u64>) -> Self {
        let mut max_connections = settings.max_connections.min(Semaphore::MAX_PERMITS);
        if let Some(files) = open_files {
            let room =
                usize::try_from(files.saturating_sub(RESERVED_FILES).max(1)).unwrap_or(usize::MAX);
            if room < max_connections {
                tracing::warn!(
                    max_connections,
                    open_files = files,
                    "the open-file limit leaves room for {room} connections only; serving at most that many"
                );
                max_connections = room;
            }
        }
        Self {
            header_read_timeout: settings.header_read_timeout,
            body_read_timeout: settings.body_read_timeout,
            idle_timeout: settings.idle_timeout,
            max_connections,
            drain_timeout: settings.shutdown_drain,
        }
    }
}

/// Raises the open-file soft limit to the hard limit, so that connections, not a low default
/// (often 1,024), are what `max_connections` bounds. Returns the soft limit now in force
/// (`None` if unlimited or unknown).
pub fn raise_open_files_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
        let limit = getrlimit(Resource::Nofile);
        if limit.current != limit.maximum {
            let raised = Rlimit {
                current: limit.maximum,
                maximum: limit.maximum,
            };
            match setrlimit(Resource::Nofile, raised) {
                Ok(()) => {
                    tracing::info!(from = ?limit.current, to = ?limit.maximum, "raised the open-file limit");
                    return limit.maximum;
                }
                Err(error) => {
                    tracing::warn!(%error, soft = ?limit.current, "cannot raise the open-file limit");
                }
            }
        }
        limit.current
    }
    #[cfg(not(unix))]
    None
}

/// What one connection is doing, for its deadlines and for choosing whom to close when full.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Waiting for (or reading) the headers of a request since `since`; `first` if it is the
    /// connection's first request.
    Waiting { since: Instant, first: bool },
    /// Serving this many requests (hyper's HTTP/1 serves one at a time).
    Busy(usize),
}

/// One open connection, as the listener and its own task see it.
#[derive(Debug)]
struct Connection {
    phase: Mutex<Phase>,
    /// Woken to close the connection if it is still waiting for a request.
    evict: Notify,
}

impl Connection {
    fn new() -> Self {
        Self {
            phase: Mutex::new(Phase::Waiting {
                since: Instant::now(),
                first: true,
            }),
            evict: Notify::new(),
        }
    }

    fn phase(&self) -> Phase {
        *self.phase.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The connection waits for a request, and has since `since`.
    fn waiting_since(&self) -> Option<Instant> {
        match self.phase() {
            Phase::Waiting { since, .. } => Some(since),
            Phase::Busy(_) => None,
        }
    }

    /// When the wait for a request runs out; `None` while busy.
    fn deadline(&self, limits: &ConnectionLimits) -> Option<Instant> {
        match self.phase() {
            Phase::Waiting { since, first: true } => Some(since + limits.header_read_timeout),
            Phase::Waiting {
                since,
                first: false,
            } => Some(since + limits.idle_timeout),
            Phase::Busy(_) => None,
        }
    }

    /// A request's headers arrived: busy until the guard (held by its response body) drops.
    fn begin(self: &Arc<Self>) -> BusyGuard {
        let mut phase = self.phase.lock().unwrap_or_else(PoisonError::into_inner);
        *phase = match *phase {
            Phase::Busy(n) => Phase::Busy(n + 1),
            Phase::Waiting { .. } => Phase::Busy(1),
        };
        BusyGuard(self.clone())
    }
}

/// Marks a connection busy while a request is served, through the end of its response body.
#[derive(Debug)]
struct BusyGuard(Arc<Connection>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        let mut phase = self.0.phase.lock().unwrap_or_else(PoisonError::into_inner);
        *phase = match *phase {
            Phase::Busy(n) if n > 1 => Phase::Busy(n - 1),
            _ => Phase::Waiting {
                since: Instant::now(),
                first: false,
            },
        };
    }
}

/// Counters of what the limits did, since the process started.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// Connections closed to make room for a new one.
    pub shed: AtomicU64,
    /// Connections closed because a request's headers (or the next request) took too long.
    pub timed_out: AtomicU64,
    /// New connections that had to wait because every open one was busy.
    pub waited: AtomicU64,
    last_warning: Mutex<Option<Instant>>,
}

impl ConnectionStats {
    /// Logs a warning with the counters, at most once per [`WARN_EVERY`].
    fn warn(&self, what: &str) {
        let now = Instant::now();
        {
            let mut last = self
                .last_warning
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if last.is_some_and(|at| now.duration_since(at) < WARN_EVERY) {
                return;
            }
            *last = Some(now);
        }
        tracing::warn!(
            shed = self.shed.load(Ordering::Relaxed),
            waited = self.waited.load(Ordering::Relaxed),
            timed_out = self.timed_out.load(Ordering::Relaxed),
            accepted = self.accepted.load(Ordering::Relaxed),
            "connection limit reached: {what}"
        );
    }
}

/// The listener's state shared with every connection task.
#[derive(Debug)]
struct Shared {
    limits: ConnectionLimits,
    slots: Arc<Semaphore>,
    open: Mutex<BTreeMap<u64, Arc<Connection>>>,
    stats: Arc<ConnectionStats>,
}

impl Shared {
    /// Closes the connection that has waited longest for a request, if any waits; returns
    /// whether one was told to close.
    fn shed_one(&self) -> bool {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let oldest = open
            .values()
            .filter_map(|c| c.waiting_since().map(|since| (since, c)))
            .min_by_key(|(since, _)| *since);
        match oldest {
            Some((_, connection)) => {
                connection.evict.notify_one();
                true
            }
            None => false,
        }
    }
}

/// Serves `app` on `listener` under `limits` until `shutdown` completes, then stops
/// accepting, closes connections waiting for a request and lets busy ones finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    stats: Arc<ConnectionStats>,
    shutdown: impl Future<Output = ()>,
) {
    let shared = Arc::new(Shared {
        limits,
        slots: Arc::new(Semaphore::new(limits.max_connections.max(1))),
        open: Mutex::new(BTreeMap::new()),
        stats,
    });
    let (stop, stopped) = watch::channel(false);
    let mut shutdown = Box::pin(shutdown);
    let mut next_id = 0_u64;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of file descriptors (or a connection reset before its accept): back
                // off a little instead of spinning on an error that persists.
                tracing::warn!(%error, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        shared.stats.accepted.fetch_add(1, Ordering::Relaxed);
        // Answers are written whole, often in several writes (an image's JSON is cut around
        // its base64): Nagle's algorithm would hold the last write back for the client's
        // delayed ACK, 40 ms.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "setting TCP_NODELAY failed");
        }
        let slot = if let Ok(slot) = shared.slots.clone().try_acquire_owned() {
            slot
        } else {
            if shared.shed_one() {
                shared.stats.shed.fetch_add(1, Ordering::Relaxed);
                shared
                    .stats
                    .warn("closed the connections that waited longest for a request");
            } else {
                shared.stats.waited.fetch_add(1, Ordering::Relaxed);
                shared
                    .stats
                    .warn("every connection is busy; new connections wait until one ends");
            }
            let Some(slot) = wait_for_slot(&shared, shutdown.as_mut()).await else {
                break;
            };
            slot
        };
        next_id += 1;
        let connection = Arc::new(Connection::new());
        shared
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(next_id, connection.clone());
        let (shared, app, stopped, id) = (shared.clone(), app.clone(), stopped.clone(), next_id);
        tokio::spawn(async move {
            serve_connection(&shared, stream, app, connection, stopped).await;
            shared
                .open
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&id);
            drop(slot);
        });
    }
    drop(listener);
    let _ = stop.send(true);
    // Every connection holds a slot until it ends: having them all back means all ended.
    let all = u32::try_from(shared.limits.max_connections.max(1)).unwrap_or(u32::MAX);
    let drained = tokio::time::timeout(shared.limits.drain_timeout, shared.slots.acquire_many(all));
    if drained.await.is_err() {
        let busy = shared
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        tracing::warn!(
            busy,
            drain_timeout = ?shared.limits.drain_timeout,
            "requests still in flight when the drain timed out are abandoned"
        );
    }
}

/// A connection slot once one frees up; `None` if the server stops first. A connection told
/// to close may have just become busy instead, so while none frees up the one waiting longest
/// for a request is asked again, every [`RESHED_EVERY`].
async fn wait_for_slot(
    shared: &Shared,
    mut shutdown: Pin<&mut impl Future<Output = ()>>,
) -> Option<OwnedSemaphorePermit> {
    loop {
        tokio::select! {
            slot = shared.slots.clone().acquire_owned() => return slot.ok(),
            () = tokio::time::sleep(RESHED_EVERY) => {
                if shared.shed_one() {
                    shared.stats.shed.fetch_add(1, Ordering::Relaxed);
                }
            }
            () = &mut shutdown => return None,
        }
    }
}

/// Serves one connection until it ends, runs out of time waiting for a request, is shed, or
/// the server stops.
async fn serve_connection(
    shared: &Shared,
    stream: TcpStream,
    app: Router,
    connection: Arc<Connection>,
    mut stopped: watch::Receiver<bool>,
) {
    let limits = shared.limits;
    let service = hyper::service::service_fn({
        let connection = connection.clone();
        move |request: hyper::Request<Incoming>| {
            let busy = connection.begin();
            let app = app.clone();
            let request: Request =
                request.map(|body| Body::new(Deadline::new(body, limits.body_read_timeout)));
            async move {
                let response = match app.oneshot(request).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                };
                Ok::<_, Infallible>(response.map(|body| Body::new(Tracked { body, _busy: busy })))
            }
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    // The header deadlines are kept here (hyper's would also cut the idle wait short).
    builder.timer(TokioTimer::new()).header_read_timeout(None);
    let mut conn = pin!(builder.serve_connection(TokioIo::new(stream), service));
    let mut draining = false;
    loop {
        // While busy, look again after the shortest wait: the request may end any time.
        let wake = connection.deadline(&limits).unwrap_or_else(|| {
            Instant::now() + limits.header_read_timeout.min(limits.idle_timeout)
        });
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, "connection ended with an error");
                }
                return;
            }
            () = tokio::time::sleep_until(wake) => {
                if connection.deadline(&limits).is_some_and(|at| at <= Instant::now()) {
                    shared.stats.timed_out.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!("closed a connection that sent no request in time");
                    return;
                }
            }
            () = connection.evict.notified() => {
                if connection.waiting_since().is_some() {
                    return;
                }
            }
            changed = stopped.changed(), if !draining => {
                if changed.is_err() || *stopped.borrow() {
                    if connection.waiting_since().is_some() {
                        return;
                    }
                    // Finish the request in flight, then close.
                    conn.as_mut().graceful_shutdown();
                    draining = true;
                }
            }
        }
    }
}

/// A request body that must arrive whole within its deadline; after it, reading fails (the
/// handler answers 400 and the connection is closed, its body unread).
struct Deadline {
    body: Incoming,
    sleep: Pin<Box<Sleep>>,
}

impl Deadline {
    fn new(body: Incoming, within: Duration) -> Self {
        Self {
            body,
            sleep: Box::pin(tokio::time::sleep(within)),
        }
    }
}

impl HttpBody for Deadline {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.body).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        match self.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                Poll::Ready(Some(Err("the request body was not sent in time".into())))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A response body that keeps its connection marked busy until it is sent (or dropped).
struct Tracked {
    body: Body,
    _busy: BusyGuard,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_settings(max_connections: usize) -> ServerSettings {
        ServerSettings {
            header_read_timeout: Duration::from_secs(1),
            body_read_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(3),
            max_connections,
            cpu_workers: 1,
            generations: imgproxy_core::gateway::GenerationLimits::default(),
            shutdown_drain: Duration::from_secs(4),
        }
    }

    #[test]
    fn connections_are_held_under_the_open_file_limit() {
        let limits = ConnectionLimits::from_settings(&server_settings(4096), Some(1024));
        assert_eq!(limits.max_connections, 1024 - 256);
        let limits = ConnectionLimits::from_settings(&server_settings(512), Some(1024));
        assert_eq!(limits.max_connections, 512);
        let limits = ConnectionLimits::from_settings(&server_settings(512), None);
        assert_eq!(
            (limits.max_connections, limits.idle_timeout),
            (512, Duration::from_secs(3))
        );
        // A limit lower than the reserve still lets one connection in.
        let limits = ConnectionLimits::from_settings(&server_settings(512), Some(100));
        assert_eq!(limits.max_connections, 1);
    }

    #[tokio::test]
    async fn a_connection_waits_for_its_first_request_then_idles_between_requests() {
        let limits = ConnectionLimits::from_settings(&server_settings(8), None);
        let connection = Arc::new(Connection::new());
        let accepted = Instant::now();
        let first = connection.deadline(&limits).unwrap();
        assert!(first <= accepted + limits.header_read_timeout);
        let busy = connection.begin();
        assert_eq!(connection.deadline(&limits), None);
        assert!(connection.waiting_since().is_none());
        drop(busy);
        // Now the idle timeout (3 s) counts, from the end of the request, not the header one.
        let next = connection.deadline(&limits).unwrap();
        assert!(next >= accepted + limits.idle_timeout, "{next:?}");
        assert!(connection.waiting_since().is_some());
    }
}
