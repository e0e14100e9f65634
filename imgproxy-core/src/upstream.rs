//! Helpers every provider crate shares for talking to upstream HTTP APIs: the client, status
//! and transport error mapping, `Retry-After`, capped downloads, and polling with a deadline,
//! backoff and an upstream cancel when the caller gives up.

use std::{future::Future, pin::Pin, task::Poll, time::Duration};

use bytes::Bytes;
use reqwest::header::HeaderMap;

use crate::{catalog::ModelSpec, ProviderError};

/// The `User-Agent` of upstream calls.
pub const USER_AGENT: &str = concat!("imgproxy/", env!("CARGO_PKG_VERSION"));
/// Largest generated image downloaded from an upstream URL.
pub const DEFAULT_MAX_DOWNLOAD_BYTES: usize = 50 * 1024 * 1024;
/// Longest upstream text carried into an error message.
const MAX_MESSAGE_CHARS: usize = 300;

/// An HTTP client for upstream APIs: rustls, `timeout` per request, no environment proxy
/// surprises beyond reqwest's defaults.
pub fn http_client(timeout: Duration) -> Result<reqwest::Client, ProviderError> {
    reqwest::Client::builder()
        .timeout(timeout)
        .user_agent(USER_AGENT)
        .build()
        .map_err(|e| failed(format!("cannot build the HTTP client: {}", chain(&e))))
}

/// A `Failed` error.
pub fn failed(message: impl Into<String>) -> ProviderError {
    ProviderError::Failed {
        message: message.into(),
    }
}

/// `message` cut to a length fit for a client's error.
pub fn short(message: &str) -> String {
    let mut text: String = message.chars().take(MAX_MESSAGE_CHARS).collect();
    if message.chars().count() > MAX_MESSAGE_CHARS {
        text.push('…');
    }
    text
}

/// Maps a failure to talk to the upstream at all. The URL is left out: an operator's
/// endpoint, or a signed download URL, is none of a client's business.
pub fn transport_error(error: reqwest::Error) -> ProviderError {
    if error.is_timeout() {
        return ProviderError::Timeout;
    }
    let what = if error.is_connect() {
        "cannot reach upstream"
    } else if error.is_body() || error.is_decode() {
        "reading the upstream response failed"
    } else {
        "upstream request failed"
    };
    failed(format!("{what}: {}", chain(&error.without_url())))
}

/// An error and its sources, as one line.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// How long the upstream asked us to wait: `retry-after-ms`, else `Retry-After` in seconds.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let number = |name: &str| headers.get(name)?.to_str().ok()?.trim().parse::<f64>().ok();
    let valid = |v: f64| v.is_finite() && v >= 0.0;
    if let Some(ms) = number("retry-after-ms").filter(|v| valid(*v)) {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    number("retry-after")
        .filter(|v| valid(*v))
        .map(Duration::from_secs_f64)
}

/// The error for a non-2xx upstream status, by the usual meaning of the status:
/// 400/409/422 → the upstream's `message` as an invalid request; 401/403 → our key was
/// rejected (the upstream's text is dropped: it may echo the key); 429 → rate limited;
/// anything else → failed. Providers handle their own moderation signals before this.
pub fn status_error(status: u16, retry_after: Option<Duration>, message: &str) -> ProviderError {
    match status {
        400 | 409 | 422 => ProviderError::InvalidRequest {
            message: format!("upstream rejected the request: {}", short(message)),
            param: None,
            code: Some("upstream_invalid_request".into()),
        },
        401 | 403 => ProviderError::Unauthorized { status },
        429 => ProviderError::RateLimited { retry_after },
        _ if message.is_empty() => failed(format!("upstream answered HTTP {status}")),
        _ => failed(format!(
            "upstream answered HTTP {status}: {}",
            short(message)
        )),
    }
}

/// Downloads a generated image from `url` (no credentials sent), within `max_bytes`.
/// Returns the bytes and the `Content-Type`.
pub async fn download(
    client: &reqwest::Client,
    url: &str,
    max_bytes: usize,
) -> Result<(Bytes, Option<String>), ProviderError> {
    let mut response = client.get(url).send().await.map_err(transport_error)?;
    let status = response.status();
    if !status.is_success() {
        return Err(failed(format!(
            "downloading a generated image failed with HTTP {}",
            status.as_u16()
        )));
    }
    let too_large = || {
        failed(format!(
            "a generated image is larger than {max_bytes} bytes"
        ))
    };
    if response
        .content_length()
        .is_some_and(|length| length > max_bytes as u64)
    {
        return Err(too_large());
    }
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut bytes = Vec::new();
    // Counted as it streams: `Content-Length` may be absent or wrong.
    while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
        if bytes.len() + chunk.len() > max_bytes {
            return Err(too_large());
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok((Bytes::from(bytes), content_type))
}

/// How an asynchronous upstream job is polled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollPolicy {
    /// Total time allowed from submission; past it the job is cancelled (504).
    pub deadline: Duration,
    /// First wait between polls.
    pub initial_interval: Duration,
    /// Longest wait between polls (the interval grows by half each poll up to this).
    pub max_interval: Duration,
}

