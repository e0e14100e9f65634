//! Conversions between imgproxy's types and Recraft's wire format (providers-2.md §13): which
//! call a model makes, the generation body and the tool form, the answers into images, and
//! upstream failures into [`ProviderError`]s. Pure functions only; every byte sent or received
//! goes through `client`.

use std::time::Duration;

use bytes::Bytes;
use imgproxy_core::{
    provider::extension_of,
    upstream::{self, malformed},
    GeneratedImage, ModelSpec, ProviderError, ProviderRequest,
};
use imgproxy_provider_openai::compat::{self, ParsedImage};
use reqwest::multipart::{Form, Part};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::wire::{Charged, ErrorBody, ToolResponse};

/// Request parameters the generation body takes under their own names: `style` and `substyle`
/// (only the V2/V3 entries declare them), `negative_prompt` and `controls`.
const PASSED_THROUGH: [&str; 4] = ["style", "substyle", "negative_prompt", "controls"];

/// `random_seed` is a `uint32`: a seed offset for a fanned-out call wraps into that range.
const SEED_RANGE: i64 = 1 << 32;

/// The multipart part a tool takes its image in (providers-2.md §13, "What an adapter must
/// do" 4).
const FILE_PART: &str = "file";

/// Words by which a 4xx is taken for Recraft's content refusal. Unverified: its error and
/// moderation bodies are undocumented (providers-2.md §13), so a 4xx whose code or message
/// speaks of NSFW, inappropriate or unsafe content, moderation or safety is taken for one.
const MODERATION_WORDS: [&str; 5] = ["nsfw", "inappropriate", "unsafe", "moderat", "safety"];

/// How a model is called, from its catalog entry's `[models.upstream_input]` (absent for a
/// generation model).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct InputMapping {
    /// One of Recraft's image tools: `POST /images/<upstream>` with the reference image as the
    /// multipart `file` part, answered with a singular `image`. Otherwise a generation.
    #[serde(default)]
    pub tool: bool,
    /// The background of what the model returns, reported as the response's `background`.
    pub background: Option<String>,
}

/// The entry's [`InputMapping`]; a table that does not fit is the catalog's bug (502).
pub(crate) fn input_mapping(model: &ModelSpec) -> Result<InputMapping, ProviderError> {
    upstream::upstream_input(model)
}

/// The JSON body of `POST /images/generations` for one upstream call.
///
/// Only parameters the catalog entry declares reach the body, none of OpenAI's own (§13: no
/// `quality`, `output_format`, `background` or `moderation`). `size` carries the `WxH` size or
/// the `w:h` ratio the request resolved to. The catalog's `upstream_params` come after them
/// (the operator's constants); `model`, `prompt`, `n` and `response_format: "url"` come last,
/// so that nothing can change what is asked for, how many images are billed, or how they come
/// back.
pub(crate) fn generation_body(call: &ProviderRequest<'_>) -> Result<Value, ProviderError> {
    if !call.references.is_empty() {
        // Validation keeps them out (`max_reference_images = 0`); never drop them silently.
        return Err(ProviderError::Unsupported {
            feature: "reference images",
        });
    }
    let request = call.request;
    let mut body = Map::new();
    let size = request
        .param_str("size")
        .or_else(|| request.param_str("aspect_ratio"));
    if let Some(size) = size {
        body.insert("size".into(), Value::from(size));
    }
    for name in PASSED_THROUGH {
        if let Some(value) = request.params.get(name) {
            body.insert(name.into(), value.clone());
        }
    }
    if let Some(seed) = call.seed() {
        body.insert(
            "random_seed".into(),
            Value::from(seed.rem_euclid(SEED_RANGE)),
        );
    }
    compat::finish_body(&mut body, call);
    body.insert("response_format".into(), Value::from("url"));
    Ok(Value::Object(body))
}

