//! Model-specific wiremock tests of the BFL adapter: the exact submit body of each model's
//! input mapping, the Replicate-first ids served by BFL, the special statuses, and where the
//! key may and may not go (polling URLs, delivery hosts).

#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

use bytes::Bytes;
use imgproxy_core::{
    validate::validate, Catalog, Gateway, ImageProvider as _, ImageRequest, ImageResponse,
    ProviderRequest, ReferenceImage,
};
use imgproxy_provider_bfl::{Bfl, BflProvider, PROVIDER_ID};
use imgproxy_testkit::{
    answer_first_only, assert_error, b64, forbid, gateway_of, merged, mount_once, one_image, png,
    provider_at, reference_png,
};
use serde_json::{json, Value};
use wiremock::{
    matchers::{any, body_json, header, header_exists, method, path, query_param},
    Mock, MockServer, ResponseTemplate,
};

const KEY: &str = "bfl-test-key-0123456789";
const PROMPT: &str = "a lighthouse at dusk";

fn provider(server: &MockServer) -> BflProvider {
    provider_at::<Bfl>(server, KEY)
}

/// A gateway whose only provider is BFL, so that Replicate-first ids resolve to BFL.
fn gateway(server: &MockServer) -> Gateway {
    gateway_of(provider(server))
}

fn request(body: Value) -> ImageRequest {
    serde_json::from_value(body).unwrap()
}

/// Mounts a submit to `/v1/{upstream}` that must carry exactly `body`, answering task `id`
/// with `polling_url`.
async fn mount_submit(server: &MockServer, upstream: &str, body: Value, polling_url: &str) {
    Mock::given(method("POST"))
        .and(path(format!("/v1/{upstream}")))
        .and(header("x-key", KEY))
        .and(body_json(body))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"id": "task-7", "polling_url": polling_url})),
        )
        .expect(1)
        .named("submit")
        .mount(server)
        .await;
}

fn ready(sample: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "id": "task-7", "status": "Ready", "details": null,
        "result": {"sample": sample, "seed": 1, "duration": 3.2}
    }))
}

/// Mounts the standard poll (`/v1/get_result?id=task-7` with the key) answering `answer`.
async fn mount_poll(server: &MockServer, answer: ResponseTemplate) {
    Mock::given(method("GET"))
        .and(path("/v1/get_result"))
        .and(query_param("id", "task-7"))
        .and(header("x-key", KEY))
        .respond_with(answer)
        .expect(1)
        .named("poll")
        .mount(server)
        .await;
}

async fn mount_sample(server: &MockServer, sample_path: &str) {
    Mock::given(method("GET"))
        .and(path(sample_path))
        .respond_with(ResponseTemplate::new(200).set_body_bytes(png(8, 8, [1, 2, 3])))
        .expect(1)
        .named("sample")
        .mount(server)
        .await;
}

/// The submit body of [`flux_pro`]: the catalog's defaults.
fn default_body() -> Value {
    json!({"prompt": PROMPT, "width": 1024, "height": 768, "safety_tolerance": 2,
           "prompt_upsampling": false, "output_format": "jpeg"})
}

/// The gateway's answer to a default `flux-pro-1.1` request.
async fn flux_pro(server: &MockServer) -> imgproxy_core::Result<ImageResponse> {
    gateway(server)
        .generate(request(json!({"model": "flux-pro-1.1", "prompt": PROMPT})))
        .await
}

/// Mounts the submit of [`flux_pro`], answering with `polling_url`.
async fn mount_default_submit(server: &MockServer, polling_url: &str) {
    mount_submit(server, "flux-pro-1.1", default_body(), polling_url).await;
}

/// Mounts a whole successful exchange on one server for `upstream`, expecting `body`.
async fn mount_success(server: &MockServer, upstream: &str, body: Value) {
    let uri = server.uri();
    mount_submit(
        server,
        upstream,
        body,
        &format!("{uri}/v1/get_result?id=task-7"),
    )
    .await;
    mount_poll(server, ready(&format!("{uri}/results/sample.jpeg"))).await;
    mount_sample(server, "/results/sample.jpeg").await;
}

