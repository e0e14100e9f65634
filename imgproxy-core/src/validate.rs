//! Validation: turns an [`ImageRequest`] into a [`ValidatedRequest`] for one catalog model,
//! or a 400/404 that names the offending parameter. Providers only ever see validated
//! requests.

use std::{collections::BTreeMap, sync::Arc};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    catalog::{Condition, ModelSpec, ParamKind, ParamRule, Rule},
    convert::RasterFormat,
    dimensions::{self, Ratio, Size},
    quote, Catalog, Error, ImageInput, ImageRequest, Result,
};

/// Request fields the gateway itself handles; every other field is a model parameter.
const GATEWAY_FIELDS: [&str; 13] = [
    "partial_images",
    "mask",
    "reroll",
    "model",
    "prompt",
    "n",
    "response_format",
    "images",
    "stream",
    "async",
    "callback_url",
    "models",
    "provider",
];
/// Longest `user` the catalog lets through (every model's `user` has this `max_len`, checked
/// by a test): OpenAI documents no limit, and an end-user id longer than this is not an id.
pub const USER_MAX_CHARS: usize = 256;

/// Dimension fields, reconciled by [`dimensions::normalize`].
const DIMENSION_FIELDS: [&str; 3] = ["size", "aspect_ratio", "image_size"];

/// How images are returned to the client; as JSON, its name (`"b64_json"`, `"url"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResponseFormat {
    /// Inline base64.
    #[default]
    B64Json,
    /// A URL served from the image store.
    Url,
}

impl ResponseFormat {
    /// Its name in a request's `response_format`.
    pub fn name(self) -> &'static str {
        match self {
            Self::B64Json => "b64_json",
            Self::Url => "url",
        }
    }

    /// The format a request's `response_format` names, `None` for a name that is neither.
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::B64Json, Self::Url]
            .into_iter()
            .find(|format| format.name() == name)
    }
}

// By hand, not derived: serde's derived enum reads anything but a string (`1`) as malformed
// JSON, which names no field; read as a string, every wrong value is an invalid value of its
// field.
impl<'de> Deserialize<'de> for ResponseFormat {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Self::from_name(&name).ok_or_else(|| {
            serde::de::Error::custom(format!("`{}` is not `b64_json` or `url`", quote(&name)))
        })
    }
}

/// A request checked against its model: every parameter is one the model takes, with a value
/// it allows, and defaults are filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatedRequest {
    /// The resolved catalog entry.
    pub model: Arc<ModelSpec>,
    /// The prompt (empty only for models that need none).
    pub prompt: String,
    /// Number of images.
    pub n: u32,
    /// How to return the images.
    pub response_format: ResponseFormat,
    /// Model parameters by their OpenAI names, after normalisation and defaults.
    pub params: BTreeMap<String, Value>,
    /// Reference images, not yet fetched.
    pub reference_images: Vec<ImageInput>,
    /// The edit mask, not yet fetched (only for models that take one, with an image).
    pub mask: Option<ImageInput>,
    /// The output format asked for, which the gateway converts to where the upstream cannot.
    pub output: OutputConversion,
    /// Whether the client streams the answer (Server-Sent Events).
    pub stream: bool,
    /// Partial images the client wants streamed (0–3), for models that make them.
    pub partial_images: Option<u32>,
    /// What to try, in order, when this model's provider turns the request away before
    /// starting work: other providers of the model and fallback models, each validated for
    /// its own model (see [`crate::failover`]). Empty for a fallback itself.
    pub fallbacks: Vec<ValidatedRequest>,
    /// The fallbacks that could not take this request, and why.
    pub skipped: Vec<Skipped>,
}

/// A candidate that could not take the request, and why (it is never altered to fit).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    /// The model id.
    pub model: String,
    /// Its provider.
    pub provider: String,
    /// Why it was passed over.
    pub reason: String,
}

/// The raster `output_format` and `output_compression` the client asked for. When the model
/// does not offer them they are not sent upstream (it makes its default); either way the
/// gateway converts an answer in another format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutputConversion {
    /// The format asked for.
    pub format: Option<RasterFormat>,
    /// JPEG quality (0–100) asked for.
    pub compression: Option<u8>,
}

impl ValidatedRequest {
    /// Candidate `index`: 0 is this request, `i` its fallback `i - 1` (this request when
    /// there is no such fallback).
    pub fn candidate(&self, index: usize) -> &Self {
        index
            .checked_sub(1)
            .and_then(|i| self.fallbacks.get(i))
            .unwrap_or(self)
    }

