//! The shared provider conformance suite, run against a fake BFL API built from the documented
//! wire format (providers.md §6): submit `POST /v1/<model>` with `x-key`, poll the returned
//! `polling_url`, download `result.sample`.

#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

use std::sync::Arc;

use async_trait::async_trait;
use imgproxy_core::{Catalog, Gateway, ImageRequest};
use imgproxy_provider_bfl::PROVIDER_ID;
use imgproxy_testkit::{
    b64, cut_off_json, png, provider_at, reference_png, too_many_requests, Fixture, TEST_DEADLINE,
};
use serde_json::{json, Value};
use wiremock::{
    matchers::{body_json, header, method, path, query_param},
    Mock, MockServer, ResponseTemplate,
};

const KEY: &str = "bfl-test-key-0123456789";
const PROMPT: &str = "a red fox in the snow";
/// The model of the reference case: the suite sends 2 images, and Kontext takes up to 4.
const EDIT_MODEL: &str = "flux-kontext-pro";

struct Bfl;

/// What the fake answers to a submit: the task id and a polling URL on the fake itself.
fn submitted(server: &MockServer) -> Value {
    json!({"id": "task-1", "polling_url": format!("{}/v1/get_result?id=task-1", server.uri()),
           "cost": 4.0, "input_mp": 0.0, "output_mp": 0.79})
}

fn status(status: &str) -> Value {
    json!({"id": "task-1", "status": status, "result": null, "progress": null, "details": null})
}

fn ready(server: &MockServer) -> Value {
    json!({"id": "task-1", "status": "Ready", "progress": null, "details": null,
           "result": {"sample": format!("{}/delivery/task-1/sample.jpeg?se=x&sig=y", server.uri()),
                      "prompt": PROMPT, "seed": 42, "duration": 4.8}})
}

/// Mounts the submit of the default request (flux-pro-1.1 with catalog defaults).
async fn mount_submit(server: &MockServer, response: ResponseTemplate, times: u64) {
    Mock::given(method("POST"))
        .and(path("/v1/flux-pro-1.1"))
        .and(header("x-key", KEY))
        .and(body_json(json!({
            "prompt": PROMPT, "width": 1024, "height": 768, "safety_tolerance": 2,
            "prompt_upsampling": false, "output_format": "jpeg"
        })))
        .respond_with(response)
        .expect(times)
        .named("submit")
        .mount(server)
        .await;
}

/// Mounts the submit of the default request, accepted once.
async fn mount_accepted(server: &MockServer) {
    let answer = ResponseTemplate::new(200).set_body_json(submitted(server));
    mount_submit(server, answer, 1).await;
}

async fn mount_poll(server: &MockServer, answer: Value, times: impl Into<wiremock::Times>) {
    Mock::given(method("GET"))
        .and(path("/v1/get_result"))
        .and(query_param("id", "task-1"))
        .and(header("x-key", KEY))
        .respond_with(ResponseTemplate::new(200).set_body_json(answer))
        .expect(times)
        .named("poll")
        .mount(server)
        .await;
}

