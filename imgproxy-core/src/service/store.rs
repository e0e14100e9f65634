//! The image store: every image kept once, content-addressed (`<blake3>.<ext>`), on any
//! `object_store` backend: a local folder (the default) or S3-compatible storage. Format
//! conversions of a stored image are kept beside it, so each is computed once. Recently used
//! images are also kept in memory: their keys are content hashes, so a copy is never stale.

use std::{
    path::Path,
    sync::{Arc, Mutex, PoisonError},
};

use bytes::Bytes;
use object_store::{local::LocalFileSystem, path::Path as ObjectPath, ObjectStore, PutPayload};

#[cfg(target_os = "linux")]
mod direct;

use crate::{
    convert::{self, RasterFormat},
    provider::extension_of,
    Error, Result,
};

/// Where S3-compatible storage is. Credentials and the region also come from the usual AWS
/// variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, ...).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Location {
    /// Bucket name.
    pub bucket: String,
    /// Endpoint of an S3-compatible server (MinIO, R2, moto ...); `None` for AWS itself.
    pub endpoint: Option<String>,
    /// Region; `None` to take it from the environment (default `us-east-1`).
    pub region: Option<String>,
}

/// Bytes of recently used images kept in memory by default.
pub const DEFAULT_MEMORY_BYTES: usize = 64 * 1024 * 1024;

/// The prefix of the objects [`ImageStore::probe`] writes and deletes: no image key has it.
const PROBE_PREFIX: &str = "readiness-probe-";

/// Content-addressed image storage.
#[derive(Debug, Clone)]
pub struct ImageStore {
    inner: Arc<dyn ObjectStore>,
    kind: &'static str,
    hot: Arc<Mutex<HotImages>>,
    /// The local folder, when that is the backend: its new images are written past the page
    /// cache (`direct`).
    local: Option<Arc<LocalFileSystem>>,
}

/// What one kept object costs besides its bytes: its path, the LRU node and the `Bytes`
/// handle, rounded up. Counted so that many small images cannot overrun the budget.
const ENTRY_OVERHEAD: usize = 160;

/// Recently read or written objects by path, within a byte budget that counts each entry's
/// bytes, path and overhead (least recently used go first). An object larger than a quarter
/// of the budget is not kept.
#[derive(Debug)]
struct HotImages {
    entries: lru::LruCache<String, Bytes>,
    bytes: usize,
    budget: usize,
}

impl HotImages {
    fn new(budget: usize) -> Self {
        Self {
            entries: lru::LruCache::unbounded(),
            bytes: 0,
            budget,
        }
    }

    fn get(&mut self, path: &str) -> Option<Bytes> {
        self.entries.get(path).cloned()
    }

    fn cost(path: &str, bytes: &Bytes) -> usize {
        bytes.len() + path.len() + ENTRY_OVERHEAD
    }

    fn insert(&mut self, path: &str, bytes: &Bytes) {
        let cost = Self::cost(path, bytes);
        if cost > self.budget / 4 || self.entries.contains(path) {
            return;
        }
        self.bytes += cost;
        self.entries.put(path.to_owned(), bytes.clone());
        while self.bytes > self.budget {
            let Some((path, evicted)) = self.entries.pop_lru() else {
                break;
            };
            self.bytes -= Self::cost(&path, &evicted);
        }
    }

