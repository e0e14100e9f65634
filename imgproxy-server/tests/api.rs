//! The HTTP surface in-process (`build_app` + `oneshot`): every error is OpenAI's envelope
//! with the right status, auth works, panics become 500s, URLs serve stored images.

#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers fail loudly"
)]

use std::{sync::Arc, time::Duration};

use axum::{
    body::Body,
    http::{header, Request, StatusCode},
    Router,
};
use http_body_util::BodyExt as _;
use imgproxy_core::{
    service::{db::NewKey, signing::UrlSigner, Database, ImageStore, Service},
    Catalog, Gateway, ProviderError,
};
use imgproxy_provider_placeholder::PlaceholderProvider;
use imgproxy_server::{build_app, AppState};
use imgproxy_testkit::fake::FakeProvider;
use secrecy::SecretString;
use serde_json::Value;
use tower::ServiceExt as _;

/// A provider that panics, to prove panics become OpenAI-shaped 500s.
fn panicking_provider() -> FakeProvider {
    FakeProvider::new("panicky", |_, _| panic!("boom with secret detail"))
}

/// A provider that counts its calls and fails them: the model it serves has no price, so a
/// metered request must be refused before it is ever called.
fn unpriced_provider() -> FakeProvider {
    FakeProvider::new("unpriced", |_, _| {
        Err(ProviderError::Failed {
            message: "the unpriced fake must not be called for metered keys".into(),
        })
    })
}

struct TestApp {
    router: Router,
    accounts: Database,
    unpriced: Arc<FakeProvider>,
    _dir: tempfile::TempDir,
}

async fn app(master_key: Option<&str>, max_body_bytes: usize) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut catalog = Catalog::embedded().unwrap();
    let mut panicky = (**catalog.resolve("placeholder", &|_| true).unwrap()).clone();
    panicky.id = "panicky".into();
    panicky.provider = "panicky".into();
    catalog.upsert(panicky.clone()).unwrap();
    let mut unpriced = panicky;
    unpriced.id = "unpriced".into();
    unpriced.provider = "unpriced".into();
    unpriced.pricing = None;
    catalog.upsert(unpriced).unwrap();
    let unpriced = Arc::new(unpriced_provider());
    let database = format!("sqlite://{}", dir.path().join("imgproxy.db").display());
    let accounts = Database::connect(&database).await.unwrap();
    let gateway = Gateway::builder(catalog)
        .provider(Arc::new(PlaceholderProvider::new()))
        .provider(Arc::new(panicking_provider()))
        .provider(unpriced.clone())
        .build();
    let store = ImageStore::local(dir.path()).unwrap();
    let service = Service::new(gateway, store, "http://test/images/", accounts.clone())
        .with_url_signer(UrlSigner::new(&[9; 32]).unwrap(), Duration::from_secs(60));
    let state = AppState {
        service: Arc::new(service),
        tasks: None,
        limits: Arc::default(),
        master_key: master_key.map(|k| Arc::new(SecretString::from(k.to_owned()))),
        instance_id: "test-instance".into(),
        max_body_bytes,
        public_url: "http://test".into(),
        url_api: Arc::default(),
        cors: Arc::default(),
        // A recorder of its own, not installed: the route is served, the facade untouched.
        metrics: Some(imgproxy_server::telemetry::metrics::Exposition {
            handle: metrics_exporter_prometheus::PrometheusBuilder::new()
                .build_recorder()
                .handle(),
            token: None,
        }),
        recorder: None,
        key_labels: false,
        upstreams: Arc::default(),
        responses_image_model: None,
    };
    TestApp {
        router: build_app(state),
        accounts,
        unpriced,
        _dir: dir,
    }
}

async fn send(
    app: &TestApp,
    request: Request<Body>,
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let response = app.router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, headers, body)
}

/// `request` with a JSON body.
fn with_json(request: axum::http::request::Builder, body: &str) -> Request<Body> {
    request
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap()
}

fn post_json(path: &str, body: &str) -> Request<Body> {
    with_json(Request::post(path), body)
}

/// A `GET` without a body.
fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

fn json(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap()
}

/// Asserts the status, showing the body when it is another.
fn assert_status(got: StatusCode, want: StatusCode, body: &[u8]) {
    assert_eq!(got, want, "{}", String::from_utf8_lossy(body));
}

