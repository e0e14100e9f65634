//! The shared provider conformance suite against a fake xAI built from its documented wire
//! format (providers.md §5): each fake asserts the exact outgoing request (path, bearer key,
//! body) and how often it is called.

#![expect(clippy::expect_used, reason = "tests fail loudly")]

use std::sync::Arc;

use async_trait::async_trait;
use imgproxy_core::{Catalog, Gateway};
use imgproxy_provider_xai::{XaiConfig, XaiProvider};
use imgproxy_testkit::{b64, data_url, png, reference_png, Fixture};
use serde_json::{json, Value};
use wiremock::{
    matchers::{body_json, header, method, path},
    Mock, MockBuilder, MockServer, ResponseTemplate,
};

const KEY: &str = "xai-test-key-0123456789abcdef";

struct Xai;

/// A POST to `endpoint` carrying our key.
fn call(endpoint: &str) -> MockBuilder {
    Mock::given(method("POST"))
        .and(path(endpoint))
        .and(header("authorization", format!("Bearer {KEY}").as_str()))
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
        let mut config = XaiConfig::new(KEY);
        config.base_url = Some(server.uri());
        let provider = XaiProvider::new(config).expect("provider");
        Gateway::builder(Catalog::embedded().expect("catalog"))
            .provider(Arc::new(provider))
            .build()
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
        call(endpoint)
            .and(body_json(body))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "data": data, "usage": {"cost_in_usd_ticks": 200_000_000}, "block_reason": null
            })))
            .expect(1)
            .mount(server)
            .await;
    }

    async fn moderation(server: &MockServer) {
        // xAI moderates silently: a 200 with no image.
        call("/images/generations")
            .and(body_json(generation_body(1)))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": []})))
            .expect(1)
            .mount(server)
            .await;
    }

    async fn rate_limited(server: &MockServer, seconds: u64) {
        call("/images/generations")
            .respond_with(
                ResponseTemplate::new(429)
                    .insert_header("retry-after", seconds.to_string().as_str())
                    .set_body_json(json!({"code": "Too many requests",
                                          "error": "rate limit exceeded for this team"})),
            )
            .expect(1)
            .mount(server)
            .await;
    }

    async fn server_error(server: &MockServer) {
        call("/images/generations")
            .respond_with(
                ResponseTemplate::new(500).set_body_json(json!({"error": "internal error"})),
            )
            .expect(1)
            .mount(server)
            .await;
    }

    async fn malformed(server: &MockServer) {
        call("/images/generations")
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"images": "soon"})))
            .expect(1)
            .mount(server)
            .await;
    }

    async fn truncated(server: &MockServer) {
        call("/images/generations")
            .respond_with(
                ResponseTemplate::new(200)
                    .insert_header("content-type", "application/json")
                    .set_body_string(r#"{"data": [{"b64_json": "iVBORw0KGgoAAAANSU"#),
            )
            .expect(1)
            .mount(server)
            .await;
    }
}

imgproxy_testkit::conformance_suite!(crate::Xai);
