//! Stability-specific mappings, through the gateway against a fake Stability: each model's
//! route and exact form (`model` and `mode` on sd3, ratios from sizes, seeds per fanned-out
//! image, the input image with its `strength`), what is refused before any call, the input
//! refusal and the JSON form of an answer, a spent account's key taken out, and a timeout.

use std::time::Duration;

use imgproxy_core::{
    upstream::{UpstreamProvider, UpstreamSettings},
    Gateway, ImageRequest,
};
use imgproxy_provider_stability::{Stability, StabilityProvider};
use imgproxy_testkit::{
    assert_error, assert_provider_names, assert_refused_before_any_call, b64, bearer_post,
    data_url,
    form::{exact_form, FormPart},
    gateway_at, gateway_of, merged, png, reference_png, refusal, request_of,
};
use serde_json::{json, Value};
use wiremock::{matchers::header, MockBuilder, MockServer, ResponseTemplate};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const KEY: &str = "sk-stability-extra-fedcba9876543210";

fn gateway(server: &MockServer) -> Gateway {
    gateway_at::<Stability>(server, KEY)
}

/// A POST to `route` (`ultra`, `core` or `sd3`) with our key, asking for the image's bytes.
fn call(route: &str) -> MockBuilder {
    bearer_post(&format!("/v2beta/stable-image/generate/{route}"), KEY)
        .and(header("accept", "image/*"))
}

fn request(model: &str, extra: Value) -> ImageRequest {
    request_of(merged(
        json!({"model": model, "prompt": "a koi pond"}),
        extra,
    ))
}

/// What Stability answers with `Accept: image/*`: the bytes, the finish reason in a header.
fn image_answer() -> ResponseTemplate {
    ResponseTemplate::new(200)
        .insert_header("finish-reason", "SUCCESS")
        .insert_header("seed", "42")
        .set_body_raw(png(8, 8, [7, 7, 7]), "image/png")
}

/// Stability's error envelope.
fn envelope(status: u16, name: &str, error: &str) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .set_body_json(json!({"id": "a1b2c3d4e5f6", "name": name, "errors": [error]}))
}

#[test]
fn the_provider_is_named_stability() {
    assert_provider_names::<Stability>("stability", "stability");
}

/// What the client sends → the route and the exact text parts Stability receives.
#[tokio::test]
async fn each_model_gets_its_route_and_exact_form() -> TestResult {
    let cases = [
        (
            "stable-image-core",
            json!({"size": "1536x1024", "seed": 7, "negative_prompt": "blurry",
                   "style_preset": "origami", "output_format": "webp"}),
            "core",
            vec![
                ("prompt", "a koi pond"),
                ("aspect_ratio", "3:2"),
                ("seed", "7"),
                ("negative_prompt", "blurry"),
                ("style_preset", "origami"),
                ("output_format", "webp"),
            ],
        ),
        (
            "stable-image-ultra",
            json!({"aspect_ratio": "9:21"}),
            "ultra",
            vec![
                ("prompt", "a koi pond"),
                ("aspect_ratio", "9:21"),
                ("output_format", "png"),
            ],
        ),
        (
            "sd3.5-large-turbo",
            json!({"output_format": "jpeg"}),
            "sd3",
            vec![
                ("prompt", "a koi pond"),
                ("output_format", "jpeg"),
                ("model", "sd3.5-large-turbo"),
                ("mode", "text-to-image"),
            ],
        ),
        // webp is not Stability's on sd3: it makes png, which the gateway converts.
        (
            "sd3.5-medium",
            json!({"output_format": "webp", "size": "1024x1024"}),
            "sd3",
            vec![
                ("prompt", "a koi pond"),
                ("aspect_ratio", "1:1"),
                ("model", "sd3.5-medium"),
                ("mode", "text-to-image"),
                ("output_format", "png"),
            ],
        ),
    ];
    for (model, sent, route, form) in cases {
        let server = MockServer::start().await;
        call(route)
            .and(exact_form(&form, vec![]))
            .respond_with(image_answer())
            .expect(1)
            .mount(&server)
            .await;
        let response = gateway(&server)
            .generate(request(model, sent.clone()))
            .await?;
        assert_eq!(response.data.len(), 1, "{model} {sent}");
    }
    Ok(())
}

