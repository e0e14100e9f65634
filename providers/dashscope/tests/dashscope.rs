//! DashScope-specific mappings against the fake (providers-2.md §8): the exact body each
//! model family receives (`W*H` sizes, ratios of the fixed sizes, seeds per fanned-out call,
//! reference images first), what is refused before any call, base64 answers, the error codes
//! that do not follow their status, a slow upstream, and a task resumed from its job token by
//! a provider that did not start it.

mod common;

use std::time::Duration;

use imgproxy_core::{
    upstream::{UpstreamProvider, UpstreamSettings},
    ImageProvider as _, ImageRequest, ProviderRequest,
};
use imgproxy_provider_dashscope::DashScope;
use imgproxy_testkit::{
    answer_first_only, assert_error, assert_refused_before_any_call, b64, data_url, gateway_of,
    merged, one_image, output_png, reference_png, refusal, request_of,
};
use serde_json::{json, Value};
use wiremock::{matchers::body_json, MockServer, ResponseTemplate};

use common::{
    content, error, gateway, generation_body, generation_call, images_answer, mount_cancel,
    mount_generation, mount_poll, mount_results, mount_running, poll, provider, submitted,
    succeeded, task_body, task_submit, KEY, PROMPT, SUBMIT_PATH, TASK,
};

/// A request for `model` with extra fields, as a client's JSON body, with `references` test
/// images.
fn request(model: &str, references: usize, extra: Value) -> ImageRequest {
    let images: Vec<String> = (0..references)
        .map(|i| data_url(&reference_png(i)))
        .collect();
    let mut body = merged(json!({"model": model, "prompt": PROMPT}), extra);
    if references > 0 {
        body["images"] = json!(images);
    }
    request_of(body)
}

/// What the client sends → the exact `parameters` of the synchronous call.
#[tokio::test]
async fn each_model_family_receives_its_exact_parameters() {
    let cases = [
        // The fixed sizes, `W*H`; every documented parameter under its own name.
        (
            "qwen-image-max",
            0,
            json!({"size": "1664x928", "negative_prompt": "blurry", "prompt_extend": false,
                   "watermark": true, "seed": 7}),
            json!({"size": "1664*928", "negative_prompt": "blurry", "prompt_extend": false,
                   "watermark": true, "seed": 7, "n": 1}),
        ),
        // A ratio of the fixed family is the listed size near it.
        (
            "qwen-image-max",
            0,
            json!({"aspect_ratio": "9:16"}),
            json!({"size": "928*1664", "prompt_extend": true, "watermark": false, "n": 1}),
        ),
        // Free sizes: as asked, or a ratio at 1K.
        (
            "qwen-image-2.0-pro",
            0,
            json!({"size": "2048x1536", "n": 2}),
            json!({"size": "2048*1536", "prompt_extend": true, "watermark": false, "n": 2}),
        ),
        (
            "qwen-image-2.0",
            1,
            json!({"aspect_ratio": "16:9"}),
            json!({"size": "1024*576", "prompt_extend": true, "watermark": false, "n": 1}),
        ),
        (
            "qwen-image-3.0-pro",
            2,
            json!({"prompt_extend_model": "direct", "enable_thinking": false, "n": 3}),
            json!({"prompt_extend_model": "direct", "enable_thinking": false,
                   "prompt_extend": true, "watermark": false, "n": 3}),
        ),
        // qwen-image-edit takes no size and no prompt rewrite; its ratio is the last image's.
        (
            "qwen-image-edit",
            3,
            json!({"negative_prompt": "text"}),
            json!({"negative_prompt": "text", "watermark": false, "n": 1}),
        ),
        (
            "qwen-image-edit-plus",
            2,
            json!({"size": "1024x1536", "n": 4}),
            json!({"size": "1024*1536", "prompt_extend": true, "watermark": false, "n": 4}),
        ),
    ];
    for (model, references, sent, parameters) in cases {
        let server = MockServer::start().await;
        let n = parameters["n"].as_u64().unwrap() as usize;
        mount_generation(&server, model, content(references), parameters, n).await;
        let response = gateway(&server)
            .generate(request(model, references, sent.clone()))
            .await
            .unwrap_or_else(|e| panic!("{model} {sent}: {e}"));
        assert_eq!(response.data.len(), n, "{model} {sent}");
    }
}

#[tokio::test]
async fn fanned_out_calls_get_distinct_seeds_within_dashscopes_range() {
    let server = MockServer::start().await;
    let urls = mount_results(&server, 1, 2).await;
    for seed in [2_147_483_647_i64, 0] {
        let parameters = json!({"size": "1328*1328", "prompt_extend": true, "watermark": false,
                                "seed": seed, "n": 1});
        generation_call()
            .and(body_json(generation_body(
                "qwen-image-max",
                content(0),
                parameters,
            )))
            .respond_with(ResponseTemplate::new(200).set_body_json(images_answer(&urls)))
            .expect(1)
            .mount(&server)
            .await;
    }
    let sent = json!({"n": 2, "seed": 2_147_483_647_i64});
    let response = gateway(&server)
        .generate(request("qwen-image-max", 0, sent))
        .await
        .unwrap();
    assert_eq!(response.data.len(), 2);
}

