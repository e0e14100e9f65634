//! Recraft-specific mappings, through the gateway against a fake Recraft (providers-2.md §13):
//! the exact generation body of each family (sizes and ratios, V3's style, substyle and seed),
//! SVG from the vector models, the exact multipart form of vectorize and remove background,
//! requests refused before any call, error statuses, a timeout and the download cap.

#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::{sync::Arc, time::Duration};

use common::{
    call, generation, generation_answer, plain_body, result, svg, tool_answer, FormIs, FormPart,
    KEY, PROMPT,
};
use imgproxy_core::{
    upstream::{UpstreamProvider, UpstreamSettings},
    Catalog, Gateway, ImageRequest, ModelSpec,
};
use imgproxy_provider_recraft::Recraft;
use imgproxy_testkit::{
    assert_error, assert_refused_before_any_call, b64, data_url, gateway_at, gateway_of, merged,
    mount_once, png, provider_at, reference_png, refusal, request_of,
};
use serde_json::{json, Value};
use wiremock::{MockServer, ResponseTemplate};

fn gateway(server: &MockServer) -> Gateway {
    gateway_at::<Recraft>(server, KEY)
}

/// A gateway whose Recraft has `settings` on top of the key and `server`'s root.
fn gateway_with(
    server: &MockServer,
    settings: impl FnOnce(UpstreamSettings) -> UpstreamSettings,
) -> Gateway {
    let base = UpstreamSettings::new(KEY).with_base_url(server.uri());
    gateway_of(UpstreamProvider::<Recraft>::new(settings(base)).unwrap())
}

fn request(model: &str, extra: Value) -> ImageRequest {
    request_of(merged(json!({"model": model, "prompt": PROMPT}), extra))
}

/// What the client sends → the exact body Recraft receives.
#[tokio::test]
async fn generation_bodies_are_exact_for_each_family() {
    let cases = [
        (
            json!({"model": "recraft-v4.1", "size": "1280x832", "n": 2,
                   "controls": {"no_text": true, "colors": [{"rgb": [255, 142, 60]}]}}),
            json!({"model": "recraftv4_1", "size": "1280x832", "n": 2,
                   "controls": {"no_text": true, "colors": [{"rgb": [255, 142, 60]}]}}),
        ),
        // A ratio goes as `w:h`, in the spelling Recraft lists (3:5 is its `6:10`).
        (
            json!({"model": "recraft-v4.1", "aspect_ratio": "3:5"}),
            json!({"model": "recraftv4_1", "size": "6:10", "n": 1}),
        ),
        (
            json!({"model": "recraft-v4-pro", "size": "2688x1536", "n": 6}),
            json!({"model": "recraftv4_pro", "size": "2688x1536", "n": 6}),
        ),
        (
            json!({"model": "recraftv3", "size": "1365x1024", "style": "digital_illustration",
                   "substyle": "pixel_art", "negative_prompt": "text", "seed": 42}),
            json!({"model": "recraftv3", "size": "1365x1024", "style": "digital_illustration",
                   "substyle": "pixel_art", "negative_prompt": "text", "random_seed": 42, "n": 1}),
        ),
    ];
    for (sent, received) in cases {
        let server = MockServer::start().await;
        let n = received["n"].as_u64().unwrap() as usize;
        let mut urls = Vec::new();
        for i in 0..n {
            urls.push(
                result(
                    &server,
                    &format!("{i}.png"),
                    png(8, 8, [9, 9, 9]),
                    "image/png",
                )
                .await,
            );
        }
        let body = merged(
            received,
            json!({"prompt": PROMPT, "response_format": "url"}),
        );
        mount_once(&server, generation(body), generation_answer(&urls)).await;
        let response = gateway(&server)
            .generate(request_of(merged(json!({"prompt": PROMPT}), sent.clone())))
            .await;
        let response = response.unwrap_or_else(|e| panic!("{sent}: {e}"));
        assert_eq!(response.data.len(), n, "{sent}");
        assert_eq!(
            response.data[0].revised_prompt.as_deref(),
            Some(PROMPT),
            "{sent}"
        );
    }
}