    /// A string parameter.
    pub fn param_str(&self, name: &str) -> Option<&str> {
        self.params.get(name).and_then(Value::as_str)
    }

    /// An integer parameter.
    pub fn param_i64(&self, name: &str) -> Option<i64> {
        self.params.get(name).and_then(Value::as_i64)
    }

    /// The explicit `WxH` size, if any.
    pub fn size(&self) -> Option<Size> {
        self.param_str("size").and_then(Size::parse)
    }

    /// The resolution tier: `image_size`, or the tier of `size`.
    pub fn tier(&self) -> Option<&str> {
        self.param_str("image_size")
            .or_else(|| self.size().map(Size::tier))
    }

    /// The pixel size to render: `size`, else `aspect_ratio` at the tier's long side
    /// (`multiple_of` rounding), else `fallback`.
    pub fn pixel_size(&self, fallback: Size, multiple_of: u32) -> Size {
        if let Some(size) = self.size() {
            return size;
        }
        let ratio = self.param_str("aspect_ratio").and_then(Ratio::parse);
        let long_side = self
            .param_str("image_size")
            .and_then(dimensions::tier_long_side);
        match (ratio, long_side) {
            (None, None) => fallback,
            (ratio, long_side) => ratio
                .unwrap_or(Ratio {
                    width: 1,
                    height: 1,
                })
                .at_long_side(long_side.unwrap_or(1024), multiple_of),
        }
    }
}

/// Validates `request` against the catalog; `default_model` serves requests that name none,
/// and `serves` tells which model variants have a configured provider.
pub fn validate(
    catalog: &Catalog,
    request: ImageRequest,
    default_model: &str,
    serves: &dyn Fn(&ModelSpec) -> bool,
) -> Result<ValidatedRequest> {
    let model = catalog
        .resolve(request.model.as_deref().unwrap_or(default_model), serves)?
        .clone();
    validate_for(model, &request)
}

/// Validates `request` against the model variant `model`, whatever model it names: how a
/// fallback is checked before it is tried. Sizes and ratios are normalised as the model
/// documents; a parameter it does not take is an error, never dropped.
pub fn validate_for(model: Arc<ModelSpec>, request: &ImageRequest) -> Result<ValidatedRequest> {
    let prompt = request.prompt.clone().unwrap_or_default();
    if model.requires_prompt && prompt.trim().is_empty() {
        return Err(Error::invalid_param("prompt", "`prompt` is required"));
    }
    if let Some(max) = model.max_prompt_chars {
        let chars = prompt.chars().count();
        if chars > max {
            return Err(Error::invalid_param(
                "prompt",
                format!(
                    "prompt is {chars} characters; model `{}` takes at most {max}",
                    model.id
                ),
            ));
        }
    }

    let n = request.n.unwrap_or(1);
    if n == 0 || n > model.max_n {
        return Err(Error::invalid_param(
            "n",
            format!(
                "n must be between 1 and {} for model `{}`",
                model.max_n, model.id
            ),
        ));
    }

    let response_format = match request.response_format.as_deref() {
        None => ResponseFormat::B64Json,
        Some(name) => ResponseFormat::from_name(name).ok_or_else(|| {
            Error::invalid_param(
                "response_format",
                format!(
                    "response_format `{}` is not `url` or `b64_json`",
                    quote(name)
                ),
            )
        })?,
    };

    // Every model streams (one completed event per image); partial images need an upstream
    // that makes them.
    let stream = request.stream == Some(true);
    if let Some(partials) = request.partial_images {
        if !stream {
            return Err(Error::invalid_param(
                "partial_images",
                "`partial_images` needs `stream: true`",
            ));
        }
        if !model.has(crate::Capability::Streaming) {
            return Err(Error::unsupported_param("partial_images", &model.id));
        }
        if partials > 3 {
            return Err(Error::invalid_param(
                "partial_images",
                "partial_images must be from 0 to 3",
            ));
        }
    }
    if request.callback_url.is_some() && request.run_async != Some(true) {
        return Err(Error::invalid_param(
            "callback_url",
            "`callback_url` is for asynchronous tasks: add `\"async\": true`",
        ));
    }

    let reference_images = request.images.clone().unwrap_or_default();
    let (min, max) = (model.min_reference_images, model.max_reference_images);
    if !(min..=max).contains(&reference_images.len()) {
        let expected = match (min, max) {
            (0, max) => format!("at most {max}"),
            (min, max) if min == max => format!("exactly {min}"),
            (min, max) => format!("from {min} to {max}"),
        };
        return Err(Error::invalid_param(
            "image",
            format!(
                "{} reference images given; model `{}` takes {expected}",
                reference_images.len(),
                model.id
            ),
        ));
    }

    if request.mask.is_some() {
        if !model.has(crate::Capability::Mask) {
            return Err(Error::InvalidRequest {
                message: format!("model `{}` does not take a mask", model.id),
                param: Some("mask".into()),
                code: Some("unknown_parameter".into()),
            });
        }
        if reference_images.is_empty() {
            return Err(Error::invalid_param(
                "mask",
                "a mask applies to the first image: give an image too",
            ));
        }
    }

    let dims = dimensions::normalize(
        &model,
        request.size.as_deref(),
        request.aspect_ratio.as_deref(),
        request.image_size.as_deref(),
    )?;
    let (params, output) = model_params(&model, request, dims)?;

    let validated = ValidatedRequest {
        model,
        prompt,
        n,
        response_format,
        params,
        reference_images,
        mask: request.mask.clone(),
        output,
        stream,
        partial_images: request.partial_images,
        fallbacks: Vec::new(),
        skipped: Vec::new(),
    };
    for rule in &validated.model.rules {
        check_rule(&validated, rule)?;
    }
    Ok(validated)
}

