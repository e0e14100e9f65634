//! Wiremock tests of a pool of OpenAI keys, driven through the gateway: the fake upstream
//! answers by the key it receives, and counts what each key sent.

use std::sync::Arc;

use base64::{engine::general_purpose::STANDARD, Engine as _};
use imgproxy_core::{upstream::fingerprint, Catalog, Gateway, ImageProvider, KeyStatus};
use imgproxy_provider_openai::{OpenAIConfig, OpenAIProvider};
use imgproxy_testkit::{assert_error, bearer_post};
use serde_json::json;
use wiremock::{MockServer, ResponseTemplate};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const REVOKED: &str = "sk-revoked-0123456789abcdef";
const GOOD: &str = "sk-good-fedcba9876543210";
const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR-not-really";

fn rejected() -> ResponseTemplate {
    ResponseTemplate::new(401).set_body_json(json!({"error": {
        "message": format!("Incorrect API key provided: {REVOKED}."),
        "type": "invalid_request_error", "param": null, "code": "invalid_api_key"
    }}))
}

fn image() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "created": 1, "data": [{"b64_json": STANDARD.encode(PNG)}]
    }))
}

/// Answers what `key` sends with `response`, expecting it `times` times.
async fn answer(server: &MockServer, key: &str, response: ResponseTemplate, times: u64) {
    bearer_post("/images/generations", key)
        .respond_with(response)
        .expect(times)
        .mount(server)
        .await;
}

/// The gateway of one OpenAI provider holding `keys` (in order), and that provider.
fn pooled(
    server: &MockServer,
    keys: [&str; 2],
) -> Result<(Gateway, Arc<OpenAIProvider>), Box<dyn std::error::Error>> {
    let mut config = OpenAIConfig::new(keys[0]);
    config.upstream = config
        .upstream
        .with_base_url(server.uri())
        .with_more_keys([keys[1].into()]);
    let provider = Arc::new(OpenAIProvider::new(config)?);
    let gateway = Gateway::builder(Catalog::embedded()?)
        .provider(provider.clone())
        .build();
    Ok((gateway, provider))
}

fn request() -> Result<imgproxy_core::ImageRequest, serde_json::Error> {
    serde_json::from_value(json!({"model": "gpt-image-2", "prompt": "a sea otter"}))
}

#[tokio::test]
async fn a_rejected_key_is_taken_out_and_every_request_succeeds_through_the_other() -> TestResult {
    let server = MockServer::start().await;
    // The revoked key comes first, so the first request meets it; it is never tried again.
    answer(&server, REVOKED, rejected(), 1).await;
    answer(&server, GOOD, image(), 4).await;
    let (gateway, provider) = pooled(&server, [REVOKED, GOOD])?;

    for _ in 0..4 {
        let response = gateway.generate(request()?).await?;
        assert_eq!(response.data[0].b64_json, Some(STANDARD.encode(PNG)));
    }

    assert_eq!(
        provider.keys(),
        [
            KeyStatus {
                fingerprint: fingerprint(REVOKED),
                state: "disabled",
                reason: Some("unauthorized"),
                in_flight: 0,
            },
            KeyStatus {
                fingerprint: fingerprint(GOOD),
                state: "live",
                reason: None,
                in_flight: 0,
            },
        ]
    );
    let shown = format!("{provider:?}");
    assert!(
        !shown.contains("0123456789") && !shown.contains("fedcba"),
        "{shown}"
    );
    Ok(())
}

#[tokio::test]
async fn with_every_key_out_the_answer_is_the_last_rejection() -> TestResult {
    let server = MockServer::start().await;
    for key in [REVOKED, GOOD] {
        answer(&server, key, rejected(), 1).await;
    }
    let (gateway, provider) = pooled(&server, [REVOKED, GOOD])?;

    for _ in 0..2 {
        let error = gateway.generate(request()?).await.unwrap_err();
        assert_error(&error, 502, "upstream_auth_failed");
        assert!(!format!("{error:?}").contains("0123456789"), "{error:?}");
    }
    let states: Vec<_> = provider.keys().iter().map(|key| key.state).collect();
    assert_eq!(states, ["disabled", "disabled"]);
    Ok(())
}
