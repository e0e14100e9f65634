//! Conversions between imgproxy's types and DashScope's wire format: the request bodies of
//! both endpoints, their answers and task states, and failures into [`ProviderError`]s. Pure
//! functions only; every byte sent or received goes through `client`.

use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use imgproxy_core::{
    dimensions::Size,
    upstream::{self, failed, short, ImageSource},
    GeneratedImage, ModelSpec, ProviderError, ProviderRequest,
};
use serde_json::{Map, Value};

use crate::wire::{
    Answer, Content, GenerationRequest, InputMapping, Message, MessagesInput, Output, PromptInput,
};

/// Seeds DashScope takes: 0 to 2^31 - 1 (providers-2.md §8.3).
const SEED_MODULUS: i64 = 1 << 31;
/// Parameters that are not sent under their own name: sizes are rewritten `W*H`, the seed is
/// offset per fanned-out call.
const REWRITTEN: [&str; 3] = ["size", "aspect_ratio", "seed"];

/// The model's `upstream_input`, typed. A bad table is the operator's catalog error.
pub(crate) fn input_mapping(model: &ModelSpec) -> Result<InputMapping, ProviderError> {
    upstream::upstream_input(model)
}

/// The body of `POST services/aigc/multimodal-generation/generation`: one user message with
/// the reference images (as data URLs, first, as the official samples order them) and the
/// prompt.
pub(crate) fn generation_body(
    call: &ProviderRequest<'_>,
    mapping: &InputMapping,
) -> Result<Value, ProviderError> {
    let mut content: Vec<Content<'_>> = call
        .references
        .iter()
        .map(|image| Content::Image {
            image: image.data_url(),
        })
        .collect();
    content.push(Content::Text {
        text: &call.request.prompt,
    });
    let input = MessagesInput {
        messages: [Message {
            role: "user",
            content,
        }],
    };
    body(call, input, mapping)
}

/// The body of `POST services/aigc/text2image/image-synthesis`: the prompt in `input.prompt`,
/// no images (the task API takes none).
pub(crate) fn task_body(
    call: &ProviderRequest<'_>,
    mapping: &InputMapping,
) -> Result<Value, ProviderError> {
    if !call.references.is_empty() {
        // The catalog keeps them out (`max_reference_images = 0`); never drop them silently.
        return Err(ProviderError::Unsupported {
            feature: "reference images on DashScope's text2image task API",
        });
    }
    let input = PromptInput {
        prompt: &call.request.prompt,
    };
    body(call, input, mapping)
}

fn body<I: serde::Serialize>(
    call: &ProviderRequest<'_>,
    input: I,
    mapping: &InputMapping,
) -> Result<Value, ProviderError> {
    let request = GenerationRequest {
        model: call.upstream_model(),
        input,
        parameters: parameters(call, mapping)?,
    };
    serde_json::to_value(request).map_err(|e| failed(format!("cannot encode the body: {e}")))
}

/// `parameters`, the same on both endpoints. Validated parameters go under their own names
/// (the catalog declares only what DashScope takes; `prompt_extend` and `watermark` always,
/// since their defaults differ between doc revisions, providers-2.md §8 step 9); the size as
/// `W*H`, from `size` or from an `aspect_ratio` the model maps to one of its sizes; the seed
/// offset per fanned-out call and kept in DashScope's range. The catalog's `upstream_params`
/// come next and `n` last, so that nothing changes how many images are billed.
fn parameters(
    call: &ProviderRequest<'_>,
    mapping: &InputMapping,
) -> Result<Map<String, Value>, ProviderError> {
    let request = call.request;
    let mut parameters: Map<String, Value> = request
        .params
        .iter()
        .filter(|(name, _)| !REWRITTEN.contains(&name.as_str()))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    if let Some(size) = wire_size(call, mapping)? {
        parameters.insert("size".into(), Value::from(size));
    }
    if let Some(seed) = call.seed() {
        parameters.insert("seed".into(), Value::from(seed.rem_euclid(SEED_MODULUS)));
    }
    parameters.extend(request.model.upstream_params.clone());
    parameters.insert("n".into(), Value::from(call.n));
    Ok(parameters)
}

