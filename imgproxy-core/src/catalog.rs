//! The model catalog: data describing every model (id, aliases, provider, upstream id,
//! capabilities, allowed parameters with defaults, pricing). Embedded from
//! `catalog/*.toml` and overridable by the operator's config. No model-specific logic
//! lives in code: validation and `/v1/models` read these entries.

use std::{collections::BTreeMap, collections::HashMap, sync::Arc};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub mod describe;

use crate::{pricing::Pricing, Error, Result};

/// The catalog shipped inside the binary, one file per provider family. Order matters: when
/// several providers can serve one model id, the earlier file's variant is preferred.
const EMBEDDED_CATALOG: [&str; 13] = [
    include_str!("../catalog/placeholder.toml"),
    include_str!("../catalog/openai.toml"),
    include_str!("../catalog/gemini.toml"),
    include_str!("../catalog/replicate.toml"),
    include_str!("../catalog/bfl.toml"),
    include_str!("../catalog/xai.toml"),
    include_str!("../catalog/fal.toml"),
    include_str!("../catalog/together.toml"),
    include_str!("../catalog/ideogram.toml"),
    include_str!("../catalog/dashscope.toml"),
    include_str!("../catalog/stability.toml"),
    include_str!("../catalog/recraft.toml"),
    include_str!("../catalog/azure.toml"),
];

/// Upstream ids their providers have shut down (`catalog/shutdown.toml`).
const SHUT_DOWN_UPSTREAMS: &str = include_str!("../catalog/shutdown.toml");

/// An upstream model id its provider has shut down.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutDownUpstream {
    /// The catalog's provider name.
    pub provider: String,
    /// The upstream id, as the catalog sends it.
    pub upstream: String,
    /// Shutdown date, `YYYY-MM-DD`.
    pub date: String,
    /// Where the shutdown is announced.
    pub source: String,
}

/// The upstream ids known to be shut down, shipped with the binary.
pub fn shut_down_upstreams() -> Result<Vec<ShutDownUpstream>> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct ShutDownFile {
        shutdown: Vec<ShutDownUpstream>,
    }
    let file: ShutDownFile = toml::from_str(SHUT_DOWN_UPSTREAMS)
        .map_err(|e| Error::Internal(format!("invalid shutdown list: {e}")))?;
    Ok(file.shutdown)
}

/// A feature a model offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Capability {
    /// Generates images from a prompt.
    TextToImage,
    /// Edits or fuses input images.
    Edit,
    /// Inpaints with a mask.
    Mask,
    /// Streams partial images.
    Streaming,
    /// Removes image backgrounds.
    BackgroundRemoval,
    /// Turns raster images into SVG.
    Vectorize,
}

/// One model of the catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Public id clients use.
    pub id: String,
    /// Other names that resolve to this model.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Name of the provider instance that serves it (for example `openai`).
    pub provider: String,
    /// The model id sent upstream.
    pub upstream: String,
    /// What the model can do.
    #[serde(default)]
    pub capabilities: Vec<Capability>,
    /// Unix seconds shown as `created` in `/v1/models`.
    #[serde(default)]
    pub created: i64,
    /// Largest `n` per request.
    #[serde(default = "one")]
    pub max_n: u32,
    /// Largest `n` one upstream call produces; larger requests are fanned out. Unset: `max_n`.
    #[serde(default)]
    pub n_per_call: Option<u32>,
    /// Longest prompt in characters.
    #[serde(default)]
    pub max_prompt_chars: Option<usize>,
    /// Whether a prompt is required (false for background removal, vectorizing).
    #[serde(default = "yes")]
    pub requires_prompt: bool,
    /// Most reference images per request.
    #[serde(default)]
    pub max_reference_images: usize,
    /// Fewest reference images per request (1 for models that transform an input image).
    #[serde(default)]
    pub min_reference_images: usize,
    /// The parameters the model takes, with their allowed values and defaults.
    #[serde(default)]
    pub params: BTreeMap<String, ParamRule>,
    /// Constant fields added to every upstream request (for OpenAI-compatible gateways).
    #[serde(default)]
    pub upstream_params: Map<String, Value>,
    /// How validated parameters become the upstream's input fields: data that the model's
    /// provider crate interprets (renames, value maps, where sizes and reference images go).
    #[serde(default)]
    pub upstream_input: Map<String, Value>,
    /// Longest time an asynchronous upstream may take before it is cancelled (504).
    #[serde(default)]
    pub deadline_secs: Option<u64>,
    /// Rules that tie parameters together (what a value needs or excludes), checked after
    /// every parameter has passed its own rule.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// Price in credits.
    #[serde(default)]
    pub pricing: Option<Pricing>,
    /// Set when the upstream has shut the model down.
    #[serde(default)]
    pub retired: Option<Retirement>,
}

