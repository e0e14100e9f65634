//! Private serde types: Replicate's prediction object and error bodies (providers.md §4), and
//! the shape of a catalog entry's `[models.upstream_input]` table, which says how this crate
//! turns validated parameters into a model's `input`.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};

/// A prediction, as create and `urls.get` return it. Only the fields the adapter reads.
#[derive(Debug, Deserialize)]
pub(crate) struct Prediction {
    /// `starting`, `processing`, `succeeded`, `failed`, `canceled` (or `aborted`).
    pub status: String,
    /// A URL or an array of URLs once succeeded; `null` before.
    pub output: Option<Value>,
    /// The model's error text when failed.
    pub error: Option<Value>,
    /// Where to poll and cancel; absent on some terminal answers.
    pub urls: Option<PredictionUrls>,
}

/// `urls` of a prediction: absolute URLs to use as given, never rebuilt.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct PredictionUrls {
    pub get: Option<String>,
    pub cancel: Option<String>,
}

/// An error body: RFC 7807 problem details, or the older `{"error": ...}`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Problem {
    pub detail: Option<String>,
    pub error: Option<String>,
    pub title: Option<String>,
}

/// How a model's validated parameters become its Replicate `input` (catalog data).
///
/// Every validated parameter is sent under its own name unless `omit` drops it or `rename`
/// renames it; `values` maps single values (`jpeg` → `jpg`). The other fields place what has
/// no one-to-one counterpart: a `WxH` size, reference images and the image count.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct InputMapping {
    /// Parameter → upstream field name.
    pub rename: BTreeMap<String, String>,
    /// Parameter → (value → upstream value).
    pub values: BTreeMap<String, BTreeMap<String, Value>>,
    /// Parameters validated but not sent (for example a fixed `output_format`).
    pub omit: Vec<String>,
    /// Where a `WxH` size goes; without it `size` is sent as it is.
    pub custom_size: Option<CustomSizeField>,
    /// Where reference images go, as data URLs.
    pub references: Option<ReferenceField>,
    /// How a call asks for several images (models with `n_per_call` above 1).
    pub n: Option<CountField>,
}

/// A `WxH` size as `{field: value, width: W, height: H}`, e.g. `aspect_ratio: "custom"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CustomSizeField {
    pub field: String,
    pub value: String,
    #[serde(default = "width")]
    pub width: String,
    #[serde(default = "height")]
    pub height: String,
}

fn width() -> String {
    "width".into()
}

fn height() -> String {
    "height".into()
}

/// The input field of reference images.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReferenceField {
    pub field: String,
    pub form: ReferenceForm,
}

/// One image (`image_prompt`) or a list (`image_input`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ReferenceForm {
    Single,
    List,
}

/// The input field of the image count, sent only when a call asks for more than one.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CountField {
    pub field: String,
    /// Constant fields that must accompany a count above one.
    #[serde(default)]
    pub when_several: Map<String, Value>,
    /// Most reference plus generated images of one call, where the upstream caps the sum.
    pub max_with_references: Option<u32>,
}
