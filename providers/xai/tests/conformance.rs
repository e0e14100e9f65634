//! The shared provider conformance suite against a fake xAI built from its documented wire
//! format (providers.md §5): each fake asserts the exact outgoing request (path, bearer key,
//! body) and how often it is called.

#![expect(clippy::expect_used, reason = "tests fail loudly")]

use async_trait::async_trait;
use imgproxy_core::Gateway;
use imgproxy_provider_xai::{XaiConfig, XaiProvider};
use imgproxy_testkit::{
    b64, bearer_post, cut_off_json, data_url, gateway_of, mount_once, png, reference_png, Fixture,
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
    const ASYNC: bool = false;

    fn gateway(server: &MockServer) -> Gateway {
        let config = XaiConfig::new(KEY).with_base_url(server.uri());
        gateway_of(XaiProvider::new(config).expect("provider"))
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
        let data: Vec<Value> = (0..n)
            .map(|i| {
                let shade = u8::try_from(i * 50).unwrap_or(0);
                json!({"b64_json": b64(&png(16, 16, [shade, 0, 0])), "url": null,
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
        mount_once(
            server,
            call("/images/generations").and(body_json(generation_body(1))),
            ResponseTemplate::new(200).set_body_json(json!({"data": []})),
        )
        .await;
    }

    async fn rate_limited(server: &MockServer, seconds: u64) {
        mount_once(
            server,
            call("/images/generations"),
            ResponseTemplate::new(429)
                .insert_header("retry-after", seconds.to_string().as_str())
                .set_body_json(json!({"code": "Too many requests",
                                          "error": "rate limit exceeded for this team"})),
        )
        .await;
    }

    async fn server_error(server: &MockServer) {
        mount_once(
            server,
            call("/images/generations"),
            ResponseTemplate::new(500).set_body_json(json!({"error": "internal error"})),
        )
        .await;
    }

    async fn malformed(server: &MockServer) {
        mount_once(
            server,
            call("/images/generations"),
            ResponseTemplate::new(200).set_body_json(json!({"images": "soon"})),
        )
        .await;
    }

    async fn truncated(server: &MockServer) {
        mount_once(
            server,
            call("/images/generations"),
            cut_off_json(r#"{"data": [{"b64_json": "iVBORw0KGgoAAAANSU"#),
        )
        .await;
    }
}

imgproxy_testkit::conformance_suite!(crate::Xai);