fn one() -> u32 {
    1
}

fn yes() -> bool {
    true
}

/// When and in favour of what a model was retired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retirement {
    /// Shutdown date, `YYYY-MM-DD`.
    pub shutdown_date: String,
    /// The model to use instead.
    pub replacement: String,
    /// Serve requests for the retired name with the replacement instead of refusing them
    /// (for names that clients of the seed services keep sending).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub redirect: bool,
}

/// A cross-parameter rule: when `when` holds, the request must carry every parameter of
/// `requires`, none of `forbids`, at most `max_n` images and integer parameters within `max`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// When the rule applies.
    pub when: Condition,
    /// Parameters that must be set; `svg.model` names the field `model` of the object `svg`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requires: Vec<String>,
    /// Parameters, or the request fields `stream`, `partial_images` and `mask`, that must not
    /// be set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forbids: Vec<String>,
    /// Largest `n`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_n: Option<u32>,
    /// Largest values of integer parameters.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub max: BTreeMap<String, i64>,
}

/// When a [`Rule`] applies: every condition given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Condition {
    /// A parameter that holds one of `values` (after defaults).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub param: Option<String>,
    /// The values of `param` the rule is for.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    /// The request has reference images.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub reference_images: bool,
}

/// What values one parameter accepts, and its default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParamRule {
    /// The accepted values.
    #[serde(flatten)]
    pub kind: ParamKind,
    /// Filled in when the request leaves the parameter out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    /// Another parameter that must hold one of the given values when this one is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requires: Option<Requirement>,
}

/// A cross-parameter constraint: `param` must be one of `values`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requirement {
    /// The other parameter.
    pub param: String,
    /// Its allowed values.
    pub values: Vec<String>,
}

/// The type and range of a parameter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ParamKind {
    /// One of a fixed set of strings.
    Enum {
        /// The allowed values.
        values: Vec<String>,
    },
    /// An integer in an optional range.
    Integer {
        /// Smallest allowed value.
        #[serde(default)]
        min: Option<i64>,
        /// Largest allowed value.
        #[serde(default)]
        max: Option<i64>,
    },
    /// A number in an optional range.
    Number {
        /// Smallest allowed value.
        #[serde(default)]
        min: Option<f64>,
        /// Largest allowed value.
        #[serde(default)]
        max: Option<f64>,
    },
    /// `true` or `false`.
    Boolean,
    /// Free text.
    String {
        /// Longest allowed value in characters.
        #[serde(default)]
        max_len: Option<usize>,
    },
    /// A JSON object passed through.
    Object,
    /// `WxH` or `auto`: one of `values`, or any size the `custom` rule allows.
    Size {
        /// Listed sizes (and possibly `auto`).
        #[serde(default)]
        values: Vec<String>,
        /// Arbitrary sizes the model takes, if any.
        #[serde(default)]
        custom: Option<CustomSize>,
    },
}

/// Limits on arbitrary `WxH` sizes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomSize {
    /// Both sides must be multiples of this.
    #[serde(default = "one")]
    pub multiple_of: u32,
    /// Shortest allowed side.
    #[serde(default = "one")]
    pub min_side: u32,
    /// Longest allowed side.
    pub max_side: u32,
    /// Most pixels in total.
    #[serde(default)]
    pub max_pixels: Option<u64>,
    /// Largest ratio of the long side to the short side.
    #[serde(default)]
    pub max_ratio: Option<f64>,
}

impl ModelSpec {
    /// Whether the model has `capability`.
    pub fn has(&self, capability: Capability) -> bool {
        self.capabilities.contains(&capability)
    }

    /// The rule of parameter `name`, if the model takes it.
    pub fn param(&self, name: &str) -> Option<&ParamRule> {
        self.params.get(name)
    }

