//! A fake Recraft shared by the conformance fixture and the model tests, built from its wire
//! format (providers-2.md §13): the keyed calls, the temporary result URLs (served by the same
//! mock server, never with the key), the two answer shapes and a matcher of the exact
//! multipart form a tool receives.

#![allow(dead_code, reason = "each test crate uses a different part")]

use imgproxy_testkit::{bearer_post, mount_once, WithoutHeader};
use serde_json::{json, Value};
use wiremock::{
    matchers::{body_json, header, method, path},
    Match, Mock, MockBuilder, MockServer, Request, ResponseTemplate,
};

pub const KEY: &str = "rc-test-token-0123456789abcdef";
pub const PROMPT: &str = "a red fox in the snow";

/// A keyed POST to `/images/<endpoint>`.
pub fn call(endpoint: &str) -> MockBuilder {
    bearer_post(&format!("/images/{endpoint}"), KEY)
}

/// A keyed JSON generation whose body is exactly `body`.
pub fn generation(body: Value) -> MockBuilder {
    call("generations")
        .and(header("content-type", "application/json"))
        .and(body_json(body))
}

/// The body a request of `n` images of `upstream` with [`PROMPT`] and nothing else becomes.
pub fn plain_body(upstream: &str, n: u32) -> Value {
    json!({"model": upstream, "prompt": PROMPT, "n": n, "response_format": "url"})
}

/// Serves `bytes` of `content_type` once at `/results/<name>`, only to a request without the
/// key; returns its URL.
pub async fn result(server: &MockServer, name: &str, bytes: Vec<u8>, content_type: &str) -> String {
    let file_path = format!("/results/{name}");
    let download = Mock::given(method("GET"))
        .and(path(file_path.as_str()))
        .and(WithoutHeader("authorization"));
    mount_once(
        server,
        download,
        ResponseTemplate::new(200).set_body_raw(bytes, content_type),
    )
    .await;
    format!("{}{file_path}", server.uri())
}

/// A generation's 200: one `data` item per URL.
pub fn generation_answer(urls: &[String]) -> ResponseTemplate {
    let data: Vec<Value> = urls
        .iter()
        .enumerate()
        .map(|(i, url)| json!({"image_id": format!("0b9d-{i}"), "url": url, "revised_prompt": PROMPT}))
        .collect();
    let credits = 35 * urls.len();
    ResponseTemplate::new(200)
        .set_body_json(json!({"created": 1_767_225_600, "credits": credits, "data": data}))
}

/// A tool's 200: the singular `image`.
pub fn tool_answer(url: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(
        json!({"created": 1_767_225_600, "credits": 10, "image": {"image_id": "5e1f", "url": url}}),
    )
}

/// An SVG document, distinct per `index`.
pub fn svg(index: usize) -> Vec<u8> {
    format!(
        "<?xml version=\"1.0\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 8 8\">\
         <circle r=\"{index}\"/></svg>\n"
    )
    .into_bytes()
}

pub use imgproxy_testkit::form::FormPart;

/// Matches a `multipart/form-data` request whose parts are exactly `.0`, in order.
#[derive(Debug, Clone)]
pub struct FormIs(pub Vec<FormPart>);

impl Match for FormIs {
    fn matches(&self, request: &Request) -> bool {
        imgproxy_testkit::form::parse_form(request).is_ok_and(|parts| parts == self.0)
    }
}