/// Checks one of the model's cross-parameter rules.
fn check_rule(request: &ValidatedRequest, rule: &Rule) -> Result<()> {
    let Some(situation) = request.situation(&rule.when) else {
        return Ok(());
    };
    let model = &request.model.id;
    if let Some(name) = rule.requires.iter().find(|name| !request.is_set(name)) {
        let param = name.split('.').next().unwrap_or(name);
        return Err(Error::invalid_param(
            param,
            format!("`{name}` is required with {situation} on model `{model}`"),
        ));
    }
    if let Some(name) = rule.forbids.iter().find(|name| request.is_set(name)) {
        return Err(Error::invalid_param(
            name,
            format!("`{name}` cannot be used with {situation} on model `{model}`"),
        ));
    }
    if let Some(max_n) = rule.max_n.filter(|max_n| request.n > *max_n) {
        return Err(Error::invalid_param(
            "n",
            format!("n must be at most {max_n} with {situation} on model `{model}`"),
        ));
    }
    for (name, max) in &rule.max {
        if request.param_i64(name).is_some_and(|value| value > *max) {
            return Err(Error::invalid_param(
                name,
                format!("`{name}` must be at most {max} with {situation} on model `{model}`"),
            ));
        }
    }
    Ok(())
}

impl ValidatedRequest {
    /// Whether the request carries `name`: a parameter, a field of an object parameter
    /// (`svg.model`), or one of the request fields `stream`, `partial_images` and `mask`.
    pub fn is_set(&self, name: &str) -> bool {
        match name {
            "stream" => self.stream,
            "partial_images" => self.partial_images.is_some(),
            "mask" => self.mask.is_some(),
            "output_compression" => {
                self.output.compression.is_some() || self.params.contains_key(name)
            }
            _ => {
                let mut path = name.split('.');
                let root = path.next().and_then(|root| self.params.get(root));
                path.try_fold(root, |value, field| Some(value?.get(field)))
                    .flatten()
                    .is_some_and(|value| !value.is_null())
            }
        }
    }

    /// How the request meets `condition`, in words for an error message, or `None` if it
    /// does not.
    fn situation(&self, condition: &Condition) -> Option<String> {
        let mut met = Vec::new();
        if let Some(param) = &condition.param {
            let value = self.param_str(param)?;
            if !condition.values.iter().any(|v| v == value) {
                return None;
            }
            met.push(format!("{param} `{value}`"));
        }
        if condition.reference_images {
            if self.reference_images.is_empty() {
                return None;
            }
            met.push("reference images".to_owned());
        }
        Some(met.join(" and "))
    }

    /// The raster format the client asked for: the answer is converted to it when the
    /// upstream answers in another.
    pub fn wanted_format(&self) -> Option<RasterFormat> {
        self.output.format
    }

    /// The quality of a conversion to JPEG: `output_compression`, if given.
    pub fn wanted_compression(&self) -> Option<u8> {
        self.output.compression
    }
}

