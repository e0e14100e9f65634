//! The routes behind the web UI, in process (`build_app` + `oneshot`): the console's admin
//! listings answer the master key only (401 without a key, 403 for an issued one, both in
//! OpenAI's envelope), the history lists the calling key's charges and no one else's, each
//! with images that load, the estimate prices without charging, and the pages themselves
//! hold no data and carry a strict content-security policy.

#![expect(clippy::unwrap_used, reason = "test helpers fail loudly")]

use std::{sync::Arc, time::Duration};

use axum::{
    body::Body,
    http::{header, HeaderMap, Request, StatusCode},
    Router,
};
use http_body_util::BodyExt as _;
use imgproxy_core::{
    service::{signing::UrlSigner, Database, ImageStore, Service},
    Catalog, Gateway,
};
use imgproxy_provider_placeholder::PlaceholderProvider;
use imgproxy_server::{build_app, AppState};
use secrecy::SecretString;
use serde_json::{json, Value};
use tower::ServiceExt as _;

const MASTER: &str = "master-key-for-tests";
const PUBLIC_URL: &str = "http://ui.test";

struct TestApp {
    router: Router,
    _dir: tempfile::TempDir,
}

/// The router with the placeholder model, a master key, a SQLite database and a URL signer;
/// metrics from a recorder of its own (not installed: the facade stays untouched).
async fn app() -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("imgproxy.db").display());
    let accounts = Database::connect(&database).await.unwrap();
    let gateway = Gateway::builder(Catalog::embedded().unwrap())
        .provider(Arc::new(PlaceholderProvider::new()))
        .build();
    let store = ImageStore::local(&dir.path().join("images")).unwrap();
    let service = Service::new(gateway, store, format!("{PUBLIC_URL}/images/"), accounts)
        .with_url_signer(UrlSigner::new(&[3; 32]).unwrap(), Duration::from_secs(60));
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
        .build_recorder()
        .handle();
    let state = AppState {
        service: Arc::new(service),
        tasks: None,
        limits: Arc::default(),
        master_key: Some(Arc::new(SecretString::from(MASTER.to_owned()))),
        instance_id: "test-instance".into(),
        max_body_bytes: 1 << 20,
        public_url: PUBLIC_URL.into(),
        url_api: Arc::default(),
        cors: Arc::default(),
        metrics: None,
        recorder: Some(recorder),
        key_labels: false,
        upstreams: Arc::default(),
        responses_image_model: None,
    };
    TestApp {
        router: build_app(state),
        _dir: dir,
    }
}

async fn send(app: &TestApp, request: Request<Body>) -> (StatusCode, HeaderMap, Vec<u8>) {
    let response = app.router.clone().oneshot(request).await.unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, body.to_vec())
}

fn request(method: &str, path: &str, key: Option<&str>, body: Option<Value>) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(path);
    if let Some(key) = key {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {key}"));
    }
    match body {
        Some(body) => builder
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string())),
        None => builder.body(Body::empty()),
    }
    .unwrap()
}