#[tokio::test]
async fn what_a_model_cannot_take_is_refused_before_any_call() {
    let server = MockServer::start().await;
    let long_prompt = "x".repeat(801);
    let cases = [
        // Not one of the five fixed sizes: refused, not snapped.
        (
            request("qwen-image", 0, json!({"size": "1024x1024"})),
            "size",
        ),
        (
            request("qwen-image-plus", 0, json!({"aspect_ratio": "21:9"})),
            "aspect_ratio",
        ),
        (request("qwen-image-max", 0, json!({"n": 5})), "n"),
        (request("qwen-image", 1, json!({})), "image"),
        (
            request("qwen-image-max", 0, json!({"prompt": long_prompt})),
            "prompt",
        ),
        // Over 2048x2048 pixels in total, or a side under 512.
        (
            request("qwen-image-2.0", 0, json!({"size": "4096x2048"})),
            "size",
        ),
        (
            request("qwen-image-3.0", 0, json!({"size": "256x1024"})),
            "size",
        ),
        (request("qwen-image-2.0-pro", 4, json!({})), "image"),
        (request("qwen-image-2.0", 0, json!({"n": 7})), "n"),
        (
            request("qwen-image-edit", 1, json!({"size": "1024x1024"})),
            "size",
        ),
        (
            request("qwen-image-edit", 1, json!({"prompt_extend": false})),
            "prompt_extend",
        ),
        (
            request("qwen-image-edit-max", 1, json!({"size": "4096x1024"})),
            "size",
        ),
        (request("qwen-image-edit-plus", 0, json!({})), "image"),
        (request("qwen-image-max", 0, json!({"seed": -1})), "seed"),
    ];
    assert_refused_before_any_call(&gateway(&server), &server, cases).await;
}

#[tokio::test]
async fn qwen_image_runs_as_a_task_and_reports_the_rewritten_prompt() {
    let server = MockServer::start().await;
    let parameters = json!({"size": "1664*928", "prompt_extend": true, "watermark": false,
                            "negative_prompt": "", "n": 1});
    task_submit()
        .and(body_json(task_body("qwen-image", parameters)))
        .respond_with(submitted())
        .expect(1)
        .mount(&server)
        .await;
    mount_running(&server, 1).await;
    let urls = mount_results(&server, 1, 1).await;
    mount_poll(&server, succeeded(&urls), 1).await;
    mount_cancel(&server, 0).await;
    let sent = json!({"aspect_ratio": "16:9", "negative_prompt": ""});
    let response = gateway(&server)
        .generate(request("qwen-image", 0, sent))
        .await
        .unwrap();
    let revised = response.data[0].revised_prompt.as_deref();
    assert_eq!(revised, Some("a red fox in the snow, detailed"));
    // The synchronous endpoint was never called.
    let received = server.received_requests().await.unwrap();
    assert!(received
        .iter()
        .all(|r| !r.url.path().contains("multimodal")));
}

#[tokio::test]
async fn inline_base64_answers_are_decoded_without_a_download() {
    let server = MockServer::start().await;
    let png = output_png(3);
    let answer = images_answer(&[b64(&png), data_url(&png)]);
    generation_call()
        .respond_with(ResponseTemplate::new(200).set_body_json(answer))
        .expect(1)
        .mount(&server)
        .await;
    let response = gateway(&server)
        .generate(request("qwen-image-2.0", 0, json!({"n": 2})))
        .await
        .unwrap();
    assert_eq!(response.data.len(), 2);
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}

/// Mounts `answer` as the first synchronous call's, and runs a default `qwen-image-2.0`
/// request through `gateway`.
async fn answered(server: &MockServer, answer: ResponseTemplate) -> imgproxy_core::Error {
    generation_call()
        .respond_with(answer)
        .expect(1)
        .mount(server)
        .await;
    refusal(&gateway(server), request("qwen-image-2.0", 0, json!({}))).await
}

#[tokio::test]
async fn codes_decide_what_an_error_means() {
    // DashScope may answer 200 with an error code.
    let server = MockServer::start().await;
    let refused = json!({"request_id": "r", "code": "DataInspectionFailed",
                         "message": "Output data may contain inappropriate content."});
    let got = answered(&server, ResponseTemplate::new(200).set_body_json(refused)).await;
    assert_error(&got, 400, "moderation_blocked");

    let server = MockServer::start().await;
    let got = answered(&server, error(400, "InvalidParameter", "size is invalid")).await;
    assert_error(&got, 400, "upstream_invalid_request");
    assert!(
        got.to_string()
            .contains("InvalidParameter: size is invalid"),
        "{got}"
    );

    // A rejected key: the upstream's text (which may echo it) is dropped.
    let server = MockServer::start().await;
    let echoed = format!("Invalid API-key provided: {KEY}");
    let got = answered(&server, error(401, "InvalidApiKey", &echoed)).await;
    assert_eq!(got.status(), 502);
    assert!(!format!("{got:?}").contains(KEY), "{got:?}");
}

