//! What retention may not sweep: the image-store keys that names, files, tasks, live cache
//! entries and remembered idempotency keys still point to, and the expiry of cache entries by
//! age.

use std::collections::HashSet;

use serde_json::Value;

use super::{
    pool::{read_pool, write_tx, DbExt},
    Database,
};
use crate::Result;

impl Database {
    /// Deletes the cache entries written before `before_secs` (Unix seconds); their images
    /// are then kept only if something else points to them. Returns how many went.
    pub async fn expire_cache_entries(&self, before_secs: i64) -> Result<u64> {
        write_tx!(&self.db, tx => {
            let done = sqlx::query("DELETE FROM cache_entries WHERE created_at < $1")
                .bind(before_secs)
                .execute(&mut *tx)
                .await
                .db()?;
            tx.commit().await.db()?;
            Ok(done.rows_affected())
        })
    }

    /// Every image-store key a named image, an uploaded file, a task's result, a cache entry
    /// or an idempotency key's answer points to.
    pub async fn referenced_image_keys(&self) -> Result<HashSet<String>> {
        let (direct, results): (Vec<String>, Vec<String>) = read_pool!(&self.db, pool => {
            let direct = sqlx::query_scalar(
                "SELECT image_key FROM named_images UNION SELECT image_key FROM files",
            )
            .fetch_all(&mut *pool)
            .await
            .db()?;
            let results = sqlx::query_scalar(
                "SELECT result FROM cache_entries UNION ALL \
                 SELECT result FROM tasks WHERE result IS NOT NULL UNION ALL \
                 SELECT result FROM idempotency_keys WHERE result IS NOT NULL",
            )
            .fetch_all(pool)
            .await
            .db()?;
            (direct, results)
        });
        let mut keys: HashSet<String> = direct.into_iter().collect();
        for text in results {
            // A cache entry is `{"images": [..]}`; a task's result wraps one: `{"images":
            // {"images": [..]}}`. An unreadable row keeps nothing safe, so it fails the sweep.
            let value: Value = serde_json::from_str(&text).db()?;
            collect_keys(&value, &mut keys);
        }
        Ok(keys)
    }
}

/// Adds every `images[].key` found in `value`, at any depth of `images` nesting.
fn collect_keys(value: &Value, keys: &mut HashSet<String>) {
    match value.get("images") {
        Some(Value::Array(images)) => {
            for image in images {
                if let Some(key) = image.get("key").and_then(Value::as_str) {
                    keys.insert(key.to_owned());
                }
            }
        }
        Some(nested @ Value::Object(_)) => collect_keys(nested, keys),
        _ => {}
    }
}
