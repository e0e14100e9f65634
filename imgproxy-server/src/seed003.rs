//! Seed 003's request (`model` key, `prompt`, camelCase `params`, `attachmentMediaIds`) turned
//! into an `ImageRequest`: its nine model keys, the values and defaults it lists per key, and
//! its attachment rules. Pure: the handler in `handlers::seed003` only calls [`translate`].

use std::collections::BTreeMap;

use imgproxy_core::{Error, ImageInput, ImageRequest};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `POST /api/v1/image/generate`'s body, as seed 003 documents it.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SeedRequest {
    /// A model key: `nano-banana-2`, `nano-banana-pro`, `seedream-4-5`, `z-image`,
    /// `gpt-image-1-5`, `grok-imagine`, `grok-imagine-pro`, `birefnet-bg-removal`,
    /// `runware-vectorize`.
    #[schemars(required)]
    pub model: Option<String>,
    /// What to draw (required but for background removal and vectorize).
    pub prompt: Option<String>,
    /// The model's parameters (`aspectRatio`, `resolution`, ...).
    pub params: Option<Map<String, Value>>,
    /// File ids from `POST /v1/files`, in order.
    pub attachment_media_ids: Option<Vec<String>>,
}

/// The answer: the job's id, readable at `GET /v1/tasks/{id}`.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InferenceJob {
    /// The task's id.
    pub inference_job_id: String,
}

/// What seed 003 lists for one model key.
struct SeedModel {
    key: &'static str,
    /// The catalog model (or alias) that serves the key.
    serves: &'static str,
    prompt_required: bool,
    /// `aspectRatio`'s values and default; empty when the key takes none.
    ratios: &'static [&'static str],
    default_ratio: Option<&'static str>,
    /// `resolution`'s values (seed spelling) and default.
    resolutions: &'static [&'static str],
    default_resolution: Option<&'static str>,
    /// Other params, each with its values, and the catalog parameter it becomes.
    choices: &'static [Choice],
    /// At most this many attachments, and whether one is required.
    max_attachments: usize,
    attachment_required: bool,
}

struct Choice {
    param: &'static str,
    becomes: &'static str,
    values: &'static [&'static str],
}

/// Both grok keys list the same ratios, resolutions and one optional attachment.
const fn grok(key: &'static str) -> SeedModel {
    SeedModel {
        ratios: &[
            "9:16", "16:9", "1:1", "4:3", "3:4", "3:2", "2:3", "2:1", "1:2", "auto",
        ],
        default_ratio: Some("9:16"),
        resolutions: &["1k", "2k"],
        default_resolution: Some("1k"),
        max_attachments: 1,
        ..generator(key, key)
    }
}

const fn generator(key: &'static str, serves: &'static str) -> SeedModel {
    SeedModel {
        key,
        serves,
        prompt_required: true,
        ratios: &[],
        default_ratio: None,
        resolutions: &[],
        default_resolution: None,
        choices: &[],
        max_attachments: 0,
        attachment_required: false,
    }
}

const fn one_image(
    key: &'static str,
    serves: &'static str,
    choices: &'static [Choice],
) -> SeedModel {
    SeedModel {
        prompt_required: false,
        choices,
        max_attachments: 1,
        attachment_required: true,
        ..generator(key, serves)
    }
}

