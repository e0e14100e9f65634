//! Fakes shared by the Replicate tests: prediction bodies as providers.md §4 shows them, output
//! files, polls and cancels, and a gateway pointed at the fake with the test deadline.

#![allow(
    dead_code,
    reason = "each test binary uses its own subset of these helpers"
)]
#![expect(clippy::expect_used, reason = "tests fail loudly")]

use std::sync::Arc;

use imgproxy_core::{Catalog, Gateway};
use imgproxy_provider_replicate::{Replicate, PROVIDER_ID};
use imgproxy_testkit::{png, provider_at, WithoutHeader, TEST_DEADLINE};
use serde_json::{json, Value};
use wiremock::{
    matchers::{header, method, path},
    Mock, MockServer, ResponseTemplate,
};

/// The prompt of every test request.
pub const PROMPT: &str = "a red fox in the snow";
/// The fake's API token.
pub const TOKEN: &str = "r8_test_token";

/// The create path of an official model.
pub fn create_path(model: &str) -> String {
    format!("/v1/models/{model}/predictions")
}

/// A prediction object whose `urls` point at the fake.
pub fn prediction(server: &MockServer, id: &str, status: &str, output: Value) -> Value {
    let uri = server.uri();
    json!({
        "id": id,
        "model": "owner/name",
        "version": "hidden",
        "input": {},
        "logs": "",
        "output": output,
        "data_removed": false,
        "error": null,
        "status": status,
        "created_at": "2025-07-29T05:45:44.464Z",
        "urls": {
            "get": format!("{uri}/v1/predictions/{id}"),
            "cancel": format!("{uri}/v1/predictions/{id}/cancel"),
            "web": format!("https://replicate.com/p/{id}")
        }
    })
}

/// Output files `out-0.png` … served (without credentials) `expect` times each; their URLs.
pub async fn mount_outputs(server: &MockServer, count: usize, expect: u64) -> Vec<String> {
    let mut urls = Vec::new();
    for i in 0..count {
        let file = format!("/files/out-{i}.png");
        let shade = u8::try_from(i * 30 % 256).unwrap_or_default();
        Mock::given(method("GET"))
            .and(path(file.as_str()))
            .and(WithoutHeader("authorization"))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_raw(png(16, 16, [shade, 0, 0]), "application/octet-stream"),
            )
            .expect(expect)
            .mount(server)
            .await;
        urls.push(format!("{}{file}", server.uri()));
    }
    urls
}

/// Polls of prediction `id`: each of `pending` once, in order, then `last` once.
pub async fn mount_polls(server: &MockServer, id: &str, pending: &[Value], last: Value) {
    let poll = || {
        Mock::given(method("GET"))
            .and(path(format!("/v1/predictions/{id}")))
            .and(header("authorization", "Bearer r8_test_token"))
    };
    for (index, body) in pending.iter().enumerate() {
        let priority = u8::try_from(index + 1).unwrap_or(u8::MAX);
        poll()
            .respond_with(ResponseTemplate::new(200).set_body_json(body))
            .up_to_n_times(1)
            .with_priority(priority)
            .expect(1)
            .mount(server)
            .await;
    }
    poll()
        .respond_with(ResponseTemplate::new(200).set_body_json(last))
        .with_priority(u8::MAX)
        .expect(1)
        .mount(server)
        .await;
}

/// The cancel endpoint of prediction `id`, expected `times` times.
pub async fn mount_cancel(server: &MockServer, id: &str, times: u64) {
    let mut canceled = prediction(server, id, "canceled", Value::Null);
    canceled["error"] = Value::Null;
    Mock::given(method("POST"))
        .and(path(format!("/v1/predictions/{id}/cancel")))
        .and(header("authorization", "Bearer r8_test_token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(canceled))
        .expect(times)
        .mount(server)
        .await;
}

/// A gateway with the Replicate provider pointed at `server`, and every Replicate model's
/// deadline cut to the test deadline.
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
        .provider(Arc::new(provider_at::<Replicate>(server, TOKEN)))
        .build()
}