    /// How many images one upstream call makes.
    pub fn images_per_call(&self) -> u32 {
        self.n_per_call.unwrap_or(self.max_n).max(1)
    }

    /// The values of an enum or size parameter, for `allowedParams`.
    pub fn listed_values(&self, name: &str) -> Vec<String> {
        match self.param(name).map(|rule| &rule.kind) {
            Some(ParamKind::Enum { values } | ParamKind::Size { values, .. }) => values.clone(),
            _ => Vec::new(),
        }
    }
}

/// The set of models, indexed by id and alias. One id may have several variants, one per
/// provider that can serve it (`flux-1.1-pro` on Replicate or on BFL); a request goes to the
/// first variant whose provider is configured, in catalog order or the operator's preference.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    models: Vec<Arc<ModelSpec>>,
    /// Id or alias → the id it names.
    names: HashMap<String, String>,
    remaps: HashMap<String, String>,
    /// Id → providers in the order they should serve it.
    preferences: HashMap<String, Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    #[serde(default)]
    models: Vec<ModelSpec>,
}

fn parse(text: &str) -> Result<Vec<ModelSpec>> {
    let file: CatalogFile =
        toml::from_str(text).map_err(|e| Error::Internal(format!("invalid catalog: {e}")))?;
    Ok(file.models)
}

impl Catalog {
    /// The catalog embedded in the binary.
    pub fn embedded() -> Result<Self> {
        let mut catalog = Self::default();
        for text in EMBEDDED_CATALOG {
            for model in parse(text)? {
                catalog.upsert(model)?;
            }
        }
        Ok(catalog)
    }

    /// Parses a catalog from TOML text with a `[[models]]` array.
    pub fn from_toml(text: &str) -> Result<Self> {
        Self::from_models(parse(text)?)
    }

    /// Builds a catalog from models; an alias may not name two different ids.
    pub fn from_models(models: Vec<ModelSpec>) -> Result<Self> {
        let mut catalog = Self::default();
        for model in models {
            catalog.upsert(model)?;
        }
        Ok(catalog)
    }

    /// Adds `model`, or replaces the variant of the same id and provider (operator overrides).
    pub fn upsert(&mut self, model: ModelSpec) -> Result<()> {
        for name in std::iter::once(&model.id).chain(&model.aliases) {
            if self.names.get(name).is_some_and(|id| *id != model.id) {
                return Err(duplicate(name));
            }
        }
        for name in std::iter::once(&model.id).chain(&model.aliases) {
            self.names.insert(name.clone(), model.id.clone());
        }
        let existing = self
            .models
            .iter()
            .position(|m| m.id == model.id && m.provider == model.provider);
        match existing {
            Some(index) => self.models[index] = Arc::new(model),
            None => self.models.push(Arc::new(model)),
        }
        Ok(())
    }

    /// Sends requests for `from` (typically a retired model) to `to`.
    pub fn remap(&mut self, from: impl Into<String>, to: impl Into<String>) -> Result<()> {
        let to = to.into();
        if !self.names.contains_key(&to) {
            return Err(Error::Internal(format!(
                "remap target `{to}` is not in the catalog"
            )));
        }
        self.remaps.insert(from.into(), to);
        Ok(())
    }

    /// Serves model `id` by the first configured provider of `providers`, in that order.
    pub fn prefer(&mut self, id: &str, providers: Vec<String>) -> Result<()> {
        if !self.models.iter().any(|m| m.id == id) {
            return Err(Error::Internal(format!(
                "routing names `{id}`, which is not in the catalog"
            )));
        }
        self.preferences.insert(id.to_owned(), providers);
        Ok(())
    }

    /// Every model variant, in catalog order.
    pub fn models(&self) -> impl Iterator<Item = &Arc<ModelSpec>> {
        self.models.iter()
    }

    /// The variants of the model named `name` (id, alias or remap), preferred first.
    pub fn variants(&self, name: &str) -> Vec<&Arc<ModelSpec>> {
        let name = self.remaps.get(name).map_or(name, String::as_str);
        let Some(id) = self.names.get(name) else {
            return Vec::new();
        };
        let mut variants: Vec<_> = self.models.iter().filter(|m| m.id == *id).collect();
        if let Some(order) = self.preferences.get(id) {
            // Stable: variants the preference does not name keep catalog order, after the rest.
            variants.sort_by_key(|m| {
                order
                    .iter()
                    .position(|p| *p == m.provider)
                    .unwrap_or(usize::MAX)
            });
        }
        variants
    }

