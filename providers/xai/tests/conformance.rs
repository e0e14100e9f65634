//! The shared provider conformance suite against a fake xAI built from its documented wire
//! format (providers.md §5): each fake asserts the exact outgoing request (path, bearer key,
//! body) and how often it is called.

use async_trait::async_trait;
use imgproxy_core::Gateway;
use imgproxy_testkit::{
    b64, bearer_post, cut_off_json, data_url, gateway_at, mount_once, output_png, reference_png,
    too_many_requests, Fixture,
};
use serde_json::{json, Value};
use wiremock::{matchers::body_json, MockBuilder, MockServer, ResponseTemplate};

const KEY: &str = "xai-test-key-0123456789abcdef";

struct Xai;

/// A POST to `endpoint` carrying our key.
fn call(endpoint: &str) -> MockBuilder {
    bearer_post(endpoint, KEY)
}

/// The body the cases' request becomes: defaults only, since the catalog gives `grok-imagine`
/// no default parameters.
fn generation_body(n: u32) -> Value {
    json!({"model": "grok-imagine-image", "prompt": "a red fox in the snow", "n": n,
           "response_format": "b64_json"})
}

#[async_trait]
impl Fixture for Xai {
    fn gateway(server: &MockServer) -> Gateway {
        gateway_at::<imgproxy_provider_xai::Xai>(server, KEY)
    }

    fn model() -> &'static str {
        "grok-imagine"
    }

    async fn success(server: &MockServer, n: u32, references: usize) {
        let mut body = generation_body(n);
        let endpoint = if references == 0 {
            "/images/generations"
        } else {
            // Several inputs go to the edits endpoint as `images`, data URLs in request order.
            body["images"] = (0..references)
                .map(|i| json!({"url": data_url(&reference_png(i)), "type": "image_url"}))
                .collect();
            "/images/edits"
        };
        let data: Vec<Value> = (0..n as usize)
            .map(|i| {
                json!({"b64_json": b64(&output_png(i)), "url": null,
                       "mime_type": "image/png", "revised_prompt": ""})
            })
            .collect();
        mount_once(
            server,
            call(endpoint).and(body_json(body)),
            ResponseTemplate::new(200).set_body_json(json!({
                "data": data, "usage": {"cost_in_usd_ticks": 200_000_000}, "block_reason": null
            })),
        )
        .await;
    }

    async fn moderation(server: &MockServer) {
        // xAI moderates silently: a 200 with no image.
        let answer = ResponseTemplate::new(200).set_body_json(json!({"data": []}));
        Self::answer_first_call(server, answer).await;
    }

    async fn answer_first_call(server: &MockServer, answer: ResponseTemplate) {
        let generation = call("/images/generations").and(body_json(generation_body(1)));
        mount_once(server, generation, answer).await;
    }

    fn rate_limited(seconds: u64) -> ResponseTemplate {
        too_many_requests(
            seconds,
            json!({"code": "Too many requests", "error": "rate limit exceeded for this team"}),
        )
    }

    fn server_error() -> ResponseTemplate {
        ResponseTemplate::new(500).set_body_json(json!({"error": "internal error"}))
    }

    fn malformed() -> ResponseTemplate {
        ResponseTemplate::new(200).set_body_json(json!({"images": "soon"}))
    }

    fn truncated() -> ResponseTemplate {
        cut_off_json(r#"{"data": [{"b64_json": "iVBORw0KGgoAAAANSU"#)
    }
}

imgproxy_testkit::conformance_suite!(crate::Xai);