#[tokio::test]
async fn vector_models_answer_the_svg_document_unchanged() {
    for (model, upstream, extra) in [
        ("recraft-v4.1-vector", "recraftv4_1_vector", json!({})),
        (
            "recraft-v3-vector",
            "recraftv3_vector",
            json!({"style": "vector_illustration", "substyle": "line_art"}),
        ),
    ] {
        let server = MockServer::start().await;
        // Served as bytes of no particular type: the document itself says it is SVG.
        let url = result(&server, "0.svg", svg(7), "application/octet-stream").await;
        let body = merged(plain_body(upstream, 1), extra.clone());
        mount_once(&server, generation(body), generation_answer(&[url])).await;
        let response = gateway(&server)
            .generate(request(model, extra))
            .await
            .unwrap();
        assert_eq!(response.data[0].b64_json, Some(b64(&svg(7))), "{model}");
        assert_eq!(
            response.meta.output_format.as_deref(),
            Some("svg"),
            "{model}"
        );
    }
}

/// Vectorize: the image as the `file` part, the operator's constants as text parts, SVG back.
#[tokio::test]
async fn vectorize_sends_one_file_part_and_answers_svg() {
    let server = MockServer::start().await;
    let mut catalog = Catalog::embedded().unwrap();
    let variants = catalog.variants("vectorize");
    let recraft = variants.into_iter().find(|m| m.provider == "recraft");
    let mut model = ModelSpec::clone(recraft.unwrap());
    model.upstream_params = serde_json::from_value(json!({"shape_stacking": "cut_out"})).unwrap();
    catalog.upsert(model).unwrap();
    let gateway = Gateway::builder(catalog)
        .provider(Arc::new(provider_at::<Recraft>(&server, KEY)))
        .build();

    let jpeg = reference_jpeg();
    let url = result(&server, "v.svg", svg(1), "image/svg+xml").await;
    let form = FormIs(vec![
        FormPart::file("file", "image.jpg", "image/jpeg", &jpeg),
        FormPart::text("shape_stacking", "cut_out"),
        FormPart::text("response_format", "url"),
    ]);
    mount_once(&server, call("vectorize").and(form), tool_answer(&url)).await;
    let sent = json!({"model": "vectorize", "vectorize_model": "recraft:1@1",
                      "images": [format!("data:image/jpeg;base64,{}", b64(&jpeg))]});
    let response = gateway.generate(request_of(sent)).await.unwrap();
    assert_eq!(response.data[0].b64_json, Some(b64(&svg(1))));
    assert_eq!(response.meta.output_format.as_deref(), Some("svg"));
}

/// Remove background: the `file` part alone, a transparent PNG back, converted when asked.
#[tokio::test]
async fn remove_background_sends_one_file_part_and_reports_a_transparent_background() {
    for (asked, signature) in [(None, &b"\x89PNG"[..]), (Some("webp"), b"RIFF")] {
        let server = MockServer::start().await;
        let url = result(&server, "cut.png", png(8, 8, [1, 2, 3]), "image/png").await;
        let form = FormIs(vec![
            FormPart::file("file", "image.png", "image/png", &reference_png(2)),
            FormPart::text("response_format", "url"),
        ]);
        mount_once(
            &server,
            call("removeBackground").and(form),
            tool_answer(&url),
        )
        .await;
        let mut sent = json!({"model": "recraft-remove-background",
                              "images": [data_url(&reference_png(2))]});
        if let Some(format) = asked {
            sent["output_format"] = json!(format);
        }
        let response = gateway(&server).generate(request_of(sent)).await.unwrap();
        let answered = response.data[0].b64_json.as_deref().unwrap();
        assert!(
            answered.starts_with(&b64(signature)[..4]),
            "{asked:?}: {}",
            &answered[..12]
        );
        assert_eq!(response.meta.background.as_deref(), Some("transparent"));
    }
}

