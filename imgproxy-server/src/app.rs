//! `build_app`: the router with its middleware (auth, body limit, panics, fallbacks). Tests
//! call it directly, without a socket.

use std::any::Any;

use axum::{
    extract::{DefaultBodyLimit, Request, State},
    http::header,
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
    Extension, Router,
};
use secrecy::ExposeSecret as _;
use tower_http::{catch_panic::CatchPanicLayer, trace::TraceLayer};

use crate::{
    error::ApiError,
    handlers,
    state::{AppState, BodyLimit},
};

/// The application: every route and layer.
pub fn build_app(state: AppState) -> Router {
    let api = Router::new()
        .route(
            "/v1/images/generations",
            post(handlers::generations::create),
        )
        .route("/v1/models", get(handlers::models::list))
        .route("/v1/models/{id}", get(handlers::models::retrieve))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_key));
    Router::new()
        .merge(api)
        .route("/images/{key}", get(handlers::images::get))
        .route("/healthz", get(handlers::health::healthz))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(Extension(BodyLimit(state.max_body_bytes)))
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Rejects API requests without the master key, when one is configured.
async fn require_key(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(master_key) = &state.master_key else {
        return next.run(request).await;
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(key) if constant_time_eq(key.as_bytes(), master_key.expose_secret().as_bytes()) => {
            next.run(request).await
        }
        _ => ApiError::Unauthorized.into_response(),
    }
}

/// Compares without an early exit, so that timing does not reveal how much of a key matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn not_found(request: Request) -> ApiError {
    ApiError::NotFound {
        message: format!(
            "unknown route: {} {}",
            request.method(),
            request.uri().path()
        ),
    }
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

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn constant_time_eq_compares_whole_keys() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
