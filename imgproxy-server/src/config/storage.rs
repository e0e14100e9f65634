//! Where state lives: the data dir, the database and the image store (the data dir or an S3
//! bucket, with an in-memory cache in front), and how long records are kept: their
//! environment variables, defaults and resolution. The `[storage]` table is declared with the rest of the file model in `config`.

use std::{path::PathBuf, time::Duration};

use imgproxy_core::service::{
    idempotency,
    retention::Retention,
    store::{S3Location, DEFAULT_MEMORY_BYTES},
};

use super::{Env, StorageConfig};

/// Data folder.
pub const ENV_DATA_DIR: &str = "IMGPROXY_DATA_DIR";
/// Database URL: `sqlite://PATH` or `postgres://...`.
pub const ENV_DATABASE_URL: &str = "IMGPROXY_DATABASE_URL";
/// S3 bucket for images; when set, images go to S3 instead of the data dir.
pub const ENV_S3_BUCKET: &str = "IMGPROXY_S3_BUCKET";
/// Endpoint of an S3-compatible server (MinIO, R2, ...).
pub const ENV_S3_ENDPOINT: &str = "IMGPROXY_S3_ENDPOINT";
/// S3 region (else the usual AWS variables, else `us-east-1`).
pub const ENV_S3_REGION: &str = "IMGPROXY_S3_REGION";
/// Retention by age, in seconds.
pub const ENV_RETENTION_MAX_AGE_SECS: &str = "IMGPROXY_RETENTION_MAX_AGE_SECS";
/// Retention by total size, in bytes.
pub const ENV_RETENTION_MAX_BYTES: &str = "IMGPROXY_RETENTION_MAX_BYTES";

/// How long an `Idempotency-Key` is remembered, in seconds.
pub const ENV_IDEMPOTENCY_WINDOW_SECS: &str = "IMGPROXY_IDEMPOTENCY_WINDOW_SECS";

/// Seconds between retention sweeps by default.
const DEFAULT_SWEEP_EVERY_SECS: u64 = 3600;

impl StorageConfig {
    /// The S3 location, if a bucket is set.
    pub(super) fn s3(&self, env: &dyn Env) -> anyhow::Result<Option<S3Location>> {
        let Some(bucket) = env.over(ENV_S3_BUCKET, self.s3_bucket.clone())? else {
            return Ok(None);
        };
        Ok(Some(S3Location {
            bucket,
            endpoint: env.over(ENV_S3_ENDPOINT, self.s3_endpoint.clone())?,
            region: env.over(ENV_S3_REGION, self.s3_region.clone())?,
        }))
    }

    /// Bytes of recently used images kept in memory.
    pub(super) fn memory_cache_bytes(&self) -> usize {
        self.memory_cache_bytes.unwrap_or(DEFAULT_MEMORY_BYTES)
    }

    /// What the image store keeps (nothing is swept unless a limit is set), and how often
    /// the sweep runs.
    pub(super) fn retention(&self, env: &dyn Env) -> anyhow::Result<(Retention, Duration)> {
        let max_age = env.over(ENV_RETENTION_MAX_AGE_SECS, self.retention_max_age_secs)?;
        let max_bytes = env.over(ENV_RETENTION_MAX_BYTES, self.retention_max_bytes)?;
        let every = self
            .retention_sweep_every_secs
            .unwrap_or(DEFAULT_SWEEP_EVERY_SECS);
        anyhow::ensure!(
            max_age != Some(0) && max_bytes != Some(0) && every > 0,
            "[storage] retention_max_age_secs, retention_max_bytes and \
             retention_sweep_every_secs must be positive (leave a limit out to turn it off)"
        );
        let retention = Retention {
            max_age: max_age.map(Duration::from_secs),
            max_bytes,
        };
        Ok((retention, Duration::from_secs(every)))
    }
}

impl StorageConfig {
    /// How long an `Idempotency-Key` is remembered from its first request.
    pub(super) fn idempotency_window(&self, env: &dyn Env) -> anyhow::Result<Duration> {
        let secs = env.over(ENV_IDEMPOTENCY_WINDOW_SECS, self.idempotency_window_secs)?;
        anyhow::ensure!(
            secs != Some(0),
            "[storage] idempotency_window_secs must be positive"
        );
        Ok(secs.map_or(idempotency::DEFAULT_WINDOW, Duration::from_secs))
    }
}

/// The flag's (or its environment variable's, read by `clap`) data dir, else the file's, else
/// `./data`.
pub(super) fn data_dir(flag: Option<PathBuf>, file: Option<PathBuf>) -> PathBuf {
    flag.or(file).unwrap_or_else(|| PathBuf::from("data"))
}

/// The flag's database URL, else the file's, else SQLite in the data dir.
pub(super) fn database_url(
    flag: Option<String>,
    file: Option<String>,
    data_dir: &std::path::Path,
) -> String {
    flag.or(file)
        .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("imgproxy.db").display()))
}
