//! Wiremock tests of the OpenAI adapter, driven through the gateway as users drive it: each
//! test starts its own mock upstream, asserts the exact outgoing request and the call count,
//! and checks what the gateway answers.

use std::{sync::Arc, time::Duration};

use base64::{engine::general_purpose::STANDARD, Engine as _};
use imgproxy_core::{Catalog, Gateway, ImageResponse};
use imgproxy_provider_openai::{OpenAIConfig, OpenAIProvider};
use imgproxy_testkit::form::{count, exact_form, find, FormPart};
use imgproxy_testkit::{
    assert_error, bearer_post, data_url, forbid, mount_once, reference_png, serve_file_once,
};
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
        model: "gpt-image-2.6-flare",
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
    config.upstream.base_url = Some(server.uri());
    config
}

fn gateway(
    catalog: Catalog,
    configs: Vec<OpenAIConfig>,
) -> Result<Gateway, Box<dyn std::error::Error>> {
    let mut builder = Gateway::builder(catalog).failover(imgproxy_testkit::one_attempt());
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

/// A server expecting the one call of `case` for `n` images, answering `response`.
async fn server_expecting(case: &Case, n: u32, response: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    bearer_post("/images/generations", KEY)
        .and(body_json(case.body(n)))
        .respond_with(response)
        .expect(1)
        .mount(&server)
        .await;
    server
}

/// A 200 answer of `body`.
fn ok_json(body: Value) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(body)
}

/// The gateway error for `case` when its one upstream call answers `response`.
async fn failure(
    case: &Case,
    response: ResponseTemplate,
) -> Result<imgproxy_core::Error, Box<dyn std::error::Error>> {
    let server = server_expecting(case, 1, response).await;
    match generate(&server, case.request(1)).await? {
        Err(error) => Ok(error),
        Ok(response) => Err(format!("{}: expected an error, got {response:?}", case.model).into()),
    }
}

#[tokio::test]
async fn success_sends_the_exact_body_and_headers() -> TestResult {
    for case in &CASES {
        let server = MockServer::start().await;
        bearer_post("/images/generations", KEY)
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
            (
                response.meta.background.as_deref(),
                response.meta.quality.as_deref()
            ),
            (Some("opaque"), Some("high"))
        );
        assert_eq!(response.meta.output_format.as_deref(), Some(case.format));
        assert_eq!(response.meta.size.as_deref(), Some("1024x1024"));
    }
    Ok(())
}