/// Checks every model parameter of the request and fills in defaults.
fn model_params(
    model: &ModelSpec,
    request: &ImageRequest,
    dims: dimensions::Dimensions,
) -> Result<(BTreeMap<String, Value>, OutputConversion)> {
    let mut output = OutputConversion::default();
    let Value::Object(fields) =
        serde_json::to_value(request).map_err(|e| Error::Internal(e.to_string()))?
    else {
        return Err(Error::Internal(
            "request did not serialise to an object".into(),
        ));
    };
    let mut params = BTreeMap::new();
    for (name, value) in fields {
        if value.is_null()
            || GATEWAY_FIELDS.contains(&name.as_str())
            || DIMENSION_FIELDS.contains(&name.as_str())
        {
            continue;
        }
        if converted_output(model, &name, &value, &mut output)? {
            continue;
        }
        let Some(rule) = model.param(&name) else {
            return Err(Error::unsupported_param(&name, &model.id));
        };
        check_value(model, &name, rule, &value)?;
        params.insert(name, value);
    }
    for (name, value) in [
        ("size", dims.size),
        ("aspect_ratio", dims.aspect_ratio),
        ("image_size", dims.image_size),
    ] {
        if let Some(value) = value {
            params.insert(name.to_owned(), Value::String(value));
        }
    }
    let has_explicit_dimensions = DIMENSION_FIELDS.iter().any(|f| params.contains_key(*f));
    for (name, rule) in &model.params {
        let Some(default) = &rule.default else {
            continue;
        };
        // A default `size` must not contradict an `aspect_ratio` the client gave, and so on.
        if DIMENSION_FIELDS.contains(&name.as_str()) && has_explicit_dimensions {
            continue;
        }
        params
            .entry(name.clone())
            .or_insert_with(|| default.clone());
    }
    for (name, rule) in &model.params {
        let (Some(requirement), true) = (&rule.requires, params.contains_key(name)) else {
            continue;
        };
        let other = params.get(&requirement.param).and_then(Value::as_str);
        if !other.is_some_and(|v| requirement.values.iter().any(|allowed| allowed == v)) {
            return Err(Error::invalid_param(
                name,
                format!(
                    "`{name}` needs `{}` to be one of: {}",
                    requirement.param,
                    requirement.values.join(", ")
                ),
            ));
        }
    }
    let jpeg = output.format == Some(RasterFormat::Jpeg)
        || params.get("output_format").and_then(Value::as_str) == Some("jpeg");
    if params.get("background").and_then(Value::as_str) == Some("transparent") && jpeg {
        return Err(Error::invalid_param(
            "background",
            "a transparent background needs output_format png or webp",
        ));
    }
    Ok((params, output))
}

