//! Wiremock tests of the Gemini adapter's model-specific mappings, driven through the gateway
//! as clients drive it: each model's `generationConfig` (ratios, tiers, seeds; never
//! `personGeneration`), per-model limits, response reading (thought parts, snake_case, usage) and
//! Google's refusal and error shapes. Every fake asserts the exact outgoing body.

use std::{sync::Arc, time::Duration};

use base64::{engine::general_purpose::STANDARD, Engine as _};
use imgproxy_core::{Catalog, Gateway, ImageResponse};
use imgproxy_provider_gemini::Gemini;
use imgproxy_testkit::{
    assert_provider_names, b64, data_url, forbid, png, provider_at, reference_png, refusal,
};
use serde_json::{json, Value};
use wiremock::{
    matchers::{any, body_json, header, method, path},
    Mock, MockServer, ResponseTemplate,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const KEY: &str = "gemini-test-key-fedcba9876543210";

fn gateway_with(server: &MockServer, catalog: Catalog) -> Gateway {
    Gateway::builder(catalog)
        .provider(Arc::new(provider_at::<Gemini>(server, KEY)))
        .failover(imgproxy_testkit::one_attempt())
        .build()
}

async fn generate(
    server: &MockServer,
    request: Value,
) -> Result<imgproxy_core::Result<ImageResponse>, Box<dyn std::error::Error>> {
    let gateway = gateway_with(server, Catalog::embedded()?);
    Ok(gateway.generate(serde_json::from_value(request)?).await)
}

/// What Google answers with one final image.
fn image_answer(image: &[u8]) -> Value {
    json!({"candidates": [{
        "content": {"role": "model", "parts": [
            {"inlineData": {"mimeType": "image/png", "data": b64(image)}}
        ]},
        "finishReason": "STOP"
    }]})
}

/// Mounts one exact call to `upstream`'s `generateContent`.
async fn expect(server: &MockServer, upstream: &str, body: Value, response: ResponseTemplate) {
    Mock::given(method("POST"))
        .and(path(format!("/v1beta/models/{upstream}:generateContent")))
        .and(header("x-goog-api-key", KEY))
        .and(body_json(body))
        .respond_with(response)
        .expect(1)
        .mount(server)
        .await;
}

fn text_body(prompt: &str, generation_config: Value) -> Value {
    json!({
        "contents": [{"role": "user", "parts": [{"text": prompt}]}],
        "generationConfig": generation_config
    })
}

/// What the gateway answers `request` when its one call to `upstream` carries exactly `body`
/// and Google answers `answer`.
async fn exchange(
    upstream: &str,
    body: Value,
    answer: Value,
    request: Value,
) -> Result<ImageResponse, Box<dyn std::error::Error>> {
    let server = MockServer::start().await;
    let answer = ResponseTemplate::new(200).set_body_json(answer);
    expect(&server, upstream, body, answer).await;
    Ok(generate(&server, request).await??)
}

/// What the gateway answers a plain nano-banana-pro request when Google answers `answer`.
async fn pro_exchange(answer: Value) -> Result<ImageResponse, Box<dyn std::error::Error>> {
    let body = text_body("p", json!({"responseModalities": ["IMAGE"]}));
    let request = json!({"model": "nano-banana-pro", "prompt": "p"});
    exchange("gemini-3-pro-image", body, answer, request).await
}

/// The gateway's error when the one upstream call answers `response`.
async fn failure(
    response: ResponseTemplate,
) -> Result<imgproxy_core::Error, Box<dyn std::error::Error>> {
    let server = MockServer::start().await;
    expect(
        &server,
        "gemini-3-pro-image",
        text_body("p", json!({"responseModalities": ["IMAGE"]})),
        response,
    )
    .await;
    let request = json!({"model": "nano-banana-pro", "prompt": "p"});
    let gateway = gateway_with(&server, Catalog::embedded()?);
    Ok(refusal(&gateway, serde_json::from_value(request)?).await)
}

/// `nano-banana` was `gemini-2.5-flash-image`, shut down on 2026-10-02: its names are served by
/// Gemini 3.1 Flash Image, and `personGeneration` (Vertex only) is never sent.
#[tokio::test]
async fn retired_nano_banana_is_served_by_3_1_flash_with_ratio_and_seed() -> TestResult {
    let config = json!({
        "responseModalities": ["IMAGE"],
        "imageConfig": {"aspectRatio": "16:9"},
        "seed": 42
    });
    let image = png(32, 18, [1, 2, 3]);
    let response = exchange(
        "gemini-3.1-flash-image",
        text_body("a kite", config),
        image_answer(&image),
        json!({"model": "nanobanana", "prompt": "a kite", "aspect_ratio": "16:9", "seed": 42}),
    )
    .await?;
    assert_eq!(
        response.data[0].b64_json.as_deref(),
        Some(b64(&image).as_str())
    );
    assert_eq!(response.data[0].revised_prompt, None);
    assert_eq!(response.meta.output_format.as_deref(), Some("png"));
    Ok(())
}

/// What the client sends → the `generationConfig` Google receives.
#[tokio::test]
async fn sizes_and_ratios_reach_the_upstream_as_image_config() -> TestResult {
    let cases = [
        // nano-banana-pro reads a size as a ratio and a tier.
        (
            "gemini-3-pro-image",
            json!({"aspectRatio": "1:1", "imageSize": "2K"}),
            json!({"model": "nano-banana-pro", "size": "2048x2048"}),
            png(8, 8, [9, 9, 9]),
        ),
        // The widest common ratio reaches the upstream as 21:9.
        (
            "gemini-3.1-flash-image",
            json!({"aspectRatio": "21:9"}),
            json!({"model": "nano-banana", "aspect_ratio": "21:9"}),
            png(21, 9, [0, 0, 0]),
        ),
    ];
    for (upstream, image_config, mut request, image) in cases {
        let config = json!({"responseModalities": ["IMAGE"], "imageConfig": image_config});
        request["prompt"] = json!("p");
        exchange(
            upstream,
            text_body("p", config),
            image_answer(&image),
            request,
        )
        .await?;
    }
    Ok(())
}

#[tokio::test]
async fn nano_banana_2_fans_out_one_call_per_image_with_distinct_seeds() -> TestResult {
    let server = MockServer::start().await;
    for (seed, shade) in [(7, 10), (8, 20)] {
        let config = json!({
            "responseModalities": ["IMAGE"],
            "imageConfig": {"aspectRatio": "8:1", "imageSize": "512"},
            "seed": seed
        });
        expect(
            &server,
            "gemini-3.1-flash-image",
            text_body("a banner", config),
            ResponseTemplate::new(200).set_body_json(image_answer(&png(64, 8, [shade, 0, 0]))),
        )
        .await;
    }
    let response = generate(
        &server,
        json!({"model": "nano-banana-2", "prompt": "a banner", "n": 2, "seed": 7,
               "aspect_ratio": "8:1", "image_size": "512"}),
    )
    .await??;
    let images: Vec<_> = response.data.iter().map(|d| d.b64_json.clone()).collect();
    assert_eq!(
        images,
        vec![
            Some(b64(&png(64, 8, [10, 0, 0]))),
            Some(b64(&png(64, 8, [20, 0, 0])))
        ],
        "results keep the order of the calls"
    );
    Ok(())
}

#[tokio::test]
async fn each_model_enforces_its_own_limits_before_any_call() -> TestResult {
    let server = MockServer::start().await;
    forbid(&server, Mock::given(any())).await;
    let refs =
        |count: usize| -> Vec<String> { (0..count).map(|i| data_url(&reference_png(i))).collect() };
    let cases = [
        // `nano-banana` is served by nano-banana-2, with its limits.
        (
            json!({"model": "nano-banana", "safety_filter_level": "block_only_high"}),
            "safety_filter_level",
        ),
        (
            json!({"model": "nano-banana", "aspect_ratio": "9:21"}),
            "aspect_ratio",
        ),
        (json!({"model": "nano-banana", "size": "1792x1024"}), "size"),
        (json!({"model": "nano-banana", "n": 5}), "n"),
        (json!({"model": "nano-banana", "images": refs(15)}), "image"),
        (
            json!({"model": "nano-banana-pro", "image_size": "512"}),
            "image_size",
        ),
        (
            json!({"model": "nano-banana-pro", "aspect_ratio": "1:4"}),
            "aspect_ratio",
        ),
        (
            json!({"model": "nano-banana-pro", "images": refs(15)}),
            "image",
        ),
        (
            json!({"model": "nano-banana-2", "person_generation": "allow_adult"}),
            "person_generation",
        ),
        (json!({"model": "nano-banana-2", "seed": -1}), "seed"),
        (
            json!({"model": "nano-banana-2", "quality": "high"}),
            "quality",
        ),
        // `output_format: jpeg` is no longer refused: the gateway converts what Gemini makes.
        (
            json!({"model": "nano-banana-2", "output_format": "gif"}),
            "output_format",
        ),
    ];
    for (mut request, param) in cases {
        request["prompt"] = json!("p");
        let error = generate(&server, request.clone())
            .await?
            .err()
            .ok_or_else(|| format!("{request} should be refused"))?;
        assert_eq!(
            (error.status(), error.param()),
            (400, Some(param)),
            "{request}: {error}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn reference_images_are_inline_parts_after_the_prompt_in_order() -> TestResult {
    let mut parts = vec![json!({"text": "combine these"})];
    parts.extend(
        (0..3).map(
            |i| json!({"inlineData": {"mimeType": "image/png", "data": b64(&reference_png(i))}}),
        ),
    );
    let body = json!({
        "contents": [{"role": "user", "parts": parts}],
        "generationConfig": {"responseModalities": ["IMAGE"], "imageConfig": {"aspectRatio": "4:5"}}
    });
    let images: Vec<_> = (0..3).map(|i| data_url(&reference_png(i))).collect();
    exchange(
        "gemini-3-pro-image",
        body,
        image_answer(&png(8, 10, [5, 5, 5])),
        json!({"model": "nano-banana-pro", "prompt": "combine these", "aspect_ratio": "4:5",
               "images": images}),
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn thought_images_and_text_are_dropped_and_snake_case_is_read() -> TestResult {
    let final_image = png(8, 8, [255, 0, 0]);
    let thought = png(8, 8, [0, 0, 255]);
    let answers = [
        json!({"candidates": [{"content": {"parts": [
            {"text": "Let me sketch it first.", "thought": true},
            {"inlineData": {"mimeType": "image/png", "data": b64(&thought)}, "thought": true},
            {"text": "Here is your image."},
            {"inlineData": {"mimeType": "image/png", "data": b64(&final_image)},
             "thoughtSignature": "c2ln"}
        ]}, "finishReason": "STOP"}]}),
        json!({"candidates": [{"content": {"parts": [
            {"inline_data": {"mime_type": "image/png", "data": b64(&thought)}, "thought": true},
            {"inline_data": {"mime_type": "image/png", "data": b64(&final_image)}}
        ]}, "finish_reason": "STOP"}]}),
    ];
    for answer in answers {
        let response = pro_exchange(answer).await?;
        assert_eq!(response.data.len(), 1);
        assert_eq!(
            response.data[0].b64_json.as_deref(),
            Some(STANDARD.encode(&final_image).as_str())
        );
        assert_eq!(
            response.data[0].revised_prompt, None,
            "text parts are not a revised prompt"
        );
    }
    Ok(())
}

#[tokio::test]
async fn usage_metadata_becomes_openai_usage() -> TestResult {
    let mut answer = image_answer(&png(8, 8, [1, 1, 1]));
    answer["usageMetadata"] = json!({
        "promptTokenCount": 12, "candidatesTokenCount": 1120, "totalTokenCount": 1400,
        "thoughtsTokenCount": 268,
        "candidatesTokensDetails": [{"modality": "IMAGE", "tokenCount": 1120}]
    });
    let response = pro_exchange(answer).await?;
    let usage = serde_json::to_value(response.usage.ok_or("no usage")?)?;
    assert_eq!(
        usage,
        json!({"input_tokens": 12, "output_tokens": 1120, "total_tokens": 1400,
               "thoughtsTokenCount": 268,
               "candidatesTokensDetails": [{"modality": "IMAGE", "tokenCount": 1120}]})
    );
    Ok(())
}

/// 200 answers without an image: Google's refusals are moderation blocks, anything else a
/// failure; either way the error names the reason.
#[tokio::test]
async fn answers_without_an_image_are_refusals_or_failures_naming_the_reason() -> TestResult {
    let blocked = (400, Some("moderation_blocked"));
    let failed = (502, Some("upstream_error"));
    let mut cases = vec![
        (
            json!({"promptFeedback": {"blockReason": "OTHER", "blockReasonMessage": "not allowed"}}),
            blocked,
            vec!["OTHER", "not allowed"],
        ),
        (
            json!({"candidates": [{"finishReason": "NO_IMAGE", "finishMessage": "No image made."}]}),
            failed,
            vec!["NO_IMAGE): No image made."],
        ),
        (
            json!({"candidates": [{"content": {"parts": []}, "finishReason": "IMAGE_OTHER"}]}),
            failed,
            vec!["IMAGE_OTHER"],
        ),
        (
            json!({"candidates": [{"content": {"parts": [{"text": "Sure!"}]}, "finishReason": "STOP"}]}),
            failed,
            vec!["STOP"],
        ),
        (
            json!({"usageMetadata": {"promptTokenCount": 3}}),
            failed,
            vec!["no candidates"],
        ),
    ];
    // The finish reasons with which Google withholds the image it made (or would make).
    for (reason, expected) in [
        ("SAFETY", blocked),
        ("PROHIBITED_CONTENT", blocked),
        ("IMAGE_SAFETY", blocked),
        ("IMAGE_PROHIBITED_CONTENT", blocked),
        ("BLOCKLIST", blocked),
        ("SPII", blocked),
        ("RECITATION", blocked),
        ("IMAGE_RECITATION", blocked),
        ("STOP", failed),
    ] {
        let answer = json!({"candidates": [{
            "content": {"parts": [{"text": "I can't create that."}]},
            "finishReason": reason,
            "finishMessage": "Unable to show the generated image."
        }]});
        cases.push((answer, expected, vec![reason]));
    }
    for (answer, expected, needles) in cases {
        let error = failure(ResponseTemplate::new(200).set_body_json(answer)).await?;
        assert_eq!((error.status(), error.code()), expected, "{error}");
        for needle in needles {
            assert!(error.to_string().contains(needle), "{error} lacks {needle}");
        }
    }
    Ok(())
}

#[tokio::test]
async fn google_errors_map_by_status() -> TestResult {
    let envelope = |code: u16, status: &str, message: &str, details: Value| json!({"error": {"code": code, "message": message, "status": status, "details": details}});
    let answer = |code: u16, status: &str, message: &str| {
        ResponseTemplate::new(code).set_body_json(envelope(code, status, message, json!([])))
    };
    // The upstream's answer → our status, and what the error must say.
    let cases = [
        (
            answer(400, "INVALID_ARGUMENT", "Unsupported aspect ratio."),
            400,
            "Unsupported aspect ratio.",
        ),
        (
            answer(
                400,
                "FAILED_PRECONDITION",
                "User location is not supported.",
            ),
            502,
            "User location is not supported.",
        ),
        (
            answer(500, "INTERNAL", "An internal error has occurred."),
            502,
            "500 INTERNAL: An internal error has occurred.",
        ),
        (
            ResponseTemplate::new(502).set_body_string("<html>bad gateway</html>"),
            502,
            "",
        ),
    ];
    for (response, status, says) in cases {
        let error = failure(response).await?;
        assert_eq!(error.status(), status, "{error}");
        assert!(error.to_string().contains(says), "{error}");
    }

    let bad_key = envelope(
        400,
        "INVALID_ARGUMENT",
        "API key not valid. Please pass a valid API key.",
        json!([{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}]),
    );
    for (status, body) in [
        (400, bad_key),
        (
            401,
            envelope(401, "UNAUTHENTICATED", "secret detail", json!([])),
        ),
        (
            403,
            envelope(403, "PERMISSION_DENIED", "secret detail", json!([])),
        ),
    ] {
        let error = failure(ResponseTemplate::new(status).set_body_json(body)).await?;
        assert_eq!(
            (error.status(), error.code()),
            (502, Some("upstream_auth_failed")),
            "{status}"
        );
        assert!(!error.to_string().contains("secret detail"), "{error}");
    }
    Ok(())
}

#[tokio::test]
async fn rate_limits_carry_retry_info_or_else_the_header() -> TestResult {
    let retry_info = json!({"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED",
        "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "34.4s"}]}});
    let bare = json!({"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED"}});
    // RetryInfo wins over the header; without it, the header counts.
    for (body, header, wait) in [
        (retry_info, "3", Duration::from_millis(34_400)),
        (bare, "5", Duration::from_secs(5)),
    ] {
        let answer = ResponseTemplate::new(429)
            .set_body_json(body)
            .insert_header("retry-after", header);
        let error = failure(answer).await?;
        assert_eq!((error.status(), error.retry_after()), (429, Some(wait)));
    }
    Ok(())
}

#[tokio::test]
async fn the_key_never_reaches_an_error_message() -> TestResult {
    let echo = json!({"error": {"code": 500, "message": format!("bad request with key={KEY}"),
                                "status": "INTERNAL"}});
    let error = failure(ResponseTemplate::new(500).set_body_json(echo)).await?;
    assert!(!error.to_string().contains(KEY), "{error}");
    assert!(error.to_string().contains("[redacted]"), "{error}");
    Ok(())
}

#[tokio::test]
async fn operator_constants_merge_but_never_replace_contents_or_ask_for_candidates() -> TestResult {
    let mut catalog = Catalog::embedded()?;
    let mut model = (**catalog.get("nano-banana-2").ok_or("no model")?).clone();
    model.upstream_params = serde_json::from_value(json!({
        "contents": "operator text",
        "tools": [{"google_search": {}}],
        "generationConfig": {"candidateCount": 2, "imageConfig": {"aspectRatio": "1:1"}}
    }))?;
    catalog.upsert(model)?;
    let server = MockServer::start().await;
    let body = json!({
        "contents": [{"role": "user", "parts": [{"text": "p"}]}],
        "tools": [{"google_search": {}}],
        "generationConfig": {"responseModalities": ["IMAGE"],
                             "imageConfig": {"aspectRatio": "1:1", "imageSize": "2K"}}
    });
    expect(
        &server,
        "gemini-3.1-flash-image",
        body,
        ResponseTemplate::new(200).set_body_json(image_answer(&png(8, 8, [0, 0, 0]))),
    )
    .await;
    let request = json!({"model": "nano-banana-2", "prompt": "p", "image_size": "2K"});
    gateway_with(&server, catalog)
        .generate(serde_json::from_value(request)?)
        .await?;
    Ok(())
}

#[tokio::test]
async fn a_parameter_the_catalog_does_not_map_is_a_failure_not_silently_dropped() -> TestResult {
    let mut catalog = Catalog::embedded()?;
    let mut model = (**catalog.get("nano-banana-2").ok_or("no model")?).clone();
    model.params.insert(
        "negative_prompt".into(),
        serde_json::from_value(json!({"type": "string"}))?,
    );
    catalog.upsert(model)?;
    let server = MockServer::start().await;
    forbid(&server, Mock::given(any())).await;
    let request = json!({"model": "nano-banana-2", "prompt": "p", "negative_prompt": "blur"});
    let error = gateway_with(&server, catalog)
        .generate(serde_json::from_value(request)?)
        .await
        .err()
        .ok_or("should fail")?;
    assert_eq!(error.status(), 502);
    assert!(error.to_string().contains("`negative_prompt`"), "{error}");
    Ok(())
}

#[test]
fn traces_name_the_upstream_as_the_genai_conventions_do() {
    assert_provider_names::<Gemini>("gemini", "gcp.gemini");
}