/// Seed 003's models, as its document lists them.
const MODELS: &[SeedModel] = &[
    SeedModel {
        ratios: &[
            "9:16", "16:9", "1:1", "4:5", "4:3", "3:4", "3:2", "2:3", "21:9", "8:1", "1:8", "4:1",
            "1:4", "auto",
        ],
        default_ratio: Some("9:16"),
        resolutions: &["1K", "2K", "4K"],
        default_resolution: Some("1K"),
        choices: &[STYLE],
        max_attachments: 14,
        ..generator("nano-banana-2", "nano-banana-2")
    },
    SeedModel {
        ratios: &[
            "9:16", "16:9", "1:1", "4:5", "4:3", "3:4", "3:2", "2:3", "21:9", "auto",
        ],
        default_ratio: Some("9:16"),
        resolutions: &["1K", "2K", "4K"],
        default_resolution: Some("1K"),
        choices: &[STYLE],
        max_attachments: 14,
        ..generator("nano-banana-pro", "nano-banana-pro")
    },
    SeedModel {
        ratios: &["1:1", "4:3", "3:4", "16:9", "9:16", "3:2", "2:3", "21:9"],
        default_ratio: Some("16:9"),
        resolutions: &["2K", "4K"],
        default_resolution: Some("2K"),
        max_attachments: 14,
        ..generator("seedream-4-5", "seedream-4-5")
    },
    SeedModel {
        ratios: &[
            "1:1", "21:9", "16:9", "4:3", "3:2", "2:3", "3:4", "9:16", "9:21",
        ],
        default_ratio: Some("9:16"),
        ..generator("z-image", "z-image")
    },
    SeedModel {
        ratios: &["1:1", "16:9", "9:16"],
        default_ratio: Some("9:16"),
        choices: &[
            Choice {
                param: "quality",
                becomes: "quality",
                values: &["auto", "high", "medium", "low"],
            },
            Choice {
                param: "background",
                becomes: "background",
                values: &["auto", "transparent", "opaque"],
            },
        ],
        max_attachments: 16,
        ..generator("gpt-image-1-5", "gpt-image-1-5")
    },
    grok("grok-imagine"),
    grok("grok-imagine-pro"),
    one_image(
        "birefnet-bg-removal",
        "birefnet-bg-removal",
        &[
            Choice {
                param: "bgRemovalModel",
                becomes: "bg_removal_model",
                values: &["portrait", "general-fast", "general-premium"],
            },
            Choice {
                param: "quality",
                becomes: "quality",
                values: &["low", "high"],
            },
        ],
    ),
    one_image(
        "runware-vectorize",
        "runware-vectorize",
        &[Choice {
            param: "vectorizeModel",
            becomes: "vectorize_model",
            values: &["recraft:1@1", "picsart:1@1"],
        }],
    ),
];

/// `styleId` is listed, but no style library is served: a request with one is refused.
const STYLE: Choice = Choice {
    param: "styleId",
    becomes: "",
    values: &[],
};

/// gpt-image-1.5 takes sizes, not ratios: the size of each ratio seed 003 lists for it (the
/// closest the upstream offers; 16:9 and 9:16 are drawn at 3:2 and 2:3).
const GPT_SIZES: &[(&str, &str)] = &[
    ("1:1", "1024x1024"),
    ("16:9", "1536x1024"),
    ("9:16", "1024x1536"),
];

