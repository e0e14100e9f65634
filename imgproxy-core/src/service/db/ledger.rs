//! Reservations and the ledger: reserve before the upstream call, settle or refund after,
//! release what a dead instance left open, and read balances and recent charges.

use std::time::Duration;

use serde_json::{json, Value};
use sqlx::AssertSqlSafe;

use super::{
    key_not_found,
    pool::{bind_args, now_ms, now_secs, write_tx, Arg, Commit, DbExt},
    Charge, Database, Reservation, ServedBy, Settled, TaskResult,
};
use crate::{Error, Result};

/// Request ids come from the server; the bound only keeps a bad caller from storing megabytes.
const MAX_REQUEST_ID_CHARS: usize = 200;

/// A ledger row: key id, kind, request id, amount, balance after, model, inputs, created at.
const INSERT_LEDGER: &str = "INSERT INTO ledger \
     (key_id, kind, request_id, amount, balance_after, model, inputs, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

/// How a reservation commits. Lazy on SQLite: the request is answered only after its
/// settlement, a durable commit that puts this one on disk too, and a reservation lost in a
/// power cut is one the instance would have refunded on its return. Durable on Postgres, which
/// can crash on its own and lose its last lazy commits while the instance runs on to settle.
fn commit_of_reservations(db: &super::pool::Db) -> Commit {
    if db.is_embedded() {
        Commit::Lazy
    } else {
        Commit::Durable
    }
}

/// [`Database::reserve`] on SQLite in one round trip, when the reservation is new and the
/// balance covers it: key, request id, amount, owner, model, inputs, Unix ms, Unix seconds.
/// `changes()` is the number of rows the statement before changed.
const RESERVE_BATCH: &str = "BEGIN IMMEDIATE; \
     INSERT INTO reservations \
     (key_id, request_id, amount, status, owner, model, inputs, reserved_at_ms) \
     VALUES ($1, $2, $3, 'reserved', $4, $5, $6, $7) ON CONFLICT (key_id, request_id) DO NOTHING; \
     UPDATE api_keys SET balance = balance - $3 \
     WHERE id = $1 AND balance >= $3 AND NOT revoked AND changes() = 1; \
     INSERT OR ROLLBACK INTO ledger \
     (key_id, kind, request_id, amount, balance_after, model, inputs, created_at) \
     VALUES ($1, 'reserve', $2, -$3, \
     (SELECT balance FROM api_keys WHERE id = $1 AND changes() = 1), $5, $6, $8) \
     RETURNING balance_after; \
     COMMIT";

/// [`Database::end`] without a task on SQLite in one round trip, when the reservation is
/// open: key, request id, status, credits kept, Unix ms, the model that served (or NULL for
/// the reservation's), the ledger inputs but the surface, Unix seconds, the amount reserved,
/// the amount returned, the ledger row's kind. The ledger row takes the surface from the
/// reservation's inputs (`surface` sorts last, as serde_json writes keys), and its balance is
/// NULL (a failed NOT NULL, rolling the batch back) unless the reservation was open.
const END_BATCH: &str = "BEGIN IMMEDIATE; \
     UPDATE reservations SET status = $3, kept = $4, closed_at_ms = $5 \
     WHERE key_id = $1 AND request_id = $2 AND status = 'reserved' AND amount = $9; \
     UPDATE api_keys SET balance = balance + $10 WHERE id = $1 AND changes() = 1; \
     INSERT OR ROLLBACK INTO ledger \
     (key_id, kind, request_id, amount, balance_after, model, inputs, created_at) \
     SELECT $1, $11, $2, $10, \
     (SELECT balance FROM api_keys WHERE id = $1 AND changes() = 1), COALESCE($6, r.model), \
     CASE WHEN COALESCE(json_type(r.inputs, '$.surface'), 'null') = 'null' THEN $7 \
     ELSE json_set($7, '$.surface', r.inputs -> '$.surface') END, $8 \
     FROM reservations r WHERE r.key_id = $1 AND r.request_id = $2 \
     RETURNING balance_after; \
     COMMIT";

