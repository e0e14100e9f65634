//! Conversions between imgproxy's types and the Gemini API: the `generateContent` body (driven
//! by the catalog's `upstream_input` mapping) and the 200 response into images or a refusal.
//! Pure functions only; every byte sent or received goes through `client`, and non-2xx
//! answers are `error`'s job.

use std::collections::BTreeMap;

use base64::Engine as _;
use bytes::Bytes;
use imgproxy_core::{
    provider::{sniff_mime, ImageMeta},
    upstream::{failed, malformed, short, upstream_input},
    GeneratedImage, Generation, ModelSpec, ProviderError, ProviderRequest, Usage,
};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::wire::GenerateContentResponse;

/// Finish reasons with which Google refuses to hand out the image it made (or would make).
const BLOCKING_FINISH_REASONS: [&str; 8] = [
    "SAFETY",
    "PROHIBITED_CONTENT",
    "IMAGE_SAFETY",
    "IMAGE_PROHIBITED_CONTENT",
    "BLOCKLIST",
    "SPII",
    "RECITATION",
    "IMAGE_RECITATION",
];

/// A model's `upstream_input` table: where each validated parameter goes in
/// `generationConfig`. Every parameter the model takes must be mapped, so that a catalog edit
/// can never make the adapter drop one silently.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InputMapping {
    /// `generationConfig.responseModalities`.
    #[serde(default = "image_only")]
    response_modalities: Vec<String>,
    /// Parameter → `generationConfig.imageConfig` field.
    #[serde(default)]
    image_config: BTreeMap<String, FieldMapping>,
    /// Parameter → `generationConfig` field.
    #[serde(default)]
    generation_config: BTreeMap<String, FieldMapping>,
}

/// One parameter's upstream field, and the upstream spelling of its values where it differs.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FieldMapping {
    field: String,
    #[serde(default)]
    values: BTreeMap<String, Value>,
}

fn image_only() -> Vec<String> {
    vec!["IMAGE".into()]
}

impl InputMapping {
    fn of(model: &ModelSpec) -> Result<Self, ProviderError> {
        upstream_input(model)
    }
}

/// The JSON body of `generateContent` for one upstream call (one image).
///
/// `candidateCount` is never sent: Gemini image models reject more than one candidate, so the
/// gateway fans `n` out over calls. The catalog's `upstream_params` are the operator's
/// constants (`safetySettings`, `tools`, ...), merged in recursively; they cannot replace the
/// prompt and reference images in `contents`.
pub(crate) fn request_body(call: &ProviderRequest<'_>) -> Result<Value, ProviderError> {
    let validated = call.request;
    let model = &validated.model;
    let mapping = InputMapping::of(model)?;

    let mut image_config = Map::new();
    let mut generation_config = Map::new();
    generation_config.insert(
        "responseModalities".into(),
        json!(mapping.response_modalities),
    );
    for (name, value) in &validated.params {
        let value = match name.as_str() {
            "seed" => call
                .seed()
                .map_or_else(|| value.clone(), |seed| json!(int32_seed(seed))),
            _ => value.clone(),
        };
        let (target, field) = if let Some(field) = mapping.image_config.get(name) {
            (&mut image_config, field)
        } else if let Some(field) = mapping.generation_config.get(name) {
            (&mut generation_config, field)
        } else {
            return Err(failed(format!(
                "the catalog entry of `{}` does not say where parameter `{name}` goes upstream",
                model.id
            )));
        };
        let value = value
            .as_str()
            .and_then(|text| field.values.get(text))
            .cloned()
            .unwrap_or(value);
        target.insert(field.field.clone(), value);
    }
    if !image_config.is_empty() {
        generation_config.insert("imageConfig".into(), Value::Object(image_config));
    }

    let mut parts = vec![json!({"text": validated.prompt})];
    // Google takes no image URLs here, only inline bytes or its own Files API.
    parts.extend(
        call.references
            .iter()
            .map(|image| json!({"inlineData": {"mimeType": image.mime, "data": image.base64()}})),
    );
    let mut body = json!({"generationConfig": generation_config});
    merge(&mut body, &Value::Object(model.upstream_params.clone()));
    if let Some(config) = body
        .get_mut("generationConfig")
        .and_then(Value::as_object_mut)
    {
        config.remove("candidateCount");
    }
    body["contents"] = json!([{"role": "user", "parts": parts}]);
    Ok(body)
}

/// Gemini's seed is an `int32`; the per-call offset can push a large seed past it, so seeds
/// wrap into `0..=i32::MAX` (the catalog admits only that range, which then passes unchanged).
fn int32_seed(seed: i64) -> i64 {
    seed.rem_euclid(1 << 31)
}

