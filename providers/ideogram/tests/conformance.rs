//! The shared provider conformance suite against a fake Ideogram built from its documented wire
//! format (providers-2.md §12, see `fake`): each fake asserts the exact outgoing request (path,
//! `Api-Key`, multipart parts) and how often it is called.

mod fake;

use async_trait::async_trait;
use fake::form::FormPart;
use imgproxy_core::Gateway;
use imgproxy_testkit::{
    cut_off_json, gateway_at, mount_once, reference_png, too_many_requests, Fixture,
};
use serde_json::json;
use wiremock::{MockServer, ResponseTemplate};

const KEY: &str = "ideogram-test-key-0123456789abcdef";
const PROMPT: &str = "a red fox in the snow";

struct Ideogram;

/// The text parts the cases' request becomes: the prompt, the count and the catalog's default
/// `rendering_speed`.
fn text_parts(n: &str) -> [(&'static str, &str); 3] {
    [
        ("prompt", PROMPT),
        ("num_images", n),
        ("rendering_speed", "DEFAULT"),
    ]
}

#[async_trait]
impl Fixture for Ideogram {
    fn gateway(server: &MockServer) -> Gateway {
        gateway_at::<imgproxy_provider_ideogram::Ideogram>(server, KEY)
    }

    /// Ideogram remixes one image (`max_reference_images = 1`), which `success` asserts
    /// arrives as the `image` part of `/remix`.
    fn max_references() -> usize {
        1
    }

    fn model() -> &'static str {
        "ideogram-v3"
    }

    async fn success(server: &MockServer, n: u32, references: usize) {
        let answer = fake::images(server, n).await;
        let (action, files) = if references == 0 {
            ("generate", Vec::new())
        } else {
            let image = FormPart::file("image", "image.png", "image/png", &reference_png(0));
            ("remix", vec![image])
        };
        let n = n.to_string();
        let call = fake::with_parts(action, KEY, &text_parts(&n), files);
        mount_once(server, call, answer).await;
    }

    async fn moderation(server: &MockServer) {
        let refusal = json!({"error": "Prompt or provided image failed the safety checks"});
        Self::answer_first_call(server, ResponseTemplate::new(422).set_body_json(refusal)).await;
    }

    async fn answer_first_call(server: &MockServer, answer: ResponseTemplate) {
        let call = fake::with_parts("generate", KEY, &text_parts("1"), Vec::new());
        mount_once(server, call, answer).await;
    }

    fn rate_limited(seconds: u64) -> ResponseTemplate {
        too_many_requests(seconds, json!({"error": "Too many requests"}))
    }

    fn server_error() -> ResponseTemplate {
        ResponseTemplate::new(500).set_body_json(json!({"error": "Internal server error"}))
    }

    fn malformed() -> ResponseTemplate {
        ResponseTemplate::new(200).set_body_json(json!({"created": "2026-06-02T16:24:11Z"}))
    }

    fn truncated() -> ResponseTemplate {
        cut_off_json(r#"{"created": "2026-06-02T16:24:11Z", "data": [{"url": "https://api.ide"#)
    }
}

imgproxy_testkit::conformance_suite!(crate::Ideogram);
