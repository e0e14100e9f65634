//! One module per endpoint; each handler extracts, calls the core, and maps the result.

pub mod generations;
pub mod health;
pub mod images;
pub mod models;
