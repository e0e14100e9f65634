//! The provider: its configuration, the HTTP calls (create with `Prefer: wait`, poll
//! `urls.get`, cancel `urls.cancel`, download outputs) and the [`UpstreamAdapter`].
//! What goes into a prediction and how answers are read is `convert`'s job.

use std::task::Poll;

use bytes::Bytes;
use imgproxy_core::{
    upstream::{
        self, failed, ApiClient, CancelOnDrop, Outcome, PollPolicy, Upstream, UpstreamAdapter,
        UpstreamProvider,
    },
    GeneratedImage, Generation, ProviderError, ProviderRequest,
};
use serde_json::{Map, Value};

use crate::{convert, wire::Prediction, DEFAULT_BASE_URL, PROVIDER_ID};

/// Longest `Prefer: wait` Replicate honours, in seconds.
const MAX_WAIT_SECS: u64 = 60;

/// The Replicate provider, built from [`UpstreamSettings`] by [`UpstreamProvider::new`].
///
/// The token goes as `Authorization: Bearer <token>` to the API, never to output URLs;
/// `max_download_bytes` bounds each output.
///
/// [`UpstreamSettings`]: imgproxy_core::upstream::UpstreamSettings
pub type ReplicateProvider = UpstreamProvider<Replicate>;

/// The [`UpstreamAdapter`] running Replicate predictions. It never retries a create: a failure
/// after the prediction started is ambiguous, and a retry could bill twice.
#[derive(Debug)]
pub enum Replicate {}

impl UpstreamAdapter for Replicate {
    const UPSTREAM: Upstream = Upstream::new(PROVIDER_ID, DEFAULT_BASE_URL);

    async fn try_generate(api: &ApiClient, call: ProviderRequest<'_>) -> Outcome {
        let model = &call.request.model;
        let input = convert::input(&call, &convert::mapping(model)?)?;
        let policy = PollPolicy::for_model(model);
        let started = tokio::time::Instant::now();
        tracing::debug!(
            provider = PROVIDER_ID,
            model = %model.upstream,
            n = call.n,
            "creating a prediction"
        );

        // No id yet, so nothing to cancel if the create itself outlives the deadline.
        let created = tokio::time::timeout(
            policy.deadline,
            Self::create(api, &model.upstream, input, &policy),
        )
        .await
        .map_err(|_| ProviderError::Timeout)??;
        if convert::is_terminal(&created.status) {
            return Self::outputs(api, &created).await;
        }
        let urls = created.urls.unwrap_or_default();
        let Some(get) = urls.get else {
            return Err(failed(
                "malformed upstream response: a running prediction without `urls.get`",
            ));
        };
        let job = Job {
            get,
            cancel: urls.cancel,
        };
        if let Ok(token) = serde_json::to_string(&job) {
            call.report_job(token);
        }
        let left = PollPolicy {
            deadline: policy.deadline.saturating_sub(started.elapsed()),
            ..policy
        };
        Self::wait(api, job, left).await
    }

    async fn try_resume(api: &ApiClient, call: ProviderRequest<'_>, job: &str) -> Outcome {
        let job: Job = serde_json::from_str(job)
            .map_err(|_| failed("the job to resume is not a Replicate prediction"))?;
        // Its URLs came from the API: the key may go to them, as it did when they were made.
        Self::wait(api, job, PollPolicy::for_model(&call.request.model)).await
    }
}

/// A running prediction, as a task records it to resume it: its `urls.get` and `urls.cancel`.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Job {
    get: String,
    cancel: Option<String>,
}

impl Replicate {
    /// Polls a running prediction to its end and fetches its outputs.
    async fn wait(api: &ApiClient, job: Job, policy: PollPolicy) -> Outcome {
        // Armed until the prediction ends: a deadline, an error or the client going away
        // cancels it upstream, so it stops running (and billing).
        let guard = job
            .cancel
            .map(|url| CancelOnDrop::send(PROVIDER_ID, api.post(url)));
        let done = policy.run(|| Self::poll(api, &job.get)).await?;
        if let Some(guard) = guard {
            guard.disarm();
        }
        Self::outputs(api, &done).await
    }

