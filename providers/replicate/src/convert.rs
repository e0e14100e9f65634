//! Pure conversions: a validated request into a prediction's `input` (driven by the catalog's
//! `upstream_input` data, never by model ids), prediction bodies into outcomes, output bytes
//! into images, and upstream failures into [`ProviderError`]s. No I/O here.

use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use imgproxy_core::{
    upstream::{self, failed, short},
    GeneratedImage, ModelSpec, ProviderError, ProviderRequest,
};
use serde_json::{Map, Value};

use crate::wire::{InputMapping, Prediction, Problem, ReferenceForm};

/// Words of a failed prediction's error that mean the content was refused. Replicate has no
/// structured moderation signal: models report it in their error text ("NSFW content
/// detected", "flagged as sensitive (E005)", "safety filter").
const MODERATION_WORDS: [&str; 5] = ["safety", "nsfw", "sensitive", "flagged", "moderation"];

/// The model's `upstream_input` table, typed. A bad table is the operator's catalog error.
pub(crate) fn mapping(model: &ModelSpec) -> Result<InputMapping, ProviderError> {
    upstream::upstream_input(model)
}

/// The `input` object of one prediction.
///
/// Validated parameters first (renamed and value-mapped as the mapping says), then the
/// catalog's constant `upstream_params`, then reference images, the count and the prompt, so
/// that no parameter can change what is asked for or how many images are billed.
pub(crate) fn input(
    call: &ProviderRequest<'_>,
    mapping: &InputMapping,
) -> Result<Map<String, Value>, ProviderError> {
    let request = call.request;
    let mut input = Map::new();
    for (name, value) in &request.params {
        let is_size = name == "size";
        // `auto` means the upstream's default; a `WxH` goes where `custom_size` says.
        if mapping.omit.contains(name)
            || (is_size && (value.as_str() == Some("auto") || mapping.custom_size.is_some()))
        {
            continue;
        }
        // Fanned-out calls each get their own seed, so that they make distinct images.
        let value = match call.seed() {
            Some(seed) if name == "seed" => Value::from(seed),
            _ => value.clone(),
        };
        let value = value
            .as_str()
            .and_then(|v| mapping.values.get(name)?.get(v))
            .cloned()
            .unwrap_or(value);
        let field = mapping.rename.get(name).unwrap_or(name);
        input.insert(field.clone(), value);
    }
    if let (Some(custom), Some(size)) = (&mapping.custom_size, request.size()) {
        input.insert(custom.field.clone(), Value::from(custom.value.as_str()));
        input.insert(custom.width.clone(), Value::from(size.width));
        input.insert(custom.height.clone(), Value::from(size.height));
    }
    input.extend(request.model.upstream_params.clone());

    if !call.references.is_empty() {
        let Some(target) = &mapping.references else {
            return Err(invalid("images", "this model takes no reference images"));
        };
        let urls: Vec<Value> = call
            .references
            .iter()
            .map(|r| Value::from(r.data_url()))
            .collect();
        let value = match (target.form, urls.as_slice()) {
            (ReferenceForm::Single, [one]) => one.clone(),
            (ReferenceForm::Single, _) => {
                return Err(invalid("images", "this model takes one reference image"))
            }
            (ReferenceForm::List, _) => Value::Array(urls),
        };
        input.insert(target.field.clone(), value);
    }

    if call.n > 1 {
        let Some(count) = &mapping.n else {
            return Err(failed(format!(
                "the catalog entry of `{}` makes several images per call but maps no count",
                request.model.id
            )));
        };
        let total = call.n as usize + call.references.len();
        if let Some(max) = count
            .max_with_references
            .filter(|max| total > *max as usize)
        {
            return Err(invalid(
                "n",
                &format!("n plus the reference images may be at most {max} for this model"),
            ));
        }
        input.insert(count.field.clone(), Value::from(call.n));
        input.extend(count.when_several.clone());
    }
    input.insert("prompt".into(), Value::from(request.prompt.as_str()));
    Ok(input)
}

fn invalid(param: &str, message: &str) -> ProviderError {
    ProviderError::InvalidRequest {
        message: message.to_owned(),
        param: Some(param.to_owned()),
        code: None,
    }
}

/// Parses a 2xx prediction body; any other shape is a malformed answer.
pub(crate) fn prediction(body: &[u8]) -> Result<Prediction, ProviderError> {
    serde_json::from_slice(body).map_err(upstream::malformed)
}

/// Whether the prediction has ended (`aborted` is not in the schema, but clients see it).
pub(crate) fn is_terminal(status: &str) -> bool {
    matches!(status, "succeeded" | "failed" | "canceled" | "aborted")
}

/// The output URLs of an ended prediction, or why it has none.
pub(crate) fn finished(prediction: &Prediction) -> Result<Vec<String>, ProviderError> {
    match prediction.status.as_str() {
        "succeeded" => output_urls(prediction.output.as_ref()),
        "failed" => Err(failure(prediction.error.as_ref())),
        other => Err(failed(format!("the prediction was {other} upstream"))),
    }
}

/// `output`: one URL or an array of URLs.
fn output_urls(output: Option<&Value>) -> Result<Vec<String>, ProviderError> {
    let urls = match output {
        Some(Value::String(url)) => vec![url.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| failed("malformed upstream response: `output` holds a non-URL"))?,
        _ => {
            return Err(failed(
                "malformed upstream response: a succeeded prediction without a URL `output`",
            ))
        }
    };
    if urls.is_empty() {
        return Err(failed("the upstream returned no image"));
    }
    Ok(urls)
}

