//! `POST /v1/responses` with the `image_generation` tool: the request (`input`, the tool's
//! options) read into an image request, and the answer as an `image_generation_call` output
//! item, whole or as the Responses API's streamed events.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{image_request, ParamPaths, References, Translated};
use crate::{Error, ImageInput, Usage};

/// Options of the tool that do not change what is made: `action` is a hint the model
/// follows (an input image makes it an edit here).
const TOOL_HINTS: &[&str] = &["type", "model", "action", "input_image_mask"];

/// Top-level fields for the text model around the tool, accepted without effect.
pub const IGNORED: &[&str] = &[
    "instructions",
    "temperature",
    "top_p",
    "max_output_tokens",
    "max_tool_calls",
    "parallel_tool_calls",
    "reasoning",
    "text",
    "truncation",
    "metadata",
    "store",
    "service_tier",
    "include",
    "prompt_cache_key",
    "stream_options",
];

/// Top-level fields that are the image request's own, under the same name.
const PASSED: &[&str] = &["user", "safety_identifier"];

/// The body of `POST /v1/responses` with an `image_generation` tool.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(default)]
pub struct ResponsesRequest {
    /// The model running the conversation; it serves the tool itself when it is an image
    /// model of the catalog and the tool names none.
    pub model: Option<String>,
    /// A string, or messages with `input_text` and `input_image` parts (earlier
    /// `image_generation_call` items give the image to edit).
    pub input: Option<Value>,
    /// Must hold one `{"type": "image_generation", ...}`.
    pub tools: Vec<Value>,
    /// `auto`, `required` or `{"type": "image_generation"}`.
    pub tool_choice: Option<Value>,
    /// Stream the Responses API's events.
    pub stream: Option<bool>,
    /// Other fields: the text model's settings (ignored) or unsupported ones (refused).
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// What a response needs besides the images: the tool call's id and options.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    /// The model the response names (the request's, or the image model).
    pub model: String,
    /// The tools as the request gave them, echoed in the answer.
    pub tools: Vec<Value>,
    /// `generate`, or `edit` when there was an input image.
    pub action: &'static str,
}

/// Reads a response request into the image request its `image_generation` tool asks for;
/// `default_model` (else the gateway's default model) serves the tool when neither it nor
/// the request names an image model (`is_image_model` tells).
pub fn translate(
    request: ResponsesRequest,
    default_model: Option<&str>,
    is_image_model: &dyn Fn(&str) -> bool,
) -> Result<(Translated, ToolCall), Error> {
    if let Some(name) = ["previous_response_id", "conversation", "prompt"]
        .into_iter()
        .find(|n| request.extra.contains_key(*n))
    {
        return Err(Error::invalid_param(
            name,
            format!("imgproxy keeps no conversations: send the whole `input` instead of `{name}`"),
        ));
    }
    if request.extra.get("background") == Some(&Value::Bool(true)) {
        return Err(Error::invalid_param(
            "background",
            "background responses are not kept: use /v1/images/generations with `async` for tasks",
        ));
    }
    if let Some(name) = request.extra.keys().find(|n| {
        !IGNORED.contains(&n.as_str()) && !PASSED.contains(&n.as_str()) && *n != "background"
    }) {
        return Err(Error::invalid_param(
            name.clone(),
            format!("`{name}` is not a parameter of an image_generation response"),
        ));
    }
    check_tool_choice(request.tool_choice.as_ref())?;
    let index = request
        .tools
        .iter()
        .position(|t| t.get("type").and_then(Value::as_str) == Some("image_generation"))
        .ok_or_else(|| {
            Error::invalid_param(
                "tools",
                "imgproxy serves image models only: add the tool `{\"type\": \"image_generation\"}`",
            )
        })?;
    let tool = request.tools[index]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let at = |name: &str| format!("tools[{index}].{name}");

    let mut paths = ParamPaths::default();
    let mut fields = Map::new();
    let model = match tool.get("model") {
        Some(Value::String(model)) => {
            paths.insert("model", at("model"));
            Some(model.clone())
        }
        Some(_) => return Err(Error::invalid_param(at("model"), "`model` is a string")),
        None => match &request.model {
            Some(model) if is_image_model(model) => Some(model.clone()),
            _ => default_model.map(str::to_owned),
        },
    };
    if let Some(model) = &model {
        fields.insert("model".into(), model.clone().into());
    }
    for name in PASSED {
        if let Some(value) = request.extra.get(*name) {
            fields.insert((*name).into(), value.clone());
        }
    }
    paths.insert("prompt", "input");
    let (prompt, references, carried_image) = read_input(request.input.as_ref())?;
    fields.insert("prompt".into(), prompt.into());
    let action = if references.images.is_empty() {
        "generate"
    } else {
        "edit"
    };
    references.record(&mut fields, &mut paths, "input");
    if let Some(mask) = tool.get("input_image_mask") {
        let mask = image_reference(mask).ok_or_else(|| {
            Error::invalid_param(
                at("input_image_mask"),
                "`input_image_mask` needs `image_url` or `file_id`",
            )
        })?;
        paths.insert("mask", at("input_image_mask"));
        fields.insert("mask".into(), json!(mask));
    }
    // The result is base64 in the item, whatever the server's default for images.
    fields.insert("response_format".into(), "b64_json".into());
    let streams = request.stream == Some(true);
    if streams && tool.contains_key("partial_images") {
        fields.insert("stream".into(), true.into());
    }
    // `partial_images` says what a streamed response shows while the image is made; clients
    // define the tool once for streamed and whole responses alike, and a whole response has
    // no partial images to show, so there it means nothing (the image request would refuse
    // it without `stream`).
    let params = tool
        .into_iter()
        .filter(|(name, _)| !TOOL_HINTS.contains(&name.as_str()))
        .filter(|(name, _)| streams || name != "partial_images")
        .map(|(name, value)| {
            let path = at(&name);
            (name, value, path)
        })
        .collect();
    let image = image_request(fields, params, &mut paths)?;
    Ok((
        Translated {
            request: image,
            paths,
            carried_image,
        },
        ToolCall {
            model: request.model.or(model).unwrap_or_default(),
            tools: request.tools,
            action,
        },
    ))
}

