//! Wiremock tests of the OpenAI adapter, driven through the gateway as users drive it: each
//! test starts its own mock upstream, asserts the exact outgoing request and the call count,
//! and checks what the gateway answers.

use std::{sync::Arc, time::Duration};

use base64::{engine::general_purpose::STANDARD, Engine as _};
use imgproxy_core::{Catalog, Gateway, ImageResponse};
use imgproxy_provider_openai::{OpenAIConfig, OpenAIProvider};
use serde_json::{json, Value};
use wiremock::{
    matchers::{any, body_json, header, method, path},
    Mock, MockServer, ResponseTemplate,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const KEY: &str = "sk-test-openai-0123456789abcdef";
const COMPAT_KEY: &str = "compat-key-fedcba9876543210";
const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR-not-really";
const GIF: &[u8] = b"GIF89a\x01\0\x01\0-frames";

/// One model under test: what the client adds to the request, and what validation turns
/// that into upstream (catalog defaults included).
struct Case {
    model: &'static str,
    request: fn() -> Value,
    body: fn() -> Value,
    image: &'static [u8],
    format: &'static str,
}

const CASES: [Case; 2] = [
    Case {
        model: "gpt-image-2",
        request: || json!({}),
        body: || {
            json!({"background": "auto", "moderation": "auto", "output_format": "png",
                   "quality": "auto", "size": "auto"})
        },
        image: PNG,
        format: "png",
    },
    Case {
        model: "gpt-image-2.5-flare",
        request: || json!({"quality": "xhigh", "output_format": "gif", "frame_count": 4}),
        body: || {
            json!({"background": "auto", "moderation": "auto", "output_format": "gif",
                   "quality": "xhigh", "size": "auto", "frame_count": 4})
        },
        image: GIF,
        format: "gif",
    },
];

impl Case {
    fn request(&self, n: u32) -> Value {
        merge(
            json!({"model": self.model, "prompt": "a sea otter", "n": n}),
            (self.request)(),
        )
    }

    fn body(&self, n: u32) -> Value {
        merge(
            json!({"model": self.model, "prompt": "a sea otter", "n": n}),
            (self.body)(),
        )
    }

    fn images(&self, n: usize) -> Value {
        Value::Array(vec![json!({"b64_json": STANDARD.encode(self.image)}); n])
    }
}

fn merge(mut base: Value, extra: Value) -> Value {
    if let (Value::Object(base), Value::Object(extra)) = (&mut base, extra) {
        base.extend(extra);
    }
    base
}

fn config(server: &MockServer) -> OpenAIConfig {
    let mut config = OpenAIConfig::new(KEY);
    config.base_url = server.uri();
    config
}

fn gateway(
    catalog: Catalog,
    configs: Vec<OpenAIConfig>,
) -> Result<Gateway, Box<dyn std::error::Error>> {
    let mut builder = Gateway::builder(catalog);
    for config in configs {
        builder = builder.provider(Arc::new(OpenAIProvider::new(config)?));
    }
    Ok(builder.build())
}

async fn generate(
    server: &MockServer,
    request: Value,
) -> Result<imgproxy_core::Result<ImageResponse>, Box<dyn std::error::Error>> {
    let gateway = gateway(Catalog::embedded()?, vec![config(server)])?;
    Ok(gateway.generate(serde_json::from_value(request)?).await)
}

/// Mounts the one expected call of `case`, answering `response`.
async fn expect_call(server: &MockServer, case: &Case, n: u32, response: ResponseTemplate) {
    Mock::given(method("POST"))
        .and(path("/images/generations"))
        .and(header("authorization", format!("Bearer {KEY}").as_str()))
        .and(body_json(case.body(n)))
        .respond_with(response)
        .expect(1)
        .mount(server)
        .await;
}

/// The gateway error for `case` when its one upstream call answers `response`.
async fn failure(
    case: &Case,
    response: ResponseTemplate,
) -> Result<imgproxy_core::Error, Box<dyn std::error::Error>> {
    let server = MockServer::start().await;
    expect_call(&server, case, 1, response).await;
    match generate(&server, case.request(1)).await? {
        Err(error) => Ok(error),
        Ok(response) => Err(format!("{}: expected an error, got {response:?}", case.model).into()),
    }
}

#[tokio::test]
async fn success_sends_the_exact_body_and_headers() -> TestResult {
    for case in &CASES {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/images/generations"))
            .and(header("authorization", format!("Bearer {KEY}").as_str()))
            .and(header("content-type", "application/json"))
            .and(header("openai-organization", "org-1"))
            .and(header("openai-project", "proj-1"))
            .and(body_json(case.body(1)))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "created": 1770935200, "data": case.images(1), "background": "opaque",
                "output_format": case.format, "quality": "high", "size": "1024x1024"
            })))
            .expect(1)
            .mount(&server)
            .await;
        let mut config = config(&server);
        config.organization = Some("org-1".into());
        config.project = Some("proj-1".into());
        let gateway = gateway(Catalog::embedded()?, vec![config])?;

        let response = gateway
            .generate(serde_json::from_value(case.request(1))?)
            .await?;

        assert_eq!(response.data.len(), 1);
        assert_eq!(response.data[0].b64_json, Some(STANDARD.encode(case.image)));
        assert_eq!(
            (response.background.as_deref(), response.quality.as_deref()),
            (Some("opaque"), Some("high"))
        );
        assert_eq!(response.output_format.as_deref(), Some(case.format));
        assert_eq!(response.size.as_deref(), Some("1024x1024"));
    }
    Ok(())
}

