//! The fal adapter's model mappings and special statuses, driven through the gateway as
//! clients drive it, against fakes that assert the exact submit bodies.

#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::collections::BTreeMap;

use base64::{engine::general_purpose::STANDARD, Engine as _};
use common::{cancel, cdn_file, images_output, job_urls, result, status, submit, AUTH, KEY};
use imgproxy_core::{
    ImageInput, ImageProvider as _, ImageRequest, ImageResponse, ProviderError, ResponseFormat,
    ValidatedRequest,
};
use imgproxy_testkit::{assert_error, data_url, mount_once, one_image, png, reference_png};
use serde_json::{json, Value};
use wiremock::{
    matchers::{method, path},
    Mock, MockServer, ResponseTemplate,
};

const PROMPT: &str = "a lighthouse at dusk";
const Z_IMAGE: &str = "fal-ai/z-image/turbo";

fn z_image(extra: Value) -> ImageRequest {
    let mut body = json!({"model": "z-image", "prompt": PROMPT});
    if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
        body.extend(extra);
    }
    serde_json::from_value(body).unwrap()
}

async fn generate(
    server: &MockServer,
    request: ImageRequest,
) -> imgproxy_core::Result<ImageResponse> {
    common::gateway(server, 10).generate(request).await
}

fn decoded(response: &ImageResponse, index: usize) -> Vec<u8> {
    STANDARD
        .decode(response.data[index].b64_json.as_ref().unwrap())
        .unwrap()
}

/// The z-image input of a request for `n` images with the defaults.
fn default_input(n: u32) -> Value {
    json!({"prompt": PROMPT, "image_size": "square_hd", "num_images": n, "output_format": "png"})
}

/// Mounts the submit of job `id` to `upstream` (carrying exactly `input`) and one status
/// answering `COMPLETED`.
async fn submit_completed(server: &MockServer, upstream: &str, input: Value, id: &str) {
    submit(server, upstream, input, id).await;
    status(server, id, "COMPLETED", 1).await;
}

/// A request to the image-to-image `model` with the one `reference`.
fn image_to_image(model: &str, reference: &[u8]) -> ImageRequest {
    ImageRequest {
        model: Some(model.into()),
        images: Some(vec![ImageInput::Text(data_url(reference))]),
        ..ImageRequest::default()
    }
}

/// Mounts a whole z-image job whose submit must carry exactly `input`, answering `n` PNGs.
async fn z_image_job(server: &MockServer, id: &str, input: Value, n: usize) {
    submit_completed(server, Z_IMAGE, input, id).await;
    let mut urls = Vec::new();
    for i in 0..n {
        let name = format!("{id}-{i}.png");
        urls.push(cdn_file(server, &name, png(4, 4, [9, 9, 9]), "image/png", 1).await);
    }
    result(server, id, 200, images_output(&urls, &vec![false; n]), 1).await;
    cancel(server, id, 0).await;
}

#[tokio::test]
async fn z_image_preset_size_n_seed_and_extras_map_exactly() {
    let server = MockServer::start().await;
    let input = json!({"prompt": PROMPT, "image_size": "landscape_16_9", "num_images": 3,
                       "seed": 42, "output_format": "jpeg", "num_inference_steps": 4,
                       "enable_safety_checker": false});
    z_image_job(&server, "job-preset", input, 3).await;
    let request = z_image(
        json!({"size": "1024x576", "n": 3, "seed": 42, "output_format": "jpeg",
                                 "num_inference_steps": 4, "enable_safety_checker": false}),
    );
    let response = generate(&server, request).await.unwrap();
    assert_eq!(response.data.len(), 3);
    // The fake answered PNG to a JPEG request: the gateway converts, and reports what it
    // returns (format and pixel size read from the image, not what fal claimed).
    assert!(decoded(&response, 2).starts_with(&[0xFF, 0xD8, 0xFF]));
    assert_eq!(response.meta.output_format.as_deref(), Some("jpeg"));
    assert_eq!(
        response.meta.size.as_deref(),
        Some("4x4"),
        "the size of the image returned"
    );
}

