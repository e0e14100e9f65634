//! Catalog overrides: the config's models (added, or replacing one by id and provider), its
//! deadlines, routing preferences and remaps, laid over the embedded catalog, and the checks
//! of every setting that names a model or a provider (refused at start, naming the key and
//! valid choices). The catalog itself, and what its entries mean, is
//! `imgproxy_core::Catalog`'s business.

use std::collections::BTreeSet;

use anyhow::Context as _;
use imgproxy_core::{Catalog, ModelSpec};

use super::{Settings, ENV_URL_API_DEFAULT_MODEL};

/// The image model of `/v1/responses` requests whose `image_generation` tool names none.
pub const ENV_RESPONSES_IMAGE_MODEL: &str = "IMGPROXY_RESPONSES_IMAGE_MODEL";

/// How many valid choices an error lists (the catalog has dozens of models).
const CHOICES_SHOWN: usize = 12;

impl Settings {
    /// The embedded catalog with the config's overrides.
    pub fn catalog(&self) -> anyhow::Result<Catalog> {
        let mut catalog = Catalog::embedded()?;
        let known = self.known_providers();
        for model in &self.models {
            anyhow::ensure!(
                known.contains(model.provider.as_str()),
                "[[models]] `{}`: `provider = \"{}\"` is not a provider; known providers: {}",
                model.id,
                model.provider,
                list(known.iter().copied())
            );
            catalog
                .upsert(model.clone())
                .with_context(|| format!("[[models]] `{}`", model.id))?;
        }
        for (id, seconds) in &self.deadlines {
            let variants: Vec<ModelSpec> = catalog
                .variants(id)
                .into_iter()
                .map(|m| (**m).clone())
                .collect();
            anyhow::ensure!(
                !variants.is_empty(),
                "[deadlines] names `{id}`, which is not a model; models include: {}",
                model_choices(&catalog)
            );
            for mut model in variants {
                model.deadline_secs = Some(*seconds);
                catalog.upsert(model)?;
            }
        }
        for (id, providers) in &self.routing {
            let offered: BTreeSet<&str> = catalog
                .models()
                .filter(|m| m.id == *id)
                .map(|m| m.provider.as_str())
                .collect();
            anyhow::ensure!(
                !offered.is_empty(),
                "[routing] names `{id}`, which is not a model id; models include: {}",
                model_choices(&catalog)
            );
            if let Some(unknown) = providers.iter().find(|p| !offered.contains(p.as_str())) {
                anyhow::bail!(
                    "[routing] `{id}` names the provider `{unknown}`, which does not serve it; its providers: {}",
                    list(offered.iter().copied())
                );
            }
            catalog.prefer(id, providers.clone())?;
        }
        for (from, to) in &self.remap {
            anyhow::ensure!(
                catalog.get(to).is_some(),
                "[remap] `{from}` = `{to}`: `{to}` is not a model; models include: {}",
                model_choices(&catalog)
            );
            catalog.remap(from, to)?;
        }
        Ok(catalog)
    }
}

impl Settings {
    /// Every setting that names a model or a provider, checked against the catalog and the
    /// providers this configuration starts; errors name the config file, the key and valid
    /// choices. Run at start, so a typo fails the start, not every later request.
    pub(super) fn check_catalog(&self) -> anyhow::Result<()> {
        let checked = self.catalog().and_then(|catalog| {
            let served = self.served_providers();
            let serves = |m: &ModelSpec| served.contains(m.provider.as_str());
            let check = |key: &str, model: &str| -> anyhow::Result<()> {
                catalog
                    .resolve(model, &serves)
                    .map(|_| ())
                    .map_err(|error| {
                        anyhow::anyhow!(
                            "{key} = \"{model}\": {}; models this configuration serves: {}",
                            error.public_message(),
                            served_choices(&catalog, &serves)
                        )
                    })
            };
            if let Some(model) = &self.default_model {
                check("`default_model`", model)?;
            }
            // A fallback need not be served (it is skipped, with its reason, until it is), but
            // a name that is no model is a typo.
            for (model, chain) in &self.fallbacks {
                for name in std::iter::once(model).chain(chain) {
                    anyhow::ensure!(
                        catalog.get(name).is_some(),
                        "[fallbacks] `{model}` names `{name}`, which is not a model; models include: {}",
                        model_choices(&catalog)
                    );
                }
            }
            if let Some(model) = &self.responses_image_model {
                check(
                    &format!("`responses_image_model` (or {ENV_RESPONSES_IMAGE_MODEL})"),
                    model,
                )?;
            }
            if let Some(model) = &self.url_api_default_model {
                check(
                    &format!("`url_api.default_model` (or {ENV_URL_API_DEFAULT_MODEL})"),
                    model,
                )?;
            }
            Ok(())
        });
        match &self.config_path {
            Some(path) => checked.with_context(|| format!("in config {}", path.display())),
            None => checked,
        }
    }

