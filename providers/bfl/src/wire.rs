//! BFL's wire types that this adapter reads (the submit answer, the poll answer, error
//! bodies), and the shape of the catalog's `upstream_input` for BFL models. Private to the
//! crate. The submit body is a plain JSON object built in `convert`, because its fields come
//! from the catalog rather than from a fixed struct.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

/// The answer of `POST /v1/<model>`.
#[derive(Debug, Deserialize)]
pub(crate) struct SubmitResponse {
    pub id: String,
    /// Where to poll. Absent only in old answers, which are polled at the legacy
    /// `/v1/get_result?id=` of the base URL.
    pub polling_url: Option<String>,
    /// What BFL bills for the task, in its own credits (nullable, newer field); logged only.
    pub cost: Option<f64>,
}

/// The answer of `GET <polling_url>`. Loose on purpose: `result` is an object only once the
/// task is `Ready`, and non-`Ready` answers must not fail on whatever it holds before.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct PollResponse {
    pub status: Option<String>,
    /// Some answers carry the status as `state` (vercel's adapter accepts both).
    pub state: Option<String>,
    pub result: Option<Value>,
    /// Moderation reasons or error details; format undocumented.
    pub details: Option<Value>,
    /// What went wrong, on an `Error` status.
    pub error: Option<Value>,
}

/// A BFL model's `upstream_input` table in the catalog: how validated parameters and
/// reference images become fields of the submit body.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct InputMapping {
    /// Where a `WxH` size goes; unset: `size` is sent as it is.
    pub size: Option<SizeField>,
    /// The field of each reference image, in request order.
    pub reference_fields: Vec<String>,
    /// How reference images are encoded.
    pub reference_encoding: ReferenceEncoding,
    /// Upstream field names of parameters whose name differs.
    pub rename: BTreeMap<String, String>,
    /// Per parameter, upstream values of string values that differ.
    pub values: BTreeMap<String, BTreeMap<String, Value>>,
}

/// Where a size goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum SizeField {
    /// Integer `width` and `height` fields; `auto` sends neither.
    WidthHeight,
}

/// How a reference image is sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ReferenceEncoding {
    /// Bare base64, BFL's documented form.
    #[default]
    Base64,
    /// A `data:` URL.
    DataUrl,
}