#[tokio::test]
async fn z_image_custom_size_goes_as_width_and_height() {
    let server = MockServer::start().await;
    let input = json!({"prompt": PROMPT, "image_size": {"width": 1000, "height": 600},
                       "num_images": 1, "output_format": "png"});
    z_image_job(&server, "job-custom", input, 1).await;
    let response = generate(&server, z_image(json!({"size": "1000x600"})))
        .await
        .unwrap();
    assert_eq!(response.data.len(), 1);
}

#[tokio::test]
async fn z_image_aspect_ratio_picks_the_preset_of_that_ratio_or_a_custom_size() {
    let server = MockServer::start().await;
    let portrait = json!({"prompt": PROMPT, "image_size": "portrait_16_9", "num_images": 1,
                          "output_format": "png"});
    z_image_job(&server, "job-portrait", portrait, 1).await;
    generate(&server, z_image(json!({"aspect_ratio": "9:16"})))
        .await
        .unwrap();

    let server = MockServer::start().await;
    let large = json!({"prompt": PROMPT, "image_size": {"width": 2048, "height": 1152},
                       "num_images": 1, "output_format": "png"});
    z_image_job(&server, "job-2k", large, 1).await;
    generate(
        &server,
        z_image(json!({"aspect_ratio": "16:9", "image_size": "2K"})),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn z_image_sizes_beyond_four_megapixels_never_reach_the_upstream() {
    let server = MockServer::start().await;
    let error = generate(&server, z_image(json!({"size": "2560x2560"})))
        .await
        .unwrap_err();
    assert_eq!((error.status(), error.param()), (400, Some("size")));
    assert!(server.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn birefnet_sends_one_image_as_a_data_url_and_no_prompt() {
    let server = MockServer::start().await;
    let reference = reference_png(3);
    let input = json!({"image_url": data_url(&reference), "output_format": "png"});
    submit_completed(&server, "fal-ai/birefnet", input, "job-cut").await;
    let cutout = png(8, 8, [0, 0, 0]);
    let url = cdn_file(&server, "cut.png", cutout.clone(), "image/png", 1).await;
    let output = json!({"image": {"url": url, "content_type": "image/png", "width": 8,
                                  "height": 8, "file_name": null, "file_size": null}});
    result(&server, "job-cut", 200, output, 1).await;

    let request = image_to_image("birefnet-bg-removal", &reference);
    let response = generate(&server, request).await.unwrap();
    assert_eq!(decoded(&response, 0), cutout);
    assert_eq!(response.meta.background.as_deref(), Some("transparent"));
    assert_eq!(response.meta.output_format.as_deref(), Some("png"));
}

#[tokio::test]
async fn birefnet_without_an_image_is_a_clear_400() {
    let server = MockServer::start().await;
    let request = ImageRequest {
        model: Some("birefnet-bg-removal".into()),
        ..ImageRequest::default()
    };
    let error = generate(&server, request).await.unwrap_err();
    assert_eq!(
        (error.status(), error.param()),
        (400, Some("image")),
        "{error}"
    );
    assert!(server.received_requests().await.unwrap().is_empty());

    // Called directly, past core validation, the provider refuses it itself.
    let catalog = common::catalog(10);
    let validated = ValidatedRequest {
        model: catalog.get("birefnet-bg-removal").unwrap().clone(),
        prompt: String::new(),
        n: 1,
        response_format: ResponseFormat::B64Json,
        params: BTreeMap::new(),
        reference_images: Vec::new(),
        mask: None,
        output: Default::default(),
        stream: false,
        partial_images: None,
        fallbacks: Vec::new(),
        skipped: Vec::new(),
    };
    let call = one_image(&validated);
    let error = common::provider(&server).generate(call).await.unwrap_err();
    assert!(
        matches!(&error, ProviderError::InvalidRequest { param: Some(p), .. } if p == "image"),
        "{error:?}"
    );
    assert!(server.received_requests().await.unwrap().is_empty());
}

/// Runs a vectorize job of reference image `index` whose result is `image`.
async fn vectorize(server: &MockServer, index: usize, id: &str, image: Value) -> ImageResponse {
    let reference = reference_png(index);
    let input = json!({"image_url": data_url(&reference)});
    submit_completed(server, "fal-ai/recraft/vectorize", input, id).await;
    result(server, id, 200, json!({ "image": image }), 1).await;
    generate(server, image_to_image("vectorize", &reference))
        .await
        .unwrap()
}

#[tokio::test]
async fn vectorize_passes_the_svg_through() {
    let server = MockServer::start().await;
    let svg = br#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 8 8"><rect width="8" height="8"/></svg>"#;
    let url = cdn_file(&server, "out.svg", svg.to_vec(), "image/svg+xml", 1).await;
    let image = json!({"url": url, "content_type": "image/svg+xml"});
    let response = vectorize(&server, 1, "job-svg", image).await;
    assert_eq!(decoded(&response, 0), svg.to_vec());
    assert_eq!(response.meta.output_format.as_deref(), Some("svg"));
}

#[tokio::test]
async fn job_urls_are_followed_as_returned_never_rebuilt() {
    let server = MockServer::start().await;
    z_image_job(&server, "job-urls", default_input(1), 1).await;
    // Where a client rebuilding fal's documented layout would go (the subpath dropped).
    for rebuilt in [
        "/fal-ai/z-image/requests/job-urls/status",
        "/fal-ai/z-image/requests/job-urls",
    ] {
        Mock::given(path(rebuilt))
            .respond_with(ResponseTemplate::new(500))
            .expect(0)
            .mount(&server)
            .await;
    }
    generate(&server, z_image(json!({}))).await.unwrap();
    let urls = job_urls(&server, "job-urls");
    assert!(urls.status.contains("/jobs/job-urls/state"));
}

#[tokio::test]
async fn job_urls_on_another_host_are_refused_without_sending_the_key() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!("/{Z_IMAGE}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "request_id": "x",
            "status_url": "http://127.0.0.1:9/fal-ai/z-image/requests/x/status",
            "response_url": "http://127.0.0.1:9/fal-ai/z-image/requests/x",
        })))
        .expect(1)
        .mount(&server)
        .await;
    let error = generate(&server, z_image(json!({}))).await.unwrap_err();
    assert_eq!(error.status(), 502, "{error}");
}