#[tokio::test]
async fn an_overdue_account_takes_the_key_out_and_a_mixed_mode_refusal_does_not() {
    let cases = [
        (
            error(
                400,
                "Arrearage",
                "Access denied, please make sure your account is in good standing.",
            ),
            "disabled",
        ),
        (
            error(
                403,
                "AccessDenied",
                "current user api does not support asynchronous calls",
            ),
            "live",
        ),
    ];
    for (answer, state) in cases {
        let server = MockServer::start().await;
        task_submit()
            .respond_with(answer)
            .expect(1)
            .mount(&server)
            .await;
        let provider = provider(&server);
        let validated = gateway(&server)
            .validate(request("qwen-image-plus", 0, json!({})))
            .unwrap();
        let failed = provider.generate(one_image(&validated)).await.unwrap_err();
        assert!(
            matches!(
                failed,
                imgproxy_core::ProviderError::QuotaExhausted { .. }
                    | imgproxy_core::ProviderError::Failed { .. }
            ),
            "{failed:?}"
        );
        assert_eq!(provider.keys()[0].state, state, "{failed:?}");
    }
}

#[tokio::test]
async fn a_slow_synchronous_call_is_a_504() {
    let server = MockServer::start().await;
    let urls = mount_results(&server, 1, 0).await;
    let slow = ResponseTemplate::new(200)
        .set_body_json(images_answer(&urls))
        .set_delay(Duration::from_secs(3));
    generation_call()
        .respond_with(slow)
        .expect(1)
        .mount(&server)
        .await;
    let settings = UpstreamSettings::new(KEY)
        .with_base_url(server.uri())
        .with_timeout(Duration::from_millis(500));
    let gateway = gateway_of(UpstreamProvider::<DashScope>::new(settings).unwrap());
    let error = refusal(&gateway, request("qwen-image-2.0", 0, json!({}))).await;
    assert_error(&error, 504, "upstream_timeout");
}

#[tokio::test]
async fn a_poll_answering_a_5xx_is_polled_again() {
    let server = MockServer::start().await;
    task_submit()
        .respond_with(submitted())
        .expect(1)
        .mount(&server)
        .await;
    answer_first_only(&server, poll(), error(500, "InternalError", "busy")).await;
    let urls = mount_results(&server, 1, 1).await;
    mount_poll(&server, succeeded(&urls), 1).await;
    mount_cancel(&server, 0).await;
    let response = gateway(&server)
        .generate(request("qwen-image-plus", 0, json!({})))
        .await
        .unwrap();
    assert_eq!(response.data.len(), 1);
}

#[tokio::test]
async fn a_reported_task_is_resumed_by_another_provider_without_a_second_submit() {
    let server = MockServer::start().await;
    task_submit()
        .respond_with(submitted())
        .expect(1)
        .mount(&server)
        .await;
    // The job is reported as soon as it is submitted: the first process may be gone before
    // its first poll.
    mount_poll(&server, common::task_state("RUNNING", json!({})), 0..).await;
    // The first process is gone while its task runs; a client that went away cancels it.
    mount_cancel(&server, 0..=1).await;
    let validated = gateway(&server)
        .validate(request("qwen-image-plus", 0, json!({})))
        .unwrap();
    let (jobs, mut started) = tokio::sync::mpsc::unbounded_channel();
    let first = provider(&server);
    let call = ProviderRequest {
        jobs: Some(&jobs),
        ..one_image(&validated)
    };
    let (index, token) = tokio::select! {
        biased;
        job = started.recv() => job.unwrap(),
        _ = first.generate(call) => panic!("the task was still running"),
    };
    assert_eq!((index, token.as_str()), (0, TASK));
    drop(first);

    // The task finished meanwhile: the new provider's first poll says so (a last poll of the
    // dropped call, still on its way, may see it too).
    let urls = mount_results(&server, 1, 1).await;
    poll()
        .respond_with(ResponseTemplate::new(200).set_body_json(succeeded(&urls)))
        .with_priority(1)
        .expect(1..=2)
        .mount(&server)
        .await;
    let second = provider(&server);
    let generation = second.resume(one_image(&validated), &token).await.unwrap();
    assert_eq!(generation.images.len(), 1);
    assert_eq!(&generation.images[0].bytes[..], &output_png(0)[..]);
    let received = server.received_requests().await.unwrap();
    let submits = received.iter().filter(|r| r.url.path() == SUBMIT_PATH);
    assert_eq!(submits.count(), 1, "resuming never submits a second task");
    for bad in ["", "../tasks/other", "a/b"] {
        assert!(
            second.resume(one_image(&validated), bad).await.is_err(),
            "{bad}"
        );
    }
}
