//! Accounting overhead per request: the same generation through the real router (in process,
//! no sockets) unmetered, metered on SQLite, and metered on Postgres.
//!
//! Method: the placeholder model at 64x64 (so that the upstream side is small and constant),
//! `WARMUP` requests, then `REQUESTS` sequential requests per configuration, timed one by one;
//! then the same number spread over `CONCURRENCY` concurrent clients, timed as a whole. The
//! report gives the median and p95 per request, the throughput, and each metered
//! configuration's ratio to the unmetered run measured in the same process — compare ratios,
//! not absolute times, on shared machines.
//!
//! Run: `cargo bench -p imgproxy-server --bench accounting` (Postgres at
//! `IMGPROXY_BENCH_POSTGRES`, default `postgres://postgres@127.0.0.1:5432/test`; each run uses
//! a fresh schema; skipped with a note if Postgres is unreachable).

#![expect(
    clippy::print_stdout,
    clippy::unwrap_used,
    reason = "a benchmark reports and fails loudly"
)]

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    body::Body,
    http::{header, Request, StatusCode},
    Router,
};
use http_body_util::BodyExt as _;
use imgproxy_core::{
    service::{db::NewKey, Database, ImageStore, Service},
    Catalog, Gateway,
};
use imgproxy_provider_placeholder::PlaceholderProvider;
use imgproxy_server::{build_app, state::UrlApi, AppState};
use tower::ServiceExt as _;

const WARMUP: usize = 30;
const REQUESTS: usize = 400;
const CONCURRENCY: usize = 8;
const BODY: &str = r#"{"model": "placeholder", "prompt": "bench", "size": "64x64"}"#;

/// The router with the cache off: every request generates, so each metered one is charged.
fn router(accounts: Database, images: &std::path::Path) -> Router {
    let gateway = Gateway::builder(Catalog::embedded().unwrap())
        .provider(Arc::new(PlaceholderProvider::new()))
        .build();
    let store = ImageStore::local(images).unwrap();
    build_app(AppState {
        service: Arc::new(Service::new(
            gateway,
            store,
            "http://bench/images/",
            accounts,
        )),
        tasks: None,
        limits: Arc::default(),
        master_key: None,
        instance_id: "bench".into(),
        max_body_bytes: 1 << 20,
        public_url: "http://bench".into(),
        url_api: Arc::new(UrlApi {
            cache_enabled: false,
            ..UrlApi::default()
        }),
        cors: Arc::default(),
        metrics: None,
        recorder: None,
        key_labels: false,
        upstreams: Arc::default(),
        responses_image_model: None,
    })
}

async fn call(router: &Router, key: Option<&str>) {
    let mut request =
        Request::post("/v1/images/generations").header(header::CONTENT_TYPE, "application/json");
    if let Some(key) = key {
        request = request.header(header::AUTHORIZATION, format!("Bearer {key}"));
    }
    let response = router
        .clone()
        .oneshot(request.body(Body::from(BODY)).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.into_body().collect().await.unwrap();
}

struct Report {
    median: Duration,
    p95: Duration,
    per_second: f64,
}

async fn measure(router: &Router, key: Option<&str>) -> Report {
    for _ in 0..WARMUP {
        call(router, key).await;
    }
    let mut times = Vec::with_capacity(REQUESTS);
    for _ in 0..REQUESTS {
        let started = Instant::now();
        call(router, key).await;
        times.push(started.elapsed());
    }
    times.sort();
    let started = Instant::now();
    let clients: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let router = router.clone();
            let key = key.map(str::to_owned);
            tokio::spawn(async move {
                for _ in 0..REQUESTS / CONCURRENCY {
                    call(&router, key.as_deref()).await;
                }
            })
        })
        .collect();
    for client in clients {
        client.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    Report {
        median: times[times.len() / 2],
        p95: times[times.len() * 95 / 100],
        per_second: (REQUESTS / CONCURRENCY * CONCURRENCY) as f64 / elapsed,
    }
}

async fn metered(accounts: Database, images: &std::path::Path) -> (Router, String) {
    let key = NewKey {
        name: "bench".into(),
        credits: 1_000_000,
        ..NewKey::default()
    };
    let secret = accounts.create_key(key).await.unwrap().secret;
    (router(accounts, images), secret)
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Database::connect(&format!(
        "sqlite://{}",
        dir.path().join("bench.db").display()
    ))
    .await
    .unwrap();
    let images = dir.path().join("images");

    let open = measure(&router(sqlite.clone(), &images), None).await;
    let baseline = open.median;
    let (router_sqlite, key) = metered(sqlite, &images).await;
    let mut rows = vec![
        ("unmetered", open),
        ("metered, SQLite", measure(&router_sqlite, Some(&key)).await),
    ];

    let postgres_url = std::env::var("IMGPROXY_BENCH_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let schema = format!("bench_{}", std::process::id());
    match Database::connect_postgres_schema(&postgres_url, &schema).await {
        Ok(postgres) => {
            let (router_pg, key) = metered(postgres, &images).await;
            rows.push(("metered, Postgres", measure(&router_pg, Some(&key)).await));
        }
        Err(error) => println!("Postgres skipped: {error}"),
    }

    println!("{REQUESTS} requests each (sequential: median, p95; then {CONCURRENCY} concurrent clients: throughput)");
    println!(
        "{:<20} {:>12} {:>12} {:>12} {:>14}",
        "configuration", "median", "p95", "req/s", "median ratio"
    );
    for (name, report) in &rows {
        let Report {
            median,
            p95,
            per_second,
        } = report;
        let ratio = median.as_secs_f64() / baseline.as_secs_f64();
        println!("{name:<20} {median:>12.2?} {p95:>12.2?} {per_second:>12.0} {ratio:>13.2}x");
    }
}