#[tokio::test]
async fn a_result_still_in_progress_keeps_polling() {
    let server = MockServer::start().await;
    let id = "job-lag";
    submit(&server, Z_IMAGE, default_input(1), id).await;
    status(&server, id, "COMPLETED", 2).await;
    result(
        &server,
        id,
        400,
        json!({"detail": "Request is still in progress"}),
        1,
    )
    .await;
    let url = cdn_file(&server, "lag.png", png(4, 4, [1, 1, 1]), "image/png", 1).await;
    result(&server, id, 200, images_output(&[url], &[false]), 1).await;
    cancel(&server, id, 0).await;
    generate(&server, z_image(json!({}))).await.unwrap();
}

#[tokio::test]
async fn a_partly_flagged_batch_keeps_the_clean_images() {
    let server = MockServer::start().await;
    let id = "job-mixed";
    submit_completed(&server, Z_IMAGE, default_input(2), id).await;
    let flagged = cdn_file(&server, "black.png", png(4, 4, [0, 0, 0]), "image/png", 0).await;
    let clean = cdn_file(&server, "clean.png", png(4, 4, [7, 7, 7]), "image/png", 1).await;
    result(
        &server,
        id,
        200,
        images_output(&[flagged, clean], &[true, false]),
        1,
    )
    .await;
    let response = generate(&server, z_image(json!({"n": 2}))).await.unwrap();
    assert_eq!(response.data.len(), 1);
    assert_eq!(decoded(&response, 0), png(4, 4, [7, 7, 7]));
}

