//! Helpers every provider crate shares for talking to upstream HTTP APIs, written once so that
//! no adapter repeats them: the `ImageProvider` of every adapter, which holds its clients and
//! scrubs the key from its errors (`adapter`), the pool of its keys (`pool`), the keyed API
//! client and its status check (`api`), reading
//! failures into [`ProviderError`]s (`failure`), capped downloads (`download`), polling with a
//! deadline, backoff and an upstream cancel (`poll`), and the settings every adapter takes
//! (`settings`). What an upstream's bodies mean, and which of its statuses are special, stays
//! in its adapter crate.

mod adapter;
mod api;
mod download;
mod failure;
mod poll;
mod pool;
mod settings;

use serde::de::DeserializeOwned;
use serde_json::Value;

pub use adapter::{AdapterConfig, Outcome, UpstreamAdapter, UpstreamProvider};
pub use api::{
    fingerprint, http_client, key_may_go_to, ApiClient, KeyHeader, Rejection, USER_AGENT,
};
pub use download::{download, read_capped, sniffed_image, ImageSource, DEFAULT_MAX_DOWNLOAD_BYTES};
pub use failure::{
    chain, excerpt, failed, malformed, retry_after, scrub_text, short, status_error,
    transport_error, FastApiError, ValidationItem, CUT_MARK, MAX_MESSAGE_CHARS, REDACTED,
};
pub use poll::{CancelOnDrop, PollPolicy};
pub use settings::{Upstream, UpstreamSettings, DEFAULT_TIMEOUT};

use crate::{ModelSpec, ProviderError};

/// The catalog's `[models.upstream_input]` table of `model`, typed as the adapter reads it. A
/// table that does not fit is the operator's catalog bug: a `Failed` (502), never a 400.
pub fn upstream_input<T: DeserializeOwned>(model: &ModelSpec) -> Result<T, ProviderError> {
    serde_json::from_value(Value::Object(model.upstream_input.clone())).map_err(|e| {
        failed(format!(
            "catalog entry `{}` has an unusable `upstream_input`: {e}",
            model.id
        ))
    })
}