/// What the client sends → the exact submit body of the upstream model.
#[tokio::test]
async fn each_model_maps_its_parameters_exactly() {
    let cases = [
        (
            json!({"model": "flux-pro-1.1", "size": "1440x256", "seed": 42,
                   "safety_tolerance": 5, "prompt_upsampling": true, "output_format": "png"}),
            "flux-pro-1.1",
            json!({"width": 1440, "height": 256, "seed": 42, "safety_tolerance": 5,
                   "prompt_upsampling": true, "output_format": "png"}),
        ),
        // An aspect ratio becomes a size.
        (
            json!({"model": "flux-pro-1.1", "aspect_ratio": "16:9"}),
            "flux-pro-1.1",
            json!({"width": 1024, "height": 576, "safety_tolerance": 2,
                   "prompt_upsampling": false, "output_format": "jpeg"}),
        ),
        (
            json!({"model": "flux-pro-1.1-ultra", "aspect_ratio": "21:9", "raw": true}),
            "flux-pro-1.1-ultra",
            json!({"aspect_ratio": "21:9", "raw": true, "safety_tolerance": 2,
                   "prompt_upsampling": false, "output_format": "jpeg"}),
        ),
        // The Replicate-first `ultra` is served by BFL without Replicate; a client `size` is
        // reduced to its ratio, since Ultra takes only ratios.
        (
            json!({"model": "ultra", "size": "1536x1024", "raw": true}),
            "flux-pro-1.1-ultra",
            json!({"aspect_ratio": "3:2", "raw": true, "safety_tolerance": 2,
                   "prompt_upsampling": false, "output_format": "png"}),
        ),
    ];
    for (sent, upstream, body) in cases {
        let server = MockServer::start().await;
        mount_success(&server, upstream, merged(json!({"prompt": PROMPT}), body)).await;
        let response = gateway(&server)
            .generate(request(merged(json!({"prompt": PROMPT}), sent.clone())))
            .await
            .unwrap_or_else(|error| panic!("{sent}: {error}"));
        assert_eq!(response.data.len(), 1, "{sent}");
    }
}

#[tokio::test]
async fn replicate_first_ids_are_served_by_bfl_without_replicate() {
    let server = MockServer::start().await;
    let body = json!({"prompt": PROMPT, "width": 1024, "height": 1024, "seed": 3,
                      "safety_tolerance": 2, "prompt_upsampling": false, "output_format": "png"});
    mount_success(&server, "flux-pro-1.1", body).await;
    let gateway = gateway(&server);
    assert_eq!(
        gateway
            .catalog()
            .resolve("flux-1.1-pro", &|m| gateway.serves(m))
            .unwrap()
            .provider,
        PROVIDER_ID
    );
    gateway
        .generate(request(
            json!({"model": "flux-1.1-pro", "prompt": PROMPT, "seed": 3}),
        ))
        .await
        .unwrap();
}

#[tokio::test]
async fn kontext_reference_images_go_to_numbered_input_images() {
    let server = MockServer::start().await;
    let body = json!({"prompt": PROMPT, "aspect_ratio": "1:1", "seed": 8, "safety_tolerance": 2,
                      "prompt_upsampling": false, "output_format": "jpeg",
                      "input_image": b64(&reference_png(0)),
                      "input_image_2": b64(&reference_png(1))});
    mount_success(&server, "flux-kontext-pro", body).await;
    let catalog = Catalog::embedded().unwrap();
    let validated = validate(
        &catalog,
        request(json!({"model": "flux-kontext-pro", "prompt": PROMPT, "aspect_ratio": "1:1",
                       "seed": 7, "images": ["https://example.com/a.png", "https://example.com/b.png"]})),
        "placeholder",
        &|m| m.provider == PROVIDER_ID,
    )
    .unwrap();
    let references: Vec<ReferenceImage> = (0..2)
        .map(|i| ReferenceImage {
            bytes: Bytes::from(reference_png(i)),
            mime: "image/png".into(),
        })
        .collect();
    // The second fanned-out image of a request: its seed is offset by one.
    let generation = provider(&server)
        .generate(ProviderRequest {
            first_index: 1,
            references: &references,
            ..one_image(&validated)
        })
        .await
        .unwrap();
    assert_eq!(generation.images[0].mime, "image/png");
}

#[tokio::test]
async fn content_moderated_is_moderation_blocked_with_details() {
    let server = MockServer::start().await;
    let uri = server.uri();
    mount_default_submit(&server, &format!("{uri}/v1/get_result?id=task-7")).await;
    let answer = ResponseTemplate::new(200).set_body_json(json!({
        "id": "task-7", "status": "Content Moderated", "result": null,
        "details": {"Moderation Reasons": ["Output flagged"]}
    }));
    mount_poll(&server, answer).await;
    let error = flux_pro(&server).await.unwrap_err();
    assert_error(&error, 400, "moderation_blocked");
    assert!(error.to_string().contains("Output flagged"), "{error}");
}

