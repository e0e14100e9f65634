//! The provider itself: the provider type and its [`UpstreamAdapter`], which calls the
//! synchronous API or submits, polls, cancels and resumes a task of the asynchronous one, and
//! downloads the images. What goes into a request and how answers are read is `convert`'s job.

use std::task::Poll;

use futures_util::future::try_join_all;
use imgproxy_core::{
    upstream::{
        self, failed, ApiClient, CancelOnDrop, ImageSource, Outcome, PollPolicy, Upstream,
        UpstreamAdapter, UpstreamProvider,
    },
    GeneratedImage, Generation, ModelSpec, ProviderError, ProviderRequest,
};

use crate::{
    convert::{self, TaskImage, TaskState},
    wire::{Endpoint, InputMapping},
    DEFAULT_BASE_URL, PROVIDER_ID,
};

/// The synchronous API, every model (providers-2.md §8.1).
const GENERATION_PATH: &str = "services/aigc/multimodal-generation/generation";
/// The task API, `qwen-image` and `qwen-image-plus` only.
const TASK_SUBMIT_PATH: &str = "services/aigc/text2image/image-synthesis";

/// The DashScope provider, built from [`UpstreamSettings`] by [`UpstreamProvider::new`].
///
/// The key goes as `Authorization: Bearer <key>` to the API root only, never to the result
/// URLs; keys are bound to their region's root (`DASHSCOPE_BASE_URL`).
///
/// [`UpstreamSettings`]: imgproxy_core::upstream::UpstreamSettings
pub type DashScopeProvider = UpstreamProvider<DashScope>;

/// The [`UpstreamAdapter`] of DashScope's Qwen-Image APIs. Which API a model uses is catalog
/// data (`upstream_input.endpoint`).
///
/// It never retries a call or a submit: a failure after DashScope accepted it is ambiguous,
/// and a retry could bill the images twice.
#[derive(Debug)]
pub enum DashScope {}

impl UpstreamAdapter for DashScope {
    const UPSTREAM: Upstream = Upstream::new(PROVIDER_ID, DEFAULT_BASE_URL);

    async fn try_generate(api: &ApiClient, call: ProviderRequest<'_>) -> Outcome {
        let mapping = convert::input_mapping(&call.request.model)?;
        let images = match mapping.endpoint {
            Endpoint::MultimodalGeneration => Self::generate_now(api, &call, &mapping).await?,
            Endpoint::Text2Image => Self::run_task(api, &call, &mapping).await?,
        };
        Ok(Generation {
            images,
            ..Generation::default()
        })
    }

    async fn try_resume(api: &ApiClient, call: ProviderRequest<'_>, job: &str) -> Outcome {
        if !convert::is_task_id(job) {
            return Err(failed("the job to resume is not a DashScope task"));
        }
        Ok(Generation {
            images: Self::wait(api, &call.request.model, job).await?,
            ..Generation::default()
        })
    }
}

impl DashScope {
    /// One call of the synchronous API, its images downloaded at once.
    async fn generate_now(
        api: &ApiClient,
        call: &ProviderRequest<'_>,
        mapping: &InputMapping,
    ) -> Result<Vec<GeneratedImage>, ProviderError> {
        let body = convert::generation_body(call, mapping)?;
        tracing::debug!(
            provider = PROVIDER_ID,
            model = call.upstream_model(),
            n = call.n,
            "calling DashScope multimodal-generation"
        );
        let post = api.post(api.url(GENERATION_PATH)).json(&body);
        // Read within the limit: the images may be inline.
        let response = api.send(post, convert::error_from_status).await?;
        let answer = api.read_body(response).await?;
        let sources = convert::read_generation(&answer)?;
        try_join_all(sources.into_iter().map(|source| fetch(api, source, None))).await
    }

    /// Submits one task for the call's images and waits for it. The task is reported as the
    /// call's job, so that a restart resumes it instead of submitting another.
    async fn run_task(
        api: &ApiClient,
        call: &ProviderRequest<'_>,
        mapping: &InputMapping,
    ) -> Result<Vec<GeneratedImage>, ProviderError> {
        let model = &call.request.model;
        let body = convert::task_body(call, mapping)?;
        // Only the task API may see this header: the synchronous one refuses it (403).
        let post = api
            .post(api.url(TASK_SUBMIT_PATH))
            .header("x-dashscope-async", "enable")
            .json(&body);
        let answer = api.send_for_body(post, convert::error_from_status).await?;
        let task = convert::read_submit(&answer)?;
        tracing::debug!(provider = PROVIDER_ID, model = %model.upstream, %task, "DashScope task submitted");
        call.report_job(task.clone());
        Self::wait(api, model, &task).await
    }

    /// Polls task `task` to its end within the model's deadline and downloads its images.
    async fn wait(
        api: &ApiClient,
        model: &ModelSpec,
        task: &str,
    ) -> Result<Vec<GeneratedImage>, ProviderError> {
        // Armed until the task ends: a deadline, an unreadable poll or the client going away
        // cancels it upstream (DashScope cancels only tasks still `PENDING`).
        let guard = CancelOnDrop::send(
            PROVIDER_ID,
            api.post(api.url(&format!("tasks/{task}/cancel"))),
        );
        let ended = PollPolicy::for_model(model)
            .run(|| Self::poll(api, task))
            .await?;
        guard.disarm();
        let images = ended?;
        let downloads = images.into_iter().map(
            |TaskImage {
                 url,
                 revised_prompt,
             }| { fetch(api, ImageSource::Url(url), revised_prompt) },
        );
        try_join_all(downloads).await
    }

    /// One `GET tasks/{task}`: `Ready` once the task ended, with its images or why it has
    /// none. A 429 or 5xx only delays the next poll.
    async fn poll(
        api: &ApiClient,
        task: &str,
    ) -> Result<Poll<Result<Vec<TaskImage>, ProviderError>>, ProviderError> {
        let response = api
            .get(api.url(&format!("tasks/{task}")))
            .send()
            .await
            .map_err(upstream::transport_error)?;
        let status = response.status().as_u16();
        if convert::transient_poll_status(status) {
            tracing::warn!(
                provider = PROVIDER_ID,
                status,
                "polling a DashScope task failed; polling on"
            );
            return Ok(Poll::Pending);
        }
        let body = api
            .checked_body(response, convert::error_from_status)
            .await?;
        Ok(match convert::read_task(&body)? {
            TaskState::Running => Poll::Pending,
            TaskState::Succeeded(images) => Poll::Ready(Ok(images)),
            TaskState::Ended(why) => Poll::Ready(Err(why)),
        })
    }
}

/// One returned image: decoded, or downloaded without the key (result URLs are signed and
/// expire after 24 hours, providers-2.md §8.3).
async fn fetch(
    api: &ApiClient,
    source: ImageSource,
    revised_prompt: Option<String>,
) -> Result<GeneratedImage, ProviderError> {
    let (bytes, content_type) = api.fetch(source).await?;
    convert::generated_image(bytes, content_type.as_deref(), revised_prompt)
}
