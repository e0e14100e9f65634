//! Who is calling: the master key (unmetered admin), an issued key (metered), the public
//! (URL API only, billed to the operator's chosen key), or nobody on an open loopback server.
//! `/v1` requests authenticate by their key in `Authorization`, with or without `Bearer` (the
//! middleware puts a [`Caller`] in the request extensions); URL-API requests also by the key in
//! `x-parse-session-token`, a signed URL or public mode ([`url_caller`]).

use axum::{
    extract::{Request, State},
    http::{header, HeaderMap},
    middleware::Next,
    response::{IntoResponse, Response},
};
use imgproxy_core::service::{
    db::{ApiKey, SECRET_PREFIX},
    signing,
};
use secrecy::ExposeSecret as _;

use crate::{error::ApiError, state::AppState, telemetry::RequestNote};

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub enum Caller {
    /// The operator's master key: unmetered, may use the admin API.
    Master,
    /// An issued key: metered and limited.
    Key(ApiKey),
    /// No key on a server without a master key (loopback only): unmetered.
    Open,
    /// An unauthenticated URL-API request under public mode: billed to `key`, limited as
    /// `limits` (the public limits, counted apart from the key's own use).
    Public {
        /// The paying key.
        key: ApiKey,
        /// The public limits, under an id of their own.
        limits: ApiKey,
    },
}

impl Caller {
    /// The tenant that scopes cache entries, names and files: the key's id, `public:<key id>`
    /// for the public (so that anonymous visitors can neither read nor re-point the key's own
    /// names), or `""` for the operator (master key, open server).
    pub fn tenant(&self) -> &str {
        match self {
            Self::Key(key) => &key.id,
            Self::Public { limits, .. } => &limits.id,
            Self::Master | Self::Open => "",
        }
    }

    /// The key that pays, for metered callers.
    pub fn paying_key(&self) -> Option<&ApiKey> {
        match self {
            Self::Key(key) | Self::Public { key, .. } => Some(key),
            Self::Master | Self::Open => None,
        }
    }

    /// Gives `request` the key's `response_format` if it names none. Done before anything
    /// reads the request, so that tasks, streams, plain answers and the idempotency
    /// fingerprint all see it as it is served; without a key's, `Gateway::validate` fills in
    /// the server's.
    pub fn fill_response_format(&self, request: &mut imgproxy_core::ImageRequest) {
        if request.response_format.is_none() {
            request.response_format = self
                .paying_key()
                .and_then(|key| key.default_response_format)
                .map(|format| format.name().to_owned());
        }
    }

    /// The limits this caller is held to, if any.
    pub fn limited_as(&self) -> Option<&ApiKey> {
        match self {
            Self::Key(key) | Self::Public { limits: key, .. } => Some(key),
            Self::Master | Self::Open => None,
        }
    }
}

