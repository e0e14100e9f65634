//! Who is calling: the master key (unmetered admin), an issued key (metered), or nobody on an
//! open loopback server. The middleware puts a [`Caller`] in the request extensions.

use axum::{
    extract::{Request, State},
    http::header,
    middleware::Next,
    response::{IntoResponse, Response},
};
use imgproxy_core::accounts::ApiKey;
use secrecy::ExposeSecret as _;

use crate::{error::ApiError, state::AppState};

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub enum Caller {
    /// The operator's master key: unmetered, may use the admin API.
    Master,
    /// An issued key: metered and limited.
    Key(ApiKey),
    /// No key on a server without a master key (loopback only): unmetered.
    Open,
}

/// Authenticates `/v1` requests. An issued key is always checked (so that a revoked key is
/// refused even on an open server); no key is only accepted when no master key is set.
pub async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned);
    let caller = match (presented, &state.master_key) {
        (Some(key), Some(master))
            if constant_time_eq(key.as_bytes(), master.expose_secret().as_bytes()) =>
        {
            Caller::Master
        }
        (Some(key), master) => match state.accounts.authenticate(&key).await {
            Ok(Some(api_key)) => Caller::Key(api_key),
            // A key-shaped secret that is unknown or revoked is refused; on an open server any
            // other token (SDKs insist on sending one) means nothing.
            Ok(None)
                if master.is_some() || key.starts_with(imgproxy_core::accounts::SECRET_PREFIX) =>
            {
                return ApiError::Unauthorized.into_response();
            }
            Ok(None) => Caller::Open,
            Err(error) => return ApiError::from(error).into_response(),
        },
        (None, Some(_)) => return ApiError::Unauthorized.into_response(),
        (None, None) => Caller::Open,
    };
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// Compares without an early exit, so that timing does not reveal how much of a key matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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
