//! The plain data that goes in and out of [`super::Database`]: keys, charges, reservations and
//! ledger rows. No storage logic lives here.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What `keys create` (CLI or admin API) asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    /// A label for humans.
    pub name: String,
    /// Starting balance in credits.
    #[serde(default)]
    pub credits: i64,
    /// Requests per minute, if limited.
    #[serde(default)]
    pub rpm: Option<u32>,
    /// Images per minute, if limited.
    #[serde(default)]
    pub images_per_minute: Option<u32>,
    /// Requests in flight at once, if limited.
    #[serde(default)]
    pub max_concurrent: Option<u32>,
    /// The models the key may use; `None` allows every model.
    #[serde(default)]
    pub models: Option<Vec<String>>,
}

/// A freshly created key and its secret, which is never stored and so never shown again.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedKey {
    /// The stored key.
    pub key: ApiKey,
    /// The bearer secret, `ipk_` followed by 40 base62 characters.
    pub secret: String,
}

// The secret must not reach logs through `{:?}`.
impl fmt::Debug for CreatedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreatedKey")
            .field("key", &self.key)
            .field("secret", &"[redacted]")
            .finish()
    }
}

/// A stored API key. Holds neither the secret nor its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    /// Stable id, `key_` followed by 16 base62 characters.
    pub id: String,
    /// A label for humans.
    pub name: String,
    /// Credits left; reserved credits are already taken out.
    pub balance: i64,
    /// Requests per minute, if limited.
    pub rpm: Option<u32>,
    /// Images per minute, if limited.
    pub images_per_minute: Option<u32>,
    /// Requests in flight at once, if limited.
    pub max_concurrent: Option<u32>,
    /// The models the key may use; `None` allows every model.
    pub models: Option<Vec<String>>,
    /// A revoked key no longer authenticates.
    pub revoked: bool,
    /// Unix seconds.
    pub created_at: i64,
}

/// What a reservation is for, kept on the reservation and its ledger row for audits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Charge {
    /// The catalog model.
    pub model: String,
    /// The id of the instance that reserved (fresh at every start): nobody else refunds the
    /// reservation while that instance's lease lives (see [`super::Database::release_dead`]).
    pub owner: String,
    /// The pricing inputs (n, quality, tier, references, per-image price).
    pub inputs: serde_json::Value,
}

/// Credits taken from a key for one request, to settle or refund once it ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// The request's id, unique per key.
    pub request_id: String,
    /// The key charged.
    pub key_id: String,
    /// Credits taken.
    pub amount: u64,
}

/// How a settle ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settled {
    /// The key's balance afterwards.
    pub balance: i64,
    /// Credits the reservation keeps: what was asked (capped at the reservation), or what an
    /// earlier close decided (nothing if it had been refunded meanwhile).
    pub kept: u64,
}

/// The task a charge pays for, and the result it records in the same transaction as the
/// settle: a task is never left charged without its result.
#[derive(Debug, Clone, Copy)]
pub struct TaskResult<'a> {
    /// The task.
    pub task_id: &'a str,
    /// The instance running it; the settle fails if another instance took the task over.
    pub owner: &'a str,
    /// The stored result (`{"images", "usage"}`), as a finished task keeps it.
    pub result: &'a serde_json::Value,
}

/// One change of a key's balance. The amounts of a key's rows add up to its balance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// `reserve`, `settle`, `refund` or `credit`.
    pub kind: String,
    /// The request, for everything but `credit`.
    pub request_id: Option<String>,
    /// Signed change of the balance: negative for `reserve`, the returned part for `settle`.
    pub amount: i64,
    /// The balance right after this change.
    pub balance_after: i64,
    /// The model charged, for everything but `credit`.
    pub model: Option<String>,
    /// For `reserve` the pricing inputs; for `settle` and `refund` what was reserved and kept.
    pub inputs: Option<serde_json::Value>,
    /// Unix seconds.
    pub created_at: i64,
}