/// Seed 003's `body` as an asynchronous `ImageRequest`, its documented defaults filled in.
/// Refusals name the field as seed 003 spells it.
pub fn translate(body: SeedRequest) -> Result<ImageRequest, Error> {
    let key = body
        .model
        .ok_or_else(|| Error::invalid_param("model", "`model` is required"))?;
    let Some(seed) = MODELS.iter().find(|m| m.key == key) else {
        let keys: Vec<&str> = MODELS.iter().map(|m| m.key).collect();
        return Err(Error::invalid_param(
            "model",
            format!("unknown model `{key}`; the models are {}", keys.join(", ")),
        ));
    };
    let key = seed.key;
    let mut request = ImageRequest {
        model: Some(seed.serves.to_owned()),
        run_async: Some(true),
        ..ImageRequest::default()
    };
    match body.prompt.filter(|p| !p.trim().is_empty()) {
        Some(prompt) if seed.prompt_required => request.prompt = Some(prompt),
        Some(_) => {}
        None if seed.prompt_required => {
            return Err(Error::invalid_param(
                "prompt",
                format!("`prompt` is required for `{key}`"),
            ))
        }
        None => {}
    }
    let mut params = body.params.unwrap_or_default();
    let ratio = take_listed(&mut params, "aspectRatio", seed.ratios, key)?.or(seed.default_ratio);
    match ratio {
        // `auto` is what leaving the ratio out gives upstream.
        None | Some("auto") => {}
        Some(ratio) if seed.key == "gpt-image-1-5" => {
            request.size = GPT_SIZES
                .iter()
                .find(|(r, _)| *r == ratio)
                .map(|(_, size)| (*size).to_owned());
        }
        Some(ratio) => request.aspect_ratio = Some(ratio.to_owned()),
    }
    let resolution =
        take_listed(&mut params, "resolution", seed.resolutions, key)?.or(seed.default_resolution);
    request.image_size = resolution.map(str::to_ascii_uppercase);
    for choice in seed.choices {
        let Some(value) = params.remove(choice.param) else {
            continue;
        };
        if choice.becomes.is_empty() {
            return Err(Error::invalid_param(
                format!("params.{}", choice.param),
                format!(
                    "`{}` is not offered: imgproxy has no style library; describe the style in the prompt",
                    choice.param
                ),
            ));
        }
        let value = listed(&value, choice.param, choice.values, key)?;
        request
            .extra
            .insert(choice.becomes.to_owned(), value.into());
    }
    if let Some(unknown) = params.keys().next() {
        return Err(Error::invalid_param(
            format!("params.{unknown}"),
            format!("`{key}` has no parameter `{unknown}`"),
        ));
    }
    // `quality` and `background` are fields of their own, not model-specific extras.
    request.quality = take_string(&mut request.extra, "quality");
    request.background = take_string(&mut request.extra, "background");
    request.images = attachments(seed, body.attachment_media_ids.unwrap_or_default())?;
    Ok(request)
}

fn take_string(extra: &mut BTreeMap<String, Value>, name: &str) -> Option<String> {
    match extra.remove(name)? {
        Value::String(text) => Some(text),
        other => Some(other.to_string()),
    }
}

/// `params[name]`, removed, when it is one of `values` (compared ignoring case).
fn take_listed(
    params: &mut Map<String, Value>,
    name: &str,
    values: &'static [&'static str],
    key: &str,
) -> Result<Option<&'static str>, Error> {
    let Some(value) = params.remove(name) else {
        return Ok(None);
    };
    listed(&value, name, values, key).map(Some)
}

fn listed(
    value: &Value,
    name: &str,
    values: &'static [&'static str],
    key: &str,
) -> Result<&'static str, Error> {
    let param = format!("params.{name}");
    if values.is_empty() {
        return Err(Error::invalid_param(
            param,
            format!("`{key}` has no parameter `{name}`"),
        ));
    }
    let text = value.as_str().unwrap_or_default();
    values
        .iter()
        .find(|v| v.eq_ignore_ascii_case(text))
        .copied()
        .ok_or_else(|| {
            Error::invalid_param(
                param,
                format!(
                    "`{name}` {value} is not one of `{key}`'s values: {}",
                    values.join(", ")
                ),
            )
        })
}

