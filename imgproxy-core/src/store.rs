//! The image store: every image kept once, content-addressed (`<sha256>.<ext>`), on any
//! `object_store` backend (a local folder by default).

use std::{path::Path, sync::Arc};

use bytes::Bytes;
use object_store::{local::LocalFileSystem, path::Path as ObjectPath, ObjectStore, PutPayload};
use sha2::{Digest, Sha256};

use crate::{provider::extension_of, Error, Result};

/// Content-addressed image storage.
#[derive(Debug, Clone)]
pub struct ImageStore {
    inner: Arc<dyn ObjectStore>,
    kind: &'static str,
}

impl ImageStore {
    /// A store in the folder `dir`, created if missing.
    pub fn local(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::Internal(format!("cannot create image folder {}: {e}", dir.display()))
        })?;
        let fs = LocalFileSystem::new_with_prefix(dir).map_err(|e| {
            Error::Internal(format!("cannot open image folder {}: {e}", dir.display()))
        })?;
        Ok(Self {
            inner: Arc::new(fs),
            kind: "fs",
        })
    }

    /// A store on any `object_store` backend; `kind` names it (`fs`, `s3`).
    pub fn new(inner: Arc<dyn ObjectStore>, kind: &'static str) -> Self {
        Self { inner, kind }
    }

    /// `fs` or `s3`.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// Stores `bytes` and returns its key. Storing the same bytes twice is a no-op.
    pub async fn put(&self, bytes: Bytes, mime: &str) -> Result<String> {
        let key = format!(
            "{}.{}",
            hex::encode(Sha256::digest(&bytes)),
            extension_of(mime)
        );
        let path = object_path(&key)?;
        if self.inner.head(&path).await.is_ok() {
            return Ok(key);
        }
        self.inner
            .put(&path, PutPayload::from_bytes(bytes))
            .await
            .map_err(|e| Error::Internal(format!("storing image {key}: {e}")))?;
        Ok(key)
    }

    /// The bytes and MIME type stored under `key`, or `None` if there are none (or the key is
    /// not a key this store makes).
    pub async fn get(&self, key: &str) -> Result<Option<(Bytes, &'static str)>> {
        let Some(mime) = mime_of_key(key) else {
            return Ok(None);
        };
        let path = object_path(key)?;
        match self.inner.get(&path).await {
            Ok(result) => {
                let bytes = result
                    .bytes()
                    .await
                    .map_err(|e| Error::Internal(format!("reading image {key}: {e}")))?;
                Ok(Some((bytes, mime)))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(Error::Internal(format!("reading image {key}: {e}"))),
        }
    }
}

/// Images sit under `images/ab/` (the first two hex digits) to keep folders small.
fn object_path(key: &str) -> Result<ObjectPath> {
    let prefix = key
        .get(..2)
        .ok_or_else(|| Error::Internal(format!("bad image key {key}")))?;
    Ok(ObjectPath::from(format!("images/{prefix}/{key}")))
}

/// The MIME type of a well-formed key (`<64 hex>.<ext>`).
fn mime_of_key(key: &str) -> Option<&'static str> {
    let (hash, ext) = key.split_once('.')?;
    if hash.len() != 64
        || !hash
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        return None;
    }
    Some(match ext {
        "png" => "image/png",
        "jpg" => "image/jpeg",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "svg" => "image/svg+xml",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stores_once_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::local(dir.path()).unwrap();
        let key = store
            .put(Bytes::from_static(b"\x89PNGdata"), "image/png")
            .await
            .unwrap();
        assert_eq!(
            key,
            store
                .put(Bytes::from_static(b"\x89PNGdata"), "image/png")
                .await
                .unwrap()
        );
        let (bytes, mime) = store.get(&key).await.unwrap().unwrap();
        assert_eq!((&bytes[..], mime), (&b"\x89PNGdata"[..], "image/png"));
        // A restarted process sees the same image.
        let reopened = ImageStore::local(dir.path()).unwrap();
        assert!(reopened.get(&key).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn rejects_foreign_keys() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::local(dir.path()).unwrap();
        assert_eq!(store.get("../../etc/passwd").await.unwrap(), None);
        assert_eq!(
            store.get(&format!("{}.png", "0".repeat(64))).await.unwrap(),
            None
        );
    }
}
