//! One module per endpoint; each handler extracts, calls the core, and maps the result.

pub mod admin;
pub mod chat;
pub mod credits;
pub mod edits;
pub mod files;
pub mod generations;
pub mod health;
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
pub mod url_api;

use schemars::JsonSchema;
use serde::Serialize;

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
