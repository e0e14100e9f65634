//! `Service::serve` on SQLite and Postgres: cache hits without upstream calls or charges,
//! reroll, single-flight (across instances too, a dead instance's claim taken over as soon as
//! its lease expires), tenant isolation of cache, names and files, file ids as references, and
//! everything surviving a restart (a new service on the same database and store).

#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

#[path = "accounts_harness.rs"]
mod harness;

use std::{path::Path, sync::Arc, time::Duration};

use bytes::Bytes;
use harness::{fail_when_asked, fake::FakeProvider, one_image, Ctx};
use imgproxy_core::{
    service::{
        cache::{CacheMode, CacheStatus},
        metering::Meter,
        Call, Database, Service,
    },
    ImageInput, ImageProvider, ImageRequest,
};

/// Makes a distinct image per call (`call-<n>`, plus the references it saw), slowly enough
/// for concurrent requests to overlap; fails when the prompt says so.
fn counting() -> Arc<FakeProvider> {
    let provider = FakeProvider::new("counting", |n, call| {
        fail_when_asked(call)?;
        let mut bytes = format!("call-{n}").into_bytes();
        for reference in call.references {
            bytes.extend_from_slice(&reference.bytes);
        }
        Ok(one_image(bytes))
    });
    Arc::new(provider.after(Duration::from_millis(100)))
}

/// Holds every call until it is opened (never, here), then makes an image; counts calls.
fn gated() -> Arc<FakeProvider> {
    let provider = FakeProvider::new("counting", |_, _| {
        Ok(one_image(Bytes::from_static(b"gated")))
    });
    Arc::new(provider.gated(0))
}

/// A service whose model `counted` the fake `provider` serves.
fn service(accounts: &Database, images: &Path, provider: Arc<dyn ImageProvider>) -> Service {
    harness::service_for(accounts, images, "counted", provider)
}

fn request(prompt: &str) -> ImageRequest {
    ImageRequest::new("counted", prompt)
}

fn call(tenant: &str) -> Call<'_> {
    Call {
        tenant,
        ..Call::default()
    }
}

on_both_backends!(
    hits_and_rerolls,
    single_flight,
    tenants_are_isolated,
    metered_hits_are_free,
    across_instances,
    dead_instances_claims_fall,
    its_own_urls_are_references,
);

/// An image URL this service handed out, sent back as a reference (a chat client editing the
/// image it was answered with), is read from the store, not fetched; an altered one is refused.
async fn its_own_urls_are_references(ctx: &Ctx) {
    let dir = tempfile::tempdir().unwrap();
    let provider = counting();
    let signer = imgproxy_core::service::signing::UrlSigner::new(&[7; 32]).unwrap();
    let service = service(&ctx.accounts, dir.path(), provider.clone())
        .with_url_signer(signer, Duration::from_secs(60));
    let first = service.serve(call("alice"), request("fox")).await.unwrap();
    let url = service.image_url(&first.images[0].key);
    let mut edit = request("fox in snow");
    edit.images = Some(vec![ImageInput::Text(url.clone())]);
    let edited = service.serve(call("alice"), edit).await.unwrap();
    assert!(edited.images[0].bytes.ends_with(&first.images[0].bytes));
    let mut altered = request("fox in rain");
    altered.images = Some(vec![ImageInput::Text(url.replace("sig=", "sig=0"))]);
    let error = service.serve(call("alice"), altered).await.unwrap_err();
    assert_eq!((error.status(), error.param()), (400, Some("image")));
}