#[tokio::test]
async fn what_a_model_does_not_take_is_refused_before_any_call() {
    let server = MockServer::start().await;
    let cases = [
        // V4 and V4.1 take no style; V3 styles belong to their raster or vector model.
        (request("recraft-v4.1", json!({"style": "any"})), "style"),
        (
            request("recraft-v3", json!({"style": "vector_illustration"})),
            "style",
        ),
        (
            request("recraft-v3-vector", json!({"style": "realistic_image"})),
            "style",
        ),
        (
            request("recraft-v3", json!({"substyle": "pixel_art"})),
            "substyle",
        ),
        (
            request("recraft-v4.1", json!({"negative_prompt": "text"})),
            "negative_prompt",
        ),
        (
            request("recraft-v4.1-vector", json!({"output_format": "png"})),
            "output_format",
        ),
        (request("recraft-v4.1", json!({"n": 7})), "n"),
        (request("recraft-v4.1", json!({"size": "1024x768"})), "size"),
        (
            request("recraft-v4.1-pro", json!({"size": "1024x1024"})),
            "size",
        ),
        (request("recraft-v3", json!({"seed": -1})), "seed"),
        (
            request("recraft-v3", json!({"prompt": "x".repeat(1001)})),
            "prompt",
        ),
        (
            request(
                "recraft-v4.1",
                json!({"images": [data_url(&reference_png(0))]}),
            ),
            "image",
        ),
        (request("recraft-remove-background", json!({})), "image"),
    ];
    assert_refused_before_any_call(&gateway(&server), &server, cases).await;
}

#[tokio::test]
async fn upstream_errors_map_by_meaning_and_never_carry_the_key() {
    let cases = [
        (
            422,
            json!({"code": "invalid_prompt", "message": "Inappropriate content in the prompt"}),
            400,
            "moderation_blocked",
        ),
        (
            400,
            json!({"code": "invalid_size", "message": "size is not supported"}),
            400,
            "upstream_invalid_request",
        ),
        (
            402,
            json!({"code": "not_enough_credits", "message": "Not enough API units"}),
            502,
            "upstream_error",
        ),
        (
            401,
            json!({"message": format!("invalid token {KEY}")}),
            502,
            "upstream_auth_failed",
        ),
    ];
    for (status, body, expected, code) in cases {
        let server = MockServer::start().await;
        let answer = ResponseTemplate::new(status).set_body_json(&body);
        mount_once(&server, generation(plain_body("recraftv4_1", 1)), answer).await;
        let error = refusal(&gateway(&server), request("recraft-v4.1", json!({}))).await;
        assert_error(&error, expected, code);
        assert!(!format!("{error:?}").contains(KEY), "{body}: {error:?}");
    }
}

#[tokio::test]
async fn a_slow_answer_is_a_504() {
    let server = MockServer::start().await;
    let slow = generation_answer(&[]).set_delay(Duration::from_secs(3));
    mount_once(&server, generation(plain_body("recraftv4_1", 1)), slow).await;
    let gateway = gateway_with(&server, |s| s.with_timeout(Duration::from_millis(300)));
    let error = refusal(&gateway, request("recraft-v4.1", json!({}))).await;
    assert_error(&error, 504, "upstream_timeout");
}

/// A result larger than the cap, or a page that is not an image, fails (502) instead of being
/// kept.
#[tokio::test]
async fn results_are_downloaded_within_the_cap_and_must_be_images() {
    for (file, kind) in [
        (vec![0_u8; 4096], "image/png"),
        (b"<!doctype html><p>gone</p>".to_vec(), "text/html"),
    ] {
        let server = MockServer::start().await;
        let url = result(&server, "0.png", file, kind).await;
        mount_once(
            &server,
            generation(plain_body("recraftv4_1", 1)),
            generation_answer(&[url]),
        )
        .await;
        let gateway = gateway_with(&server, |s| s.with_max_download_bytes(1024));
        let error = refusal(&gateway, request("recraft-v4.1", json!({}))).await;
        assert_eq!(error.status(), 502, "{kind}: {error}");
    }
}

/// A real JPEG, for a file part typed other than PNG.
fn reference_jpeg() -> Vec<u8> {
    let image = image::RgbImage::from_pixel(8, 8, image::Rgb([200, 10, 10]));
    let mut out = std::io::Cursor::new(Vec::new());
    image.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
    out.into_inner()
}
