//! The README's model table is the embedded catalog, rendered: this test fails when they
//! differ, and `IMGPROXY_BLESS_README=1 cargo test -p imgproxy-core --test readme_models`
//! writes the table anew.

use std::{fmt::Write as _, path::PathBuf};

use imgproxy_core::{catalog::describe::capability_name, pricing::Pricing, Catalog, ModelSpec};

const BEGIN: &str =
    "<!-- models:begin (generated from imgproxy-core/catalog by tests/readme_models.rs) -->";
const END: &str = "<!-- models:end -->";

fn price(pricing: Option<&Pricing>) -> String {
    let Some(pricing) = pricing else {
        return "no price".into();
    };
    let table = |map: &std::collections::BTreeMap<String, u64>| {
        map.iter()
            .map(|(key, credits)| format!("{key} {credits}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let quality = pricing
        .quality_param
        .as_deref()
        .map_or("quality".to_owned(), |param| format!("`{param}`"));
    let mut text = pricing.per_image.to_string();
    if !pricing.by_quality_and_resolution.is_empty() {
        let tiers: Vec<String> = pricing
            .by_quality_and_resolution
            .iter()
            .map(|(quality, tiers)| format!("{quality}: {}", table(tiers)))
            .collect();
        let _ = write!(text, "; by {quality} and tier: {}", tiers.join("; "));
    } else if !pricing.by_quality.is_empty() {
        let _ = write!(text, "; by {quality}: {}", table(&pricing.by_quality));
    }
    if !pricing.by_resolution.is_empty() {
        let _ = write!(text, "; by tier: {}", table(&pricing.by_resolution));
    }
    if pricing.scale_by_area {
        text.push_str("; × area / 1 MP");
    }
    if pricing.per_extra_megapixel > 0 {
        let _ = write!(text, "; +{} per extra MP", pricing.per_extra_megapixel);
    }
    if pricing.per_reference_image > 0 {
        let _ = write!(
            text,
            "; +{} per reference image",
            pricing.per_reference_image
        );
    }
    text
}

fn row(model: &ModelSpec) -> String {
    let names = std::iter::once(format!("`{}`", model.id))
        .chain(model.aliases.iter().map(|a| format!("`{a}`")))
        .collect::<Vec<_>>()
        .join(", ");
    let upstream = format!("`{}`", model.upstream);
    match &model.retired {
        Some(retired) => {
            let answer = if retired.redirect {
                format!("served by `{}`", retired.replacement)
            } else {
                format!("404 naming `{}`", retired.replacement)
            };
            format!(
                "| {names} | {} | {upstream}, shut down {} | retired: {answer} | | |",
                model.provider, retired.shutdown_date
            )
        }
        None => {
            let capabilities: Vec<&str> = model
                .capabilities
                .iter()
                .map(|c| capability_name(*c))
                .collect();
            format!(
                "| {names} | {} | {upstream} | {} | {} | {} |",
                model.provider,
                capabilities.join(", "),
                model.max_n,
                price(model.pricing.as_ref())
            )
        }
    }
}

fn table(catalog: &Catalog) -> String {
    let mut text = String::from(
        "| model (aliases) | provider | upstream id | capabilities | max n | credits per image |\n\
         |---|---|---|---|---|---|\n",
    );
    for model in catalog.models() {
        text.push_str(&row(model));
        text.push('\n');
    }
    text
}

#[test]
fn readme_model_table_matches_the_catalog() {
    let expected = table(&Catalog::embedded().unwrap());
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    let (Some(begin), Some(end)) = (readme.find(BEGIN), readme.find(END)) else {
        panic!("README.md has no `{BEGIN}` … `{END}` section");
    };
    let current = readme[begin + BEGIN.len()..end].trim_start_matches('\n');
    if current == expected {
        return;
    }
    if std::env::var_os("IMGPROXY_BLESS_README").is_some() {
        let updated = format!("{}{BEGIN}\n{expected}{}", &readme[..begin], &readme[end..]);
        std::fs::write(&path, updated).unwrap();
        return;
    }
    panic!(
        "README.md's model table differs from the catalog; run \
         `IMGPROXY_BLESS_README=1 cargo test -p imgproxy-core --test readme_models`. \
         Expected:\n{expected}"
    );
}
