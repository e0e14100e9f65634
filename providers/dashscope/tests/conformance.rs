//! The shared provider conformance suite against a fake of DashScope's synchronous API
//! (providers-2.md §8.3), through `qwen-image-2.0`, which makes up to 6 images in one call and
//! takes up to 3 reference images: each fake asserts the exact path, key, content type and
//! body, and how often it is called.

mod common;

use async_trait::async_trait;
use imgproxy_core::Gateway;
use imgproxy_testkit::{cut_off_json, too_many_requests, Fixture};
use serde_json::json;
use wiremock::{matchers::body_json, MockServer, ResponseTemplate};

use common::{content, error, generation_body, generation_call, mount_generation};

const MODEL: &str = "qwen-image-2.0";

struct DashScopeSync;

#[async_trait]
impl Fixture for DashScopeSync {
    fn gateway(server: &MockServer) -> Gateway {
        common::gateway(server)
    }

    fn model() -> &'static str {
        MODEL
    }

    async fn success(server: &MockServer, n: u32, references: usize) {
        let parameters = json!({"prompt_extend": true, "watermark": false, "n": n});
        mount_generation(server, MODEL, content(references), parameters, n as usize).await;
    }

    async fn moderation(server: &MockServer) {
        let refusal = error(
            400,
            "DataInspectionFailed",
            "Input data may contain inappropriate content.",
        );
        Self::answer_first_call(server, refusal).await;
    }

    async fn answer_first_call(server: &MockServer, answer: ResponseTemplate) {
        let parameters = json!({"prompt_extend": true, "watermark": false, "n": 1});
        generation_call()
            .and(body_json(generation_body(MODEL, content(0), parameters)))
            .respond_with(answer)
            .expect(1)
            .mount(server)
            .await;
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
        ResponseTemplate::new(200)
            .set_body_json(json!({"output": {"choices": []}, "request_id": "r"}))
    }

    fn truncated() -> ResponseTemplate {
        cut_off_json(
            r#"{"output":{"choices":[{"finish_reason":"stop","message":{"content":[{"image":"https://dash"#,
        )
    }
}

imgproxy_testkit::conformance_suite!(crate::DashScopeSync);
