//! One module per endpoint; each handler extracts, calls the core, and maps the result.

pub mod admin;
pub mod chat;
pub mod console;
pub mod credits;
pub mod edits;
pub mod estimate;
pub mod files;
pub mod generations;
pub mod health;
pub mod history;
pub mod images;
pub mod models;
pub mod parts;
pub mod responses;
pub mod seed002;
pub mod seed003;
pub mod seed004;
pub mod signed_urls;
pub mod stream;
pub mod tasks;
pub mod ui;
pub mod url_api;

use schemars::JsonSchema;
use serde::Serialize;

use crate::{error::ApiError, state::AppState};

/// OpenAI's list object: `{"object": "list", "data": [...]}`.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "{T}List")]
pub struct List<T> {
    /// Always `list`.
    pub object: &'static str,
    /// The items.
    pub data: Vec<T>,
}

impl<T> List<T> {
    /// A list of `data`.
    pub fn new(data: Vec<T>) -> Self {
        Self {
            object: "list",
            data,
        }
    }
}

/// Signed URLs of stored images, in order.
pub fn image_urls(state: &AppState, keys: &[String]) -> Vec<String> {
    keys.iter()
        .map(|key| state.service.image_url(key))
        .collect()
}

/// The `limit` of a listing: `default` when absent, refused (400 naming it) outside 1 to `max`.
pub fn checked_limit(limit: Option<u32>, default: u32, max: u32) -> Result<u32, ApiError> {
    let limit = limit.unwrap_or(default);
    if (1..=max).contains(&limit) {
        Ok(limit)
    } else {
        Err(
            imgproxy_core::Error::invalid_param("limit", format!("limit must be 1 to {max}"))
                .into(),
        )
    }
}
