//! Conversions between imgproxy's types and BFL's wire format: the submit body (driven by the
//! catalog's `upstream_input`), submit and poll answers, and non-2xx answers into
//! [`ProviderError`]s. Pure functions only; every byte sent or received goes through `client`.

use std::time::Duration;

use bytes::Bytes;
use imgproxy_core::{
    dimensions::Size,
    upstream::{self, failed, short, FastApiError, ValidationItem},
    GeneratedImage, ModelSpec, ProviderError, ProviderRequest,
};
use serde_json::{Map, Value};

use crate::wire::{InputMapping, PollResponse, ReferenceEncoding, SizeField, SubmitResponse};

/// The model's `upstream_input`, typed. A bad table is the operator's catalog error.
pub(crate) fn input_mapping(model: &ModelSpec) -> Result<InputMapping, ProviderError> {
    upstream::upstream_input(model)
}

/// The JSON body of `POST /v1/<model>` for task number `offset` of `call`.
///
/// Validated parameters go under their own names unless the mapping renames them or moves
/// them (`size` → `width`/`height`); the seed is offset per task so that fanned-out tasks
/// differ; the catalog's `upstream_params` come next and the prompt last, so nothing can
/// change what is asked for.
pub(crate) fn submit_body(
    call: &ProviderRequest<'_>,
    offset: u32,
    mapping: &InputMapping,
) -> Result<Value, ProviderError> {
    let validated = call.request;
    let field = |name: &str| mapping.rename.get(name).cloned().unwrap_or(name.to_owned());
    let mut body = Map::new();
    for (name, value) in &validated.params {
        match name.as_str() {
            "seed" => continue,
            "size" if mapping.size == Some(SizeField::WidthHeight) => {
                insert_width_height(&mut body, value, &field)?;
                continue;
            }
            _ => {}
        }
        let mapped = value
            .as_str()
            .and_then(|text| mapping.values.get(name)?.get(text))
            .unwrap_or(value);
        body.insert(field(name), mapped.clone());
    }
    if let Some(seed) = call.seed() {
        body.insert(field("seed"), Value::from(seed.wrapping_add(offset.into())));
    }
    if call.references.len() > mapping.reference_fields.len() {
        return Err(ProviderError::InvalidRequest {
            message: format!(
                "model `{}` takes at most {} reference images",
                validated.model.id,
                mapping.reference_fields.len()
            ),
            param: Some("images".into()),
            code: None,
        });
    }
    for (name, image) in mapping.reference_fields.iter().zip(call.references) {
        let encoded = match mapping.reference_encoding {
            ReferenceEncoding::Base64 => image.base64(),
            ReferenceEncoding::DataUrl => image.data_url(),
        };
        body.insert(name.clone(), Value::from(encoded));
    }
    body.extend(validated.model.upstream_params.clone());
    body.insert("prompt".into(), Value::from(validated.prompt.as_str()));
    Ok(Value::Object(body))
}

/// `WxH` as integer `width` and `height`; `auto` leaves both to BFL's default.
fn insert_width_height(
    body: &mut Map<String, Value>,
    value: &Value,
    field: &dyn Fn(&str) -> String,
) -> Result<(), ProviderError> {
    let text = value.as_str().unwrap_or_default();
    if text == "auto" {
        return Ok(());
    }
    // Validation already checked the size against the catalog; this only guards the type.
    let size = Size::parse(text).ok_or_else(|| ProviderError::InvalidRequest {
        message: format!("size `{text}` is not `WxH`"),
        param: Some("size".into()),
        code: None,
    })?;
    body.insert(field("width"), Value::from(size.width));
    body.insert(field("height"), Value::from(size.height));
    Ok(())
}

/// Reads a 2xx submit answer.
pub(crate) fn read_submit(body: &[u8]) -> Result<SubmitResponse, ProviderError> {
    let submitted: SubmitResponse =
        serde_json::from_slice(body).map_err(|e| malformed(&e.to_string()))?;
    if submitted.id.trim().is_empty() {
        return Err(malformed("empty task `id`"));
    }
    Ok(submitted)
}

/// Where a task stands after one poll.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TaskState {
    /// Still running (`Pending`, or a status this adapter does not know).
    Pending,
    /// Done: the sample's delivery URL.
    Ready(String),
}

