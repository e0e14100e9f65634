//! `Idempotency-Key` on SQLite and Postgres: a retry with the same key answers the same images
//! without a second upstream call or charge; the same key with another request is a conflict;
//! a caller dropped mid-generation leaves it to finish, be charged once and answer the retry
//! (without a key, it is refunded); a failed first attempt frees its key; a key held longer
//! than the model's deadline is 409 in progress; keys expire after their window; keys are a
//! tenant's own.

#![expect(clippy::unwrap_used, clippy::panic, reason = "tests fail loudly")]

#[path = "accounts_harness.rs"]
mod harness;

use std::{future::Future, path::Path, sync::Arc, time::Duration};

use bytes::Bytes;
use harness::{fail_when_asked, fake::FakeProvider, one_image, Ctx};
use imgproxy_core::{
    service::{
        cache::CacheMode,
        db::{ApiKey, Remembered},
        idempotency::{fingerprint, Attempt, Begun, IdempotencyKey},
        metering::Meter,
        Call, Database, ImageStore, Served, Service,
    },
    Catalog, Error, Gateway, ImageProvider, ImageRequest,
};

/// Holds every call until it has a permit of its own, then makes `image-<n>`; fails when the
/// prompt says so. Open: with permits enough for any test.
fn gated_open() -> Arc<FakeProvider> {
    Arc::new(gated().gated(1000))
}

/// As [`gated_open`], but closed: each call waits for [`FakeProvider::open`].
fn gated_closed() -> Arc<FakeProvider> {
    Arc::new(gated().gated(0))
}

fn gated() -> FakeProvider {
    FakeProvider::new("counting", |n, call| {
        fail_when_asked(call)?;
        Ok(one_image(format!("image-{n}")))
    })
}

/// A service whose model `counted` (deadline `deadline_secs`) is made by `provider`.
fn service(
    db: &Database,
    images: &Path,
    provider: Arc<dyn ImageProvider>,
    deadline_secs: u64,
) -> Arc<Service> {
    let mut catalog = Catalog::embedded().unwrap();
    let mut model = (**catalog.resolve("placeholder", &|_| true).unwrap()).clone();
    model.id = "counted".into();
    model.provider = "counting".into();
    model.deadline_secs = Some(deadline_secs);
    catalog.upsert(model).unwrap();
    let gateway = Gateway::builder(catalog).provider(provider).build();
    Arc::new(Service::new(
        gateway,
        ImageStore::local(images).unwrap(),
        "http://test/images/",
        db.clone(),
    ))
}

fn request(prompt: &str) -> ImageRequest {
    ImageRequest::new("counted", prompt)
}

fn key(text: &str) -> IdempotencyKey {
    IdempotencyKey::parse(text.as_bytes()).unwrap()
}

/// Who pays: a key of its own, tenant of its own keys.
struct Payer {
    db: Database,
    key: ApiKey,
}

impl Payer {
    async fn new(ctx: &Ctx, credits: i64) -> Arc<Self> {
        let id = ctx.key(credits).await;
        Arc::new(Self {
            db: ctx.accounts.clone(),
            key: ctx.accounts.get_key(&id).await.unwrap(),
        })
    }

    /// Its call, charged under `request_id`, never from the cache (a replay is no cache hit).
    fn call<'a>(&'a self, request_id: &'a str) -> Call<'a> {
        Call {
            tenant: &self.key.id,
            meter: Some(Meter {
                db: &self.db,
                key: &self.key,
                request_id,
                surface: None,
                owner: "test",
                delivered: None,
                task: None,
            }),
            cache: CacheMode::Off,
            ..Call::default()
        }
    }

    async fn balance(&self) -> i64 {
        self.db.balance(&self.key.id).await.unwrap()
    }

    /// Begins `prompt` under `key` as this payer.
    async fn begin(
        &self,
        service: &Service,
        key: &IdempotencyKey,
        prompt: &str,
    ) -> Result<Begun, Error> {
        let asked = request(prompt);
        let fingerprint = fingerprint("generations sync", &asked).unwrap();
        service
            .begin_idempotent(&self.key.id, key, &fingerprint, &asked)
            .await
    }
}