    /// The images of a finished prediction.
    async fn outputs(api: &ApiClient, done: &Prediction) -> Outcome {
        let urls = convert::finished(done)?;
        Ok(Generation {
            images: Self::download_all(api, urls).await?,
            ..Generation::default()
        })
    }

    /// POSTs the prediction, waiting for it up to `Prefer: wait=N` (below the deadline and
    /// the HTTP timeout, so that an unfinished prediction still comes back to be polled).
    async fn create(
        api: &ApiClient,
        upstream_model: &str,
        input: Map<String, Value>,
        policy: &PollPolicy,
    ) -> Result<Prediction, ProviderError> {
        let mut body = Map::new();
        // `owner/name:version` is a community model, run by version hash.
        let url = match upstream_model.split_once(':') {
            Some((_, version)) => {
                body.insert("version".into(), Value::from(version));
                api.url("v1/predictions")
            }
            None => api.url(&format!("v1/models/{upstream_model}/predictions")),
        };
        body.insert("input".into(), Value::Object(input));
        let wait = MAX_WAIT_SECS
            .min(policy.deadline.as_secs().saturating_sub(1))
            .min(api.timeout().as_secs().saturating_sub(1))
            .max(1);
        let post = api
            .post(url)
            .header("prefer", format!("wait={wait}"))
            .json(&body);
        let body = api.send_for_body(post, convert::status_error).await?;
        convert::prediction(&body)
    }

    /// One poll of `urls.get`. A 429 or 5xx only delays the next poll: a GET bills nothing,
    /// and the deadline still bounds the wait.
    async fn poll(api: &ApiClient, url: &str) -> Result<Poll<Prediction>, ProviderError> {
        let response = api
            .get(url)
            .send()
            .await
            .map_err(upstream::transport_error)?;
        let status = response.status();
        if status.as_u16() == 429 || status.is_server_error() {
            tracing::warn!(
                provider = PROVIDER_ID,
                status = status.as_u16(),
                "polling a prediction failed; polling on"
            );
            return Ok(Poll::Pending);
        }
        let body = api.checked_body(response, convert::status_error).await?;
        let prediction = convert::prediction(&body)?;
        Ok(if convert::is_terminal(&prediction.status) {
            Poll::Ready(prediction)
        } else {
            Poll::Pending
        })
    }

    /// Fetches every output at once, in order: the URLs expire (about an hour).
    async fn download_all(
        api: &ApiClient,
        urls: Vec<String>,
    ) -> Result<Vec<GeneratedImage>, ProviderError> {
        let mut tasks = tokio::task::JoinSet::new();
        for (index, url) in urls.into_iter().enumerate() {
            let (client, max) = (api.http().clone(), api.max_body_bytes());
            tasks.spawn(async move { (index, fetch(&client, &url, max).await) });
        }
        let mut images = Vec::with_capacity(tasks.len());
        while let Some(joined) = tasks.join_next().await {
            let (index, result) =
                joined.map_err(|e| failed(format!("a download task failed: {e}")))?;
            let (bytes, content_type) = result?;
            images.push((index, convert::image(bytes, content_type.as_deref())?));
        }
        images.sort_by_key(|(index, _)| *index);
        Ok(images.into_iter().map(|(_, image)| image).collect())
    }
}

/// One output: a URL downloaded without credentials, or an inline `data:` URL.
async fn fetch(
    client: &reqwest::Client,
    url: &str,
    max_bytes: usize,
) -> Result<(Bytes, Option<String>), ProviderError> {
    if url.starts_with("data:") {
        return Ok((convert::data_url(url, max_bytes)?, None));
    }
    upstream::download(client, url, max_bytes).await
}
