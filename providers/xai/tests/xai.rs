//! xAI-specific mappings, through the gateway against a fake xAI: the per-item moderation
//! flag, a single reference image as `image`, `resolution` and ratio values, URL items,
//! `usage` pass-through and key hygiene. Every fake asserts the exact outgoing body.

use imgproxy_core::{Gateway, ImageInput, ImageRequest, ImageResponse};
use imgproxy_provider_xai::Xai;
use imgproxy_testkit::{
    assert_error, assert_provider_names, assert_refused_before_any_call, b64, bearer_post,
    data_url, gateway_at, merged, mount_once, png, reference_png, refusal, request_of,
    WithoutHeader,
};
use serde_json::{json, Value};
use wiremock::{
    matchers::{body_json, method, path},
    Mock, MockServer, ResponseTemplate,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const KEY: &str = "xai-extra-key-fedcba9876543210";

fn gateway(server: &MockServer) -> Gateway {
    gateway_at::<Xai>(server, KEY)
}

/// Mounts the one call to `endpoint` that must carry exactly `body`, answered `response`.
async fn expect(server: &MockServer, endpoint: &str, body: Value, response: ResponseTemplate) {
    mount_once(
        server,
        bearer_post(endpoint, KEY).and(body_json(body)),
        response,
    )
    .await;
}

/// The gateway's error for `request` when xAI answers its one generations call `response`.
async fn failure(response: ResponseTemplate, request: ImageRequest) -> imgproxy_core::Error {
    let server = MockServer::start().await;
    mount_once(&server, bearer_post("/images/generations", KEY), response).await;
    refusal(&gateway(&server), request).await
}

fn request(model: &str, extra: Value) -> ImageRequest {
    request_of(merged(
        json!({"model": model, "prompt": "a lighthouse"}),
        extra,
    ))
}

fn body(upstream: &str, n: u32, extra: Value) -> Value {
    let base = json!({"model": upstream, "prompt": "a lighthouse", "n": n,
                      "response_format": "b64_json"});
    merged(base, extra)
}

fn images(n: usize) -> Value {
    let item = json!({"b64_json": b64(&png(8, 8, [1, 2, 3])), "mime_type": "image/png"});
    json!({"data": vec![item; n]})
}

#[tokio::test]
async fn an_item_with_respect_moderation_false_is_moderation_blocked() -> TestResult {
    let server = MockServer::start().await;
    let answer = json!({"data": [
        {"b64_json": b64(&png(8, 8, [0, 0, 0])), "mime_type": "image/png", "respect_moderation": true},
        {"b64_json": null, "url": null, "respect_moderation": false}
    ]});
    let upstream = body("grok-imagine-image", 2, json!({}));
    expect(
        &server,
        "/images/generations",
        upstream,
        ResponseTemplate::new(200).set_body_json(answer),
    )
    .await;
    let error = gateway(&server)
        .generate(request("grok-imagine", json!({"n": 2})))
        .await
        .expect_err("a withheld image blocks the request");
    assert_error(&error, 400, "moderation_blocked");
    Ok(())
}

#[tokio::test]
async fn a_block_reason_is_moderation_blocked() -> TestResult {
    let answer = json!({"data": [], "block_reason": "prompt violates the usage policy"});
    let error = failure(
        ResponseTemplate::new(200).set_body_json(answer),
        request("grok-imagine", json!({})),
    )
    .await;
    assert_eq!(error.code(), Some("moderation_blocked"));
    assert!(error.to_string().contains("usage policy"), "{error}");
    Ok(())
}

#[tokio::test]
async fn a_single_reference_goes_to_edits_as_an_image_object() -> TestResult {
    let server = MockServer::start().await;
    let reference = data_url(&reference_png(3));
    expect(
        &server,
        "/images/edits",
        body(
            "grok-imagine-image-2.0",
            1,
            json!({"image": {"url": reference, "type": "image_url"}, "quality": "auto"}),
        ),
        ResponseTemplate::new(200).set_body_json(images(1)),
    )
    .await;
    let mut request = request("grok-imagine-pro", json!({}));
    request.images = Some(vec![ImageInput::ImageUrl {
        image_url: reference,
    }]);
    let response = gateway(&server).generate(request).await?;
    assert_eq!(response.data.len(), 1);
    assert_eq!(response.meta.output_format.as_deref(), Some("png"));
    Ok(())
}

/// What the client sends → the `aspect_ratio` and `resolution` xAI receives.
#[tokio::test]
async fn image_size_becomes_lowercase_resolution_and_ratios_map() -> TestResult {
    let cases = [
        (
            json!({"image_size": "2K", "aspect_ratio": "9:16"}),
            json!({"resolution": "2k", "aspect_ratio": "9:16"}),
        ),
        (json!({"resolution": "1K"}), json!({"resolution": "1k"})),
        // A size becomes its ratio and tier.
        (
            json!({"size": "1536x1024"}),
            json!({"aspect_ratio": "3:2", "resolution": "1k"}),
        ),
        (
            json!({"size": "2048x1024"}),
            json!({"aspect_ratio": "2:1", "resolution": "2k"}),
        ),
        // xAI writes 6:13 as 9:19.5 (core parses integer ratios only).
        (
            json!({"aspect_ratio": "18:39"}),
            json!({"aspect_ratio": "9:19.5"}),
        ),
        (
            json!({"aspect_ratio": "13:6", "user": "u-7"}),
            json!({"aspect_ratio": "19.5:9", "user": "u-7"}),
        ),
    ];
    for (sent, upstream) in cases {
        let server = MockServer::start().await;
        expect(
            &server,
            "/images/generations",
            body("grok-imagine-image", 1, upstream),
            ResponseTemplate::new(200).set_body_json(images(1)),
        )
        .await;
        let response = gateway(&server)
            .generate(request("grok-imagine", sent.clone()))
            .await;
        assert!(response.is_ok(), "{sent}: {response:?}");
    }
    Ok(())
}

/// grok-imagine-image-2.0: `quality`, the 21:9 and 5:2 ratios, and up to 5 edit images.
#[tokio::test]
async fn grok_imagine_2_sends_quality_and_takes_wider_ratios_and_five_images() -> TestResult {
    let server = MockServer::start().await;
    expect(
        &server,
        "/images/generations",
        body(
            "grok-imagine-image-2.0",
            2,
            json!({"quality": "low", "aspect_ratio": "5:2", "resolution": "2k"}),
        ),
        ResponseTemplate::new(200).set_body_json(images(2)),
    )
    .await;
    let mut sent = request(
        "grok-imagine-2",
        json!({"quality": "low", "aspect_ratio": "5:2", "image_size": "2K"}),
    );
    sent.n = Some(2);
    assert_eq!(gateway(&server).generate(sent).await?.data.len(), 2);

    let references: Vec<Value> = (0..5)
        .map(|i| json!({"url": data_url(&reference_png(i)), "type": "image_url"}))
        .collect();
    expect(
        &server,
        "/images/edits",
        body(
            "grok-imagine-image-2.0",
            1,
            json!({"quality": "auto", "aspect_ratio": "21:9", "images": references}),
        ),
        ResponseTemplate::new(200).set_body_json(images(1)),
    )
    .await;
    let mut sent = request("grok-imagine-image-2.0", json!({"aspect_ratio": "21:9"}));
    sent.images = Some(
        (0..5)
            .map(|i| ImageInput::Text(data_url(&reference_png(i))))
            .collect(),
    );
    gateway(&server).generate(sent.clone()).await?;
    sent.images = Some(
        (0..6)
            .map(|i| ImageInput::Text(data_url(&reference_png(i))))
            .collect(),
    );
    let error = gateway(&server).generate(sent).await.expect_err("6 images");
    assert_eq!(error.param(), Some("image"));
    Ok(())
}

#[tokio::test]
async fn unsupported_dimensions_are_refused_before_any_call() -> TestResult {
    let server = MockServer::start().await;
    // Each field, sent alone, is refused naming itself.
    let refused = json!({"image_size": "4K", "size": "1792x1024", "aspect_ratio": "21:9",
                         "quality": "high"});
    let cases = refused
        .as_object()
        .ok_or("an object")?
        .iter()
        .map(|(param, value)| {
            (
                request("grok-imagine", json!({ param: value })),
                param.as_str(),
            )
        });
    assert_refused_before_any_call(&gateway(&server), &server, cases).await;
    Ok(())
}

#[tokio::test]
async fn ten_images_in_one_call_url_items_downloaded_without_the_key_and_usage_kept() -> TestResult
{
    let server = MockServer::start().await;
    let image_url = format!("{}/xai-tmp-imgen-1.png", server.uri());
    let mut data =
        vec![json!({"b64_json": b64(&png(8, 8, [9, 9, 9])), "mime_type": "image/png"}); 9];
    data.push(json!({"url": image_url, "b64_json": null, "mime_type": "image/png", "revised_prompt": "a tall lighthouse"}));
    expect(&server, "/images/generations", body("grok-imagine-image", 10, json!({})), ResponseTemplate::new(200).set_body_json(
            json!({"data": data, "usage": {"cost_in_usd_ticks": 2_000_000_000_u64}, "block_reason": null}),
        )).await;
    let download = Mock::given(method("GET")).and(path("/xai-tmp-imgen-1.png"));
    let image = ResponseTemplate::new(200).set_body_bytes(png(4, 4, [5, 5, 5]));
    mount_once(&server, download.and(WithoutHeader("authorization")), image).await;
    let response: ImageResponse = gateway(&server)
        .generate(request("grok-imagine", json!({"n": 10})))
        .await?;
    assert_eq!(response.data.len(), 10);
    assert_eq!(
        response.data[9].revised_prompt.as_deref(),
        Some("a tall lighthouse")
    );
    let usage = response.usage.ok_or("usage passes through")?;
    assert_eq!(
        usage.extra.get("cost_in_usd_ticks"),
        Some(&json!(2_000_000_000_u64))
    );
    Ok(())
}

#[tokio::test]
async fn key_errors_never_carry_the_key() -> TestResult {
    for status in [400, 401] {
        let answer = json!({"code": "Client specified an invalid argument",
                            "error": format!("Incorrect API key provided: {KEY}")});
        let error = failure(
            ResponseTemplate::new(status).set_body_json(answer),
            request("grok-imagine", json!({})),
        )
        .await;
        // xAI answers a wrong key with 400 or 401: either way the operator's key, so 502.
        assert_eq!(error.status(), 502);
        assert!(!format!("{error} {error:?}").contains(KEY), "{error:?}");
    }
    Ok(())
}

#[test]
fn traces_name_the_upstream_as_the_genai_conventions_do() {
    assert_provider_names::<Xai>("xai", "x_ai");
}
