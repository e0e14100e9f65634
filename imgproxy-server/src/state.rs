//! Shared state of the handlers.

use std::sync::Arc;

use imgproxy_core::{accounts::Accounts, Gateway};
use secrecy::SecretString;

use crate::limits::KeyLimits;

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The gateway (catalog, providers, store).
    pub gateway: Arc<Gateway>,
    /// Keys, balances and the ledger.
    pub accounts: Accounts,
    /// Per-key rate and concurrency limits of this instance.
    pub limits: Arc<KeyLimits>,
    /// When set, API requests must carry it or an issued key as a Bearer token.
    pub master_key: Option<Arc<SecretString>>,
    /// This instance's id, stable across restarts: owner of its credit reservations.
    pub instance_id: Arc<str>,
    /// Largest request body in bytes.
    pub max_body_bytes: usize,
}

/// The body limit, placed in request extensions so that extractors can name it in errors.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);
