//! Retention: the image store and its records expire by age and/or total size. A sweep
//! deletes cache entries older than the age limit, then the stored objects that nothing still
//! needs (no name, file, task or live cache entry points to them) and that are older than the
//! age limit, then, oldest first, more of those until the store fits the size limit. Off
//! unless configured.

use std::time::Duration;

use super::Service;
use crate::{clock::now_secs, Result};

/// Objects younger than this are never swept, whatever the limits: an image stored by a
/// generation in flight has no record pointing to it until that generation finishes.
pub const MIN_GRACE: Duration = Duration::from_secs(600);

/// How long and how much the store keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Cache entries and unneeded images older than this go.
    pub max_age: Option<Duration>,
    /// Unneeded images go, oldest first, while the store holds more than this many bytes.
    pub max_bytes: Option<u64>,
}

impl Retention {
    /// Whether any limit is set.
    pub fn is_enabled(&self) -> bool {
        self.max_age.is_some() || self.max_bytes.is_some()
    }
}

/// What one sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Cache entries expired.
    pub cache_entries: u64,
    /// Objects deleted.
    pub objects: u64,
    /// Bytes freed.
    pub bytes: u64,
    /// Bytes the store holds afterwards.
    pub remaining_bytes: u64,
}

impl Service {
    /// Sweeps the store and its records under `retention` (see the module's doc).
    pub async fn sweep(&self, retention: &Retention) -> Result<SweepReport> {
        self.sweep_as_of(retention, now_secs()).await
    }

    /// [`Service::sweep`] as if the time were `now` (Unix seconds), for tests.
    pub async fn sweep_as_of(&self, retention: &Retention, now: i64) -> Result<SweepReport> {
        let mut report = SweepReport::default();
        if !retention.is_enabled() {
            return Ok(report);
        }
        let secs = |age: Duration| i64::try_from(age.as_secs()).unwrap_or(i64::MAX);
        if let Some(age) = retention.max_age {
            report.cache_entries = self.db.expire_cache_entries(now - secs(age)).await?;
        }
        let needed = self.db.referenced_image_keys().await?;
        let mut objects = self.store.objects().await?;
        report.remaining_bytes = objects.iter().map(|o| o.bytes).sum();
        // Oldest first: the age limit takes them from the front, the size limit goes on.
        objects.sort_by_key(|o| o.modified_secs);
        let grace_end = now - secs(MIN_GRACE);
        let old_end = retention.max_age.map_or(i64::MIN, |age| now - secs(age));
        for object in objects {
            let unneeded = object.key.as_ref().is_none_or(|key| !needed.contains(key))
                // A kept conversion is only a cache of its image: it can always be made again.
                || object.path.starts_with("derived/");
            let too_old = object.modified_secs < old_end;
            let too_big = retention
                .max_bytes
                .is_some_and(|max| report.remaining_bytes > max);
            if !unneeded || object.modified_secs >= grace_end || !(too_old || too_big) {
                continue;
            }
            self.store.delete(&object.path).await?;
            report.objects += 1;
            report.bytes += object.bytes;
            report.remaining_bytes = report.remaining_bytes.saturating_sub(object.bytes);
        }
        Ok(report)
    }
}