/// One test's world: a service over `provider` (deadline `deadline_secs`), a payer with 5
/// credits, the key `order-1`, and the temp dir of the service's images.
async fn world(
    ctx: &Ctx,
    provider: Arc<FakeProvider>,
    deadline_secs: u64,
) -> (Arc<Service>, Arc<Payer>, IdempotencyKey, tempfile::TempDir) {
    let images = tempfile::tempdir().unwrap();
    let service = service(&ctx.accounts, images.path(), provider, deadline_secs);
    (service, Payer::new(ctx, 5).await, key("order-1"), images)
}

/// Runs `prompt` through `attempt`, detached, as `payer`.
fn run(
    service: &Arc<Service>,
    payer: &Arc<Payer>,
    attempt: Attempt,
    prompt: &str,
    request_id: &str,
) -> impl Future<Output = Result<Served, Error>> {
    let (service, payer, asked, request_id) = (
        service.clone(),
        payer.clone(),
        request(prompt),
        request_id.to_owned(),
    );
    attempt.run(async move { service.serve(payer.call(&request_id), asked).await })
}

fn ran(begun: Begun) -> Attempt {
    match begun {
        Begun::Run(attempt) => attempt,
        Begun::Replay(remembered) => panic!("expected a first run, got a replay of {remembered:?}"),
    }
}

fn replayed(begun: Begun) -> Remembered {
    match begun {
        Begun::Replay(remembered) => remembered,
        Begun::Run(_) => panic!("expected a replay, got a first run"),
    }
}

fn conflict_code(result: Result<Begun, Error>) -> &'static str {
    match result {
        Err(Error::Conflict { code, param, .. }) => {
            assert_eq!(param, "Idempotency-Key");
            code
        }
        other => panic!("expected a 409, got {other:?}"),
    }
}

on_both_backends!(
    replays_without_a_second_call_or_charge,
    another_request_with_the_key_conflicts,
    dropped_callers_finish_for_the_retry,
    a_failed_attempt_frees_its_key,
    a_held_key_is_in_progress_after_the_deadline,
    keys_expire_after_their_window,
);

async fn replays_without_a_second_call_or_charge(ctx: &Ctx) {
    let provider = gated_open();
    let (service, payer, k, _images) = world(ctx, provider.clone(), 30).await;
    let attempt = ran(payer.begin(&service, &k, "fox").await.unwrap());
    let first = run(&service, &payer, attempt, "fox", "r1").await.unwrap();
    assert_eq!((first.credits_used, first.balance), (Some(1), Some(4)));

    let remembered = replayed(payer.begin(&service, &k, "fox").await.unwrap());
    let again = service
        .replay(payer.call("r2"), request("fox"), &remembered)
        .await
        .unwrap();
    assert_eq!(again.images, first.images);
    assert_eq!((again.credits_used, again.balance), (Some(0), Some(4)));
    assert_eq!(service.response(&again).data, service.response(&first).data);
    assert_eq!(provider.calls(), 1);
    assert_eq!(ctx.assert_ledger_adds_up(&payer.key.id).await, 4);
}

async fn another_request_with_the_key_conflicts(ctx: &Ctx) {
    let provider = gated_open();
    let (service, alice, k, _images) = world(ctx, provider.clone(), 30).await;
    let bob = Payer::new(ctx, 5).await;
    let attempt = ran(alice.begin(&service, &k, "fox").await.unwrap());
    run(&service, &alice, attempt, "fox", "r1").await.unwrap();
    assert_eq!(
        conflict_code(alice.begin(&service, &k, "owl").await),
        "idempotency_key_reused"
    );
    // Another tenant's key of the same text is its own.
    let attempt = ran(bob.begin(&service, &k, "owl").await.unwrap());
    run(&service, &bob, attempt, "owl", "r2").await.unwrap();
    assert_eq!(provider.calls(), 2);
    // An invalid request is refused before it holds anything.
    let unknown = IdempotencyKey::parse(b"order-2").unwrap();
    let mut bad = request("fox");
    bad.n = Some(1000);
    let fingerprint = fingerprint("generations sync", &bad).unwrap();
    let refused = service
        .begin_idempotent(&alice.key.id, &unknown, &fingerprint, &bad)
        .await;
    assert!(
        matches!(refused, Err(Error::InvalidRequest { .. })),
        "{refused:?}"
    );
    ran(alice.begin(&service, &unknown, "owl").await.unwrap());
}

