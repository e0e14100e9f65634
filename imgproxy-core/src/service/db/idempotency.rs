//! `Idempotency-Key` rows: which tenant sent which key with which request, whether its first
//! request still runs, and what it answered (stored images, or the task it submitted).

use std::time::Duration;

use sqlx::AssertSqlSafe;

use super::{
    pool::{now_secs, DbExt as _},
    Database,
};
use crate::Result;

/// What the request that first sent a key answered, kept for every retry with it.
#[derive(Debug, Clone, PartialEq)]
pub enum Remembered {
    /// Generated images: what a task keeps of them (`{"images": CachedResult, "usage"}`).
    Images(serde_json::Value),
    /// The id of the task an `async` request submitted.
    Task(String),
}

/// A tenant's key as another request holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct IdempotencyRecord {
    /// The fingerprint of the request that first sent the key.
    pub fingerprint: String,
    /// What it answered; `None` while it runs.
    pub remembered: Option<Remembered>,
    /// Whether a running attempt may be taken over: its instance is dead, or it has run
    /// longer than any generation may.
    pub abandoned: bool,
}

/// The outcome of claiming a key.
#[derive(Debug, Clone, PartialEq)]
pub enum IdempotencyClaim {
    /// The attempt now runs the key's request.
    Claimed,
    /// Another request holds the key.
    Held(IdempotencyRecord),
    /// The holder released it between the claim and the read: claim again.
    Released,
}

/// A row's `state` while its first request runs, and once it answered.
const RUNNING: &str = "running";
const DONE: &str = "done";

type RecordRow = (String, String, Option<String>, Option<String>, i64);

impl Database {
    /// Claims `key` of `tenant` for `attempt` (one request of instance `instance`) unless
    /// another request holds it: a row older than `expired_before` (Unix seconds) is free,
    /// and so is a running one of the same `fingerprint` that is abandoned (its instance is
    /// dead, or it is older than `stale_after`).
    #[allow(clippy::too_many_arguments)]
    pub async fn claim_idempotency_key(
        &self,
        tenant: &str,
        key: &str,
        fingerprint: &str,
        attempt: &str,
        instance: &str,
        stale_after: Duration,
        expired_before: i64,
    ) -> Result<IdempotencyClaim> {
        let now = now_secs();
        let sql = format!(
            "INSERT INTO idempotency_keys (tenant, idempotency_key, fingerprint, state, attempt, \
             instance, result, task_id, created_at) \
             VALUES ($1, $2, $3, '{RUNNING}', $4, $5, NULL, NULL, $6) \
             ON CONFLICT (tenant, idempotency_key) DO UPDATE \
             SET fingerprint = excluded.fingerprint, state = excluded.state, \
                 attempt = excluded.attempt, instance = excluded.instance, result = NULL, \
                 task_id = NULL, created_at = excluded.created_at \
             WHERE idempotency_keys.created_at < $7 OR (idempotency_keys.state = '{RUNNING}' \
                 AND idempotency_keys.fingerprint = $3 AND {}) \
             RETURNING attempt",
            self.abandoned_sql("$8")
        );
        let args = [
            tenant.into(),
            key.into(),
            fingerprint.into(),
            attempt.into(),
            instance.into(),
            now.into(),
            expired_before.into(),
            stale_before(now, stale_after).into(),
        ];
        let holder: Vec<(String,)> = self.db.write_returning(AssertSqlSafe(sql), &args).await?;
        if holder.first().is_some_and(|(holder,)| holder == attempt) {
            return Ok(IdempotencyClaim::Claimed);
        }
        Ok(
            match self.idempotency_key(tenant, key, stale_after).await? {
                Some(record) => IdempotencyClaim::Held(record),
                None => IdempotencyClaim::Released,
            },
        )
    }

    /// `key` of `tenant` as it stands (one read, for requests waiting on its first request).
    pub async fn idempotency_key(
        &self,
        tenant: &str,
        key: &str,
        stale_after: Duration,
    ) -> Result<Option<IdempotencyRecord>> {
        let sql = format!(
            "SELECT fingerprint, state, result, task_id, \
             CAST(CASE WHEN {} THEN 1 ELSE 0 END AS BIGINT) \
             FROM idempotency_keys WHERE tenant = $1 AND idempotency_key = $2",
            self.abandoned_sql("$3")
        );
        let args = [
            tenant.into(),
            key.into(),
            stale_before(now_secs(), stale_after).into(),
        ];
        let row: Option<RecordRow> = self.db.read_optional(AssertSqlSafe(sql), &args).await?;
        row.map(record_of_row).transpose()
    }

    /// Records what `attempt` answered for `key`: the row is done, and every later request
    /// with the key answers `remembered`. A no-op if the attempt lost the key meanwhile.
    pub async fn finish_idempotency_key(
        &self,
        tenant: &str,
        key: &str,
        attempt: &str,
        remembered: &Remembered,
    ) -> Result<()> {
        let (result, task_id) = match remembered {
            Remembered::Images(value) => (Some(serde_json::to_string(value).db()?), None),
            Remembered::Task(id) => (None, Some(id.as_str())),
        };
        self.db
            .write(
                AssertSqlSafe(format!(
                    "UPDATE idempotency_keys SET state = '{DONE}', result = $4, task_id = $5 \
                     WHERE tenant = $1 AND idempotency_key = $2 AND attempt = $3"
                )),
                &[
                    tenant.into(),
                    key.into(),
                    attempt.into(),
                    result.as_deref().into(),
                    task_id.into(),
                ],
            )
            .await?;
        Ok(())
    }

    /// Frees `key` of `attempt` (which failed, or never ran): the next request with it runs.
    pub async fn release_idempotency_key(
        &self,
        tenant: &str,
        key: &str,
        attempt: &str,
    ) -> Result<()> {
        self.db
            .write(
                "DELETE FROM idempotency_keys \
                 WHERE tenant = $1 AND idempotency_key = $2 AND attempt = $3",
                &[tenant.into(), key.into(), attempt.into()],
            )
            .await?;
        Ok(())
    }

    /// Deletes the keys first sent before `before_secs` (Unix seconds); returns how many.
    pub async fn expire_idempotency_keys(&self, before_secs: i64) -> Result<u64> {
        self.db
            .write(
                "DELETE FROM idempotency_keys WHERE created_at < $1",
                &[before_secs.into()],
            )
            .await
    }

    /// SQL: the row's running attempt is abandoned: its instance is dead, or it started
    /// before the placeholder `cutoff` (Unix seconds).
    fn abandoned_sql(&self, cutoff: &str) -> String {
        format!(
            "(idempotency_keys.created_at < {cutoff} OR {})",
            self.instance_dead("idempotency_keys.instance")
        )
    }
}

fn record_of_row(
    (fingerprint, state, result, task_id, abandoned): RecordRow,
) -> Result<IdempotencyRecord> {
    let remembered = match (state.as_str(), result, task_id) {
        (DONE, _, Some(task_id)) => Some(Remembered::Task(task_id)),
        (DONE, Some(result), None) => Some(Remembered::Images(serde_json::from_str(&result).db()?)),
        _ => None,
    };
    Ok(IdempotencyRecord {
        fingerprint,
        remembered,
        abandoned: abandoned != 0,
    })
}

/// `now` (Unix seconds) less `stale_after`.
fn stale_before(now: i64, stale_after: Duration) -> i64 {
    now.saturating_sub(i64::try_from(stale_after.as_secs()).unwrap_or(i64::MAX))
}
