//! The shared provider conformance suite against a fake Recraft built from its wire format
//! (providers-2.md §13): each fake asserts the exact outgoing request (path, bearer key, body
//! or multipart form), that results are downloaded without the key, and how often each is
//! called.
//!
//! The text-to-image cases use `recraft-v4.1`. No Recraft model here takes two reference images
//! (its generations take none, its tools exactly one), so the reference case asks `vectorize`
//! with one image and checks that it arrives as the multipart `file` part.

mod common;

use async_trait::async_trait;
use common::{
    call, generation, generation_answer, plain_body, result, svg, tool_answer, FormIs, FormPart,
    KEY, PROMPT,
};
use imgproxy_core::{Gateway, ImageInput, ImageRequest};
use imgproxy_testkit::{
    cut_off_json, data_url, gateway_at, mount_once, output_png, reference_png, too_many_requests,
    Fixture,
};
use serde_json::json;
use wiremock::{MockServer, ResponseTemplate};

const UPSTREAM: &str = "recraftv4_1";

struct Recraft;

#[async_trait]
impl Fixture for Recraft {
    fn gateway(server: &MockServer) -> Gateway {
        gateway_at::<imgproxy_provider_recraft::Recraft>(server, KEY)
    }

    fn request(n: u32, references: usize) -> ImageRequest {
        if references == 0 {
            let mut request = ImageRequest::new(Self::model(), PROMPT);
            request.n = Some(n);
            return request;
        }
        ImageRequest {
            model: Some("vectorize".into()),
            n: Some(n),
            images: Some(vec![ImageInput::Text(data_url(&reference_png(0)))]),
            ..ImageRequest::default()
        }
    }

    fn model() -> &'static str {
        "recraft-v4.1"
    }

    async fn success(server: &MockServer, n: u32, references: usize) {
        if references == 0 {
            let mut urls = Vec::new();
            for i in 0..n as usize {
                urls.push(result(server, &format!("{i}.png"), output_png(i), "image/png").await);
            }
            let answer = generation_answer(&urls);
            return mount_once(server, generation(plain_body(UPSTREAM, n)), answer).await;
        }
        let url = result(server, "v.svg", svg(0), "image/svg+xml").await;
        let form = FormIs(vec![
            FormPart::file("file", "image.png", "image/png", &reference_png(0)),
            FormPart::text("response_format", "url"),
        ]);
        mount_once(server, call("vectorize").and(form), tool_answer(&url)).await;
    }

    async fn moderation(server: &MockServer) {
        // Unverified shape: Recraft documents no moderation signal (providers-2.md §13); a 4xx
        // whose code or message speaks of NSFW content is what the adapter takes for one.
        let refusal = json!({"code": "nsfw_content", "message": "The prompt was flagged as NSFW"});
        Self::answer_first_call(server, ResponseTemplate::new(400).set_body_json(refusal)).await;
    }

    async fn answer_first_call(server: &MockServer, answer: ResponseTemplate) {
        mount_once(server, generation(plain_body(UPSTREAM, 1)), answer).await;
    }

    fn rate_limited(seconds: u64) -> ResponseTemplate {
        too_many_requests(
            seconds,
            json!({"code": "too_many_requests", "message": "Rate limit exceeded"}),
        )
    }

    fn server_error() -> ResponseTemplate {
        ResponseTemplate::new(500)
            .set_body_json(json!({"code": "internal_error", "message": "Internal server error"}))
    }

    fn malformed() -> ResponseTemplate {
        ResponseTemplate::new(200).set_body_json(json!({"created": 1, "credits": 35}))
    }

    fn truncated() -> ResponseTemplate {
        cut_off_json(
            r#"{"created":1,"credits":35,"data":[{"image_id":"a1","url":"http://127.0.0.1/re"#,
        )
    }
}

imgproxy_testkit::conformance_suite!(crate::Recraft);
