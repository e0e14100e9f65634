//! Unit tests of `convert`: error bodies of every shape, the moderation and quota readings,
//! both answer shapes and what counts as an image.

use imgproxy_core::upstream::ImageSource;
use serde_json::json;

use super::*;

fn body(value: Value) -> Vec<u8> {
    serde_json::to_vec(&value).unwrap()
}

#[test]
fn error_bodies_of_every_shape_give_their_code_and_message() {
    let cases = [
        (
            json!({"code": "invalid_size", "message": " bad size "}),
            (Some("invalid_size"), Some("bad size")),
        ),
        (
            json!({"error": "Invalid style"}),
            (None, Some("Invalid style")),
        ),
        (
            json!({"error": {"message": "no such model", "code": 404}}),
            (Some("404"), Some("no such model")),
        ),
        (
            json!({"detail": "Not authenticated"}),
            (None, Some("Not authenticated")),
        ),
        (
            json!({"detail": [{"loc": ["body", "n"], "msg": "too big"}, {"msg": "and more"}]}),
            (None, Some("too big; and more")),
        ),
        (json!({"message": ""}), (None, None)),
    ];
    for (error, (code, message)) in cases {
        let (read_code, read_message) = read_error(&body(error.clone()));
        assert_eq!(
            (read_code.as_deref(), read_message.as_deref()),
            (code, message),
            "{error}"
        );
    }
    assert_eq!(read_error(b"<html>502</html>"), (None, None));
}

#[test]
fn a_4xx_that_speaks_of_moderation_is_a_content_refusal_and_only_then() {
    for (status, error) in [
        (
            400,
            json!({"code": "nsfw_content", "message": "Generation failed"}),
        ),
        (
            422,
            json!({"message": "The prompt contains inappropriate content"}),
        ),
        (400, json!({"error": {"message": "Blocked by moderation"}})),
    ] {
        let refusal = error_from_status(status, None, &body(error.clone()));
        assert!(
            matches!(refusal, ProviderError::ModerationBlocked { .. }),
            "{error}: {refusal:?}"
        );
    }
    let invalid = error_from_status(
        400,
        None,
        &body(json!({"message": "size is not supported"})),
    );
    assert!(
        matches!(invalid, ProviderError::InvalidRequest { .. }),
        "{invalid:?}"
    );
    // A server failure that happens to name the safety service is still a server failure.
    let failed = error_from_status(500, None, &body(json!({"message": "safety service down"})));
    assert!(matches!(failed, ProviderError::Failed { .. }), "{failed:?}");
}

#[test]
fn quota_rate_limits_and_rejected_keys_map_by_status_without_the_upstream_text() {
    let quota = error_from_status(402, None, &body(json!({"code": "not_enough_credits"})));
    assert!(
        matches!(quota, ProviderError::QuotaExhausted { .. }),
        "{quota:?}"
    );
    let wait = Some(Duration::from_secs(3));
    assert_eq!(
        error_from_status(429, wait, &body(json!({"message": "slow down, nsfw"}))),
        ProviderError::RateLimited { retry_after: wait }
    );
    assert_eq!(
        error_from_status(401, None, &body(json!({"message": "bad token rc-secret"}))),
        ProviderError::Unauthorized { status: 401 }
    );
    let html = error_from_status(502, None, b"<html>\n bad   gateway</html>");
    assert_eq!(
        html,
        upstream::failed("upstream answered HTTP 502: <html> bad gateway</html>")
    );
}

#[test]
fn a_generation_answer_keeps_its_order_and_its_units() {
    let answer = body(json!({"created": 1, "credits": 80, "data": [
        {"image_id": "a", "url": "https://img.recraft.ai/a.svg", "revised_prompt": "a fox"},
        {"image_id": "b", "b64_json": "iVBORw=="},
    ]}));
    let Answer { images, credits } = parse_generation(&answer).unwrap();
    assert_eq!(
        images[0].source,
        ImageSource::Url("https://img.recraft.ai/a.svg".into())
    );
    assert_eq!(images[0].revised_prompt.as_deref(), Some("a fox"));
    assert!(matches!(images[1].source, ImageSource::Inline(_)));
    assert_eq!(credits, Some(json!(80)));
    for bad in [
        json!({"credits": 1}),
        json!({"data": []}),
        json!({"data": [{"image_id": "x"}]}),
    ] {
        assert!(
            matches!(
                parse_generation(&body(bad.clone())),
                Err(ProviderError::Failed { .. })
            ),
            "{bad}"
        );
    }
}

#[test]
fn a_tool_answer_is_one_singular_image() {
    let answer = body(json!({"created": 1, "credits": 10,
                             "image": {"image_id": "v", "url": "https://img.recraft.ai/v.svg"}}));
    let Answer { images, credits } = parse_tool(&answer).unwrap();
    assert_eq!(images.len(), 1);
    assert_eq!(
        images[0].source,
        ImageSource::Url("https://img.recraft.ai/v.svg".into())
    );
    assert_eq!(credits, Some(json!(10)));
    // `data[]` is the generation's shape, not a tool's.
    let listed = body(json!({"data": [{"url": "https://img.recraft.ai/v.svg"}]}));
    for bad in [
        listed,
        body(json!({"image": {"image_id": "v"}})),
        b"{\"image\":".to_vec(),
    ] {
        assert!(matches!(
            parse_tool(&bad),
            Err(ProviderError::Failed { .. })
        ));
    }
}

#[test]
fn svg_and_raster_results_are_images_and_an_html_page_is_not() {
    let svg = Bytes::from_static(b"<svg xmlns=\"http://www.w3.org/2000/svg\"/>");
    let image = generated_image(svg, Some("application/octet-stream"), Some("svg"), None).unwrap();
    assert_eq!(image.mime, "image/svg+xml");
    let png = Bytes::from_static(b"\x89PNG\r\n\x1a\n....");
    let image = generated_image(png, None, None, Some("  ".into())).unwrap();
    assert_eq!(
        (image.mime.as_str(), image.revised_prompt),
        ("image/png", None)
    );
    let page = Bytes::from_static(b"<!doctype html><p>expired</p>");
    assert!(generated_image(page, Some("text/html"), None, None).is_err());
}

#[test]
fn input_mappings_are_read_strictly() {
    let model = |input: Value| -> ModelSpec {
        serde_json::from_value(
            json!({"id": "m", "provider": "recraft", "upstream": "vectorize",
                                      "upstream_input": input}),
        )
        .unwrap()
    };
    assert!(!input_mapping(&model(json!({}))).unwrap().tool);
    let mapping =
        input_mapping(&model(json!({"tool": true, "background": "transparent"}))).unwrap();
    assert!(mapping.tool && mapping.background.as_deref() == Some("transparent"));
    let typo = input_mapping(&model(json!({"tools": true})));
    assert!(
        matches!(typo, Err(ProviderError::Failed { .. })),
        "{typo:?}"
    );
}