#[tokio::test]
async fn n_above_one_is_one_call_returning_every_image() -> TestResult {
    for case in &CASES {
        let server = MockServer::start().await;
        let answer = json!({"created": 1, "data": case.images(3)});
        expect_call(
            &server,
            case,
            3,
            ResponseTemplate::new(200).set_body_json(answer),
        )
        .await;

        let response = generate(&server, case.request(3)).await??;

        assert_eq!(response.data.len(), 3, "{}", case.model);
        assert!(response
            .data
            .iter()
            .all(|image| image.b64_json == Some(STANDARD.encode(case.image))));
    }
    Ok(())
}

#[tokio::test]
async fn usage_and_revised_prompt_pass_through() -> TestResult {
    let usage = json!({"input_tokens": 50, "output_tokens": 50, "total_tokens": 100,
                       "input_tokens_details": {"text_tokens": 10, "image_tokens": 40},
                       "reasoning_tokens": 7, "future_field": {"x": 1}});
    for case in &CASES {
        let server = MockServer::start().await;
        let answer = json!({"created": 1, "usage": usage, "data": [
            {"b64_json": STANDARD.encode(case.image), "revised_prompt": "a small sea otter"},
            {"b64_json": STANDARD.encode(case.image)}
        ]});
        expect_call(
            &server,
            case,
            2,
            ResponseTemplate::new(200).set_body_json(answer),
        )
        .await;

        let response = generate(&server, case.request(2)).await??;

        assert_eq!(serde_json::to_value(&response.usage)?, usage);
        let prompts: Vec<_> = response
            .data
            .iter()
            .map(|d| d.revised_prompt.as_deref())
            .collect();
        assert_eq!(prompts, [Some("a small sea otter"), None]);
    }
    Ok(())
}

#[tokio::test]
async fn moderation_blocked_is_a_400_moderation_error() -> TestResult {
    for case in &CASES {
        let error = failure(
            case,
            ResponseTemplate::new(400).set_body_json(json!({"error": {
                "message": "Your request was rejected by the safety system.",
                "type": "image_generation_user_error", "param": null, "code": "moderation_blocked"
            }})),
        )
        .await?;
        assert_eq!(
            (error.status(), error.code()),
            (400, Some("moderation_blocked"))
        );
        assert!(error.to_string().contains("safety system"), "{error}");
    }
    Ok(())
}

#[tokio::test]
async fn rate_limit_is_429_with_retry_after() -> TestResult {
    for case in &CASES {
        let error = failure(
            case,
            ResponseTemplate::new(429)
                .insert_header("Retry-After", "20")
                .set_body_json(json!({"error": {"message": "Rate limit reached",
                                               "type": "requests", "code": "rate_limit_exceeded"}})),
        )
        .await?;
        assert_eq!(error.status(), 429);
        assert_eq!(error.retry_after(), Some(Duration::from_secs(20)));
    }
    Ok(())
}