/// Reads a 2xx poll answer. `Ready` needs `result.sample`; the moderation statuses are
/// refusals of the content; `Error`, `Failed` and `Task not found` end the task.
pub(crate) fn read_poll(body: &[u8]) -> Result<TaskState, ProviderError> {
    let answer: PollResponse =
        serde_json::from_slice(body).map_err(|e| malformed(&e.to_string()))?;
    let Some(status) = answer.status.or(answer.state) else {
        return Err(malformed("no `status`"));
    };
    // An `Error` status carries its text in `error`; other statuses may explain in `details`.
    let details = answer
        .error
        .filter(|e| !e.is_null())
        .or(answer.details)
        .filter(|d| !d.is_null())
        .map(|d| match d {
            Value::String(text) => format!(": {}", short(&text)),
            other => format!(": {}", short(&other.to_string())),
        })
        .unwrap_or_default();
    match status.trim().to_ascii_lowercase().as_str() {
        "ready" => {
            let sample = answer
                .result
                .as_ref()
                .and_then(|r| r.get("sample"))
                .and_then(Value::as_str)
                .filter(|s| !s.trim().is_empty());
            match sample {
                Some(url) => Ok(TaskState::Ready(url.to_owned())),
                None => Err(malformed("a `Ready` task without `result.sample`")),
            }
        }
        "request moderated" => Err(ProviderError::ModerationBlocked {
            message: format!("BFL's moderation refused the request (Request Moderated){details}"),
        }),
        "content moderated" => Err(ProviderError::ModerationBlocked {
            message: format!(
                "BFL's moderation withheld the generated image (Content Moderated){details}"
            ),
        }),
        "error" | "failed" | "task not found" => Err(failed(format!(
            "the BFL task ended with status `{}`{details}",
            short(&status)
        ))),
        _ => Ok(TaskState::Pending),
    }
}

/// Poll answers that mean "ask again later", not "the task failed": the task is already
/// paid for, so a passing rate limit or gateway hiccup must not throw it away.
pub(crate) fn transient_poll_status(status: u16) -> bool {
    matches!(status, 429 | 502 | 503 | 504)
}

/// The error for a non-2xx answer. `body` may be FastAPI's JSON, other JSON, HTML or nothing.
pub(crate) fn error_from_status(
    status: u16,
    retry_after: Option<Duration>,
    body: &[u8],
) -> ProviderError {
    let message = error_message(body);
    match status {
        402 => ProviderError::QuotaExhausted {
            message: "BFL account is out of credits".into(),
        },
        422 => ProviderError::InvalidRequest {
            message: format!("BFL rejected the request: {message}"),
            param: None,
            code: Some("upstream_invalid_request".into()),
        },
        429 => ProviderError::RateLimited { retry_after },
        _ if message == EMPTY_BODY => upstream::status_error(status, retry_after, ""),
        _ => upstream::status_error(status, retry_after, &message),
    }
}

const EMPTY_BODY: &str = "(empty body)";

/// The readable part of an error body: FastAPI's `detail` items as `loc: msg`, a `detail` or
/// `message` string, else the body itself, cut short.
fn error_message(body: &[u8]) -> String {
    let parsed = FastApiError::read(body);
    let from_detail = match parsed.detail {
        Some(Value::String(text)) => Some(text),
        Some(Value::Array(items)) => {
            let parts: Vec<String> = items
                .into_iter()
                .filter_map(|item| serde_json::from_value::<ValidationItem>(item).ok())
                .filter_map(|item| {
                    let msg = item.msg?;
                    // `body` only says the error is in the request body.
                    let loc: Vec<String> = item
                        .loc
                        .iter()
                        .filter(|part| part.as_str() != Some("body"))
                        .map(|part| part.as_str().map_or(part.to_string(), str::to_owned))
                        .collect();
                    Some(if loc.is_empty() {
                        msg
                    } else {
                        format!("{}: {msg}", loc.join("."))
                    })
                })
                .collect();
            (!parts.is_empty()).then(|| parts.join("; "))
        }
        Some(Value::Object(object)) => object
            .get("msg")
            .or_else(|| object.get("message"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        _ => None,
    };
    let text = from_detail
        .or(parsed.message)
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.is_empty() {
        EMPTY_BODY.to_owned()
    } else {
        short(&one_line)
    }
}

/// A finished image. Its bytes decide the MIME type, else the download's `Content-Type`; a
/// sample that is neither (an HTML error page served as 200) is a failure, not an image.
pub(crate) fn generated_image(
    bytes: Bytes,
    content_type: Option<&str>,
) -> Result<GeneratedImage, ProviderError> {
    upstream::sniffed_image(bytes, &[content_type], "the BFL sample is not an image")
}

fn malformed(detail: &str) -> ProviderError {
    failed(format!("malformed BFL response: {}", short(detail)))
}

#[cfg(test)]
mod tests;
