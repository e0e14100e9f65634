//! The provider itself: its configuration, the provider type and its [`UpstreamAdapter`], and
//! the queue protocol (submit, poll the returned `status_url`, fetch the returned
//! `response_url`, cancel at `cancel_url`). What goes into a request and how answers are read
//! is `convert`'s job.

use std::task::Poll;

use bytes::Bytes;
use imgproxy_core::{
    upstream::{
        self, ApiClient, CancelOnDrop, KeyHeader, Outcome, PollPolicy, Rejection, Upstream,
        UpstreamAdapter, UpstreamProvider,
    },
    Generation, ProviderError, ProviderRequest,
};
use reqwest::{Method, Url};

use crate::{
    convert::{self, InputMapping, JobState},
    errors,
    wire::{File, QueuedJob},
    DEFAULT_BASE_URL, PROVIDER_ID,
};

/// The fal provider, built from [`UpstreamSettings`] by [`UpstreamProvider::new`].
///
/// The key goes as `Authorization: Key <key>` to the queue API only; `max_download_bytes` bounds
/// each generated image downloaded from a result URL.
///
/// [`UpstreamSettings`]: imgproxy_core::upstream::UpstreamSettings
pub type FalProvider = UpstreamProvider<Fal>;

/// The [`UpstreamAdapter`] of fal's queue API, below whose root (the client's) model ids go.
///
/// It never retries: a job that may have started could bill twice.
#[derive(Debug)]
pub enum Fal {}

impl UpstreamAdapter for Fal {
    const UPSTREAM: Upstream =
        Upstream::new(PROVIDER_ID, DEFAULT_BASE_URL).key_header(KeyHeader::Authorization("Key"));

    async fn try_generate(api: &ApiClient, call: ProviderRequest<'_>) -> Outcome {
        let model = &call.request.model;
        let mapping = InputMapping::of(model)?;
        let input = convert::model_input(&call, &mapping)?;
        let submit_url = api
            .root()
            .join(model.upstream.trim_start_matches('/'))
            .map_err(|e| upstream::failed(format!("bad upstream model id: {e}")))?;
        tracing::debug!(model = %model.upstream, n = call.n, "submitting to the fal queue");
        let answer = Self::send(api, Method::POST, submit_url.as_str(), Some(&input)).await?;
        let body = Self::success(answer, &mapping, &call)?;
        let queued: QueuedJob = serde_json::from_slice(&body).map_err(upstream::malformed)?;
        tracing::debug!(request_id = ?queued.request_id, "fal job queued");
        let queued = Self::trusted_job(api, queued)?;
        if let Ok(token) = serde_json::to_string(&queued) {
            call.report_job(token);
        }
        Self::wait(api, &call, &mapping, queued).await
    }

    async fn try_resume(api: &ApiClient, call: ProviderRequest<'_>, job: &str) -> Outcome {
        let stored: QueuedJob = serde_json::from_str(job)
            .map_err(|_| upstream::failed("the job to resume is not a fal queue job"))?;
        // Checked again: the key goes to these URLs.
        let queued = Self::trusted_job(api, stored)?;
        let mapping = InputMapping::of(&call.request.model)?;
        Self::wait(api, &call, &mapping, queued).await
    }
}

/// A whole HTTP answer of the queue API: the body of a 2xx, or the rejection.
type Answer = Result<Bytes, Rejection>;

/// A submitted job, with the URLs to follow exactly as fal returned them.
struct Job<'a, 'b> {
    status_url: String,
    response_url: String,
    mapping: &'a InputMapping,
    call: &'a ProviderRequest<'b>,
}

impl Fal {
    /// `job` if the key may be sent to each of its URLs (see [`Fal::trusted`]).
    fn trusted_job(api: &ApiClient, job: QueuedJob) -> Result<QueuedJob, ProviderError> {
        Ok(QueuedJob {
            request_id: job.request_id,
            status_url: Self::trusted(api, job.status_url)?,
            response_url: Self::trusted(api, job.response_url)?,
            cancel_url: job
                .cancel_url
                .map(|url| Self::trusted(api, url))
                .transpose()?,
        })
    }

