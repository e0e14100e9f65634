//! The shared provider conformance suite against a fake of DashScope's task API
//! (providers-2.md §8.4), through `qwen-image-plus`: submit with `X-DashScope-Async: enable`,
//! poll `GET tasks/{id}`, download the results, cancel a task past its deadline. The
//! fixed-size family makes one image per task, so `n` > 1 is one task per image. Its
//! reference case runs on `qwen-image-edit-max`, through the synchronous API, since the task
//! API takes no images.

mod common;

use async_trait::async_trait;
use imgproxy_core::Gateway;
use imgproxy_testkit::{cut_off_json, too_many_requests, Fixture};
use serde_json::json;
use wiremock::{matchers::body_json, MockServer, ResponseTemplate};

use common::{
    content, error, mount_cancel, mount_generation, mount_poll, mount_results, mount_running,
    submitted, succeeded, task_body, task_state, task_submit,
};

const MODEL: &str = "qwen-image-plus";

struct DashScopeTasks;

impl DashScopeTasks {
    /// Mounts the submit of the default request, answered `answer`, `times` times.
    async fn mount_submit(server: &MockServer, answer: ResponseTemplate, times: u64) {
        let parameters =
            json!({"size": "1328*1328", "prompt_extend": true, "watermark": false, "n": 1});
        task_submit()
            .and(body_json(task_body(MODEL, parameters)))
            .respond_with(answer)
            .expect(times)
            .named("submit")
            .mount(server)
            .await;
    }
}

#[async_trait]
impl Fixture for DashScopeTasks {
    const ASYNC: bool = true;

    fn gateway(server: &MockServer) -> Gateway {
        common::gateway(server)
    }

    fn model() -> &'static str {
        MODEL
    }

    fn reference_model() -> &'static str {
        "qwen-image-edit-max"
    }

    async fn success(server: &MockServer, n: u32, references: usize) {
        if references > 0 {
            let parameters = json!({"prompt_extend": true, "watermark": false, "n": n});
            let model = Self::reference_model();
            return mount_generation(server, model, content(references), parameters, n as usize)
                .await;
        }
        let times = u64::from(n);
        Self::mount_submit(server, submitted(), times).await;
        let urls = mount_results(server, 1, times).await;
        mount_poll(server, succeeded(&urls), times).await;
        mount_cancel(server, 0).await;
    }

    async fn moderation(server: &MockServer) {
        Self::mount_submit(server, submitted(), 1).await;
        let refused = task_state(
            "FAILED",
            json!({"code": "DataInspectionFailed",
                   "message": "Output data may contain inappropriate content."}),
        );
        mount_poll(server, refused, 1).await;
        mount_cancel(server, 0).await;
    }

    async fn answer_first_call(server: &MockServer, answer: ResponseTemplate) {
        Self::mount_submit(server, answer, 1).await;
    }

    fn rate_limited(seconds: u64) -> ResponseTemplate {
        too_many_requests(
            seconds,
            json!({"request_id": "r", "code": "Throttling.RateQuota",
                   "message": "Requests rate limit exceeded, please try again later."}),
        )
    }

    fn server_error() -> ResponseTemplate {
        error(
            500,
            "InternalError",
            "An internal error has occured, please try again later.",
        )
    }

    fn malformed() -> ResponseTemplate {
        ResponseTemplate::new(200).set_body_json(json!({"output": {"task_status": "PENDING"}}))
    }

    fn truncated() -> ResponseTemplate {
        cut_off_json(r#"{"output":{"task_status":"PENDING","task_id":"0385"#)
    }

    async fn slow_completion(server: &MockServer) {
        Self::mount_submit(server, submitted(), 1).await;
        mount_running(server, 2).await;
        let urls = mount_results(server, 1, 1).await;
        mount_poll(server, succeeded(&urls), 1).await;
        mount_cancel(server, 0).await;
    }

    async fn failed_status(server: &MockServer) {
        Self::mount_submit(server, submitted(), 1).await;
        let failed = task_state(
            "FAILED",
            json!({"code": "InternalError.Algo", "message": "inference failed"}),
        );
        mount_poll(server, failed, 1).await;
        mount_cancel(server, 0).await;
    }

    async fn never_completes(server: &MockServer) {
        Self::mount_submit(server, submitted(), 1).await;
        mount_poll(server, task_state("RUNNING", json!({})), 2..).await;
        mount_cancel(server, 1).await;
    }
}

imgproxy_testkit::conformance_suite!(crate::DashScopeTasks, polling);
