//! Together-specific mappings, through the gateway against a fake Together: the exact body
//! (`response_format: "base64"`, width and height from `size` or an aspect ratio, the
//! optional fields), URL items, the NSFW assumption and refused inputs.

use imgproxy_core::{Gateway, ImageRequest};
use imgproxy_provider_together::Together;
use imgproxy_testkit::{
    assert_refused_before_any_call, b64, bearer_post, data_url, gateway_at, merged, mount_once,
    png, reference_png, refusal, request_of, WithoutHeader,
};
use serde_json::{json, Value};
use wiremock::{
    matchers::{body_json, method, path},
    Mock, MockBuilder, MockServer, ResponseTemplate,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const KEY: &str = "tgp_v1_extra-key-fedcba9876543210";
const UPSTREAM: &str = "black-forest-labs/FLUX.1-schnell";

fn gateway(server: &MockServer) -> Gateway {
    gateway_at::<Together>(server, KEY)
}

fn call() -> MockBuilder {
    bearer_post("/images/generations", KEY)
}

fn request(extra: Value) -> ImageRequest {
    request_of(merged(
        json!({"model": "flux-schnell", "prompt": "a koi pond"}),
        extra,
    ))
}

fn images(n: u32) -> Value {
    let data: Vec<Value> = (0..n)
        .map(|i| json!({"index": i, "b64_json": b64(&png(8, 8, [7, 7, 7])), "type": "b64_json"}))
        .collect();
    json!({"id": "x", "model": UPSTREAM, "object": "list", "data": data})
}

/// What the client sends → the exact body Together receives.
#[tokio::test]
async fn the_body_is_exact_with_base64_and_width_height_from_size() -> TestResult {
    let cases = [
        (
            json!({"size": "1280x720", "n": 3, "steps": 4, "seed": 42,
                   "negative_prompt": "blurry", "output_format": "png"}),
            json!({"model": UPSTREAM, "prompt": "a koi pond", "n": 3, "response_format": "base64",
                   "width": 1280, "height": 720, "steps": 4, "seed": 42,
                   "negative_prompt": "blurry", "output_format": "png"}),
            "1280x720",
        ),
        // A custom size within 64–1792, multiples of 16.
        (
            json!({"size": "640x1792"}),
            json!({"model": UPSTREAM, "prompt": "a koi pond", "n": 1, "response_format": "base64",
                   "width": 640, "height": 1792, "output_format": "jpeg"}),
            "640x1792",
        ),
        // An aspect ratio picks the listed size of that ratio.
        (
            json!({"aspect_ratio": "3:2"}),
            json!({"model": UPSTREAM, "prompt": "a koi pond", "n": 1, "response_format": "base64",
                   "width": 1536, "height": 1024, "output_format": "jpeg"}),
            "1536x1024",
        ),
    ];
    for (sent, upstream, asked) in cases {
        let server = MockServer::start().await;
        let n = upstream["n"].as_u64().unwrap_or(1) as u32;
        let answer = ResponseTemplate::new(200).set_body_json(images(n));
        mount_once(&server, call().and(body_json(upstream)), answer).await;
        let response = gateway(&server).generate(request(sent.clone())).await?;
        assert_eq!(response.data.len(), n as usize, "{sent}");
        // The upstream was asked for `asked` (checked in its body); the answer reports the
        // size of the images it returned, the fake's 8x8.
        assert_eq!(
            response.meta.size.as_deref(),
            Some("8x8"),
            "{sent} asked {asked}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn bad_sizes_steps_and_reference_images_are_refused_before_any_call() -> TestResult {
    let server = MockServer::start().await;
    let cases = [
        (json!({"size": "1000x1000"}), "size"),
        (json!({"size": "2048x2048"}), "size"),
        (json!({"size": "32x32"}), "size"),
        (json!({"steps": 13}), "steps"),
        (json!({"steps": 0}), "steps"),
        (json!({"n": 5}), "n"),
        // webp is converted by the gateway; a format no one converts to is refused.
        (json!({"output_format": "gif"}), "output_format"),
        (json!({"images": [data_url(&reference_png(0))]}), "image"),
    ];
    let cases = cases.map(|(sent, param)| (request(sent), param));
    assert_refused_before_any_call(&gateway(&server), &server, cases).await;
    Ok(())
}

#[tokio::test]
async fn url_items_are_downloaded_without_the_key() -> TestResult {
    let server = MockServer::start().await;
    let url = format!("{}/shrt/abc.png", server.uri());
    let answer = json!({"object": "list", "data": [{"index": 0, "url": url, "type": "url"}]});
    mount_once(
        &server,
        call(),
        ResponseTemplate::new(200).set_body_json(answer),
    )
    .await;
    Mock::given(method("GET"))
        .and(path("/shrt/abc.png"))
        .and(WithoutHeader("authorization"))
        .respond_with(ResponseTemplate::new(200).set_body_bytes(png(4, 4, [1, 1, 1])))
        .expect(1)
        .mount(&server)
        .await;
    let response = gateway(&server).generate(request(json!({}))).await?;
    assert_eq!(response.data.len(), 1);
    Ok(())
}

#[tokio::test]
async fn a_422_about_the_safety_checker_is_moderation_and_other_4xx_are_not() -> TestResult {
    let cases = [
        (
            422,
            "Image generation failed: the safety checker flagged the output",
            Some("moderation_blocked"),
            400,
        ),
        (
            400,
            "height must be a multiple of 16",
            Some("upstream_invalid_request"),
            400,
        ),
        (401, "Invalid API key provided", None, 502),
    ];
    for (status, message, code, expected) in cases {
        let server = MockServer::start().await;
        let envelope = json!({"error": {
            "message": message, "type": "invalid_request_error", "param": null, "code": null
        }});
        mount_once(
            &server,
            call(),
            ResponseTemplate::new(status).set_body_json(envelope),
        )
        .await;
        let error = refusal(&gateway(&server), request(json!({}))).await;
        assert_eq!(error.status(), expected, "{message}");
        if code.is_some() {
            assert_eq!(error.code(), code, "{message}");
        }
    }
    Ok(())
}
