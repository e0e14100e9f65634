//! How a catalog model is shown to clients: OpenAI's `Model` object plus `allowedParams`
//! (seed 001's names), capabilities, pricing, aliases and the request's JSON Schema.

use serde_json::{json, Map, Value};

use super::{Capability, ModelSpec, ParamKind};

/// The wire name of a capability (`text-to-image`, `edit`, ...).
pub fn capability_name(capability: Capability) -> &'static str {
    match capability {
        Capability::TextToImage => "text-to-image",
        Capability::Edit => "edit",
        Capability::Mask => "mask",
        Capability::Streaming => "streaming",
        Capability::BackgroundRemoval => "background-removal",
        Capability::Vectorize => "vectorize",
    }
}

/// The `/v1/models` object of `model`.
pub fn model_object(model: &ModelSpec) -> Value {
    let mut object = json!({
        "id": model.id,
        "object": "model",
        "created": model.created,
        "owned_by": model.provider,
        "provider": model.provider,
        "aliases": model.aliases,
        "capabilities": model.capabilities.iter().map(|c| capability_name(*c)).collect::<Vec<_>>(),
        "allowedParams": allowed_params(model),
        "pricing": model.pricing,
        "schema": crate::schema::request_schema(model),
    });
    if let Some(retired) = &model.retired {
        object["shutdown_date"] = json!(retired.shutdown_date);
        object["replacement"] = json!(retired.replacement);
        object["redirected_to_replacement"] = json!(retired.redirect);
    }
    object
}

/// `allowedParams`: the catalog rules under seed 001's names, plus every rule in `params`.
pub fn allowed_params(model: &ModelSpec) -> Value {
    let custom_sizes = match model.param("size").map(|r| &r.kind) {
        Some(ParamKind::Size {
            custom: Some(rule), ..
        }) => json!(rule),
        _ => Value::Null,
    };
    let defaults: Map<String, Value> = model
        .params
        .iter()
        .filter_map(|(name, rule)| rule.default.clone().map(|d| (name.clone(), d)))
        .collect();
    json!({
        "supported_sizes": model.listed_values("size"),
        "custom_sizes": custom_sizes,
        "supported_aspect_ratios": model.listed_values("aspect_ratio"),
        "supported_resolutions": model.listed_values("image_size"),
        "supported_qualities": model.listed_values("quality"),
        "supported_output_formats": model.listed_values("output_format"),
        "supported_backgrounds": model.listed_values("background"),
        "supported_styles": model.listed_values("style"),
        "max_n": model.max_n,
        "max_reference_images": model.max_reference_images,
        "min_reference_images": model.min_reference_images,
        "supports_mask": model.has(Capability::Mask),
        "supports_streaming": model.has(Capability::Streaming),
        "supports_seed": model.param("seed").is_some(),
        "supports_negative_prompt": model.param("negative_prompt").is_some(),
        "max_prompt_chars": model.max_prompt_chars,
        "requires_prompt": model.requires_prompt,
        "defaults": defaults,
        "params": model.params,
        "rules": model.rules,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{catalog::embedded_model, Catalog};

    #[test]
    fn placeholder_object_has_openai_fields_and_catalog_data() {
        let object = model_object(&embedded_model("placeholder"));
        assert_eq!(object["object"], "model");
        assert_eq!(object["allowedParams"]["max_n"], 10);
        assert!(object["allowedParams"]["supported_sizes"]
            .as_array()
            .unwrap()
            .contains(&json!("512x512")));
        assert_eq!(object["pricing"]["per_image"], 1);
        assert_eq!(object["schema"]["type"], "object");
    }

    #[test]
    fn retired_models_show_their_shutdown() {
        let catalog = Catalog::embedded().unwrap();
        let object = model_object(catalog.get("dall-e-3").unwrap());
        assert_eq!(
            (
                object["shutdown_date"].as_str(),
                object["replacement"].as_str()
            ),
            (Some("2026-05-12"), Some("gpt-image-2"))
        );
    }
}