/// `tool_choice` must let the image tool run.
fn check_tool_choice(choice: Option<&Value>) -> Result<(), Error> {
    let runs = match choice {
        None => true,
        Some(Value::String(choice)) => choice == "auto" || choice == "required",
        Some(choice) => choice.get("type").and_then(Value::as_str) == Some("image_generation"),
    };
    if runs {
        Ok(())
    } else {
        Err(Error::invalid_param(
            "tool_choice",
            "imgproxy serves image models only: `tool_choice` must let `image_generation` run",
        ))
    }
}

/// The prompt (the text of the last user message) and the reference images: the result of
/// the latest `image_generation_call` item, then the images the user gave after it (or all
/// of them when there is no such item); and whether there is such an item.
fn read_input(input: Option<&Value>) -> Result<(String, References, bool), Error> {
    let items = match input {
        Some(Value::String(text)) => return Ok((text.clone(), References::default(), false)),
        Some(Value::Array(items)) => items,
        _ => {
            return Err(Error::invalid_param(
                "input",
                "`input` is the prompt: a string, or a list of messages",
            ))
        }
    };
    let last_user = items
        .iter()
        .rposition(|item| item.get("role").and_then(Value::as_str) == Some("user"))
        .ok_or_else(|| {
            Error::invalid_param(
                "input",
                "`input` needs a user message: its text is the prompt",
            )
        })?;
    let generated = items.iter().enumerate().rev().find_map(|(i, item)| {
        let result = (item.get("type").and_then(Value::as_str) == Some("image_generation_call"))
            .then(|| item.get("result").and_then(Value::as_str))
            .flatten()?;
        Some((i, result))
    });
    let mut references = References::default();
    let carried = generated.is_some();
    let from = match generated {
        Some((i, result)) => {
            references.push(
                ImageInput::Text(super::data_url("image/png", result)),
                format!("input[{i}].result"),
            );
            i + 1
        }
        None => 0,
    };
    let mut prompt = String::new();
    for (i, item) in items.iter().enumerate().skip(from) {
        if item.get("role").and_then(Value::as_str) != Some("user") {
            continue;
        }
        let parts = match item.get("content") {
            Some(Value::String(text)) => {
                if i == last_user {
                    push_line(&mut prompt, text);
                }
                continue;
            }
            Some(Value::Array(parts)) => parts,
            _ => continue,
        };
        for (j, part) in parts.iter().enumerate() {
            let path = format!("input[{i}].content[{j}]");
            match part.get("type").and_then(Value::as_str).unwrap_or("") {
                "input_text" | "text" => {
                    if i == last_user {
                        push_line(&mut prompt, part.get("text").and_then(Value::as_str).unwrap_or(""));
                    }
                }
                "input_image" => {
                    let image = image_reference(part).ok_or_else(|| {
                        Error::invalid_param(path.clone(), "`input_image` needs `image_url` or `file_id`")
                    })?;
                    references.push(image, path);
                }
                other => {
                    return Err(Error::invalid_param(
                        path,
                        format!("a `{other}` part cannot be read: messages take `input_text` and `input_image` parts"),
                    ))
                }
            }
        }
    }
    Ok((prompt, references, carried))
}