/// `n` fans out to one call per image, each with its own seed.
#[tokio::test]
async fn n_images_are_n_calls_with_consecutive_seeds() -> TestResult {
    let server = MockServer::start().await;
    for seed in ["10", "11", "12"] {
        let form = [
            ("prompt", "a koi pond"),
            ("seed", seed),
            ("output_format", "png"),
        ];
        call("core")
            .and(exact_form(&form, vec![]))
            .respond_with(image_answer())
            .expect(1)
            .mount(&server)
            .await;
    }
    let response = gateway(&server)
        .generate(request("stable-image-core", json!({"n": 3, "seed": 10})))
        .await?;
    assert_eq!(response.data.len(), 3);
    Ok(())
}

/// The input image goes as the `image` file part; sd3 says `mode=image-to-image`, and the
/// client's `strength` wins over the catalog's default.
#[tokio::test]
async fn an_input_image_goes_as_a_file_part_with_its_strength() -> TestResult {
    let server = MockServer::start().await;
    let form = [
        ("prompt", "a koi pond"),
        ("output_format", "png"),
        ("model", "sd3.5-large"),
        ("mode", "image-to-image"),
        ("strength", "0.8"),
    ];
    let image = FormPart::file("image", "image.png", "image/png", &reference_png(3));
    call("sd3")
        .and(exact_form(&form, vec![image]))
        .respond_with(image_answer())
        .expect(1)
        .mount(&server)
        .await;
    let sent = json!({"images": [data_url(&reference_png(3))], "strength": 0.8});
    let response = gateway(&server)
        .generate(request("sd3.5-large", sent))
        .await?;
    assert_eq!(response.data.len(), 1);
    Ok(())
}

#[tokio::test]
async fn what_a_model_cannot_take_is_refused_before_any_call() -> TestResult {
    let server = MockServer::start().await;
    let one = json!([data_url(&reference_png(0))]);
    let two = json!([data_url(&reference_png(0)), data_url(&reference_png(1))]);
    let cases = [
        (
            "stable-image-ultra",
            json!({"images": one, "aspect_ratio": "16:9"}),
            "aspect_ratio",
        ),
        ("stable-image-ultra", json!({"images": two}), "image"),
        ("stable-image-core", json!({"images": one}), "image"),
        (
            "stable-image-ultra",
            json!({"style_preset": "anime"}),
            "style_preset",
        ),
        (
            "sd3.5-large-turbo",
            json!({"negative_prompt": "blur"}),
            "negative_prompt",
        ),
        (
            "sd3.5-large",
            json!({"strength": 1.5, "images": one}),
            "strength",
        ),
        ("sd3.5-large", json!({"seed": 4_294_967_295_u64}), "seed"),
        // 1792x1024 is 7:4, not one of Stability's nine ratios; 2048x2048 is not ~1 MP.
        ("stable-image-core", json!({"size": "1792x1024"}), "size"),
        ("stable-image-core", json!({"size": "2048x2048"}), "size"),
        ("stable-image-core", json!({"n": 5}), "n"),
        (
            "stable-image-core",
            json!({"prompt": "x".repeat(10_001)}),
            "prompt",
        ),
    ];
    let cases = cases.map(|(model, sent, param)| (request(model, sent), param));
    assert_refused_before_any_call(&gateway(&server), &server, cases).await;
    Ok(())
}

/// Validation cannot tie `strength` to an image, so the adapter refuses it, before any call.
#[tokio::test]
async fn a_strength_without_an_image_is_refused_not_dropped() -> TestResult {
    let server = MockServer::start().await;
    let cases = [(
        request("stable-image-ultra", json!({"strength": 0.3})),
        "strength",
    )];
    assert_refused_before_any_call(&gateway(&server), &server, cases).await;
    Ok(())
}

