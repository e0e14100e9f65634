//! What a provider call reports while it runs (started upstream jobs, partial images), passed
//! on to where the caller wants it the moment it comes, while noting that the upstream started
//! work: after that, nothing may try the call again. The key pool and the gateway's failover
//! both decide by it.

use std::{future::Future, pin::pin};

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use crate::{
    provider::{JobSender, PartialImage, PartialSender},
    ProviderRequest,
};

/// Where a provider call reports started jobs and partial images: channels of the relay's
/// own, so that it learns whether the upstream started anything and can rewrite each job
/// token before passing it on.
pub(crate) struct Outlets {
    jobs: JobSender,
    partials: PartialSender,
}

impl Outlets {
    /// `call` reporting to these outlets: jobs always (a started job says the upstream began
    /// work, whoever else listens), partial images where the client streams.
    pub(crate) fn request<'s>(&'s self, call: ProviderRequest<'s>) -> ProviderRequest<'s> {
        ProviderRequest {
            jobs: Some(&self.jobs),
            partials: call.partials.map(|_| &self.partials),
            ..call
        }
    }
}

/// Passes what reaches the [`Outlets`] on to the call's own, as it comes.
pub(crate) struct Relay<'c> {
    call: ProviderRequest<'c>,
    jobs: UnboundedReceiver<(u32, String)>,
    partials: UnboundedReceiver<PartialImage>,
    /// Whether the upstream reported a job or sent a partial image: it started work.
    started: bool,
}

impl<'c> Relay<'c> {
    /// A relay to `call`'s own jobs and partials, and the outlets an attempt reports to.
    pub(crate) fn new(call: ProviderRequest<'c>) -> (Outlets, Self) {
        let (jobs, job_receiver) = unbounded_channel();
        let (partials, partial_receiver) = unbounded_channel();
        let relay = Self {
            call,
            jobs: job_receiver,
            partials: partial_receiver,
            started: false,
        };
        (Outlets { jobs, partials }, relay)
    }

    /// Runs `attempt` to its end, passing on every job (its token as `token` makes it) and
    /// partial image the moment it is reported.
    pub(crate) async fn drive<T>(
        &mut self,
        attempt: impl Future<Output = T>,
        token: impl Fn(&str) -> String,
    ) -> T {
        let mut attempt = pin!(attempt);
        loop {
            tokio::select! {
                biased;
                Some((index, job)) = self.jobs.recv() => self.job(index, token(&job)),
                Some(partial) = self.partials.recv() => self.partial(partial),
                result = &mut attempt => {
                    while let Ok((index, job)) = self.jobs.try_recv() {
                        self.job(index, token(&job));
                    }
                    while let Ok(partial) = self.partials.try_recv() {
                        self.partial(partial);
                    }
                    return result;
                }
            }
        }
    }

    /// Whether the upstream reported a job or sent a partial image.
    pub(crate) fn started(&self) -> bool {
        self.started
    }

    fn job(&mut self, index: u32, token: String) {
        self.started = true;
        if let Some(jobs) = self.call.jobs {
            // The task may be gone; the generation still completes.
            let _ = jobs.send((index, token));
        }
    }

    fn partial(&mut self, partial: PartialImage) {
        self.started = true;
        if let Some(partials) = self.call.partials {
            // The client may be gone; the generation still completes.
            let _ = partials.send(partial);
        }
    }
}
