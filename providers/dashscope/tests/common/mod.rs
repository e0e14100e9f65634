//! Fakes shared by the DashScope tests, built from providers-2.md §8: the synchronous call and
//! its answer, the task API (submit, poll, cancel), result files on the fake's own host, and
//! a gateway pointed at the fake with the test deadline.

#![allow(
    dead_code,
    reason = "each test binary uses its own subset of these helpers"
)]
#![expect(clippy::expect_used, reason = "tests fail loudly")]

use std::sync::Arc;

use imgproxy_core::{Catalog, Gateway};
use imgproxy_provider_dashscope::{DashScope, DashScopeProvider, PROVIDER_ID};
use imgproxy_testkit::{
    data_url, output_png, provider_at, reference_png, WithoutHeader, TEST_DEADLINE,
};
use serde_json::{json, Value};
use wiremock::{
    matchers::{body_json, header, method, path},
    Mock, MockBuilder, MockServer, ResponseTemplate,
};

/// The fake's API key.
pub const KEY: &str = "sk-dashscope-test-0123456789abcdef";
/// The prompt of every test request.
pub const PROMPT: &str = "a red fox in the snow";
/// The synchronous endpoint.
pub const GENERATION_PATH: &str = "/services/aigc/multimodal-generation/generation";
/// The task API's submit endpoint.
pub const SUBMIT_PATH: &str = "/services/aigc/text2image/image-synthesis";
/// The task every fake submit answers with.
pub const TASK: &str = "0385dc79-5ff8-4d82-bcb6-000000000001";

/// A keyed JSON POST to `endpoint`.
fn keyed_post(endpoint: &str) -> MockBuilder {
    Mock::given(method("POST"))
        .and(path(endpoint))
        .and(header("authorization", format!("Bearer {KEY}").as_str()))
        .and(header("content-type", "application/json"))
}

/// A call of the synchronous API, which never carries `X-DashScope-Async`.
pub fn generation_call() -> MockBuilder {
    keyed_post(GENERATION_PATH).and(WithoutHeader("x-dashscope-async"))
}

/// A submit of the task API, with `X-DashScope-Async: enable`.
pub fn task_submit() -> MockBuilder {
    keyed_post(SUBMIT_PATH).and(header("x-dashscope-async", "enable"))
}

/// The exact body of a synchronous call of `model`: the message's `content` (reference
/// images first, then the text) and `parameters`.
pub fn generation_body(model: &str, content: Vec<Value>, parameters: Value) -> Value {
    json!({"model": model,
           "input": {"messages": [{"role": "user", "content": content}]},
           "parameters": parameters})
}

/// The message content of `references` test images and the prompt.
pub fn content(references: usize) -> Vec<Value> {
    (0..references)
        .map(|i| json!({"image": data_url(&reference_png(i))}))
        .chain([json!({"text": PROMPT})])
        .collect()
}

/// The exact body of a task submit of `model`.
pub fn task_body(model: &str, parameters: Value) -> Value {
    json!({"model": model, "input": {"prompt": PROMPT}, "parameters": parameters})
}

/// Result files `/results/<i>.png` for the first `count` images, served without the key
/// `times` times each; their signed URLs, as OSS gives them.
pub async fn mount_results(server: &MockServer, count: usize, times: u64) -> Vec<String> {
    let mut urls = Vec::new();
    for i in 0..count {
        let file = format!("/results/{i}.png");
        Mock::given(method("GET"))
            .and(path(file.as_str()))
            .and(WithoutHeader("authorization"))
            .respond_with(ResponseTemplate::new(200).set_body_raw(output_png(i), "image/png"))
            .expect(times)
            .named("result download")
            .mount(server)
            .await;
        urls.push(format!(
            "{}{file}?Expires=1767225600&OSSAccessKeyId=LTAI&Signature=abc%3D",
            server.uri()
        ));
    }
    urls
}

/// A synchronous answer carrying `images` in one choice, as the official edit sample does.
pub fn images_answer(images: &[String]) -> Value {
    let content: Vec<Value> = images.iter().map(|image| json!({"image": image})).collect();
    json!({"output": {"choices": [{"finish_reason": "stop",
                                   "message": {"role": "assistant", "content": content}}]},
           "usage": {"width": 16, "height": 16, "image_count": images.len()},
           "request_id": "d0250a3d-b07f-49e1-bdc8-000000000000"})
}

