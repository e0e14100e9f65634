//! Unit tests of `convert`: poll statuses, HTTP error mapping, samples and scrubbing.

use super::*;

fn poll(body: &str) -> Result<TaskState, ProviderError> {
    read_poll(body.as_bytes())
}

#[test]
fn poll_statuses_map_by_meaning() {
    let ready = r#"{"id":"t","status":"Ready","result":{"sample":"https://d.bfl.ai/s.jpeg"}}"#;
    assert_eq!(
        poll(ready),
        Ok(TaskState::Ready("https://d.bfl.ai/s.jpeg".into()))
    );
    let state = r#"{"state":"Ready","result":{"sample":"https://d/s"}}"#;
    assert_eq!(poll(state), Ok(TaskState::Ready("https://d/s".into())));
    for pending in ["Pending", "Queued", "Processing"] {
        let body = format!(r#"{{"status":"{pending}","result":"not yet"}}"#);
        assert_eq!(poll(&body), Ok(TaskState::Pending), "{pending}");
    }
    let moderated = r#"{"status":"Request Moderated","result":null,
                        "details":{"Moderation Reasons":["Derivative Works Filter"]}}"#;
    let Err(ProviderError::ModerationBlocked { message }) = poll(moderated) else {
        panic!("moderation expected");
    };
    assert!(message.contains("Derivative Works Filter"), "{message}");
    assert!(matches!(
        poll(r#"{"status":"Content Moderated"}"#),
        Err(ProviderError::ModerationBlocked { .. })
    ));
    for failure in ["Error", "Failed", "Task not found"] {
        let body = format!(r#"{{"status":"{failure}","details":"boom"}}"#);
        let Err(ProviderError::Failed { message }) = poll(&body) else {
            panic!("{failure} is a failure");
        };
        assert!(
            message.contains(failure) && message.contains("boom"),
            "{message}"
        );
    }
    // BFL puts an `Error` status's text in `error`.
    let Err(ProviderError::Failed { message }) =
        poll(r#"{"id":"t","status":"Error","result":null,"error":"GPU worker crashed"}"#)
    else {
        panic!("Error is a failure");
    };
    assert!(message.contains("GPU worker crashed"), "{message}");
    for malformed in [
        r#"{"status":"Ready","result":null}"#,
        r#"{"id":"t"}"#,
        "{\"st",
    ] {
        assert!(matches!(poll(malformed), Err(ProviderError::Failed { .. })));
    }
}

#[test]
fn http_errors_map_by_meaning() {
    assert_eq!(
        error_from_status(402, None, br#"{"detail":"Insufficient credits"}"#),
        ProviderError::QuotaExhausted {
            message: "BFL account is out of credits".into()
        }
    );
    let fastapi = br#"{"detail":[{"loc":["body","width"],"msg":"must be <= 1440","type":"x"},
                                 {"loc":["body"],"msg":"bad"}]}"#;
    let ProviderError::InvalidRequest { message, .. } = error_from_status(422, None, fastapi)
    else {
        panic!("422 is an invalid request");
    };
    assert_eq!(
        message,
        "BFL rejected the request: width: must be <= 1440; bad"
    );
    let ProviderError::InvalidRequest { message, .. } =
        error_from_status(422, None, br#"{"detail":"prompt too long"}"#)
    else {
        panic!("422 is an invalid request");
    };
    assert!(message.ends_with("prompt too long"), "{message}");
    let wait = Some(Duration::from_secs(17));
    assert_eq!(
        error_from_status(429, wait, b""),
        ProviderError::RateLimited { retry_after: wait }
    );
    assert_eq!(
        error_from_status(403, None, br#"{"detail":"bad key abc"}"#),
        ProviderError::Unauthorized { status: 403 }
    );
    assert!(matches!(
        error_from_status(400, None, br#"{"message":"nope"}"#),
        ProviderError::InvalidRequest { message, .. } if message.contains("nope")
    ));
    assert_eq!(
        error_from_status(503, None, b""),
        failed("upstream answered HTTP 503")
    );
    assert!(transient_poll_status(503) && !transient_poll_status(500));
}

#[test]
fn samples_must_be_images_and_secrets_are_scrubbed() {
    let png = generated_image(Bytes::from_static(b"\x89PNG\r\n\x1a\n"), None).unwrap();
    assert_eq!(png.mime, "image/png");
    let typed = generated_image(Bytes::new(), Some("image/avif; q=1")).unwrap();
    assert_eq!(typed.mime, "image/avif");
    assert!(generated_image(Bytes::from_static(b"<html>"), Some("text/html")).is_err());
    assert_eq!(
        failed("key k-123 echoed").without_secret("k-123"),
        failed("key [redacted] echoed")
    );
}
