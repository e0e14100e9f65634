//! `ImageRequest`: the body of `POST /v1/images/generations`, as OpenAI's SDKs send it, plus
//! imgproxy's extensions. Only shape lives here; what a model accepts is `validate`'s job.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A request to generate images, mirroring OpenAI's `/v1/images/generations` body.
///
/// Every field is optional at this level so that a missing or misplaced field becomes a clear
/// validation error naming the parameter, never a deserialisation failure.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct ImageRequest {
    /// Model id or alias from the catalog.
    pub model: Option<String>,
    /// Text description of the desired image(s).
    pub prompt: Option<String>,
    /// Number of images to generate.
    pub n: Option<u32>,
    /// `WxH` (for example `1024x1024`) or `auto`.
    pub size: Option<String>,
    /// Quality tier, for example `low`, `medium`, `high`, `auto`, `hd`.
    pub quality: Option<String>,
    /// `vivid` or `natural` (legacy DALL·E parameter).
    pub style: Option<String>,
    /// `url` or `b64_json`: how imgproxy returns the images. Never sent upstream.
    pub response_format: Option<String>,
    /// Aspect ratio such as `16:9`.
    pub aspect_ratio: Option<String>,
    /// Resolution tier: `512`, `1K`, `2K` or `4K` (alias `resolution`).
    #[serde(alias = "resolution")]
    pub image_size: Option<String>,
    /// Person generation policy: `dont_allow`, `allow_adult`, `allow_all`.
    pub person_generation: Option<String>,
    /// `transparent`, `opaque` or `auto`.
    pub background: Option<String>,
    /// `png`, `jpeg`, `webp`, `gif` or `svg`.
    pub output_format: Option<String>,
    /// Compression level 0–100 for `jpeg` and `webp`.
    pub output_compression: Option<u32>,
    /// `high` or `low`: how closely to match the style of input images.
    pub input_fidelity: Option<String>,
    /// Content moderation level: `auto` or `low`.
    pub moderation: Option<String>,
    /// What the image should not contain.
    pub negative_prompt: Option<String>,
    /// Seed for reproducible output.
    pub seed: Option<i64>,
    /// End-user identifier (deprecated upstream in favour of `safety_identifier`).
    pub user: Option<String>,
    /// Stable identifier of the end user, for abuse detection.
    pub safety_identifier: Option<String>,
    /// `low`, `medium` or `high`.
    pub complexity: Option<String>,
    /// Number of frames of a GIF (2–16).
    pub frame_count: Option<u32>,
    /// Duration of each GIF frame in milliseconds.
    pub frame_duration_ms: Option<u32>,
    /// SVG output options: `{"model": ..., "reasoning": {"effort": ...}}`.
    pub svg: Option<Value>,
    /// Stream partial images as Server-Sent Events.
    pub stream: Option<bool>,
    /// Number of partial images to stream (0–3).
    pub partial_images: Option<u32>,
    /// Reference images (imgproxy extension): URLs, data URLs or file ids. `image` (one or a
    /// list, as seed 000 and OpenAI's edits spell it) is accepted too.
    #[serde(alias = "image", deserialize_with = "one_or_many")]
    pub images: Option<Vec<ImageInput>>,
    /// Edits: the mask (its transparent areas are edited), applied to the first image. A URL,
    /// a data URL or a file id, bare or as `{"image_url"}` / `{"file_id"}`.
    pub mask: Option<ImageInput>,
    /// Where to POST the result of an asynchronous request (imgproxy extension).
    pub callback_url: Option<String>,
    /// Bypass the cache: generate anew and cache the new result (imgproxy extension; seed
    /// 000's `reroll`).
    pub reroll: Option<bool>,
    /// Run as an asynchronous task (imgproxy extension).
    #[serde(rename = "async")]
    pub run_async: Option<bool>,
    /// Models to fall back to, in order, when the model's providers turn the request away
    /// before starting work (OpenRouter's `models`); replaces the operator's fallback chain.
    pub models: Option<Vec<String>>,
    /// Which providers may serve the request, and in which order (OpenRouter's `provider`:
    /// `order`, `only`, `ignore`, `allow_fallbacks`).
    pub provider: Option<ProviderRouting>,
    /// Model-specific parameters that the catalog declares (for example `raw` on `ultra`).
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// The request's choice of providers, as OpenRouter's `provider` object spells it.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderRouting {
    /// Providers to try first, in this order; the model's other providers follow unless
    /// `allow_fallbacks` is false.
    pub order: Option<Vec<String>>,
    /// The only providers that may serve the request.
    pub only: Option<Vec<String>>,
    /// Providers that may not serve the request.
    pub ignore: Option<Vec<String>>,
    /// Whether another provider of the model may serve it when the first turns it away
    /// (default true). Fallback models in `models` are tried either way.
    pub allow_fallbacks: Option<bool>,
}

