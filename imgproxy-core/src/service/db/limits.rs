//! Per-key rate and concurrency limits: the one definition of "per minute" ([`MinuteWindow`],
//! used in process by the server on SQLite) and the same limits held in Postgres, so that
//! instances sharing a database share each key's counts ([`Database::admit_shared`]).
//!
//! "N per minute" means: at most N in any 60 seconds. Counts are kept per second for the last
//! 61 seconds (the current second and the 60 before it), so a slot frees up to a second late
//! but never early. In Postgres one transaction per admission takes a per-key advisory lock,
//! drops the key's buckets older than the window, checks requests, images and concurrency
//! together and only then counts the request: a refused request uses up nothing. Times are
//! the database's clock, so instances whose clocks disagree still share one window.
//! Concurrency is a lease row per request in flight, renewed by its process
//! ([`Database::renew_leases`]) and deleted when the request ends; a crashed process stops
//! renewing and its leases expire after [`LEASE_TTL`].

use std::{collections::VecDeque, time::Duration};

use sqlx::Row as _;

use super::{
    pool::{Db, DbExt},
    Database,
};
use crate::{Error, Result};

/// The window of a per-minute limit, in seconds.
pub const WINDOW_SECS: i64 = 60;
/// How long a concurrency lease outlives its last renewal: a crashed instance's slots free
/// up this long after it stopped.
pub const LEASE_TTL: Duration = Duration::from_secs(30);
/// How often a process should renew its live leases: three renewals per [`LEASE_TTL`], so a
/// slow database round trip cannot let a live request's lease expire.
pub const LEASE_RENEW_EVERY: Duration = Duration::from_secs(10);

/// Seconds before `now` whose bucket still counts: the current second and the 60 before, so
/// two admissions less than 60 s apart always see each other.
const BUCKETS_BACK: i64 = WINDOW_SECS;

/// A key's limits as admission sees them; `None` is unlimited. Zero allows nothing (keys can
/// no longer be created with it; see [`super::NewKey::check_limits`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyLimitsSpec {
    /// Requests per minute.
    pub rpm: Option<u32>,
    /// Images per minute.
    pub images_per_minute: Option<u32>,
    /// Requests in flight at once.
    pub max_concurrent: Option<u32>,
}

/// Which limit refused a request, and when a retry can succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// `requests per minute`, `images per minute` or `concurrent requests`.
    pub limit: &'static str,
    /// At least a second.
    pub retry_after: Duration,
}

/// The outcome of [`Database::admit_shared`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SharedAdmission {
    /// Counted; with `max_concurrent`, the id of the lease to renew and then release.
    Admitted {
        /// The lease held for the request, if the key limits concurrency.
        lease: Option<String>,
    },
    /// Over a limit; nothing was counted.
    Refused(Refusal),
}

/// One per-minute counter in process: per-second buckets over the last minute.
#[derive(Debug, Clone, Default)]
pub struct MinuteWindow {
    /// `(unix second, used)`, oldest first, at most 61 entries.
    buckets: VecDeque<(i64, u64)>,
}

impl MinuteWindow {
    /// Adds `cost` at `now_secs` if the window stays within `limit`, else says how long to
    /// wait. A `cost` above `limit` can never fit: callers refuse it before asking.
    pub fn try_add(
        &mut self,
        now_secs: i64,
        cost: u64,
        limit: u64,
    ) -> std::result::Result<(), Duration> {
        while self
            .buckets
            .front()
            .is_some_and(|&(second, _)| second < now_secs - BUCKETS_BACK)
        {
            self.buckets.pop_front();
        }
        if let Some(wait) = window_wait(self.buckets.make_contiguous(), now_secs, cost, limit) {
            return Err(wait);
        }
        match self.buckets.back_mut() {
            Some((second, used)) if *second == now_secs => *used += cost,
            _ => self.buckets.push_back((now_secs, cost)),
        }
        Ok(())
    }
}

