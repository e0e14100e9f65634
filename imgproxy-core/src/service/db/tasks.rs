//! Asynchronous tasks and their webhook deliveries in the database. Every state change is a
//! conditional update, so under any number of instances a task is claimed once, finished once,
//! and a delivery is attempted by one instance at a time. Running tasks and delivering
//! webhooks is `crate::tasks`' job.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::AssertSqlSafe;

use super::{
    pool::{bind_args, now_ms, write_tx, Arg, Db, DbExt},
    secret, Database,
};
use crate::{Error, ErrorBody, Result};

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    /// Waiting for a worker.
    Queued,
    /// A worker runs it.
    Processing,
    /// Done, with a result.
    Succeeded,
    /// Done, with an error.
    Failed,
    /// Canceled by the client.
    Canceled,
}

impl TaskStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Processing => "processing",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Canceled => "canceled",
        }
    }

    /// Whether the task has ended.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Canceled)
    }

    pub(super) fn parse(text: &str) -> Result<Self> {
        Ok(match text {
            "queued" => Self::Queued,
            "processing" => Self::Processing,
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            "canceled" => Self::Canceled,
            other => return Err(Error::Internal(format!("unknown task status `{other}`"))),
        })
    }
}

/// A task to store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTask {
    /// Its tenant.
    pub tenant: String,
    /// The paying key, for metered callers.
    pub key_id: Option<String>,
    /// `generation` or `edit`.
    pub kind: String,
    /// The model asked for.
    pub model: String,
    /// The request as submitted.
    pub request: Value,
    /// Where to POST the terminal state.
    pub callback_url: Option<String>,
    /// The id of the HTTP request that submitted it.
    pub request_id: Option<String>,
    /// The shape of its webhook body: `None` for the task event, else a registered shape's
    /// name (see `Tasks::with_callback_format`).
    pub callback_format: Option<String>,
}

/// A stored task.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRecord {
    /// `task_...`.
    pub id: String,
    /// Its tenant.
    pub tenant: String,
    /// The paying key, for metered callers.
    pub key_id: Option<String>,
    /// `generation` or `edit`.
    pub kind: String,
    /// The model asked for.
    pub model: String,
    /// Where it is.
    pub status: TaskStatus,
    /// The request as submitted.
    pub request: Value,
    /// The stored result, on success.
    pub result: Option<Value>,
    /// OpenAI's error object, on failure.
    pub error: Option<ErrorBody>,
    /// Credits charged.
    pub credits_used: Option<i64>,
    /// Where the terminal state is POSTed.
    pub callback_url: Option<String>,
    /// Whether the client asked to cancel it while it ran.
    pub cancel_requested: bool,
    /// Unix milliseconds.
    pub created_at_ms: i64,
    /// When a worker took it.
    pub started_at_ms: Option<i64>,
    /// When it ended.
    pub finished_at_ms: Option<i64>,
    /// The upstream jobs its calls started, by `first_index`, to resume after a restart.
    pub upstream_jobs: BTreeMap<u32, String>,
    /// The id of the HTTP request that submitted it.
    pub request_id: Option<String>,
    /// The shape of its webhook body: `None` for the task event, else a registered shape's
    /// name (see `Tasks::with_callback_format`).
    pub callback_format: Option<String>,
}

/// How a task ended.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskOutcome {
    /// `succeeded`, `failed` or `canceled`.
    pub status: TaskStatus,
    /// The stored result, on success.
    pub result: Option<Value>,
    /// OpenAI's error object, on failure.
    pub error: Option<ErrorBody>,
    /// Credits charged.
    pub credits_used: Option<i64>,
}

/// A webhook delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    /// The task it reports.
    pub task_id: String,
    /// Its tenant (whose secret signs it).
    pub tenant: String,
    /// The receiver.
    pub url: String,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    /// Attempts made (counting one in progress).
    pub attempts: i64,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// Unix milliseconds of the terminal state it reports.
    pub created_at_ms: i64,
    /// When it was delivered or given up.
    pub finished_at_ms: Option<i64>,
}