    fn remove(&mut self, path: &str) {
        if let Some(bytes) = self.entries.pop(path) {
            self.bytes -= Self::cost(path, &bytes);
        }
    }
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
        let fs = Arc::new(fs);
        Ok(Self {
            local: Some(fs.clone()),
            ..Self::new(fs, "fs")
        })
    }

    /// A store in an S3 bucket (or an S3-compatible server's).
    pub fn s3(location: &S3Location) -> Result<Self> {
        let mut builder =
            object_store::aws::AmazonS3Builder::from_env().with_bucket_name(&location.bucket);
        if let Some(endpoint) = &location.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        if let Some(region) = &location.region {
            builder = builder.with_region(region);
        }
        // The builder's errors name settings, never credential values.
        let s3 = builder
            .build()
            .map_err(|e| Error::Internal(format!("cannot configure S3 storage: {e}")))?;
        Ok(Self::new(Arc::new(s3), "s3"))
    }

    /// A store on any `object_store` backend; `kind` names it (`fs`, `s3`).
    pub fn new(inner: Arc<dyn ObjectStore>, kind: &'static str) -> Self {
        Self {
            inner,
            kind,
            hot: Arc::new(Mutex::new(HotImages::new(DEFAULT_MEMORY_BYTES))),
            local: None,
        }
    }

    /// Keeps at most `bytes` of recently used images in memory (0 turns that off).
    #[must_use]
    pub fn with_memory_cache(self, bytes: usize) -> Self {
        Self {
            hot: Arc::new(Mutex::new(HotImages::new(bytes))),
            ..self
        }
    }

    fn hot(&self) -> std::sync::MutexGuard<'_, HotImages> {
        self.hot.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `fs` or `s3`.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// The object path of `key` in the backend (for S3, the object key).
    pub fn location(&self, key: &str) -> Result<String> {
        object_path(key).map(|path| path.to_string())
    }

    /// Stores `bytes` and returns its key, the BLAKE3 hash of the bytes in hex (`b3sum` checks
    /// it). The same bytes are kept once: S3 skips an object it has, a local folder writes the
    /// same file again. Images stored by earlier versions are named by their SHA-256; a key is a
    /// name, so they are read and served the same way.
    pub async fn put(&self, bytes: Bytes, mime: &str) -> Result<String> {
        let key = format!("{}.{}", blake3::hash(&bytes).to_hex(), extension_of(mime));
        self.put_once(&object_path(&key)?, bytes).await?;
        Ok(key)
    }

    async fn put_once(&self, path: &ObjectPath, bytes: Bytes) -> Result<()> {
        // A folder's put is a write and a rename over any copy already there, so looking first
        // costs a miss (whose image is almost always new) a stat for nothing; on S3 the look
        // saves uploading an image again.
        if let Some(local) = &self.local {
            write_local(local, path, bytes.clone()).await?;
        } else if self.inner.head(path).await.is_err() {
            self.inner
                .put(path, PutPayload::from_bytes(bytes.clone()))
                .await
                .map_err(|e| Error::Internal(format!("storing {path}: {e}")))?;
        }
        // A new image is likely wanted again soon (the answer's URL, a cache hit).
        self.hot().insert(path.as_ref(), &bytes);
        Ok(())
    }

    /// The image under `key` in `format`, converted on first use and kept for later ones;
    /// returns the bytes and their object path. `None` if there is no such image.
    pub async fn converted(
        &self,
        key: &str,
        format: RasterFormat,
    ) -> Result<Option<(Bytes, String)>> {
        let Some(mime) = mime_of_key(key) else {
            return Ok(None);
        };
        let path = ObjectPath::from(format!(
            "derived/{}/{key}.{}",
            &key[..2],
            format.extension()
        ));
        if let Some(bytes) = self.read(&path).await? {
            return Ok(Some((bytes, path.to_string())));
        }
        let Some((source, _)) = self.get(key).await? else {
            return Ok(None);
        };
        // On the bounded CPU pool, like every conversion: it holds a whole decoded image.
        let bytes = crate::blocking::run(move |cancel| {
            if cancel.is_cancelled() {
                return Err(Error::Internal("the request went away".into()));
            }
            convert::convert(&source, mime, format, None, "ext")
        })
        .await??;
        self.put_once(&path, bytes.clone()).await?;
        Ok(Some((bytes, path.to_string())))
    }

    /// The bytes and MIME type stored under `key`, or `None` if there are none (or the key is
    /// not a key this store makes).
    pub async fn get(&self, key: &str) -> Result<Option<(Bytes, &'static str)>> {
        let Some(mime) = mime_of_key(key) else {
            return Ok(None);
        };
        Ok(self
            .read(&object_path(key)?)
            .await?
            .map(|bytes| (bytes, mime)))
    }

    /// Every object of the store: images and their kept conversions, with size and age.
    pub async fn objects(&self) -> Result<Vec<StoredObject>> {
        use futures_util::TryStreamExt as _;
        let mut objects = Vec::new();
        for prefix in ["images", "derived"] {
            let prefix = ObjectPath::from(prefix);
            let mut listing = self.inner.list(Some(&prefix));
            while let Some(meta) = listing
                .try_next()
                .await
                .map_err(|e| Error::Internal(format!("listing the image store: {e}")))?
            {
                let path = meta.location.to_string();
                objects.push(StoredObject {
                    key: image_key_of(&path),
                    path,
                    bytes: meta.size,
                    modified_secs: meta.last_modified.timestamp(),
                });
            }
        }
        Ok(objects)
    }

    /// Writes, reads back and deletes a small object of its own (outside the image keys'
    /// names, and a fresh name per probe, so that instances sharing the store never read or
    /// delete each other's): can the store take images now?
    pub async fn probe(&self) -> Result<()> {
        let mut nonce = [0_u8; 8];
        getrandom::fill(&mut nonce).map_err(|e| Error::Internal(format!("random source: {e}")))?;
        let name = format!("{PROBE_PREFIX}{}", hex::encode(nonce));
        let path = ObjectPath::from(name.as_str());
        let written = Bytes::from_static(b"imgproxy readiness probe");
        self.inner
            .put(&path, PutPayload::from_bytes(written.clone()))
            .await
            .map_err(|e| Error::Internal(format!("writing {path}: {e}")))?;
        let read = self
            .inner
            .get(&path)
            .await
            .map_err(|e| Error::Internal(format!("reading {path}: {e}")))?
            .bytes()
            .await
            .map_err(|e| Error::Internal(format!("reading {path}: {e}")))?;
        if read != written {
            return Err(Error::Internal(format!("{path} read back other bytes")));
        }
        self.delete(&name).await
    }

    /// Deletes the object at `path` (from [`ImageStore::objects`]), and its copy in memory.
    pub async fn delete(&self, path: &str) -> Result<()> {
        self.hot().remove(path);
        match self.inner.delete(&ObjectPath::from(path)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(Error::Internal(format!("deleting {path}: {e}"))),
        }
    }

    async fn read(&self, path: &ObjectPath) -> Result<Option<Bytes>> {
        if let Some(bytes) = self.hot().get(path.as_ref()) {
            return Ok(Some(bytes));
        }
        let bytes = match self.inner.get(path).await {
            Ok(result) => result
                .bytes()
                .await
                .map_err(|e| Error::Internal(format!("reading {path}: {e}")))?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(Error::Internal(format!("reading {path}: {e}"))),
        };
        self.hot().insert(path.as_ref(), &bytes);
        Ok(Some(bytes))
    }
}