/// `None` if `cost` more fits under `limit` given `buckets` (`(second, used)`, oldest first,
/// none older than the window), else how long until enough of them leave the window.
pub fn window_wait(
    buckets: &[(i64, u64)],
    now_secs: i64,
    cost: u64,
    limit: u64,
) -> Option<Duration> {
    let counted = || {
        buckets
            .iter()
            .filter(move |&&(second, _)| second >= now_secs - BUCKETS_BACK)
    };
    let used: u64 = counted().map(|&(_, used)| used).sum();
    if used.saturating_add(cost) <= limit {
        return None;
    }
    let mut left = used;
    for &(second, bucket) in counted() {
        left = left.saturating_sub(bucket);
        if left.saturating_add(cost) <= limit {
            // The bucket of `second` stops counting at `second + BUCKETS_BACK + 1`.
            let wait = (second + BUCKETS_BACK + 1 - now_secs).max(1);
            return Some(Duration::from_secs(u64::try_from(wait).unwrap_or(1)));
        }
    }
    Some(Duration::from_secs(
        u64::try_from(BUCKETS_BACK + 1).unwrap_or(61),
    ))
}

impl Database {
    /// Whether limits must be shared with other instances through the database: on Postgres
    /// (the backend several instances share). SQLite instances count in process.
    pub fn shares_limits(&self) -> bool {
        matches!(self.db, Db::Postgres(_))
    }