/// A failed prediction: a content refusal, or any other model error.
fn failure(error: Option<&Value>) -> ProviderError {
    let text = match error {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    };
    let lower = text.to_lowercase();
    if MODERATION_WORDS.iter().any(|word| lower.contains(word)) {
        return ProviderError::ModerationBlocked {
            message: format!("the upstream refused the content: {}", short(&text)),
        };
    }
    if text.is_empty() {
        failed("the prediction failed upstream")
    } else {
        failed(format!("the prediction failed upstream: {}", short(&text)))
    }
}

/// The error of a non-2xx answer: the problem's `detail` (else `error`, `title`, or the raw
/// text) through the generic status mapping, 422 being an invalid request.
pub(crate) fn status_error(
    status: u16,
    retry_after: Option<Duration>,
    body: &[u8],
) -> ProviderError {
    let problem: Problem = serde_json::from_slice(body).unwrap_or_default();
    let message = problem
        .detail
        .or(problem.error)
        .or(problem.title)
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_owned());
    upstream::status_error(status, retry_after, &message)
}

/// A downloaded output as an image. The MIME type comes from the bytes (SVG included), as
/// `Content-Type` is often `application/octet-stream`; it is the fallback for images the
/// sniffer does not know.
pub(crate) fn image(
    bytes: Bytes,
    content_type: Option<&str>,
) -> Result<GeneratedImage, ProviderError> {
    upstream::sniffed_image(
        bytes,
        &[content_type],
        "the upstream output is not an image",
    )
}

/// Decodes a `data:` output (sync mode may inline small files) within `max_bytes`.
pub(crate) fn data_url(url: &str, max_bytes: usize) -> Result<Bytes, ProviderError> {
    let Some((header, data)) = url.split_once(',') else {
        return Err(failed(
            "malformed upstream response: a `data:` output without data",
        ));
    };
    if !header.ends_with(";base64") {
        return Err(failed(
            "malformed upstream response: a `data:` output not in base64",
        ));
    }
    // base64 is 4 characters per 3 bytes: reject before decoding anything too large.
    if data.len() / 4 * 3 > max_bytes {
        return Err(failed(format!(
            "a generated image is larger than {max_bytes} bytes"
        )));
    }
    base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map(Bytes::from)
        .map_err(|e| failed(format!("malformed upstream response: `data:` output: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use imgproxy_core::Catalog;

    #[test]
    fn every_replicate_catalog_entry_has_a_valid_mapping() {
        let catalog = Catalog::embedded().unwrap_or_default();
        let models: Vec<_> = catalog
            .models()
            .filter(|m| m.provider == crate::PROVIDER_ID && m.retired.is_none())
            .collect();
        assert!(models.len() >= 7);
        for model in models {
            let mapping = mapping(model);
            assert!(mapping.is_ok(), "{}: {mapping:?}", model.id);
            assert!(model.pricing.is_some(), "{} has no price", model.id);
            assert!(
                model.deadline_secs.is_some(),
                "{} has no deadline",
                model.id
            );
        }
    }

    #[test]
    fn failed_predictions_split_into_moderation_and_failure() {
        let moderated = failure(Some(&Value::from("Prompt was FLAGGED as sensitive (E005)")));
        assert!(matches!(moderated, ProviderError::ModerationBlocked { .. }));
        let other = failure(Some(&Value::from("CUDA out of memory")));
        assert!(
            matches!(&other, ProviderError::Failed { message } if message.contains("CUDA")),
            "{other:?}"
        );
        assert!(matches!(failure(None), ProviderError::Failed { .. }));
    }

    #[test]
    fn outputs_are_one_url_or_a_list() {
        let one = output_urls(Some(&Value::from("https://x/1.png")));
        assert_eq!(one, Ok(vec!["https://x/1.png".to_owned()]));
        let list = output_urls(Some(&serde_json::json!(["https://x/1", "https://x/2"])));
        assert_eq!(list.map(|l| l.len()), Ok(2));
        assert!(output_urls(Some(&serde_json::json!([1]))).is_err());
        assert!(output_urls(None).is_err());
        assert!(output_urls(Some(&serde_json::json!([]))).is_err());
    }

    #[test]
    fn problem_details_give_the_message() {
        let body = serde_json::json!({
            "title": "Input validation failed",
            "status": 422,
            "detail": "- input.aspect_ratio: must be one of"
        });
        let error = status_error(422, None, body.to_string().as_bytes());
        let ProviderError::InvalidRequest { message, .. } = &error else {
            panic!("{error:?}");
        };
        assert!(message.contains("input.aspect_ratio"), "{message}");
        let error = status_error(500, None, br#"{"error":"boom"}"#);
        assert!(matches!(&error, ProviderError::Failed { message } if message.contains("boom")));
        assert_eq!(
            status_error(401, None, b"r8_secret"),
            ProviderError::Unauthorized { status: 401 }
        );
    }

    #[test]
    fn data_url_outputs_decode_within_the_limit() {
        let url = "data:application/octet-stream;base64,aGVsbG8=";
        assert_eq!(data_url(url, 100), Ok(Bytes::from_static(b"hello")));
        assert!(data_url(url, 2).is_err());
        assert!(data_url("data:text/plain,hello", 100).is_err());
    }

    #[test]
    fn svg_passes_through_and_unknown_bytes_fail() {
        let svg = image(
            Bytes::from_static(b"<svg xmlns='http://www.w3.org/2000/svg'/>"),
            None,
        );
        assert_eq!(svg.map(|i| i.mime), Ok("image/svg+xml".to_owned()));
        let html = image(Bytes::from_static(b"<html>"), Some("text/html"));
        assert!(html.is_err());
    }

    #[test]
    fn the_key_never_survives_in_messages() {
        let error = failed("bad token r8_abc").without_secret("r8_abc");
        assert_eq!(error, failed("bad token [redacted]"));
    }
}