/// The file ids as reference images, within the key's count.
fn attachments(seed: &SeedModel, ids: Vec<String>) -> Result<Option<Vec<ImageInput>>, Error> {
    let key = seed.key;
    let refuse = |message: String| Err(Error::invalid_param("attachmentMediaIds", message));
    if seed.attachment_required && ids.is_empty() {
        return refuse(format!(
            "`{key}` requires 1 attachment (input_image) in `attachmentMediaIds`"
        ));
    }
    if ids.len() > seed.max_attachments {
        return match seed.max_attachments {
            0 => refuse(format!("`{key}` takes no attachments")),
            max => refuse(format!(
                "`{key}` takes at most {max} attachment(s), got {}",
                ids.len()
            )),
        };
    }
    Ok((!ids.is_empty()).then(|| {
        ids.into_iter()
            .map(|file_id| ImageInput::FileId { file_id })
            .collect()
    }))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn seed(body: Value) -> Result<ImageRequest, Error> {
        translate(serde_json::from_value(body).unwrap())
    }

    #[test]
    fn the_documented_example_keeps_its_ratio_and_resolution() {
        let request = seed(json!({
            "model": "nano-banana-2",
            "prompt": "A polished product shot of a ceramic mug on travertine",
            "params": { "aspectRatio": "1:1", "resolution": "1K" }
        }))
        .unwrap();
        assert_eq!(request.model.as_deref(), Some("nano-banana-2"));
        assert_eq!(request.aspect_ratio.as_deref(), Some("1:1"));
        assert_eq!(request.image_size.as_deref(), Some("1K"));
        assert_eq!(request.run_async, Some(true));
    }

    #[test]
    fn each_key_gets_the_defaults_the_seed_lists() {
        let cases = [
            ("nano-banana-2", Some("9:16"), None, Some("1K")),
            ("nano-banana-pro", Some("9:16"), None, Some("1K")),
            ("seedream-4-5", Some("16:9"), None, Some("2K")),
            ("z-image", Some("9:16"), None, None),
            ("gpt-image-1-5", None, Some("1024x1536"), None),
            ("grok-imagine", Some("9:16"), None, Some("1K")),
            ("grok-imagine-pro", Some("9:16"), None, Some("1K")),
        ];
        for (key, ratio, size, resolution) in cases {
            let request = seed(json!({"model": key, "prompt": "p"})).unwrap();
            assert_eq!(request.aspect_ratio.as_deref(), ratio, "{key}");
            assert_eq!(request.size.as_deref(), size, "{key}");
            assert_eq!(request.image_size.as_deref(), resolution, "{key}");
        }
    }

    #[test]
    fn params_become_catalog_parameters_and_attachments_file_ids() {
        let request = seed(json!({
            "model": "birefnet-bg-removal",
            "params": {"bgRemovalModel": "portrait", "quality": "high"},
            "attachmentMediaIds": ["file-abc"]
        }))
        .unwrap();
        assert_eq!(request.prompt, None);
        assert_eq!(request.quality.as_deref(), Some("high"));
        assert_eq!(request.extra["bg_removal_model"], json!("portrait"));
        assert_eq!(
            request.images,
            Some(vec![ImageInput::FileId {
                file_id: "file-abc".into()
            }])
        );
        let request = seed(json!({
            "model": "grok-imagine", "prompt": "p", "params": {"aspectRatio": "auto", "resolution": "2k"}
        }))
        .unwrap();
        assert_eq!(request.aspect_ratio, None);
        assert_eq!(request.image_size.as_deref(), Some("2K"));
    }

    #[test]
    fn refusals_name_the_seed_field() {
        let cases = [
            (
                json!({"model": "nope", "prompt": "p"}),
                "model",
                "unknown model",
            ),
            (json!({"model": "z-image"}), "prompt", "required"),
            (
                json!({"model": "runware-vectorize"}),
                "attachmentMediaIds",
                "requires 1 attachment",
            ),
            (
                json!({"model": "z-image", "prompt": "p", "attachmentMediaIds": ["file-a"]}),
                "attachmentMediaIds",
                "no attachments",
            ),
            (
                json!({"model": "seedream-4-5", "prompt": "p", "params": {"aspectRatio": "4:5"}}),
                "params.aspectRatio",
                "not one of",
            ),
            (
                json!({"model": "nano-banana-2", "prompt": "p", "params": {"styleId": "x"}}),
                "params.styleId",
                "style library",
            ),
            (
                json!({"model": "z-image", "prompt": "p", "params": {"resolution": "1K"}}),
                "params.resolution",
                "no parameter",
            ),
            (
                json!({"model": "z-image", "prompt": "p", "params": {"seed": 1}}),
                "params.seed",
                "no parameter",
            ),
        ];
        for (body, param, says) in cases {
            let err = seed(body.clone()).unwrap_err();
            assert_eq!(err.param(), Some(param), "{body}");
            assert!(err.public_message().contains(says), "{body}: {err}");
        }
    }
}