    /// Admits one request of `images` images for `key_id` under `limits`, counting it in the
    /// database for every instance (Postgres only). With `max_concurrent`, the request holds a
    /// lease owned by `owner` (one id per process) until [`Database::release_lease`].
    pub async fn admit_shared(
        &self,
        key_id: &str,
        limits: KeyLimitsSpec,
        images: u32,
        owner: &str,
    ) -> Result<SharedAdmission> {
        let Db::Postgres(pool) = &self.db else {
            return Err(Error::Internal(
                "shared limits need Postgres; SQLite instances count in process".into(),
            ));
        };
        let mut tx = pool.begin().await.db()?;
        // One admission per key at a time, across every instance; released at commit or
        // rollback. The prefix keeps the hash apart from other advisory locks.
        let now_ms: i64 = sqlx::query_scalar(
            "SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT) \
             FROM pg_advisory_xact_lock(hashtextextended('imgproxy-limits:' || $1, 0))",
        )
        .bind(key_id)
        .fetch_one(&mut *tx)
        .await
        .db()?;
        let now_secs = now_ms.div_euclid(1000);
        let counters = [
            ("requests", "requests per minute", limits.rpm, 1_u64),
            (
                "images",
                "images per minute",
                limits.images_per_minute,
                u64::from(images.max(1)),
            ),
        ];
        if limits.rpm.is_some() || limits.images_per_minute.is_some() {
            sqlx::query("DELETE FROM key_rate_buckets WHERE key_id = $1 AND second < $2")
                .bind(key_id)
                .bind(now_secs - BUCKETS_BACK)
                .execute(&mut *tx)
                .await
                .db()?;
            let rows = sqlx::query(
                "SELECT kind, second, used FROM key_rate_buckets WHERE key_id = $1 \
                 ORDER BY kind, second",
            )
            .bind(key_id)
            .fetch_all(&mut *tx)
            .await
            .db()?;
            for (kind, name, limit, cost) in counters {
                let Some(limit) = limit else { continue };
                let mut buckets = Vec::new();
                for row in rows.iter().filter(|r| r.get::<String, _>(0) == kind) {
                    let used: i64 = row.try_get(2).db()?;
                    buckets.push((row.try_get::<i64, _>(1).db()?, used.unsigned_abs()));
                }
                if let Some(retry_after) = window_wait(&buckets, now_secs, cost, u64::from(limit)) {
                    return Ok(SharedAdmission::Refused(Refusal {
                        limit: name,
                        retry_after,
                    }));
                }
            }
        }
        let lease = match limits.max_concurrent {
            Some(max) => {
                sqlx::query("DELETE FROM key_leases WHERE key_id = $1 AND expires_at_ms <= $2")
                    .bind(key_id)
                    .bind(now_ms)
                    .execute(&mut *tx)
                    .await
                    .db()?;
                let live: i64 =
                    sqlx::query_scalar("SELECT COUNT(*) FROM key_leases WHERE key_id = $1")
                        .bind(key_id)
                        .fetch_one(&mut *tx)
                        .await
                        .db()?;
                if live >= i64::from(max) {
                    return Ok(SharedAdmission::Refused(Refusal {
                        limit: "concurrent requests",
                        retry_after: Duration::from_secs(1),
                    }));
                }
                let id = format!("lease_{}", super::secret::new_key_id()?);
                sqlx::query(
                    "INSERT INTO key_leases (id, key_id, owner, expires_at_ms) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(&id)
                .bind(key_id)
                .bind(owner)
                .bind(now_ms + ttl_ms())
                .execute(&mut *tx)
                .await
                .db()?;
                Some(id)
            }
            None => None,
        };
        for (kind, _, limit, cost) in counters {
            if limit.is_none() {
                continue;
            }
            sqlx::query(
                "INSERT INTO key_rate_buckets (key_id, kind, second, used) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (key_id, kind, second) \
                 DO UPDATE SET used = key_rate_buckets.used + EXCLUDED.used",
            )
            .bind(key_id)
            .bind(kind)
            .bind(now_secs)
            .bind(i64::try_from(cost).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await
            .db()?;
        }
        tx.commit().await.db()?;
        Ok(SharedAdmission::Admitted { lease })
    }

    /// Pushes the expiry of the leases `ids` (the live ones of this process) to
    /// [`LEASE_TTL`] from now.
    pub async fn renew_leases(&self, ids: &[String]) -> Result<()> {
        let Db::Postgres(pool) = &self.db else {
            return Ok(());
        };
        if ids.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "UPDATE key_leases SET expires_at_ms = \
             CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT) + $2 \
             WHERE id = ANY($1)",
        )
        .bind(ids)
        .bind(ttl_ms())
        .execute(pool)
        .await
        .db()?;
        Ok(())
    }

    /// Frees a concurrency slot at once (else it would free when its lease expires).
    pub async fn release_lease(&self, id: &str) -> Result<()> {
        let Db::Postgres(pool) = &self.db else {
            return Ok(());
        };
        sqlx::query("DELETE FROM key_leases WHERE id = $1")
            .bind(id)
            .execute(pool)
            .await
            .db()?;
        Ok(())
    }
}

fn ttl_ms() -> i64 {
    i64::try_from(LEASE_TTL.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minute_window_holds_the_limit_over_any_sixty_seconds() {
        let mut window = MinuteWindow::default();
        for _ in 0..3 {
            window.try_add(1_000, 1, 3).unwrap();
        }
        // Full: the earliest slot frees when second 1000 leaves the window, at 1061.
        assert_eq!(window.try_add(1_000, 1, 3), Err(Duration::from_secs(61)));
        assert_eq!(window.try_add(1_059, 1, 3), Err(Duration::from_secs(2)));
        // 1060 is less than 60 s after 1000.999: still counted.
        assert!(window.try_add(1_060, 1, 3).is_err());
        window.try_add(1_061, 2, 3).unwrap();
        assert_eq!(window.try_add(1_061, 2, 3), Err(Duration::from_secs(61)));
        window.try_add(1_062, 1, 3).unwrap();
        assert!(window.try_add(1_100, 1, 3).is_err());
        // After a quiet minute everything is free again, and old buckets are dropped.
        window.try_add(1_200, 3, 3).unwrap();
        assert_eq!(window.buckets.len(), 1);
    }

    #[test]
    fn the_wait_is_until_enough_buckets_leave() {
        let buckets = [(100, 2), (110, 5), (150, 1)];
        assert_eq!(window_wait(&buckets, 155, 1, 9), None);
        assert_eq!(
            window_wait(&buckets, 155, 2, 9),
            Some(Duration::from_secs(6))
        );
        assert_eq!(
            window_wait(&buckets, 155, 5, 9),
            Some(Duration::from_secs(16))
        );
        // Buckets older than the window do not count.
        assert_eq!(window_wait(&buckets, 161, 3, 9), None);
        // A zero limit never admits.
        assert!(window_wait(&[], 100, 1, 0).is_some());
    }
}