/// Authenticates `/v1` requests. An issued key is always checked (so that a revoked key is
/// refused even on an open server); no key is only accepted when no master key is set.
pub async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let caller = match key_caller(&state, presented_key(request.headers())).await {
        Ok(Some(caller)) => caller,
        Ok(None) if state.master_key.is_none() => Caller::Open,
        Ok(None) => return ApiError::Unauthorized.into_response(),
        Err(error) => return error.into_response(),
    };
    if let (Some(key), Some(note)) = (
        caller.paying_key(),
        request.extensions().get::<RequestNote>(),
    ) {
        note.key(&key.id);
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// The caller of a URL-API request at `path` with decoded query `params`: a key in
/// `Authorization` or `x-parse-session-token`, else a signed URL (`kid` names the paying key;
/// none means the operator signed it), else public mode, else nobody on an open server.
pub async fn url_caller(
    state: &AppState,
    headers: &HeaderMap,
    path: &str,
    params: &[(String, String)],
) -> Result<Caller, ApiError> {
    let presented = presented_key(headers).or_else(|| session_token(headers));
    if let Some(caller) = key_caller(state, presented).await? {
        return Ok(caller);
    }
    if params.iter().any(|(k, _)| k == signing::SIG) {
        let Some((signer, _)) = state.service.signer() else {
            return Err(ApiError::Signature(signing::SignatureError::Invalid));
        };
        signer
            .verify(path, params, imgproxy_core::clock::now_secs())
            .map_err(ApiError::Signature)?;
        let Some((_, key_id)) = params.iter().find(|(k, _)| k == signing::KEY_ID) else {
            return Ok(Caller::Master);
        };
        return match state.service.db().get_key(key_id).await {
            Ok(key) if !key.revoked => Ok(Caller::Key(key)),
            // A revoked key's URLs stop working at once, like the key itself.
            Ok(_) | Err(imgproxy_core::Error::NotFound { .. }) => Err(ApiError::Unauthorized),
            Err(error) => Err(error.into()),
        };
    }
    if let Some(public) = &state.url_api.public {
        let key = state.service.db().get_key(&public.key_id).await?;
        if key.revoked {
            return Err(ApiError::Unauthorized);
        }
        let limits = ApiKey {
            id: format!("public:{}", key.id),
            rpm: public.rpm,
            images_per_minute: public.images_per_minute,
            max_concurrent: public.max_concurrent,
            ..key.clone()
        };
        return Ok(Caller::Public { key, limits });
    }
    if state.master_key.is_none() {
        return Ok(Caller::Open);
    }
    Err(ApiError::Unauthorized)
}

/// Whether the request comes from the operator: it carries the master key in
/// `Authorization`, or the server has no master key (it then listens on loopback only).
pub fn is_operator(state: &AppState, headers: &HeaderMap) -> bool {
    let Some(master) = &state.master_key else {
        return true;
    };
    presented_key(headers).is_some_and(|presented| {
        constant_time_eq(presented.as_bytes(), master.expose_secret().as_bytes())
    })
}

/// The key a request carries in `Authorization`, if a non-empty one: `Bearer <key>`, or an
/// issued key bare, as some clients send it without a scheme (seed 001's first example). The
/// master key is the operator's and keeps its one form; another scheme (`Basic ...`) or a bare
/// value that is not an issued key's carries no key of ours.
fn presented_key(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let key = match value.strip_prefix("Bearer") {
        Some(rest) if rest.is_empty() || rest.starts_with(' ') => rest.trim(),
        _ if value.starts_with(SECRET_PREFIX) && !value.contains(' ') => value,
        _ => return None,
    };
    (!key.is_empty()).then_some(key)
}

/// The header seed 000's clients send their session in to be billed; here it carries a key.
const SESSION_TOKEN: &str = "x-parse-session-token";

/// The key a URL-API request carries in [`SESSION_TOKEN`], if a non-empty one.
fn session_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(SESSION_TOKEN)?.to_str().ok()?.trim();
    (!value.is_empty()).then_some(value)
}

/// The caller a presented key names, `None` without one. An issued key is always checked (so a
/// revoked key is refused even on an open server).
async fn key_caller(state: &AppState, presented: Option<&str>) -> Result<Option<Caller>, ApiError> {
    let Some(presented) = presented else {
        return Ok(None);
    };
    if let Some(master) = &state.master_key {
        if constant_time_eq(presented.as_bytes(), master.expose_secret().as_bytes()) {
            return Ok(Some(Caller::Master));
        }
    }
    match state.service.db().authenticate(presented).await? {
        Some(api_key) => Ok(Some(Caller::Key(api_key))),
        // A key-shaped secret that is unknown or revoked is refused; on an open server any
        // other token (SDKs insist on sending one) means nothing.
        None if state.master_key.is_some() || presented.starts_with(SECRET_PREFIX) => {
            Err(ApiError::Unauthorized)
        }
        None => Ok(Some(Caller::Open)),
    }
}

/// Compares without an early exit, so that timing does not reveal how much of a key matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use axum::http::{header, HeaderMap, HeaderValue};

    use super::{constant_time_eq, presented_key, session_token};

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| {
                (
                    header::HeaderName::from_static(name),
                    HeaderValue::from_str(value).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn a_key_is_read_with_or_without_bearer() {
        for (authorization, key) in [
            ("Bearer ipk_abc", Some("ipk_abc")),
            ("ipk_abc", Some("ipk_abc")),
            (" ipk_abc ", Some("ipk_abc")),
            ("Bearer  ", None),
            ("", None),
            ("Basic dXNlcjpwYXNz", None),
            // The master key, or any token that is not an issued key, needs its `Bearer`.
            ("mk-operator-secret", None),
            ("Bearer mk-operator-secret", Some("mk-operator-secret")),
        ] {
            let headers = headers(&[("authorization", authorization)]);
            assert_eq!(presented_key(&headers), key, "{authorization:?}");
        }
        assert_eq!(presented_key(&HeaderMap::new()), None);
    }

    #[test]
    fn the_session_token_header_carries_a_key() {
        let with = headers(&[("x-parse-session-token", "ipk_abc")]);
        assert_eq!(session_token(&with), Some("ipk_abc"));
        assert_eq!(presented_key(&with), None, "not an Authorization key");
        assert_eq!(
            session_token(&headers(&[("x-parse-session-token", " ")])),
            None
        );
    }

    #[test]
    fn constant_time_eq_compares_whole_keys() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
