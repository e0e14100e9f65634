//! Reading the ledger: balances, the recent history of a key, pages of the ledger (one key's
//! or every key's, with the images each charge paid for) and the sum that audits it.
//! Everything that changes a balance is in `ledger.rs` and `keys.rs`.

use serde_json::Value;
use sqlx::AssertSqlSafe;

use super::{
    key_not_found,
    pool::{read_pool, Arg, DbExt},
    Database, LedgerEntry, LedgerQuery, LedgerRecord,
};
use crate::Result;

/// Most rows [`Database::recent_charges`] returns.
const MAX_RECENT: u32 = 1000;

/// A row of [`Database::ledger_page`]: id, key id, kind, request id, amount, balance after,
/// model, inputs, created at.
type PageRow = (
    i64,
    String,
    String,
    Option<String>,
    i64,
    i64,
    Option<String>,
    Option<String>,
    i64,
);

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
        let query = LedgerQuery {
            key_id: Some(key_id),
            kind: None,
            before: None,
            limit,
        };
        let records = self.ledger_page(&query).await?;
        if records.is_empty() {
            // Tells an unknown key (404) from a key with no history yet.
            self.balance(key_id).await?;
        }
        Ok(records.into_iter().map(|record| record.entry).collect())
    }

    /// A page of the ledger, newest first, as `query` filters it: one key's rows or every
    /// key's, of one kind or all, older than a row id (the cursor of the page before). Each
    /// settle names the images it paid for.
    pub async fn ledger_page(&self, query: &LedgerQuery<'_>) -> Result<Vec<LedgerRecord>> {
        let mut args: Vec<Arg<'_>> = Vec::new();
        let mut conditions = Vec::new();
        if let Some(key_id) = query.key_id {
            args.push(key_id.into());
            conditions.push(format!("key_id = ${}", args.len()));
        }
        if let Some(kind) = query.kind {
            args.push(kind.into());
            conditions.push(format!("kind = ${}", args.len()));
        }
        if let Some(before) = query.before {
            args.push(before.into());
            conditions.push(format!("id < ${}", args.len()));
        }
        args.push(i64::from(query.limit.min(MAX_RECENT)).into());
        let filter = match conditions.is_empty() {
            true => String::new(),
            false => format!(" WHERE {}", conditions.join(" AND ")),
        };
        let sql = format!(
            "SELECT id, key_id, kind, request_id, amount, balance_after, model, inputs, \
             created_at FROM ledger{filter} ORDER BY id DESC LIMIT ${}",
            args.len()
        );
        let rows: Vec<PageRow> = self.db.read_all(AssertSqlSafe(sql), &args).await?;
        rows.into_iter().map(record_of_row).collect()
    }
}

fn record_of_row(row: PageRow) -> Result<LedgerRecord> {
    let (id, key_id, kind, request_id, amount, balance_after, model, inputs, created_at) = row;
    let (inputs, image_keys) = split_inputs(inputs)?;
    Ok(LedgerRecord {
        id,
        key_id,
        entry: LedgerEntry {
            kind,
            request_id,
            amount,
            balance_after,
            model,
            inputs,
            created_at,
        },
        image_keys,
    })
}

/// A ledger row's stored `inputs`, read, and the image-store keys a settle recorded in them,
/// taken out: keys are handed out only as signed URLs, never as they are.
fn split_inputs(inputs: Option<String>) -> Result<(Option<Value>, Vec<String>)> {
    let mut inputs: Option<Value> = inputs.map(|s| serde_json::from_str(&s)).transpose().db()?;
    let image_keys = inputs
        .as_mut()
        .and_then(Value::as_object_mut)
        .and_then(|inputs| inputs.remove("images"))
        .and_then(|images| serde_json::from_value(images).ok())
        .unwrap_or_default();
    Ok((inputs, image_keys))
}
