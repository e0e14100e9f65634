//! Records that point into the image store, each scoped to a tenant (an API key's id, or ''
//! for the operator): cache entries, named images (seed 000's `filename`) and uploaded files.
//! Bytes never live here; rows hold image-store keys.

use serde::{Deserialize, Serialize};
use sqlx::AssertSqlSafe;

use super::{
    pool::{bind_args, now_ms, now_secs, write_tx, Commit, DbExt},
    secret, Database,
};
use crate::{Error, Result};

/// One image of a cached result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedImage {
    /// Image-store key.
    pub key: String,
    /// MIME type.
    pub mime: String,
    /// The prompt the provider used, if it rewrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revised_prompt: Option<String>,
}

/// What a cache entry holds: the images of a generation and what the upstream said of them
/// (the metadata flattened, so the stored JSON reads `{"images", "background", ...}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedResult {
    /// The images, in order.
    pub images: Vec<CachedImage>,
    /// Format, size, quality and background, as made.
    #[serde(flatten)]
    pub meta: crate::provider::ImageMeta,
    /// The catalog model that made them, when a fallback did (the request's own otherwise):
    /// a hit or a replay names the model that made its images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_model: Option<String>,
}

/// An image stored under a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedImage {
    /// Image-store key.
    pub image_key: String,
    /// Catalog model id that made it.
    pub model: String,
    /// Upstream model id that made it (`X-Model`).
    pub upstream_model: String,
    /// Unix seconds of the last (re)naming.
    pub updated_at: i64,
}

/// An uploaded file (`POST /v1/files`), in OpenAI's file-object terms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileRecord {
    /// `file-...`.
    pub id: String,
    /// Size in bytes.
    pub bytes: i64,
    /// Unix seconds.
    pub created_at: i64,
    /// The name it was uploaded with.
    pub filename: String,
    /// The `purpose` it was uploaded with.
    pub purpose: String,
    /// Image-store key of its content.
    #[serde(skip)]
    pub image_key: String,
}

/// The columns of [`FileRow`], in its order.
macro_rules! file_columns {
    () => {
        "id, bytes, created_at, filename, purpose, image_key"
    };
}

/// Releases the claim of `$3` on the generation of `$2` for tenant `$1`.
const RELEASE_CLAIM: &str =
    "DELETE FROM generation_claims WHERE tenant = $1 AND cache_key = $2 AND owner = $3";
/// Records the result of a generation: tenant, cache key, (`$3` unused: the owner of the claim
/// [`RELEASE_CLAIM`] releases after it), model, result, Unix seconds.
const CACHE_ENTRY: &str =
    "INSERT INTO cache_entries (tenant, cache_key, model, result, created_at) \
     VALUES ($1, $2, $4, $5, $6) ON CONFLICT (tenant, cache_key) DO UPDATE \
     SET model = excluded.model, result = excluded.result, created_at = excluded.created_at";

/// Longest name a generation may be stored under.
pub const MAX_NAME_CHARS: usize = 200;

impl Database {
    /// The cached result of `cache_key` for `tenant`, if any.
    pub async fn cached(&self, tenant: &str, cache_key: &str) -> Result<Option<CachedResult>> {
        let row: Option<(String,)> = self
            .db
            .read_optional(
                "SELECT result FROM cache_entries WHERE tenant = $1 AND cache_key = $2",
                &[tenant.into(), cache_key.into()],
            )
            .await?;
        row.map(|(text,)| serde_json::from_str(&text))
            .transpose()
            .db()
    }

    /// Records (or, after a reroll, replaces) the result of `cache_key` for `tenant`.
    pub async fn cache(
        &self,
        tenant: &str,
        cache_key: &str,
        model: &str,
        result: &CachedResult,
    ) -> Result<()> {
        self.cache_and_release(tenant, cache_key, model, result, None)
            .await
    }