/// The columns of [`TaskRow`], in its order (a macro, so that fixed queries are static
/// strings).
macro_rules! task_columns {
    () => {
        "id, tenant, key_id, kind, model, status, request, result, error, credits_used, \
         callback_url, cancel_requested, created_at_ms, started_at_ms, finished_at_ms, \
         upstream_jobs, request_id, callback_format"
    };
}
const TASK_COLUMNS: &str = task_columns!();

/// A row of [`TASK_COLUMNS`], read by position on either backend (more columns than sqlx's
/// tuples take).
struct TaskRow(TaskRecord);

impl<'r, R: sqlx::Row> sqlx::FromRow<'r, R> for TaskRow
where
    usize: sqlx::ColumnIndex<R>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    bool: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    fn from_row(row: &'r R) -> sqlx::Result<Self> {
        fn json<T: serde::de::DeserializeOwned>(text: Option<String>) -> sqlx::Result<Option<T>> {
            text.map(|t| serde_json::from_str(&t))
                .transpose()
                .map_err(|e| sqlx::Error::Decode(Box::new(e)))
        }
        let status: String = row.try_get(5)?;
        Ok(Self(TaskRecord {
            id: row.try_get(0)?,
            tenant: row.try_get(1)?,
            key_id: row.try_get(2)?,
            kind: row.try_get(3)?,
            model: row.try_get(4)?,
            status: TaskStatus::parse(&status)
                .map_err(|e| sqlx::Error::Decode(e.to_string().into()))?,
            request: json(Some(row.try_get(6)?))?.unwrap_or_default(),
            result: json(row.try_get(7)?)?,
            error: json(row.try_get(8)?)?,
            credits_used: row.try_get(9)?,
            callback_url: row.try_get(10)?,
            cancel_requested: row.try_get(11)?,
            created_at_ms: row.try_get(12)?,
            started_at_ms: row.try_get(13)?,
            finished_at_ms: row.try_get(14)?,
            upstream_jobs: json(row.try_get(15)?)?.unwrap_or_default(),
            request_id: row.try_get(16)?,
            callback_format: row.try_get(17)?,
        }))
    }
}

/// The columns of [`DeliveryRow`], in its order.
macro_rules! delivery_columns {
    () => {
        "task_id, tenant, url, status, attempts, last_error, created_at_ms, finished_at_ms"
    };
}
pub(super) const DELIVERY_COLUMNS: &str = delivery_columns!();

pub(super) type DeliveryRow = (
    String,
    String,
    String,
    String,
    i64,
    Option<String>,
    i64,
    Option<i64>,
);

impl Database {
    /// Stores a queued task.
    pub async fn create_task(&self, task: NewTask) -> Result<TaskRecord> {
        let id = format!("task_{}", secret::new_token(24)?);
        let request = task.request.to_string();
        self.db
            .write(
                "INSERT INTO tasks (id, tenant, key_id, kind, model, status, request, callback_url, created_at_ms, request_id, callback_format) \
                 VALUES ($1, $2, $3, $4, $5, 'queued', $6, $7, $8, $9, $10)",
                &[
                    (&id).into(),
                    (&task.tenant).into(),
                    (&task.key_id).into(),
                    (&task.kind).into(),
                    (&task.model).into(),
                    (&request).into(),
                    (&task.callback_url).into(),
                    now_ms().into(),
                    (&task.request_id).into(),
                    (&task.callback_format).into(),
                ],
            )
            .await?;
        self.task_by_id(&id)
            .await?
            .ok_or_else(|| Error::Internal("a stored task vanished".into()))
    }

    /// The task `id` of `tenant`; another tenant's task is as absent as a missing one.
    pub async fn task(&self, tenant: &str, id: &str) -> Result<Option<TaskRecord>> {
        Ok(self.task_by_id(id).await?.filter(|t| t.tenant == tenant))
    }

    /// The task `id`, whoever's.
    pub async fn task_by_id(&self, id: &str) -> Result<Option<TaskRecord>> {
        let sql = concat!("SELECT ", task_columns!(), " FROM tasks WHERE id = $1");
        let row: Option<TaskRow> = self.db.read_optional(sql, &[id.into()]).await?;
        row.map(task_of_row).transpose()
    }

