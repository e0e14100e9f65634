//! Model-specific mappings and statuses of the Replicate adapter, each asserting the exact
//! `input` the catalog's `upstream_input` data produces.

#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::sync::Arc;

use base64::Engine as _;
use imgproxy_core::{
    Catalog, Gateway, ImageProvider as _, ImageRequest, ImageResponse, ProviderRequest,
};
use imgproxy_provider_replicate::{Replicate, ReplicateProvider};
use imgproxy_testkit::{
    answer_first_only, assert_error, assert_refused_before_any_call, data_url, merged, mount_once,
    one_image, provider_at, reference_png, request_of, serve_file_once,
};
use serde_json::{json, Value};
use wiremock::{
    matchers::{body_json, header, method, path},
    Mock, MockServer, ResponseTemplate,
};

use common::{create_path, gateway, mount_outputs, prediction, PROMPT};

const FLUX: &str = "black-forest-labs/flux-1.1-pro";

/// A request for `model` with extra fields, as a client's JSON body.
fn request(model: &str, extra: Value) -> ImageRequest {
    request_of(merged(json!({"model": model, "prompt": PROMPT}), extra))
}

/// The gateway's answer to a default `flux-1.1-pro` request.
async fn generate_flux(server: &MockServer) -> imgproxy_core::Result<ImageResponse> {
    gateway(server)
        .generate(request("flux-1.1-pro", json!({})))
        .await
}

/// Mounts a create of `model` that must carry exactly `input`, answering `answer`.
async fn expect_create(server: &MockServer, model: &str, input: Value, answer: Value) {
    Mock::given(method("POST"))
        .and(path(create_path(model)))
        .and(header("authorization", "Bearer r8_test_token"))
        .and(header("prefer", "wait=1"))
        .and(body_json(json!({ "input": input })))
        .respond_with(ResponseTemplate::new(201).set_body_json(answer))
        .expect(1)
        .mount(server)
        .await;
}

/// Mounts a create of `model` that succeeds with one output file, then runs `request`.
async fn generate_one(
    server: &MockServer,
    model: &str,
    input: Value,
    request: ImageRequest,
) -> ImageResponse {
    let urls = mount_outputs(server, 1, 1).await;
    let answer = prediction(server, "p1", "succeeded", json!(urls[0]));
    expect_create(server, model, input, answer).await;
    gateway(server).generate(request).await.unwrap()
}

/// What the client sends → what the create of the upstream model must carry exactly.
#[tokio::test]
async fn each_model_maps_its_parameters_exactly() {
    let reference = |i| data_url(&reference_png(i));
    let cases = [
        (
            "flux-1.1-pro",
            json!({"size": "1024x768", "output_format": "jpeg", "output_compression": 90,
                   "safety_tolerance": 5, "seed": 7, "prompt_upsampling": true}),
            FLUX,
            json!({"aspect_ratio": "custom", "width": 1024, "height": 768,
                   "output_format": "jpg", "output_quality": 90, "safety_tolerance": 5,
                   "seed": 7, "prompt_upsampling": true}),
        ),
        // Ultra takes only ratios: a size becomes its ratio.
        (
            "ultra",
            json!({"raw": true, "size": "1536x1024", "image_prompt_strength": 0.3}),
            "black-forest-labs/flux-1.1-pro-ultra",
            json!({"raw": true, "aspect_ratio": "3:2", "image_prompt_strength": 0.3,
                   "output_format": "png"}),
        ),
        // One reference image is Ultra's image prompt, a data URL.
        (
            "ultra",
            json!({"images": [reference(0)], "output_format": "jpeg"}),
            "black-forest-labs/flux-1.1-pro-ultra",
            json!({"image_prompt": reference(0), "output_format": "jpg"}),
        ),
        (
            "ultra",
            json!({"aspect_ratio": "21:9"}),
            "black-forest-labs/flux-1.1-pro-ultra",
            json!({"aspect_ratio": "21:9", "output_format": "png"}),
        ),
        (
            "seedream-4",
            json!({"images": [reference(0), reference(1)], "image_size": "2K",
                   "aspect_ratio": "16:9"}),
            "bytedance/seedream-4",
            json!({"image_input": [reference(0), reference(1)], "size": "2K",
                   "aspect_ratio": "16:9"}),
        ),
        (
            "nano-banana-pro",
            json!({"images": [reference(3)], "aspect_ratio": "21:9", "image_size": "4K",
                   "safety_filter_level": "block_only_high"}),
            "google/nano-banana-pro",
            json!({"image_input": [reference(3)], "aspect_ratio": "21:9", "resolution": "4K",
                   "output_format": "png", "safety_filter_level": "block_only_high"}),
        ),
        // Replicate's `google/imagen-4` and `google/nano-banana` run on models Google shut
        // down: their seed names are served by `nano-banana-2`, on Replicate when Gemini is
        // not configured.
        (
            "imagen4",
            json!({"aspect_ratio": "9:16", "output_format": "jpeg"}),
            "google/nano-banana-2",
            json!({"aspect_ratio": "9:16", "output_format": "jpg"}),
        ),
        (
            "gemini",
            json!({"aspect_ratio": "9:16", "output_format": "jpeg"}),
            "google/nano-banana-2",
            json!({"aspect_ratio": "9:16", "output_format": "jpg"}),
        ),
    ];
    for (model, sent, upstream, input) in cases {
        let server = MockServer::start().await;
        let asked = sent["output_format"].as_str().unwrap_or("png").to_owned();
        let input = merged(json!({"prompt": PROMPT}), input);
        let response = generate_one(&server, upstream, input, request(model, sent)).await;
        assert_eq!(response.data.len(), 1, "{model}");
        // The fake's output is a 16x16 PNG: the answer reports the image it carries,
        // converted to the format that was asked for.
        assert_eq!(response.meta.size.as_deref(), Some("16x16"), "{model}");
        assert_eq!(
            response.meta.output_format.as_deref(),
            Some(asked.as_str()),
            "{model}"
        );
    }
}

