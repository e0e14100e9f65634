//! A fake provider for the tests of what sits above the providers (serving, tasks, the HTTP
//! surface): it counts its calls and answers each as the test says, optionally after a delay
//! or behind a gate. imgproxy-core's own tests include this file by `#[path]`, as they cannot
//! depend on the testkit (it depends on imgproxy-core).

use std::{
    fmt,
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use async_trait::async_trait;
use imgproxy_core::{Generation, ImageProvider, ProviderError, ProviderRequest};
use tokio::sync::Semaphore;

/// What a call answers, given its index among the calls (from 0) and the call itself.
type Answer =
    Box<dyn Fn(usize, &ProviderRequest<'_>) -> Result<Generation, ProviderError> + Send + Sync>;

/// What resuming the job named by the `&str` answers.
type Resume = Box<dyn Fn(&str) -> Result<Generation, ProviderError> + Send + Sync>;

/// A provider named `name` whose calls answer as `answer` says.
pub struct FakeProvider {
    name: &'static str,
    answer: Answer,
    resume: Option<Resume>,
    delay: Duration,
    /// When set, every call waits for a permit of its own, which it keeps.
    gate: Option<Semaphore>,
    calls: AtomicUsize,
    resumed: AtomicUsize,
}

impl FakeProvider {
    pub fn new(
        name: &'static str,
        answer: impl Fn(usize, &ProviderRequest<'_>) -> Result<Generation, ProviderError>
            + Send
            + Sync
            + 'static,
    ) -> Self {
        Self {
            name,
            answer: Box::new(answer),
            resume: None,
            delay: Duration::ZERO,
            gate: None,
            calls: AtomicUsize::new(0),
            resumed: AtomicUsize::new(0),
        }
    }

    /// Each call first sleeps `delay`, so that concurrent requests overlap.
    #[must_use]
    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Each call (already counted) then waits for a permit of its own; `permits` are open at
    /// first, [`FakeProvider::open`] adds more.
    #[must_use]
    pub fn gated(mut self, permits: usize) -> Self {
        self.gate = Some(Semaphore::new(permits));
        self
    }

    /// Resuming a job answers as `resume` says (without it, resuming is unsupported).
    #[must_use]
    pub fn resuming(
        mut self,
        resume: impl Fn(&str) -> Result<Generation, ProviderError> + Send + Sync + 'static,
    ) -> Self {
        self.resume = Some(Box::new(resume));
        self
    }

    /// Lets `permits` more gated calls through.
    pub fn open(&self, permits: usize) {
        if let Some(gate) = &self.gate {
            gate.add_permits(permits);
        }
    }

    /// How many times `generate` was called.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// How many times `resume` was called.
    pub fn resumed(&self) -> usize {
        self.resumed.load(Ordering::SeqCst)
    }
}

impl fmt::Debug for FakeProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeProvider")
            .field("name", &self.name)
            .field("calls", &self.calls())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl ImageProvider for FakeProvider {
    async fn generate(&self, call: ProviderRequest<'_>) -> Result<Generation, ProviderError> {
        let index = self.calls.fetch_add(1, Ordering::SeqCst);
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        if let Some(gate) = &self.gate {
            gate.acquire().await.unwrap().forget();
        }
        (self.answer)(index, &call)
    }

    async fn resume(
        &self,
        _call: ProviderRequest<'_>,
        job: &str,
    ) -> Result<Generation, ProviderError> {
        self.resumed.fetch_add(1, Ordering::SeqCst);
        match &self.resume {
            Some(resume) => resume(job),
            None => Err(ProviderError::RESUME_UNSUPPORTED),
        }
    }

    fn name(&self) -> &str {
        self.name
    }
}
