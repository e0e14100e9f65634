//! Conversions between imgproxy's types and fal's wire format: the model input built from the
//! catalog's `upstream_input` data, job statuses, and outputs into files and image sources (failures
//! are `errors`' job, which reads the mapping from here). Pure functions only; every byte sent
//! or received goes through `client`.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;
use bytes::Bytes;
use imgproxy_core::{
    dimensions::Size,
    provider::ImageMeta,
    upstream::{self, malformed, short, ImageSource},
    ModelSpec, ProviderError, ProviderRequest,
};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::wire::{File, Output, QueueStatus};

/// How a model's validated parameters become its fal input: the `[models.upstream_input]`
/// table of its catalog entry (documented in `catalog/fal.toml`).
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct InputMapping {
    prompt_field: Option<String>,
    n_field: Option<String>,
    size: Option<SizeMapping>,
    image_field: Option<String>,
    rename: BTreeMap<String, String>,
    values: BTreeMap<String, BTreeMap<String, Value>>,
    drop: BTreeSet<String>,
    background: Option<String>,
}

/// Where `size` goes: a preset name for the listed sizes, else `{width, height}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SizeMapping {
    field: String,
    #[serde(default)]
    presets: BTreeMap<String, String>,
}

/// The parameters a size mapping consumes; the size decides the dimensions alone.
const DIMENSIONS: [&str; 3] = ["size", "aspect_ratio", "image_size"];

impl InputMapping {
    /// The mapping of `model`. A malformed table is the operator's catalog bug: 502, not 400.
    pub(crate) fn of(model: &ModelSpec) -> Result<Self, ProviderError> {
        upstream::upstream_input(model)
    }

    /// The request parameter an upstream `field` stands for, to name it in a client's error.
    pub(crate) fn param_of(&self, field: &str, params: &BTreeMap<String, Value>) -> Option<String> {
        let is = |name: &Option<String>| name.as_deref() == Some(field);
        if is(&self.prompt_field) {
            return Some("prompt".into());
        }
        if is(&self.n_field) {
            return Some("n".into());
        }
        if is(&self.image_field) {
            return Some("image".into());
        }
        if self.size.as_ref().is_some_and(|s| s.field == field) {
            return Some("size".into());
        }
        if let Some((ours, _)) = self.rename.iter().find(|(_, theirs)| *theirs == field) {
            return Some(ours.clone());
        }
        params.contains_key(field).then(|| field.to_owned())
    }
}

/// The model input JSON of one call (the submit body, with no wrapper).
///
/// Validated parameters go through renamed and value-mapped; the catalog's `upstream_params`
/// come after them (operator constants win), then the prompt, `n` and the image, so that
/// nothing can change what is asked for or how many images are billed.
pub(crate) fn model_input(
    call: &ProviderRequest<'_>,
    mapping: &InputMapping,
) -> Result<Value, ProviderError> {
    let validated = call.request;
    let mut input = Map::new();
    for (name, value) in &validated.params {
        let sized = mapping.size.is_some() && DIMENSIONS.contains(&name.as_str());
        if sized || mapping.drop.contains(name) {
            continue;
        }
        // Fanned-out calls of one request get distinct seeds.
        let value = match name.as_str() {
            "seed" => call.seed().map_or_else(|| value.clone(), Value::from),
            _ => value
                .as_str()
                .and_then(|v| mapping.values.get(name)?.get(v))
                .unwrap_or(value)
                .clone(),
        };
        let field = mapping.rename.get(name).unwrap_or(name);
        input.insert(field.clone(), value);
    }
    if let (Some(size), Some(text)) = (&mapping.size, validated.param_str("size")) {
        let value = match (size.presets.get(text), Size::parse(text)) {
            (Some(preset), _) => Value::from(preset.as_str()),
            (None, Some(s)) => json!({"width": s.width, "height": s.height}),
            // `auto`: the upstream's own default size.
            (None, None) => Value::Null,
        };
        if !value.is_null() {
            input.insert(size.field.clone(), value);
        }
    }
    input.extend(validated.model.upstream_params.clone());
    if let Some(field) = &mapping.prompt_field {
        input.insert(field.clone(), Value::from(validated.prompt.as_str()));
    }
    if let Some(field) = &mapping.n_field {
        input.insert(field.clone(), Value::from(call.n));
    }
    let model = &validated.model.id;
    let references = call.references;
    // Core validation checks this too; repeated so that a direct caller gets a clear 400
    // rather than the upstream's 422 for a missing `image_url`.
    let needed = validated.model.min_reference_images;
    if references.len() < needed {
        return Err(invalid_image(format!(
            "model `{model}` needs {needed} reference image(s): pass the image in `images`"
        )));
    }
    match (&mapping.image_field, references) {
        (_, []) => {}
        (Some(field), [image]) => {
            input.insert(field.clone(), Value::from(image.data_url()));
        }
        (Some(_), _) => {
            return Err(invalid_image(format!(
                "model `{model}` takes one reference image"
            )))
        }
        (None, _) => {
            return Err(invalid_image(format!(
                "model `{model}` does not take reference images"
            )))
        }
    }
    Ok(Value::Object(input))
}