/// Merges `extra` into `base`: objects key by key, anything else replaced.
fn merge(base: &mut Value, extra: &Value) {
    match (base, extra) {
        (Value::Object(base), Value::Object(extra)) => {
            for (key, value) in extra {
                merge(base.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
        (base, extra) => *base = extra.clone(),
    }
}

/// Reads a 200 body: the final images, or why there are none.
///
/// Thought parts are interim images of Gemini 3 models, and text parts are the model talking
/// about its image; neither is a result. A blocked prompt or a blocking finish reason is a
/// moderation refusal; any other answer without an image (`NO_IMAGE`, `IMAGE_OTHER`, `STOP`
/// with text only, no candidates) is a failure naming Google's reason.
pub(crate) fn parse_response(body: &[u8]) -> Result<Generation, ProviderError> {
    let response: GenerateContentResponse = serde_json::from_slice(body).map_err(malformed)?;
    if let Some(feedback) = &response.prompt_feedback {
        if let Some(reason) = &feedback.block_reason {
            return Err(ProviderError::ModerationBlocked {
                message: with_detail(
                    format!("the upstream's safety system blocked the prompt ({reason})"),
                    feedback.block_reason_message.as_deref(),
                ),
            });
        }
    }
    let mut images = Vec::new();
    let parts = response
        .candidates
        .iter()
        .filter_map(|c| c.content.as_ref())
        .flat_map(|content| &content.parts);
    for part in parts.filter(|part| !part.thought) {
        let Some(blob) = &part.inline_data else {
            continue;
        };
        let declared = blob
            .mime_type
            .as_deref()
            .map(|m| m.split(';').next().unwrap_or(m).trim());
        if declared.is_some_and(|m| !m.starts_with("image/")) {
            continue;
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(blob.data.trim())
            .map_err(|e| malformed(format!("`inlineData.data` is not base64: {e}")))?;
        let mime = sniff_mime(&bytes).or(declared).map(str::to_owned);
        let (false, Some(mime)) = (bytes.is_empty(), mime) else {
            return Err(malformed("an inline part holds no recognisable image"));
        };
        images.push(GeneratedImage {
            bytes: Bytes::from(bytes),
            mime,
            revised_prompt: None,
        });
    }
    if images.is_empty() {
        return Err(no_image(&response));
    }
    let output_format = images[0].mime.strip_prefix("image/").map(str::to_owned);
    Ok(Generation {
        images,
        usage: response.usage_metadata.map(usage),
        meta: ImageMeta {
            output_format,
            ..ImageMeta::default()
        },
    })
}

/// Why an answer carries no image: a moderation refusal, or a failure naming the reason.
fn no_image(response: &GenerateContentResponse) -> ProviderError {
    let Some(candidate) = response.candidates.first() else {
        return failed("the upstream returned no image (no candidates)");
    };
    let reason = candidate.finish_reason.as_deref().unwrap_or("none given");
    let detail = candidate.finish_message.as_deref();
    if BLOCKING_FINISH_REASONS.contains(&reason) {
        return ProviderError::ModerationBlocked {
            message: with_detail(
                format!("the upstream's safety system blocked the image ({reason})"),
                detail,
            ),
        };
    }
    failed(with_detail(
        format!("the upstream returned no image (finishReason {reason})"),
        detail,
    ))
}

/// Google's `usageMetadata` as OpenAI `usage` (camelCase or snake_case names); the other
/// counts pass through in `extra` under Google's names.
fn usage(mut metadata: Map<String, Value>) -> Usage {
    let mut take = |camel: &str, snake: &str| {
        let camel = metadata.remove(camel);
        let snake = metadata.remove(snake);
        camel.or(snake).and_then(|count| count.as_u64())
    };
    let input_tokens = take("promptTokenCount", "prompt_token_count");
    let output_tokens = take("candidatesTokenCount", "candidates_token_count");
    let total_tokens = take("totalTokenCount", "total_token_count");
    Usage {
        input_tokens,
        output_tokens,
        total_tokens,
        extra: metadata,
    }
}

/// `message`, followed by Google's explanation when it gave one.
pub(crate) fn with_detail(message: String, detail: Option<&str>) -> String {
    match detail.map(str::trim).filter(|d| !d.is_empty()) {
        Some(detail) => format!("{message}: {}", short(detail)),
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_stay_within_int32() {
        assert_eq!(int32_seed(42), 42);
        assert_eq!(int32_seed(i64::from(i32::MAX)), i64::from(i32::MAX));
        assert_eq!(int32_seed(i64::from(i32::MAX) + 2), 1);
    }

    #[test]
    fn constants_merge_into_nested_objects() {
        let mut body = json!({"generationConfig": {"responseModalities": ["IMAGE"]}});
        merge(
            &mut body,
            &json!({"generationConfig": {"temperature": 1}, "tools": []}),
        );
        assert_eq!(
            body,
            json!({"generationConfig": {"responseModalities": ["IMAGE"], "temperature": 1},
                   "tools": []})
        );
    }

    #[test]
    fn unreadable_bodies_are_malformed() {
        for body in [&b"{\"candidates\": 3}"[..], b"<html>", b""] {
            let Err(ProviderError::Failed { message }) = parse_response(body) else {
                panic!("{body:?} should fail");
            };
            assert!(
                message.starts_with("malformed upstream response"),
                "{message}"
            );
        }
        let not_base64 = br#"{"candidates": [{"content": {"parts": [{"inlineData": {"mimeType": "image/png", "data": "!!"}}]}}]}"#;
        assert!(matches!(
            parse_response(not_base64),
            Err(ProviderError::Failed { .. })
        ));
    }
}
