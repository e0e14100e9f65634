//! `build_app`: the router with its middleware (auth, body limit, panics, fallbacks, CORS and
//! the security headers of `edge`). Tests call it directly, without a socket.

use std::any::Any;

use axum::{
    extract::DefaultBodyLimit,
    middleware,
    response::{IntoResponse, Response},
    routing::{get, patch, post},
    Extension, Router,
};
use tower_http::catch_panic::CatchPanicLayer;

use crate::{
    auth, edge,
    error::ApiError,
    handlers,
    state::{AppState, BodyLimit},
    telemetry::{self, metrics},
};

/// The application: every route and layer.
pub fn build_app(state: AppState) -> Router {
    let admin = Router::new()
        .route(
            "/v1/admin/keys",
            post(handlers::admin::create).get(handlers::admin::list),
        )
        .route("/v1/admin/keys/{id}", patch(handlers::admin::update))
        .route("/v1/admin/keys/{id}/revoke", post(handlers::admin::revoke))
        .route("/v1/admin/keys/{id}/credit", post(handlers::admin::credit))
        .route("/v1/admin/ledger", get(handlers::console::ledger))
        .route("/v1/admin/tasks", get(handlers::console::tasks))
        .route("/v1/admin/webhooks", get(handlers::console::webhooks))
        .route("/v1/admin/summary", get(handlers::console::summary))
        .route_layer(middleware::from_fn(handlers::admin::require_master));
    let api = Router::new()
        .route(
            "/v1/images/generations",
            post(handlers::generations::create),
        )
        .route("/v1/images/edits", post(handlers::edits::create))
        .route("/v1/images/estimate", post(handlers::estimate::create))
        .route("/v1/generations", get(handlers::history::list))
        .route("/v1/chat/completions", post(handlers::chat::create))
        .route("/v1/responses", post(handlers::responses::create))
        .route("/v1/models", get(handlers::models::list))
        .route("/v1/models/{id}", get(handlers::models::retrieve))
        .route(
            "/v1/models/{owner}/{name}",
            get(handlers::models::retrieve_owned),
        )
        .route("/v1/credits", get(handlers::credits::get))
        .route(
            "/v1/files",
            post(handlers::files::create).get(handlers::files::list),
        )
        .route(
            "/v1/files/{id}",
            get(handlers::files::retrieve).delete(handlers::files::delete),
        )
        .route("/v1/files/{id}/content", get(handlers::files::content))
        .route("/v1/signed-urls", post(handlers::signed_urls::create))
        .route("/v1/tasks/{id}", get(handlers::tasks::retrieve))
        .route("/v1/tasks/{id}/cancel", post(handlers::tasks::cancel))
        .route("/v1/webhooks/secret", get(handlers::tasks::webhook_secret))
        .route(
            "/api/v1/images/generations",
            get(handlers::tasks::seed_poll),
        )
        .route(
            "/imini/router/v1/images/generate",
            post(handlers::seed002::create),
        )
        .route("/api/v1/image/generate", post(handlers::seed003::generate))
        .merge(admin)
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ));
    // Seed 004's door answers every refusal, its key's too, in its own envelope.
    let seed004 = Router::new()
        .route(
            "/api/v1/images/generations",
            post(handlers::seed004::create),
        )
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .route_layer(middleware::from_fn(handlers::seed004::envelope));
    let cors = state.cors.layer();
    let app = Router::new()
        .merge(api)
        .merge(seed004)
        .route("/images/{key}", get(handlers::images::get))
        .route("/api/generate", get(handlers::url_api::generate))
        .route("/healthz", get(handlers::health::healthz))
        .route("/readyz", get(handlers::health::readyz))
        .route("/openapi.json", get(crate::openapi::serve))
        // The web UI: pages without data, which read the routes above with the key typed in.
        .route("/", get(handlers::ui::landing))
        .route("/playground", get(handlers::ui::playground))
        .route("/console", get(handlers::ui::console))
        .route("/ui/{asset}", get(handlers::ui::asset))
        .fallback(handlers::url_api::fallback)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(Extension(BodyLimit(state.max_body_bytes)))
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
        .layer(CatchPanicLayer::custom(panic_response));
    // Outside auth: a preflight carries no key, and a 401 must reach the page to be read.
    let app = match cors {
        Some(cors) => app.layer(cors),
        None => app,
    };
    let app = match state.metrics.clone() {
        Some(exposition) => app.merge(metrics_router(exposition)),
        None => app,
    };
    // Outermost but for the observer, so that every answer carries them: a caught panic's, a
    // preflight's. The observer is outermost of all: it sees every answer, ids every one.
    app.layer(middleware::from_fn(edge::security_headers))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            telemetry::observe,
        ))
        .with_state(state)
}

/// `GET /metrics` alone, for the main listener or a listener of its own.
pub fn metrics_router<S: Clone + Send + Sync + 'static>(
    exposition: metrics::Exposition,
) -> Router<S> {
    Router::new()
        .route("/metrics", get(metrics::scrape))
        .with_state(exposition)
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    ApiError::Core(imgproxy_core::Error::Internal(format!(
        "handler panicked: {detail}"
    )))
    .into_response()
}