    /// [`Database::cache`], and with `claim_owner`, the release of that owner's claim on the
    /// generation with it: in one transaction on Postgres, and on SQLite in one round trip,
    /// the entry committed first.
    pub async fn cache_and_release(
        &self,
        tenant: &str,
        cache_key: &str,
        model: &str,
        result: &CachedResult,
        claim_owner: Option<&str>,
    ) -> Result<()> {
        let text = serde_json::to_string(result).db()?;
        let args = [
            tenant.into(),
            cache_key.into(),
            claim_owner.into(),
            model.into(),
            text.as_str().into(),
            now_secs().into(),
        ];
        // Lazy: an entry lost in a power cut costs one generation, never an answer.
        if self.db.is_embedded() {
            // One round trip to SQLite's writer thread for both statements, each committed on
            // its own in this order: a request waiting on the claim that sees it gone finds
            // the entry. (A crash between the two leaves the claim to fall with the instance.)
            let sql = match claim_owner {
                Some(_) => format!("{CACHE_ENTRY}; {RELEASE_CLAIM}"),
                None => CACHE_ENTRY.to_owned(),
            };
            self.db
                .write_as(Commit::Lazy, AssertSqlSafe(sql), &args)
                .await?;
            return Ok(());
        }
        write_tx!(lazy &self.db, tx => {
            bind_args!(sqlx::query(CACHE_ENTRY), &args)
                .execute(&mut *tx)
                .await
                .db()?;
            if claim_owner.is_some() {
                bind_args!(sqlx::query(RELEASE_CLAIM), &args[..3])
                    .execute(&mut *tx)
                    .await
                    .db()?;
            }
            tx.commit().await.db()
        })
    }

    /// Claims the generation of `cache_key` for `owner` (one request of instance `instance`),
    /// across every instance on this database: `true` if `owner` now holds it, `false` while
    /// another holder's claim stands. A claim falls once its instance is dead (its lease
    /// expired) or, whatever its instance, once it is older than `stale_after` (no generation
    /// runs that long; it covers holders without a lease).
    pub async fn claim_generation(
        &self,
        tenant: &str,
        cache_key: &str,
        owner: &str,
        instance: &str,
        stale_after: std::time::Duration,
    ) -> Result<bool> {
        let now = now_ms();
        let sql = format!(
            "INSERT INTO generation_claims (tenant, cache_key, owner, instance, claimed_at_ms) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant, cache_key) DO UPDATE \
             SET owner = excluded.owner, instance = excluded.instance, \
                 claimed_at_ms = excluded.claimed_at_ms \
             WHERE generation_claims.claimed_at_ms < $6 OR {} RETURNING owner",
            self.instance_dead("generation_claims.instance")
        );
        let args = [
            tenant.into(),
            cache_key.into(),
            owner.into(),
            instance.into(),
            now.into(),
            stale_before(now, stale_after).into(),
        ];
        // Lazy: claims are lost with the instance anyway when it dies (its lease lapses).
        let holder: Vec<(String,)> = self
            .db
            .write_returning_as(Commit::Lazy, AssertSqlSafe(sql), &args)
            .await?;
        Ok(holder.first().is_some_and(|(holder,)| holder == owner))
    }

    /// Whether the generation of `cache_key` is claimed by a request that may still finish it:
    /// a claim that [`Database::claim_generation`] would not take over. One read, for requests
    /// waiting on another instance's generation.
    pub async fn generation_claimed(
        &self,
        tenant: &str,
        cache_key: &str,
        stale_after: std::time::Duration,
    ) -> Result<bool> {
        let sql = format!(
            "SELECT CAST(1 AS BIGINT) FROM generation_claims WHERE tenant = $1 \
             AND cache_key = $2 AND claimed_at_ms >= $3 AND NOT {}",
            self.instance_dead("generation_claims.instance")
        );
        let args = [
            tenant.into(),
            cache_key.into(),
            stale_before(now_ms(), stale_after).into(),
        ];
        let held: Option<(i64,)> = self.db.read_optional(AssertSqlSafe(sql), &args).await?;
        Ok(held.is_some())
    }

    /// Releases `owner`'s claim (after its result is cached, or after it failed).
    pub async fn release_generation(
        &self,
        tenant: &str,
        cache_key: &str,
        owner: &str,
    ) -> Result<()> {
        self.db
            .write_as(
                Commit::Lazy,
                RELEASE_CLAIM,
                &[tenant.into(), cache_key.into(), owner.into()],
            )
            .await?;
        Ok(())
    }

    /// Drops the generation claims of instance `instance` if it is dead; returns how many.
    /// (Requests waiting on them take them over by themselves: this only clears the table.)
    pub async fn release_dead_claims(&self, instance: &str) -> Result<u64> {
        let sql = format!(
            "DELETE FROM generation_claims WHERE instance = $1 AND {}",
            self.instance_dead("generation_claims.instance")
        );
        self.db.write(AssertSqlSafe(sql), &[instance.into()]).await
    }

