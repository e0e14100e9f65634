//! The plain data that goes in and out of [`super::Database`]: keys, charges, reservations and
//! ledger rows. No storage logic lives here.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{Catalog, Error, ResponseFormat, Result};

/// The most requests or images per minute a key may be given. Above it, leave the limit out.
pub const MAX_PER_MINUTE: u32 = 1_000_000;
/// The most requests in flight a key may be given. Above it, leave the limit out.
pub const MAX_CONCURRENT: u32 = 100_000;
/// The most entries in a key's `models`.
pub const MAX_KEY_MODELS: usize = 100;

/// What `keys create` (CLI or admin API) asks for. A limit left out is no limit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    /// A label for humans.
    pub name: String,
    /// Starting balance in credits.
    #[serde(default)]
    pub credits: i64,
    /// Requests per minute, if limited.
    pub rpm: Option<u32>,
    /// Images per minute, if limited.
    pub images_per_minute: Option<u32>,
    /// Requests in flight at once, if limited.
    pub max_concurrent: Option<u32>,
    /// The models the key may use; `None` allows every model.
    pub models: Option<Vec<String>>,
    /// The `response_format` of the key's generations and edits that name none; without one
    /// (`null`), the server's `default_response_format` applies.
    pub default_response_format: Option<ResponseFormat>,
}

