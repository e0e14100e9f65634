//! `imgproxy-server`: the thin HTTP layer over `imgproxy-core`. Handlers extract, call the
//! gateway and map results; no provider-specific code lives here beyond each provider's one
//! entry in the `providers` registry.

pub mod app;
pub mod auth;
pub mod calls;
pub mod cli;
pub mod config;
pub mod edge;
pub mod error;
pub mod extract;
pub mod handlers;
pub mod keys;
pub mod limits;
pub mod listener;
pub mod openapi;
pub mod providers;
pub mod seed003;
pub mod serve;
pub mod sign_url;
pub mod state;
pub mod telemetry;

pub use app::build_app;
pub use state::AppState;