    /// Live (not retired) model variants whose upstream id is known to be shut down, with
    /// the shutdown that concerns them: requests to them fail upstream.
    pub fn stale_models(&self) -> Result<Vec<(Arc<ModelSpec>, ShutDownUpstream)>> {
        let shut_down = shut_down_upstreams()?;
        Ok(self
            .models
            .iter()
            .filter(|model| model.retired.is_none())
            .filter_map(|model| {
                shut_down
                    .iter()
                    .find(|s| s.provider == model.provider && s.upstream == model.upstream)
                    .map(|s| (model.clone(), s.clone()))
            })
            .collect())
    }

    /// The preferred variant of the model named `name`, whether served or retired or not.
    pub fn get(&self, name: &str) -> Option<&Arc<ModelSpec>> {
        self.variants(name).into_iter().next()
    }

    /// The variant a request for `name` goes to: the first one `serves` accepts. Unknown,
    /// unserved and retired models are refused with a clear 404.
    pub fn resolve(
        &self,
        name: &str,
        serves: &dyn Fn(&ModelSpec) -> bool,
    ) -> Result<&Arc<ModelSpec>> {
        self.resolve_following(name, serves, MAX_REDIRECTS)
    }

    fn resolve_following(
        &self,
        name: &str,
        serves: &dyn Fn(&ModelSpec) -> bool,
        redirects_left: usize,
    ) -> Result<&Arc<ModelSpec>> {
        let variants = self.variants(name);
        let Some(first) = variants.first() else {
            return Err(Error::ModelNotFound {
                message: format!(
                    "the model `{name}` does not exist; GET /v1/models lists the available models"
                ),
            });
        };
        let model = variants.iter().find(|m| serves(m)).unwrap_or(first);
        if let Some(retired) = &model.retired {
            if retired.redirect && redirects_left > 0 {
                return self.resolve_following(&retired.replacement, serves, redirects_left - 1);
            }
            return Err(Error::ModelNotFound {
                message: format!(
                    "the model `{}` was retired upstream on {}; use `{}` instead",
                    model.id, retired.shutdown_date, retired.replacement
                ),
            });
        }
        if !serves(model) {
            let providers: Vec<_> = variants
                .iter()
                .map(|m| format!("`{}`", m.provider))
                .collect();
            return Err(Error::ModelNotFound {
                message: format!(
                    "the model `{}` is not available: no provider for it is configured ({})",
                    model.id,
                    providers.join(" or ")
                ),
            });
        }
        Ok(model)
    }
}

/// How many retired names a request may be redirected through (a loop in the data ends here).
const MAX_REDIRECTS: usize = 4;

fn duplicate(name: &str) -> Error {
    Error::Internal(format!("catalog names `{name}` twice"))
}