impl NewKey {
    /// Refuses limits that cannot mean anything, naming the field: a limit is either absent
    /// (unlimited) or between 1 and its maximum. Zero is refused rather than read as
    /// "unlimited" or "nothing": a key that may do nothing is a revoked key. An empty `models`
    /// list is refused for the same reason; which names it holds is checked against the
    /// catalog by [`NewKey::resolve_models`].
    pub fn check_limits(&self) -> Result<()> {
        let per_minute = [
            ("rpm", self.rpm, MAX_PER_MINUTE),
            ("images_per_minute", self.images_per_minute, MAX_PER_MINUTE),
            ("max_concurrent", self.max_concurrent, MAX_CONCURRENT),
        ];
        for (field, value, max) in per_minute {
            if value.is_some_and(|v| v == 0 || v > max) {
                return Err(Error::invalid_param(
                    field,
                    format!(
                        "`{field}` must be between 1 and {max}; leave it out for no limit \
                         (0 is not accepted: revoke a key to stop it)"
                    ),
                ));
            }
        }
        if let Some(models) = &self.models {
            if models.is_empty() || models.len() > MAX_KEY_MODELS {
                return Err(Error::invalid_param(
                    "models",
                    format!(
                        "`models` must list 1 to {MAX_KEY_MODELS} models; leave it out to allow \
                         every model"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Checks every name in `models` against `catalog` and replaces it by the id requests for
    /// it are charged under (an alias or a remapped name becomes its model's id), so that the
    /// list means what it says. An unknown or retired name is a 400 on `models`.
    pub fn resolve_models(&mut self, catalog: &Catalog) -> Result<()> {
        let Some(models) = &mut self.models else {
            return Ok(());
        };
        let mut resolved: Vec<String> = Vec::with_capacity(models.len());
        for name in models.iter() {
            let Some(mut model) = catalog.get(name) else {
                return Err(Error::invalid_param(
                    "models",
                    format!(
                        "`models` names `{}`, which is not in the catalog; GET /v1/models lists \
                         the models",
                        short(name)
                    ),
                ));
            };
            // A retired name that redirects is served (and charged) as its replacement.
            for _ in 0..MAX_REDIRECTS {
                let next = model
                    .retired
                    .as_ref()
                    .filter(|retired| retired.redirect)
                    .and_then(|retired| catalog.get(&retired.replacement));
                match next {
                    Some(replacement) => model = replacement,
                    None => break,
                }
            }
            if let Some(retired) = &model.retired {
                return Err(Error::invalid_param(
                    "models",
                    format!(
                        "`models` names `{}`, which was retired on {}; use `{}` instead",
                        short(name),
                        retired.shutdown_date,
                        retired.replacement
                    ),
                ));
            }
            if !resolved.contains(&model.id) {
                resolved.push(model.id.clone());
            }
        }
        *models = resolved;
        Ok(())
    }
}

/// How many redirecting retired names a key's model is followed through, as requests are.
const MAX_REDIRECTS: usize = 4;

/// A client's value, cut short to be quoted in an error.
fn short(value: &str) -> String {
    const MAX_CHARS: usize = 64;
    match value.char_indices().nth(MAX_CHARS) {
        Some((end, _)) => format!("{}...", &value[..end]),
        None => value.to_owned(),
    }
}

/// What `PATCH /v1/admin/keys/{id}` changes: a field left out stays as it is, `null` removes
/// the limit (unlimited, or every model) or the key's default (the server's applies), a value
/// replaces it under the rules of [`NewKey::check_limits`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyChange {
    /// Requests per minute.
    #[serde(default, deserialize_with = "present")]
    pub rpm: Option<Option<u32>>,
    /// Images per minute.
    #[serde(default, deserialize_with = "present")]
    pub images_per_minute: Option<Option<u32>>,
    /// Requests in flight at once.
    #[serde(default, deserialize_with = "present")]
    pub max_concurrent: Option<Option<u32>>,
    /// The models the key may use.
    #[serde(default, deserialize_with = "present")]
    pub models: Option<Option<Vec<String>>>,
    /// The `response_format` of the key's requests that name none (`null`: the server's).
    #[serde(default, deserialize_with = "present")]
    pub default_response_format: Option<Option<ResponseFormat>>,
}

/// A field that is present (`null` included) is `Some`; `default` makes an absent one `None`.
fn present<'de, D, T>(deserializer: D) -> std::result::Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

impl KeyChange {
    /// `key`'s limits and default with this change applied, as a [`NewKey`] to check (name and
    /// credits are left empty: they are not changed here).
    pub fn applied_to(&self, key: &ApiKey) -> NewKey {
        NewKey {
            name: key.name.clone(),
            credits: 0,
            rpm: self.rpm.unwrap_or(key.rpm),
            images_per_minute: self.images_per_minute.unwrap_or(key.images_per_minute),
            max_concurrent: self.max_concurrent.unwrap_or(key.max_concurrent),
            models: self.models.clone().unwrap_or_else(|| key.models.clone()),
            default_response_format: self
                .default_response_format
                .unwrap_or(key.default_response_format),
        }
    }
}

/// A freshly created key and its secret, which is never stored and so never shown again.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
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
    /// The `response_format` of the key's generations and edits that name none; without one
    /// (`null`), the server's `default_response_format` applies.
    pub default_response_format: Option<ResponseFormat>,
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

/// How a settled request was served, for its ledger row: the model that served it (a
/// fallback's, when one did) and every upstream attempt.
#[derive(Debug, Clone, Copy)]
pub struct ServedBy<'a> {
    /// The catalog model that served.
    pub model: &'a str,
    /// Every upstream attempt, in order.
    pub attempts: &'a [crate::failover::Attempt],
    /// The image-store keys of the images the request produced and is charged for: its
    /// ledger row names them, so that a charge can be shown with what it paid for.
    pub images: &'a [&'a str],
}

/// One change of a key's balance. The amounts of a key's rows add up to its balance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
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

/// Which ledger rows [`super::Database::ledger_page`] lists, newest first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LedgerQuery<'a> {
    /// Only this key's rows; every key's without one.
    pub key_id: Option<&'a str>,
    /// Only rows of this kind (`reserve`, `settle`, `refund` or `credit`).
    pub kind: Option<&'a str>,
    /// Only rows older than this row id: the last id of the page before.
    pub before: Option<i64>,
    /// At most this many rows (capped at 1000).
    pub limit: u32,
}

/// A ledger row as a page of the ledger lists it: the entry with its id and key, and the
/// image-store keys of the images a settled charge paid for (taken out of its `inputs`).
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerRecord {
    /// The row's id: rows are numbered in the order they were written.
    pub id: i64,
    /// The key whose balance changed.
    pub key_id: String,
    /// What changed.
    pub entry: LedgerEntry,
    /// The images a settled charge produced; empty for other rows, and for settles written
    /// before the ledger recorded them.
    pub image_keys: Vec<String>,
}
