//! The JSON Schema of one model's request: the schemars schema of [`ImageRequest`], narrowed
//! to the parameters, values and defaults that the model's catalog entry allows.

use serde_json::{json, Map, Value};

use crate::{
    catalog::{ModelSpec, ParamKind, ParamRule},
    Capability, ImageRequest,
};

/// The JSON Schema (draft 2020-12) of a request to `model`.
pub fn request_schema(model: &ModelSpec) -> Value {
    let base = serde_json::to_value(schemars::schema_for!(ImageRequest)).unwrap_or_default();
    let base_properties = base
        .get("properties")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let describe = |name: &str, mut property: Value| {
        if let Some(description) = base_properties.get(name).and_then(|p| p.get("description")) {
            property["description"] = description.clone();
        }
        property
    };

    let mut names = vec![model.id.clone()];
    names.extend(model.aliases.iter().cloned());
    let mut properties = Map::new();
    properties.insert(
        "model".into(),
        describe("model", json!({"type": "string", "enum": names})),
    );
    let mut prompt = json!({"type": "string"});
    if let Some(max) = model.max_prompt_chars {
        prompt["maxLength"] = json!(max);
    }
    properties.insert("prompt".into(), describe("prompt", prompt));
    properties.insert(
        "n".into(),
        describe(
            "n",
            json!({"type": "integer", "minimum": 1, "maximum": model.max_n, "default": 1}),
        ),
    );
    properties.insert(
        "response_format".into(),
        describe(
            "response_format",
            json!({"type": "string", "enum": ["url", "b64_json"], "default": "b64_json"}),
        ),
    );
    if model.max_reference_images > 0 {
        let mut images = base_properties
            .get("images")
            .cloned()
            .unwrap_or_else(|| json!({"type": "array"}));
        images["maxItems"] = json!(model.max_reference_images);
        properties.insert("images".into(), images);
    }
    if model.has(Capability::Streaming) {
        properties.insert(
            "stream".into(),
            describe("stream", json!({"type": "boolean", "default": false})),
        );
    }
    let takes_dimensions = ["size", "aspect_ratio", "image_size"]
        .iter()
        .any(|p| model.param(p).is_some());
    for (name, rule) in &model.params {
        properties.insert(name.clone(), describe(name, rule_schema(rule)));
    }
    if takes_dimensions {
        // Any dimension form is accepted and normalised into the ones the model takes.
        for name in ["size", "aspect_ratio", "image_size"] {
            properties
                .entry(name)
                .or_insert_with(|| describe(name, json!({"type": "string"})));
        }
    }

    let mut schema = json!({
        "$schema": base.get("$schema").cloned().unwrap_or(json!("https://json-schema.org/draft/2020-12/schema")),
        "title": format!("ImageRequest for {}", model.id),
        "type": "object",
        "properties": properties,
        "additionalProperties": false,
    });
    if let Some(defs) = base.get("$defs") {
        schema["$defs"] = defs.clone();
    }
    if model.requires_prompt {
        schema["required"] = json!(["prompt"]);
    }
    schema
}

fn rule_schema(rule: &ParamRule) -> Value {
    let mut schema = match &rule.kind {
        ParamKind::Enum { values } => json!({"type": "string", "enum": values}),
        ParamKind::Integer { min, max } => with_range(
            json!({"type": "integer"}),
            min.map(Value::from),
            max.map(Value::from),
        ),
        ParamKind::Number { min, max } => with_range(
            json!({"type": "number"}),
            min.map(Value::from),
            max.map(Value::from),
        ),
        ParamKind::Boolean => json!({"type": "boolean"}),
        ParamKind::String { max_len } => {
            let mut s = json!({"type": "string"});
            if let Some(max) = max_len {
                s["maxLength"] = json!(max);
            }
            s
        }
        ParamKind::Object => json!({"type": "object"}),
        ParamKind::Size {
            values,
            custom: None,
        } => json!({"type": "string", "enum": values}),
        ParamKind::Size {
            values,
            custom: Some(_),
        } => {
            json!({"type": "string", "pattern": "^(auto|[0-9]+x[0-9]+)$", "examples": values})
        }
    };
    if let Some(default) = &rule.default {
        schema["default"] = default.clone();
    }
    schema
}

fn with_range(mut schema: Value, min: Option<Value>, max: Option<Value>) -> Value {
    if let Some(min) = min {
        schema["minimum"] = min;
    }
    if let Some(max) = max {
        schema["maximum"] = max;
    }
    schema
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::embedded_model;

    #[test]
    fn schema_is_narrowed_to_the_model() {
        let schema = request_schema(&embedded_model("gpt-image-2"));
        let props = &schema["properties"];
        assert_eq!(props["n"]["maximum"], 10);
        assert_eq!(
            props["quality"]["enum"],
            json!(["auto", "low", "medium", "high"])
        );
        assert_eq!(props["quality"]["default"], "auto");
        assert!(props.get("seed").is_none());
        assert!(props["quality"]["description"].is_string());
        assert_eq!(schema["required"], json!(["prompt"]));
        assert_eq!(schema["additionalProperties"], false);
    }
}
