//! The shared provider conformance suite against a fake fal queue API (providers.md §7).
//!
//! The text-to-image cases use `z-image`. No fal model takes two reference images (BiRefNet and
//! vectorize take exactly one, z-image none), so the reference case asks `birefnet-bg-removal`
//! with one image and checks that it arrives as the `image_url` data URL.

#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use async_trait::async_trait;
use common::{cancel, cdn_file, images_output, result, status, status_forever, submit, AUTH};
use imgproxy_core::{Gateway, ImageInput, ImageRequest};
use imgproxy_testkit::{
    cut_off_json, data_url, mount_once, png, reference_png, too_many_requests, Fixture,
    TEST_DEADLINE,
};
use serde_json::json;
use wiremock::{
    matchers::{header, method, path},
    Mock, MockServer, ResponseTemplate,
};

const PROMPT: &str = "a red fox in the snow";
const UPSTREAM: &str = "fal-ai/z-image/turbo";

struct Fal;

/// Mounts the submit of job `id`, a z-image request of `n` images with the defaults.
async fn submit_z_image(server: &MockServer, n: u32, id: &str) {
    let input = json!({"prompt": PROMPT, "num_images": n, "image_size": "square_hd",
                       "output_format": "png"});
    submit(server, UPSTREAM, input, id).await;
}

/// Mounts submit → `COMPLETED` → result for a z-image job of `n` images.
async fn z_image_job(server: &MockServer, n: u32, id: &str, nsfw: &[bool], downloads: u64) {
    submit_z_image(server, n, id).await;
    status(server, id, "COMPLETED", 1).await;
    let mut urls = Vec::new();
    for i in 0..n {
        let image = png(8, 8, [200, u8::try_from(i * 30).unwrap(), 10]);
        let name = format!("{id}-{i}.png");
        urls.push(cdn_file(server, &name, image, "image/png", downloads).await);
    }
    result(server, id, 200, images_output(&urls, nsfw), 1).await;
    cancel(server, id, 0).await;
}

#[async_trait]
impl Fixture for Fal {
    const ASYNC: bool = true;

    fn gateway(server: &MockServer) -> Gateway {
        common::gateway(server, TEST_DEADLINE.as_secs())
    }

    fn request(n: u32, references: usize) -> ImageRequest {
        if references == 0 {
            let mut request = ImageRequest::new(Self::model(), PROMPT);
            request.n = Some(n);
            return request;
        }
        ImageRequest {
            model: Some("birefnet-bg-removal".into()),
            n: Some(n),
            images: Some(vec![ImageInput::Text(data_url(&reference_png(0)))]),
            ..ImageRequest::default()
        }
    }

    fn model() -> &'static str {
        "z-image"
    }

    async fn success(server: &MockServer, n: u32, references: usize) {
        if references == 0 {
            return z_image_job(server, n, "job-ok", &vec![false; n as usize], 1).await;
        }
        let input = json!({"image_url": data_url(&reference_png(0)), "output_format": "png"});
        submit(server, "fal-ai/birefnet", input, "job-cutout").await;
        status(server, "job-cutout", "COMPLETED", 1).await;
        let url = cdn_file(server, "cutout.png", png(8, 8, [0, 0, 0]), "image/png", 1).await;
        let output = json!({"image": {"url": url, "content_type": "image/png",
                                      "width": 8, "height": 8}});
        result(server, "job-cutout", 200, output, 1).await;
    }

    async fn moderation(server: &MockServer) {
        // A flagged image is black anyway: it must not even be downloaded.
        z_image_job(server, 1, "job-nsfw", &[true], 0).await;
    }

    async fn answer_first_call(server: &MockServer, answer: ResponseTemplate) {
        let submit = Mock::given(method("POST"))
            .and(path(format!("/{UPSTREAM}")))
            .and(header("authorization", AUTH));
        mount_once(server, submit, answer).await;
    }

    fn rate_limited(seconds: u64) -> ResponseTemplate {
        too_many_requests(seconds, json!({"detail": "Too many concurrent requests"}))
    }

    fn server_error() -> ResponseTemplate {
        ResponseTemplate::new(500).set_body_json(json!({"detail": "Internal Server Error"}))
    }

    fn malformed() -> ResponseTemplate {
        ResponseTemplate::new(200).set_body_json(json!({"queued": true}))
    }

    fn truncated() -> ResponseTemplate {
        cut_off_json(r#"{"request_id":"job-cut","status_url":"http://127.0.0.1/jo"#)
    }

    async fn slow_completion(server: &MockServer) {
        let id = "job-slow";
        submit_z_image(server, 1, id).await;
        status(server, id, "IN_QUEUE", 1).await;
        status(server, id, "IN_PROGRESS", 1).await;
        status(server, id, "COMPLETED", 1).await;
        let url = cdn_file(server, "slow.png", png(8, 8, [1, 2, 3]), "image/png", 1).await;
        result(server, id, 200, images_output(&[url], &[false]), 1).await;
        cancel(server, id, 0).await;
    }

    async fn failed_status(server: &MockServer) {
        let id = "job-failed";
        submit_z_image(server, 1, id).await;
        status(server, id, "IN_PROGRESS", 1).await;
        mount_once(
            server,
            Mock::given(method("GET")).and(path(format!("/jobs/{id}/state"))),
            ResponseTemplate::new(200).set_body_json(
                json!({"status": "FAILED", "error": "runner crashed", "request_id": id}),
            ),
        )
        .await;
        result(server, id, 200, json!({}), 0).await;
        // A terminal status: nothing left to cancel.
        cancel(server, id, 0).await;
    }

    async fn never_completes(server: &MockServer) {
        let id = "job-stuck";
        submit_z_image(server, 1, id).await;
        status_forever(server, id).await;
        result(server, id, 200, json!({}), 0).await;
        cancel(server, id, 1).await;
    }
}

imgproxy_testkit::conformance_suite!(crate::Fal, polling);