/// Writes `bytes` at `path` in the local folder `local`, past the page cache on Linux.
async fn write_local(local: &Arc<LocalFileSystem>, path: &ObjectPath, bytes: Bytes) -> Result<()> {
    let failed = |e: &dyn std::fmt::Display| Error::Internal(format!("storing {path}: {e}"));
    #[cfg(target_os = "linux")]
    {
        let file = local.path_to_filesystem(path).map_err(|e| failed(&e))?;
        tokio::task::spawn_blocking(move || direct::write(&file, &bytes))
            .await
            .map_err(|e| failed(&e))?
            .map_err(|e| failed(&e))
    }
    #[cfg(not(target_os = "linux"))]
    local
        .put(path, PutPayload::from_bytes(bytes))
        .await
        .map(drop)
        .map_err(|e| failed(&e))
}

/// One object of the store, as retention sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    /// Its path in the backend.
    pub path: String,
    /// The image key it holds or was converted from (`None` for a path this store does not
    /// make).
    pub key: Option<String>,
    /// Size in bytes.
    pub bytes: u64,
    /// Last written, Unix seconds.
    pub modified_secs: i64,
}

/// The image key behind an object path: `images/ab/<key>`, or `derived/ab/<key>.<ext>` for a
/// kept conversion of it.
fn image_key_of(path: &str) -> Option<String> {
    let name = path.rsplit('/').next()?;
    let key = if path.starts_with("derived/") {
        name.rsplit_once('.')?.0
    } else {
        name
    };
    mime_of_key(key).map(|_| key.to_owned())
}

/// Images sit under `images/ab/` (the first two hex digits) to keep folders small.
fn object_path(key: &str) -> Result<ObjectPath> {
    let prefix = key
        .get(..2)
        .ok_or_else(|| Error::Internal(format!("bad image key {key}")))?;
    Ok(ObjectPath::from(format!("images/{prefix}/{key}")))
}

/// The MIME type of a well-formed key (`<64 hex>.<ext>`).
pub fn mime_of_key(key: &str) -> Option<&'static str> {
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
    async fn conversions_are_made_once_and_kept_beside_the_image() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::local(dir.path()).unwrap();
        let mut png = std::io::Cursor::new(Vec::new());
        image::RgbImage::new(4, 2)
            .write_to(&mut png, image::ImageFormat::Png)
            .unwrap();
        let key = store
            .put(Bytes::from(png.into_inner()), "image/png")
            .await
            .unwrap();
        let (jpeg, location) = store
            .converted(&key, RasterFormat::Jpeg)
            .await
            .unwrap()
            .unwrap();
        assert!(jpeg.starts_with(&[0xFF, 0xD8]));
        assert_eq!(location, format!("derived/{}/{key}.jpg", &key[..2]));
        assert!(dir.path().join(&location).is_file());
        let (again, _) = store
            .converted(&key, RasterFormat::Jpeg)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(again, jpeg);
        let missing = format!("{}.png", "0".repeat(64));
        assert!(store
            .converted(&missing, RasterFormat::Jpeg)
            .await
            .unwrap()
            .is_none());
        assert_eq!(
            store.location(&key).unwrap(),
            format!("images/{}/{key}", &key[..2])
        );
    }

    #[test]
    fn the_memory_cache_keeps_to_its_budget_and_drops_the_least_recent() {
        let image = |n: usize| Bytes::from(vec![0_u8; n]);
        // Room for four 25-byte images with their one-letter paths and overhead.
        let entry = HotImages::cost("a", &image(25));
        let mut hot = HotImages::new(4 * entry);
        hot.insert("a", &image(25));
        hot.insert("b", &image(25));
        hot.insert("c", &image(26)); // over a quarter of the budget: not kept
        assert!(hot.get("c").is_none());
        hot.insert("c", &image(25));
        assert!(hot.get("a").is_some()); // `a` is now the most recent
        hot.insert("d", &image(25));
        hot.insert("e", &image(25));
        assert_eq!(hot.bytes, 4 * entry);
        assert!(hot.get("b").is_none() && hot.get("a").is_some());
        // Small images are counted with their overhead: a budget of 1,000 bytes holds no
        // hundred one-byte images.
        let mut small = HotImages::new(1000);
        for n in 0..100 {
            small.insert(&format!("p{n}"), &image(1));
        }
        assert!(small.bytes <= 1000 && small.entries.len() < 10);
        let mut off = HotImages::new(0);
        off.insert("a", &image(1));
        assert!(off.get("a").is_none());
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