/// The inputs of the ledger row that closes a reservation of `amount` keeping `kept`, but the
/// surface the request came through (added from the reservation's own inputs).
fn closing_inputs(amount: i64, kept: i64, how: Close, served: Option<&ServedBy<'_>>) -> Value {
    let mut inputs = json!({ "reserved": amount, "kept": kept });
    if matches!(how, Close::Release) {
        inputs["released"] = json!(true);
    }
    if let Some(served) = served {
        inputs["attempts"] = json!(served.attempts);
        inputs["images"] = json!(served.images);
    }
    inputs
}

/// The reservations of every run of a task: its first run's (`$2`, the task id) and its
/// resumed runs' (`$3`, `<task id>.r%`; the `_` of `task_` matches any character there, and
/// no other request id has that shape).
const TASK_RUNS: &str = "(request_id = $2 OR request_id LIKE $3)";

fn resumed_runs(task_id: &str) -> String {
    format!("{task_id}.r%")
}

/// What a ledger row of a reservation says besides its amounts and inputs.
struct LedgerRow<'a> {
    key_id: &'a str,
    kind: &'a str,
    request_id: &'a str,
    model: &'a str,
}

impl<'a> LedgerRow<'a> {
    fn new(key_id: &'a str, kind: &'a str, request_id: &'a str, model: &'a str) -> Self {
        Self {
            key_id,
            kind,
            request_id,
            model,
        }
    }

    /// The binds of [`INSERT_LEDGER`] for a change of `amount` that left `balance`, now.
    fn args(&self, amount: i64, balance: i64, inputs: &'a str) -> [Arg<'a>; 8] {
        [
            self.key_id.into(),
            self.kind.into(),
            self.request_id.into(),
            amount.into(),
            balance.into(),
            self.model.into(),
            inputs.into(),
            now_secs().into(),
        ]
    }
}

/// How a reservation ended: the balance after, whether this call ended it, and what it keeps.
struct Closed {
    balance: i64,
    ended: bool,
    kept: u64,
}

/// How a reservation ends.
#[derive(Debug, Clone, Copy)]
enum Close {
    /// Keep this many credits (at most the reserved amount), return the rest.
    Settle(u64),
    /// Return everything: the request failed.
    Refund,
    /// Return everything: the request's process died or the reservation timed out.
    Release,
}

