//! API keys, credits and the ledger, on SQLite (the embedded default, one file) or Postgres
//! (shared by several instances); in the same database, the records that point into the image
//! store (cache entries, named images, uploaded files: `records.rs`). HTTP, the CLI and rate
//! limits live in the server crate.
//!
//! Every gateway we compete with checks the balance and records spend after the upstream call,
//! so concurrent requests overspend. Here credits move only through conditional updates that
//! the database applies atomically, so the answer is the same for one process or many:
//!
//! - [`Database::reserve`] takes the worst case before the upstream call with one
//!   `UPDATE ... SET balance = balance - n WHERE balance >= n AND NOT revoked`, in the same
//!   transaction as the reservation row (unique per key and request id) and its ledger row.
//! - [`Database::settle`] and [`Database::refund`] flip the reservation from `reserved` with a
//!   conditional update, and only the caller whose update matched returns credits: each
//!   happens once under any race.
//! - [`Database::release_dead`] refunds what a dead instance left open, through the same flip;
//!   an instance is dead only once its lease expired (`instances.rs`), so instances sharing a
//!   data dir or a database never refund each other's requests in flight.
//! - Every balance change writes a ledger row, so a key's ledger adds up to its balance.

mod history;
mod idempotency;
mod instances;
mod keys;
mod ledger;
mod limits;
mod overview;
mod pool;
mod records;
mod retention;
mod secret;
mod tasks;
mod types;

pub use idempotency::{IdempotencyClaim, IdempotencyRecord, Remembered};
pub use instances::new_instance_id;
pub use limits::{
    window_wait, KeyLimitsSpec, MinuteWindow, Refusal, SharedAdmission, LEASE_RENEW_EVERY,
    LEASE_TTL, WINDOW_SECS,
};
pub use overview::{Overview, TaskListing};
pub use records::{check_name, CachedImage, CachedResult, FileRecord, NamedImage, MAX_NAME_CHARS};
pub use secret::SECRET_PREFIX;
pub use tasks::{DeliveryRecord, NewTask, TaskOutcome, TaskRecord, TaskStatus};
pub use types::{
    ApiKey, Charge, CreatedKey, KeyChange, LedgerEntry, LedgerQuery, LedgerRecord, NewKey,
    Reservation, ServedBy, Settled, TaskResult, MAX_CONCURRENT, MAX_KEY_MODELS, MAX_PER_MINUTE,
};

use self::pool::{read_pool, Db, DbExt as _};
use crate::{Error, Result};

/// The largest balance a key may hold: 2^53, so balances stay exact as JSON numbers in any
/// client and sums of refunds can never overflow the database's 64-bit integers.
pub const MAX_BALANCE: i64 = 1 << 53;

/// The accounting store. Cheap to clone: it holds connection pools.
#[derive(Debug, Clone)]
pub struct Database {
    db: Db,
}

impl Database {
    /// `sqlite://PATH` (file created if missing; WAL; busy_timeout) or `postgres://...`;
    /// runs migrations.
    pub async fn connect(url: &str) -> Result<Self> {
        let db = if url.starts_with("sqlite:") {
            Db::sqlite(url).await?
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Db::postgres(url, None).await?
        } else {
            // The URL itself may hold a password: name only what was expected.
            return Err(Error::Internal(
                "the database URL must start with `sqlite:` or `postgres://`".into(),
            ));
        };
        Self::migrated(db).await
    }

    /// For tests: Postgres in its own fresh schema (created, `search_path` set on every pooled
    /// connection) so runs never collide. `schema` is 1 to 63 of `a-z`, `0-9` and `_`.
    pub async fn connect_postgres_schema(url: &str, schema: &str) -> Result<Self> {
        Self::migrated(Db::postgres(url, Some(schema)).await?).await
    }

    /// For tests: drops a schema made by [`Database::connect_postgres_schema`].
    pub async fn drop_postgres_schema(url: &str, schema: &str) -> Result<()> {
        Db::drop_postgres_schema(url, schema).await
    }

    async fn migrated(db: Db) -> Result<Self> {
        db.migrate().await?;
        Ok(Self { db })
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend(&self) -> &'static str {
        match self.db {
            Db::Sqlite { .. } => "sqlite",
            Db::Postgres(_) => "postgres",
        }
    }

    /// Runs one trivial query on a read connection: is the database reachable?
    pub async fn ping(&self) -> Result<()> {
        read_pool!(&self.db, pool => {
            sqlx::query("SELECT 1").execute(pool).await.db()?;
        });
        Ok(())
    }

    /// Closes the pools and waits for their connections to finish; later calls fail.
    pub async fn close(&self) {
        self.db.close().await;
    }
}

/// The 404 of an unknown key id.
fn key_not_found(id: &str) -> Error {
    Error::NotFound {
        message: format!("no API key with id `{id}`"),
    }
}
