//! Instances and their leases. Every process holds a row under an id of its own, fresh at every
//! start ([`new_instance_id`]), and pushes its expiry forward in the background; an instance
//! whose lease expired is dead. Only a dead instance's open reservations (`ledger.rs`),
//! generation claims (`records.rs`) and running tasks (`tasks.rs`) are ever taken over, so
//! processes sharing a data dir or a database never recover each other's live work. Lease times
//! are the database's clock (`pool.rs`), one clock for every host.

use std::time::Duration;

use super::{
    pool::{read_pool, write_tx, DbExt},
    secret, Database,
};
use crate::Result;

/// A fresh instance id (`inst_` and 16 random letters and digits): one per process start.
pub fn new_instance_id() -> String {
    let token = secret::new_token(16).unwrap_or_else(|_| {
        // No random source: the time and the process id still tell processes apart.
        format!("{:x}{:x}", crate::clock::now_ms(), std::process::id())
    });
    format!("inst_{token}")
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

impl Database {
    /// Starts the lease of instance `id`: alive for `lease` from now.
    pub async fn join_instance(&self, id: &str, lease: Duration) -> Result<()> {
        let now = self.db.now_ms_sql();
        let sql = format!(
            "INSERT INTO instances (id, started_at_ms, expires_at_ms) VALUES ($1, {now}, {now} + $2) \
             ON CONFLICT (id) DO UPDATE SET expires_at_ms = excluded.expires_at_ms"
        );
        write_tx!(&self.db, tx => {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(id)
                .bind(millis(lease))
                .execute(&mut *tx)
                .await
                .db()?;
            tx.commit().await.db()
        })
    }

    /// Pushes the lease of `id` to `lease` from now. `false` when it had already expired (the
    /// process stalled or lost the database for a whole lease): other instances may have
    /// recovered what it held then. It is alive again from now on either way.
    pub async fn renew_instance(&self, id: &str, lease: Duration) -> Result<bool> {
        let now = self.db.now_ms_sql();
        let renew = format!(
            "UPDATE instances SET expires_at_ms = {now} + $2 WHERE id = $1 AND expires_at_ms >= {now}"
        );
        let renewed = write_tx!(&self.db, tx => {
            let renewed = sqlx::query(sqlx::AssertSqlSafe(renew))
                .bind(id)
                .bind(millis(lease))
                .execute(&mut *tx)
                .await
                .db()?
                .rows_affected();
            tx.commit().await.db()?;
            renewed
        });
        if renewed == 0 {
            self.join_instance(id, lease).await?;
        }
        Ok(renewed > 0)
    }

    /// Ends the lease of `id` now, on a clean stop: what it leaves behind (tasks cut off, their
    /// reservations) is recovered by the next instance that looks, without waiting for expiry.
    pub async fn leave_instance(&self, id: &str) -> Result<()> {
        write_tx!(&self.db, tx => {
            sqlx::query("UPDATE instances SET expires_at_ms = 0 WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await
                .db()?;
            tx.commit().await.db()
        })
    }

    /// The instances whose lease has expired.
    pub async fn dead_instances(&self) -> Result<Vec<String>> {
        let sql = format!(
            "SELECT id FROM instances WHERE expires_at_ms < {} ORDER BY expires_at_ms",
            self.db.now_ms_sql()
        );
        Ok(read_pool!(&self.db, pool => {
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .fetch_all(pool)
                .await
                .db()?
        }))
    }

    /// Forgets dead instance `id` once what it left has been recovered; an instance that renewed
    /// meanwhile is kept.
    pub async fn forget_instance(&self, id: &str) -> Result<()> {
        let sql = format!(
            "DELETE FROM instances WHERE id = $1 AND expires_at_ms < {}",
            self.db.now_ms_sql()
        );
        write_tx!(&self.db, tx => {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(id)
                .execute(&mut *tx)
                .await
                .db()?;
            tx.commit().await.db()
        })
    }

    /// SQL: the instance named by `column` is dead (it has a lease, and the lease expired).
    pub(super) fn instance_dead(&self, column: &str) -> String {
        format!(
            "EXISTS (SELECT 1 FROM instances dead_lease WHERE dead_lease.id = {column} \
             AND dead_lease.expires_at_ms < {})",
            self.db.now_ms_sql()
        )
    }

    /// SQL: the instance named by `column` holds a lease that has not expired.
    pub(super) fn instance_alive(&self, column: &str) -> String {
        format!(
            "EXISTS (SELECT 1 FROM instances live_lease WHERE live_lease.id = {column} \
             AND live_lease.expires_at_ms >= {})",
            self.db.now_ms_sql()
        )
    }
}
