//! Azure-specific behaviour against a fake Azure OpenAI resource: the v1 API chosen by
//! `api-version = "v1"` (no dated version, the deployment as `model`), a model deployed under
//! its own id, every documented content-filter answer a moderation block, a mask edit's
//! multipart parts, streamed partial images and a filtered stream, Azure's retry hint in
//! milliseconds, a missing deployment, a timeout, and what the catalog refuses before any
//! call (providers-2.md §10).

use imgproxy_testkit::form;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use base64::{engine::general_purpose::STANDARD, Engine as _};
use form::{exact_form, FormPart};
use imgproxy_core::{
    provider::{sniff_mime, PartialImage},
    validate, Catalog, Gateway, ImageProvider, ProviderError, ProviderRequest, ValidatedRequest,
};
use imgproxy_provider_azure::{AzureConfig, AzureProvider, DEFAULT_API_VERSION, V1_API};
use imgproxy_testkit::{
    assert_error, assert_refused_before_any_call, b64, data_url, gateway_of, merged, mount_once,
    one_attempt, one_image, output_png, png, refusal, request_of, WithoutHeader,
};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use wiremock::{
    matchers::{body_json, body_partial_json, header, method, path, query_param},
    Mock, MockBuilder, MockServer, ResponseTemplate,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const KEY: &str = "azure-extra-key-fedcba9876543210";

/// The provider at `server` with `api_version` and `deployments` (upstream id → name).
fn provider(
    server: &MockServer,
    api_version: &str,
    deployments: &[(&str, &str)],
) -> Result<AzureProvider, ProviderError> {
    let mut config = AzureConfig::new(KEY, &server.uri());
    config.api_version = Some(api_version.to_owned());
    config.deployments = deployments
        .iter()
        .map(|(model, name)| ((*model).to_owned(), (*name).to_owned()))
        .collect::<BTreeMap<_, _>>();
    AzureProvider::new(config)
}

/// A gateway whose one provider is Azure at `server`, deployment form, every model under its
/// own id.
fn gateway(server: &MockServer) -> Result<Gateway, ProviderError> {
    Ok(gateway_of(provider(server, DEFAULT_API_VERSION, &[])?))
}

/// A POST to `at` keyed in `api-key`, never as a bearer.
fn keyed_post(at: &str) -> MockBuilder {
    Mock::given(method("POST"))
        .and(path(at))
        .and(header("api-key", KEY))
        .and(WithoutHeader("authorization"))
}

/// A keyed POST to `operation` of `deployment` at the default `api-version`.
fn deployment_call(deployment: &str, operation: &str) -> MockBuilder {
    keyed_post(&format!(
        "/openai/deployments/{deployment}/images/{operation}"
    ))
    .and(query_param("api-version", DEFAULT_API_VERSION))
}

/// A 200 carrying `n` images.
fn images(n: usize) -> ResponseTemplate {
    let data: Vec<Value> = (0..n)
        .map(|i| json!({"b64_json": b64(&output_png(i))}))
        .collect();
    ResponseTemplate::new(200).set_body_json(json!({"created": 1, "data": data}))
}

/// `body` validated for the Azure variant of its model.
fn validated(body: Value) -> Result<ValidatedRequest, Box<dyn std::error::Error>> {
    let azure = |model: &imgproxy_core::ModelSpec| model.provider == "azure";
    Ok(validate::validate(
        &Catalog::embedded()?,
        request_of(body),
        "gpt-image-2",
        &azure,
    )?)
}

#[tokio::test]
async fn the_v1_api_names_the_deployment_in_the_body_and_sends_no_dated_version() -> TestResult {
    let server = MockServer::start().await;
    let upstream = json!({"model": "cheap-images", "prompt": "a lighthouse", "n": 2,
        "quality": "low", "size": "1536x1024", "background": "transparent",
        "output_format": "png", "user": "u-1"});
    let exact = keyed_post("/openai/v1/images/generations").and(body_json(upstream));
    mount_once(&server, exact, images(2)).await;
    let gateway = gateway_of(provider(
        &server,
        V1_API,
        &[("gpt-image-1.5", "cheap-images")],
    )?);
    let response = gateway
        .generate(request_of(
            json!({"model": "gpt-image-1.5", "prompt": "a lighthouse",
            "n": 2, "quality": "low", "size": "1536x1024", "background": "transparent",
            "user": "u-1"}),
        ))
        .await?;
    assert_eq!(response.data.len(), 2);
    let received = server.received_requests().await.unwrap_or_default();
    assert_eq!(
        received[0].url.query(),
        None,
        "the v1 API takes no api-version"
    );
    Ok(())
}

#[tokio::test]
async fn a_model_without_a_mapping_goes_to_the_deployment_of_its_id() -> TestResult {
    let server = MockServer::start().await;
    let upstream = json!({"model": "gpt-image-1-mini", "prompt": "p", "n": 1,
        "output_format": "jpeg", "output_compression": 80});
    let exact = deployment_call("gpt-image-1-mini", "generations").and(body_json(upstream));
    mount_once(&server, exact, images(1)).await;
    let request = json!({"model": "gpt-image-1-mini", "prompt": "p", "output_format": "jpeg",
        "output_compression": 80});
    gateway(&server)?.generate(request_of(request)).await?;
    Ok(())
}

#[tokio::test]
async fn every_documented_content_filter_answer_is_moderation_blocked() -> TestResult {
    let answers = [
        // A logged real refusal (LiteLLM issue #16072), with the prompt Azure rewrote.
        ResponseTemplate::new(400).set_body_json(json!({"error": {
            "code": "content_policy_violation", "type": "invalid_request_error",
            "message": "Your request was rejected as a result of our safety system.",
            "inner_error": {"code": "ResponsibleAIPolicyViolation",
                "content_filter_results": {"jailbreak": {"detected": false, "filtered": false}},
                "revised_prompt": "a fox, rewritten"}}})),
        // The shape the image how-to documents, whose status it does not say: as a 200 and
        // as a 400, for the prompt and for the image made.
        ResponseTemplate::new(200).set_body_json(json!({"created": 1698435368, "error": {
            "code": "contentFilter",
            "message": "Your task failed as a result of our safety system."}})),
        ResponseTemplate::new(400).set_body_json(json!({"created": 1698435368, "error": {
            "code": "contentFilter",
            "message": "Generated image was filtered as a result of our safety system."}})),
    ];
    for answer in answers {
        let server = MockServer::start().await;
        mount_once(
            &server,
            deployment_call("gpt-image-2", "generations"),
            answer,
        )
        .await;
        let error = refusal(
            &gateway(&server)?,
            request_of(json!({"model": "gpt-image-2", "prompt": "a fox"})),
        )
        .await;
        assert_error(&error, 400, "moderation_blocked");
        assert!(error.to_string().contains("safety system"), "{error}");
    }
    let server = MockServer::start().await;
    let rewritten = ResponseTemplate::new(400).set_body_json(json!({"error": {
        "code": "content_policy_violation", "message": "Rejected.",
        "inner_error": {"code": "ResponsibleAIPolicyViolation", "revised_prompt": "a calm fox"}}}));
    mount_once(
        &server,
        deployment_call("gpt-image-2", "generations"),
        rewritten,
    )
    .await;
    let error = refusal(
        &gateway(&server)?,
        request_of(json!({"model": "gpt-image-2", "prompt": "a fox"})),
    )
    .await;
    assert!(
        error.to_string().contains("revised prompt: a calm fox"),
        "{error}"
    );
    Ok(())
}

#[tokio::test]
async fn a_mask_edit_sends_the_image_then_the_mask_as_openai_does() -> TestResult {
    let server = MockServer::start().await;
    let image = png(8, 8, [10, 20, 30]);
    let mask = png(8, 8, [0, 0, 0]);
    let text = [
        ("model", "gpt-image-2"),
        ("prompt", "add a hat"),
        ("n", "1"),
        ("output_format", "png"),
    ];
    let files = vec![
        FormPart::file("image[]", "image-0.png", "image/png", &image),
        FormPart::file("mask", "mask.png", "image/png", &mask),
    ];
    let exact = deployment_call("gpt-image-2", "edits").and(exact_form(&text, files));
    mount_once(&server, exact, images(1)).await;
    let request = json!({"model": "gpt-image-2", "prompt": "add a hat",
        "image": data_url(&image), "mask": data_url(&mask)});
    let response = gateway(&server)?.generate(request_of(request)).await?;
    assert_eq!(response.data.len(), 1);
    Ok(())
}

/// An event of an image stream.
fn event(data: &Value) -> String {
    format!(
        "event: {}\ndata: {data}\n\n",
        data["type"].as_str().unwrap_or("")
    )
}

#[tokio::test]
async fn streamed_partials_are_relayed_and_a_filtered_stream_is_a_moderation_block() -> TestResult {
    let partial = json!({"type": "image_generation.partial_image", "partial_image_index": 0,
        "b64_json": b64(&output_png(1))});
    let completed = json!({"type": "image_generation.completed", "b64_json": b64(&output_png(2)),
        "output_format": "png"});
    let filtered = json!({"type": "error", "error": {"code": "content_filter",
        "message": "Generated image was filtered as a result of our safety system."}});
    let request = validated(
        json!({"model": "gpt-image-2", "prompt": "p", "stream": true,
        "partial_images": 1}),
    )?;
    for (events, moderated) in [
        (vec![&partial, &completed], false),
        (vec![&partial, &filtered], true),
    ] {
        let server = MockServer::start().await;
        let body: String = events.into_iter().map(event).collect();
        let exact = deployment_call("images-prod", "generations").and(body_partial_json(
            json!({"model": "images-prod", "stream": true, "partial_images": 1}),
        ));
        let stream = ResponseTemplate::new(200)
            .insert_header("content-type", "text/event-stream")
            .set_body_string(body);
        mount_once(&server, exact, stream).await;
        let (sender, mut receiver) = mpsc::unbounded_channel::<PartialImage>();
        let call = ProviderRequest {
            partials: Some(&sender),
            ..one_image(&request)
        };
        let provider = provider(
            &server,
            DEFAULT_API_VERSION,
            &[("gpt-image-2", "images-prod")],
        )?;
        let outcome = provider.generate(call).await;
        assert_eq!(receiver.try_recv()?.b64_json, b64(&output_png(1)));
        if moderated {
            assert!(
                matches!(outcome, Err(ProviderError::ModerationBlocked { .. })),
                "{outcome:?}"
            );
        } else {
            assert_eq!(outcome?.images[0].bytes, output_png(2));
        }
    }
    Ok(())
}

#[tokio::test]
async fn azure_retry_hint_in_milliseconds_wins() -> TestResult {
    let server = MockServer::start().await;
    let limited = ResponseTemplate::new(429)
        .insert_header("retry-after", "2")
        .insert_header("retry-after-ms", "1500")
        .set_body_json(
            json!({"error": {"code": "429", "message": "Please retry after 2 seconds."}}),
        );
    mount_once(
        &server,
        deployment_call("gpt-image-2", "generations"),
        limited,
    )
    .await;
    // One attempt: a wait this short, the gateway would otherwise take and try again.
    let gateway = Gateway::builder(Catalog::embedded()?)
        .provider(Arc::new(provider(&server, DEFAULT_API_VERSION, &[])?))
        .failover(one_attempt())
        .build();
    let error = refusal(
        &gateway,
        request_of(json!({"model": "gpt-image-2", "prompt": "p"})),
    )
    .await;
    assert_eq!(
        (error.status(), error.retry_after()),
        (429, Some(Duration::from_millis(1500)))
    );
    Ok(())
}

#[tokio::test]
async fn a_missing_deployment_is_a_502_naming_it() -> TestResult {
    let server = MockServer::start().await;
    let missing = ResponseTemplate::new(404).set_body_json(json!({"error": {
        "code": "DeploymentNotFound",
        "message": "The API deployment for this resource does not exist."}}));
    mount_once(
        &server,
        deployment_call("gpt-image-2", "generations"),
        missing,
    )
    .await;
    let error = refusal(
        &gateway(&server)?,
        request_of(json!({"model": "gpt-image-2", "prompt": "p"})),
    )
    .await;
    assert_eq!(error.status(), 502);
    assert!(
        error.to_string().contains("no deployment `gpt-image-2`"),
        "{error}"
    );
    Ok(())
}

#[tokio::test]
async fn a_slow_upstream_is_504() -> TestResult {
    let server = MockServer::start().await;
    let slow = images(1).set_delay(Duration::from_secs(3));
    mount_once(&server, deployment_call("gpt-image-2", "generations"), slow).await;
    let mut config = AzureConfig::new(KEY, &server.uri());
    config.upstream.timeout = Some(Duration::from_millis(300));
    let gateway = gateway_of(AzureProvider::new(config)?);
    let error = refusal(
        &gateway,
        request_of(json!({"model": "gpt-image-2", "prompt": "p"})),
    )
    .await;
    assert_error(&error, 504, "upstream_timeout");
    Ok(())
}

#[tokio::test]
async fn webp_is_made_by_the_gateway_from_the_png_azure_makes() -> TestResult {
    // "WEBP images aren't supported" (providers-2.md §10.2): Azure is asked for its PNG.
    let server = MockServer::start().await;
    let upstream = json!({"model": "gpt-image-2", "prompt": "p", "n": 1, "output_format": "png"});
    let exact = deployment_call("gpt-image-2", "generations").and(body_json(upstream));
    mount_once(&server, exact, images(1)).await;
    let request = json!({"model": "gpt-image-2", "prompt": "p", "output_format": "webp"});
    let response = gateway(&server)?.generate(request_of(request)).await?;
    let image = STANDARD.decode(response.data[0].b64_json.as_deref().unwrap_or_default())?;
    assert_eq!(sniff_mime(&image), Some("image/webp"));
    Ok(())
}

#[tokio::test]
async fn what_azure_does_not_take_is_refused_before_any_call() -> TestResult {
    let server = MockServer::start().await;
    let request = |extra: Value| {
        request_of(merged(
            json!({"model": "gpt-image-2", "prompt": "p"}),
            extra,
        ))
    };
    // OpenAI-only fields, unverified on Azure.
    let cases = [
        (request(json!({"moderation": "low"})), "moderation"),
        (
            request(json!({"safety_identifier": "u"})),
            "safety_identifier",
        ),
    ];
    assert_refused_before_any_call(&gateway(&server)?, &server, cases).await;
    Ok(())
}

#[test]
fn the_provider_is_azure_and_traces_name_azure_openai() -> TestResult {
    let provider = AzureProvider::new(AzureConfig::new(KEY, "https://r.openai.azure.com"))?;
    assert_eq!(
        (provider.name(), provider.genai_name()),
        ("azure", "azure.ai.openai")
    );
    Ok(())
}