/// Asserts an OpenAI error envelope with exactly its four keys, and returns the inner error.
fn envelope(body: &[u8]) -> Value {
    let value: Value = serde_json::from_slice(body)
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(body)));
    let error = value["error"].clone();
    let mut keys: Vec<_> = error.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, ["code", "message", "param", "type"]);
    error
}

/// Sends `request`, asserts the answer's status and OpenAI's error envelope, and returns the
/// inner error.
async fn refused(app: &TestApp, request: Request<Body>, status: StatusCode) -> Value {
    let (got, _, body) = send(app, request).await;
    assert_status(got, status, &body);
    envelope(&body)
}

/// Requests refused before a handler sees them, or that make one panic: each its status, one
/// field of its envelope, and never the panic's detail.
#[tokio::test]
async fn refusals_and_panics_are_envelopes() {
    let app = app(None, 1 << 20).await;
    let generations = "/v1/images/generations";
    let text = Request::post(generations).header(header::CONTENT_TYPE, "text/plain");
    let cases = [
        (
            post_json(generations, "{\"prompt\": "),
            StatusCode::BAD_REQUEST,
            Some(("type", "invalid_request_error")),
        ),
        (
            post_json(generations, r#"{"prompt": "p", "n": "two"}"#),
            StatusCode::BAD_REQUEST,
            Some(("param", "n")),
        ),
        (
            text.body(Body::from("{}")).unwrap(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Some(("code", "unsupported_media_type")),
        ),
        (
            Request::post(generations).body(Body::from("{}")).unwrap(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Some(("code", "unsupported_media_type")),
        ),
        (get("/v1/nope"), StatusCode::NOT_FOUND, None),
        (get(generations), StatusCode::METHOD_NOT_ALLOWED, None),
        (
            post_json(generations, r#"{"model": "panicky", "prompt": "p"}"#),
            StatusCode::INTERNAL_SERVER_ERROR,
            Some(("type", "server_error")),
        ),
    ];
    for (request, status, field) in cases {
        let what = format!("{} {}", request.method(), request.uri());
        let error = refused(&app, request, status).await;
        if let Some((name, value)) = field {
            assert_eq!(error[name], value, "{what}");
        }
        assert!(!error["message"].as_str().unwrap().contains("secret"));
    }
}

#[tokio::test]
async fn body_over_the_limit_is_413() {
    let app = app(None, 1024).await;
    let big = format!(r#"{{"prompt": "{}"}}"#, "x".repeat(4096));
    let request = post_json("/v1/images/generations", &big);
    let error = refused(&app, request, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert_eq!(error["code"], "payload_too_large");
}

#[tokio::test]
async fn master_key_is_required_when_set() {
    let app = app(Some("mk-123"), 1 << 20).await;
    assert_eq!(
        refused(&app, get("/v1/models"), StatusCode::UNAUTHORIZED).await["code"],
        "invalid_api_key"
    );
    let wrong = get_as("/v1/models", "mk-124");
    assert_eq!(send(&app, wrong).await.0, StatusCode::UNAUTHORIZED);
    let right = get_as("/v1/models", "mk-123");
    assert_eq!(send(&app, right).await.0, StatusCode::OK);
    // Health stays open for load balancers.
    assert_eq!(send(&app, get("/healthz")).await.0, StatusCode::OK);
}

#[tokio::test]
async fn validation_errors_name_their_param() {
    let app = app(None, 1 << 20).await;
    let cases = [
        (
            r#"{"model": "placeholder", "prompt": "p", "size": "13x7"}"#,
            400,
            Some("size"),
            None,
        ),
        (
            r#"{"model": "placeholder", "prompt": "p", "n": 11}"#,
            400,
            Some("n"),
            None,
        ),
        (
            r#"{"model": "nope", "prompt": "p"}"#,
            404,
            Some("model"),
            Some("model_not_found"),
        ),
        (
            r#"{"model": "gpt-image-2", "prompt": "p"}"#,
            404,
            Some("model"),
            Some("model_not_found"),
        ),
        (r#"{"model": "placeholder"}"#, 400, Some("prompt"), None),
    ];
    for (body, status, param, code) in cases {
        let request = post_json("/v1/images/generations", body);
        let error = refused(&app, request, StatusCode::from_u16(status).unwrap()).await;
        assert_eq!(error["param"].as_str(), param, "{body}");
        if let Some(code) = code {
            assert_eq!(error["code"], code);
        }
    }
}

#[tokio::test]
async fn url_results_are_served_from_the_store() {
    let app = app(None, 1 << 20).await;
    let (status, _, body) = send(
        &app,
        post_json(
            "/v1/images/generations",
            r#"{"prompt": "p", "size": "64x64", "response_format": "url"}"#,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let response = json(&body);
    let url = response["data"][0]["url"].as_str().unwrap();
    let path = url.strip_prefix("http://test").unwrap();
    let (status, headers, image) = send(&app, get(path)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "image/png");
    assert!(image.starts_with(b"\x89PNG"));
    let unsigned = path.split('?').next().unwrap();
    let altered = path.replace("exp=", "exp=1");
    for forged in [unsigned, altered.as_str(), "/images/abc.png"] {
        assert_eq!(
            refused(&app, get(forged), StatusCode::FORBIDDEN).await["code"],
            "invalid_signature",
            "{forged}"
        );
    }
}

#[tokio::test]
async fn models_list_and_retrieve() {
    let app = app(None, 1 << 20).await;
    let (status, _, body) = send(&app, get("/v1/models")).await;
    assert_eq!(status, StatusCode::OK);
    let list = json(&body);
    assert_eq!(list["object"], "list");
    let ids: Vec<_> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(ids.contains(&"placeholder".to_owned()));
    assert!(
        !ids.contains(&"gpt-image-2".to_owned()),
        "openai is not configured"
    );
    let (status, _, body) = send(&app, get("/v1/models/placeholder")).await;
    assert_eq!(status, StatusCode::OK);
    let model = json(&body);
    assert_eq!(model["allowedParams"]["max_n"], 10);
    assert_eq!(model["schema"]["properties"]["n"]["maximum"], 10);
    assert_eq!(
        refused(&app, get("/v1/models/nope"), StatusCode::NOT_FOUND).await["code"],
        "model_not_found"
    );
}

fn bearer(request: axum::http::request::Builder, key: &str) -> axum::http::request::Builder {
    request.header(header::AUTHORIZATION, format!("Bearer {key}"))
}

/// `GET path` as the holder of `key`.
fn get_as(path: &str, key: &str) -> Request<Body> {
    bearer(Request::get(path), key).body(Body::empty()).unwrap()
}

/// A generation request with `body`, as the holder of `key`.
fn generate_as(key: &str, body: &str) -> Request<Body> {
    with_json(bearer(Request::post("/v1/images/generations"), key), body)
}

async fn issue(app: &TestApp, credits: i64, models: Option<Vec<String>>) -> String {
    let new = NewKey {
        name: "t".into(),
        credits,
        models,
        ..NewKey::default()
    };
    app.accounts.create_key(new).await.unwrap().secret
}

#[tokio::test]
async fn issued_keys_are_metered_and_refused_when_short() {
    let app = app(Some("mk-123"), 1 << 20).await;
    let secret = issue(&app, 3, None).await;
    let body = r#"{"prompt": "p", "n": 2, "size": "64x64"}"#;
    let request = generate_as(&secret, body);
    let (status, headers, response) = send(&app, request).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-credits-remaining"], "1");
    let response = json(&response);
    assert_eq!(response["credits_used"], 2);
    assert_eq!(headers["x-cache-status"], "MISS-GENERATED");
    // The same request again is a cache hit: free.
    let request = generate_as(&secret, body);
    let (status, headers, response) = send(&app, request).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-cache-status"], "HIT");
    assert_eq!(headers["x-credits-remaining"], "1");
    let response = json(&response);
    assert_eq!(response["credits_used"], 0);
    let other = r#"{"prompt": "another", "n": 2, "size": "64x64"}"#;
    let request = generate_as(&secret, other);
    assert_eq!(
        refused(&app, request, StatusCode::PAYMENT_REQUIRED).await["code"],
        "insufficient_credits"
    );
    let request = get_as("/v1/credits", &secret);
    let (status, _, response) = send(&app, request).await;
    assert_eq!(status, StatusCode::OK);
    let credits = json(&response);
    assert_eq!(credits["balance"], 1);
}

#[tokio::test]
async fn a_failed_generation_is_refunded_and_an_unserved_model_is_404() {
    let app = app(Some("mk-123"), 1 << 20).await;
    let secret = issue(&app, 10, Some(vec!["placeholder".into(), "panicky".into()])).await;
    let post = |body: &'static str| generate_as(&secret, body);
    let (status, _, _) = send(&app, post(r#"{"model": "panicky", "prompt": "p"}"#)).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    // The panic dropped the request mid-flight; the refund runs in the background: wait for
    // it (generously, as a loaded machine may be slow) rather than for a fixed time.
    let key = app.accounts.authenticate(&secret).await.unwrap().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while app.accounts.balance(&key.id).await.unwrap() != 10
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(app.accounts.balance(&key.id).await.unwrap(), 10);
    let (status, _, response) =
        send(&app, post(r#"{"model": "gpt-image-2", "prompt": "p"}"#)).await;
    assert_status(status, StatusCode::NOT_FOUND, &response);
}

#[tokio::test]
async fn a_model_without_a_price_is_refused_to_metered_keys_before_any_upstream_call() {
    let app = app(Some("mk-123"), 1 << 20).await;
    let secret = issue(&app, 10, None).await;
    let request = generate_as(&secret, r#"{"model": "unpriced", "prompt": "p"}"#);
    let error = refused(&app, request, StatusCode::FORBIDDEN).await;
    assert_eq!(error["code"], "permission_denied");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("`unpriced` has no price"), "{message}");
    assert_eq!(app.unpriced.calls(), 0, "the upstream was called");
    let key = app.accounts.authenticate(&secret).await.unwrap().unwrap();
    assert_eq!(app.accounts.balance(&key.id).await.unwrap(), 10);
    let ledger = app.accounts.recent_charges(&key.id, 10).await.unwrap();
    assert!(
        ledger.iter().all(|entry| entry.kind == "credit"),
        "nothing may be reserved or charged: {ledger:?}"
    );
    // The same model is served to the master key, which is not metered: the refusal above is
    // the price check, not an unserved model.
    let request = generate_as("mk-123", r#"{"model": "unpriced", "prompt": "p"}"#);
    assert_eq!(send(&app, request).await.0, StatusCode::BAD_GATEWAY);
    assert_eq!(app.unpriced.calls(), 1);
}

#[tokio::test]
async fn a_key_may_only_use_its_models() {
    let app = app(Some("mk-123"), 1 << 20).await;
    let secret = issue(&app, 10, Some(vec!["placeholder".into()])).await;
    let request = generate_as(&secret, r#"{"model": "panicky", "prompt": "p"}"#);
    let error = refused(&app, request, StatusCode::FORBIDDEN).await;
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("may not use the model `panicky`"),
        "{message}"
    );
}

#[tokio::test]
async fn admin_key_creation_refuses_limits_and_models_that_mean_nothing() {
    let app = app(Some("mk-123"), 1 << 20).await;
    let cases = [
        (r#"{"name": "k", "rpm": 0}"#, "rpm"),
        (
            r#"{"name": "k", "images_per_minute": 0}"#,
            "images_per_minute",
        ),
        (r#"{"name": "k", "max_concurrent": 0}"#, "max_concurrent"),
        (r#"{"name": "k", "max_concurrent": -1}"#, "max_concurrent"),
        (r#"{"name": "k", "rpm": 2000000}"#, "rpm"),
        (r#"{"name": "k", "models": ["nope"]}"#, "models"),
        (r#"{"name": "k", "models": []}"#, "models"),
        (r#"{"name": "k", "credits": -5}"#, "credits"),
        (
            r#"{"name": "k", "default_response_format": "png"}"#,
            "default_response_format",
        ),
    ];
    for (body, param) in cases {
        let request = with_json(bearer(Request::post("/v1/admin/keys"), "mk-123"), body);
        assert_eq!(
            refused(&app, request, StatusCode::BAD_REQUEST).await["param"],
            param,
            "{body}"
        );
    }
    assert!(app.accounts.list_keys().await.unwrap().is_empty());
    let request = with_json(
        bearer(Request::post("/v1/admin/keys"), "mk-123"),
        r#"{"name": "k", "rpm": 1, "models": ["placeholder", "panicky"]}"#,
    );
    let (status, _, response) = send(&app, request).await;
    assert_status(status, StatusCode::CREATED, &response);
    let created = json(&response);
    assert_eq!(
        created["key"]["models"],
        serde_json::json!(["placeholder", "panicky"])
    );
}

#[tokio::test]
async fn admin_key_changes_follow_the_same_rules_and_apply_at_once() {
    let app = app(Some("mk-123"), 1 << 20).await;
    let secret = issue(&app, 10, None).await;
    let id = app
        .accounts
        .authenticate(&secret)
        .await
        .unwrap()
        .unwrap()
        .id;
    let patch = |body: &'static str| {
        with_json(
            bearer(Request::patch(format!("/v1/admin/keys/{id}")), "mk-123"),
            body,
        )
    };
    for (body, param) in [
        (r#"{"rpm": 0}"#, "rpm"),
        (r#"{"max_concurrent": -3}"#, "max_concurrent"),
        (r#"{"models": ["nope"]}"#, "models"),
        (r#"{"models": []}"#, "models"),
        (
            r#"{"default_response_format": "b64"}"#,
            "default_response_format",
        ),
    ] {
        assert_eq!(
            refused(&app, patch(body), StatusCode::BAD_REQUEST).await["param"],
            param,
            "{body}"
        );
    }
    let (status, _, response) = send(&app, patch(r#"{"name": "x"}"#)).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "only limits and models change here"
    );
    envelope(&response);
    let (status, _, response) = send(&app, patch(r#"{"rpm": 1, "models": ["placeholder"]}"#)).await;
    assert_status(status, StatusCode::OK, &response);
    let key = json(&response);
    assert_eq!(
        (key["rpm"].clone(), key["models"].clone()),
        (1.into(), serde_json::json!(["placeholder"]))
    );
    let generate = || {
        generate_as(
            &secret,
            r#"{"model": "placeholder", "prompt": "p", "size": "16x16"}"#,
        )
    };
    assert_eq!(send(&app, generate()).await.0, StatusCode::OK);
    let (status, headers, _) = send(&app, generate()).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(headers.contains_key(header::RETRY_AFTER));
    // `null` removes the limit; fields left out stay.
    let (status, _, response) = send(&app, patch(r#"{"rpm": null}"#)).await;
    assert_eq!(status, StatusCode::OK);
    let key = json(&response);
    assert_eq!(
        (key["rpm"].clone(), key["models"].clone()),
        (Value::Null, serde_json::json!(["placeholder"]))
    );
    assert_eq!(send(&app, generate()).await.0, StatusCode::OK);
    let unknown = with_json(
        bearer(Request::patch("/v1/admin/keys/key_nope"), "mk-123"),
        r#"{"rpm": 5}"#,
    );
    assert_eq!(send(&app, unknown).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_keys_default_response_format_answers_requests_that_name_none() {
    let app = app(Some("mk-123"), 1 << 20).await;
    let request = with_json(
        bearer(Request::post("/v1/admin/keys"), "mk-123"),
        r#"{"name": "dalle-tool", "credits": 10, "default_response_format": "url"}"#,
    );
    let (status, _, response) = send(&app, request).await;
    assert_status(status, StatusCode::CREATED, &response);
    let created = json(&response);
    assert_eq!(created["key"]["default_response_format"], "url");
    let secret = created["secret"].as_str().unwrap();
    let id = created["key"]["id"].as_str().unwrap();
    let first_image = |response: &[u8]| {
        let data = json(response)["data"][0].clone();
        let mut fields: Vec<_> = data.as_object().unwrap().keys().cloned().collect();
        fields.retain(|field| field == "url" || field == "b64_json");
        fields
    };
    let generate = |body: &'static str| generate_as(secret, body);
    let unnamed = r#"{"prompt": "p", "size": "16x16"}"#;
    let (status, _, response) = send(&app, generate(unnamed)).await;
    assert_status(status, StatusCode::OK, &response);
    assert_eq!(first_image(&response), ["url"]);
    // The request's own choice wins over the key's.
    let named = r#"{"prompt": "p", "size": "16x16", "response_format": "b64_json"}"#;
    let (status, _, response) = send(&app, generate(named)).await;
    assert_status(status, StatusCode::OK, &response);
    assert_eq!(first_image(&response), ["b64_json"]);
    // `null` leaves it to the server's default (inline here).
    let clear = with_json(
        bearer(Request::patch(format!("/v1/admin/keys/{id}")), "mk-123"),
        r#"{"default_response_format": null}"#,
    );
    let (status, _, response) = send(&app, clear).await;
    assert_status(status, StatusCode::OK, &response);
    assert_eq!(json(&response)["default_response_format"], Value::Null);
    let (status, _, response) = send(&app, generate(unnamed)).await;
    assert_status(status, StatusCode::OK, &response);
    assert_eq!(first_image(&response), ["b64_json"]);
}

#[tokio::test]
async fn admin_api_needs_the_master_key_and_revocation_is_immediate() {
    let app = app(Some("mk-123"), 1 << 20).await;
    let create = |key: &str| {
        with_json(
            bearer(Request::post("/v1/admin/keys"), key),
            r#"{"name": "ci", "credits": 5}"#,
        )
    };
    let (status, _, body) = send(&app, create("mk-123")).await;
    assert_eq!(status, StatusCode::CREATED);
    let created = json(&body);
    let secret = created["secret"].as_str().unwrap().to_owned();
    let id = created["key"]["id"].as_str().unwrap().to_owned();
    assert_eq!(send(&app, create(&secret)).await.0, StatusCode::FORBIDDEN);
    let models = || get_as("/v1/models", &secret);
    assert_eq!(send(&app, models()).await.0, StatusCode::OK);
    let revoke = bearer(
        Request::post(format!("/v1/admin/keys/{id}/revoke")),
        "mk-123",
    )
    .body(Body::empty())
    .unwrap();
    assert_eq!(send(&app, revoke).await.0, StatusCode::OK);
    assert_eq!(
        refused(&app, models(), StatusCode::UNAUTHORIZED).await["code"],
        "invalid_api_key"
    );
}

/// `/openapi.json` is OpenAPI 3.1 and documents exactly what the router serves: the paths of
/// `app.rs`'s `.route(...)` calls plus the URL API's path form (the fallback's), and on each
/// path every method the router answers other than 405 (or the fallback's unknown route).
#[tokio::test]
async fn openapi_documents_every_route_the_router_serves() {
    use std::collections::BTreeSet;

    let app = app(Some("master"), 1 << 20).await;
    let (status, headers, body) = send(&app, get("/openapi.json")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    let document = json(&body);
    assert!(
        document["openapi"].as_str().unwrap().starts_with("3.1."),
        "{}",
        document["openapi"]
    );
    let paths = document["paths"].as_object().unwrap();

    // Each `.route(` of the router is followed by its path literal.
    let routed: BTreeSet<&str> = include_str!("../src/app.rs")
        .split(".route(")
        .skip(1)
        .map(|call| call.split('"').nth(1).unwrap())
        .collect();
    let documented: BTreeSet<&str> = paths.keys().map(String::as_str).collect();
    let undocumented: Vec<_> = routed.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "routed, not in /openapi.json: {undocumented:?}"
    );
    let unrouted: BTreeSet<&str> = documented.difference(&routed).copied().collect();
    assert_eq!(unrouted, BTreeSet::from(["/{prompt}", "/{prompt}/{model}"]));

    for (path, item) in paths {
        let concrete: Vec<&str> = path
            .split('/')
            .map(|segment| {
                if segment.starts_with('{') {
                    "x"
                } else {
                    segment
                }
            })
            .collect();
        let concrete = concrete.join("/");
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
            let request = bearer(Request::builder().method(method).uri(&concrete), "master");
            let (status, _, body) = send(&app, request.body(Body::empty()).unwrap()).await;
            let unknown_route = status == StatusCode::NOT_FOUND
                && envelope(&body)["message"]
                    .as_str()
                    .unwrap()
                    .starts_with("unknown route");
            let served = status != StatusCode::METHOD_NOT_ALLOWED && !unknown_route;
            assert_eq!(
                item.get(method.to_ascii_lowercase()).is_some(),
                served,
                "{method} {path} answered {status}: documented and served must agree"
            );
        }
    }
}

/// Found by fuzzing `/openapi.json`: a repeated or mistyped query parameter was axum's plain-text
/// 400, and a JSON array was read as a struct (`[null, null]` set a key's first two limits).
#[tokio::test]
async fn bad_queries_and_non_object_bodies_are_400_envelopes_naming_the_param() {
    let app = app(Some("master"), 1 << 20).await;
    for (uri, param) in [
        ("/v1/models?provider=a&provider=b", Some("provider")),
        ("/v1/files?limit=ten", Some("limit")),
        (
            "/api/v1/images/generations?task_id=a&task_id=b",
            Some("task_id"),
        ),
    ] {
        let error = refused(&app, get_as(uri, "master"), StatusCode::BAD_REQUEST).await;
        assert_eq!(error["param"].as_str(), param, "{uri}");
    }
    for body in ["[null, null]", "\"text\"", "7"] {
        let request = with_json(bearer(Request::post("/v1/admin/keys"), "master"), body);
        assert_eq!(
            refused(&app, request, StatusCode::BAD_REQUEST).await["message"],
            "the request body must be a JSON object",
            "{body}"
        );
    }
}