async fn hits_and_rerolls(ctx: &Ctx) {
    let dir = tempfile::tempdir().unwrap();
    let provider = counting();
    let service = service(&ctx.accounts, dir.path(), provider.clone());
    let first = service.serve(call(""), request("fox")).await.unwrap();
    assert_eq!(first.cache, CacheStatus::Miss);
    let again = service.serve(call(""), request("fox")).await.unwrap();
    assert_eq!(again.cache, CacheStatus::Hit);
    assert_eq!(again.images, first.images);
    assert_eq!(provider.calls(), 1);

    let reroll = Call {
        cache: CacheMode::Refresh,
        ..call("")
    };
    let rerolled = service.serve(reroll, request("fox")).await.unwrap();
    assert_eq!(rerolled.cache, CacheStatus::Miss);
    assert_ne!(rerolled.images[0].bytes, first.images[0].bytes);
    // The reroll replaced the entry, and the next plain request gets the new image.
    let after = service.serve(call(""), request("fox")).await.unwrap();
    assert_eq!(
        (after.cache, &after.images[0].bytes),
        (CacheStatus::Hit, &rerolled.images[0].bytes)
    );
    // A failure is not cached.
    assert!(service.serve(call(""), request("fail")).await.is_err());
    assert!(service.serve(call(""), request("fail")).await.is_err());
    assert_eq!(provider.calls(), 4);

    // A restart: a new service on the same database and store still has the entry.
    let restarted = service_on(ctx, dir.path()).await;
    let hit = restarted.serve(call(""), request("fox")).await.unwrap();
    assert_eq!(
        (hit.cache, &hit.images[0].bytes),
        (CacheStatus::Hit, &rerolled.images[0].bytes)
    );
}

async fn service_on(ctx: &Ctx, images: &Path) -> Service {
    service(&ctx.second_pool().await, images, counting())
}

async fn single_flight(ctx: &Ctx) {
    let dir = tempfile::tempdir().unwrap();
    let provider = counting();
    let service = Arc::new(service(&ctx.accounts, dir.path(), provider.clone()));
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let service = service.clone();
            tokio::spawn(async move { service.serve(call(""), request("owl")).await })
        })
        .collect();
    let mut misses = 0;
    let mut images = Vec::new();
    for task in tasks {
        let served = task.await.unwrap().unwrap();
        misses += usize::from(served.cache == CacheStatus::Miss);
        images.push(served.images[0].bytes.clone());
    }
    assert_eq!(provider.calls(), 1);
    assert_eq!(misses, 1);
    assert!(images.iter().all(|i| *i == images[0]));
}

async fn tenants_are_isolated(ctx: &Ctx) {
    let dir = tempfile::tempdir().unwrap();
    let provider = counting();
    let service = service(&ctx.accounts, dir.path(), provider.clone());
    let named = Call {
        name: Some("hero"),
        ..call("alice")
    };
    let alice = service.serve(named, request("bottle")).await.unwrap();
    let bob = service.serve(call("bob"), request("bottle")).await.unwrap();
    assert_eq!(
        bob.cache,
        CacheStatus::Miss,
        "bob must not see alice's cache"
    );
    assert_eq!(provider.calls(), 2);

    let (recalled, image) = service.recall("alice", "hero").await.unwrap().unwrap();
    assert_eq!(image.bytes, alice.images[0].bytes);
    assert_eq!(recalled.upstream_model, "placeholder");
    assert!(service.recall("bob", "hero").await.unwrap().is_none());
    assert!(service.recall("alice", "villain").await.unwrap().is_none());
    let bad_name = Call {
        name: Some("../x"),
        ..call("alice")
    };
    let error = service.serve(bad_name, request("x")).await.unwrap_err();
    assert_eq!(error.param(), Some("filename"));

    // Files: alice's upload is a reference for alice, an unknown file for bob.
    let store = service.store();
    let key = store
        .put(Bytes::from_static(b"\x89PNG-ref"), "image/png")
        .await
        .unwrap();
    let records = service.db();
    let file = records
        .create_file("alice", "ref.png", "vision", 8, &key)
        .await
        .unwrap();
    assert!(file.id.starts_with("file-"));
    let mut with_file = request("bottle");
    with_file.images = Some(vec![ImageInput::FileId {
        file_id: file.id.clone(),
    }]);
    let served = service
        .serve(call("alice"), with_file.clone())
        .await
        .unwrap();
    assert_eq!(
        served.cache,
        CacheStatus::Miss,
        "a reference changes the key"
    );
    assert!(served.images[0].bytes.ends_with(b"\x89PNG-ref"));
    let error = service.serve(call("bob"), with_file).await.unwrap_err();
    assert_eq!((error.status(), error.param()), (400, Some("image")));
    assert_eq!(records.files("alice", 10).await.unwrap().len(), 1);
    assert!(records.files("bob", 10).await.unwrap().is_empty());
    assert!(!records.delete_file("bob", &file.id).await.unwrap());
    assert!(records.delete_file("alice", &file.id).await.unwrap());
    assert!(records.file("alice", &file.id).await.unwrap().is_none());
}