/// Test support: a copy of the embedded catalog's model `name` (an alias resolves too).
#[cfg(test)]
pub(crate) fn embedded_model(name: &str) -> ModelSpec {
    let catalog = Catalog::embedded().unwrap();
    (**catalog.resolve(name, &|_| true).unwrap()).clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_catalog_loads_and_resolves_aliases() {
        let catalog = Catalog::embedded().unwrap();
        assert_eq!(
            catalog.resolve("placeholder", &|_| true).unwrap().provider,
            "placeholder"
        );
        assert_eq!(
            catalog.resolve("gpt-image-2", &|_| true).unwrap().upstream,
            "gpt-image-2"
        );
    }

    #[test]
    fn every_embedded_model_has_a_price_and_valid_defaults() {
        let catalog = Catalog::embedded().unwrap();
        for model in catalog.models().filter(|m| m.retired.is_none()) {
            assert!(model.pricing.is_some(), "{} has no price", model.id);
            if let Some(retired) = &model.retired {
                assert!(catalog.get(&retired.replacement).is_some());
            }
        }
    }

    /// The catalog freshness test: no live entry may call an upstream id that its provider
    /// has shut down (`catalog/shutdown.toml`), and every retirement names a live replacement.
    #[test]
    fn no_live_model_calls_a_shut_down_upstream() {
        let catalog = Catalog::embedded().unwrap();
        let stale: Vec<String> = catalog
            .stale_models()
            .unwrap()
            .iter()
            .map(|(model, shutdown)| {
                format!(
                    "`{}` ({}) calls `{}`, shut down on {} ({})",
                    model.id, model.provider, model.upstream, shutdown.date, shutdown.source
                )
            })
            .collect();
        assert!(
            stale.is_empty(),
            "stale catalog entries:\n{}",
            stale.join("\n")
        );
        for model in catalog.models() {
            if let Some(retired) = &model.retired {
                let replacement = catalog.get(&retired.replacement);
                assert!(
                    replacement.is_some_and(|r| r.retired.is_none()),
                    "`{}` names `{}`, which is not a live model",
                    model.id,
                    retired.replacement
                );
            }
        }
    }

    #[test]
    fn the_freshness_check_flags_an_entry_on_a_shut_down_id() {
        let catalog = Catalog::from_toml(
            r#"
            [[models]]
            id = "old-flash"
            provider = "gemini"
            upstream = "gemini-2.5-flash-image"
            "#,
        )
        .unwrap();
        let stale = catalog.stale_models().unwrap();
        assert_eq!(stale.len(), 1);
        assert_eq!(stale[0].1.date, "2026-10-02");
    }

    #[test]
    fn retired_seed_names_are_served_by_their_replacement() {
        let catalog = Catalog::embedded().unwrap();
        for name in ["nano-banana", "nanobanana"] {
            let model = catalog.resolve(name, &|_| true).unwrap();
            assert_eq!(
                (model.id.as_str(), model.upstream.as_str()),
                ("nano-banana-2", "gemini-3.1-flash-image")
            );
        }
        // The retirement stays visible on the name itself.
        let entry = catalog.get("nano-banana").unwrap();
        assert_eq!(entry.retired.as_ref().unwrap().shutdown_date, "2026-10-02");
    }

    #[test]
    fn retired_models_name_their_replacement_until_remapped() {
        let mut catalog = Catalog::embedded().unwrap();
        let err = catalog.resolve("dall-e-3", &|_| true).unwrap_err();
        assert_eq!(err.status(), 404);
        assert!(err.to_string().contains("use `gpt-image-2`"), "{err}");
        catalog.remap("dall-e-3", "gpt-image-1-mini").unwrap();
        assert_eq!(
            catalog.resolve("dall-e-3", &|_| true).unwrap().id,
            "gpt-image-1-mini"
        );
    }

    #[test]
    fn unknown_model_is_model_not_found() {
        let err = Catalog::embedded()
            .unwrap()
            .resolve("nope", &|_| true)
            .unwrap_err();
        assert_eq!(err.code(), Some("model_not_found"));
    }

    #[test]
    fn upsert_replaces_by_id_and_rejects_alias_clashes() {
        let mut catalog = Catalog::embedded().unwrap();
        let mut model = (**catalog.get("placeholder").unwrap()).clone();
        model.max_n = 3;
        model.aliases = vec!["ph".into()];
        catalog.upsert(model.clone()).unwrap();
        assert_eq!(catalog.get("ph").unwrap().max_n, 3);
        model.id = "other".into();
        assert!(catalog.upsert(model).is_err());
    }

    #[test]
    fn variants_route_to_the_first_served_provider_in_preference_order() {
        let text = r#"
            [[models]]
            id = "flux"
            provider = "replicate"
            upstream = "a"
            [[models]]
            id = "flux"
            provider = "bfl"
            upstream = "b"
        "#;
        let mut catalog = Catalog::from_toml(text).unwrap();
        assert_eq!(
            catalog.resolve("flux", &|_| true).unwrap().provider,
            "replicate"
        );
        assert_eq!(
            catalog
                .resolve("flux", &|m| m.provider == "bfl")
                .unwrap()
                .upstream,
            "b"
        );
        let err = catalog.resolve("flux", &|_| false).unwrap_err();
        assert!(err.to_string().contains("`replicate` or `bfl`"), "{err}");
        catalog.prefer("flux", vec!["bfl".into()]).unwrap();
        assert_eq!(catalog.resolve("flux", &|_| true).unwrap().provider, "bfl");
    }
}