fn invalid_image(message: String) -> ProviderError {
    ProviderError::InvalidRequest {
        message,
        param: Some("image".into()),
        code: Some("invalid_value".into()),
    }
}

/// Where a job stands after a status poll.
#[derive(Debug, PartialEq)]
pub(crate) enum JobState {
    /// Queued or running: poll again.
    Pending,
    /// Done: fetch the result, which may still be an error.
    Completed,
    /// Ended without output.
    Failed(String),
}

/// Reads a 2xx status body. An unknown status is an error rather than a reason to keep
/// polling until the deadline.
pub(crate) fn job_state(body: &[u8]) -> Result<JobState, ProviderError> {
    let status: QueueStatus = serde_json::from_slice(body).map_err(malformed)?;
    Ok(match status.status.as_str() {
        "IN_QUEUE" | "IN_PROGRESS" => JobState::Pending,
        "COMPLETED" => JobState::Completed,
        "FAILED" | "CANCELED" | "CANCELLED" | "ERROR" => {
            let reason = match status.error {
                Some(Value::String(text)) if !text.is_empty() => short(&text),
                _ => format!("the job ended with status {}", status.status),
            };
            JobState::Failed(reason)
        }
        other => return Err(malformed(format!("unknown job status `{}`", short(other)))),
    })
}

/// The files of an output worth fetching. Images the safety checker flagged come back black,
/// so they are dropped; if every image was flagged the request is a moderation block.
/// (Keeping the unflagged ones means a client may get fewer images than `n`, which beats
/// failing a generation that was paid for.)
pub(crate) fn output_files(body: &[u8]) -> Result<Vec<File>, ProviderError> {
    let output: Output = serde_json::from_slice(body).map_err(malformed)?;
    let files = match (output.images, output.image) {
        (Some(images), _) if !images.is_empty() => images,
        (_, Some(image)) => vec![image],
        _ => return Err(malformed("no `images` or `image`")),
    };
    let flags = output.has_nsfw_concepts.or(output.nsfw_content_detected);
    let flagged = |index: usize| match &flags {
        Some(Value::Bool(all)) => *all,
        Some(Value::Array(each)) => each.get(index).and_then(Value::as_bool) == Some(true),
        _ => false,
    };
    let total = files.len();
    let kept: Vec<File> = files
        .into_iter()
        .enumerate()
        .filter_map(|(index, file)| (!flagged(index)).then_some(file))
        .collect();
    if kept.is_empty() {
        return Err(ProviderError::ModerationBlocked {
            message: "the upstream safety checker flagged the generated image(s)".into(),
        });
    }
    if kept.len() < total {
        tracing::warn!(
            dropped = total - kept.len(),
            "dropping images flagged by the upstream safety checker"
        );
    }
    Ok(kept)
}

/// The source of `file`: an http(s) URL to download, or a `data:` URI decoded here.
pub(crate) fn source(file: &File) -> Result<ImageSource, ProviderError> {
    let url = file.url.trim();
    if let Some(rest) = url.strip_prefix("data:") {
        let (header, data) = rest
            .split_once(',')
            .ok_or_else(|| malformed("a bad data URI"))?;
        let bytes = if header.ends_with(";base64") {
            base64::engine::general_purpose::STANDARD
                .decode(data.trim())
                .map_err(malformed)?
        } else {
            percent_decode(data)
        };
        return Ok(ImageSource::Inline(Bytes::from(bytes)));
    }
    if url.starts_with("https://") || url.starts_with("http://") {
        return Ok(ImageSource::Url(url.to_owned()));
    }
    Err(malformed("an image URL that is neither http(s) nor data:"))
}

fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    out
}

/// What the response reports about the images.
pub(crate) fn meta(
    call: &ProviderRequest<'_>,
    mapping: &InputMapping,
    first: Option<&File>,
) -> ImageMeta {
    ImageMeta {
        background: mapping.background.clone(),
        output_format: call.request.param_str("output_format").map(str::to_owned),
        quality: None,
        size: first
            .and_then(|f| f.width.zip(f.height))
            .map(|(w, h)| format!("{w}x{h}")),
    }
}