/// Records an explicit raster `output_format` and `output_compression` (the answer will be in
/// that format, converted if the upstream answers in another), and takes them away from the
/// upstream when the model does not offer them (it then makes its default). `true` when taken.
fn converted_output(
    model: &ModelSpec,
    name: &str,
    value: &Value,
    output: &mut OutputConversion,
) -> Result<bool> {
    match name {
        "output_format" => {
            let Some(text) = value.as_str() else {
                return Ok(false);
            };
            let values = model.param(name).and_then(|rule| match &rule.kind {
                ParamKind::Enum { values } => Some(values),
                _ => None,
            });
            let offered = model.param(name).is_some()
                && values.is_none_or(|values| values.iter().any(|v| v == text));
            // A model that makes only SVG or GIF has nothing a raster format converts from.
            let makes_raster = values.is_none_or(|values| {
                values
                    .iter()
                    .any(|v| RasterFormat::from_extension(v).is_some())
            });
            if !makes_raster {
                return Ok(false);
            }
            // `jpg` is no OpenAI value: validation refuses it unless the model takes it.
            let format = RasterFormat::from_extension(text).filter(|_| text != "jpg" || offered);
            output.format = format;
            Ok(format.is_some() && !offered)
        }
        "output_compression" => {
            let quality = value
                .as_u64()
                .and_then(|q| u8::try_from(q).ok())
                .filter(|q| *q <= 100);
            if model.param(name).is_some() {
                output.compression = quality;
                return Ok(false);
            }
            let Some(quality) = quality else {
                return Err(Error::invalid_param(
                    name,
                    "output_compression must be an integer from 0 to 100",
                ));
            };
            output.compression = Some(quality);
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Checks one parameter value against its rule.
fn check_value(model: &ModelSpec, name: &str, rule: &ParamRule, value: &Value) -> Result<()> {
    let invalid = |expected: String| {
        Err(Error::invalid_param(
            name,
            format!(
                "invalid {name} `{}` for model `{}`: expected {expected}",
                quote(&value.to_string()),
                model.id
            ),
        ))
    };
    match &rule.kind {
        ParamKind::Enum { values } => match value.as_str() {
            Some(v) if values.iter().any(|allowed| allowed == v) => Ok(()),
            _ => invalid(format!("one of {}", values.join(", "))),
        },
        ParamKind::Integer { min, max } => match value.as_i64() {
            Some(v) if min.is_none_or(|m| v >= m) && max.is_none_or(|m| v <= m) => Ok(()),
            _ => invalid(format!("an integer{}", range(*min, *max))),
        },
        ParamKind::Number { min, max } => match value.as_f64() {
            Some(v) if min.is_none_or(|m| v >= m) && max.is_none_or(|m| v <= m) => Ok(()),
            _ => invalid(format!("a number{}", range(*min, *max))),
        },
        ParamKind::Boolean => match value {
            Value::Bool(_) => Ok(()),
            _ => invalid("true or false".into()),
        },
        ParamKind::String { max_len } => match value.as_str() {
            Some(v) if max_len.is_none_or(|m| v.chars().count() <= m) => Ok(()),
            _ => invalid(format!(
                "a string{}",
                max_len
                    .map(|m| format!(" of at most {m} characters"))
                    .unwrap_or_default()
            )),
        },
        ParamKind::Object => match value {
            Value::Object(_) => Ok(()),
            _ => invalid("a JSON object".into()),
        },
        ParamKind::Size { .. } => match value {
            Value::String(_) => Ok(()),
            _ => invalid("`WxH`".into()),
        },
    }
}

fn range<T: std::fmt::Display>(min: Option<T>, max: Option<T>) -> String {
    match (min, max) {
        (Some(min), Some(max)) => format!(" from {min} to {max}"),
        (Some(min), None) => format!(" of at least {min}"),
        (None, Some(max)) => format!(" of at most {max}"),
        (None, None) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::QUOTED_CHARS;

    fn check(body: Value) -> Result<ValidatedRequest> {
        let catalog = Catalog::embedded().unwrap();
        validate(
            &catalog,
            serde_json::from_value(body).unwrap(),
            "placeholder",
            &|_| true,
        )
    }

    fn param_of(body: Value) -> Option<String> {
        check(body).unwrap_err().param().map(str::to_owned)
    }

    #[test]
    fn a_response_format_is_its_name_in_json_and_nothing_else_reads_as_one() {
        for format in [ResponseFormat::B64Json, ResponseFormat::Url] {
            let name = json!(format.name());
            assert_eq!(serde_json::to_value(format).unwrap(), name);
            assert_eq!(
                serde_json::from_value::<ResponseFormat>(name).unwrap(),
                format
            );
        }
        for wrong in [json!("png"), json!("URL"), json!(1), json!(null)] {
            let error = serde_json::from_value::<ResponseFormat>(wrong.clone()).unwrap_err();
            assert!(error.is_data(), "{wrong}: {error}");
        }
    }

    #[test]
    fn masks_need_a_model_that_takes_them_and_an_image() {
        const PNG: &str = "data:image/png;base64,iVBORw0KGgo=";
        let error = check(json!({"prompt": "p", "images": [PNG], "mask": PNG})).unwrap_err();
        assert_eq!(
            (error.param(), error.code()),
            (Some("mask"), Some("unknown_parameter"))
        );
        assert_eq!(
            param_of(json!({"model": "gpt-image-2", "prompt": "p", "mask": PNG})).as_deref(),
            Some("mask")
        );
        let v = check(
            json!({"model": "gpt-image-2", "prompt": "p", "image": [PNG, PNG],
                             "mask": {"image_url": PNG}}),
        )
        .unwrap();
        assert_eq!((v.reference_images.len(), v.mask.is_some()), (2, true));
    }

    #[test]
    fn an_output_format_the_model_lacks_is_converted_to_not_sent() {
        // BFL makes jpeg or png: a webp request sends the default and converts.
        let v = check(
            json!({"model": "flux-pro-1.1", "prompt": "p", "output_format": "webp",
                             "output_compression": 60}),
        )
        .unwrap();
        assert_eq!(v.param_str("output_format"), Some("jpeg"));
        assert_eq!(v.wanted_format(), Some(RasterFormat::Webp));
        assert!(!v.params.contains_key("output_compression"));
        assert_eq!(v.wanted_compression(), Some(60));
        // A model that offers the format gets it sent, and the answer is still checked.
        let v =
            check(json!({"model": "gpt-image-2", "prompt": "p", "output_format": "jpeg"})).unwrap();
        assert_eq!(v.param_str("output_format"), Some("jpeg"));
        assert_eq!(v.wanted_format(), Some(RasterFormat::Jpeg));
        // Nothing asked, nothing converted.
        let v = check(json!({"model": "gpt-image-2", "prompt": "p"})).unwrap();
        assert_eq!(v.wanted_format(), None);
        // A model that makes only SVG cannot be converted to raster.
        assert_eq!(
            param_of(json!({"model": "vectorize", "prompt": "p", "image": "data:image/png;base64,iVBORw0KGgo=",
                            "output_format": "png"}))
            .as_deref(),
            Some("output_format")
        );
        // Not raster, or not OpenAI's spelling: refused as before.
        assert_eq!(
            param_of(json!({"model": "flux-pro-1.1", "prompt": "p", "output_format": "gif"}))
                .as_deref(),
            Some("output_format")
        );
        assert_eq!(
            param_of(json!({"model": "gpt-image-2", "prompt": "p", "output_format": "jpg"}))
                .as_deref(),
            Some("output_format")
        );
        assert_eq!(
            param_of(json!({"model": "flux-pro-1.1", "prompt": "p", "output_compression": 101}))
                .as_deref(),
            Some("output_compression")
        );
    }

    #[test]
    fn defaults_are_filled_in() {
        let v = check(json!({"prompt": "otter"})).unwrap();
        assert_eq!(v.model.id, "placeholder");
        assert_eq!((v.n, v.response_format), (1, ResponseFormat::B64Json));
        assert_eq!(v.param_str("output_format"), Some("png"));
        assert_eq!(v.param_str("size"), Some("1024x1024"));
    }

    #[test]
    fn aspect_ratio_suppresses_the_default_size() {
        let v =
            check(json!({"prompt": "otter", "aspect_ratio": "16:9", "image_size": "1K"})).unwrap();
        assert_eq!(v.param_str("size"), None);
        assert_eq!(
            v.pixel_size(
                Size {
                    width: 1,
                    height: 1
                },
                8
            )
            .to_string(),
            "1024x576"
        );
    }

    #[test]
    fn each_bad_input_names_its_param() {
        assert_eq!(param_of(json!({"prompt": ""})).as_deref(), Some("prompt"));
        assert_eq!(
            param_of(json!({"prompt": "p", "n": 0})).as_deref(),
            Some("n")
        );
        assert_eq!(
            param_of(json!({"prompt": "p", "n": 11})).as_deref(),
            Some("n")
        );
        assert_eq!(
            param_of(json!({"prompt": "p", "size": "13x13"})).as_deref(),
            Some("size")
        );
        assert_eq!(
            param_of(json!({"prompt": "p", "quality": "ultra"})).as_deref(),
            Some("quality")
        );
        assert_eq!(
            param_of(json!({"prompt": "p", "response_format": "png"})).as_deref(),
            Some("response_format")
        );
        assert_eq!(
            param_of(json!({"prompt": "p", "raw": true})).as_deref(),
            Some("raw")
        );
        assert_eq!(
            param_of(json!({"prompt": "p", "style": "vivid"})).as_deref(),
            Some("style")
        );
        assert_eq!(
            param_of(json!({"prompt": "p", "output_compression": 101})).as_deref(),
            Some("output_compression")
        );
        assert_eq!(
            param_of(json!({"prompt": "p", "background": "transparent", "output_format": "jpeg"}))
                .as_deref(),
            Some("background")
        );
        assert_eq!(
            param_of(json!({"prompt": "p", "stream": true, "partial_images": 1})).as_deref(),
            Some("partial_images")
        );
        assert_eq!(
            param_of(json!({"prompt": "p", "partial_images": 1})).as_deref(),
            Some("partial_images")
        );
        assert_eq!(
            param_of(
                json!({"model": "gpt-image-2", "prompt": "p", "stream": true, "partial_images": 4})
            )
            .as_deref(),
            Some("partial_images")
        );
        assert!(
            check(json!({"prompt": "p", "stream": true}))
                .unwrap()
                .stream
        );
        assert_eq!(
            param_of(json!({"prompt": "p", "callback_url": "https://example.com/h"})).as_deref(),
            Some("callback_url")
        );
    }

    #[test]
    fn quoted_values_are_cut_to_a_short_prefix() {
        assert_eq!(quote("short"), "short");
        let exact = "é".repeat(QUOTED_CHARS);
        assert_eq!(quote(&exact), exact);
        let long = "é".repeat(QUOTED_CHARS + 1);
        assert_eq!(quote(&long), format!("{}…", "é".repeat(QUOTED_CHARS)));

        // A megabyte in is not a megabyte out, whichever parameter echoes it.
        let huge = "q".repeat(1 << 20);
        for body in [
            json!({"prompt": "p", "quality": huge}),
            json!({"prompt": "p", "response_format": huge}),
            json!({"prompt": "p", "size": huge}),
            json!({"prompt": "p", "aspect_ratio": huge}),
            json!({"prompt": "p", "image_size": huge}),
        ] {
            let message = check(body).unwrap_err().public_message();
            assert!(message.len() < 400, "{} bytes: {message}", message.len());
        }
    }

    #[test]
    fn free_strings_have_documented_length_limits() {
        assert_eq!(
            param_of(json!({"prompt": "p", "user": "u".repeat(USER_MAX_CHARS + 1)})).as_deref(),
            Some("user")
        );
        check(json!({"prompt": "p", "user": "u".repeat(USER_MAX_CHARS)})).unwrap();
        assert_eq!(
            param_of(json!({"prompt": "p", "safety_identifier": "s".repeat(65)})).as_deref(),
            Some("safety_identifier")
        );
        // Every string parameter of every catalog model has a limit, so none is unbounded.
        let catalog = Catalog::embedded().unwrap();
        for model in catalog.models() {
            for (name, rule) in &model.params {
                if let ParamKind::String { max_len } = rule.kind {
                    assert!(max_len.is_some(), "{}: `{name}` has no max_len", model.id);
                }
            }
            if let Some(ParamKind::String { max_len }) = model.param("user").map(|r| &r.kind) {
                assert_eq!(*max_len, Some(USER_MAX_CHARS), "{}: `user`", model.id);
            }
        }
    }

    #[test]
    fn unknown_model_is_404() {
        let err = check(json!({"model": "nope", "prompt": "p"})).unwrap_err();
        assert_eq!((err.status(), err.code()), (404, Some("model_not_found")));
    }

    #[test]
    fn gpt_image_rules_come_from_the_catalog() {
        let v = check(
            json!({"model": "gpt-image-2.6-flare", "prompt": "p", "quality": "xhigh",
                             "output_format": "gif", "frame_count": 4}),
        )
        .unwrap();
        assert_eq!(v.param_i64("frame_count"), Some(4));
        assert_eq!(
            param_of(json!({"model": "gpt-image-2.6-flare", "prompt": "p", "frame_count": 4}))
                .as_deref(),
            Some("frame_count")
        );
        assert_eq!(
            param_of(json!({"model": "gpt-image-2", "prompt": "p", "quality": "xhigh"})).as_deref(),
            Some("quality")
        );
        assert_eq!(
            param_of(json!({"model": "gpt-image-2", "prompt": "p", "complexity": "low"}))
                .as_deref(),
            Some("complexity")
        );
        let long = "x".repeat(32_001);
        assert_eq!(
            param_of(json!({"model": "gpt-image-2", "prompt": long})).as_deref(),
            Some("prompt")
        );
    }

    /// GPT Image 2.6 brought complexity, GIF and SVG; 2.5 takes none of them (quality
    /// `xhigh`/`max` and the dated snapshots are 2.5's own).
    #[test]
    fn gpt_image_2_5_refuses_what_arrived_with_2_6() {
        for (field, value) in [
            ("complexity", json!("low")),
            ("output_format", json!("gif")),
            ("output_format", json!("svg")),
            ("frame_count", json!(4)),
            ("frame_duration_ms", json!(100)),
            ("svg", json!({"model": "m"})),
        ] {
            for model in ["gpt-image-2.5-flare", "gpt-image-2.5-sunburst-2026-09-08"] {
                let mut body = json!({"model": model, "prompt": "p"});
                body[field] = value.clone();
                assert_eq!(param_of(body).as_deref(), Some(field), "{model} {field}");
            }
        }
        let v = check(
            json!({"model": "gpt-image-2.5-flare-2026-09-08", "prompt": "p",
                             "quality": "max"}),
        )
        .unwrap();
        assert_eq!(v.model.id, "gpt-image-2.5-flare");
        let v = check(json!({"model": "gpt-image-2.6-sunburst", "prompt": "p",
                             "complexity": "high"}))
        .unwrap();
        assert_eq!(v.param_str("complexity"), Some("high"));
    }

    /// The rules of GPT Image 2.6's GIF and SVG outputs, each a 400 naming its parameter.
    #[test]
    fn gif_and_svg_outputs_follow_their_rules() {
        const PNG: &str = "data:image/png;base64,iVBORw0KGgo=";
        let model = "gpt-image-2.6-flare";
        let svg = json!({"model": model, "prompt": "p", "output_format": "svg",
                         "svg": {"model": "gpt-5.6-terra", "reasoning": {"effort": "low"}}});
        check(svg.clone()).unwrap();
        let cases = [
            (json!({"svg": null}), "svg"),
            (
                json!({"output_format": "svg", "svg": {"reasoning": {"effort": "low"}}}),
                "svg",
            ),
            (json!({"n": 2}), "n"),
            (json!({"stream": true}), "stream"),
            (
                json!({"svg": {"model": "m"}, "output_format": "png"}),
                "svg",
            ),
        ];
        for (change, param) in cases {
            let mut body = svg.clone();
            for (k, v) in change.as_object().unwrap() {
                body[k] = v.clone();
            }
            assert_eq!(param_of(body.clone()).as_deref(), Some(param), "{body}");
        }
        let gif = json!({"model": model, "prompt": "p", "output_format": "gif",
                         "frame_count": 4, "frame_duration_ms": 20});
        check(gif.clone()).unwrap();
        let cases = [
            (json!({"stream": true}), "stream"),
            (json!({"stream": true, "partial_images": 1}), "stream"),
            (json!({"output_compression": 50}), "output_compression"),
            (json!({"image": [PNG], "mask": PNG}), "mask"),
            (json!({"frame_duration_ms": 10}), "frame_duration_ms"),
            (json!({"frame_duration_ms": 655_360}), "frame_duration_ms"),
        ];
        for (change, param) in cases {
            let mut body = gif.clone();
            for (k, v) in change.as_object().unwrap() {
                body[k] = v.clone();
            }
            assert_eq!(param_of(body.clone()).as_deref(), Some(param), "{body}");
        }
        // A PNG may still stream on the same model.
        check(json!({"model": model, "prompt": "p", "stream": true, "partial_images": 1})).unwrap();
    }

    #[test]
    fn bfl_takes_a_lower_safety_tolerance_with_reference_images() {
        const PNG: &str = "data:image/png;base64,iVBORw0KGgo=";
        for model in ["flux-kontext-pro", "flux-2-pro", "flux-2-klein-4b"] {
            check(json!({"model": model, "prompt": "p", "safety_tolerance": 5})).unwrap();
            check(json!({"model": model, "prompt": "p", "safety_tolerance": 2, "image": [PNG]}))
                .unwrap();
            let error = check(json!({"model": model, "prompt": "p", "safety_tolerance": 3,
                                     "image": [PNG]}))
            .unwrap_err();
            assert_eq!(error.param(), Some("safety_tolerance"), "{model}");
            assert!(
                error
                    .to_string()
                    .contains("at most 2 with reference images"),
                "{error}"
            );
        }
    }

    #[test]
    fn every_catalog_model_accepts_a_minimal_request_with_its_defaults() {
        let catalog = Catalog::embedded().unwrap();
        for model in catalog.models().filter(|m| m.retired.is_none()) {
            let mut request = ImageRequest::new(model.id.clone(), "a lighthouse");
            if model.min_reference_images > 0 {
                let image = ImageInput::Text("data:image/png;base64,iVBORw0KGgo=".into());
                request.images = Some(vec![image; model.min_reference_images]);
            }
            let serves_this = |m: &ModelSpec| m.provider == model.provider;
            let validated = validate(&catalog, request, "placeholder", &serves_this)
                .unwrap_or_else(|e| panic!("{} ({}): {e}", model.id, model.provider));
            for (name, rule) in &model.params {
                if let Some(default) = &rule.default {
                    check_value(model, name, rule, default)
                        .unwrap_or_else(|e| panic!("{}: default of {name}: {e}", model.id));
                }
            }
            assert!(validated.n >= 1);
            assert!(
                model.max_n >= 1 && model.images_per_call() >= 1,
                "{}",
                model.id
            );
            assert!(
                model.pricing.is_some(),
                "{} ({}) has no price",
                model.id,
                model.provider
            );
        }
    }
}