    /// Takes the oldest queued task for `owner`; `None` when there is none. Two instances
    /// never take the same task: the update re-checks `status = 'queued'`.
    pub async fn claim_task(&self, owner: &str) -> Result<Option<TaskRecord>> {
        // A read first: idle workers poll, and a write per poll would cost a sync each.
        let queued: Option<(i64,)> = self
            .db
            .read_optional(
                "SELECT CAST(1 AS BIGINT) FROM tasks WHERE status = 'queued' LIMIT 1",
                &[],
            )
            .await?;
        if queued.is_none() {
            return Ok(None);
        }
        // Postgres skips rows another instance is taking, instead of waiting for them.
        let lock = match &self.db {
            Db::Postgres(_) => " FOR UPDATE SKIP LOCKED",
            Db::Sqlite { .. } => "",
        };
        let sql = format!(
            "UPDATE tasks SET status = 'processing', owner = $1, started_at_ms = $2, heartbeat_ms = $2 \
             WHERE id = (SELECT id FROM tasks WHERE status = 'queued' \
                         ORDER BY created_at_ms, id LIMIT 1{lock}) \
             AND status = 'queued' RETURNING {TASK_COLUMNS}"
        );
        let rows: Vec<TaskRow> = self
            .db
            .write_returning(AssertSqlSafe(sql), &[owner.into(), now_ms().into()])
            .await?;
        rows.into_iter().next().map(task_of_row).transpose()
    }

    /// Records an upstream job a running task of `owner` started (call `first_index`).
    pub async fn record_task_job(
        &self,
        id: &str,
        owner: &str,
        first_index: u32,
        token: &str,
    ) -> Result<()> {
        write_tx!(&self.db, tx => {
            let current: Option<Option<String>> = sqlx::query_scalar(
                "SELECT upstream_jobs FROM tasks WHERE id = $1 AND owner = $2 AND status = 'processing'",
            )
            .bind(id)
            .bind(owner)
            .fetch_optional(&mut *tx)
            .await
            .db()?;
            let Some(current) = current else {
                return Ok(());
            };
            let mut jobs: BTreeMap<u32, String> = current
                .map(|text| serde_json::from_str(&text))
                .transpose()
                .db()?
                .unwrap_or_default();
            jobs.insert(first_index, token.to_owned());
            let text = serde_json::to_string(&jobs).db()?;
            bind_args!(
                sqlx::query("UPDATE tasks SET upstream_jobs = $3 WHERE id = $1 AND owner = $2"),
                &[id.into(), owner.into(), (&text).into()]
            )
            .execute(&mut *tx)
            .await
            .db()?;
            tx.commit().await.db()
        })
    }

    /// Takes over, for `owner`, the running tasks of dead instances: those whose lease expired,
    /// and those whose owner holds no lease (a task handed back, or one of a version before
    /// leases) that have not beaten for `silent_ms`. Each task is taken by exactly one caller, which
    /// gets it as it was left: its upstream jobs, and its result if its charge was settled.
    pub async fn adopt_orphaned_tasks(
        &self,
        owner: &str,
        silent_ms: i64,
    ) -> Result<Vec<TaskRecord>> {
        let orphaned = format!(
            "status = 'processing' AND owner <> $1 AND ({dead} OR (NOT EXISTS \
             (SELECT 1 FROM instances WHERE instances.id = tasks.owner) AND heartbeat_ms < $2))",
            dead = self.instance_dead("tasks.owner"),
        );
        let silent_before = now_ms().saturating_sub(silent_ms);
        // A read first: every instance sweeps every few seconds, and finds nothing nearly always.
        let probe = format!("SELECT CAST(1 AS BIGINT) FROM tasks WHERE {orphaned} LIMIT 1");
        let any: Option<(i64,)> = self
            .db
            .read_optional(AssertSqlSafe(probe), &[owner.into(), silent_before.into()])
            .await?;
        if any.is_none() {
            return Ok(Vec::new());
        }
        // The owner is re-checked row by row: of two instances adopting at once, the second
        // sees the first as the owner, alive, and takes nothing.
        let sql = format!(
            "UPDATE tasks SET owner = $1, heartbeat_ms = $3 WHERE {orphaned} \
             RETURNING {TASK_COLUMNS}"
        );
        let args = [owner.into(), silent_before.into(), now_ms().into()];
        let rows: Vec<TaskRow> = self.db.write_returning(AssertSqlSafe(sql), &args).await?;
        rows.into_iter().map(task_of_row).collect()
    }

