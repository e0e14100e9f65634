//! The shared provider conformance suite against a fake OpenAI built from its documented wire
//! format (providers.md §1.3 and §1.5): each fake asserts the exact outgoing request (path,
//! bearer key, JSON body or multipart parts) and how often it is called.

#![expect(clippy::expect_used, reason = "tests fail loudly")]

use async_trait::async_trait;
use imgproxy_core::Gateway;
use imgproxy_provider_openai::{OpenAIConfig, OpenAIProvider};
use imgproxy_testkit::form::{exact_form, FormPart};
use imgproxy_testkit::{
    b64, bearer_post, cut_off_json, forbid, gateway_of, mount_once, output_png, reference_png,
    too_many_requests, Fixture,
};
use serde_json::{json, Value};
use wiremock::{
    matchers::{any, body_json, header, header_regex, path},
    Mock, MockBuilder, MockServer, ResponseTemplate,
};

const KEY: &str = "sk-test-openai-0123456789abcdef";
const PROMPT: &str = "a red fox in the snow";

struct OpenAI;

/// A POST to `endpoint` carrying our key.
fn call(endpoint: &str) -> MockBuilder {
    bearer_post(endpoint, KEY)
}

/// The JSON body of `/images/generations` the cases' request becomes: the catalog's defaults
/// for `gpt-image-2`, and never `response_format`.
fn generation_body(n: u32) -> Value {
    json!({"model": "gpt-image-2", "prompt": PROMPT, "n": n, "background": "auto",
           "moderation": "auto", "output_format": "png", "quality": "auto", "size": "auto"})
}

/// The same fields as the text parts of `/images/edits`: numbers as decimal strings.
fn edit_fields(n: u32) -> Vec<(String, String)> {
    let Value::Object(body) = generation_body(n) else {
        return Vec::new();
    };
    body.into_iter()
        .map(|(name, value)| match value {
            Value::String(text) => (name, text),
            other => (name, other.to_string()),
        })
        .collect()
}

/// `POST /images/generations` with the exact body of a one-image request.
fn generation() -> MockBuilder {
    call("/images/generations").and(body_json(generation_body(1)))
}

/// An OpenAI error envelope.
fn error(message: &str, kind: &str, code: Option<&str>) -> Value {
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}

#[async_trait]
impl Fixture for OpenAI {
    fn gateway(server: &MockServer) -> Gateway {
        let mut config = OpenAIConfig::new(KEY);
        config.upstream.base_url = Some(server.uri());
        gateway_of(OpenAIProvider::new(config).expect("provider"))
    }

    fn model() -> &'static str {
        "gpt-image-2"
    }

    async fn success(server: &MockServer, n: u32, references: usize) {
        let data: Vec<Value> = (0..n as usize)
            .map(|i| json!({"b64_json": b64(&output_png(i))}))
            .collect();
        let answer = ResponseTemplate::new(200).set_body_json(json!({
            "created": 1776729600, "data": data, "background": "opaque",
            "output_format": "png", "quality": "high", "size": "1024x1024",
            "usage": {"input_tokens": 50, "output_tokens": 50, "total_tokens": 100,
                      "input_tokens_details": {"text_tokens": 10, "image_tokens": 40}}
        }));
        if references == 0 {
            mount_once(
                server,
                call("/images/generations")
                    .and(header("content-type", "application/json"))
                    .and(body_json(generation_body(n))),
                answer,
            )
            .await;
            return;
        }
        // Reference images go to the edits endpoint as multipart: the same fields as text
        // parts, then one `image[]` file part per reference, in request order.
        let text = edit_fields(n);
        let text: Vec<(&str, &str)> = text.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let files = (0..references)
            .map(|i| {
                let name = format!("image-{i}.png");
                FormPart::file("image[]", &name, "image/png", &reference_png(i))
            })
            .collect();
        mount_once(
            server,
            call("/images/edits")
                .and(header_regex(
                    "content-type",
                    "^multipart/form-data; boundary=.+$",
                ))
                .and(exact_form(&text, files)),
            answer,
        )
        .await;
        forbid(server, Mock::given(any()).and(path("/images/generations"))).await;
    }

    async fn moderation(server: &MockServer) {
        let refusal = error(
            "Your request was rejected by the safety system.",
            "image_generation_user_error",
            Some("moderation_blocked"),
        );
        Self::answer_first_call(server, ResponseTemplate::new(400).set_body_json(refusal)).await;
    }

    async fn answer_first_call(server: &MockServer, answer: ResponseTemplate) {
        mount_once(server, generation(), answer).await;
    }

    fn rate_limited(seconds: u64) -> ResponseTemplate {
        too_many_requests(
            seconds,
            error(
                "Rate limit reached for gpt-image-2 on images per minute.",
                "requests",
                Some("rate_limit_exceeded"),
            ),
        )
    }

    fn server_error() -> ResponseTemplate {
        ResponseTemplate::new(500).set_body_json(error(
            "The server had an error while processing your request.",
            "server_error",
            None,
        ))
    }

    fn malformed() -> ResponseTemplate {
        ResponseTemplate::new(200).set_body_json(json!({"images": "soon"}))
    }

    fn truncated() -> ResponseTemplate {
        cut_off_json(r#"{"created": 1, "data": [{"b64_json": "iVBORw0KGgoAAAANSU"#)
    }
}

imgproxy_testkit::conformance_suite!(crate::OpenAI);