fn push_line(prompt: &mut String, text: &str) {
    if !prompt.is_empty() {
        prompt.push('\n');
    }
    prompt.push_str(text);
}

/// An image given as `{"image_url"}` (a URL or data URL) or `{"file_id"}`.
fn image_reference(value: &Value) -> Option<ImageInput> {
    if let Some(url) = value.get("image_url").and_then(Value::as_str) {
        return Some(ImageInput::Text(url.to_owned()));
    }
    value
        .get("file_id")
        .and_then(Value::as_str)
        .map(|id| ImageInput::Text(id.to_owned()))
}

/// The image generation call's id for response `response_id` (`ig_` and the same suffix).
pub fn call_id(response_id: &str) -> String {
    format!("ig_{}", response_id.trim_start_matches("resp_"))
}

/// The `image_generation_call` output item, `result` the image in base64 (none while it
/// runs), `meta` what was made.
pub fn output_item(
    id: &str,
    status: &str,
    action: &str,
    result: Option<&str>,
    meta: &crate::provider::ImageMeta,
    revised_prompt: Option<&str>,
) -> Value {
    let mut item = Map::new();
    item.insert("type".into(), "image_generation_call".into());
    item.insert("id".into(), id.into());
    item.insert("status".into(), status.into());
    item.insert("action".into(), action.into());
    item.insert("result".into(), result.into());
    for (name, value) in [
        ("background", meta.background.as_deref()),
        ("output_format", meta.output_format.as_deref()),
        ("quality", meta.quality.as_deref()),
        ("size", meta.size.as_deref()),
        ("revised_prompt", revised_prompt),
    ] {
        if let Some(value) = value {
            item.insert(name.into(), value.into());
        }
    }
    Value::Object(item)
}

/// The `response` object: `status` (`in_progress`, `completed`, `failed`), its `output`
/// items, the error of a failed one, the usage in the Responses API's names.
pub fn response_object(
    id: &str,
    created_at: i64,
    call: &ToolCall,
    status: &str,
    output: Vec<Value>,
    error: Option<&crate::ErrorBody>,
    usage: Option<&Usage>,
) -> Value {
    json!({
        "id": id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "model": call.model,
        "output": output,
        "tools": call.tools,
        "tool_choice": "auto",
        "parallel_tool_calls": true,
        "error": error.map(|e| json!({"code": e.code.as_deref().unwrap_or(&e.kind), "message": e.message})),
        "incomplete_details": null,
        "instructions": null,
        "metadata": {},
        "usage": usage.map(response_usage),
    })
}