async fn metered_hits_are_free(ctx: &Ctx) {
    let dir = tempfile::tempdir().unwrap();
    let provider = counting();
    let service = service(&ctx.accounts, dir.path(), provider.clone());
    let key_id = ctx.key(5).await;
    let key = ctx.accounts.get_key(&key_id).await.unwrap();
    let metered = |request_id: &'static str| Call {
        tenant: &key.id,
        meter: Some(Meter {
            db: &ctx.accounts,
            key: &key,
            request_id,
            surface: None,
            owner: "test",
            delivered: None,
            task: None,
        }),
        ..Call::default()
    };
    let miss = service.serve(metered("r1"), request("cat")).await.unwrap();
    assert_eq!((miss.credits_used, miss.balance), (Some(1), Some(4)));
    let hit = service.serve(metered("r2"), request("cat")).await.unwrap();
    assert_eq!(
        (hit.cache, hit.credits_used, hit.balance),
        (CacheStatus::Hit, Some(0), Some(4))
    );
    assert!(service.serve(metered("r3"), request("fail")).await.is_err());
    assert_eq!(ctx.accounts.balance(&key.id).await.unwrap(), 4);
    assert_eq!(ctx.assert_ledger_adds_up(&key.id).await, 4);
}

async fn across_instances(ctx: &Ctx) {
    let dir = tempfile::tempdir().unwrap();
    let (one, two) = (counting(), counting());
    let first = Arc::new(service(&ctx.accounts, dir.path(), one.clone()));
    let second = Arc::new(service(&ctx.second_pool().await, dir.path(), two.clone()));
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let service = [&first, &second][i % 2].clone();
            tokio::spawn(async move { service.serve(call(""), request("heron")).await })
        })
        .collect();
    let mut images = Vec::new();
    for task in tasks {
        images.push(task.await.unwrap().unwrap().images[0].bytes.clone());
    }
    let calls = one.calls() + two.calls();
    assert_eq!(calls, 1, "two instances on one database generate once");
    assert!(images.iter().all(|i| *i == images[0]));
    // The claim was released: a reroll on either instance generates anew at once.
    let reroll = Call {
        cache: CacheMode::Refresh,
        ..call("")
    };
    second.serve(reroll, request("heron")).await.unwrap();
    let calls = one.calls() + two.calls();
    assert_eq!(calls, 2);
    // Every claim was released (the releases of dropped guards run in the background).
    tokio::time::sleep(Duration::from_millis(100)).await;
    let open_claims = ctx
        .count(
            "SELECT COUNT(*) FROM generation_claims WHERE tenant = $1",
            "",
        )
        .await;
    assert_eq!(open_claims, 0);
}

async fn dead_instances_claims_fall(ctx: &Ctx) {
    let dir = tempfile::tempdir().unwrap();
    let hour = Duration::from_secs(3600);
    ctx.accounts.join_instance("inst-a", hour).await.unwrap();
    ctx.accounts.join_instance("inst-b", hour).await.unwrap();
    let stuck = gated();
    let a = Arc::new(service(&ctx.accounts, dir.path(), stuck.clone()).with_instance("inst-a"));
    let fresh = counting();
    let b = Arc::new(
        service(&ctx.second_pool().await, dir.path(), fresh.clone()).with_instance("inst-b"),
    );

    // A generates, its upstream stuck, holding the claim.
    let held = tokio::spawn({
        let a = a.clone();
        async move { a.serve(call(""), request("kite")).await }
    });
    while stuck.calls() == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // B's identical request waits while A lives.
    let waiting = tokio::spawn({
        let b = b.clone();
        async move { b.serve(call(""), request("kite")).await }
    });
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        !waiting.is_finished(),
        "a live instance's claim was taken over"
    );
    assert_eq!(fresh.calls(), 0);

    // A dies (its lease ends): B takes the claim over at once, not after the model's deadline.
    ctx.accounts.leave_instance("inst-a").await.unwrap();
    let started = std::time::Instant::now();
    // (Timing out here means the dead instance's claim still blocks.)
    let served = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "taken over after {:?}",
        started.elapsed()
    );
    assert_eq!(served.cache, CacheStatus::Miss);
    assert_eq!(served.images[0].bytes, Bytes::from_static(b"call-0"));
    assert_eq!(fresh.calls(), 1);
    held.abort();
}
