//! Reservations and the ledger: reserve before the upstream call, settle or refund after,
//! release what a dead process left open, and read balances and recent charges.

use std::time::Duration;

use serde_json::json;

use super::{
    key_not_found,
    pool::{now_ms, now_secs, read_pool, write_tx, DbExt},
    Charge, Database, Reservation,
};
use crate::{Error, Result};

/// Request ids come from the server; the bound only keeps a bad caller from storing megabytes.
const MAX_REQUEST_ID_CHARS: usize = 200;

/// A ledger row: key id, kind, request id, amount, balance after, model, inputs, created at.
const INSERT_LEDGER: &str = "INSERT INTO ledger \
     (key_id, kind, request_id, amount, balance_after, model, inputs, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

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
        write_tx!(&self.db, tx => {
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
            sqlx::query(INSERT_LEDGER)
                .bind(key_id)
                .bind("reserve")
                .bind(request_id)
                .bind(-needed)
                .bind(balance)
                .bind(&charge.model)
                .bind(&inputs)
                .bind(now_secs())
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
        if actual > reservation.amount {
            tracing::warn!(
                request_id = %reservation.request_id,
                reserved = reservation.amount,
                actual,
                "settling more than was reserved; charging the reserved amount"
            );
        }
        Ok(self.end(reservation, Close::Settle(actual)).await?.0)
    }

    /// Returns everything reserved; exactly once. Returns the balance after.
    pub async fn refund(&self, reservation: &Reservation) -> Result<i64> {
        Ok(self.end(reservation, Close::Refund).await?.0)
    }

    /// Crash safety: refunds every still-open reservation owned by `owner` (this instance's
    /// id, stable across restarts) and any open reservation older than `older_than` whoever
    /// owns it. Each exactly once, even with several callers at once. Returns how many this
    /// call released. Call it at start-up, before serving: later it would also free this
    /// instance's requests in flight (see [`Database::release_expired`] for periodic sweeps).
    pub async fn release_stale(&self, owner: &str, older_than: Duration) -> Result<u64> {
        self.release(Some(owner), older_than).await
    }

    /// Refunds the open reservations of task `task_id` (its first run's, `task_id`, and its
    /// resumed runs', `task_id.r...`) when its instance died; returns how many this call
    /// refunded.
    pub async fn release_task_holds(&self, key_id: &str, task_id: &str) -> Result<u64> {
        let open: Vec<(String, i64)> = read_pool!(&self.db, pool => {
            sqlx::query_as(
                "SELECT request_id, amount FROM reservations WHERE key_id = $1 \
                 AND (request_id = $2 OR request_id LIKE $3) AND status = 'reserved'",
            )
            .bind(key_id)
            .bind(task_id)
            .bind(format!("{task_id}.r%"))
            .fetch_all(pool)
            .await
            .db()?
        });
        let mut released = 0;
        for (request_id, amount) in open {
            let reservation = Reservation {
                request_id,
                key_id: key_id.to_owned(),
                amount: u64::try_from(amount).db()?,
            };
            if self.end(&reservation, Close::Release).await?.1 {
                released += 1;
            }
        }
        Ok(released)
    }

    /// The credits kept by the settled reservation of `request_id`; `None` unless it was
    /// settled (open, refunded or unknown).
    pub async fn settled_amount(&self, key_id: &str, request_id: &str) -> Result<Option<i64>> {
        let kept: Option<Option<i64>> = read_pool!(&self.db, pool => {
            sqlx::query_scalar(
                "SELECT kept FROM reservations WHERE key_id = $1 AND request_id = $2 \
                 AND status = 'settled'",
            )
            .bind(key_id)
            .bind(request_id)
            .fetch_optional(pool)
            .await
            .db()?
        });
        Ok(kept.map(Option::unwrap_or_default))
    }

    pub(super) async fn release(&self, owner: Option<&str>, older_than: Duration) -> Result<u64> {
        let age = i64::try_from(older_than.as_millis()).unwrap_or(i64::MAX);
        let cutoff = now_ms().saturating_sub(age);
        // An owner nobody has: the cutoff alone decides.
        let owner = owner.unwrap_or("");
        let open: Vec<(String, String, i64)> = read_pool!(&self.db, pool => {
            sqlx::query_as(
                "SELECT key_id, request_id, amount FROM reservations \
                 WHERE status = 'reserved' \
                 AND ((owner = $1 AND owner <> '') OR reserved_at_ms < $2) \
                 ORDER BY reserved_at_ms",
            )
            .bind(owner)
            .bind(cutoff)
            .fetch_all(pool)
            .await
            .db()?
        });
        let mut released = 0;
        for (key_id, request_id, amount) in open {
            let reservation = Reservation {
                request_id,
                key_id,
                amount: u64::try_from(amount).db()?,
            };
            // Another caller may have closed it since the query: then this flip matches nothing.
            if self.end(&reservation, Close::Release).await?.1 {
                released += 1;
            }
        }
        if released > 0 {
            tracing::info!(released, "released open credit reservations");
        }
        Ok(released)
    }

    /// Ends a reservation; returns the balance after and whether this call ended it.
    async fn end(&self, reservation: &Reservation, how: Close) -> Result<(i64, bool)> {
        let (status, kind, keep) = match how {
            Close::Settle(actual) => ("settled", "settle", actual),
            Close::Refund => ("refunded", "refund", 0),
            Close::Release => ("refunded", "refund", 0),
        };
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        let (key_id, request_id) = (&reservation.key_id, &reservation.request_id);
        write_tx!(&self.db, tx => {
            // Only the caller whose update matches `status = 'reserved'` returns credits.
            let closed: Option<(i64, i64, String)> = sqlx::query_as(
                "UPDATE reservations SET status = $3, \
                 kept = CASE WHEN $4 < amount THEN $4 ELSE amount END, closed_at_ms = $5 \
                 WHERE key_id = $1 AND request_id = $2 AND status = 'reserved' \
                 RETURNING amount, kept, model",
            )
            .bind(key_id)
            .bind(request_id)
            .bind(status)
            .bind(keep)
            .bind(now_ms())
            .fetch_optional(&mut *tx)
            .await
            .db()?;
            let Some((amount, kept, model)) = closed else {
                let exists: Option<i64> = sqlx::query_scalar(
                    "SELECT amount FROM reservations WHERE key_id = $1 AND request_id = $2",
                )
                .bind(key_id)
                .bind(request_id)
                .fetch_optional(&mut *tx)
                .await
                .db()?;
                tx.rollback().await.db()?;
                if exists.is_none() {
                    return Err(Error::NotFound {
                        message: format!("no reservation `{request_id}` for key `{key_id}`"),
                    });
                }
                return Ok((self.balance(key_id).await?, false));
            };
            let returned = amount - kept;
            let balance: i64 = sqlx::query_scalar(
                "UPDATE api_keys SET balance = balance + $2 WHERE id = $1 RETURNING balance",
            )
            .bind(key_id)
            .bind(returned)
            .fetch_one(&mut *tx)
            .await
            .db()?;
            let mut inputs = json!({ "reserved": amount, "kept": kept });
            if matches!(how, Close::Release) {
                inputs["released"] = json!(true);
            }
            // A settle that keeps everything still gets its (zero) row: the audit shows how
            // every reservation ended.
            sqlx::query(INSERT_LEDGER)
                .bind(key_id)
                .bind(kind)
                .bind(request_id)
                .bind(returned)
                .bind(balance)
                .bind(&model)
                .bind(inputs.to_string())
                .bind(now_secs())
                .execute(&mut *tx)
                .await
                .db()?;
            tx.commit().await.db()?;
            Ok((balance, true))
        })
    }
}