/// Parameters a model does not take, or values outside its limits, never reach Replicate.
#[tokio::test]
async fn out_of_range_parameters_are_refused_before_any_call() {
    let server = MockServer::start().await;
    let cases = [
        ("flux-1.1-pro", json!({"size": "1536x1024"}), "size"),
        // seedream 4.5 has no 1K tier.
        ("seedream-4-5", json!({"image_size": "1K"}), "image_size"),
        ("svg", json!({"output_format": "png"}), "output_format"),
        // Imagen's own parameters are not silently dropped by its replacement.
        (
            "imagen4",
            json!({"safety_filter_level": "block_only_high"}),
            "safety_filter_level",
        ),
    ];
    let cases = cases
        .into_iter()
        .map(|(model, sent, param)| (request(model, sent), param));
    assert_refused_before_any_call(&gateway(&server), &server, cases).await;
}

#[tokio::test]
async fn flux_fanned_out_calls_get_distinct_seeds() {
    let server = MockServer::start().await;
    let urls = mount_outputs(&server, 1, 2).await;
    for seed in [7, 8] {
        let input =
            json!({"prompt": PROMPT, "aspect_ratio": "16:9", "output_format": "png", "seed": seed});
        let answer = prediction(&server, "p1", "succeeded", json!(urls[0]));
        expect_create(&server, FLUX, input, answer).await;
    }
    let request = request(
        "flux-1.1-pro",
        json!({"n": 2, "aspect_ratio": "16:9", "seed": 7}),
    );
    let response = gateway(&server).generate(request).await.unwrap();
    assert_eq!(response.data.len(), 2);
}

#[tokio::test]
async fn seedream_n_is_max_images_in_one_call_with_a_custom_size() {
    let server = MockServer::start().await;
    let urls = mount_outputs(&server, 3, 1).await;
    let input = json!({"prompt": PROMPT, "size": "custom", "width": 2048, "height": 1536,
                       "max_images": 3, "sequential_image_generation": "auto"});
    let answer = prediction(&server, "s1", "succeeded", json!(urls));
    expect_create(&server, "bytedance/seedream-4.5", input, answer).await;
    let response = gateway(&server)
        .generate(request(
            "seedream-4-5",
            json!({"n": 3, "size": "2048x1536"}),
        ))
        .await
        .unwrap();
    assert_eq!(response.data.len(), 3);
    // In order: output 0, 1, 2 have distinct shades.
    let first: Vec<_> = response
        .data
        .iter()
        .map(|d| d.b64_json.clone().unwrap())
        .collect();
    assert_ne!(first[0], first[1]);
}

