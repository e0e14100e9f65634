//! The bounded pool for CPU-heavy work (drawing, encoding and converting images): at most
//! [`workers`] jobs run at once across the process, each on a blocking thread, and a job whose
//! caller went away is told so through its [`Cancel`] flag. Async code never runs CPU work
//! directly; it goes through [`run`]. What the jobs compute is not here.

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc, OnceLock,
};

use tokio::sync::Semaphore;

use crate::{Error, Result};

/// The pool's permits and its size; set once, by [`configure`] or on first use.
static POOL: OnceLock<(Arc<Semaphore>, usize)> = OnceLock::new();

/// Jobs that may run at once when nobody configured it: one per CPU, because more only adds
/// memory (every job holds a whole decoded image) without finishing sooner.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
}

/// Sizes the pool to `workers` jobs at once (at least 1). Only the first call before any job
/// ran counts: the pool is process-wide. Returns whether this call set the size.
pub fn configure(workers: usize) -> bool {
    let workers = workers.max(1);
    POOL.set((Arc::new(Semaphore::new(workers)), workers))
        .is_ok()
}

/// Jobs that may run at once.
pub fn workers() -> usize {
    pool().1
}

fn pool() -> &'static (Arc<Semaphore>, usize) {
    POOL.get_or_init(|| {
        let workers = default_workers();
        (Arc::new(Semaphore::new(workers)), workers)
    })
}

/// Set when the caller of a job stopped waiting for it (its request was dropped): a long job
/// checks it between rows or tiles and gives up.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    /// Whether the job's caller is gone.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Cancels the job when the future awaiting it is dropped before it finished.
struct CancelOnDrop(Option<Cancel>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(cancel) = self.0.take() {
            cancel.cancel();
        }
    }
}

/// Runs `job` on a blocking thread once the pool has room, and waits for its result. If the
/// returned future is dropped (the request went away), a job still waiting never starts and a
/// running one sees [`Cancel::is_cancelled`]. A job that panicked is an internal error.
pub async fn run<T, F>(job: F) -> Result<T>
where
    F: FnOnce(&Cancel) -> T + Send + 'static,
    T: Send + 'static,
{
    let cancel = Cancel::default();
    let mut guard = CancelOnDrop(Some(cancel.clone()));
    // The semaphore is never closed, so acquiring only waits.
    let permit = pool()
        .0
        .clone()
        .acquire_owned()
        .await
        .map_err(|e| Error::Internal(format!("the CPU pool is closed: {e}")))?;
    let result = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        job(&cancel)
    })
    .await
    .map_err(|e| Error::Internal(format!("a CPU job failed: {e}")));
    // Finished: nothing left to cancel.
    guard.0 = None;
    result
}

#[cfg(test)]
mod tests {
    use std::{
        sync::atomic::{AtomicUsize, Ordering},
        time::Duration,
    };

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jobs_run_at_most_workers_at_once_and_a_dropped_caller_cancels() {
        let limit = workers();
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let jobs: Vec<_> = (0..limit * 3)
            .map(|_| {
                let (running, peak) = (running.clone(), peak.clone());
                tokio::spawn(run(move |_| {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(20));
                    running.fetch_sub(1, Ordering::SeqCst);
                }))
            })
            .collect();
        for job in jobs {
            job.await.unwrap().unwrap();
        }
        assert!(peak.load(Ordering::SeqCst) <= limit);

        // A job that spins until cancelled ends once its caller is dropped.
        let (seen_tx, seen_rx) = std::sync::mpsc::channel();
        let spinning = tokio::spawn(run(move |cancel| {
            while !cancel.is_cancelled() {
                std::thread::sleep(Duration::from_millis(5));
            }
            let _ = seen_tx.send(());
        }));
        tokio::time::sleep(Duration::from_millis(50)).await;
        spinning.abort();
        let seen =
            tokio::task::spawn_blocking(move || seen_rx.recv_timeout(Duration::from_secs(10)))
                .await
                .unwrap();
        assert!(seen.is_ok(), "the job never saw its cancellation");
    }
}