async fn mount_sample(server: &MockServer, times: u64) {
    Mock::given(method("GET"))
        .and(path("/delivery/task-1/sample.jpeg"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_bytes(png(16, 12, [200, 80, 20]))
                .insert_header("content-type", "image/png"),
        )
        .expect(times)
        .named("sample")
        .mount(server)
        .await;
}

#[async_trait]
impl Fixture for Bfl {
    const ASYNC: bool = true;

    fn gateway(server: &MockServer) -> Gateway {
        let mut catalog = Catalog::embedded().unwrap();
        for id in [Self::model(), EDIT_MODEL] {
            let variants = catalog.variants(id);
            let model = variants.iter().find(|m| m.provider == PROVIDER_ID).unwrap();
            let mut model = (***model).clone();
            model.deadline_secs = Some(TEST_DEADLINE.as_secs());
            catalog.upsert(model).unwrap();
        }
        Gateway::builder(catalog)
            .provider(Arc::new(provider_at::<imgproxy_provider_bfl::Bfl>(
                server, KEY,
            )))
            .build()
    }

    fn model() -> &'static str {
        "flux-pro-1.1"
    }

    fn request(n: u32, references: usize) -> ImageRequest {
        let mut request = ImageRequest::new(Self::model(), PROMPT);
        request.n = Some(n);
        if references > 0 {
            request.model = Some(EDIT_MODEL.into());
            request.images = Some(
                (0..references)
                    .map(|i| {
                        imgproxy_core::ImageInput::Text(imgproxy_testkit::data_url(&reference_png(
                            i,
                        )))
                    })
                    .collect(),
            );
        }
        request
    }

    async fn success(server: &MockServer, n: u32, references: usize) {
        let times = u64::from(n);
        let answer = ResponseTemplate::new(200).set_body_json(submitted(server));
        if references == 0 {
            mount_submit(server, answer, times).await;
        } else {
            // Kontext: reference images as bare base64 in `input_image`, `input_image_2`, ...
            let mut body = json!({"prompt": PROMPT, "safety_tolerance": 2,
                                  "prompt_upsampling": false, "output_format": "jpeg"});
            for i in 0..references {
                let field = if i == 0 {
                    "input_image".to_owned()
                } else {
                    format!("input_image_{}", i + 1)
                };
                body[field] = json!(b64(&reference_png(i)));
            }
            Mock::given(method("POST"))
                .and(path(format!("/v1/{EDIT_MODEL}")))
                .and(header("x-key", KEY))
                .and(body_json(body))
                .respond_with(answer)
                .expect(times)
                .mount(server)
                .await;
        }
        mount_poll(server, ready(server), times).await;
        mount_sample(server, times).await;
    }

    async fn moderation(server: &MockServer) {
        mount_accepted(server).await;
        mount_poll(server, status("Request Moderated"), 1).await;
        mount_sample(server, 0).await;
    }

    async fn answer_first_call(server: &MockServer, answer: ResponseTemplate) {
        mount_submit(server, answer, 1).await;
    }

    fn rate_limited(seconds: u64) -> ResponseTemplate {
        too_many_requests(seconds, json!({"detail": "Rate limit exceeded"}))
    }

    fn server_error() -> ResponseTemplate {
        ResponseTemplate::new(500).set_body_json(json!({"detail": "Internal Server Error"}))
    }

    fn malformed() -> ResponseTemplate {
        ResponseTemplate::new(200).set_body_json(json!({"status": "queued"}))
    }

    fn truncated() -> ResponseTemplate {
        cut_off_json(r#"{"id":"task-1","polling_url":"http://127.0"#)
    }

    async fn slow_completion(server: &MockServer) {
        mount_accepted(server).await;
        // Three `Pending` polls, then `Ready`: the first matching mock wins until it is used up.
        Mock::given(method("GET"))
            .and(path("/v1/get_result"))
            .and(query_param("id", "task-1"))
            .and(header("x-key", KEY))
            .respond_with(ResponseTemplate::new(200).set_body_json(status("Pending")))
            .up_to_n_times(3)
            .expect(3)
            .named("pending polls")
            .mount(server)
            .await;
        mount_poll(server, ready(server), 1).await;
        mount_sample(server, 1).await;
    }

    async fn failed_status(server: &MockServer) {
        mount_accepted(server).await;
        let mut answer = status("Error");
        answer["details"] = json!("internal generation failure");
        mount_poll(server, answer, 1).await;
        mount_sample(server, 0).await;
    }

    /// BFL has no cancel endpoint: the task is only polled until the deadline.
    async fn never_completes(server: &MockServer) {
        mount_accepted(server).await;
        mount_poll(server, status("Pending"), 2..).await;
        mount_sample(server, 0).await;
    }
}

imgproxy_testkit::conformance_suite!(super::Bfl, polling);