impl ProviderRouting {
    /// Whether `provider` may serve the request.
    pub fn allows(&self, provider: &str) -> bool {
        let named = |list: &Option<Vec<String>>| list.iter().flatten().any(|p| p == provider);
        (self.only.is_none() || named(&self.only)) && !named(&self.ignore)
    }

    /// Where `provider` stands in the request's order (unnamed ones after, as they were).
    pub fn rank(&self, provider: &str) -> usize {
        self.order
            .iter()
            .flatten()
            .position(|p| p == provider)
            .unwrap_or(usize::MAX)
    }

    /// Every provider name the routing mentions.
    pub fn named(&self) -> impl Iterator<Item = &String> {
        [&self.order, &self.only, &self.ignore]
            .into_iter()
            .flatten()
            .flatten()
    }
}

/// A reference image: a URL, a data URL or a file id, bare or in OpenAI's object forms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ImageInput {
    /// `https://...`, `data:image/png;base64,...` or a file id.
    Text(String),
    /// `{"image_url": "..."}`.
    ImageUrl {
        /// URL or data URL.
        image_url: String,
    },
    /// `{"file_id": "..."}`.
    FileId {
        /// Id of an uploaded file.
        file_id: String,
    },
}

/// Accepts one reference image or a list of them.
fn one_or_many<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Vec<ImageInput>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        Many(Vec<ImageInput>),
        One(ImageInput),
    }
    Ok(
        Option::<OneOrMany>::deserialize(deserializer)?.map(|value| match value {
            OneOrMany::Many(list) => list,
            OneOrMany::One(one) => vec![one],
        }),
    )
}

impl ImageRequest {
    /// A request for `prompt` on `model`, every other field unset.
    pub fn new(model: impl Into<String>, prompt: impl Into<String>) -> Self {
        Self {
            model: Some(model.into()),
            prompt: Some(prompt.into()),
            ..Self::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn routing_filters_and_orders_providers() {
        let routing = ProviderRouting {
            order: Some(vec!["b".into()]),
            ignore: Some(vec!["c".into()]),
            ..ProviderRouting::default()
        };
        assert!(routing.allows("a") && routing.allows("b") && !routing.allows("c"));
        assert!(routing.rank("b") < routing.rank("a"));
        let only = ProviderRouting {
            only: Some(vec!["a".into()]),
            ..ProviderRouting::default()
        };
        assert!(only.allows("a") && !only.allows("b"));
    }

    #[test]
    fn every_field_round_trips() {
        let body = json!({
            "model": "gpt-image-2", "prompt": "an otter", "n": 2, "size": "1024x1024",
            "quality": "high", "style": "vivid", "response_format": "url",
            "aspect_ratio": "1:1", "image_size": "1K", "person_generation": "allow_adult",
            "background": "transparent", "output_format": "png", "output_compression": 80,
            "input_fidelity": "high", "moderation": "low", "negative_prompt": "blur",
            "seed": 42, "user": "u1", "safety_identifier": "s1", "complexity": "high",
            "frame_count": 4, "frame_duration_ms": 120,
            "svg": {"model": "x", "reasoning": {"effort": "low"}},
            "stream": false, "partial_images": 2,
            "images": ["https://example.com/a.png", {"image_url": "data:image/png;base64,AA=="}, {"file_id": "file_1"}],
            "callback_url": "https://example.com/hook", "async": true,
            "raw": true
        });
        let request: ImageRequest = serde_json::from_value(body.clone()).unwrap();
        assert_eq!(request.n, Some(2));
        assert_eq!(request.run_async, Some(true));
        assert_eq!(request.extra.get("raw"), Some(&json!(true)));
        assert_eq!(
            request.images.as_deref().unwrap()[2],
            ImageInput::FileId {
                file_id: "file_1".into()
            }
        );
        assert_eq!(serde_json::to_value(&request).unwrap(), body);
    }

    #[test]
    fn resolution_is_an_alias_of_image_size() {
        let request: ImageRequest =
            serde_json::from_value(json!({"prompt": "p", "resolution": "2K"})).unwrap();
        assert_eq!(request.image_size.as_deref(), Some("2K"));
        assert!(request.extra.is_empty());
    }

    #[test]
    fn unset_fields_are_not_serialised() {
        let request = ImageRequest::new("placeholder", "p");
        assert_eq!(
            serde_json::to_value(&request).unwrap(),
            json!({"model": "placeholder", "prompt": "p"})
        );
    }

    #[test]
    fn image_is_an_alias_of_images_and_may_be_one() {
        let request: ImageRequest =
            serde_json::from_value(json!({"prompt": "p", "image": "https://example.com/a.png"}))
                .unwrap();
        assert_eq!(
            request.images,
            Some(vec![ImageInput::Text("https://example.com/a.png".into())])
        );
        assert!(request.extra.is_empty());
        let request: ImageRequest =
            serde_json::from_value(json!({"prompt": "p", "images": [{"file_id": "f"}]})).unwrap();
        assert_eq!(request.images.unwrap().len(), 1);
    }
}
