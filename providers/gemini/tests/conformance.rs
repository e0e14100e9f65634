//! The shared provider conformance suite, run against a fake Gemini API built from the
//! documented wire format (providers.md §2): every fake asserts the exact outgoing body, the
//! key header, the path and the call count.

use async_trait::async_trait;
use imgproxy_core::Gateway;
use imgproxy_testkit::{b64, cut_off_json, gateway_at, png, reference_png, Fixture};
use serde_json::{json, Value};
use wiremock::{
    matchers::{body_json, header, method, path},
    Mock, MockServer, ResponseTemplate,
};

const KEY: &str = "gemini-test-key-0123456789";
const PATH: &str = "/v1beta/models/gemini-3.1-flash-image:generateContent";

struct Gemini;

/// The body every case sends for [`Fixture::request`]: the prompt, then one `inlineData`
/// part per reference image, image-only output and no `imageConfig` (nothing was asked).
fn expected_body(references: usize) -> Value {
    let mut parts = vec![json!({"text": "a red fox in the snow"})];
    parts.extend(
        (0..references).map(
            |i| json!({"inlineData": {"mimeType": "image/png", "data": b64(&reference_png(i))}}),
        ),
    );
    json!({
        "contents": [{"role": "user", "parts": parts}],
        "generationConfig": {"responseModalities": ["IMAGE"]}
    })
}

/// Mounts the exact expected call `times` times, answering `response`.
async fn expect(server: &MockServer, references: usize, times: u64, response: ResponseTemplate) {
    Mock::given(method("POST"))
        .and(path(PATH))
        .and(header("x-goog-api-key", KEY))
        .and(body_json(expected_body(references)))
        .respond_with(response)
        .expect(times)
        .mount(server)
        .await;
}

fn error(code: u16, status: &str, message: &str) -> Value {
    json!({"error": {"code": code, "message": message, "status": status}})
}

#[async_trait]
impl Fixture for Gemini {
    fn gateway(server: &MockServer) -> Gateway {
        gateway_at::<imgproxy_provider_gemini::Gemini>(server, KEY)
    }

    fn model() -> &'static str {
        "nano-banana-2"
    }

    async fn success(server: &MockServer, n: u32, references: usize) {
        let image = b64(&png(16, 16, [200, 30, 30]));
        let answer = json!({
            "candidates": [{
                "content": {"role": "model", "parts": [
                    {"inlineData": {"mimeType": "image/png", "data": image}}
                ]},
                "finishReason": "STOP",
                "index": 0
            }],
            "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 1120,
                              "totalTokenCount": 1130},
            "modelVersion": "gemini-3.1-flash-image",
            "responseId": "abc123"
        });
        // One call per image: the gateway fans `n` out and `candidateCount` is never sent.
        expect(
            server,
            references,
            u64::from(n),
            ResponseTemplate::new(200).set_body_json(answer),
        )
        .await;
    }

    async fn moderation(server: &MockServer) {
        let answer = json!({
            "promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
            "usageMetadata": {"promptTokenCount": 10, "totalTokenCount": 10}
        });
        Self::answer_first_call(server, ResponseTemplate::new(200).set_body_json(answer)).await;
    }

    async fn answer_first_call(server: &MockServer, answer: ResponseTemplate) {
        expect(server, 0, 1, answer).await;
    }

    /// Google says how long to wait in `RetryInfo`, not in a header.
    fn rate_limited(seconds: u64) -> ResponseTemplate {
        ResponseTemplate::new(429).set_body_json(json!({"error": {
            "code": 429,
            "message": "You exceeded your current quota, please check your plan.",
            "status": "RESOURCE_EXHAUSTED",
            "details": [
                {"@type": "type.googleapis.com/google.rpc.QuotaFailure",
                 "violations": [{"quotaId": "GenerateRequestsPerMinutePerProjectPerModel"}]},
                {"@type": "type.googleapis.com/google.rpc.RetryInfo",
                 "retryDelay": format!("{seconds}s")}
            ]
        }}))
    }

    fn server_error() -> ResponseTemplate {
        ResponseTemplate::new(503).set_body_json(error(
            503,
            "UNAVAILABLE",
            "The model is overloaded.",
        ))
    }

    fn malformed() -> ResponseTemplate {
        ResponseTemplate::new(200).set_body_json(json!({"candidates": {"content": "not a list"}}))
    }

    fn truncated() -> ResponseTemplate {
        cut_off_json(
            r#"{"candidates": [{"content": {"parts": [{"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgoAAAANSU"#,
        )
    }
}

imgproxy_testkit::conformance_suite!(crate::Gemini);
