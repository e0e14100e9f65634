//! The shared provider conformance suite against a fake Together built from its documented
//! wire format (providers.md §8): each fake asserts the exact outgoing request (path, bearer
//! key, body) and how often it is called.

use async_trait::async_trait;
use imgproxy_core::{Gateway, ImageRequest};
use imgproxy_testkit::{
    b64, bearer_post, cut_off_json, gateway_at, mount_once, output_png, too_many_requests, Fixture,
};
use serde_json::{json, Value};
use wiremock::{matchers::body_json, MockBuilder, MockServer, ResponseTemplate};

const KEY: &str = "tgp_v1_test-key-0123456789abcdef";

struct Together;

/// A POST to `/images/generations` carrying our key.
fn call() -> MockBuilder {
    bearer_post("/images/generations", KEY)
}

/// The body the cases' request becomes, the catalog's defaults (`1024x1024`, `jpeg`) included.
fn generation_body(n: u32) -> Value {
    json!({"model": "black-forest-labs/FLUX.1-schnell", "prompt": "a red fox in the snow",
           "n": n, "response_format": "base64", "width": 1024, "height": 1024,
           "output_format": "jpeg"})
}

#[async_trait]
impl Fixture for Together {
    fn gateway(server: &MockServer) -> Gateway {
        gateway_at::<imgproxy_provider_together::Together>(server, KEY)
    }

    /// FLUX.1 [schnell] takes no reference images (`max_reference_images = 0`: the gateway
    /// would refuse them with a 400 before any call), so the reference-image case cannot apply
    /// to this provider. `references` is ignored here and in `success`, which turns that case
    /// into one more plain success instead of a failure that says nothing about Together.
    fn request(n: u32, _references: usize) -> ImageRequest {
        let mut request = ImageRequest::new(Self::model(), "a red fox in the snow");
        request.n = Some(n);
        request
    }

    fn model() -> &'static str {
        "flux-schnell"
    }

    async fn success(server: &MockServer, n: u32, _references: usize) {
        let data: Vec<Value> = (0..n as usize)
            .map(|i| json!({"index": i, "b64_json": b64(&output_png(i)), "type": "b64_json"}))
            .collect();
        mount_once(
            server,
            call().and(body_json(generation_body(n))),
            ResponseTemplate::new(200).set_body_json(json!({
                "id": "oFuwv7Y-2kFHot-99170ebf9e84e0ce-SJC",
                "model": "black-forest-labs/FLUX.1-schnell", "object": "list", "data": data
            })),
        )
        .await;
    }

    async fn moderation(server: &MockServer) {
        // Unverified shape: Together documents no moderation signal; a 4xx naming NSFW
        // content is what the adapter takes for one.
        let refusal = json!({"error": {
            "message": "NSFW content detected. Try a different prompt.",
            "type": "invalid_request_error", "param": null, "code": null
        }});
        Self::answer_first_call(server, ResponseTemplate::new(400).set_body_json(refusal)).await;
    }

    async fn answer_first_call(server: &MockServer, answer: ResponseTemplate) {
        mount_once(server, call().and(body_json(generation_body(1))), answer).await;
    }

    fn rate_limited(seconds: u64) -> ResponseTemplate {
        too_many_requests(
            seconds,
            json!({"error": {
                "message": "You have exceeded the rate limit",
                "type": "rate_limit_exceeded", "param": null, "code": null
            }}),
        )
    }

    fn server_error() -> ResponseTemplate {
        ResponseTemplate::new(503).set_body_json(json!({"error": {
            "message": "The server is overloaded", "type": "server_error"
        }}))
    }

    fn malformed() -> ResponseTemplate {
        ResponseTemplate::new(200).set_body_json(json!({"object": "list"}))
    }

    fn truncated() -> ResponseTemplate {
        cut_off_json(r#"{"id": "x", "data": [{"index": 0, "b64_json": "/9j/4AA"#)
    }
}

imgproxy_testkit::conformance_suite!(crate::Together);