#[tokio::test]
async fn svg_output_passes_through_as_image_svg_xml() {
    let server = MockServer::start().await;
    let svg =
        r#"<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"/>"#;
    serve_file_once(&server, "/files/out.svg", svg, "image/svg+xml").await;
    let url = format!("{}/files/out.svg", server.uri());
    let input = json!({"prompt": PROMPT, "size": "1024x1024", "style": "vector_illustration"});
    let answer = prediction(&server, "v1", "succeeded", json!(url));
    expect_create(&server, "recraft-ai/recraft-v3-svg", input, answer).await;

    // Called directly, to see the MIME type the gateway stores.
    let gateway = gateway(&server);
    let validated = gateway
        .validate(request(
            "svg",
            json!({"size": "1024x1024", "style": "vector_illustration"}),
        ))
        .unwrap();
    let provider = provider(&server);
    let generation = provider.generate(one_image(&validated)).await.unwrap();
    assert_eq!(generation.images[0].mime, "image/svg+xml");
    assert_eq!(&generation.images[0].bytes[..], svg.as_bytes());
}

/// Mounts the create of a default `flux-1.1-pro` request, answering the prediction `answer`.
async fn expect_flux_create(server: &MockServer, answer: Value) {
    let input = json!({"prompt": PROMPT, "output_format": "png"});
    expect_create(server, FLUX, input, answer).await;
}

/// Mounts a create of flux answering `answer` whatever it carries.
async fn flux_create_answers(server: &MockServer, answer: ResponseTemplate) {
    mount_once(
        server,
        Mock::given(method("POST")).and(path(create_path(FLUX))),
        answer,
    )
    .await;
}

#[tokio::test]
async fn nsfw_failed_prediction_is_moderation_blocked() {
    let server = MockServer::start().await;
    let mut failed = prediction(&server, "p1", "failed", Value::Null);
    failed["error"] = json!("NSFW content detected");
    expect_flux_create(&server, failed).await;
    let error = generate_flux(&server).await.unwrap_err();
    assert_error(&error, 400, "moderation_blocked");
    assert!(
        error.to_string().contains("NSFW content detected"),
        "{error}"
    );
}

#[tokio::test]
async fn aborted_prediction_is_502() {
    let server = MockServer::start().await;
    create_starting(&server).await;
    let aborted = prediction(&server, "p1", "aborted", Value::Null);
    common::mount_polls(&server, "p1", &[], aborted).await;
    common::mount_cancel(&server, "p1", 0).await;
    let error = generate_flux(&server).await.unwrap_err();
    assert_eq!(error.status(), 502, "{error:?}");
    assert!(error.to_string().contains("aborted"), "{error}");
}

#[tokio::test]
async fn problem_details_422_is_a_400_with_the_detail() {
    let server = MockServer::start().await;
    let problem = json!({
        "title": "Input validation failed",
        "status": 422,
        "detail": "- input.width: Must be less than or equal to 1440"
    });
    flux_create_answers(&server, ResponseTemplate::new(422).set_body_json(problem)).await;
    let error = generate_flux(&server).await.unwrap_err();
    assert_eq!(error.status(), 400);
    assert!(error.to_string().contains("input.width"), "{error}");
}

#[tokio::test]
async fn rejected_token_is_502_without_upstream_text() {
    let server = MockServer::start().await;
    let problem = json!({
        "title": "Unauthenticated", "status": 401, "detail": "token r8_test_token is invalid"
    });
    flux_create_answers(&server, ResponseTemplate::new(401).set_body_json(problem)).await;
    let error = generate_flux(&server).await.unwrap_err();
    assert_eq!(error.status(), 502);
    assert!(!format!("{error:?}").contains("r8_test_token"), "{error:?}");
}

#[tokio::test]
async fn inline_data_url_output_is_decoded() {
    let server = MockServer::start().await;
    let bytes = imgproxy_testkit::png(4, 4, [1, 2, 3]);
    let output = format!(
        "data:application/octet-stream;base64,{}",
        imgproxy_testkit::b64(&bytes)
    );
    expect_flux_create(
        &server,
        prediction(&server, "p1", "succeeded", json!(output)),
    )
    .await;
    let response = generate_flux(&server).await.unwrap();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(response.data[0].b64_json.as_ref().unwrap())
        .unwrap();
    assert_eq!(decoded, bytes);
}

