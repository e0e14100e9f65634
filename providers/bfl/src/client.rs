//! The provider itself: its configuration, the provider type and its [`UpstreamAdapter`]
//! (submit, poll, download), plus the rule of which hosts may see the key. What goes into a
//! request and how answers are read is `convert`'s job.

use std::task::Poll;

use imgproxy_core::{
    upstream::{
        self, failed, ApiClient, KeyHeader, Outcome, PollPolicy, Upstream, UpstreamAdapter,
        UpstreamProvider,
    },
    GeneratedImage, Generation, ProviderError, ProviderRequest,
};
use reqwest::Url;
use serde_json::Value;

use crate::{
    convert::{self, TaskState},
    wire::{InputMapping, SubmitResponse},
    DEFAULT_BASE_URL, PROVIDER_ID,
};

/// The BFL provider, built from [`UpstreamSettings`] by [`UpstreamProvider::new`].
///
/// The key goes as `x-key` to the API's hosts only; the API root may be a regional one such as
/// `https://api.eu.bfl.ai`.
///
/// [`UpstreamSettings`]: imgproxy_core::upstream::UpstreamSettings
pub type BflProvider = UpstreamProvider<Bfl>;

/// The [`UpstreamAdapter`] of BFL's direct API: one task per image, polled until ready.
///
/// It never retries a submit: a failure after BFL accepted the task is ambiguous, and a retry
/// could bill the image twice.
#[derive(Debug)]
pub enum Bfl {}

impl UpstreamAdapter for Bfl {
    const UPSTREAM: Upstream =
        Upstream::new(PROVIDER_ID, DEFAULT_BASE_URL).key_header(KeyHeader::Named("x-key"));

    async fn try_generate(api: &ApiClient, call: ProviderRequest<'_>) -> Outcome {
        let mapping = convert::input_mapping(&call.request.model)?;
        // BFL makes one image per task and the catalog says `n_per_call = 1`; an operator's
        // entry asking for more simply gets one task per image, in turn.
        let mut images = Vec::with_capacity(call.n as usize);
        for offset in 0..call.n.max(1) {
            images.push(Self::run_task(api, &call, offset, &mapping).await?);
        }
        Ok(Generation {
            images,
            ..Generation::default()
        })
    }

    async fn try_resume(api: &ApiClient, call: ProviderRequest<'_>, job: &str) -> Outcome {
        let poll_url =
            Url::parse(job).map_err(|_| failed("the job to resume is not a BFL task"))?;
        let image = Self::wait(api, &call.request.model, &poll_url).await?;
        Ok(Generation {
            images: vec![image],
            ..Generation::default()
        })
    }
}

impl Bfl {
    /// Submits one task, polls it to the end and downloads its sample.
    async fn run_task(
        api: &ApiClient,
        call: &ProviderRequest<'_>,
        offset: u32,
        mapping: &InputMapping,
    ) -> Result<GeneratedImage, ProviderError> {
        let model = call.upstream_model();
        let body = convert::submit_body(call, offset, mapping)?;
        tracing::debug!(provider = PROVIDER_ID, model, "submitting a BFL task");
        let submitted = Self::submit(api, model, &body).await?;
        tracing::debug!(provider = PROVIDER_ID, model, task = %submitted.id, cost = ?submitted.cost, "BFL task submitted");
        let poll_url = polling_url(&submitted, api.root())?;
        // One task per call is what a task can resume by its polling URL.
        if call.n == 1 {
            call.report_job(poll_url.to_string());
        }
        Self::wait(api, &call.request.model, &poll_url).await
    }

    /// Polls a submitted task to the end and downloads its sample.
    async fn wait(
        api: &ApiClient,
        model: &imgproxy_core::ModelSpec,
        poll_url: &Url,
    ) -> Result<GeneratedImage, ProviderError> {
        let send_key = may_send_key(poll_url, api.root());
        if !send_key {
            tracing::warn!(
                provider = PROVIDER_ID,
                "BFL returned a polling_url outside the API's hosts; polling it without the key"
            );
        }
        // BFL has no cancel endpoint: a task past its deadline (or whose client went away) is
        // abandoned, so there is no `CancelOnDrop` here.
        let sample = PollPolicy::for_model(model)
            .run(|| Self::poll_once(api, poll_url, send_key))
            .await?;
        // At once: the delivery URL expires after 10 minutes. No key goes to the delivery host.
        let (bytes, content_type) = api.download(&sample).await?;
        convert::generated_image(bytes, content_type.as_deref())
    }

    /// `POST {base}/v1/{model}` with `x-key`.
    async fn submit(
        api: &ApiClient,
        model: &str,
        body: &Value,
    ) -> Result<SubmitResponse, ProviderError> {
        let post = api.post(api.url(&format!("v1/{model}"))).json(body);
        let body = api.send_for_body(post, convert::error_from_status).await?;
        convert::read_submit(&body)
    }

