//! Catalog overrides: the config's models (added, or replacing one by id and provider), its
//! deadlines, routing preferences and remaps, laid over the embedded catalog. The catalog
//! itself, and what its entries mean, is `imgproxy_core::Catalog`'s business.

use anyhow::Context as _;
use imgproxy_core::{Catalog, ModelSpec};

use super::Settings;

impl Settings {
    /// The embedded catalog with the config's overrides.
    pub fn catalog(&self) -> anyhow::Result<Catalog> {
        let mut catalog = Catalog::embedded()?;
        for model in &self.models {
            catalog
                .upsert(model.clone())
                .with_context(|| format!("config model `{}`", model.id))?;
        }
        for (id, seconds) in &self.deadlines {
            let variants: Vec<ModelSpec> = catalog
                .variants(id)
                .into_iter()
                .map(|m| (**m).clone())
                .collect();
            anyhow::ensure!(
                !variants.is_empty(),
                "[deadlines] names `{id}`, which is not in the catalog"
            );
            for mut model in variants {
                model.deadline_secs = Some(*seconds);
                catalog.upsert(model)?;
            }
        }
        for (id, providers) in &self.routing {
            catalog.prefer(id, providers.clone())?;
        }
        for (from, to) in &self.remap {
            catalog.remap(from, to)?;
        }
        // The embedded entries are kept fresh by a test; an operator's may name a dead upstream.
        for (model, shutdown) in catalog.stale_models()? {
            tracing::warn!(
                model = %model.id,
                provider = %model.provider,
                upstream = %model.upstream,
                shutdown_date = %shutdown.date,
                source = %shutdown.source,
                "this model calls an upstream id that its provider has shut down: its requests will fail upstream"
            );
        }
        Ok(catalog)
    }
}