#[tokio::test]
async fn data_uri_outputs_are_decoded() {
    let server = MockServer::start().await;
    let id = "job-inline";
    submit_completed(&server, Z_IMAGE, default_input(1), id).await;
    let image = png(4, 4, [3, 2, 1]);
    let output = json!({"images": [{"url": data_url(&image), "content_type": "image/png"}],
                        "nsfw_content_detected": [false]});
    result(&server, id, 200, output, 1).await;
    let response = generate(&server, z_image(json!({}))).await.unwrap();
    assert_eq!(decoded(&response, 0), image);
}

/// The gateway's error for a default z-image request whose submit answers `code` with
/// `body` and `headers`.
async fn submit_failure(code: u16, body: Value, headers: &[(&str, &str)]) -> imgproxy_core::Error {
    let server = MockServer::start().await;
    let mut response = ResponseTemplate::new(code).set_body_json(body);
    for (name, value) in headers {
        response = response.insert_header(*name, *value);
    }
    mount_once(
        &server,
        Mock::given(method("POST")).and(path(format!("/{Z_IMAGE}"))),
        response,
    )
    .await;
    generate(&server, z_image(json!({}))).await.unwrap_err()
}

#[tokio::test]
async fn validation_errors_are_400_naming_our_parameter() {
    let detail = json!({"detail": [{"loc": ["body", "image_size"], "msg": "too many pixels",
                                    "type": "value_error", "input": "AAAA"}]});
    let error = submit_failure(422, detail, &[]).await;
    assert_eq!((error.status(), error.param()), (400, Some("size")));
    assert!(
        error.to_string().contains("image_size: too many pixels"),
        "{error}"
    );

    let error = submit_failure(422, json!({"detail": "Unsupported image"}), &[]).await;
    assert_eq!(error.status(), 400);
    assert!(error.to_string().contains("Unsupported image"), "{error}");
}

/// A job that completed but whose result is an error: a content-policy refusal is a
/// moderation block, anything else a 502. The job is over, so nothing is cancelled.
#[tokio::test]
async fn a_failed_result_after_completion_is_mapped_and_not_cancelled() {
    let refusal = json!({"detail": [{"loc": ["body", "prompt"], "type": "content_policy_violation",
                                     "msg": "The content could not be processed"}]});
    let cases = [
        (
            "job-policy",
            422,
            refusal,
            (400, Some("moderation_blocked")),
        ),
        (
            "job-crash",
            500,
            json!({"detail": "runner out of memory"}),
            (502, Some("upstream_error")),
        ),
    ];
    for (id, code, answer, expected) in cases {
        let server = MockServer::start().await;
        submit_completed(&server, Z_IMAGE, default_input(1), id).await;
        result(&server, id, code, answer, 1).await;
        cancel(&server, id, 0).await;
        let error = generate(&server, z_image(json!({}))).await.unwrap_err();
        assert_eq!((error.status(), error.code()), expected, "{id}");
    }
}

#[tokio::test]
async fn a_user_timeout_504_is_a_timeout() {
    let headers = [("x-fal-request-timeout-type", "user")];
    let error = submit_failure(504, json!({"detail": "Request timed out"}), &headers).await;
    assert_error(&error, 504, "upstream_timeout");
}

#[tokio::test]
async fn the_key_never_reaches_a_client() {
    let error = submit_failure(401, json!({"detail": format!("bad key {KEY}")}), &[]).await;
    assert_eq!(error.status(), 502);
    assert!(!error.to_string().contains(KEY));

    let error = submit_failure(400, json!({"message": format!("{AUTH} is odd")}), &[]).await;
    assert_eq!(error.status(), 400);
    assert!(!error.to_string().contains(KEY), "{error}");
}

#[tokio::test]
async fn a_percent_encoded_svg_data_uri_is_passed_through() {
    let server = MockServer::start().await;
    let inline = "data:image/svg+xml;utf8,%3Csvg%20xmlns%3D%22http://www.w3.org/2000/svg%22/%3E";
    let image = json!({"url": inline, "content_type": "image/svg+xml"});
    let response = vectorize(&server, 2, "job-svg-inline", image).await;
    assert_eq!(
        decoded(&response, 0),
        br#"<svg xmlns="http://www.w3.org/2000/svg"/>"#.to_vec()
    );
}