impl Database {
    /// Atomically takes `amount` credits from the key's balance, or fails with
    /// [`Error::InsufficientCredits`] leaving the balance untouched.
    ///
    /// Idempotent by `request_id` (per key): a second call with the id of a reservation still
    /// open returns it and charges nothing more. The id of a reservation already settled or
    /// refunded is refused, because going ahead would run an upstream call nobody pays for.
    pub async fn reserve(
        &self,
        key_id: &str,
        request_id: &str,
        amount: u64,
        charge: Charge,
    ) -> Result<Reservation> {
        if request_id.is_empty() || request_id.chars().count() > MAX_REQUEST_ID_CHARS {
            return Err(Error::invalid_param(
                "request_id",
                format!("a request id has 1 to {MAX_REQUEST_ID_CHARS} characters"),
            ));
        }
        let Ok(needed) = i64::try_from(amount) else {
            let balance = self.balance(key_id).await?;
            return Err(Error::InsufficientCredits {
                needed: amount,
                balance,
            });
        };
        let inputs = serde_json::to_string(&charge.inputs).db()?;
        let reservation = Reservation {
            request_id: request_id.to_owned(),
            key_id: key_id.to_owned(),
            amount,
        };
        // SQLite, the usual outcome (a new reservation the balance covers) in one batch: the
        // reservation, the balance taken if the insert added a row, and its ledger row, whose
        // balance is NULL (a failed NOT NULL, rolling the whole batch back) unless the update
        // took it. Any other outcome takes the path below, which tells them apart; a batch
        // that committed and lost its answer is found there as this request's reservation.
        let batch = self
            .db
            .sqlite_batch::<(i64,)>(
                commit_of_reservations(&self.db),
                RESERVE_BATCH,
                &[
                    key_id.into(),
                    request_id.into(),
                    needed.into(),
                    charge.owner.as_str().into(),
                    charge.model.as_str().into(),
                    inputs.as_str().into(),
                    now_ms().into(),
                    now_secs().into(),
                ],
            )
            .await?;
        if batch.is_some_and(|rows| rows.len() == 1) {
            return Ok(reservation);
        }
        let commit = commit_of_reservations(&self.db);
        write_tx!(@commit commit, &self.db, tx => {
            // The reservation row first: a concurrent call with the same id waits on it (on
            // Postgres) and then sees it, instead of charging a second time.
            let inserted = sqlx::query(
                "INSERT INTO reservations \
                 (key_id, request_id, amount, status, owner, model, inputs, reserved_at_ms) \
                 VALUES ($1, $2, $3, 'reserved', $4, $5, $6, $7) \
                 ON CONFLICT (key_id, request_id) DO NOTHING",
            )
            .bind(key_id)
            .bind(request_id)
            .bind(needed)
            .bind(&charge.owner)
            .bind(&charge.model)
            .bind(&inputs)
            .bind(now_ms())
            .execute(&mut *tx)
            .await
            .map_err(|e| match e {
                // The key's foreign key is checked here: an unknown key is a 404.
                sqlx::Error::Database(d) if d.is_foreign_key_violation() => key_not_found(key_id),
                e => Error::Internal(format!("database: {e}")),
            })?
            .rows_affected();
            if inserted == 0 {
                let (amount, status): (i64, String) = sqlx::query_as(
                    "SELECT amount, status FROM reservations WHERE key_id = $1 AND request_id = $2",
                )
                .bind(key_id)
                .bind(request_id)
                .fetch_one(&mut *tx)
                .await
                .db()?;
                tx.rollback().await.db()?;
                if status != "reserved" {
                    return Err(Error::InvalidRequest {
                        message: format!(
                            "request id `{request_id}` was already used and is {status}"
                        ),
                        param: None,
                        code: Some("request_id_reused".into()),
                    });
                }
                return Ok(Reservation {
                    amount: u64::try_from(amount).db()?,
                    ..reservation
                });
            }
            // The one atomic check-and-take: the row lock (Postgres) or the write lock (SQLite)
            // makes concurrent reservations queue here, and each sees the balance the previous
            // one left.
            let balance: Option<i64> = sqlx::query_scalar(
                "UPDATE api_keys SET balance = balance - $2 \
                 WHERE id = $1 AND balance >= $2 AND NOT revoked RETURNING balance",
            )
            .bind(key_id)
            .bind(needed)
            .fetch_optional(&mut *tx)
            .await
            .db()?;
            let Some(balance) = balance else {
                let key: Option<(i64, bool)> =
                    sqlx::query_as("SELECT balance, revoked FROM api_keys WHERE id = $1")
                        .bind(key_id)
                        .fetch_optional(&mut *tx)
                        .await
                        .db()?;
                tx.rollback().await.db()?;
                return Err(match key {
                    None => key_not_found(key_id),
                    Some((_, true)) => Error::NotFound {
                        message: format!("API key `{key_id}` is revoked"),
                    },
                    Some((balance, false)) => {
                        Error::InsufficientCredits { needed: amount, balance }
                    }
                });
            };
            let entry = LedgerRow::new(key_id, "reserve", request_id, &charge.model);
            bind_args!(sqlx::query(INSERT_LEDGER), &entry.args(-needed, balance, &inputs))
                .execute(&mut *tx)
                .await
                .db()?;
            tx.commit().await.db()?;
        });
        Ok(reservation)
    }

    /// Keeps `actual` credits (more than reserved is capped at the reserved amount, since
    /// charging more could overspend) and returns the rest. Exactly once: settling or refunding
    /// a closed reservation changes nothing. Returns the balance after.
    pub async fn settle(&self, reservation: &Reservation, actual: u64) -> Result<i64> {
        Ok(self
            .settle_as(reservation, actual, None, None)
            .await?
            .balance)
    }

    /// [`Database::settle`], saying what the reservation keeps in the end (nothing when it had
    /// been refunded meanwhile, as when its instance was taken for dead). With `task`, the
    /// task's result is recorded in the same transaction, and nothing is settled unless
    /// `task.owner` still runs the task. With `served`, the settle row names the model that
    /// served and records every upstream attempt and the image-store keys of the images.
    pub async fn settle_as(
        &self,
        reservation: &Reservation,
        actual: u64,
        task: Option<TaskResult<'_>>,
        served: Option<ServedBy<'_>>,
    ) -> Result<Settled> {
        if actual > reservation.amount {
            tracing::warn!(
                request_id = %reservation.request_id,
                reserved = reservation.amount,
                actual,
                "settling more than was reserved; charging the reserved amount"
            );
        }
        let closed = self
            .end(reservation, Close::Settle(actual), task, served)
            .await?;
        Ok(Settled {
            balance: closed.balance,
            kept: closed.kept,
        })
    }

