//! The shared provider conformance suite against a fake Azure OpenAI resource built from its
//! documented wire format (providers-2.md §10): the deployment form at the default
//! `api-version`, the model mapped to a deployment of another name. Each fake asserts the
//! exact outgoing request (path and `api-version`, the `api-key` header and no bearer, the
//! JSON body or multipart parts) and how often it is called.

#![expect(clippy::expect_used, reason = "tests fail loudly")]

use imgproxy_testkit::form;

use async_trait::async_trait;
use form::{exact_form, FormPart};
use imgproxy_core::Gateway;
use imgproxy_provider_azure::{AzureConfig, AzureProvider, DEFAULT_API_VERSION};
use imgproxy_testkit::{
    b64, cut_off_json, forbid, gateway_of, mount_once, output_png, reference_png,
    too_many_requests, Fixture, WithoutHeader,
};
use serde_json::{json, Value};
use wiremock::{
    matchers::{any, body_json, header, header_regex, method, path, query_param},
    Mock, MockBuilder, MockServer, ResponseTemplate,
};

const KEY: &str = "azure-test-key-0123456789abcdef";
const PROMPT: &str = "a red fox in the snow";
const DEPLOYMENT: &str = "images-prod";

struct Azure;

/// A POST to `operation` of our deployment at the default `api-version`, keyed in `api-key`.
fn call(operation: &str) -> MockBuilder {
    Mock::given(method("POST"))
        .and(path(format!(
            "/openai/deployments/{DEPLOYMENT}/images/{operation}"
        )))
        .and(query_param("api-version", DEFAULT_API_VERSION))
        .and(header("api-key", KEY))
        .and(WithoutHeader("authorization"))
}

/// The JSON body the cases' request becomes: the deployment as `model`, the catalog's one
/// default (`output_format`), nothing Azure does not take.
fn generation_body(n: u32) -> Value {
    json!({"model": DEPLOYMENT, "prompt": PROMPT, "n": n, "output_format": "png"})
}

/// Azure's error envelope.
fn error(code: &str, message: &str) -> Value {
    json!({"error": {"code": code, "message": message}})
}

#[async_trait]
impl Fixture for Azure {
    fn gateway(server: &MockServer) -> Gateway {
        let mut config = AzureConfig::new(KEY, &server.uri());
        config
            .deployments
            .insert("gpt-image-2".into(), DEPLOYMENT.into());
        gateway_of(AzureProvider::new(config).expect("provider"))
    }

    fn model() -> &'static str {
        "gpt-image-2"
    }

    async fn success(server: &MockServer, n: u32, references: usize) {
        let data: Vec<Value> = (0..n as usize)
            .map(|i| json!({"b64_json": b64(&output_png(i))}))
            .collect();
        let answer =
            ResponseTemplate::new(200).set_body_json(json!({"created": 1776729600, "data": data}));
        if references == 0 {
            let exact = call("generations")
                .and(header("content-type", "application/json"))
                .and(body_json(generation_body(n)));
            mount_once(server, exact, answer).await;
            return;
        }
        // Reference images go to the edits endpoint as multipart, laid out as OpenAI's: the
        // same fields as text parts, then one `image[]` file part per reference, in order.
        let n = n.to_string();
        let text = [
            ("model", DEPLOYMENT),
            ("prompt", PROMPT),
            ("n", n.as_str()),
            ("output_format", "png"),
        ];
        let files = (0..references)
            .map(|i| {
                let name = format!("image-{i}.png");
                FormPart::file("image[]", &name, "image/png", &reference_png(i))
            })
            .collect();
        let exact = call("edits")
            .and(header_regex(
                "content-type",
                "^multipart/form-data; boundary=.+$",
            ))
            .and(exact_form(&text, files));
        mount_once(server, exact, answer).await;
        forbid(
            server,
            Mock::given(any()).and(path(format!(
                "/openai/deployments/{DEPLOYMENT}/images/generations"
            ))),
        )
        .await;
    }

    /// Azure's refusal as its troubleshooting page documents it: HTTP 400 with the
    /// `content_filter` code.
    async fn moderation(server: &MockServer) {
        let refusal = error(
            "content_filter",
            "The response was filtered due to the prompt triggering Azure OpenAI's content management policy.",
        );
        Self::answer_first_call(server, ResponseTemplate::new(400).set_body_json(refusal)).await;
    }

    async fn answer_first_call(server: &MockServer, answer: ResponseTemplate) {
        let exact = call("generations").and(body_json(generation_body(1)));
        mount_once(server, exact, answer).await;
    }

    fn rate_limited(seconds: u64) -> ResponseTemplate {
        too_many_requests(
            seconds,
            error(
                "429",
                &format!("Requests to the Images_Generations_Create Operation under Azure OpenAI API have exceeded the rate limit. Please retry after {seconds} seconds."),
            ),
        )
    }

    fn server_error() -> ResponseTemplate {
        ResponseTemplate::new(500).set_body_json(error(
            "InternalServerError",
            "The service encountered an internal error.",
        ))
    }

    fn malformed() -> ResponseTemplate {
        ResponseTemplate::new(200).set_body_json(json!({"images": "soon"}))
    }

    fn truncated() -> ResponseTemplate {
        cut_off_json(r#"{"created": 1, "data": [{"b64_json": "iVBORw0KGgoAAAANSU"#)
    }
}

imgproxy_testkit::conformance_suite!(crate::Azure);
