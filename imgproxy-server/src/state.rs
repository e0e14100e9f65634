//! Shared state of the handlers.

use std::sync::Arc;

use imgproxy_core::Gateway;
use secrecy::SecretString;

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The gateway (catalog, providers, store).
    pub gateway: Arc<Gateway>,
    /// When set, API requests must carry it as a Bearer token.
    pub master_key: Option<Arc<SecretString>>,
    /// Largest request body in bytes.
    pub max_body_bytes: usize,
}

/// The body limit, placed in request extensions so that extractors can name it in errors.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);
