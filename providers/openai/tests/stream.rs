//! Wiremock tests of what issue 6 added to the OpenAI adapter: streamed answers (partial
//! images relayed as they arrive, completed images collected, errors inside the stream) and
//! the `mask` part of edits.

use base64::{engine::general_purpose::STANDARD, Engine as _};
use bytes::Bytes;
use imgproxy_core::{
    provider::PartialImage, validate, Catalog, ImageProvider, ImageRequest, ProviderError,
    ProviderRequest, ReferenceImage, ValidatedRequest,
};
use imgproxy_provider_openai::{OpenAIConfig, OpenAIProvider};
use imgproxy_testkit::one_image;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use wiremock::{
    matchers::{body_partial_json, method, path},
    Mock, MockServer, ResponseTemplate,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const PNG_A: &[u8] = b"\x89PNG\r\n\x1a\n-partial-0";
const PNG_B: &[u8] = b"\x89PNG\r\n\x1a\n-partial-1";
const PNG_DONE: &[u8] = b"\x89PNG\r\n\x1a\n-final";

fn provider(server: &MockServer) -> Result<OpenAIProvider, ProviderError> {
    let mut config = OpenAIConfig::new("sk-stream-test");
    config.upstream.base_url = Some(server.uri());
    OpenAIProvider::new(config)
}

fn validated(body: Value) -> Result<ValidatedRequest, Box<dyn std::error::Error>> {
    let catalog = Catalog::embedded()?;
    let request: ImageRequest = serde_json::from_value(body)?;
    Ok(validate::validate(
        &catalog,
        request,
        "placeholder",
        &|_| true,
    )?)
}

/// One call of `request` whose partial images go to `sender`.
fn streamed<'a>(
    request: &'a ValidatedRequest,
    sender: &'a mpsc::UnboundedSender<PartialImage>,
) -> ProviderRequest<'a> {
    ProviderRequest {
        partials: Some(sender),
        ..one_image(request)
    }
}

fn sse(events: &[(&str, Value)], done: bool) -> String {
    let mut body: String = events
        .iter()
        .map(|(kind, data)| format!("event: {kind}\ndata: {data}\n\n"))
        .collect();
    if done {
        body.push_str("data: [DONE]\n\n");
    }
    body
}

/// Mounts a plain JSON answer (not a stream) carrying the final image at `endpoint`, expected
/// once.
async fn mount_plain_answer(server: &MockServer, endpoint: &str) {
    Mock::given(method("POST"))
        .and(path(endpoint))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"data": [{"b64_json": STANDARD.encode(PNG_DONE)}]})),
        )
        .expect(1)
        .mount(server)
        .await;
}

/// Mounts `body`, a stream of events, as the answer to generations.
async fn mount_stream(server: &MockServer, body: String) {
    Mock::given(method("POST"))
        .and(path("/images/generations"))
        .respond_with(ResponseTemplate::new(200).set_body_string(body))
        .mount(server)
        .await;
}

fn partial(index: u32, bytes: &[u8]) -> (&'static str, Value) {
    (
        "image_generation.partial_image",
        json!({"type": "image_generation.partial_image", "b64_json": STANDARD.encode(bytes),
               "partial_image_index": index, "size": "1024x1024", "quality": "high",
               "background": "opaque", "output_format": "png", "created_at": 1}),
    )
}

fn completed() -> (&'static str, Value) {
    (
        "image_generation.completed",
        json!({"type": "image_generation.completed", "b64_json": STANDARD.encode(PNG_DONE),
               "size": "1024x1024", "quality": "high", "background": "opaque",
               "output_format": "png", "created_at": 2,
               "usage": {"input_tokens": 5, "output_tokens": 7, "total_tokens": 12}}),
    )
}

#[tokio::test]
async fn partials_are_relayed_and_the_completed_image_returned() -> TestResult {
    for done in [false, true] {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/images/generations"))
            .and(body_partial_json(
                json!({"model": "gpt-image-2", "stream": true, "partial_images": 2}),
            ))
            .respond_with(
                ResponseTemplate::new(200)
                    .insert_header("content-type", "text/event-stream")
                    .set_body_string(sse(
                        &[partial(0, PNG_A), partial(1, PNG_B), completed()],
                        done,
                    )),
            )
            .expect(1)
            .mount(&server)
            .await;
        let request = validated(
            json!({"model": "gpt-image-2", "prompt": "p", "stream": true, "partial_images": 2}),
        )?;
        let (sender, mut receiver) = mpsc::unbounded_channel::<PartialImage>();
        let call = streamed(&request, &sender);
        let generation = provider(&server)?.generate(call).await?;
        assert_eq!(generation.images.len(), 1);
        assert_eq!(generation.images[0].bytes, Bytes::from_static(PNG_DONE));
        assert_eq!(generation.usage.and_then(|u| u.total_tokens), Some(12));
        let first = receiver.try_recv()?;
        let second = receiver.try_recv()?;
        assert_eq!((first.index, second.index), (0, 1));
        assert_eq!(STANDARD.decode(&second.b64_json)?, PNG_B);
        assert_eq!(first.meta.quality.as_deref(), Some("high"));
        assert!(receiver.try_recv().is_err());
    }
    Ok(())
}