    /// One `GET <polling_url>`: the sample URL once the task is ready.
    async fn poll_once(
        api: &ApiClient,
        url: &Url,
        send_key: bool,
    ) -> Result<Poll<String>, ProviderError> {
        let request = if send_key {
            api.get(url.clone())
        } else {
            api.http().get(url.clone())
        };
        let response = match request.send().await {
            Ok(response) => response,
            // The task is paid for: a poll that could not get through is asked again.
            Err(e) if e.is_timeout() || e.is_connect() => {
                tracing::warn!(provider = PROVIDER_ID, error = %upstream::chain(&e.without_url()), "BFL poll failed; polling again");
                return Ok(Poll::Pending);
            }
            Err(e) => return Err(upstream::transport_error(e)),
        };
        let status = response.status().as_u16();
        if convert::transient_poll_status(status) {
            tracing::warn!(
                provider = PROVIDER_ID,
                status,
                "BFL poll answered a transient error; polling again"
            );
            return Ok(Poll::Pending);
        }
        let body = api
            .checked_body(response, convert::error_from_status)
            .await?;
        match convert::read_poll(&body)? {
            TaskState::Pending => Ok(Poll::Pending),
            TaskState::Ready(sample) => Ok(Poll::Ready(sample)),
        }
    }
}

/// The URL to poll: the returned `polling_url` as it is (BFL routes tasks by region, so its
/// host is never rebuilt), with `?id=` added only if it has none; without one, the legacy
/// `{base}/v1/get_result?id=`.
fn polling_url(submitted: &SubmitResponse, root: &Url) -> Result<Url, ProviderError> {
    let text = submitted
        .polling_url
        .clone()
        .unwrap_or_else(|| format!("{root}v1/get_result"));
    let mut url = Url::parse(&text)
        .ok()
        .filter(|url| matches!(url.scheme(), "http" | "https"))
        .ok_or_else(|| failed("malformed BFL response: `polling_url` is not an http(s) URL"))?;
    if !url.query_pairs().any(|(name, _)| name == "id") {
        url.query_pairs_mut().append_pair("id", &submitted.id);
    }
    Ok(url)
}

/// Whether `url` may see the key: the configured API origin (scheme, host and port), or an
/// https host under `bfl.ai` (BFL's regional API hosts).
fn may_send_key(url: &Url, base: &Url) -> bool {
    upstream::key_may_go_to(url, base, "bfl.ai")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn submitted(polling_url: Option<&str>) -> SubmitResponse {
        SubmitResponse {
            id: "task-1".into(),
            polling_url: polling_url.map(str::to_owned),
            cost: None,
        }
    }

    #[test]
    fn polling_url_is_kept_as_returned_and_gets_an_id_only_if_missing() {
        let root = Url::parse("https://api.bfl.ai/").unwrap();
        let url = |p| polling_url(&submitted(p), &root).unwrap().to_string();
        assert_eq!(
            url(Some("https://api.us1.bfl.ai/v1/get_result?id=task-1")),
            "https://api.us1.bfl.ai/v1/get_result?id=task-1"
        );
        assert_eq!(
            url(Some("https://api.eu.bfl.ai/v2/results?region=eu")),
            "https://api.eu.bfl.ai/v2/results?region=eu&id=task-1"
        );
        assert_eq!(url(None), "https://api.bfl.ai/v1/get_result?id=task-1");
        assert!(polling_url(&submitted(Some("ftp://x/y")), &root).is_err());
        assert!(polling_url(&submitted(Some("not a url")), &root).is_err());
    }

    #[test]
    fn the_key_goes_only_to_the_api_origin_and_bfl_hosts() {
        let base = Url::parse("http://127.0.0.1:4000/prefix").unwrap();
        let allowed = |text: &str| may_send_key(&Url::parse(text).unwrap(), &base);
        assert!(allowed("http://127.0.0.1:4000/v1/get_result"));
        assert!(allowed("https://api.us1.bfl.ai/v1/get_result?id=1"));
        assert!(allowed("https://bfl.ai/x"));
        assert!(
            !allowed("http://127.0.0.1:4001/v1/get_result"),
            "other port"
        );
        assert!(
            !allowed("https://127.0.0.1:4000/v1/get_result"),
            "other scheme"
        );
        assert!(
            !allowed("http://api.bfl.ai/v1/get_result"),
            "bfl.ai over http"
        );
        assert!(!allowed("https://api.bfl.ai.evil.example/x"));
        assert!(!allowed("https://evilbfl.ai/x"));
        let bfl = Url::parse(DEFAULT_BASE_URL).unwrap();
        assert!(may_send_key(
            &Url::parse("https://api.bfl.ai:443/v1/get_result").unwrap(),
            &bfl
        ));
    }
}