async fn dropped_callers_finish_for_the_retry(ctx: &Ctx) {
    let provider = gated_closed();
    let (service, payer, k, _images) = world(ctx, provider.clone(), 30).await;
    let attempt = ran(payer.begin(&service, &k, "fox").await.unwrap());
    // The client goes away while the upstream works.
    let first = run(&service, &payer, attempt, "fox", "r1");
    assert!(tokio::time::timeout(Duration::from_millis(300), first)
        .await
        .is_err());
    assert_eq!(provider.calls(), 1);
    // Its retry waits for the generation it left behind.
    let retry = tokio::spawn({
        let (service, payer, k) = (service.clone(), payer.clone(), k.clone());
        async move { payer.begin(&service, &k, "fox").await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!retry.is_finished());
    provider.open(1);
    let remembered = replayed(retry.await.unwrap().unwrap());
    let again = service
        .replay(payer.call("r2"), request("fox"), &remembered)
        .await
        .unwrap();
    assert_eq!(again.images[0].bytes, Bytes::from_static(b"image-0"));
    assert_eq!((again.credits_used, again.balance), (Some(0), Some(4)));
    assert_eq!(provider.calls(), 1);
    assert_eq!(ctx.assert_ledger_adds_up(&payer.key.id).await, 4);

    // Without a key, a caller that goes away is refunded.
    let plain = service.serve(payer.call("r3"), request("owl"));
    assert!(tokio::time::timeout(Duration::from_millis(300), plain)
        .await
        .is_err());
    provider.open(1);
    for _ in 0..50 {
        if payer.balance().await == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(ctx.assert_ledger_adds_up(&payer.key.id).await, 4);
}

async fn a_failed_attempt_frees_its_key(ctx: &Ctx) {
    let provider = gated_open();
    let (service, payer, k, _images) = world(ctx, provider.clone(), 30).await;
    let attempt = ran(payer.begin(&service, &k, "fail").await.unwrap());
    assert!(run(&service, &payer, attempt, "fail", "r1").await.is_err());
    assert_eq!(payer.balance().await, 5);
    // Refunded and not remembered: the retry runs again.
    let attempt = ran(payer.begin(&service, &k, "fail").await.unwrap());
    assert!(run(&service, &payer, attempt, "fail", "r2").await.is_err());
    assert_eq!(provider.calls(), 2);
    assert_eq!(ctx.assert_ledger_adds_up(&payer.key.id).await, 5);
}

async fn a_held_key_is_in_progress_after_the_deadline(ctx: &Ctx) {
    let (service, payer, k, _images) = world(ctx, gated_open(), 1).await;
    let held = ran(payer.begin(&service, &k, "fox").await.unwrap());
    assert_eq!(
        conflict_code(payer.begin(&service, &k, "fox").await),
        "idempotency_key_in_progress"
    );
    // An attempt dropped unrun frees its key.
    drop(held);
    for _ in 0..50 {
        match payer.begin(&service, &k, "fox").await {
            Ok(begun) => {
                ran(begun);
                return;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    panic!("the dropped attempt's key was never freed");
}

async fn keys_expire_after_their_window(ctx: &Ctx) {
    let (service, payer, k, _images) = world(ctx, gated_open(), 30).await;
    let service = Arc::new(
        Arc::into_inner(service)
            .unwrap()
            .with_idempotency_window(Duration::from_secs(1)),
    );
    let attempt = ran(payer.begin(&service, &k, "fox").await.unwrap());
    run(&service, &payer, attempt, "fox", "r1").await.unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    // Forgotten: the key is free for any request.
    let _held = ran(payer.begin(&service, &k, "owl").await.unwrap());
    let now = imgproxy_core::clock::now_secs();
    assert_eq!(
        ctx.accounts.expire_idempotency_keys(now + 1).await.unwrap(),
        1
    );
}

#[test]
fn keys_are_1_to_255_printable_ascii_characters() {
    for good in ["a", "order-1 retry/2", &"k".repeat(255)] {
        assert_eq!(
            IdempotencyKey::parse(good.as_bytes()).unwrap().as_str(),
            good
        );
    }
    for bad in [
        &b""[..],
        &[b'k'; 256][..],
        b"tab\there",
        "caf\u{e9}".as_bytes(),
        b"\x7f",
    ] {
        let error = IdempotencyKey::parse(bad).unwrap_err();
        assert_eq!(error.status(), 400);
        assert_eq!(error.param(), Some("Idempotency-Key"));
    }
}