    /// Follows a queued job to its end and fetches its images.
    async fn wait(
        api: &ApiClient,
        call: &ProviderRequest<'_>,
        mapping: &InputMapping,
        queued: QueuedJob,
    ) -> Outcome {
        // Armed until the job reaches a terminal status: a deadline, an error while polling or
        // the client going away (this future dropped) cancels it upstream.
        let guard = queued
            .cancel_url
            .map(|url| CancelOnDrop::send(PROVIDER_ID, api.request(Method::PUT, url)));
        let job = Job {
            status_url: queued.status_url,
            response_url: queued.response_url,
            mapping,
            call,
        };
        let finished = PollPolicy::for_model(&call.request.model)
            .run(|| Self::poll(api, &job))
            .await?;
        if let Some(guard) = guard {
            guard.disarm();
        }
        let files = convert::output_files(&finished?)?;
        let mut images = Vec::with_capacity(files.len());
        for file in &files {
            images.push(Self::fetch(api, file).await?);
        }
        Ok(Generation {
            meta: convert::meta(call, mapping, files.first()),
            images,
            usage: None,
        })
    }

    /// One status poll; on `COMPLETED`, the result fetch too. `Ready` holds the job's terminal
    /// outcome (its output body, or why it has none); an `Err` abandons the job.
    async fn poll(
        api: &ApiClient,
        job: &Job<'_, '_>,
    ) -> Result<Poll<Result<Bytes, ProviderError>>, ProviderError> {
        let answer = Self::send(api, Method::GET, &job.status_url, None).await?;
        let body = Self::success(answer, job.mapping, job.call)?;
        match convert::job_state(&body)? {
            JobState::Pending => Ok(Poll::Pending),
            JobState::Failed(reason) => Ok(Poll::Ready(Err(upstream::failed(format!(
                "the fal job failed: {reason}"
            ))))),
            JobState::Completed => {
                let answer = match Self::send(api, Method::GET, &job.response_url, None).await {
                    Ok(answer) => answer,
                    Err(error) => return Ok(Poll::Ready(Err(error))),
                };
                if answer
                    .as_ref()
                    .is_err_and(|rejection| errors::still_in_progress(&rejection.body))
                {
                    return Ok(Poll::Pending);
                }
                Ok(Poll::Ready(Self::success(answer, job.mapping, job.call)))
            }
        }
    }

    /// Sends an authenticated API request and reads the whole answer.
    async fn send(
        api: &ApiClient,
        method: Method,
        url: &str,
        json: Option<&serde_json::Value>,
    ) -> Result<Answer, ProviderError> {
        let mut request = api.request(method, url);
        if let Some(json) = json {
            request = request.json(json);
        }
        let response = request.send().await.map_err(upstream::transport_error)?;
        Ok(match api.check(response).await {
            Ok(response) => Ok(api.read_body(response).await?),
            Err(rejection) => Err(rejection),
        })
    }

    /// The body of a 2xx answer, or the mapped upstream error.
    fn success(
        answer: Answer,
        mapping: &InputMapping,
        call: &ProviderRequest<'_>,
    ) -> Result<Bytes, ProviderError> {
        answer
            .map_err(|rejection| errors::upstream_error(&rejection, mapping, &call.request.params))
    }

    /// `url` if the key may be sent there: the configured API's origin or fal's own https
    /// hosts. Returned URLs are followed as they are, never rebuilt, but a URL elsewhere would
    /// hand the key to a stranger.
    fn trusted(api: &ApiClient, url: String) -> Result<String, ProviderError> {
        let ok = Url::parse(&url)
            .is_ok_and(|parsed| upstream::key_may_go_to(&parsed, api.root(), "fal.run"));
        if ok {
            Ok(url)
        } else {
            Err(upstream::failed(
                "the fal queue returned a job URL outside the configured API",
            ))
        }
    }

    /// The bytes of one output file: decoded from a `data:` URI or downloaded without
    /// credentials (fal's CDN URLs need none).
    async fn fetch(
        api: &ApiClient,
        file: &File,
    ) -> Result<imgproxy_core::GeneratedImage, ProviderError> {
        let (bytes, header) = api.fetch(convert::source(file)?).await?;
        // The bytes decide the MIME type, else a declared `image/*` type; anything else (an
        // error page, say) is not an image and fails the call.
        upstream::sniffed_image(
            bytes,
            &[file.content_type.as_deref(), header.as_deref()],
            "the upstream returned a file that is not an image",
        )
    }
}