#[tokio::test]
async fn refusals_of_the_input_and_of_the_output_are_moderation_blocked() -> TestResult {
    let refused_input = envelope(
        403,
        "content_moderation",
        "Your request was flagged by our content moderation system",
    );
    let filtered_json = ResponseTemplate::new(200).set_body_json(json!({
        "image": b64(&png(8, 8, [1, 1, 1])), "finish_reason": "CONTENT_FILTERED", "seed": 3
    }));
    for answer in [refused_input, filtered_json] {
        let server = MockServer::start().await;
        call("core")
            .respond_with(answer)
            .expect(1)
            .mount(&server)
            .await;
        let error = refusal(&gateway(&server), request("stable-image-core", json!({}))).await;
        assert_error(&error, 400, "moderation_blocked");
    }
    Ok(())
}

#[tokio::test]
async fn the_json_form_of_an_answer_is_read_too() -> TestResult {
    let server = MockServer::start().await;
    let answer = ResponseTemplate::new(200).set_body_json(json!({
        "image": b64(&png(8, 8, [2, 2, 2])), "finish_reason": "SUCCESS", "seed": 3
    }));
    call("core")
        .respond_with(answer)
        .expect(1)
        .mount(&server)
        .await;
    let response = gateway(&server)
        .generate(request("stable-image-core", json!({})))
        .await?;
    assert_eq!(response.data.len(), 1);
    Ok(())
}

/// Client faults keep Stability's words; a 429 without `Retry-After` waits Stability's minute.
#[tokio::test]
async fn errors_map_by_status_with_the_envelope_texts() -> TestResult {
    let cases = [
        (
            envelope(400, "invalid_prompts", "prompt: is too short"),
            400,
            "upstream_invalid_request",
        ),
        (
            envelope(413, "payload_too_large", "image: too large"),
            400,
            "upstream_invalid_request",
        ),
        (
            envelope(429, "rate_limit_exceeded", "slow down"),
            429,
            "rate_limit_exceeded",
        ),
        (
            envelope(500, "internal_error", "oops"),
            502,
            "upstream_error",
        ),
    ];
    for (answer, status, code) in cases {
        let server = MockServer::start().await;
        call("core")
            .respond_with(answer)
            .expect(1)
            .mount(&server)
            .await;
        let error = refusal(&gateway(&server), request("stable-image-core", json!({}))).await;
        assert_eq!(
            (error.status(), error.code()),
            (status, Some(code)),
            "{error:?}"
        );
        if status == 429 {
            assert_eq!(error.retry_after(), Some(Duration::from_secs(60)));
        }
    }
    Ok(())
}

/// A 402 (out of credits) takes the key out of the pool, and the same call moves to the next.
#[tokio::test]
async fn a_spent_account_moves_the_call_to_the_next_key() -> TestResult {
    let server = MockServer::start().await;
    const SPENT: &str = "sk-stability-spent-0000";
    bearer_post("/v2beta/stable-image/generate/core", SPENT)
        .respond_with(envelope(
            402,
            "payment_required",
            "You lack sufficient credits",
        ))
        .expect(1)
        .mount(&server)
        .await;
    call("core")
        .respond_with(image_answer())
        .expect(1)
        .mount(&server)
        .await;
    let settings = UpstreamSettings::new(SPENT)
        .with_more_keys([KEY.into()])
        .with_base_url(server.uri());
    let provider: StabilityProvider = UpstreamProvider::new(settings)?;
    let gateway = gateway_of(provider);
    let response = gateway
        .generate(request("stable-image-core", json!({})))
        .await?;
    assert_eq!(response.data.len(), 1);
    Ok(())
}

#[tokio::test]
async fn an_upstream_that_does_not_answer_in_time_is_a_504() -> TestResult {
    let server = MockServer::start().await;
    call("core")
        .respond_with(image_answer().set_delay(Duration::from_secs(3)))
        .expect(1)
        .mount(&server)
        .await;
    let settings = UpstreamSettings::new(KEY)
        .with_base_url(server.uri())
        .with_timeout(Duration::from_millis(300));
    let provider: StabilityProvider = UpstreamProvider::new(settings)?;
    let error = refusal(
        &gateway_of(provider),
        request("stable-image-core", json!({})),
    )
    .await;
    assert_error(&error, 504, "upstream_timeout");
    Ok(())
}
