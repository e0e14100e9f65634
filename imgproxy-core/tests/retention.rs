//! Retention on SQLite and Postgres: a sweep expires old cache entries, deletes the stored
//! objects nothing needs any more (by age, then oldest first down to the size limit), never
//! touches what a name, a file or a live cache entry points to, and never what is younger
//! than the grace period.

#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

#[path = "accounts_harness.rs"]
mod harness;

use std::{path::Path, time::Duration};

use bytes::Bytes;
use harness::Ctx;
use imgproxy_core::{
    clock::now_secs,
    service::{
        db::{CachedImage, CachedResult, NamedImage},
        retention::Retention,
        ImageStore, Service,
    },
    Catalog, Gateway,
};

const HOUR: i64 = 3600;

on_both_backends!(
    age_limit_spares_what_is_needed,
    size_limit_goes_oldest_first
);

fn service(ctx: &Ctx, dir: &Path) -> Service {
    let gateway = Gateway::builder(Catalog::embedded().unwrap()).build();
    let store = ImageStore::local(dir).unwrap();
    Service::new(gateway, store, "http://test/images/", ctx.accounts.clone())
}

/// Stores distinct bytes of `len` and dates the object `age_secs` back.
async fn put(service: &Service, dir: &Path, seed: u8, len: usize, age_secs: i64) -> String {
    let mut bytes = vec![seed; len];
    bytes[0] = 0x89; // not an image, but the store keys by content and declared type
    let key = service
        .store()
        .put(Bytes::from(bytes), "image/png")
        .await
        .unwrap();
    let path = dir.join(format!("images/{}/{key}", &key[..2]));
    let when = std::time::SystemTime::now() - Duration::from_secs(age_secs.unsigned_abs());
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(when)
        .unwrap();
    key
}

async fn exists(service: &Service, key: &str) -> bool {
    service.store().get(key).await.unwrap().is_some()
}

fn cached(key: &str) -> CachedResult {
    CachedResult {
        images: vec![CachedImage {
            key: key.to_owned(),
            mime: "image/png".into(),
            revised_prompt: None,
        }],
        ..CachedResult::default()
    }
}

async fn age_limit_spares_what_is_needed(ctx: &Ctx) {
    let dir = tempfile::tempdir().unwrap();
    let service = service(ctx, dir.path());
    let db = service.db();
    let named = put(&service, dir.path(), 1, 64, 0).await;
    let filed = put(&service, dir.path(), 2, 64, 0).await;
    let in_cache = put(&service, dir.path(), 3, 64, 0).await;
    let orphan = put(&service, dir.path(), 4, 64, 0).await;
    let image = NamedImage {
        image_key: named.clone(),
        model: "placeholder".into(),
        upstream_model: "placeholder".into(),
        updated_at: now_secs(),
    };
    db.name_image("t", "hero", &image).await.unwrap();
    db.create_file("t", "a.png", "vision", 64, &filed)
        .await
        .unwrap();
    db.cache("t", "k1", "placeholder", &cached(&in_cache))
        .await
        .unwrap();
    let retention = Retention {
        max_age: Some(Duration::from_secs(3600)),
        max_bytes: None,
    };

    // Within the grace period nothing goes, even what nothing needs.
    let report = service.sweep(&retention).await.unwrap();
    assert_eq!((report.objects, report.cache_entries), (0, 0));
    assert!(exists(&service, &orphan).await);

    // Half an hour on: past the grace period, but nothing is older than the age limit yet.
    let report = service
        .sweep_as_of(&retention, now_secs() + HOUR / 2)
        .await
        .unwrap();
    assert_eq!((report.objects, report.cache_entries), (0, 0));

    // Two hours on: the cache entry has expired; its image and the orphan go, the named image
    // and the uploaded file stay.
    let report = service
        .sweep_as_of(&retention, now_secs() + 2 * HOUR)
        .await
        .unwrap();
    assert_eq!((report.cache_entries, report.objects), (1, 2));
    assert_eq!(report.bytes, 128);
    assert!(db.cached("t", "k1").await.unwrap().is_none());
    assert!(!exists(&service, &in_cache).await && !exists(&service, &orphan).await);
    assert!(exists(&service, &named).await && exists(&service, &filed).await);
}

async fn size_limit_goes_oldest_first(ctx: &Ctx) {
    let dir = tempfile::tempdir().unwrap();
    let service = service(ctx, dir.path());
    let oldest = put(&service, dir.path(), 1, 100, 5 * HOUR).await;
    let older = put(&service, dir.path(), 2, 100, 4 * HOUR).await;
    let newer = put(&service, dir.path(), 3, 100, 3 * HOUR).await;
    let needed = put(&service, dir.path(), 4, 100, 6 * HOUR).await;
    service
        .db()
        .cache("t", "k", "placeholder", &cached(&needed))
        .await
        .unwrap();
    let retention = Retention {
        max_age: None,
        max_bytes: Some(250),
    };
    let report = service.sweep(&retention).await.unwrap();
    // 400 bytes held; the needed image is the oldest but stays; two unneeded ones go.
    assert_eq!(
        (report.objects, report.bytes, report.remaining_bytes),
        (2, 200, 200)
    );
    assert!(!exists(&service, &oldest).await && !exists(&service, &older).await);
    assert!(exists(&service, &newer).await && exists(&service, &needed).await);
    // Under the limit now: a second sweep deletes nothing.
    assert_eq!(service.sweep(&retention).await.unwrap().objects, 0);
}