    /// Returns everything reserved; exactly once. Returns the balance after.
    pub async fn refund(&self, reservation: &Reservation) -> Result<i64> {
        Ok(self
            .end(reservation, Close::Refund, None, None)
            .await?
            .balance)
    }

    /// Crash safety: refunds every open reservation of instance `owner` if its lease expired
    /// (it died), each exactly once even with several callers at once; nothing while it lives,
    /// whoever shares its data dir or database. Returns how many this call released.
    pub async fn release_dead(&self, owner: &str) -> Result<u64> {
        let sql = format!(
            "SELECT key_id, request_id, amount FROM reservations \
             WHERE status = 'reserved' AND owner = $1 AND {} ORDER BY reserved_at_ms",
            self.instance_dead("reservations.owner")
        );
        let open = self
            .db
            .read_all(AssertSqlSafe(sql), &[owner.into()])
            .await?;
        self.release_all(open).await
    }

    /// The backstop: refunds every open reservation older than `older_than` whose owner holds
    /// no live lease (an embedder that never took one, or a version before leases); a live
    /// instance's are left alone however old. Each exactly once.
    pub async fn release_expired(&self, older_than: Duration) -> Result<u64> {
        let age = i64::try_from(older_than.as_millis()).unwrap_or(i64::MAX);
        let sql = format!(
            "SELECT key_id, request_id, amount FROM reservations \
             WHERE status = 'reserved' AND reserved_at_ms < $1 AND NOT {} \
             ORDER BY reserved_at_ms",
            self.instance_alive("reservations.owner")
        );
        let before = now_ms().saturating_sub(age);
        let open = self
            .db
            .read_all(AssertSqlSafe(sql), &[before.into()])
            .await?;
        self.release_all(open).await
    }

    /// Refunds the open reservations of task `task_id`'s runs (their instance died); returns
    /// how many this call refunded.
    pub async fn release_task_holds(&self, key_id: &str, task_id: &str) -> Result<u64> {
        let sql = format!(
            "SELECT key_id, request_id, amount FROM reservations WHERE key_id = $1 \
             AND {TASK_RUNS} AND status = 'reserved'"
        );
        let runs = resumed_runs(task_id);
        let args = [key_id.into(), task_id.into(), (&runs).into()];
        let open = self.db.read_all(AssertSqlSafe(sql), &args).await?;
        self.release_all(open).await
    }

    /// What the settled charges of all of task `task_id`'s runs kept together; `None` when no
    /// run's charge was settled.
    pub async fn task_charges(&self, key_id: &str, task_id: &str) -> Result<Option<i64>> {
        let sql = format!(
            "SELECT kept FROM reservations WHERE key_id = $1 AND {TASK_RUNS} \
             AND status = 'settled'"
        );
        let runs = resumed_runs(task_id);
        let args = [key_id.into(), task_id.into(), (&runs).into()];
        let kept: Vec<(Option<i64>,)> = self.db.read_all(AssertSqlSafe(sql), &args).await?;
        Ok((!kept.is_empty()).then(|| kept.into_iter().filter_map(|(kept,)| kept).sum()))
    }