fn response_usage(usage: &Usage) -> Value {
    let input = usage.input_tokens.unwrap_or(0);
    let output = usage.output_tokens.unwrap_or(0);
    json!({
        "input_tokens": input,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.total_tokens.unwrap_or(input + output),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn translate_body(body: Value) -> Result<(Translated, ToolCall), Error> {
        translate(
            serde_json::from_value(body).unwrap(),
            Some("gpt-image-2"),
            &|m| m.starts_with("gpt-image"),
        )
    }

    #[test]
    fn the_tool_becomes_the_image_request() {
        let (translated, call) = translate_body(json!({
            "model": "gpt-5",
            "input": [{"role": "user", "content": [
                {"type": "input_text", "text": "a fox"},
                {"type": "input_image", "image_url": "data:image/png;base64,AA"}
            ]}],
            "tools": [{"type": "function", "name": "f"}, {"type": "image_generation", "model": "gpt-image-2", "size": "1536x1024", "partial_images": 1, "input_image_mask": {"file_id": "file-1"}}],
            "stream": true,
            "instructions": "be nice"
        }))
        .unwrap();
        let request = translated.request;
        assert_eq!(request.model.as_deref(), Some("gpt-image-2"));
        assert_eq!(request.prompt.as_deref(), Some("a fox"));
        assert_eq!(request.size.as_deref(), Some("1536x1024"));
        assert_eq!(
            (request.partial_images, request.stream),
            (Some(1), Some(true))
        );
        assert_eq!(request.mask, Some(ImageInput::Text("file-1".into())));
        assert_eq!(request.response_format.as_deref(), Some("b64_json"));
        assert_eq!(translated.paths.path("size"), "tools[1].size");
        assert_eq!(translated.paths.path("model"), "tools[1].model");
        assert_eq!(translated.paths.path("image"), "input[0].content[1]");
        assert_eq!((call.model.as_str(), call.action), ("gpt-5", "edit"));
    }

    #[test]
    fn the_tool_model_falls_back_to_an_image_model_then_the_default() {
        let (own, _) = translate_body(json!({"model": "gpt-image-1.5", "input": "x", "tools": [{"type": "image_generation"}]})).unwrap();
        assert_eq!(own.request.model.as_deref(), Some("gpt-image-1.5"));
        let (default, call) = translate_body(
            json!({"model": "gpt-5", "input": "x", "tools": [{"type": "image_generation"}]}),
        )
        .unwrap();
        assert_eq!(default.request.model.as_deref(), Some("gpt-image-2"));
        assert_eq!(call.action, "generate");
    }

    #[test]
    fn partial_images_only_asks_a_streamed_response_to_stream() {
        let body = |stream: bool| json!({"input": "x", "stream": stream, "tools": [{"type": "image_generation", "partial_images": 2}]});
        let (whole, _) = translate_body(body(false)).unwrap();
        assert_eq!(
            (whole.request.partial_images, whole.request.stream),
            (None, None)
        );
        let (streamed, _) = translate_body(body(true)).unwrap();
        assert_eq!(
            (streamed.request.partial_images, streamed.request.stream),
            (Some(2), Some(true))
        );
    }

    #[test]
    fn an_earlier_result_is_the_image_edited() {
        let (translated, _) = translate_body(json!({
            "input": [
                {"role": "user", "content": "a fox"},
                {"type": "image_generation_call", "id": "ig_1", "status": "completed", "result": "Rk9Y"},
                {"role": "user", "content": [{"type": "input_text", "text": "now in snow"}]}
            ],
            "tools": [{"type": "image_generation"}]
        }))
        .unwrap();
        assert_eq!(translated.request.prompt.as_deref(), Some("now in snow"));
        assert_eq!(
            translated.request.images,
            Some(vec![ImageInput::Text("data:image/png;base64,Rk9Y".into())])
        );
    }

    #[test]
    fn what_the_tool_cannot_do_is_refused_by_name() {
        let no_tool = translate_body(json!({"input": "x", "tools": [{"type": "web_search"}]}));
        assert_eq!(no_tool.unwrap_err().param(), Some("tools"));
        let none = translate_body(
            json!({"input": "x", "tools": [{"type": "image_generation"}], "tool_choice": "none"}),
        );
        assert_eq!(none.unwrap_err().param(), Some("tool_choice"));
        let previous = translate_body(
            json!({"input": "x", "tools": [{"type": "image_generation"}], "previous_response_id": "resp_1"}),
        );
        assert_eq!(previous.unwrap_err().param(), Some("previous_response_id"));
        let unknown = translate_body(
            json!({"input": "x", "tools": [{"type": "image_generation"}], "frobnicate": 1}),
        );
        assert_eq!(unknown.unwrap_err().param(), Some("frobnicate"));
        let no_input = translate_body(json!({"tools": [{"type": "image_generation"}]}));
        assert_eq!(no_input.unwrap_err().param(), Some("input"));
    }

    #[test]
    fn the_item_and_the_response_carry_what_was_made() {
        let meta = crate::provider::ImageMeta {
            size: Some("1536x1024".into()),
            output_format: Some("png".into()),
            ..Default::default()
        };
        let item = output_item("ig_1", "completed", "generate", Some("AAAA"), &meta, None);
        assert_eq!(item["result"], "AAAA");
        assert_eq!(item["size"], "1536x1024");
        assert!(item.get("quality").is_none());
        let call = ToolCall {
            model: "gpt-5".into(),
            tools: vec![json!({"type": "image_generation"})],
            action: "generate",
        };
        let response = response_object("resp_1", 1, &call, "completed", vec![item], None, None);
        assert_eq!(response["output"][0]["type"], "image_generation_call");
        assert_eq!(response["object"], "response");
        assert_eq!(call_id("resp_abc"), "ig_abc");
    }
}