/// The size to send, `W*H` (DashScope's separator, providers-2.md §8.2); `None` leaves it to
/// DashScope (the last input image's ratio, or the model's own choice).
fn wire_size(
    call: &ProviderRequest<'_>,
    mapping: &InputMapping,
) -> Result<Option<String>, ProviderError> {
    let request = call.request;
    let size = match (request.size(), request.param_str("aspect_ratio")) {
        (Some(size), _) => size,
        (None, Some(ratio)) => {
            let listed = mapping.ratio_sizes.get(ratio).and_then(|s| Size::parse(s));
            listed.ok_or_else(|| {
                failed(format!(
                    "catalog entry `{}` takes aspect_ratio `{ratio}` but its `ratio_sizes` has \
                     no size for it",
                    request.model.id
                ))
            })?
        }
        (None, None) => return Ok(None),
    };
    Ok(Some(format!("{}*{}", size.width, size.height)))
}

/// The images of a 2xx answer of the synchronous API, flattened over every choice and content
/// item (providers-2.md §8.3). An error code in it (DashScope may answer 200 with one) is
/// that error.
pub(crate) fn read_generation(body: &[u8]) -> Result<Vec<ImageSource>, ProviderError> {
    let output = read_output(body)?;
    let images: Vec<&str> = output
        .choices
        .iter()
        .flat_map(|choice| &choice.message.content)
        .filter_map(|item| item.image.as_deref())
        .collect();
    if images.is_empty() {
        return Err(malformed("no image in `output.choices`"));
    }
    images.into_iter().map(image_source).collect()
}

/// The task id of a 2xx answer of a submit.
pub(crate) fn read_submit(body: &[u8]) -> Result<String, ProviderError> {
    let output = read_output(body)?;
    output
        .task_id
        .filter(|id| is_task_id(id))
        .ok_or_else(|| malformed("a submitted task without a usable `output.task_id`"))
}

/// Whether `id` can be a task id: it goes into a URL path, so nothing that could leave it.
pub(crate) fn is_task_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// One image of a finished task.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct TaskImage {
    pub url: String,
    /// The prompt DashScope drew from, when it rewrote the client's.
    pub revised_prompt: Option<String>,
}

/// Where a task stands after one poll.
#[derive(Debug, PartialEq)]
pub(crate) enum TaskState {
    /// `PENDING`, `RUNNING`, or a status this adapter does not know yet.
    Running,
    /// `SUCCEEDED`, with its images.
    Succeeded(Vec<TaskImage>),
    /// Over without images, and why: there is nothing left to cancel.
    Ended(ProviderError),
}

/// Reads a 2xx poll answer (providers-2.md §8.4): `FAILED` carries its reason (moderation
/// among them); `CANCELED` and `UNKNOWN` (an expired or invalid id) end the task too. An
/// answer that is not a task is an error.
pub(crate) fn read_task(body: &[u8]) -> Result<TaskState, ProviderError> {
    let output = read_output(body)?;
    let Some(status) = output.task_status.clone() else {
        return Err(malformed("a task without `output.task_status`"));
    };
    Ok(match status.as_str() {
        "SUCCEEDED" => match succeeded(output) {
            Ok(images) => TaskState::Succeeded(images),
            Err(why) => TaskState::Ended(why),
        },
        "FAILED" => TaskState::Ended(task_failure(
            output.code.as_deref(),
            output.message.as_deref(),
        )),
        "CANCELED" => TaskState::Ended(failed("the DashScope task was canceled")),
        "UNKNOWN" => TaskState::Ended(failed(
            "DashScope no longer knows the task (its id expired after 24 hours, or is invalid)",
        )),
        _ => TaskState::Running,
    })
}

/// The images of a succeeded task. A result may carry an error instead of a URL: with no
/// URL at all, the first such error is the task's.
fn succeeded(output: Output) -> Result<Vec<TaskImage>, ProviderError> {
    let mut refusal = None;
    let mut images = Vec::new();
    for result in output.results {
        match result.url.filter(|url| !url.trim().is_empty()) {
            Some(url) => images.push(TaskImage {
                url,
                revised_prompt: result.actual_prompt.filter(|p| !p.is_empty()),
            }),
            None if refusal.is_none() => {
                refusal = Some(task_failure(
                    result.code.as_deref(),
                    result.message.as_deref(),
                ));
            }
            None => {}
        }
    }
    match (images.is_empty(), refusal) {
        (false, _) => Ok(images),
        (true, Some(error)) => Err(error),
        (true, None) => Err(malformed("a succeeded task without `output.results`")),
    }
}

/// Why a task (or one of its images) failed: its code's meaning, else a failure naming it.
fn task_failure(code: Option<&str>, message: Option<&str>) -> ProviderError {
    let code = code.unwrap_or("no code");
    let message = message.unwrap_or_default();
    coded_error(code, message, None).unwrap_or_else(|| {
        failed(format!(
            "the DashScope task failed: {code}: {}",
            short(message)
        ))
    })
}

