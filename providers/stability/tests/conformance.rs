//! The shared provider conformance suite against a fake Stability built from its documented
//! wire format (providers-2.md §11): each fake asserts the exact outgoing request (path,
//! bearer key, `Accept: image/*`, the multipart parts) and how often it is called.

use async_trait::async_trait;
use imgproxy_core::Gateway;
use imgproxy_provider_stability::Stability;
use imgproxy_testkit::{
    bearer_post, cut_off_json,
    form::{exact_form, FormPart},
    gateway_at, output_png, reference_png, too_many_requests, Fixture,
};
use serde_json::json;
use wiremock::{
    matchers::{header, header_regex},
    MockBuilder, MockServer, ResponseTemplate,
};

const KEY: &str = "sk-stability-test-0123456789abcdef";
const PROMPT: &str = "a red fox in the snow";

struct StabilityFixture;

/// A multipart POST to Ultra's route carrying our key and asking for the image's bytes.
fn call() -> MockBuilder {
    bearer_post("/v2beta/stable-image/generate/ultra", KEY)
        .and(header("accept", "image/*"))
        .and(header_regex(
            "content-type",
            "^multipart/form-data; boundary=.+$",
        ))
}

/// The exact form of one image of [`Fixture::request`]`(_, references)`: the catalog's default
/// `output_format`, and with the input image the default `strength` and the `image` part.
fn form_call(references: usize) -> MockBuilder {
    if references == 0 {
        return call().and(exact_form(
            &[("output_format", "png"), ("prompt", PROMPT)],
            vec![],
        ));
    }
    let image = FormPart::file("image", "image.png", "image/png", &reference_png(0));
    call().and(exact_form(
        &[
            ("output_format", "png"),
            ("prompt", PROMPT),
            ("strength", "0.5"),
        ],
        vec![image],
    ))
}

/// The bytes of a finished image, as `Accept: image/*` answers them.
fn image_answer(index: usize) -> ResponseTemplate {
    ResponseTemplate::new(200)
        .insert_header("finish-reason", "SUCCESS")
        .insert_header("seed", "1234")
        .set_body_raw(output_png(index), "image/png")
}

#[async_trait]
impl Fixture for StabilityFixture {
    fn gateway(server: &MockServer) -> Gateway {
        gateway_at::<Stability>(server, KEY)
    }

    /// Stability takes one input image (`max_reference_images = 1`): the reference case's
    /// one image must reach the upstream as the `image` part.
    fn max_references() -> usize {
        1
    }

    fn model() -> &'static str {
        "stable-image-ultra"
    }

    /// One call per image: the gateway fans `n` out, every call the same form.
    async fn success(server: &MockServer, n: u32, references: usize) {
        form_call(references)
            .respond_with(image_answer(0))
            .expect(u64::from(n))
            .mount(server)
            .await;
    }

    /// The output filter: a 200 with a blurred image and `finish-reason: CONTENT_FILTERED`
    /// (providers-2.md §11.1). The 403 refusal of the input is in `stability.rs`.
    async fn moderation(server: &MockServer) {
        let blurred = ResponseTemplate::new(200)
            .insert_header("finish-reason", "CONTENT_FILTERED")
            .set_body_raw(output_png(9), "image/png");
        Self::answer_first_call(server, blurred).await;
    }

    async fn answer_first_call(server: &MockServer, answer: ResponseTemplate) {
        form_call(0)
            .respond_with(answer)
            .expect(1)
            .mount(server)
            .await;
    }

    fn rate_limited(seconds: u64) -> ResponseTemplate {
        too_many_requests(
            seconds,
            json!({"id": "4f1b2c", "name": "rate_limit_exceeded",
                   "errors": ["You have exceeded the rate limit of 150 requests within a 10 second period"]}),
        )
    }

    fn server_error() -> ResponseTemplate {
        ResponseTemplate::new(500).set_body_json(json!({
            "id": "9a8b7c", "name": "internal_error",
            "errors": ["An unexpected server error has occurred, please try again later."]
        }))
    }

    /// A 200 labelled as a PNG whose bytes are an HTML page.
    fn malformed() -> ResponseTemplate {
        ResponseTemplate::new(200)
            .insert_header("finish-reason", "SUCCESS")
            .set_body_raw("<html><body>upstream hiccup</body></html>", "image/png")
    }

    fn truncated() -> ResponseTemplate {
        cut_off_json(r#"{"finish_reason": "SUCCESS", "seed": 1, "image": "iVBORw0KGgoAAAA"#)
    }
}

imgproxy_testkit::conformance_suite!(crate::StabilityFixture);