#[tokio::test]
async fn upstream_server_error_is_502() -> TestResult {
    for case in &CASES {
        let error = failure(
            case,
            ResponseTemplate::new(500).set_body_json(json!({"error": {
                "message": "The server had an error processing your request.",
                "type": "server_error", "param": null, "code": null
            }})),
        )
        .await?;
        assert_eq!(
            (error.status(), error.code()),
            (502, Some("upstream_error"))
        );
        assert!(error.to_string().contains("HTTP 500"), "{error}");
    }
    Ok(())
}

#[tokio::test]
async fn rejected_key_is_502_and_never_shows_the_key() -> TestResult {
    for case in &CASES {
        let error = failure(
            case,
            ResponseTemplate::new(401).set_body_json(json!({"error": {
                "message": format!("Incorrect API key provided: {KEY}."),
                "type": "invalid_request_error", "param": null, "code": "invalid_api_key"
            }})),
        )
        .await?;
        assert_eq!(
            (error.status(), error.code()),
            (502, Some("upstream_auth_failed"))
        );
        for text in [
            error.to_string(),
            format!("{error:?}"),
            error.public_message(),
        ] {
            assert!(
                !text.contains(KEY) && !text.contains("0123456789"),
                "{text}"
            );
        }
    }
    Ok(())
}

#[tokio::test]
async fn invalid_request_keeps_param_and_code() -> TestResult {
    for case in &CASES {
        let error = failure(
            case,
            ResponseTemplate::new(400).set_body_json(json!({"error": {
                "message": "Invalid size '1024x1024' for this model.",
                "type": "invalid_request_error", "param": "size", "code": "invalid_value"
            }})),
        )
        .await?;
        assert_eq!(
            (error.status(), error.param(), error.code()),
            (400, Some("size"), Some("invalid_value"))
        );
        assert_eq!(
            error.to_string(),
            "Invalid size '1024x1024' for this model."
        );
    }
    Ok(())
}

#[tokio::test]
async fn malformed_truncated_or_empty_bodies_are_502() -> TestResult {
    let full = json!({"created": 1, "data": CASES[0].images(1)}).to_string();
    let bodies = [
        "<html>not json</html>".to_owned(),
        full[..full.len() / 2].to_owned(),
        r#"{"created": 1}"#.to_owned(),
        r#"{"created": 1, "data": [{"revised_prompt": "no image"}]}"#.to_owned(),
    ];
    for case in &CASES {
        for body in &bodies {
            let error = failure(
                case,
                ResponseTemplate::new(200).set_body_raw(body.clone(), "application/json"),
            )
            .await?;
            assert_eq!(error.status(), 502, "{body}");
            assert!(
                error.to_string().contains("malformed upstream response"),
                "{body}: {error}"
            );
        }
    }
    Ok(())
}

#[tokio::test]
async fn slow_upstream_is_504() -> TestResult {
    for case in &CASES {
        let server = MockServer::start().await;
        let answer = json!({"created": 1, "data": case.images(1)});
        expect_call(
            &server,
            case,
            1,
            ResponseTemplate::new(200)
                .set_body_json(answer)
                .set_delay(Duration::from_secs(3)),
        )
        .await;
        let mut config = config(&server);
        config.timeout = Duration::from_millis(500);
        let gateway = gateway(Catalog::embedded()?, vec![config])?;

        let error = gateway
            .generate(serde_json::from_value(case.request(1))?)
            .await
            .err()
            .ok_or("a slow upstream must fail")?;

        assert_eq!(
            (error.status(), error.code()),
            (504, Some("upstream_timeout"))
        );
    }
    Ok(())
}

#[tokio::test]
async fn gpt_image_models_never_receive_response_format() -> TestResult {
    let server = MockServer::start().await;
    let mut catalog = Catalog::embedded()?;
    let mut model = (**catalog.resolve("gpt-image-2", &|_| true)?).clone();
    model.upstream_params = serde_json::from_value(json!({"response_format": "b64_json", "x": 1}))?;
    catalog.upsert(model)?;
    let body = merge(CASES[0].body(1), json!({"x": 1}));
    Mock::given(method("POST"))
        .and(path("/images/generations"))
        .and(body_json(body))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": CASES[0].images(1)})))
        .expect(1)
        .mount(&server)
        .await;
    let gateway = gateway(catalog, vec![config(&server)])?;

    let response = gateway
        .generate(serde_json::from_value(
            json!({"model": "gpt-image-2", "prompt": "a sea otter", "response_format": "b64_json"}),
        )?)
        .await?;

    assert_eq!(response.data.len(), 1);
    Ok(())
}