#[tokio::test]
async fn versioned_community_model_runs_by_version() {
    let server = MockServer::start().await;
    let urls = mount_outputs(&server, 1, 1).await;
    Mock::given(method("POST"))
        .and(path("/v1/predictions"))
        .and(body_json(
            json!({"version": "abc123", "input": {"prompt": PROMPT}}),
        ))
        .respond_with(ResponseTemplate::new(201).set_body_json(prediction(
            &server,
            "c1",
            "succeeded",
            json!(urls[0]),
        )))
        .expect(1)
        .mount(&server)
        .await;
    let catalog = Catalog::from_toml(
        r#"
        [[models]]
        id = "community"
        provider = "replicate"
        upstream = "someone/model:abc123"
        [models.pricing]
        per_image = 1
        "#,
    )
    .unwrap();
    let gateway = Gateway::builder(catalog)
        .provider(Arc::new(provider(&server)))
        .build();
    let response = gateway
        .generate(ImageRequest::new("community", PROMPT))
        .await
        .unwrap();
    assert_eq!(response.data.len(), 1);
}

fn provider(server: &MockServer) -> ReplicateProvider {
    provider_at::<Replicate>(server, common::TOKEN)
}

/// Mounts a flux create answering `starting`, for the polling tests.
async fn create_starting(server: &MockServer) {
    expect_flux_create(server, prediction(server, "p1", "starting", Value::Null)).await;
}

#[tokio::test]
async fn a_poll_answering_503_is_polled_again() {
    let server = MockServer::start().await;
    create_starting(&server).await;
    let urls = mount_outputs(&server, 1, 1).await;
    let poll = Mock::given(method("GET")).and(path("/v1/predictions/p1"));
    answer_first_only(&server, poll, ResponseTemplate::new(503)).await;
    common::mount_polls(
        &server,
        "p1",
        &[],
        prediction(&server, "p1", "succeeded", json!(urls[0])),
    )
    .await;
    common::mount_cancel(&server, "p1", 0).await;
    let response = generate_flux(&server).await.unwrap();
    assert_eq!(response.data.len(), 1);
}

#[tokio::test]
async fn a_malformed_poll_is_502_and_cancels_the_prediction() {
    let server = MockServer::start().await;
    create_starting(&server).await;
    Mock::given(method("GET"))
        .and(path("/v1/predictions/p1"))
        .respond_with(ResponseTemplate::new(200).set_body_string("<html>oops</html>"))
        .expect(1)
        .mount(&server)
        .await;
    common::mount_cancel(&server, "p1", 1).await;
    let error = generate_flux(&server).await.unwrap_err();
    assert_eq!(error.status(), 502, "{error:?}");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_started_prediction_is_reported_and_can_be_resumed_by_another_process() {
    // First process: the create answers "processing" and the first poll fails the process
    // (we stop after reporting the job). A second provider resumes from the token alone.
    let server = MockServer::start().await;
    let urls = mount_outputs(&server, 1, 1).await;
    let running = prediction(&server, "p-res", "processing", Value::Null);
    Mock::given(method("POST"))
        .and(path(create_path(FLUX)))
        .respond_with(ResponseTemplate::new(201).set_body_json(&running))
        .expect(1)
        .mount(&server)
        .await;
    let gateway = gateway(&server);
    let validated = gateway
        .validate(request("flux-1.1-pro", json!({})))
        .unwrap();
    let (jobs, mut started) = tokio::sync::mpsc::unbounded_channel();
    let first = provider(&server);
    let call = ProviderRequest {
        jobs: Some(&jobs),
        ..one_image(&validated)
    };
    // The process "dies" as soon as the job is reported: the generation future is dropped.
    let reported = tokio::select! {
        biased;
        job = started.recv() => job.unwrap(),
        _ = first.generate(call) => panic!("the prediction was still running"),
    };
    assert_eq!(reported.0, 0);
    let token: Value = serde_json::from_str(&reported.1).unwrap();
    assert!(token["get"]
        .as_str()
        .unwrap()
        .ends_with("/v1/predictions/p-res"));
    // Dropping the running call cancelled it upstream; the resume does not need it alive.
    drop(first);

    let succeeded = prediction(&server, "p-res", "succeeded", json!(urls));
    common::mount_polls(&server, "p-res", std::slice::from_ref(&running), succeeded).await;
    let second = provider(&server);
    let call = one_image(&validated);
    let generation = second.resume(call, &reported.1).await.unwrap();
    assert_eq!(generation.images.len(), 1);
    assert!(generation.images[0].bytes.starts_with(b"\x89PNG"));
    let creates = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.method.as_str() == "POST" && r.url.path().ends_with("/predictions"))
        .count();
    assert_eq!(creates, 1, "resuming never creates a second prediction");
    assert!(second.resume(call, "not a token").await.is_err());
}
