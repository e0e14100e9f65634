//! What the operator sees across every tenant: tasks and webhook deliveries listed newest
//! first, and the counts of keys, credits, tasks and deliveries. Nothing here changes a row;
//! a tenant's own view of its tasks is in `tasks.rs`.

use std::collections::BTreeMap;

use sqlx::AssertSqlSafe;

use super::{
    pool::{Arg, DbExt},
    tasks::{delivery_of_row, DeliveryRow, DELIVERY_COLUMNS},
    Database, DeliveryRecord, TaskStatus,
};
use crate::{ErrorBody, Result};

/// Most rows one listing returns.
const MAX_LISTED: u32 = 1000;

/// A task as the operator's list shows it: what it is and where it stands, without its
/// request or result (which may hold whole images).
#[derive(Debug, Clone, PartialEq)]
pub struct TaskListing {
    /// `task_...`.
    pub id: String,
    /// Its tenant: the paying key's id, or `""` for the operator.
    pub tenant: String,
    /// The paying key, for metered callers.
    pub key_id: Option<String>,
    /// `generation` or `edit`.
    pub kind: String,
    /// The model asked for.
    pub model: String,
    /// Where it is.
    pub status: TaskStatus,
    /// Credits charged.
    pub credits_used: Option<i64>,
    /// OpenAI's error object, on failure.
    pub error: Option<ErrorBody>,
    /// Where the terminal state is POSTed.
    pub callback_url: Option<String>,
    /// The id of the HTTP request that submitted it.
    pub request_id: Option<String>,
    /// Unix milliseconds.
    pub created_at_ms: i64,
    /// When a worker took it.
    pub started_at_ms: Option<i64>,
    /// When it ended.
    pub finished_at_ms: Option<i64>,
}

/// Counts across every tenant, for the operator's overview.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overview {
    /// Keys that authenticate.
    pub active_keys: i64,
    /// Keys revoked.
    pub revoked_keys: i64,
    /// Credits held by the keys that authenticate.
    pub balance: i64,
    /// Tasks by status (`queued`, `processing`, ...); a status no task has is absent.
    pub tasks: BTreeMap<String, i64>,
    /// Webhook deliveries by status (`pending`, `delivered`, `failed`).
    pub deliveries: BTreeMap<String, i64>,
}

/// A row of [`Database::list_tasks`], in [`TaskListing`]'s order.
type ListingRow = (
    String,
    String,
    Option<String>,
    String,
    String,
    String,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<String>,
    i64,
    Option<i64>,
    Option<i64>,
);

impl Database {
    /// Every tenant's tasks, newest first, only those in `status` if given; at most `limit`
    /// (capped at 1000).
    pub async fn list_tasks(
        &self,
        status: Option<TaskStatus>,
        limit: u32,
    ) -> Result<Vec<TaskListing>> {
        let mut args: Vec<Arg<'_>> = Vec::new();
        let filter = match status {
            Some(status) => {
                args.push(status.as_str().into());
                " WHERE status = $1"
            }
            None => "",
        };
        args.push(i64::from(limit.min(MAX_LISTED)).into());
        let sql = format!(
            "SELECT id, tenant, key_id, kind, model, status, credits_used, error, callback_url, \
             request_id, created_at_ms, started_at_ms, finished_at_ms FROM tasks{filter} \
             ORDER BY created_at_ms DESC, id DESC LIMIT ${}",
            args.len()
        );
        let rows: Vec<ListingRow> = self.db.read_all(AssertSqlSafe(sql), &args).await?;
        rows.into_iter().map(listing_of_row).collect()
    }

    /// Every webhook delivery, newest first, only those in `status` (`pending`, `delivered`
    /// or `failed`) if given; at most `limit` (capped at 1000).
    pub async fn list_deliveries(
        &self,
        status: Option<&str>,
        limit: u32,
    ) -> Result<Vec<DeliveryRecord>> {
        let mut args: Vec<Arg<'_>> = Vec::new();
        let filter = match status {
            Some(status) => {
                args.push(status.into());
                " WHERE status = $1"
            }
            None => "",
        };
        args.push(i64::from(limit.min(MAX_LISTED)).into());
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries{filter} \
             ORDER BY created_at_ms DESC, task_id DESC LIMIT ${}",
            args.len()
        );
        let rows: Vec<DeliveryRow> = self.db.read_all(AssertSqlSafe(sql), &args).await?;
        Ok(rows.into_iter().map(delivery_of_row).collect())
    }

    /// The counts of keys, credits, tasks and deliveries.
    pub async fn overview(&self) -> Result<Overview> {
        // Postgres sums BIGINT into NUMERIC: cast back so both backends decode an i64.
        let keys: Option<(i64, i64, i64)> = self
            .db
            .read_optional(
                "SELECT CAST(COALESCE(SUM(CASE WHEN revoked THEN 0 ELSE 1 END), 0) AS BIGINT), \
                 CAST(COALESCE(SUM(CASE WHEN revoked THEN 1 ELSE 0 END), 0) AS BIGINT), \
                 CAST(COALESCE(SUM(CASE WHEN revoked THEN 0 ELSE balance END), 0) AS BIGINT) \
                 FROM api_keys",
                &[],
            )
            .await?;
        let (active_keys, revoked_keys, balance) = keys.unwrap_or_default();
        let tasks: Vec<(String, i64)> = self
            .db
            .read_all(
                "SELECT status, CAST(COUNT(*) AS BIGINT) FROM tasks GROUP BY status",
                &[],
            )
            .await?;
        let deliveries: Vec<(String, i64)> = self
            .db
            .read_all(
                "SELECT status, CAST(COUNT(*) AS BIGINT) FROM webhook_deliveries GROUP BY status",
                &[],
            )
            .await?;
        Ok(Overview {
            active_keys,
            revoked_keys,
            balance,
            tasks: tasks.into_iter().collect(),
            deliveries: deliveries.into_iter().collect(),
        })
    }
}

fn listing_of_row(row: ListingRow) -> Result<TaskListing> {
    let (
        id,
        tenant,
        key_id,
        kind,
        model,
        status,
        credits_used,
        error,
        callback_url,
        request_id,
        created_at_ms,
        started_at_ms,
        finished_at_ms,
    ) = row;
    Ok(TaskListing {
        id,
        tenant,
        key_id,
        kind,
        model,
        status: TaskStatus::parse(&status)?,
        credits_used,
        error: error.map(|e| serde_json::from_str(&e)).transpose().db()?,
        callback_url,
        request_id,
        created_at_ms,
        started_at_ms,
        finished_at_ms,
    })
}
