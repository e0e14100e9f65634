//! Fakes of fal's queue API shared by the conformance fixture and the model tests. Job URLs
//! live under `/jobs/...`, deliberately not fal's own layout, so that an adapter that rebuilt
//! them instead of following what the submit returned would miss every mock.

#![allow(dead_code, reason = "each test crate uses a different part")]

use std::sync::Arc;

use imgproxy_core::{Catalog, Gateway};
use imgproxy_provider_fal::{Fal, FalProvider};
use imgproxy_testkit::{provider_at, WithoutHeader};
use serde_json::{json, Value};
use wiremock::{
    matchers::{body_json, header, method, path},
    Mock, MockServer, ResponseTemplate,
};

pub const KEY: &str = "fal-test-key-0123456789abcdef";
pub const AUTH: &str = "Key fal-test-key-0123456789abcdef";
pub const FAL_MODELS: [&str; 3] = ["z-image", "birefnet-bg-removal", "vectorize"];

/// The provider, pointed at `server`.
pub fn provider(server: &MockServer) -> FalProvider {
    provider_at::<Fal>(server, KEY)
}

/// The embedded catalog with the fal models' deadline cut to `deadline_secs`.
pub fn catalog(deadline_secs: u64) -> Catalog {
    let mut catalog = Catalog::embedded().unwrap();
    for id in FAL_MODELS {
        let mut model = (**catalog.get(id).unwrap()).clone();
        model.deadline_secs = Some(deadline_secs);
        catalog.upsert(model).unwrap();
    }
    catalog
}

/// A gateway serving the fal models from `server`.
pub fn gateway(server: &MockServer, deadline_secs: u64) -> Gateway {
    Gateway::builder(catalog(deadline_secs))
        .provider(Arc::new(provider(server)))
        .build()
}

/// The URLs of job `id` on `server`, as the submit answer carries them.
pub struct JobUrls {
    pub status: String,
    pub response: String,
    pub cancel: String,
}

pub fn job_urls(server: &MockServer, id: &str) -> JobUrls {
    JobUrls {
        status: format!("{}/jobs/{id}/state", server.uri()),
        response: format!("{}/jobs/{id}/output", server.uri()),
        cancel: format!("{}/jobs/{id}/stop", server.uri()),
    }
}

fn path_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.find('/')
        .map_or_else(|| "/".into(), |i| rest[i..].to_owned())
}

/// Mounts the submit of `input` to `upstream` (exact body, auth), answering job `id`.
pub async fn submit(server: &MockServer, upstream: &str, input: Value, id: &str) {
    let urls = job_urls(server, id);
    Mock::given(method("POST"))
        .and(path(format!("/{upstream}")))
        .and(header("authorization", AUTH))
        .and(body_json(input))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "request_id": id,
            "status_url": urls.status,
            "response_url": urls.response,
            "cancel_url": urls.cancel,
            "status": "IN_QUEUE",
            "queue_position": 0
        })))
        .expect(1)
        .mount(server)
        .await;
}

/// Mounts `times` status answers of `status` for job `id` (after earlier-mounted ones).
pub async fn status(server: &MockServer, id: &str, status: &str, times: u64) {
    let body = json!({"status": status, "request_id": id, "logs": [], "queue_position": 0});
    Mock::given(method("GET"))
        .and(path(path_of(&job_urls(server, id).status)))
        .and(header("authorization", AUTH))
        .respond_with(ResponseTemplate::new(200).set_body_json(body))
        .up_to_n_times(times)
        .expect(times)
        .mount(server)
        .await;
}

/// Mounts a status that stays `IN_PROGRESS` however often it is polled.
pub async fn status_forever(server: &MockServer, id: &str) {
    Mock::given(method("GET"))
        .and(path(path_of(&job_urls(server, id).status)))
        .and(header("authorization", AUTH))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"status": "IN_PROGRESS", "logs": []})),
        )
        .expect(2..)
        .mount(server)
        .await;
}

/// Mounts the result of job `id`: `response` with HTTP `code`, `times` times.
pub async fn result(server: &MockServer, id: &str, code: u16, response: Value, times: u64) {
    Mock::given(method("GET"))
        .and(path(path_of(&job_urls(server, id).response)))
        .and(header("authorization", AUTH))
        .respond_with(ResponseTemplate::new(code).set_body_json(response))
        .up_to_n_times(times.max(1))
        .expect(times)
        .mount(server)
        .await;
}

/// Mounts the cancel of job `id`, expected `times` times.
pub async fn cancel(server: &MockServer, id: &str, times: u64) {
    Mock::given(method("PUT"))
        .and(path(path_of(&job_urls(server, id).cancel)))
        .and(header("authorization", AUTH))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"status": "CANCELLATION_REQUESTED"})),
        )
        .expect(times)
        .mount(server)
        .await;
}

/// Mounts a CDN file at `/cdn/{name}` (downloaded `times` times, never with the key) and
/// returns its URL.
pub async fn cdn_file(
    server: &MockServer,
    name: &str,
    bytes: Vec<u8>,
    content_type: &str,
    times: u64,
) -> String {
    Mock::given(method("GET"))
        .and(path(format!("/cdn/{name}")))
        .and(WithoutHeader("authorization"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(bytes, content_type))
        .expect(times)
        .mount(server)
        .await;
    format!("{}/cdn/{name}", server.uri())
}

/// A fal image output listing `urls`, with the safety flags `nsfw`.
pub fn images_output(urls: &[String], nsfw: &[bool]) -> Value {
    let images: Vec<Value> = urls
        .iter()
        .map(|url| json!({"url": url, "width": 8, "height": 8, "content_type": "image/png"}))
        .collect();
    json!({"images": images, "timings": {"inference": 0.4}, "seed": 7,
           "has_nsfw_concepts": nsfw, "prompt": "a red fox in the snow"})
}