/// Mounts on `server` a catch-all that fails the test if any request carries `x-key`.
async fn refuse_the_key(server: &MockServer) {
    forbid(server, Mock::given(any()).and(header_exists("x-key"))).await;
}

#[tokio::test]
async fn the_key_is_not_sent_to_the_delivery_host() {
    let api = MockServer::start().await;
    let delivery = MockServer::start().await;
    mount_default_submit(&api, &format!("{}/v1/get_result?id=task-7", api.uri())).await;
    mount_poll(
        &api,
        ready(&format!("{}/results/abc/sample.jpeg?sig=s", delivery.uri())),
    )
    .await;
    refuse_the_key(&delivery).await;
    mount_sample(&delivery, "/results/abc/sample.jpeg").await;
    flux_pro(&api).await.unwrap();
}

#[tokio::test]
async fn a_polling_url_on_a_foreign_host_is_polled_without_the_key() {
    let api = MockServer::start().await;
    let elsewhere = MockServer::start().await;
    let polling_url = format!("{}/v1/get_result?id=task-7", elsewhere.uri());
    mount_default_submit(&api, &polling_url).await;
    refuse_the_key(&elsewhere).await;
    let poll = Mock::given(method("GET"))
        .and(path("/v1/get_result"))
        .and(query_param("id", "task-7"));
    let sample = format!("{}/results/sample.jpeg", elsewhere.uri());
    mount_once(&elsewhere, poll, ready(&sample)).await;
    mount_sample(&elsewhere, "/results/sample.jpeg").await;
    flux_pro(&api).await.unwrap();
}

#[tokio::test]
async fn the_polling_url_is_followed_as_returned() {
    let server = MockServer::start().await;
    let uri = server.uri();
    // Another path, an extra query parameter and no `id`: kept as is, `id` appended.
    let polling_url = format!("{uri}/v2/tasks/status?region=eu-2");
    mount_default_submit(&server, &polling_url).await;
    let poll = Mock::given(method("GET"))
        .and(path("/v2/tasks/status"))
        .and(query_param("region", "eu-2"))
        .and(query_param("id", "task-7"))
        .and(header("x-key", KEY));
    mount_once(&server, poll, ready(&format!("{uri}/results/sample.jpeg"))).await;
    mount_sample(&server, "/results/sample.jpeg").await;
    flux_pro(&server).await.unwrap();
}

#[tokio::test]
async fn out_of_credits_and_validation_errors_are_mapped() {
    let cases = [
        (
            "flux-pro-1.1",
            ResponseTemplate::new(402).set_body_json(json!({"detail": "Insufficient credits"})),
            502,
            "BFL account is out of credits",
        ),
        (
            "flux-kontext-max",
            ResponseTemplate::new(422).set_body_json(json!({"detail": [
                {"loc": ["body", "prompt"], "msg": "prompt is too long", "type": "value_error"}
            ]})),
            400,
            "prompt: prompt is too long",
        ),
    ];
    for (model, answer, status, says) in cases {
        let server = MockServer::start().await;
        mount_once(
            &server,
            Mock::given(method("POST")).and(path(format!("/v1/{model}"))),
            answer,
        )
        .await;
        let error = gateway(&server)
            .generate(request(json!({"model": model, "prompt": PROMPT})))
            .await
            .unwrap_err();
        assert_eq!(error.status(), status, "{model}");
        assert!(error.to_string().contains(says), "{error}");
    }
}

#[tokio::test]
async fn a_transient_poll_error_is_polled_again() {
    let server = MockServer::start().await;
    let uri = server.uri();
    mount_default_submit(&server, &format!("{uri}/v1/get_result?id=task-7")).await;
    // The task is paid for: a 503 on a poll is not the task's failure.
    let poll = Mock::given(method("GET")).and(path("/v1/get_result"));
    answer_first_only(&server, poll, ResponseTemplate::new(503)).await;
    mount_poll(&server, ready(&format!("{uri}/results/sample.jpeg"))).await;
    mount_sample(&server, "/results/sample.jpeg").await;
    flux_pro(&server).await.unwrap();
}
