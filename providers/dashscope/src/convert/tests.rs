//! Unit tests of the pure conversions: answers, task states and error codes.

use super::*;

fn json(value: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&value).unwrap()
}

#[test]
fn images_are_collected_from_every_choice_and_item_as_urls_or_base64() {
    let body = json(serde_json::json!({"output": {"choices": [
        {"finish_reason": "stop", "message": {"role": "assistant", "content": [
            {"image": "https://dashscope-result-sh.oss-cn-shanghai.aliyuncs.com/a.png?Expires=1"},
            {"image": "aGVsbG8="}]}},
        {"message": {"role": "assistant", "content": [{"image": "data:image/png;base64,aGk="}]}}
    ]}, "usage": {"image_count": 3}, "request_id": "r"}));
    let images = read_generation(&body).unwrap();
    assert_eq!(
        images,
        vec![
            ImageSource::Url(
                "https://dashscope-result-sh.oss-cn-shanghai.aliyuncs.com/a.png?Expires=1".into()
            ),
            ImageSource::Inline(Bytes::from_static(b"hello")),
            ImageSource::Inline(Bytes::from_static(b"hi")),
        ]
    );
}

#[test]
fn answers_without_images_or_with_bad_base64_are_malformed() {
    for body in [
        &br#"{"output": {"choices": []}}"#[..],
        br#"{"request_id": "r"}"#,
        br#"{"output": {"choices": [{"message": {"content": [{"image": "!!"}]}}]}}"#,
        br#"{"output": {"choices": [{"message": {"content": [{"image": "data:image/png,x"}]}}]}}"#,
        b"<html>",
    ] {
        let error = read_generation(body).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("malformed DashScope response"),
            "{error}"
        );
    }
}

#[test]
fn a_200_carrying_an_error_code_is_that_error() {
    let refused = json(
        serde_json::json!({"request_id": "r", "code": "DataInspectionFailed",
        "message": "Input data may contain inappropriate content."}),
    );
    assert!(matches!(
        read_generation(&refused),
        Err(ProviderError::ModerationBlocked { .. })
    ));
    let other = json(serde_json::json!({"code": "InternalError.Algo", "message": "boom"}));
    let error = read_generation(&other).unwrap_err();
    assert_eq!(
        error,
        failed("DashScope answered HTTP 200 with error InternalError.Algo: boom")
    );
}

#[test]
fn task_states_follow_task_status() {
    let task = |status: &str, extra: serde_json::Value| {
        let mut output = serde_json::json!({"task_id": "t-1", "task_status": status});
        if let (Some(output), Some(extra)) = (output.as_object_mut(), extra.as_object()) {
            output.extend(extra.clone());
        }
        read_task(&json(
            serde_json::json!({"request_id": "r", "output": output}),
        ))
    };
    for status in ["PENDING", "RUNNING", "SOMETHING_NEW"] {
        assert_eq!(task(status, serde_json::json!({})), Ok(TaskState::Running));
    }
    let done = task(
        "SUCCEEDED",
        serde_json::json!({"results": [
            {"orig_prompt": "a", "actual_prompt": "a, detailed", "url": "https://x/1.png"},
            {"code": "DataInspectionFailed", "message": "output withheld"}]}),
    );
    assert_eq!(
        done,
        Ok(TaskState::Succeeded(vec![TaskImage {
            url: "https://x/1.png".into(),
            revised_prompt: Some("a, detailed".into()),
        }]))
    );
    let Ok(TaskState::Ended(ProviderError::ModerationBlocked { message })) = task(
        "SUCCEEDED",
        serde_json::json!({"results": [{"code": "DataInspectionFailed", "message": "no"}]}),
    ) else {
        panic!("a task whose only result was withheld is a moderation refusal");
    };
    assert!(message.contains("DataInspectionFailed: no"), "{message}");
    let failed_task = task(
        "FAILED",
        serde_json::json!({"code": "InternalError", "message": "model crashed"}),
    );
    assert_eq!(
        failed_task,
        Ok(TaskState::Ended(failed(
            "the DashScope task failed: InternalError: model crashed"
        )))
    );
    for status in ["CANCELED", "UNKNOWN"] {
        assert!(matches!(
            task(status, serde_json::json!({})),
            Ok(TaskState::Ended(ProviderError::Failed { .. }))
        ));
    }
    assert!(read_task(br#"{"output": {"task_id": "t-1"}}"#).is_err());
}

#[test]
fn submits_need_a_task_id_fit_for_a_path() {
    let submitted = |id: &str| {
        read_submit(&json(serde_json::json!({"request_id": "r",
            "output": {"task_status": "PENDING", "task_id": id}})))
    };
    assert_eq!(
        submitted("0385dc79-5ff8-4d82-bcb6-xx_1"),
        Ok("0385dc79-5ff8-4d82-bcb6-xx_1".into())
    );
    for bad in ["", "../secrets", "a/b", "a?b=1"] {
        assert!(submitted(bad).is_err(), "{bad}");
    }
}

#[test]
fn error_codes_decide_before_statuses() {
    let envelope = |code: &str, message: &str| {
        json(serde_json::json!({"request_id": "r", "code": code, "message": message}))
    };
    let wait = Some(Duration::from_secs(9));
    assert_eq!(
        error_from_status(429, wait, &envelope("Throttling.RateQuota", "slow down")),
        ProviderError::RateLimited { retry_after: wait }
    );
    assert!(matches!(
        error_from_status(
            400,
            None,
            &envelope("DataInspectionFailed", "inappropriate")
        ),
        ProviderError::ModerationBlocked { .. }
    ));
    assert!(matches!(
        error_from_status(400, None, &envelope("Arrearage", "Access denied, overdue")),
        ProviderError::QuotaExhausted { .. }
    ));
    assert!(matches!(
        error_from_status(
            403,
            None,
            &envelope(
                "AccessDenied",
                "current user api does not support asynchronous calls"
            )
        ),
        ProviderError::Failed { .. }
    ));
    assert_eq!(
        error_from_status(
            401,
            None,
            &envelope("InvalidApiKey", "Invalid API-key sk-1")
        ),
        ProviderError::Unauthorized { status: 401 }
    );
    assert_eq!(
        error_from_status(403, None, &envelope("AccessDenied.Unpurchased", "")),
        ProviderError::Unauthorized { status: 403 }
    );
    let ProviderError::InvalidRequest { message, .. } =
        error_from_status(400, None, &envelope("InvalidParameter", "size must be W*H"))
    else {
        panic!("an InvalidParameter is the client's");
    };
    assert!(
        message.ends_with("InvalidParameter: size must be W*H"),
        "{message}"
    );
    assert_eq!(
        error_from_status(502, None, b"<html>bad gateway</html>"),
        failed("upstream answered HTTP 502: <html>bad gateway</html>")
    );
}

#[test]
fn results_must_be_images() {
    let png = Bytes::from_static(b"\x89PNG\r\n\x1a\n");
    let image = generated_image(png, None, Some("revised".into())).unwrap();
    assert_eq!(
        (image.mime.as_str(), image.revised_prompt.as_deref()),
        ("image/png", Some("revised"))
    );
    assert!(generated_image(Bytes::from_static(b"<html>"), Some("text/html"), None).is_err());
}
