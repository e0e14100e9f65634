//! Request parameters that arrive as text (URL queries, multipart form parts) turned into the
//! JSON an [`ImageRequest`] is read from: each value gets the type its field has in OpenAI's
//! request, or in the model's catalog entry. Which parameters a surface takes is its own
//! business (`url_api`, the edits form); the typing is shared here, and so is the way back,
//! a value as the text of a form part (for upstreams that take multipart forms).

use serde_json::{Map, Value};

use crate::{
    catalog::ParamKind, quote, Catalog, Error, ImageInput, ImageRequest, ModelSpec, Result,
};

/// OpenAI request fields whose values are integers.
const INTEGER_FIELDS: [&str; 6] = [
    "n",
    "seed",
    "output_compression",
    "frame_count",
    "frame_duration_ms",
    "partial_images",
];
/// Request fields whose values are booleans.
const BOOLEAN_FIELDS: [&str; 3] = ["stream", "async", "reroll"];
/// Request fields whose values are JSON objects.
const OBJECT_FIELDS: [&str; 1] = ["svg"];

/// The JSON value of parameter `key` given as `text`: typed by OpenAI's request for its own
/// fields, else by the model's catalog rule; text when the model does not know the key, so
/// that validation names it as unknown.
pub fn typed_value(model: Option<&ModelSpec>, key: &str, text: &str) -> Result<Value> {
    let invalid = |expected: &str| {
        Error::invalid_param(
            key,
            format!("`{key}` must be {expected}, not `{}`", quote(text)),
        )
    };
    let integer = || {
        text.trim()
            .parse::<i64>()
            .map(Value::from)
            .map_err(|_| invalid("an integer"))
    };
    let object = || serde_json::from_str(text).map_err(|_| invalid("a JSON object"));
    if INTEGER_FIELDS.contains(&key) {
        return integer();
    }
    if BOOLEAN_FIELDS.contains(&key) {
        return parse_bool(key, text).map(Value::Bool);
    }
    if OBJECT_FIELDS.contains(&key) {
        return object();
    }
    let Some(rule) = model.and_then(|m| m.param(key)) else {
        return Ok(Value::String(text.to_owned()));
    };
    Ok(match &rule.kind {
        ParamKind::Boolean => Value::Bool(parse_bool(key, text)?),
        ParamKind::Integer { .. } => integer()?,
        ParamKind::Number { .. } => text
            .trim()
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| invalid("a number"))?,
        ParamKind::Object => object()?,
        _ => Value::String(text.to_owned()),
    })
}

/// `true`, `1`, `yes`, `on` or a bare flag; `false`, `0`, `no`, `off`.
pub fn parse_bool(key: &str, text: &str) -> Result<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "" | "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(Error::invalid_param(
            key,
            format!("`{key}` must be true or false, not `{}`", quote(text)),
        )),
    }
}

/// Reads the request from `fields`; a value of the wrong shape is a 400 naming its field.
pub fn into_request(fields: Map<String, Value>) -> Result<ImageRequest> {
    serde_path_to_error::deserialize(Value::Object(fields)).map_err(|error| {
        let param = error.path().to_string();
        Error::invalid_param(
            param.clone(),
            format!("invalid `{param}`: {}", error.into_inner()),
        )
    })
}

/// The request of a multipart edit: its text parts typed for the model they name (or
/// `default_model`), the uploaded images and the mask. A text field given twice is a 400.
pub fn form_request(
    text_parts: &[(String, String)],
    images: Vec<ImageInput>,
    mask: Option<ImageInput>,
    catalog: &Catalog,
    default_model: &str,
    serves: &dyn Fn(&ModelSpec) -> bool,
) -> Result<ImageRequest> {
    let model_id = text_parts
        .iter()
        .find(|(k, _)| k == "model")
        .map_or(default_model, |(_, v)| v.as_str());
    let model = catalog.resolve(model_id, serves).ok();
    let mut fields = Map::new();
    for (key, text) in text_parts {
        let value = typed_value(model.map(AsRef::as_ref), key, text)?;
        if fields.insert(key.clone(), value).is_some() {
            return Err(Error::invalid_param(
                key,
                format!("`{}` is given more than once", quote(key)),
            ));
        }
    }
    let to_json = |input: ImageInput| serde_json::to_value(input).unwrap_or(Value::Null);
    if !images.is_empty() {
        fields.insert(
            "images".into(),
            Value::Array(images.into_iter().map(to_json).collect()),
        );
    }
    if let Some(mask) = mask {
        fields.insert("mask".into(), to_json(mask));
    }
    into_request(fields)
}

/// `value` as the text of a form part, as openai-python and Stability's samples send one:
/// strings as they are, numbers as decimal strings, booleans as `true`/`false`, objects and
/// arrays as JSON text. `None` for null, which a form leaves out.
pub fn form_text(value: Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(text) => Some(text),
        Value::Bool(flag) => Some(flag.to_string()),
        Value::Number(number) => Some(number.to_string()),
        other @ (Value::Array(_) | Value::Object(_)) => Some(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parts(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn form_parts_become_a_typed_request() {
        let catalog = Catalog::embedded().unwrap();
        let text = parts(&[
            ("model", "gpt-image-2"),
            ("prompt", "add a hat"),
            ("n", "2"),
            ("stream", "false"),
            ("partial_images", "1"),
            ("output_compression", "80"),
            ("user", "u1"),
        ]);
        let images = vec![ImageInput::Text("data:image/png;base64,AA==".into())];
        let mask = Some(ImageInput::Text("data:image/png;base64,AQ==".into()));
        let request =
            form_request(&text, images, mask, &catalog, "placeholder", &|_| true).unwrap();
        assert_eq!(request.n, Some(2));
        assert_eq!(request.stream, Some(false));
        assert_eq!(request.partial_images, Some(1));
        assert_eq!(request.output_compression, Some(80));
        assert_eq!(request.images.as_ref().map(Vec::len), Some(1));
        assert!(request.mask.is_some());
        assert_eq!(serde_json::to_value(&request).unwrap()["user"], json!("u1"));
    }

    #[test]
    fn bad_or_repeated_parts_name_their_field() {
        let catalog = Catalog::embedded().unwrap();
        for (pairs, param) in [
            (parts(&[("prompt", "p"), ("n", "two")]), "n"),
            (parts(&[("prompt", "p"), ("stream", "perhaps")]), "stream"),
            (parts(&[("prompt", "p"), ("prompt", "q")]), "prompt"),
            (parts(&[("prompt", "p"), ("svg", "{")]), "svg"),
        ] {
            let error = form_request(&pairs, Vec::new(), None, &catalog, "placeholder", &|_| true)
                .unwrap_err();
            assert_eq!(error.param(), Some(param), "{pairs:?}");
        }
    }

    #[test]
    fn values_become_form_text_like_openai_python_sends_them() {
        assert_eq!(form_text(json!("auto")), Some("auto".into()));
        assert_eq!(form_text(json!(28)), Some("28".into()));
        assert_eq!(form_text(json!(-1.5)), Some("-1.5".into()));
        assert_eq!(form_text(json!(true)), Some("true".into()));
        assert_eq!(form_text(json!(false)), Some("false".into()));
        assert_eq!(
            form_text(json!({"a": [1, "b"]})),
            Some(r#"{"a":[1,"b"]}"#.into())
        );
        assert_eq!(form_text(json!([1, 2])), Some("[1,2]".into()));
        assert_eq!(form_text(Value::Null), None);
    }
}
