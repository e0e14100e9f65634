//! The shared conformance suite against a fake Replicate built from providers.md §4: the
//! fakes assert the exact create body, auth and `Prefer` headers, and call counts.
//!
//! `flux-1.1-pro` (one image per call, so n=2 fans out to two predictions) serves the cases;
//! the reference-image case uses `seedream-4`, which takes several references.

mod common;

use async_trait::async_trait;
use imgproxy_core::Gateway;
use imgproxy_testkit::{data_url, mount_once, reference_png, too_many_requests, Fixture};
use serde_json::{json, Value};
use wiremock::{
    matchers::{body_json, header, method, path},
    Mock, MockServer, ResponseTemplate,
};

use common::{create_path, gateway, mount_outputs, prediction, PROMPT};

struct ReplicateFixture;

const FLUX: &str = "black-forest-labs/flux-1.1-pro";

/// A 201 carrying prediction `p1` in `status`, without output yet.
fn created(server: &MockServer, status: &str) -> ResponseTemplate {
    ResponseTemplate::new(201).set_body_json(prediction(server, "p1", status, Value::Null))
}

/// The create of the cases' flux request: defaults only.
fn flux_create() -> wiremock::MockBuilder {
    Mock::given(method("POST"))
        .and(path(create_path(FLUX)))
        .and(header("authorization", "Bearer r8_test_token"))
        .and(header("prefer", "wait=1"))
        .and(body_json(
            json!({"input": {"prompt": PROMPT, "output_format": "png"}}),
        ))
}

#[async_trait]
impl Fixture for ReplicateFixture {
    const ASYNC: bool = true;

    fn gateway(server: &MockServer) -> Gateway {
        gateway(server)
    }

    fn model() -> &'static str {
        "flux-1.1-pro"
    }

    fn reference_model() -> &'static str {
        "seedream-4"
    }

    async fn success(server: &MockServer, n: u32, references: usize) {
        if references == 0 {
            let urls = mount_outputs(server, 1, n.into()).await;
            flux_create()
                .respond_with(ResponseTemplate::new(201).set_body_json(prediction(
                    server,
                    "p1",
                    "succeeded",
                    json!(urls[0]),
                )))
                .expect(u64::from(n))
                .mount(server)
                .await;
            return;
        }
        let images: Vec<Value> = (0..references)
            .map(|i| json!(data_url(&reference_png(i))))
            .collect();
        let mut input = json!({"prompt": PROMPT, "image_input": images});
        if n > 1 {
            input["max_images"] = json!(n);
            input["sequential_image_generation"] = json!("auto");
        }
        let urls = mount_outputs(server, n as usize, 1).await;
        mount_once(
            server,
            Mock::given(method("POST"))
                .and(path(create_path("bytedance/seedream-4")))
                .and(header("authorization", "Bearer r8_test_token"))
                .and(body_json(json!({ "input": input }))),
            ResponseTemplate::new(201).set_body_json(prediction(
                server,
                "s1",
                "succeeded",
                json!(urls),
            )),
        )
        .await;
    }

    async fn moderation(server: &MockServer) {
        let mut failed = prediction(server, "p1", "failed", Value::Null);
        failed["error"] = json!(concat!(
            "The input or output was flagged as sensitive. ",
            "Please try again with different inputs. (E005)"
        ));
        Self::answer_first_call(server, ResponseTemplate::new(201).set_body_json(failed)).await;
    }

    async fn answer_first_call(server: &MockServer, answer: ResponseTemplate) {
        mount_once(server, flux_create(), answer).await;
    }

    fn rate_limited(seconds: u64) -> ResponseTemplate {
        too_many_requests(
            seconds,
            json!({
                "title": "Request was throttled",
                "status": 429,
                "detail": "Request was throttled. Expected available in 17 seconds."
            }),
        )
    }

    fn server_error() -> ResponseTemplate {
        ResponseTemplate::new(500).set_body_json(json!({
            "title": "Internal Server Error", "status": 500, "detail": "something broke"
        }))
    }

    fn malformed() -> ResponseTemplate {
        ResponseTemplate::new(201).set_body_json(json!({"id": 42, "state": "done"}))
    }

    fn truncated() -> ResponseTemplate {
        let cut_off =
            r#"{"id": "p1", "status": "succeeded", "output": "https://x/out.png", "urls": {"#;
        ResponseTemplate::new(201).set_body_raw(cut_off, "application/json")
    }

    async fn slow_completion(server: &MockServer) {
        let urls = mount_outputs(server, 1, 1).await;
        Self::answer_first_call(server, created(server, "starting")).await;
        let processing = prediction(server, "p1", "processing", Value::Null);
        common::mount_polls(
            server,
            "p1",
            &[processing.clone(), processing],
            prediction(server, "p1", "succeeded", json!(urls[0])),
        )
        .await;
        common::mount_cancel(server, "p1", 0).await;
    }

    async fn failed_status(server: &MockServer) {
        Self::answer_first_call(server, created(server, "processing")).await;
        let mut failed = prediction(server, "p1", "failed", Value::Null);
        failed["error"] = json!("CUDA error: out of memory");
        common::mount_polls(server, "p1", &[], failed).await;
        common::mount_cancel(server, "p1", 0).await;
    }

    async fn never_completes(server: &MockServer) {
        Self::answer_first_call(server, created(server, "starting")).await;
        Mock::given(method("GET"))
            .and(path("/v1/predictions/p1"))
            .and(header("authorization", "Bearer r8_test_token"))
            .respond_with(ResponseTemplate::new(200).set_body_json(prediction(
                server,
                "p1",
                "processing",
                Value::Null,
            )))
            .expect(1..)
            .mount(server)
            .await;
        common::mount_cancel(server, "p1", 1).await;
    }
}

imgproxy_testkit::conformance_suite!(crate::ReplicateFixture, polling);
