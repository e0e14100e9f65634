//! One module per endpoint; each handler extracts, calls the core, and maps the result.

pub mod admin;
pub mod credits;
pub mod edits;
pub mod files;
pub mod generations;
pub mod health;
pub mod images;
pub mod models;
pub mod signed_urls;
pub mod stream;
pub mod tasks;
pub mod url_api;
