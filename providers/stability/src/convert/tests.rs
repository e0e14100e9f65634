use bytes::Bytes;
use imgproxy_core::{validate::validate, Catalog, ReferenceImage, ValidatedRequest};
use reqwest::header::HeaderValue;
use serde_json::json;

use super::*;

/// `body` validated against the embedded catalog, as the gateway hands it to the adapter.
fn validated(body: serde_json::Value) -> ValidatedRequest {
    let catalog = Catalog::embedded().unwrap();
    validate(
        &catalog,
        serde_json::from_value(body).unwrap(),
        "none",
        &|_| true,
    )
    .unwrap()
}

fn call<'a>(
    request: &'a ValidatedRequest,
    references: &'a [ReferenceImage],
) -> ProviderRequest<'a> {
    ProviderRequest {
        request,
        n: 1,
        first_index: 0,
        references,
        mask: None,
        partials: None,
        jobs: None,
    }
}

fn fields_of(
    call: &ProviderRequest<'_>,
    offset: u32,
) -> Result<BTreeMap<String, String>, ProviderError> {
    let mapping = input_mapping(&call.request.model)?;
    text_fields(call, offset, &mapping)
}

fn png_reference() -> ReferenceImage {
    ReferenceImage {
        bytes: Bytes::from_static(b"\x89PNG\r\n\x1a\n"),
        mime: "image/png".into(),
    }
}

#[test]
fn seeds_are_offset_per_image_within_stabilitys_range_and_zero_stays_random() {
    let seeded =
        |seed: i64| validated(json!({"model": "stable-image-core", "prompt": "p", "seed": seed}));
    let seed_of = |request: &ValidatedRequest, first_index: u32, offset: u32| {
        upstream_seed(
            &ProviderRequest {
                first_index,
                ..call(request, &[])
            },
            offset,
        )
    };
    let request = seeded(42);
    assert_eq!(seed_of(&request, 0, 0), Some(42));
    assert_eq!(seed_of(&request, 2, 1), Some(45));
    let request = seeded(MAX_SEED);
    assert_eq!(seed_of(&request, 0, 0), Some(MAX_SEED));
    assert_eq!(seed_of(&request, 1, 0), Some(1));
    let request = seeded(0);
    assert_eq!(seed_of(&request, 3, 1), Some(0));
}

#[test]
fn sd3_sends_its_variant_as_model_and_an_image_to_image_mode_with_a_strength() {
    let request = validated(json!({"model": "sd3.5-medium", "prompt": "a fox",
                                   "images": ["data:image/png;base64,iVBORw0KGgo="]}));
    let references = [png_reference()];
    let fields = fields_of(&call(&request, &references), 0).unwrap();
    let expected: BTreeMap<String, String> = [
        ("model", "sd3.5-medium"),
        ("mode", "image-to-image"),
        ("output_format", "png"),
        ("prompt", "a fox"),
        ("strength", "0.5"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(fields, expected);

    let request =
        validated(json!({"model": "sd3.5-large", "prompt": "a fox", "size": "1536x1024"}));
    let fields = fields_of(&call(&request, &[]), 0).unwrap();
    assert_eq!(fields["mode"], "text-to-image");
    assert_eq!(fields["aspect_ratio"], "3:2");
    assert!(!fields.contains_key("strength"), "{fields:?}");
}

#[test]
fn ultra_sends_neither_model_nor_mode_and_keeps_the_clients_strength() {
    let request = validated(
        json!({"model": "stable-image-ultra", "prompt": "a fox", "strength": 0.25,
                                   "images": ["data:image/png;base64,iVBORw0KGgo="]}),
    );
    let references = [png_reference()];
    let fields = fields_of(&call(&request, &references), 0).unwrap();
    assert_eq!(fields.get("strength").map(String::as_str), Some("0.25"));
    assert!(
        !fields.contains_key("model") && !fields.contains_key("mode"),
        "{fields:?}"
    );
}

#[test]
fn a_strength_without_an_image_or_a_second_image_is_refused_not_dropped() {
    let request = validated(json!({"model": "stable-image-ultra", "prompt": "p", "strength": 0.3}));
    let refused = fields_of(&call(&request, &[]), 0).unwrap_err();
    assert!(
        matches!(&refused, ProviderError::InvalidRequest { param: Some(p), .. } if p == "strength"),
        "{refused:?}"
    );
    let request = validated(json!({"model": "stable-image-ultra", "prompt": "p"}));
    let two = [png_reference(), png_reference()];
    assert!(matches!(
        fields_of(&call(&request, &two), 0),
        Err(ProviderError::InvalidRequest { .. })
    ));
    let request = validated(json!({"model": "stable-image-core", "prompt": "p"}));
    assert!(matches!(
        fields_of(&call(&request, &two[..1]), 0),
        Err(ProviderError::Unsupported { .. })
    ));
}

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.insert(*name, HeaderValue::from_static(value));
    }
    map
}

const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";

#[test]
fn bytes_are_the_image_unless_the_filter_flagged_them() {
    let image = read_answer(
        &headers(&[
            ("content-type", "image/png"),
            ("finish-reason", "SUCCESS"),
            ("seed", "7"),
        ]),
        Bytes::from_static(PNG),
    )
    .unwrap();
    assert_eq!(image.mime, "image/png");
    let filtered = read_answer(
        &headers(&[
            ("content-type", "image/png"),
            ("finish-reason", "CONTENT_FILTERED"),
        ]),
        Bytes::from_static(PNG),
    );
    assert!(
        matches!(filtered, Err(ProviderError::ModerationBlocked { .. })),
        "{filtered:?}"
    );
    let odd = read_answer(
        &headers(&[("finish-reason", "ERROR")]),
        Bytes::from_static(PNG),
    );
    assert!(matches!(odd, Err(ProviderError::Failed { message }) if message.contains("ERROR")));
    let page = read_answer(
        &headers(&[("content-type", "text/html")]),
        Bytes::from_static(b"<html>"),
    );
    assert!(
        matches!(page, Err(ProviderError::Failed { .. })),
        "{page:?}"
    );
}

#[test]
fn the_json_form_is_read_too_its_field_flagging_the_image() {
    let json_headers = headers(&[("content-type", "application/json")]);
    let body = serde_json::to_vec(&json!({
        "image": base64::engine::general_purpose::STANDARD.encode(PNG),
        "finish_reason": "SUCCESS", "seed": 1
    }))
    .unwrap();
    assert_eq!(
        read_answer(&json_headers, Bytes::from(body)).unwrap().mime,
        "image/png"
    );
    let filtered =
        serde_json::to_vec(&json!({"image": "AAAA", "finish_reason": "CONTENT_FILTERED"})).unwrap();
    assert!(matches!(
        read_answer(&json_headers, Bytes::from(filtered)),
        Err(ProviderError::ModerationBlocked { .. })
    ));
    for broken in [
        &br#"{"image": "!!", "finish_reason": "SUCCESS"}"#[..],
        b"{\"image\": \"iVBO",
    ] {
        let Err(ProviderError::Failed { message }) =
            read_answer(&json_headers, Bytes::copy_from_slice(broken))
        else {
            panic!("{broken:?} should fail");
        };
        assert!(
            message.starts_with("malformed upstream response"),
            "{message}"
        );
    }
}