    /// Gives back a task `owner` runs but cannot end (the database failed as it tried): with no
    /// owner and no heartbeat, the next recovery of any instance takes it over and ends it.
    pub async fn disown_task(&self, id: &str, owner: &str) -> Result<()> {
        self.db
            .write(
                "UPDATE tasks SET owner = '', heartbeat_ms = 0 WHERE id = $1 AND owner = $2 \
                 AND status = 'processing'",
                &[id.into(), owner.into()],
            )
            .await?;
        Ok(())
    }

    /// Marks a running task alive; returns whether its client asked to cancel it. `None` if
    /// `owner` no longer runs it.
    pub async fn task_heartbeat(&self, id: &str, owner: &str) -> Result<Option<bool>> {
        let cancel: Vec<(bool,)> = self
            .db
            .write_returning(
                "UPDATE tasks SET heartbeat_ms = $3 WHERE id = $1 AND owner = $2 \
                 AND status = 'processing' RETURNING cancel_requested",
                &[id.into(), owner.into(), now_ms().into()],
            )
            .await?;
        Ok(cancel.first().map(|&(cancel,)| cancel))
    }

    /// Ends a task `owner` runs, and queues its webhook; `false` if it had ended already
    /// (then nothing changes).
    pub async fn finish_task(&self, id: &str, owner: &str, outcome: &TaskOutcome) -> Result<bool> {
        let finished = self
            .end_tasks(
                "id = $5 AND owner = $6 AND status = 'processing'",
                &[id, owner],
                outcome,
            )
            .await?;
        Ok(finished == 1)
    }

    /// Cancels a task of `tenant`: a queued one at once (with its webhook), a running one by
    /// asking its worker. Returns the task as it is now; `None` if unknown.
    pub async fn cancel_task(&self, tenant: &str, id: &str) -> Result<Option<TaskRecord>> {
        let canceled = TaskOutcome {
            status: TaskStatus::Canceled,
            result: None,
            error: None,
            credits_used: Some(0),
        };
        self.end_tasks(
            "id = $5 AND tenant = $6 AND status = 'queued'",
            &[id, tenant],
            &canceled,
        )
        .await?;
        self.db
            .write(
                "UPDATE tasks SET cancel_requested = TRUE WHERE id = $1 AND tenant = $2 \
                 AND status = 'processing'",
                &[id.into(), tenant.into()],
            )
            .await?;
        self.task(tenant, id).await
    }

