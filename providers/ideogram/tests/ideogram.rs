//! Ideogram-specific mappings, through the gateway against a fake Ideogram (see `fake`): the
//! exact parts (`size` as `resolution`, ratios as `16x9`, the Ideogram parameters, the
//! operator's constants), what is refused before any call, remixes, images the safety check
//! withheld, downloads and a slow upstream.

mod fake;

use std::time::Duration;

use fake::{form::FormPart, REVISED};
use imgproxy_core::{
    upstream::{UpstreamProvider, UpstreamSettings},
    Catalog, Gateway, ImageRequest,
};
use imgproxy_provider_ideogram::Ideogram;
use imgproxy_testkit::{
    assert_error, assert_refused_before_any_call, data_url, gateway_at, gateway_of, merged,
    mount_once, png, reference_png, refusal, request_of,
};
use serde_json::{json, Value};
use wiremock::{
    matchers::{method, path},
    Mock, MockServer, ResponseTemplate,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const KEY: &str = "ideogram-extra-key-fedcba9876543210";
const PROMPT: &str = "a koi pond";

fn gateway(server: &MockServer) -> Gateway {
    gateway_at::<Ideogram>(server, KEY)
}

fn request(extra: Value) -> ImageRequest {
    request_of(merged(
        json!({"model": "ideogram-v3", "prompt": PROMPT}),
        extra,
    ))
}

/// What the client sends → the exact text parts Ideogram receives at `/generate`.
#[tokio::test]
async fn the_parts_are_exact_with_resolution_ratios_and_ideogram_params() -> TestResult {
    let cases: [(Value, &[(&str, &str)]); 5] = [
        (
            json!({"size": "1312x736", "n": 3, "seed": 42, "rendering_speed": "TURBO",
                   "magic_prompt": "OFF", "style_type": "DESIGN", "negative_prompt": "blurry"}),
            &[
                ("resolution", "1312x736"),
                ("num_images", "3"),
                ("seed", "42"),
                ("rendering_speed", "TURBO"),
                ("magic_prompt", "OFF"),
                ("style_type", "DESIGN"),
                ("negative_prompt", "blurry"),
            ],
        ),
        (
            json!({"aspect_ratio": "16:9", "rendering_speed": "FLASH"}),
            &[
                ("aspect_ratio", "16x9"),
                ("num_images", "1"),
                ("rendering_speed", "FLASH"),
            ],
        ),
        // A ratio is compared by value and sent in Ideogram's own spelling.
        (
            json!({"aspect_ratio": "5:8"}),
            &[
                ("aspect_ratio", "10x16"),
                ("num_images", "1"),
                ("rendering_speed", "DEFAULT"),
            ],
        ),
        (
            json!({"size": "1024x1024", "n": 8}),
            &[
                ("resolution", "1024x1024"),
                ("num_images", "8"),
                ("rendering_speed", "DEFAULT"),
            ],
        ),
        // `auto` leaves the shape to Ideogram (1x1): neither `resolution` nor a ratio.
        (
            json!({"size": "auto"}),
            &[("num_images", "1"), ("rendering_speed", "DEFAULT")],
        ),
    ];
    for (sent, parts) in cases {
        let server = MockServer::start().await;
        let n = request(sent.clone()).n.unwrap_or(1);
        let mut text = parts.to_vec();
        text.push(("prompt", PROMPT));
        let answer = fake::images(&server, n).await;
        mount_once(
            &server,
            fake::with_parts("generate", KEY, &text, Vec::new()),
            answer,
        )
        .await;
        let response = gateway(&server).generate(request(sent.clone())).await?;
        assert_eq!(response.data.len(), n as usize, "{sent}");
        for image in &response.data {
            assert_eq!(image.revised_prompt.as_deref(), Some(REVISED), "{sent}");
        }
    }
    Ok(())
}

#[tokio::test]
async fn conflicting_or_unknown_values_are_refused_before_any_call() -> TestResult {
    let server = MockServer::start().await;
    let image = || json!([data_url(&reference_png(0))]);
    let cases = [
        // Ideogram takes `resolution` or `aspect_ratio`, never both: the catalog's rule.
        (
            json!({"size": "1024x1024", "aspect_ratio": "1:1"}),
            "aspect_ratio",
        ),
        (
            json!({"size": "1312x736", "aspect_ratio": "16:9"}),
            "aspect_ratio",
        ),
        // Not one of the 69 resolutions, nor one of the 15 ratios.
        (json!({"size": "1536x1024"}), "size"),
        (json!({"aspect_ratio": "21:9"}), "aspect_ratio"),
        (json!({"n": 9}), "n"),
        (json!({"seed": -1}), "seed"),
        (json!({"seed": 2_147_483_648_i64}), "seed"),
        (json!({"rendering_speed": "turbo"}), "rendering_speed"),
        (json!({"style_type": "ANIME"}), "style_type"),
        (json!({"magic_prompt": true}), "magic_prompt"),
        // OpenAI's `quality` is not Ideogram's: `rendering_speed` is the knob.
        (json!({"quality": "high"}), "quality"),
        (
            json!({"images": [data_url(&reference_png(0)), data_url(&reference_png(1))]}),
            "image",
        ),
        (
            json!({"images": image(), "mask": data_url(&png(8, 8, [0, 0, 0]))}),
            "mask",
        ),
        (
            json!({"images": image(), "image_weight": 0}),
            "image_weight",
        ),
        // `image_weight` belongs to a remix: refused by the adapter before it calls.
        (json!({"image_weight": 50}), "image_weight"),
    ];
    let cases = cases.map(|(sent, param)| (request(sent), param));
    assert_refused_before_any_call(&gateway(&server), &server, cases).await;
    Ok(())
}

#[tokio::test]
async fn a_reference_image_is_remixed_with_its_weight() -> TestResult {
    let server = MockServer::start().await;
    let text = [
        ("prompt", PROMPT),
        ("num_images", "2"),
        ("rendering_speed", "QUALITY"),
        ("aspect_ratio", "3x2"),
        ("image_weight", "80"),
    ];
    let image = FormPart::file("image", "image.png", "image/png", &reference_png(3));
    let answer = fake::images(&server, 2).await;
    mount_once(
        &server,
        fake::with_parts("remix", KEY, &text, vec![image]),
        answer,
    )
    .await;
    let sent = json!({"n": 2, "rendering_speed": "QUALITY", "aspect_ratio": "3:2",
                      "image_weight": 80, "images": [data_url(&reference_png(3))]});
    let response = gateway(&server).generate(request(sent)).await?;
    assert_eq!(response.data.len(), 2);
    Ok(())
}

#[tokio::test]
async fn withheld_images_are_dropped_and_the_others_returned() -> TestResult {
    let server = MockServer::start().await;
    let answer = fake::answer(&server, &[true, false, true]).await;
    mount_once(&server, fake::call("generate", KEY), answer).await;
    let response = gateway(&server).generate(request(json!({"n": 3}))).await?;
    // The two safe images, each downloaded once (the fake's expectations); nothing else.
    assert_eq!(response.data.len(), 2);
    Ok(())
}

#[tokio::test]
async fn every_image_withheld_is_moderation_blocked() -> TestResult {
    let server = MockServer::start().await;
    let answer = fake::answer(&server, &[false, false]).await;
    mount_once(&server, fake::call("generate", KEY), answer).await;
    let error = refusal(&gateway(&server), request(json!({"n": 2}))).await;
    assert_error(&error, 400, "moderation_blocked");
    Ok(())
}

#[tokio::test]
async fn an_expired_image_url_is_a_502() -> TestResult {
    let server = MockServer::start().await;
    let url = format!("{}/api/images/ephemeral/gone.png?exp=1", server.uri());
    let answer = json!({"created": "2026-06-02T16:24:11Z", "data": [fake::item(Some(url))]});
    mount_once(
        &server,
        fake::call("generate", KEY),
        ResponseTemplate::new(200).set_body_json(answer),
    )
    .await;
    mount_once(
        &server,
        Mock::given(method("GET")).and(path("/api/images/ephemeral/gone.png")),
        ResponseTemplate::new(403).set_body_string("<Error>Request has expired</Error>"),
    )
    .await;
    let error = refusal(&gateway(&server), request(json!({}))).await;
    assert_eq!(error.status(), 502, "{error}");
    Ok(())
}

#[tokio::test]
async fn the_operators_constants_are_text_parts_objects_as_json() -> TestResult {
    let server = MockServer::start().await;
    let mut catalog = Catalog::embedded()?;
    let mut model = (**catalog.resolve("ideogram-v3", &|_| true)?).clone();
    model.upstream_params = serde_json::from_value(json!({
        "color_palette": {"name": "EMBER"}, "style_preset": "BAUHAUS",
        // Never the count or the prompt: those come from the request.
        "num_images": 8, "prompt": "something else"
    }))?;
    catalog.upsert(model)?;
    let provider =
        UpstreamProvider::<Ideogram>::new(UpstreamSettings::new(KEY).with_base_url(server.uri()))?;
    let gateway = Gateway::builder(catalog)
        .provider(std::sync::Arc::new(provider))
        .build();
    let text = [
        ("prompt", PROMPT),
        ("num_images", "1"),
        ("rendering_speed", "DEFAULT"),
        ("color_palette", r#"{"name":"EMBER"}"#),
        ("style_preset", "BAUHAUS"),
    ];
    let answer = fake::images(&server, 1).await;
    mount_once(
        &server,
        fake::with_parts("generate", KEY, &text, Vec::new()),
        answer,
    )
    .await;
    assert_eq!(gateway.generate(request(json!({}))).await?.data.len(), 1);
    Ok(())
}

#[tokio::test]
async fn a_slow_upstream_is_504() -> TestResult {
    let server = MockServer::start().await;
    // Never downloaded: the call itself times out.
    let url = format!("{}/api/images/ephemeral/late.png", server.uri());
    let slow = ResponseTemplate::new(200)
        .set_body_json(json!({"created": "2026-06-02T16:24:11Z", "data": [fake::item(Some(url))]}))
        .set_delay(Duration::from_secs(3));
    Mock::given(method("POST"))
        .and(path("/v1/ideogram-v3/generate"))
        .respond_with(slow)
        .expect(1)
        .mount(&server)
        .await;
    let settings = UpstreamSettings::new(KEY)
        .with_base_url(server.uri())
        .with_timeout(Duration::from_millis(300));
    let gateway = gateway_of(UpstreamProvider::<Ideogram>::new(settings)?);
    let error = refusal(&gateway, request(json!({}))).await;
    assert_error(&error, 504, "upstream_timeout");
    Ok(())
}