impl PollPolicy {
    /// Default total deadline of a job.
    pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(300);

    /// The policy for `model`: its catalog `deadline_secs`, else the default.
    pub fn for_model(model: &ModelSpec) -> Self {
        Self {
            deadline: model
                .deadline_secs
                .map_or(Self::DEFAULT_DEADLINE, Duration::from_secs),
            initial_interval: Duration::from_millis(500),
            max_interval: Duration::from_secs(5),
        }
    }

    /// Calls `step` until it returns `Poll::Ready`, sleeping between calls with backoff.
    /// Returns `Timeout` once the deadline would pass; errors from `step` end the loop.
    pub async fn run<T, F, Fut>(&self, mut step: F) -> Result<T, ProviderError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Poll<T>, ProviderError>>,
    {
        let started = tokio::time::Instant::now();
        let mut interval = self.initial_interval;
        loop {
            if let Poll::Ready(value) = step().await? {
                return Ok(value);
            }
            let left = self.deadline.saturating_sub(started.elapsed());
            if left.is_zero() {
                return Err(ProviderError::Timeout);
            }
            tokio::time::sleep(interval.min(left)).await;
            interval = (interval * 3 / 2).min(self.max_interval);
        }
    }
}

/// A boxed cancel action.
type CancelFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Cancels an upstream job when dropped while armed: on a deadline, an error, or the client
/// going away (the request future is dropped). [`CancelOnDrop::disarm`] once the job ended.
pub struct CancelOnDrop {
    cancel: Option<CancelFuture>,
}

impl std::fmt::Debug for CancelOnDrop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CancelOnDrop")
            .field("armed", &self.cancel.is_some())
            .finish()
    }
}

impl CancelOnDrop {
    /// Arms `cancel`, to run on drop.
    pub fn new(cancel: impl Future<Output = ()> + Send + 'static) -> Self {
        Self {
            cancel: Some(Box::pin(cancel)),
        }
    }

    /// The job reached a terminal state: nothing to cancel.
    pub fn disarm(mut self) {
        self.cancel = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let Some(cancel) = self.cancel.take() else {
            return;
        };
        // Drop cannot await; the cancel runs on its own, bounded by the client's timeout.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(cancel);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    };

    use reqwest::header::HeaderValue;

    use super::*;

    #[test]
    fn retry_after_prefers_milliseconds() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_static("20"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(20)));
        headers.insert("retry-after-ms", HeaderValue::from_static("1500"));
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(1500)));
        headers.insert("retry-after-ms", HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(20)));
    }

    #[test]
    fn statuses_map_by_meaning() {
        assert!(matches!(
            status_error(422, None, "bad"),
            ProviderError::InvalidRequest { .. }
        ));
        assert_eq!(
            status_error(401, None, "key sk-123"),
            ProviderError::Unauthorized { status: 401 }
        );
        assert_eq!(
            status_error(429, Some(Duration::from_secs(3)), ""),
            ProviderError::RateLimited {
                retry_after: Some(Duration::from_secs(3))
            }
        );
        assert!(
            matches!(status_error(503, None, &"x".repeat(1000)), ProviderError::Failed { message } if message.len() < 400)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn poll_backs_off_and_gives_up_at_the_deadline() {
        let policy = PollPolicy {
            deadline: Duration::from_secs(10),
            initial_interval: Duration::from_secs(1),
            max_interval: Duration::from_secs(3),
        };
        let calls = AtomicUsize::new(0);
        let result: Result<(), _> = policy
            .run(|| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok(Poll::Pending)
            })
            .await;
        assert_eq!(result, Err(ProviderError::Timeout));
        // Waits of 1, 1.5, 2.25, 3, then 2.25 left: 6 polls in 10 s.
        assert_eq!(calls.load(Ordering::SeqCst), 6);
        let ready = policy.run(|| async { Ok(Poll::Ready(7)) }).await;
        assert_eq!(ready, Ok(7));
    }

    #[tokio::test]
    async fn cancel_runs_when_dropped_armed_and_not_when_disarmed() {
        let cancelled = Arc::new(AtomicUsize::new(0));
        let counter = cancelled.clone();
        drop(CancelOnDrop::new(async move {
            counter.fetch_add(1, Ordering::SeqCst);
        }));
        let counter = cancelled.clone();
        CancelOnDrop::new(async move {
            counter.fetch_add(1, Ordering::SeqCst);
        })
        .disarm();
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(cancelled.load(Ordering::SeqCst), 1);
    }
}
