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

/// One part of a multipart form, as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormPart {
    pub name: String,
    pub file_name: Option<String>,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

impl FormPart {
    /// A text field.
    pub fn text(name: &str, value: &str) -> Self {
        Self {
            name: name.into(),
            file_name: None,
            content_type: None,
            body: value.as_bytes().to_vec(),
        }
    }

    /// A file field.
    pub fn file(name: &str, file_name: &str, content_type: &str, body: &[u8]) -> Self {
        Self {
            name: name.into(),
            file_name: Some(file_name.into()),
            content_type: Some(content_type.into()),
            body: body.to_vec(),
        }
    }
}

/// Matches a `multipart/form-data` request whose parts are exactly `.0`, in order.
#[derive(Debug, Clone)]
pub struct FormIs(pub Vec<FormPart>);

impl Match for FormIs {
    fn matches(&self, request: &Request) -> bool {
        form_parts(request).is_some_and(|parts| parts == self.0)
    }
}

/// The parts of a `multipart/form-data` request; `None` if it is not one.
pub fn form_parts(request: &Request) -> Option<Vec<FormPart>> {
    let content_type = request.headers.get("content-type")?.to_str().ok()?;
    let boundary = content_type.strip_prefix("multipart/form-data; boundary=")?;
    let delimiter = format!("\r\n--{boundary}");
    // The first delimiter has no line break before it; prepend one to split uniformly.
    let body = [b"\r\n".as_slice(), &request.body].concat();
    let mut pieces = split(&body, delimiter.as_bytes());
    if !pieces.next()?.is_empty() {
        return None;
    }
    let mut parts = Vec::new();
    for piece in pieces {
        if piece.starts_with(b"--") {
            return Some(parts);
        }
        let piece = piece.strip_prefix(b"\r\n")?;
        let at = piece.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = std::str::from_utf8(&piece[..at]).ok()?;
        parts.push(part(head, piece[at + 4..].to_vec())?);
    }
    None
}

fn part(head: &str, body: Vec<u8>) -> Option<FormPart> {
    let mut name = None;
    let mut file_name = None;
    let mut content_type = None;
    for line in head.split("\r\n") {
        let (field, value) = line.split_once(':')?;
        match field.trim().to_ascii_lowercase().as_str() {
            "content-disposition" => {
                for param in value.split(';').skip(1) {
                    let (key, quoted) = param.trim().split_once('=')?;
                    let text = quoted.trim_matches('"').to_owned();
                    match key {
                        "name" => name = Some(text),
                        "filename" => file_name = Some(text),
                        _ => {}
                    }
                }
            }
            "content-type" => content_type = Some(value.trim().to_owned()),
            _ => {}
        }
    }
    Some(FormPart {
        name: name?,
        file_name,
        content_type,
        body,
    })
}

/// `haystack` split at every `needle`.
fn split<'a>(haystack: &'a [u8], needle: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut rest = Some(haystack);
    std::iter::from_fn(move || {
        let current = rest?;
        match current.windows(needle.len()).position(|w| w == needle) {
            Some(at) => {
                rest = Some(&current[at + needle.len()..]);
                Some(&current[..at])
            }
            None => {
                rest = None;
                Some(current)
            }
        }
    })
}