/// A catalog with `compat-flux`, served by a provider instance named `compat`.
fn compat_catalog() -> Result<Catalog, Box<dyn std::error::Error>> {
    let mut catalog = Catalog::embedded()?;
    let mut model = (**catalog.resolve("gpt-image-1-mini", &|_| true)?).clone();
    model.id = "compat-flux".into();
    model.provider = "compat".into();
    model.upstream = "flux-dev".into();
    model.aliases.clear();
    model.upstream_params = serde_json::from_value(json!({"response_format": "url", "steps": 28}))?;
    catalog.upsert(model)?;
    Ok(catalog)
}

fn compat_config(server: &MockServer) -> OpenAIConfig {
    let mut config = OpenAIConfig::new(COMPAT_KEY);
    config.name = "compat".into();
    config.base_url = format!("{}/v1/", server.uri());
    config
}

/// Mounts the compat generation call, answering with `{uri}/files/a.png`.
async fn expect_compat_call(server: &MockServer) {
    Mock::given(method("POST"))
        .and(path("/v1/images/generations"))
        .and(header(
            "authorization",
            format!("Bearer {COMPAT_KEY}").as_str(),
        ))
        .and(body_json(json!({
            "model": "flux-dev", "prompt": "a fox", "n": 1, "background": "auto",
            "moderation": "auto", "output_format": "png", "quality": "auto", "size": "auto",
            "response_format": "url", "steps": 28
        })))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"data": [{"url": format!("{}/files/a.png", server.uri())}]})),
        )
        .expect(1)
        .mount(server)
        .await;
}

#[tokio::test]
async fn compatible_upstream_uses_its_own_url_and_key_and_images_are_downloaded() -> TestResult {
    let openai = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .mount(&openai)
        .await;
    let compat = MockServer::start().await;
    expect_compat_call(&compat).await;
    Mock::given(method("GET"))
        .and(path("/files/a.png"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(PNG, "application/octet-stream"))
        .expect(1)
        .mount(&compat)
        .await;
    let gateway = gateway(
        compat_catalog()?,
        vec![config(&openai), compat_config(&compat)],
    )?;

    let response = gateway
        .generate(serde_json::from_value(
            json!({"model": "compat-flux", "prompt": "a fox"}),
        )?)
        .await?;

    assert_eq!(response.data.len(), 1);
    assert_eq!(response.data[0].b64_json, Some(STANDARD.encode(PNG)));
    let requests = compat.received_requests().await.ok_or("recording is on")?;
    for request in &requests {
        let auth = request
            .headers
            .get("authorization")
            .map(|v| v.to_str().unwrap_or("(not text)"));
        match request.url.path() {
            // The download host must never see a key.
            "/files/a.png" => assert_eq!(auth, None),
            _ => assert_eq!(auth, Some(format!("Bearer {COMPAT_KEY}").as_str())),
        }
    }
    Ok(())
}

#[tokio::test]
async fn failed_or_oversized_downloads_are_502() -> TestResult {
    for (download, limit, expected) in [
        (ResponseTemplate::new(404), 1024, "HTTP 404"),
        (
            ResponseTemplate::new(200).set_body_raw(PNG, "image/png"),
            8,
            "larger than 8 bytes",
        ),
    ] {
        let compat = MockServer::start().await;
        expect_compat_call(&compat).await;
        Mock::given(method("GET"))
            .and(path("/files/a.png"))
            .respond_with(download)
            .expect(1)
            .mount(&compat)
            .await;
        let mut config = compat_config(&compat);
        config.max_download_bytes = limit;
        let gateway = gateway(compat_catalog()?, vec![config])?;

        let error = gateway
            .generate(serde_json::from_value(
                json!({"model": "compat-flux", "prompt": "a fox"}),
            )?)
            .await
            .err()
            .ok_or("the download must fail")?;

        assert_eq!(error.status(), 502);
        assert!(error.to_string().contains(expected), "{error}");
    }
    Ok(())
}