/// Mounts a synchronous call of `model` that must carry exactly `content` and `parameters`,
/// answered with `n` result files (downloaded once each).
pub async fn mount_generation(
    server: &MockServer,
    model: &str,
    content: Vec<Value>,
    parameters: Value,
    n: usize,
) {
    let urls = mount_results(server, n, 1).await;
    generation_call()
        .and(body_json(generation_body(model, content, parameters)))
        .respond_with(ResponseTemplate::new(200).set_body_json(images_answer(&urls)))
        .expect(1)
        .named("generation")
        .mount(server)
        .await;
}

/// DashScope's error envelope.
pub fn error(status: u16, code: &str, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(
        json!({"request_id": "7a1b0c2d-0000-0000-0000-000000000000", "code": code, "message": message}),
    )
}

/// What a submit answers: the task, `PENDING`.
pub fn submitted() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "output": {"task_status": "PENDING", "task_id": TASK},
        "request_id": "4909100c-7b5a-9f92-bfe5-000000000000"
    }))
}

/// A poll answer in `status`, with `extra` fields in `output`.
pub fn task_state(status: &str, extra: Value) -> Value {
    let mut output = json!({"task_id": TASK, "task_status": status,
                            "submit_time": "2025-09-09 11:38:54.741"});
    if let (Some(output), Value::Object(extra)) = (output.as_object_mut(), extra) {
        output.extend(extra);
    }
    json!({"request_id": "5b0c-0000", "output": output})
}

/// A `SUCCEEDED` poll answer with one result per URL.
pub fn succeeded(urls: &[String]) -> Value {
    let results: Vec<Value> = urls
        .iter()
        .map(|url| json!({"orig_prompt": PROMPT, "actual_prompt": format!("{PROMPT}, detailed"), "url": url}))
        .collect();
    task_state(
        "SUCCEEDED",
        json!({"results": results, "end_time": "2025-09-09 11:39:10.102"}),
    )
}

/// A keyed poll of the task.
pub fn poll() -> MockBuilder {
    Mock::given(method("GET"))
        .and(path(format!("/tasks/{TASK}")))
        .and(header("authorization", format!("Bearer {KEY}").as_str()))
}

/// Mounts polls of the task answering `answer`, `times` times.
pub async fn mount_poll(server: &MockServer, answer: Value, times: impl Into<wiremock::Times>) {
    poll()
        .respond_with(ResponseTemplate::new(200).set_body_json(answer))
        .expect(times)
        .named("poll")
        .mount(server)
        .await;
}

/// Mounts polls answering `RUNNING` the first `running` times, ahead of other poll mocks.
pub async fn mount_running(server: &MockServer, running: u64) {
    poll()
        .respond_with(ResponseTemplate::new(200).set_body_json(task_state("RUNNING", json!({}))))
        .up_to_n_times(running)
        .expect(running)
        .with_priority(1)
        .named("running polls")
        .mount(server)
        .await;
}

/// The keyed cancel of the task, expected `times` times.
pub async fn mount_cancel(server: &MockServer, times: impl Into<wiremock::Times>) {
    Mock::given(method("POST"))
        .and(path(format!("/tasks/{TASK}/cancel")))
        .and(header("authorization", format!("Bearer {KEY}").as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"request_id": "c-1"})))
        .expect(times)
        .named("cancel")
        .mount(server)
        .await;
}

/// The provider pointed at `server`.
pub fn provider(server: &MockServer) -> DashScopeProvider {
    provider_at::<DashScope>(server, KEY)
}

/// A gateway with the DashScope provider pointed at `server`, every DashScope model's deadline
/// cut to the test deadline.
pub fn gateway(server: &MockServer) -> Gateway {
    let mut catalog = Catalog::embedded().expect("embedded catalog");
    let ours: Vec<_> = catalog
        .models()
        .filter(|m| m.provider == PROVIDER_ID)
        .map(|m| (**m).clone())
        .collect();
    for mut model in ours {
        model.deadline_secs = Some(TEST_DEADLINE.as_secs());
        catalog.upsert(model).expect("upsert");
    }
    Gateway::builder(catalog)
        .provider(Arc::new(provider(server)))
        .failover(imgproxy_testkit::one_attempt())
        .build()
}