/// The JSON answer of a request that must succeed.
async fn ok(app: &TestApp, request: Request<Body>) -> Value {
    let (status, _, body) = send(app, request).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

/// The inner error of a refusal with `status`, checked to be OpenAI's envelope.
async fn refused(app: &TestApp, request: Request<Body>, status: StatusCode) -> Value {
    let (got, _, body) = send(app, request).await;
    assert_eq!(got, status, "{}", String::from_utf8_lossy(&body));
    let value: Value = serde_json::from_slice(&body).unwrap();
    let mut keys: Vec<_> = value["error"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    keys.sort();
    assert_eq!(keys, ["code", "message", "param", "type"]);
    value["error"].clone()
}

/// Issues a key with `credits`; its secret.
async fn issue(app: &TestApp, name: &str, credits: i64) -> String {
    let body = json!({"name": name, "credits": credits});
    let request = request("POST", "/v1/admin/keys", Some(MASTER), Some(body));
    let (status, _, body) = send(app, request).await;
    assert_eq!(status, StatusCode::CREATED);
    serde_json::from_slice::<Value>(&body).unwrap()["secret"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn generate(app: &TestApp, key: &str, prompt: &str, n: u32) {
    let body = json!({"model": "placeholder", "prompt": prompt, "size": "64x64", "n": n});
    let request = request("POST", "/v1/images/generations", Some(key), Some(body));
    ok(app, request).await;
}

/// Asserts that every URL in `urls` serves a stored PNG.
async fn assert_images_load(app: &TestApp, urls: &Value) {
    for url in urls.as_array().unwrap() {
        let path = url.as_str().unwrap().strip_prefix(PUBLIC_URL).unwrap();
        let (status, headers, body) = send(app, request("GET", path, None, None)).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(headers[header::CONTENT_TYPE], "image/png");
        assert!(body.starts_with(b"\x89PNG"));
    }
}

const ADMIN_LISTINGS: [&str; 4] = [
    "/v1/admin/ledger",
    "/v1/admin/tasks",
    "/v1/admin/webhooks",
    "/v1/admin/summary",
];

#[tokio::test]
async fn the_console_routes_answer_the_master_key_only() {
    let app = app().await;
    let issued = issue(&app, "tenant", 5).await;
    for path in ADMIN_LISTINGS {
        let error = refused(
            &app,
            request("GET", path, None, None),
            StatusCode::UNAUTHORIZED,
        )
        .await;
        assert_eq!(error["code"], "invalid_api_key", "{path}");
        let error = refused(
            &app,
            request("GET", path, Some(&issued), None),
            StatusCode::FORBIDDEN,
        )
        .await;
        assert!(
            error["message"].as_str().unwrap().contains("master key"),
            "{path}: {error}"
        );
        let answer = ok(&app, request("GET", path, Some(MASTER), None)).await;
        let object = answer["object"].as_str().unwrap();
        assert!(object == "list" || object == "summary", "{path}: {answer}");
    }
    // Bad filters are 400s naming them.
    for (path, param) in [
        ("/v1/admin/ledger?kind=bonus", "kind"),
        ("/v1/admin/ledger?limit=0", "limit"),
        ("/v1/admin/tasks?status=lost", "status"),
        ("/v1/admin/webhooks?status=lost", "status"),
        ("/v1/admin/webhooks?limit=501", "limit"),
    ] {
        let error = refused(
            &app,
            request("GET", path, Some(MASTER), None),
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert_eq!(error["param"], param, "{path}");
    }
}

#[tokio::test]
async fn the_history_lists_the_calling_keys_charges_only() {
    let app = app().await;
    let (alice, bob) = (issue(&app, "alice", 20).await, issue(&app, "bob", 20).await);
    generate(&app, &alice, "a fox", 2).await;
    generate(&app, &alice, "a heron", 1).await;
    generate(&app, &bob, "a fox", 1).await;

    let mine = ok(&app, request("GET", "/v1/generations", Some(&alice), None)).await;
    let items = mine["data"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{mine}");
    assert_eq!(
        (
            items[0]["credits_used"].clone(),
            items[1]["credits_used"].clone()
        ),
        (json!(1), json!(2)),
        "newest first"
    );
    assert_eq!(items[1]["images"].as_array().unwrap().len(), 2);
    assert_eq!(items[0]["model"], "placeholder");
    assert_eq!(items[0]["surface"], "/v1/images/generations");
    assert_eq!(items[0]["balance_after"], 17);
    for item in items {
        assert_images_load(&app, &item["images"]).await;
    }
    // Bob sees his one charge, never Alice's.
    let theirs = ok(&app, request("GET", "/v1/generations", Some(&bob), None)).await;
    assert_eq!(theirs["data"].as_array().unwrap().len(), 1);
    assert_ne!(theirs["data"][0]["id"], items[0]["id"]);
    assert_ne!(theirs["data"][0]["id"], items[1]["id"]);

    // Paged by `before`, bounded by `limit`.
    let older = format!("/v1/generations?before={}", items[0]["id"]);
    let page = ok(&app, request("GET", &older, Some(&alice), None)).await;
    assert_eq!(page["data"].as_array().unwrap().len(), 1);
    assert_eq!(page["data"][0]["id"], items[1]["id"]);
    let one = ok(
        &app,
        request("GET", "/v1/generations?limit=1", Some(&alice), None),
    )
    .await;
    assert_eq!(one["data"].as_array().unwrap().len(), 1);
    for limit in ["0", "101"] {
        let path = format!("/v1/generations?limit={limit}");
        let error = refused(
            &app,
            request("GET", &path, Some(&alice), None),
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert_eq!(error["param"], "limit");
    }
    // The master key is not metered: no history. No key: no answer.
    refused(
        &app,
        request("GET", "/v1/generations", Some(MASTER), None),
        StatusCode::FORBIDDEN,
    )
    .await;
    refused(
        &app,
        request("GET", "/v1/generations", None, None),
        StatusCode::UNAUTHORIZED,
    )
    .await;
}

#[tokio::test]
async fn the_admin_ledger_shows_each_charge_with_its_images() {
    let app = app().await;
    let alice = issue(&app, "alice", 10).await;
    let bob = issue(&app, "bob", 10).await;
    generate(&app, &alice, "a lighthouse", 2).await;
    generate(&app, &bob, "a lighthouse", 1).await;

    let settles = ok(
        &app,
        request("GET", "/v1/admin/ledger?kind=settle", Some(MASTER), None),
    )
    .await;
    let rows = settles["data"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{settles}");
    assert!(rows.iter().all(|r| r["kind"] == "settle"));
    assert_eq!(rows[0]["images"].as_array().unwrap().len(), 1);
    assert_eq!(rows[1]["images"].as_array().unwrap().len(), 2);
    assert_eq!(rows[1]["inputs"]["kept"], 2);
    // Store keys go out only as signed URLs: not in the rows' inputs, nor in a key's own
    // recent charges.
    assert!(rows.iter().all(|r| r["inputs"].get("images").is_none()));
    let credits = ok(&app, request("GET", "/v1/credits", Some(&alice), None)).await;
    let recent = credits["recent"].as_array().unwrap();
    assert!(recent.iter().any(|r| r["kind"] == "settle"), "{credits}");
    assert!(recent.iter().all(|r| r["inputs"].get("images").is_none()));
    for row in rows {
        assert_images_load(&app, &row["images"]).await;
    }
    // One key's rows: its credit, reserve and settle, newest first.
    let key_id = rows[1]["key_id"].as_str().unwrap();
    let path = format!("/v1/admin/ledger?key_id={key_id}");
    let own = ok(&app, request("GET", &path, Some(MASTER), None)).await;
    let kinds: Vec<&str> = own["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["settle", "reserve", "credit"]);

    let summary = ok(
        &app,
        request("GET", "/v1/admin/summary", Some(MASTER), None),
    )
    .await;
    assert_eq!(
        (summary["active_keys"].clone(), summary["balance"].clone()),
        (json!(2), json!(17))
    );
    // The recorder of this test is not installed, so it counted nothing; it is read all the same.
    assert_eq!(summary["instance"]["requests"], 0.0);
}

#[tokio::test]
async fn the_estimate_prices_and_refuses_like_a_generation_without_charging() {
    let app = app().await;
    let alice = issue(&app, "alice", 5).await;
    let body = json!({"model": "placeholder", "prompt": "p", "n": 3, "size": "512x512"});
    let estimate = ok(
        &app,
        request("POST", "/v1/images/estimate", Some(&alice), Some(body)),
    )
    .await;
    assert_eq!(
        (
            estimate["credits_per_image"].clone(),
            estimate["credits"].clone()
        ),
        (json!(1), json!(3))
    );
    let bad = json!({"model": "placeholder", "prompt": "p", "size": "65x64"});
    let error = refused(
        &app,
        request("POST", "/v1/images/estimate", Some(&alice), Some(bad)),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(error["param"], "size");
    // A key held to other models is refused the estimate as it would be the run.
    let body = json!({"name": "held", "credits": 5, "models": ["gpt-image-2"]});
    let (status, _, created) = send(
        &app,
        request("POST", "/v1/admin/keys", Some(MASTER), Some(body)),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let held = serde_json::from_slice::<Value>(&created).unwrap()["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let placeholder = json!({"model": "placeholder", "prompt": "p"});
    let error = refused(
        &app,
        request(
            "POST",
            "/v1/images/estimate",
            Some(&held),
            Some(placeholder),
        ),
        StatusCode::FORBIDDEN,
    )
    .await;
    assert!(error["message"].as_str().unwrap().contains("may not use"));
    // Nothing was charged.
    let credits = ok(&app, request("GET", "/v1/credits", Some(&alice), None)).await;
    assert_eq!(credits["balance"], 5);
}

#[tokio::test]
async fn the_pages_hold_no_data_and_carry_a_strict_policy() {
    let app = app().await;
    for path in ["/", "/playground", "/console"] {
        // No key needed: a page is the same for everyone.
        let (status, headers, body) = send(&app, request("GET", path, None, None)).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
        let policy = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(
            policy.contains("script-src 'self';") && !policy.contains("unsafe"),
            "{policy}"
        );
        assert!(policy.contains(&format!("img-src 'self' data: blob: {PUBLIC_URL};")));
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        let html = String::from_utf8(body).unwrap();
        assert!(!html.contains("ipk_") && !html.contains(MASTER));
    }
    let (status, headers, body) = send(&app, request("GET", "/ui/playground.js", None, None)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers[header::CONTENT_TYPE],
        "text/javascript; charset=utf-8"
    );
    assert!(String::from_utf8(body)
        .unwrap()
        .contains("/v1/images/estimate"));
    for path in [
        "/ui/secrets.js",
        "/ui/..%2Fapp.rs",
        "/playground/fox",
        "/console/x",
    ] {
        refused(
            &app,
            request("GET", path, None, None),
            StatusCode::NOT_FOUND,
        )
        .await;
    }
}