    /// Provider names a catalog entry may use: every built-in family, the placeholder and
    /// this configuration's OpenAI-compatible providers.
    fn known_providers(&self) -> BTreeSet<&str> {
        crate::providers::PROVIDERS
            .iter()
            .map(|p| p.name)
            .chain(self.providers.iter().map(|p| p.name.as_str()))
            .chain([imgproxy_provider_placeholder::PROVIDER_ID])
            .collect()
    }

    /// Providers this configuration starts (those with a key) and the placeholder.
    fn served_providers(&self) -> BTreeSet<&str> {
        self.providers
            .iter()
            .map(|p| p.name.as_str())
            .chain([imgproxy_provider_placeholder::PROVIDER_ID])
            .collect()
    }
}

/// Up to [`CHOICES_SHOWN`] of `items`, in backticks, then `…` if there are more.
fn list<'a>(items: impl Iterator<Item = &'a str>) -> String {
    let items: Vec<&str> = items.collect();
    let mut shown: Vec<String> = items
        .iter()
        .take(CHOICES_SHOWN)
        .map(|i| format!("`{i}`"))
        .collect();
    if items.len() > CHOICES_SHOWN {
        shown.push(format!("… ({} in all)", items.len()));
    }
    shown.join(", ")
}

/// Model ids of the catalog that are not retired.
fn model_choices(catalog: &Catalog) -> String {
    served_choices(catalog, &|_| true)
}

/// Model ids that `serves` serves and that are not retired.
fn served_choices(catalog: &Catalog, serves: &dyn Fn(&ModelSpec) -> bool) -> String {
    let ids: BTreeSet<&str> = catalog
        .models()
        .filter(|m| m.retired.is_none() && serves(m))
        .map(|m| m.id.as_str())
        .collect();
    list(ids.into_iter())
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, Env, Flags, Settings};

    struct NoEnv;

    impl Env for NoEnv {
        fn var(&self, _: &str) -> Option<String> {
            None
        }
    }

    fn settings(toml: &str) -> Settings {
        Config::from_toml(toml)
            .unwrap()
            .into_settings(Flags::default(), &NoEnv)
            .unwrap()
    }

    fn refusal(toml: &str) -> String {
        let mut settings = settings(toml);
        settings.config_path = Some("/etc/imgproxy.toml".into());
        format!("{:#}", settings.check_catalog().unwrap_err())
    }

    #[test]
    fn settings_that_name_models_or_providers_are_checked_at_start() {
        settings("default_model = \"placeholder\"\n[remap]\n\"dall-e-3\" = \"placeholder\"")
            .check_catalog()
            .unwrap();
        for (toml, says) in [
            (
                "default_model = \"plaecholder\"",
                "`default_model` = \"plaecholder\": the model `plaecholder` does not exist",
            ),
            (
                "default_model = \"gpt-image-2\"",
                "no provider for it is configured (`openai` or `azure`)",
            ),
            (
                "[url_api]\ndefault_model = \"nope\"",
                "`url_api.default_model` (or IMGPROXY_URL_API_DEFAULT_MODEL) = \"nope\"",
            ),
            (
                "[remap]\n\"dall-e-3\" = \"gpt-image-9\"",
                "[remap] `dall-e-3` = `gpt-image-9`: `gpt-image-9` is not a model; models include: `",
            ),
            (
                "[routing]\n\"flux-1.1-pro\" = [\"bfl\", \"replicat\"]",
                "[routing] `flux-1.1-pro` names the provider `replicat`, which does not serve it; its providers: `bfl`, ",
            ),
            (
                "[routing]\n\"flux-9\" = [\"bfl\"]",
                "[routing] names `flux-9`, which is not a model id",
            ),
            (
                "[deadlines]\n\"flux-9\" = 30",
                "[deadlines] names `flux-9`, which is not a model",
            ),
            (
                "[[models]]\nid = \"mine\"\nprovider = \"mygatewy\"\nupstream = \"m\"\nmax_n = 1",
                "[[models]] `mine`: `provider = \"mygatewy\"` is not a provider; known providers: ",
            ),
        ] {
            let message = refusal(toml);
            assert!(
                message.starts_with("in config /etc/imgproxy.toml: "),
                "{toml}: {message}"
            );
            assert!(message.contains(says), "{toml}: {message}");
        }
        // Valid choices are listed, and served ones for a default model.
        assert!(refusal("default_model = \"plaecholder\"").contains("serves: `placeholder`"));
    }
}