    /// Points `name` of `tenant` at an image (replacing what it named before).
    pub async fn name_image(&self, tenant: &str, name: &str, image: &NamedImage) -> Result<()> {
        check_name(name)?;
        let args = [
            tenant.into(),
            name.into(),
            (&image.image_key).into(),
            (&image.model).into(),
            (&image.upstream_model).into(),
            image.updated_at.into(),
        ];
        self.db
            .write(
                "INSERT INTO named_images (tenant, name, image_key, model, upstream_model, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant, name) DO UPDATE \
                 SET image_key = excluded.image_key, model = excluded.model, \
                     upstream_model = excluded.upstream_model, updated_at = excluded.updated_at",
                &args,
            )
            .await?;
        Ok(())
    }

    /// The image `name` of `tenant` points at, if any.
    pub async fn named_image(&self, tenant: &str, name: &str) -> Result<Option<NamedImage>> {
        let row: Option<(String, String, String, i64)> = self
            .db
            .read_optional(
                "SELECT image_key, model, upstream_model, updated_at FROM named_images \
                 WHERE tenant = $1 AND name = $2",
                &[tenant.into(), name.into()],
            )
            .await?;
        Ok(row.map(
            |(image_key, model, upstream_model, updated_at)| NamedImage {
                image_key,
                model,
                upstream_model,
                updated_at,
            },
        ))
    }

    /// Records an uploaded file of `tenant` whose content is already in the image store.
    pub async fn create_file(
        &self,
        tenant: &str,
        filename: &str,
        purpose: &str,
        bytes: i64,
        image_key: &str,
    ) -> Result<FileRecord> {
        let file = FileRecord {
            id: secret::new_file_id()?,
            bytes,
            created_at: now_secs(),
            filename: filename.to_owned(),
            purpose: purpose.to_owned(),
            image_key: image_key.to_owned(),
        };
        let args = [
            (&file.id).into(),
            tenant.into(),
            (&file.filename).into(),
            (&file.purpose).into(),
            file.bytes.into(),
            (&file.image_key).into(),
            file.created_at.into(),
        ];
        self.db
            .write(
                "INSERT INTO files (id, tenant, filename, purpose, bytes, image_key, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &args,
            )
            .await?;
        Ok(file)
    }

    /// The file `id` of `tenant`; another tenant's file is as absent as a missing one.
    pub async fn file(&self, tenant: &str, id: &str) -> Result<Option<FileRecord>> {
        let sql = concat!(
            "SELECT ",
            file_columns!(),
            " FROM files WHERE tenant = $1 AND id = $2"
        );
        let row: Option<FileRow> = self
            .db
            .read_optional(sql, &[tenant.into(), id.into()])
            .await?;
        Ok(row.map(file_of_row))
    }

    /// The files of `tenant`, newest first, at most `limit`.
    pub async fn files(&self, tenant: &str, limit: u32) -> Result<Vec<FileRecord>> {
        let sql = concat!(
            "SELECT ",
            file_columns!(),
            " FROM files WHERE tenant = $1 ORDER BY created_at DESC, id DESC LIMIT $2"
        );
        let args = [tenant.into(), i64::from(limit).into()];
        let rows: Vec<FileRow> = self.db.read_all(sql, &args).await?;
        Ok(rows.into_iter().map(file_of_row).collect())
    }

    /// Deletes the file `id` of `tenant`; `false` if there was none.
    pub async fn delete_file(&self, tenant: &str, id: &str) -> Result<bool> {
        let deleted = self
            .db
            .write(
                "DELETE FROM files WHERE tenant = $1 AND id = $2",
                &[tenant.into(), id.into()],
            )
            .await?;
        Ok(deleted > 0)
    }
}

/// The claim time before which a claim is stale.
fn stale_before(now: i64, stale_after: std::time::Duration) -> i64 {
    now.saturating_sub(i64::try_from(stale_after.as_millis()).unwrap_or(i64::MAX))
}

type FileRow = (String, i64, i64, String, String, String);

fn file_of_row((id, bytes, created_at, filename, purpose, image_key): FileRow) -> FileRecord {
    FileRecord {
        id,
        bytes,
        created_at,
        filename,
        purpose,
        image_key,
    }
}

/// A name is 1 to [`MAX_NAME_CHARS`] characters of ASCII letters, digits, `-`, `_` and `.`, so it is
/// safe in a `Content-Disposition` header and a URL alike.
pub fn check_name(name: &str) -> Result<()> {
    let valid = !name.is_empty()
        && name.chars().count() <= MAX_NAME_CHARS
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(())
    } else {
        Err(Error::invalid_param(
            "filename",
            format!(
                "a filename is 1 to {MAX_NAME_CHARS} letters, digits, `-`, `_` or `.`, not starting with `.`"
            ),
        ))
    }
}