    /// Gives back what the settled charges of task `task_id`'s runs kept, for a task that ends
    /// without its result (a run that paid, then died before recording the result: possible
    /// only for runs of versions that did not record both at once). Each charge exactly once;
    /// returns the credits given back.
    pub async fn refund_task_charges(&self, key_id: &str, task_id: &str) -> Result<i64> {
        let sql = format!(
            "SELECT request_id FROM reservations WHERE key_id = $1 AND {TASK_RUNS} \
             AND status = 'settled'"
        );
        let runs = resumed_runs(task_id);
        let args = [key_id.into(), task_id.into(), (&runs).into()];
        let settled: Vec<(String,)> = self.db.read_all(AssertSqlSafe(sql), &args).await?;
        let mut returned = 0;
        for (request_id,) in settled {
            write_tx!(&self.db, tx => {
                // Only the caller whose update matches `status = 'settled'` gives credits back.
                let reversed: Option<(i64, Option<i64>, String)> = sqlx::query_as(
                    "UPDATE reservations SET status = 'refunded', closed_at_ms = $3 \
                     WHERE key_id = $1 AND request_id = $2 AND status = 'settled' \
                     RETURNING amount, kept, model",
                )
                .bind(key_id)
                .bind(&request_id)
                .bind(now_ms())
                .fetch_optional(&mut *tx)
                .await
                .db()?;
                let Some((amount, kept, model)) = reversed else {
                    tx.rollback().await.db()?;
                    continue;
                };
                let kept = kept.unwrap_or_default();
                sqlx::query("UPDATE reservations SET kept = 0 WHERE key_id = $1 AND request_id = $2")
                    .bind(key_id)
                    .bind(&request_id)
                    .execute(&mut *tx)
                    .await
                    .db()?;
                let balance: i64 = sqlx::query_scalar(
                    "UPDATE api_keys SET balance = balance + $2 WHERE id = $1 RETURNING balance",
                )
                .bind(key_id)
                .bind(kept)
                .fetch_one(&mut *tx)
                .await
                .db()?;
                let inputs = json!({ "reserved": amount, "kept": 0, "reversed": kept }).to_string();
                let entry = LedgerRow::new(key_id, "refund", &request_id, &model);
                bind_args!(sqlx::query(INSERT_LEDGER), &entry.args(kept, balance, &inputs))
                    .execute(&mut *tx)
                    .await
                    .db()?;
                tx.commit().await.db()?;
                returned += kept;
            });
        }
        Ok(returned)
    }

    /// Releases each of `open` (key id, request id, amount); returns how many this call ended
    /// (another caller may have closed one since it was listed: then its flip matches nothing).
    async fn release_all(&self, open: Vec<(String, String, i64)>) -> Result<u64> {
        let mut released = 0;
        for (key_id, request_id, amount) in open {
            let reservation = Reservation {
                request_id,
                key_id,
                amount: u64::try_from(amount).db()?,
            };
            if self
                .end(&reservation, Close::Release, None, None)
                .await?
                .ended
            {
                released += 1;
            }
        }
        if released > 0 {
            tracing::info!(released, "released open credit reservations");
        }
        Ok(released)
    }

    /// [`Database::end`] without a task, on SQLite, in one batch (one round trip while
    /// holding the writer); `None` when it did not end the reservation (on Postgres, or a
    /// reservation closed before or unknown), for the ordinary path to say why.
    async fn end_in_one_batch(
        &self,
        reservation: &Reservation,
        status: &str,
        kind: &str,
        keep: i64,
        how: Close,
        served: Option<ServedBy<'_>>,
    ) -> Result<Option<Closed>> {
        let Ok(amount) = i64::try_from(reservation.amount) else {
            return Ok(None);
        };
        let kept = keep.min(amount);
        let inputs = closing_inputs(amount, kept, how, served.as_ref()).to_string();
        let rows: Option<Vec<(i64,)>> = self
            .db
            .sqlite_batch(
                Commit::Durable,
                END_BATCH,
                &[
                    reservation.key_id.as_str().into(),
                    reservation.request_id.as_str().into(),
                    status.into(),
                    kept.into(),
                    now_ms().into(),
                    served.as_ref().map(|served| served.model).into(),
                    inputs.as_str().into(),
                    now_secs().into(),
                    amount.into(),
                    (amount - kept).into(),
                    kind.into(),
                ],
            )
            .await?;
        Ok(match rows.as_deref() {
            Some(&[(balance,)]) => Some(Closed {
                balance,
                ended: true,
                kept: u64::try_from(kept).unwrap_or_default(),
            }),
            _ => None,
        })
    }

