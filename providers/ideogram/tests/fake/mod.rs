//! The fake Ideogram the test files mount (providers-2.md §12): the exact multipart call they
//! expect (path, `Api-Key`, parts) and answers whose images sit at expiring-style URLs that
//! serve each image once, only to a request without the key.

#![allow(dead_code, reason = "each test crate uses a different part")]

/// The testkit's multipart reader and matcher.
pub use imgproxy_testkit::form;

use form::{exact_form, FormPart};
use imgproxy_testkit::{mount_once, output_png};
use serde_json::{json, Value};
use wiremock::{
    matchers::{header, header_regex, method, path},
    Mock, MockBuilder, MockServer, ResponseTemplate,
};

/// What the fixtures' answers give as MagicPrompt's rewrite of each prompt.
pub const REVISED: &str = "A red fox standing in fresh snow, soft morning light";

/// A multipart POST to `/v1/ideogram-v3/<action>` carrying `key` in `Api-Key`.
pub fn call(action: &str, key: &str) -> MockBuilder {
    Mock::given(method("POST"))
        .and(path(format!("/v1/ideogram-v3/{action}")))
        .and(header("api-key", key))
        .and(header_regex(
            "content-type",
            "^multipart/form-data; boundary=.+$",
        ))
}

/// [`call`] with exactly the text parts `text` and then `files`.
pub fn with_parts(
    action: &str,
    key: &str,
    text: &[(&str, &str)],
    files: Vec<FormPart>,
) -> MockBuilder {
    call(action, key).and(exact_form(text, files))
}

/// An item of Ideogram's answer: withheld by its safety check (`is_image_safe: false`, no
/// URL), or the image at `url`.
pub fn item(url: Option<String>) -> Value {
    json!({
        "url": url, "prompt": REVISED, "resolution": "1024x1024",
        "is_image_safe": url.is_some(), "seed": 12345, "style_type": "GENERAL"
    })
}

/// Ideogram's answer: one item per entry of `safe`, each safe one an image at a URL of
/// `server` that serves it once, keyless.
pub async fn answer(server: &MockServer, safe: &[bool]) -> ResponseTemplate {
    let mut data = Vec::new();
    for (i, safe) in safe.iter().enumerate() {
        if !safe {
            data.push(item(None));
            continue;
        }
        let file = format!("/api/images/ephemeral/out-{i}.png");
        mount_once(
            server,
            Mock::given(method("GET"))
                .and(path(file.as_str()))
                .and(imgproxy_testkit::WithoutHeader("api-key")),
            ResponseTemplate::new(200).set_body_raw(output_png(i), "image/png"),
        )
        .await;
        data.push(item(Some(format!(
            "{}{file}?exp=1743867804&sig=e13e1267",
            server.uri()
        ))));
    }
    ResponseTemplate::new(200)
        .set_body_json(json!({"created": "2026-06-02T16:24:11Z", "data": data}))
}

/// [`answer`] with `n` safe images.
pub async fn images(server: &MockServer, n: u32) -> ResponseTemplate {
    answer(server, &vec![true; n as usize]).await
}
