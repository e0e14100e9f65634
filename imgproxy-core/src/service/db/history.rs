//! Reading the ledger: balances, the recent history of a key, and the sum that audits it.
//! Everything that changes a balance is in `ledger.rs` and `keys.rs`.

use super::{
    key_not_found,
    pool::{read_pool, DbExt},
    Database, LedgerEntry,
};
use crate::Result;

/// Most rows [`Database::recent_charges`] returns.
const MAX_RECENT: u32 = 1000;

impl Database {
    /// The key's balance; [`Error::NotFound`](crate::Error::NotFound) for an unknown key.
    pub async fn balance(&self, key_id: &str) -> Result<i64> {
        let balance: Option<i64> = read_pool!(&self.db, pool => {
            sqlx::query_scalar("SELECT balance FROM api_keys WHERE id = $1")
                .bind(key_id)
                .fetch_optional(pool)
                .await
                .db()?
        });
        balance.ok_or_else(|| key_not_found(key_id))
    }

    /// The sum of the key's ledger amounts, which equals its balance (added for audits and
    /// tests); [`Error::NotFound`](crate::Error::NotFound) for an unknown key.
    pub async fn ledger_total(&self, key_id: &str) -> Result<i64> {
        let total: i64 = read_pool!(&self.db, pool => {
            // Postgres sums BIGINT into NUMERIC: cast back so both backends decode an i64.
            sqlx::query_scalar(
                "SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM ledger WHERE key_id = $1",
            )
            .bind(key_id)
            .fetch_one(pool)
            .await
            .db()?
        });
        if total == 0 {
            self.balance(key_id).await?;
        }
        Ok(total)
    }

    /// The key's latest ledger rows, newest first; at most `limit` (capped at 1000).
    pub async fn recent_charges(&self, key_id: &str, limit: u32) -> Result<Vec<LedgerEntry>> {
        type Row = (
            String,
            Option<String>,
            i64,
            i64,
            Option<String>,
            Option<String>,
            i64,
        );
        let rows: Vec<Row> = read_pool!(&self.db, pool => {
            sqlx::query_as(
                "SELECT kind, request_id, amount, balance_after, model, inputs, created_at \
                 FROM ledger WHERE key_id = $1 ORDER BY id DESC LIMIT $2",
            )
            .bind(key_id)
            .bind(i64::from(limit.min(MAX_RECENT)))
            .fetch_all(pool)
            .await
            .db()?
        });
        if rows.is_empty() {
            // Tells an unknown key (404) from a key with no history yet.
            self.balance(key_id).await?;
        }
        rows.into_iter()
            .map(
                |(kind, request_id, amount, balance_after, model, inputs, created_at)| {
                    Ok(LedgerEntry {
                        kind,
                        request_id,
                        amount,
                        balance_after,
                        model,
                        inputs: inputs.map(|s| serde_json::from_str(&s)).transpose().db()?,
                        created_at,
                    })
                },
            )
            .collect()
    }
}