    /// Ends every task matching `filter` (binds from `$5`) with `outcome`, and queues a
    /// webhook for each one that has a callback. Returns how many ended.
    async fn end_tasks(&self, filter: &str, binds: &[&str], outcome: &TaskOutcome) -> Result<u64> {
        let sql = format!(
            "UPDATE tasks SET status = $1, result = $2, error = $3, credits_used = $4, \
             finished_at_ms = {now}, heartbeat_ms = NULL WHERE {filter} \
             RETURNING id, tenant, callback_url",
            now = now_ms()
        );
        let result = outcome.result.as_ref().map(Value::to_string);
        let error = outcome
            .error
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .db()?;
        let mut args: Vec<Arg<'_>> = vec![
            outcome.status.as_str().into(),
            result.as_deref().into(),
            error.as_deref().into(),
            outcome.credits_used.into(),
        ];
        args.extend(binds.iter().map(|&bind| Arg::from(bind)));
        write_tx!(&self.db, tx => {
            let ended: Vec<(String, String, Option<String>)> =
                bind_args!(sqlx::query_as(AssertSqlSafe(sql)), &args)
                    .fetch_all(&mut *tx)
                    .await
                    .db()?;
            for (task_id, tenant, url) in &ended {
                let Some(url) = url else { continue };
                bind_args!(
                    sqlx::query(
                        "INSERT INTO webhook_deliveries (task_id, tenant, url, status, attempts, \
                         next_attempt_ms, created_at_ms) VALUES ($1, $2, $3, 'pending', 0, $4, $4)",
                    ),
                    &[task_id.into(), tenant.into(), url.into(), now_ms().into()]
                )
                .execute(&mut *tx)
                .await
                .db()?;
            }
            tx.commit().await.db()?;
            Ok(u64::try_from(ended.len()).unwrap_or(u64::MAX))
        })
    }

    /// Takes the next due delivery for one attempt, leasing it for `lease_ms` (longer than an
    /// attempt may take) so no other instance attempts it meanwhile.
    pub async fn claim_delivery(&self, lease_ms: i64) -> Result<Option<DeliveryRecord>> {
        let lock = match &self.db {
            Db::Postgres(_) => " FOR UPDATE SKIP LOCKED",
            Db::Sqlite { .. } => "",
        };
        let now = now_ms();
        let due: Option<(i64,)> = self
            .db
            .read_optional(
                "SELECT CAST(1 AS BIGINT) FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_ms <= $1 LIMIT 1",
                &[now.into()],
            )
            .await?;
        if due.is_none() {
            return Ok(None);
        }
        let sql = format!(
            "UPDATE webhook_deliveries SET next_attempt_ms = $2, attempts = attempts + 1 \
             WHERE task_id = (SELECT task_id FROM webhook_deliveries WHERE status = 'pending' \
                              AND next_attempt_ms <= $1 ORDER BY next_attempt_ms LIMIT 1{lock}) \
             AND status = 'pending' AND next_attempt_ms <= $1 RETURNING {DELIVERY_COLUMNS}"
        );
        let rows: Vec<DeliveryRow> = self
            .db
            .write_returning(
                AssertSqlSafe(sql),
                &[now.into(), now.saturating_add(lease_ms).into()],
            )
            .await?;
        Ok(rows.into_iter().next().map(delivery_of_row))
    }

    /// Records an attempt: delivered, retried at `retry_at_ms`, or (neither) given up.
    pub async fn record_delivery(
        &self,
        task_id: &str,
        delivered: bool,
        error: Option<&str>,
        retry_at_ms: Option<i64>,
    ) -> Result<()> {
        let (status, next, finished) = match (delivered, retry_at_ms) {
            (true, _) => ("delivered", now_ms(), Some(now_ms())),
            (false, Some(at)) => ("pending", at, None),
            (false, None) => ("failed", now_ms(), Some(now_ms())),
        };
        self.db
            .write(
                "UPDATE webhook_deliveries SET status = $2, next_attempt_ms = $3, last_error = $4, \
                 finished_at_ms = $5 WHERE task_id = $1 AND status = 'pending'",
                &[
                    task_id.into(),
                    status.into(),
                    next.into(),
                    error.into(),
                    finished.into(),
                ],
            )
            .await?;
        Ok(())
    }

    /// The webhook delivery of a task, if it has one.
    pub async fn delivery(&self, task_id: &str) -> Result<Option<DeliveryRecord>> {
        let sql = concat!(
            "SELECT ",
            delivery_columns!(),
            " FROM webhook_deliveries WHERE task_id = $1"
        );
        let row: Option<DeliveryRow> = self.db.read_optional(sql, &[task_id.into()]).await?;
        Ok(row.map(delivery_of_row))
    }

    /// The webhook signing secret of `tenant` (`whsec_` + base64), made on first use.
    pub async fn webhook_secret(&self, tenant: &str) -> Result<String> {
        let candidate = secret::new_webhook_secret()?;
        // On a conflict the no-op update keeps the stored secret and lets `RETURNING` hand it
        // back: one statement, whoever made the secret first.
        let rows: Vec<(String,)> = self
            .db
            .write_returning(
                "INSERT INTO webhook_secrets (tenant, secret, created_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (tenant) DO UPDATE SET tenant = excluded.tenant RETURNING secret",
                &[tenant.into(), (&candidate).into(), (now_ms() / 1000).into()],
            )
            .await?;
        rows.into_iter()
            .next()
            .map(|(secret,)| secret)
            .ok_or_else(|| Error::Internal("storing the webhook secret returned no row".into()))
    }
}

fn task_of_row(row: TaskRow) -> Result<TaskRecord> {
    Ok(row.0)
}

pub(super) fn delivery_of_row(row: DeliveryRow) -> DeliveryRecord {
    let (task_id, tenant, url, status, attempts, last_error, created_at_ms, finished_at_ms) = row;
    DeliveryRecord {
        task_id,
        tenant,
        url,
        status,
        attempts,
        last_error,
        created_at_ms,
        finished_at_ms,
    }
}