#[tokio::test]
async fn without_asked_partials_the_call_is_not_streamed() -> TestResult {
    let server = MockServer::start().await;
    mount_plain_answer(&server, "/images/generations").await;
    let request = validated(json!({"model": "gpt-image-2", "prompt": "p", "stream": true}))?;
    let (sender, _receiver) = mpsc::unbounded_channel::<PartialImage>();
    let call = streamed(&request, &sender);
    provider(&server)?.generate(call).await?;
    let sent: Value =
        serde_json::from_slice(&server.received_requests().await.unwrap_or_default()[0].body)?;
    assert!(
        sent.get("stream").is_none() && sent.get("partial_images").is_none(),
        "{sent}"
    );
    Ok(())
}

#[tokio::test]
async fn an_error_inside_the_stream_is_the_upstreams_failure() -> TestResult {
    for (error, expect_moderation) in [
        (
            json!({"type": "server_error", "message": "boom", "code": null}),
            false,
        ),
        (
            json!({"type": "image_generation_user_error", "message": "no", "code": "moderation_blocked"}),
            true,
        ),
    ] {
        let server = MockServer::start().await;
        let events = [partial(0, PNG_A), ("error", json!({"error": error}))];
        mount_stream(&server, sse(&events, false)).await;
        let request = validated(
            json!({"model": "gpt-image-2", "prompt": "p", "stream": true, "partial_images": 1}),
        )?;
        let (sender, _receiver) = mpsc::unbounded_channel::<PartialImage>();
        let call = streamed(&request, &sender);
        let failure = provider(&server)?.generate(call).await.err();
        match failure {
            Some(ProviderError::ModerationBlocked { .. }) => assert!(expect_moderation),
            Some(ProviderError::Failed { .. }) => assert!(!expect_moderation),
            other => return Err(format!("unexpected {other:?}").into()),
        }
    }
    // A stream that ends without a completed image is a failure too.
    let server = MockServer::start().await;
    mount_stream(&server, sse(&[partial(0, PNG_A)], true)).await;
    let request = validated(
        json!({"model": "gpt-image-2", "prompt": "p", "stream": true, "partial_images": 1}),
    )?;
    let (sender, _receiver) = mpsc::unbounded_channel::<PartialImage>();
    let call = streamed(&request, &sender);
    assert!(matches!(
        provider(&server)?.generate(call).await,
        Err(ProviderError::Failed { .. })
    ));
    Ok(())
}

#[tokio::test]
async fn a_mask_goes_as_its_own_part_after_the_images() -> TestResult {
    let server = MockServer::start().await;
    mount_plain_answer(&server, "/images/edits").await;
    const DATA: &str = "data:image/png;base64,iVBORw0KGgo=";
    let request =
        validated(json!({"model": "gpt-image-2", "prompt": "hat", "image": DATA, "mask": DATA}))?;
    let image = ReferenceImage {
        bytes: Bytes::from_static(PNG_A),
        mime: "image/png".into(),
    };
    let mask = ReferenceImage {
        bytes: Bytes::from_static(PNG_B),
        mime: "image/png".into(),
    };
    let call = ProviderRequest {
        references: std::slice::from_ref(&image),
        mask: Some(&mask),
        ..one_image(&request)
    };
    provider(&server)?.generate(call).await?;
    let received = server.received_requests().await.unwrap_or_default();
    let parts = imgproxy_testkit::form::parse_form(&received[0])?;
    let names: Vec<&str> = parts.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names.iter().filter(|n| **n == "image[]").count(),
        1,
        "{names:?}"
    );
    assert_eq!(names.last(), Some(&"mask"), "{names:?}");
    let mask_part = parts.last().ok_or("no parts")?;
    assert_eq!(mask_part.body, PNG_B);
    assert_eq!(mask_part.content_type.as_deref(), Some("image/png"));
    Ok(())
}

/// An event is held until its blank line arrives, within the body limit: an upstream that
/// never ends one cannot make the gateway hold an unbounded stream.
#[tokio::test]
async fn an_event_larger_than_the_limit_fails_the_call() -> TestResult {
    let server = MockServer::start().await;
    let endless = format!("event: x\ndata: {}", "A".repeat(4096));
    mount_stream(&server, endless).await;
    let mut config = OpenAIConfig::new("sk-stream-test");
    config.upstream.base_url = Some(server.uri());
    config.upstream.max_download_bytes = 1024;
    let request = validated(
        json!({"model": "gpt-image-2", "prompt": "p", "stream": true, "partial_images": 1}),
    )?;
    let (sender, _receiver) = mpsc::unbounded_channel::<PartialImage>();
    let failure = OpenAIProvider::new(config)?
        .generate(streamed(&request, &sender))
        .await
        .err();
    match failure {
        Some(ProviderError::Failed { message }) => assert!(
            message.contains("a streamed event is larger than 1024 bytes"),
            "{message}"
        ),
        other => return Err(format!("unexpected {other:?}").into()),
    }
    Ok(())
}
