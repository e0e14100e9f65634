//! `imgproxy-server`: the thin HTTP layer over `imgproxy-core`. Handlers extract, call the
//! gateway and map results; no provider-specific code lives here.

pub mod app;
pub mod auth;
pub mod calls;
pub mod cli;
pub mod config;
pub mod error;
pub mod extract;
pub mod handlers;
pub mod keys;
pub mod limits;
pub mod serve;
pub mod sign_url;
pub mod state;

pub use app::build_app;
pub use state::AppState;