    /// Ends a reservation (recording `task`'s result with a settle, see
    /// [`Database::settle_as`]).
    async fn end(
        &self,
        reservation: &Reservation,
        how: Close,
        task: Option<TaskResult<'_>>,
        served: Option<ServedBy<'_>>,
    ) -> Result<Closed> {
        let (status, kind, keep) = match how {
            Close::Settle(actual) => ("settled", "settle", actual),
            Close::Refund => ("refunded", "refund", 0),
            Close::Release => ("refunded", "refund", 0),
        };
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        let (key_id, request_id) = (&reservation.key_id, &reservation.request_id);
        if task.is_none() {
            if let Some(closed) = self
                .end_in_one_batch(reservation, status, kind, keep, how, served)
                .await?
            {
                return Ok(closed);
            }
        }
        write_tx!(&self.db, tx => {
            // Only the caller whose update matches `status = 'reserved'` returns credits.
            let closed: Option<(i64, i64, String, String)> = sqlx::query_as(
                "UPDATE reservations SET status = $3, \
                 kept = CASE WHEN $4 < amount THEN $4 ELSE amount END, closed_at_ms = $5 \
                 WHERE key_id = $1 AND request_id = $2 AND status = 'reserved' \
                 RETURNING amount, kept, model, inputs",
            )
            .bind(key_id)
            .bind(request_id)
            .bind(status)
            .bind(keep)
            .bind(now_ms())
            .fetch_optional(&mut *tx)
            .await
            .db()?;
            let Some((amount, kept, model, charged)) = closed else {
                // Closed before: say how.
                let earlier: Option<(String, Option<i64>)> = sqlx::query_as(
                    "SELECT status, kept FROM reservations WHERE key_id = $1 AND request_id = $2",
                )
                .bind(key_id)
                .bind(request_id)
                .fetch_optional(&mut *tx)
                .await
                .db()?;
                tx.rollback().await.db()?;
                let Some((status, kept)) = earlier else {
                    return Err(Error::NotFound {
                        message: format!("no reservation `{request_id}` for key `{key_id}`"),
                    });
                };
                let kept = if status == "settled" { kept.unwrap_or_default() } else { 0 };
                return Ok(Closed {
                    balance: self.balance(key_id).await?,
                    ended: false,
                    kept: u64::try_from(kept).unwrap_or_default(),
                });
            };
            if let Some(task) = task {
                let recorded = sqlx::query(
                    "UPDATE tasks SET result = $3, credits_used = $4 \
                     WHERE id = $1 AND owner = $2 AND status = 'processing'",
                )
                .bind(task.task_id)
                .bind(task.owner)
                .bind(task.result.to_string())
                .bind(kept)
                .execute(&mut *tx)
                .await
                .db()?
                .rows_affected();
                if recorded == 0 {
                    // Ended or taken over elsewhere (this instance was taken for dead):
                    // nothing is settled, and the caller refunds the reservation.
                    tx.rollback().await.db()?;
                    return Err(Error::Internal(format!(
                        "task {} is no longer run by this instance; its charge was not settled",
                        task.task_id
                    )));
                }
            }
            let returned = amount - kept;
            let balance: i64 = sqlx::query_scalar(
                "UPDATE api_keys SET balance = balance + $2 WHERE id = $1 RETURNING balance",
            )
            .bind(key_id)
            .bind(returned)
            .fetch_one(&mut *tx)
            .await
            .db()?;
            let mut inputs = closing_inputs(amount, kept, how, served.as_ref());
            // The surface the request came through, on the row that says what it cost too.
            let surface = serde_json::from_str::<serde_json::Value>(&charged)
                .ok()
                .and_then(|charged| charged.get("surface").cloned())
                .filter(|surface| !surface.is_null());
            if let Some(surface) = surface {
                inputs["surface"] = surface;
            }
            let model = served.map_or(model, |served| served.model.to_owned());
            // A settle that keeps everything still gets its (zero) row: the audit shows how
            // every reservation ended.
            let (entry, inputs) = (LedgerRow::new(key_id, kind, request_id, &model), inputs.to_string());
            bind_args!(sqlx::query(INSERT_LEDGER), &entry.args(returned, balance, &inputs))
                .execute(&mut *tx)
                .await
                .db()?;
            tx.commit().await.db()?;
            Ok(Closed {
                balance,
                ended: true,
                kept: u64::try_from(kept).unwrap_or_default(),
            })
        })
    }
}
