//! Asynchronous upstream jobs: polling with a deadline and backoff ([`PollPolicy`]), and the
//! upstream cancel of a job given up on ([`CancelOnDrop`]). Which answer means "done" is the
//! adapter's to say.

use std::{future::Future, pin::Pin, task::Poll, time::Duration};

use reqwest::RequestBuilder;

use super::failure::transport_error;
use crate::{ModelSpec, ProviderError};

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
    /// Returns `Timeout` once the deadline would pass. A step that could not reach the
    /// upstream, was rate limited or timed out only delays the next poll: the job is already
    /// running (and paid for), and a poll bills nothing. Other errors from `step` end the loop.
    pub async fn run<T, F, Fut>(&self, mut step: F) -> Result<T, ProviderError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Poll<T>, ProviderError>>,
    {
        let started = tokio::time::Instant::now();
        let mut interval = self.initial_interval;
        loop {
            match step().await {
                Ok(Poll::Ready(value)) => return Ok(value),
                Ok(Poll::Pending) => {}
                Err(error) if is_transient(&error) => {
                    tracing::warn!(%error, "polling an upstream job failed; polling on");
                }
                Err(error) => return Err(error),
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

/// A poll failure that says nothing about the job: the next poll may well succeed.
fn is_transient(error: &ProviderError) -> bool {
    matches!(error, ProviderError::Timeout) || (error.is_pre_start() && !error.disables_key())
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

    /// Arms the upstream's cancel call `request` (keyed, built by the adapter). Nobody waits
    /// for it, so its outcome is only logged.
    pub fn send(provider: &'static str, request: RequestBuilder) -> Self {
        Self::new(async move {
            match request.send().await {
                Ok(response) if response.status().is_success() => {
                    tracing::info!(provider, "cancelled an abandoned upstream job");
                }
                Ok(response) => {
                    let status = response.status().as_u16();
                    tracing::warn!(provider, status, "the upstream refused a cancel");
                }
                Err(error) => {
                    let error = transport_error(error);
                    tracing::warn!(provider, %error, "cancelling an upstream job failed");
                }
            }
        })
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

    use super::*;

    /// A policy of whole seconds.
    fn policy(deadline: u64, initial_interval: u64, max_interval: u64) -> PollPolicy {
        PollPolicy {
            deadline: Duration::from_secs(deadline),
            initial_interval: Duration::from_secs(initial_interval),
            max_interval: Duration::from_secs(max_interval),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn poll_backs_off_and_gives_up_at_the_deadline() {
        let policy = policy(10, 1, 3);
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

    #[tokio::test(start_paused = true)]
    async fn transient_poll_failures_poll_on_and_others_end_the_wait() {
        let policy = policy(60, 1, 1);
        let calls = AtomicUsize::new(0);
        let ready = policy
            .run(|| async {
                match calls.fetch_add(1, Ordering::SeqCst) {
                    0 => Err(ProviderError::Timeout),
                    1 => Err(ProviderError::RateLimited { retry_after: None }),
                    2 => Err(ProviderError::Unavailable {
                        message: "refused".into(),
                        retry_after: None,
                    }),
                    _ => Ok(Poll::Ready("done")),
                }
            })
            .await;
        assert_eq!(ready, Ok("done"));
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        let rejected: Result<(), _> = policy
            .run(|| async { Err(ProviderError::Unauthorized { status: 401 }) })
            .await;
        assert_eq!(rejected, Err(ProviderError::Unauthorized { status: 401 }));
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