/// The multipart form of a tool call: the one reference image as the `file` part (typed with
/// its MIME type, named `image.<extension>`), the catalog's `upstream_params` as text parts,
/// and `response_format=url`. reqwest sets the `multipart/form-data` header and its boundary.
pub(crate) fn tool_form(call: &ProviderRequest<'_>) -> Result<Form, ProviderError> {
    let [image] = call.references else {
        // Validation asks for exactly one (`min_reference_images = max_reference_images = 1`).
        return Err(upstream::failed(format!(
            "a Recraft tool takes exactly one image, the call has {}",
            call.references.len()
        )));
    };
    // From `Bytes`, so the length is known and the request gets a `Content-Length`.
    let file = Part::stream(image.bytes.clone())
        .file_name(format!("image.{}", extension_of(&image.mime)))
        .mime_str(&image.mime)
        .map_err(|_| upstream::failed("the input image has an unusable MIME type"))?;
    let mut form = Form::new().part(FILE_PART, file);
    for (name, value) in &call.request.model.upstream_params {
        let text = match value {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        form = form.text(name.clone(), text);
    }
    Ok(form.text("response_format", "url"))
}

/// What a 200 carries: its images, before any URL is downloaded, and the API units (1000 = $1)
/// Recraft says the call cost.
#[derive(Debug)]
pub(crate) struct Answer {
    pub images: Vec<ParsedImage>,
    pub credits: Option<Value>,
}

/// Reads a generation's 200 body, its images in `data` order. An answer without `data`, with
/// no image, or with an item that has neither `b64_json` nor `url` is a `Failed`.
pub(crate) fn parse_generation(body: &[u8]) -> Result<Answer, ProviderError> {
    let parsed = compat::read::<Charged, ()>(body)?.parse()?;
    if parsed.images.is_empty() {
        return Err(upstream::failed("Recraft returned no image"));
    }
    Ok(Answer {
        images: parsed.images,
        credits: parsed.extra.credits,
    })
}

/// Reads a tool's 200 body: its one `image`, read as the one item of an OpenAI `data[]`. An
/// answer without `image` is a `Failed`.
pub(crate) fn parse_tool(body: &[u8]) -> Result<Answer, ProviderError> {
    let answer: ToolResponse = serde_json::from_slice(body).map_err(malformed)?;
    let image = answer.image.ok_or_else(|| malformed("no `image`"))?;
    let as_list = compat::ImagesResponse {
        data: Some(vec![image]),
        usage: None,
        extra: (),
    };
    Ok(Answer {
        images: as_list.parse()?.images,
        credits: answer.charged.credits,
    })
}

/// A finished image: the bytes decide the MIME type, else a download's `Content-Type`, else
/// the MIME type of the `output_format` the model makes (`svg` for the vector models). Bytes
/// that are none of these (an HTML page served with a 200) are a `Failed`, not an image.
pub(crate) fn generated_image(
    bytes: Bytes,
    content_type: Option<&str>,
    output_format: Option<&str>,
    revised_prompt: Option<String>,
) -> Result<GeneratedImage, ProviderError> {
    let from_format = output_format.and_then(compat::mime_of_format);
    let mut image = upstream::sniffed_image(
        bytes,
        &[content_type, from_format],
        "the Recraft result is not an image",
    )?;
    image.revised_prompt = revised_prompt.filter(|text| !text.trim().is_empty());
    Ok(image)
}

/// The error for a non-2xx answer. A 402 is an account out of API units (another key may have
/// some); a 4xx whose code or message speaks of moderation is a content refusal (see
/// [`MODERATION_WORDS`]); everything else maps by status (core's generic mapping).
pub(crate) fn error_from_status(
    status: u16,
    retry_after: Option<Duration>,
    body: &[u8],
) -> ProviderError {
    let (code, message) = read_error(body);
    let text = message
        .clone()
        .or_else(|| code.clone())
        .unwrap_or_else(|| upstream::excerpt(body));
    if status == 402 {
        return ProviderError::QuotaExhausted {
            message: "the Recraft account is out of API units".into(),
        };
    }
    let said = format!(
        "{} {}",
        code.unwrap_or_default(),
        message.unwrap_or_default()
    );
    let said = said.to_lowercase();
    let client_error = (400..500).contains(&status) && ![401, 403, 429].contains(&status);
    if client_error && MODERATION_WORDS.iter().any(|word| said.contains(word)) {
        return ProviderError::ModerationBlocked {
            message: format!("Recraft refused the content: {}", upstream::short(&text)),
        };
    }
    upstream::status_error(status, retry_after, &text)
}

/// The code and message of an error body, wherever its shape put them.
fn read_error(body: &[u8]) -> (Option<String>, Option<String>) {
    let parsed: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
    let text = |value: &Value| match value {
        Value::String(text) => Some(text.trim().to_owned()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    };
    let nested = |field: &str| parsed.error.as_ref()?.get(field).and_then(text);
    let detail = match &parsed.detail {
        Some(Value::Array(items)) => {
            let messages: Vec<String> = items
                .iter()
                .filter_map(|item| item.get("msg").and_then(text))
                .collect();
            (!messages.is_empty()).then(|| messages.join("; "))
        }
        Some(other) => text(other),
        None => None,
    };
    let message = parsed
        .message
        .map(|message| message.trim().to_owned())
        .or_else(|| nested("message"))
        .or_else(|| parsed.error.as_ref().and_then(text))
        .or(detail)
        .filter(|message| !message.is_empty());
    let code = parsed
        .code
        .as_ref()
        .and_then(text)
        .or_else(|| nested("code"));
    (code.filter(|code| !code.is_empty()), message)
}

#[cfg(test)]
mod tests;