#[tokio::test]
async fn n_above_one_is_one_call_returning_every_image() -> TestResult {
    for case in &CASES {
        let answer = json!({"created": 1, "data": case.images(3)});
        let server = server_expecting(case, 3, ok_json(answer)).await;

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
        let answer = json!({"created": 1, "usage": usage, "data": [
            {"b64_json": STANDARD.encode(case.image), "revised_prompt": "a small sea otter"},
            {"b64_json": STANDARD.encode(case.image)}
        ]});
        let server = server_expecting(case, 2, ok_json(answer)).await;

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

/// OpenAI's error envelope, answered with `status`.
fn error_answer(
    status: u16,
    message: &str,
    kind: &str,
    param: Value,
    code: Value,
) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(json!({"error": {
        "message": message, "type": kind, "param": param, "code": code
    }}))
}

/// Each upstream error → our status, param, code and wait, and what our message must be; no
/// error ever shows the key.
#[tokio::test]
async fn upstream_errors_keep_their_meaning_and_never_show_the_key() -> TestResult {
    // The answer; our status, param and code; our wait; what our message must say.
    type Row = (
        ResponseTemplate,
        (u16, Option<&'static str>, Option<&'static str>),
        Option<Duration>,
        fn(&str) -> bool,
    );
    let rejected_key = format!("Incorrect API key provided: {KEY}.");
    let rows: [Row; 5] = [
        (
            error_answer(
                400,
                "Your request was rejected by the safety system.",
                "image_generation_user_error",
                Value::Null,
                json!("moderation_blocked"),
            ),
            (400, None, Some("moderation_blocked")),
            None,
            |message| message.contains("safety system"),
        ),
        (
            error_answer(
                429,
                "Rate limit reached",
                "requests",
                Value::Null,
                json!("rate_limit_exceeded"),
            )
            .insert_header("Retry-After", "20"),
            (429, None, Some("rate_limit_exceeded")),
            Some(Duration::from_secs(20)),
            |_| true,
        ),
        (
            error_answer(
                500,
                "The server had an error processing your request.",
                "server_error",
                Value::Null,
                Value::Null,
            ),
            (502, None, Some("upstream_error")),
            None,
            |message| message.contains("HTTP 500"),
        ),
        (
            error_answer(
                401,
                &rejected_key,
                "invalid_request_error",
                Value::Null,
                json!("invalid_api_key"),
            ),
            (502, None, Some("upstream_auth_failed")),
            None,
            |_| true,
        ),
        (
            error_answer(
                400,
                "Invalid size '1024x1024' for this model.",
                "invalid_request_error",
                json!("size"),
                json!("invalid_value"),
            ),
            (400, Some("size"), Some("invalid_value")),
            None,
            |message| message == "Invalid size '1024x1024' for this model.",
        ),
    ];
    for case in &CASES {
        for (answer, expected, wait, says) in &rows {
            let error = failure(case, answer.clone()).await?;
            assert_eq!(
                (error.status(), error.param(), error.code()),
                *expected,
                "{error}"
            );
            assert_eq!(error.retry_after(), *wait, "{error}");
            assert!(says(&error.to_string()), "{error}");
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

/// An answer carrying its images inline is read within the same limit as a download: an
/// upstream cannot make the gateway hold an unbounded body.
#[tokio::test]
async fn answers_larger_than_the_limit_are_502() -> TestResult {
    let case = &CASES[0];
    let body = json!({"created": 1, "data": case.images(1)}).to_string();
    let server = server_expecting(case, 1, ok_json(serde_json::from_str(&body)?)).await;
    let mut config = config(&server);
    let limit = body.len() - 1;
    config.upstream.max_download_bytes = limit;
    let gateway = gateway(Catalog::embedded()?, vec![config])?;

    let error = gateway
        .generate(serde_json::from_value(case.request(1))?)
        .await
        .err()
        .ok_or("the answer must be refused")?;

    assert_eq!(error.status(), 502);
    let expected = format!("the upstream response is larger than {limit} bytes");
    assert!(error.to_string().contains(&expected), "{error}");
    Ok(())
}

#[tokio::test]
async fn slow_upstream_is_504() -> TestResult {
    for case in &CASES {
        let answer = json!({"created": 1, "data": case.images(1)});
        let slow = ok_json(answer).set_delay(Duration::from_secs(3));
        let server = server_expecting(case, 1, slow).await;
        let mut config = config(&server);
        config.upstream.timeout = Some(Duration::from_millis(500));
        let gateway = gateway(Catalog::embedded()?, vec![config])?;

        let error = gateway
            .generate(serde_json::from_value(case.request(1))?)
            .await
            .err()
            .ok_or("a slow upstream must fail")?;

        assert_error(&error, 504, "upstream_timeout");
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
    config.upstream.base_url = Some(format!("{}/v1/", server.uri()));
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
    forbid(&openai, Mock::given(any())).await;
    let compat = MockServer::start().await;
    expect_compat_call(&compat).await;
    serve_file_once(&compat, "/files/a.png", PNG, "application/octet-stream").await;
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
    // The limit takes the generation's answer (its URL) but not the download.
    let oversized = [PNG, &[0; 1024]].concat();
    for (download, limit, expected) in [
        (ResponseTemplate::new(404), 1024, "HTTP 404"),
        (
            ResponseTemplate::new(200).set_body_raw(oversized, "image/png"),
            1024,
            "a generated image is larger than 1024 bytes",
        ),
    ] {
        let compat = MockServer::start().await;
        expect_compat_call(&compat).await;
        let get = Mock::given(method("GET")).and(path("/files/a.png"));
        mount_once(&compat, get, download).await;
        let mut config = compat_config(&compat);
        config.upstream.max_download_bytes = limit;
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

/// The embedded catalog with `gpt-image-2`'s `upstream_params` set to `params`.
fn gpt_image_2_with(params: Value) -> Result<Catalog, Box<dyn std::error::Error>> {
    let mut catalog = Catalog::embedded()?;
    let mut model = (**catalog.resolve("gpt-image-2", &|_| true)?).clone();
    model.upstream_params = serde_json::from_value(params)?;
    catalog.upsert(model)?;
    Ok(catalog)
}

/// Two reference images as the client sends them, data URLs in request order.
fn two_references() -> Value {
    json!([data_url(&reference_png(0)), data_url(&reference_png(1))])
}

#[tokio::test]
async fn reference_images_go_to_images_edits_as_multipart() -> TestResult {
    let server = MockServer::start().await;
    forbid(&server, Mock::given(any()).and(path("/images/generations"))).await;
    bearer_post("/images/edits", KEY)
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "created": 1, "data": CASES[0].images(1), "output_format": "png"
        })))
        .expect(1)
        .mount(&server)
        .await;
    // `response_format` from the catalog too: GPT image models answer 400 to it on edits.
    let catalog = gpt_image_2_with(json!({"response_format": "b64_json", "x": 1}))?;
    let gateway = gateway(catalog, vec![config(&server)])?;

    let response = gateway
        .generate(serde_json::from_value(json!({
            "model": "gpt-image-2", "prompt": "a sea otter", "response_format": "b64_json",
            "images": two_references()
        }))?)
        .await?;

    assert_eq!(response.data.len(), 1);
    assert_eq!(response.data[0].b64_json, Some(STANDARD.encode(PNG)));
    let requests = server.received_requests().await.ok_or("recording is on")?;
    let [request] = requests.as_slice() else {
        return Err(format!("expected one call, got {}", requests.len()).into());
    };
    let content_type = request
        .headers
        .get("content-type")
        .ok_or("no Content-Type")?
        .to_str()?;
    assert!(
        content_type.starts_with("multipart/form-data; boundary="),
        "{content_type}"
    );
    let body = request.body.as_slice();
    assert_eq!(count(body, br#"name="image[]""#), 2);
    let first = find(body, &reference_png(0), 0).ok_or("the first reference is missing")?;
    let second = find(body, &reference_png(1), 0).ok_or("the second reference is missing")?;
    assert!(first < second, "references keep the request order");
    for field in [
        "name=\"image[]\"; filename=\"image-0.png\"\r\nContent-Type: image/png\r\n\r\n",
        "name=\"image[]\"; filename=\"image-1.png\"\r\nContent-Type: image/png\r\n\r\n",
        "name=\"model\"\r\n\r\ngpt-image-2\r\n",
        "name=\"prompt\"\r\n\r\na sea otter\r\n",
        "name=\"n\"\r\n\r\n1\r\n",
        "name=\"size\"\r\n\r\nauto\r\n",
        "name=\"x\"\r\n\r\n1\r\n",
    ] {
        assert_eq!(count(body, field.as_bytes()), 1, "{field}");
    }
    assert_eq!(count(body, b"response_format"), 0);
    Ok(())
}

#[tokio::test]
async fn edits_of_compatible_upstreams_keep_their_upstream_params_as_text() -> TestResult {
    let compat = MockServer::start().await;
    let text = [
        ("model", "flux-dev"),
        ("prompt", "a fox"),
        ("n", "1"),
        ("background", "auto"),
        ("moderation", "auto"),
        ("output_format", "png"),
        ("quality", "auto"),
        ("size", "auto"),
        ("response_format", "url"),
        ("steps", "28"),
    ];
    let files = vec![FormPart::file(
        "image[]",
        "image-0.png",
        "image/png",
        &reference_png(0),
    )];
    Mock::given(method("POST"))
        .and(path("/v1/images/edits"))
        .and(header(
            "authorization",
            format!("Bearer {COMPAT_KEY}").as_str(),
        ))
        .and(exact_form(&text, files))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"data": [{"url": format!("{}/files/a.png", compat.uri())}]})),
        )
        .expect(1)
        .mount(&compat)
        .await;
    serve_file_once(&compat, "/files/a.png", PNG, "image/png").await;
    let gateway = gateway(compat_catalog()?, vec![compat_config(&compat)])?;

    let response = gateway
        .generate(serde_json::from_value(json!({
            "model": "compat-flux", "prompt": "a fox", "images": [data_url(&reference_png(0))]
        }))?)
        .await?;

    assert_eq!(response.data[0].b64_json, Some(STANDARD.encode(PNG)));
    Ok(())
}

#[tokio::test]
async fn edit_failures_map_like_generation_failures() -> TestResult {
    let moderation = json!({"error": {"message": "Rejected by the safety system.",
                                      "type": "image_generation_user_error",
                                      "code": "moderation_blocked"}});
    for (answer, status, code) in [
        (
            ResponseTemplate::new(400).set_body_json(moderation),
            400,
            Some("moderation_blocked"),
        ),
        (
            ResponseTemplate::new(429).insert_header("retry-after-ms", "1500"),
            429,
            Some("rate_limit_exceeded"),
        ),
        (ResponseTemplate::new(500), 502, Some("upstream_error")),
        (
            ResponseTemplate::new(200).set_body_raw("{\"data\": [", "application/json"),
            502,
            Some("upstream_error"),
        ),
    ] {
        let server = MockServer::start().await;
        let edit = Mock::given(method("POST")).and(path("/images/edits"));
        mount_once(&server, edit, answer).await;
        let request = json!({"model": "gpt-image-2", "prompt": "a sea otter",
                             "images": two_references()});

        let error = generate(&server, request)
            .await?
            .err()
            .ok_or("the edit must fail")?;

        assert_eq!((error.status(), error.code()), (status, code), "{error}");
        if status == 429 {
            assert_eq!(error.retry_after(), Some(Duration::from_millis(1500)));
        }
    }
    Ok(())
}