/// The `output` of a 2xx answer; an error code in the answer is its error.
fn read_output(body: &[u8]) -> Result<Output, ProviderError> {
    let answer: Answer = serde_json::from_slice(body).map_err(|e| malformed(&e.to_string()))?;
    if let Some(code) = answer.code.as_deref().filter(|c| !c.is_empty()) {
        let message = answer.message.as_deref().unwrap_or_default();
        return Err(coded_error(code, message, None).unwrap_or_else(|| {
            failed(format!(
                "DashScope answered HTTP 200 with error {code}: {}",
                short(message)
            ))
        }));
    }
    answer
        .output
        .ok_or_else(|| malformed("an answer without `output`"))
}

/// Where one returned image is: a URL to download, or its base64 (bare or a data URL).
fn image_source(text: &str) -> Result<ImageSource, ProviderError> {
    let text = text.trim();
    if text.starts_with("https://") || text.starts_with("http://") {
        return Ok(ImageSource::Url(text.to_owned()));
    }
    let data = match text.strip_prefix("data:") {
        Some(rest) => match rest.split_once(',') {
            Some((header, data)) if header.ends_with(";base64") => data,
            _ => return Err(malformed("an image `data:` URL that is not base64")),
        },
        None => text,
    };
    base64::engine::general_purpose::STANDARD
        .decode(data)
        .map(|bytes| ImageSource::Inline(Bytes::from(bytes)))
        .map_err(|e| malformed(&format!("an image that is neither a URL nor base64: {e}")))
}

/// The error for a non-2xx answer, by DashScope's `code` first (providers-2.md §8.5), then
/// by status.
pub(crate) fn error_from_status(
    status: u16,
    retry_after: Option<Duration>,
    body: &[u8],
) -> ProviderError {
    let answer: Answer = serde_json::from_slice(body).unwrap_or_default();
    let code = answer.code.unwrap_or_default();
    let message = answer.message.unwrap_or_default();
    if let Some(error) = coded_error(&code, &message, retry_after) {
        return error;
    }
    let text = match (code.is_empty(), message.is_empty()) {
        (true, true) => upstream::excerpt(body),
        (false, true) => code,
        (true, false) => message,
        (false, false) => format!("{code}: {message}"),
    };
    upstream::status_error(status, retry_after, &text)
}

/// The codes whose meaning does not follow from the HTTP status, wherever they appear (a
/// non-2xx answer, a 200 answer, a failed task):
/// - `DataInspectionFailed` (input or output judged inappropriate) and `IPInfringementSuspect`
///   are content refusals;
/// - `Throttling*` is a rate limit;
/// - `Arrearage` (the account is overdue) is the key's account out of quota: another key
///   may pay;
/// - `AccessDenied` saying the model does not take (a)synchronous calls is the catalog's
///   endpoint choice, not the key: the key stays in the pool.
fn coded_error(code: &str, message: &str, retry_after: Option<Duration>) -> Option<ProviderError> {
    let detail = if message.is_empty() {
        code.to_owned()
    } else {
        format!("{code}: {}", short(message))
    };
    match code {
        "DataInspectionFailed" | "IPInfringementSuspect" => {
            Some(ProviderError::ModerationBlocked {
                message: format!("DashScope's moderation refused the content ({detail})"),
            })
        }
        "Arrearage" => Some(ProviderError::QuotaExhausted {
            message: format!("the DashScope account is overdue ({detail})"),
        }),
        _ if code.starts_with("Throttling") => Some(ProviderError::RateLimited { retry_after }),
        _ if code.starts_with("AccessDenied") && message.to_lowercase().contains("synchronous") => {
            Some(failed(format!(
                "DashScope refused the endpoint the catalog chose for this model ({detail})"
            )))
        }
        _ => None,
    }
}

/// Poll answers that mean "ask again later", not "the task failed": the task is already
/// running, and a poll bills nothing.
pub(crate) fn transient_poll_status(status: u16) -> bool {
    status == 429 || status >= 500
}

/// A finished image. Its bytes decide the MIME type, else a download's `Content-Type`;
/// anything else (an error page served with a 200) is a failure, not an image.
pub(crate) fn generated_image(
    bytes: Bytes,
    content_type: Option<&str>,
    revised_prompt: Option<String>,
) -> Result<GeneratedImage, ProviderError> {
    let image =
        upstream::sniffed_image(bytes, &[content_type], "a DashScope result is not an image")?;
    Ok(GeneratedImage {
        revised_prompt,
        ..image
    })
}

fn malformed(detail: &str) -> ProviderError {
    failed(format!("malformed DashScope response: {}", short(detail)))
}

#[cfg(test)]
mod tests;
