//! The URL API (seed 000): `GET /api/generate?...` and the path forms `/{prompt}` and
//! `/{prompt}/{model}`, answering with the image bytes and the cache headers. Parsing the
//! query is core's `url_api`; serving it is core's `serving`.

use axum::{
    body::Body,
    extract::{Request, State},
    http::{header, HeaderMap, HeaderValue, Method, Uri},
    response::{IntoResponse, Response},
    Extension,
};
use imgproxy_core::{
    convert::RasterFormat,
    provider::extension_of,
    service::{
        cache::{CacheMode, CacheStatus},
        signing::{EXPIRES, SIG},
        url_api::{self, PathForm},
        StoredImage,
    },
    Error,
};

use crate::{
    auth::{self, Caller},
    calls, edge,
    error::ApiError,
    state::AppState,
    telemetry::RequestNote,
};

/// The route label of the path form (`/{prompt}`, `/{prompt}/{model}`) in logs and metrics.
const PATH_FORM_ROUTE: &str = "/{prompt}";

/// `GET /api/generate`.
pub async fn generate(
    State(state): State<AppState>,
    Extension(note): Extension<RequestNote>,
    method: Method,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    serve(&state, &note, &method, &headers, &uri, PathForm::default()).await
}

/// The router's fallback: the path form when it applies (a GET, on the configured host if
/// one is set, of a path that `url_api::path_form` takes as a prompt), else a 404 in OpenAI's
/// envelope.
pub async fn fallback(State(state): State<AppState>, request: Request) -> Response {
    let uri = request.uri().clone();
    let segments = (request.method() == Method::GET
        && state.url_api.path_form
        && on_path_form_host(&state, &request))
    .then(|| url_api::path_form(uri.path()))
    .flatten();
    let Some((prompt, model)) = segments else {
        return ApiError::NotFound {
            message: format!(
                "unknown route: {} {}",
                request.method(),
                imgproxy_core::quote(uri.path())
            ),
        }
        .into_response();
    };
    let path = PathForm {
        prompt: Some(&prompt),
        model: model.as_deref(),
    };
    let Some(note) = request.extensions().get::<RequestNote>() else {
        return ApiError::Core(Error::Internal("a request without its note".into()))
            .into_response();
    };
    note.route(PATH_FORM_ROUTE);
    serve(
        &state,
        note,
        request.method(),
        request.headers(),
        &uri,
        path,
    )
    .await
    .into_response()
}

/// Whether the request is for the host the path form is restricted to (`Host`, or the URI's
/// authority in HTTP/2), compared without case; a configured host without a port matches any
/// port. True when no host is configured.
fn on_path_form_host(state: &AppState, request: &Request) -> bool {
    let Some(wanted) = state.url_api.path_form_host.as_deref() else {
        return true;
    };
    let asked = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()))
        .unwrap_or_default();
    if asked.eq_ignore_ascii_case(wanted) {
        return true;
    }
    let without_port = asked
        .rsplit_once(':')
        .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
        .map_or(asked, |(host, _)| host);
    !wanted.contains(':') && without_port.eq_ignore_ascii_case(wanted)
}

async fn serve(
    state: &AppState,
    note: &RequestNote,
    method: &Method,
    headers: &HeaderMap,
    uri: &Uri,
    path: PathForm<'_>,
) -> Result<Response, ApiError> {
    let pairs: Vec<(String, String)> =
        url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let caller = auth::url_caller(state, headers, uri.path(), &pairs).await?;
    // A header is not covered by a URL's signature: whoever holds a signed URL, or reaches
    // the public mode, must not make it regenerate (and bill) with `Cache-Control: no-cache`,
    // which browsers send on a hard reload. `reroll` in the (signed) query still works.
    let signed =
        !headers.contains_key(header::AUTHORIZATION) && pairs.iter().any(|(k, _)| k == SIG);
    let by_url = signed || matches!(caller, Caller::Public { .. });
    // Verified by `url_caller`, so present and not past.
    let signed_until = signed
        .then(|| pairs.iter().find(|(k, _)| k == EXPIRES))
        .flatten()
        .and_then(|(_, v)| v.parse::<i64>().ok());
    let gateway = state.service.gateway();
    let parsed = url_api::parse(
        &pairs,
        path,
        gateway.catalog(),
        &state.url_api.default_model,
        &|m| gateway.serves(m),
    )?;

    if parsed.request.prompt.is_none() {
        let Some(name) = parsed.name else {
            return Err(Error::invalid_param(
                "prompt",
                "`prompt` is required, or `filename` to recall a named image",
            )
            .into());
        };
        let Some((named, image)) = state.service.recall(caller.tenant(), &name).await? else {
            return Err(ApiError::UnknownName { name });
        };
        let answer = Answer {
            cache: CacheStatus::Hit,
            model: &named.upstream_model,
            name: Some(&name),
            balance: None,
            policy: cache_policy(false, by_url, signed_until),
            client: headers,
        };
        return respond(state, image, parsed.ext, answer).await;
    }
    if method == Method::HEAD {
        // A link checker's HEAD must not generate (and bill) an image; a recall is fine.
        return Err(ApiError::MethodNotAllowed);
    }
    if parsed.request.n.is_some_and(|n| n != 1) {
        return Err(
            Error::invalid_param("n", "the URL API answers with one image: `n` must be 1").into(),
        );
    }
    let admitted = calls::admit(state, &caller, note, 1).await?;
    let unsigned = HeaderMap::new();
    let cache = calls::cache_mode(if by_url { &unsigned } else { headers }, parsed.reroll);
    let fresh = cache == CacheMode::Refresh;
    let call = calls::call(
        state,
        &caller,
        &admitted,
        cache,
        parsed.name.as_deref(),
        None,
        None,
    );
    let served = state.service.serve(call, parsed.request).await?;
    admitted.served(&served);
    let Some(image) = served.images.into_iter().next() else {
        return Err(Error::Internal("a generation returned no image".into()).into());
    };
    let answer = Answer {
        cache: served.cache,
        model: &served.model.upstream,
        name: parsed.name.as_deref(),
        balance: served.balance,
        policy: cache_policy(fresh, by_url, signed_until),
        client: headers,
    };
    respond(state, image, parsed.ext, answer).await
}

/// What the headers of an image answer say.
struct Answer<'a> {
    cache: CacheStatus,
    model: &'a str,
    name: Option<&'a str>,
    balance: Option<i64>,
    policy: Policy,
    /// The request's headers (`If-None-Match`).
    client: &'a HeaderMap,
}

/// How an answer may be cached, by how it was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Policy {
    /// A regeneration (`reroll=true`, or a keyed `Cache-Control: no-cache`): never stored, so
    /// the next plain request is not answered with a copy of a one-off.
    NoStore,
    /// A signed URL: anyone holding it gets this answer until it expires (the same URL
    /// answers from the server's cache meanwhile), so shared caches may keep it that long.
    SignedUntil(i64),
    /// Public mode: shared caches may store it but must revalidate (a name can be re-pointed,
    /// a reroll can replace the cached image); the revalidation is a 304 when unchanged.
    Shared,
    /// A keyed request: the key's own; the browser revalidates.
    Private,
}

fn cache_policy(fresh: bool, by_url: bool, signed_until: Option<i64>) -> Policy {
    match (fresh, by_url, signed_until) {
        (true, _, _) => Policy::NoStore,
        (false, true, Some(until)) => Policy::SignedUntil(until),
        (false, true, None) => Policy::Shared,
        (false, false, _) => Policy::Private,
    }
}

impl Policy {
    fn header(self) -> HeaderValue {
        match self {
            Self::NoStore => HeaderValue::from_static("no-store"),
            Self::SignedUntil(until) => {
                let seconds = until
                    .saturating_sub(imgproxy_core::clock::now_secs())
                    .max(0);
                HeaderValue::from_str(&format!("public, max-age={seconds}"))
                    .unwrap_or(HeaderValue::from_static("no-cache"))
            }
            Self::Shared => HeaderValue::from_static("public, no-cache"),
            Self::Private => HeaderValue::from_static("private, no-cache"),
        }
    }
}

/// The image bytes (converted to `ext` when asked) with the URL API's headers.
async fn respond(
    state: &AppState,
    image: StoredImage,
    ext: Option<RasterFormat>,
    answer: Answer<'_>,
) -> Result<Response, ApiError> {
    let store = state.service.store();
    let converted = ext.filter(|format| format.mime() != image.mime);
    // The key is a content hash; a conversion of it is as fixed as the original.
    let tag = match converted {
        Some(format) => edge::etag(&format!("{}.{}", image.key, extension_of(format.mime()))),
        None => edge::etag(&image.key),
    };
    let cache_control = answer.policy.header();
    if let Some(tag) = tag
        .as_ref()
        .filter(|t| answer.policy != Policy::NoStore && edge::not_modified(answer.client, t))
    {
        let mut response = edge::not_modified_response(tag.clone(), cache_control);
        calls::annotate(&mut response, answer.cache, answer.balance);
        return Ok(response);
    }
    let (bytes, mime, location) = match converted {
        Some(format) => {
            let Some((bytes, location)) = store.converted(&image.key, format).await? else {
                return Err(Error::Internal(format!("image {} vanished", image.key)).into());
            };
            (bytes, format.mime().to_owned(), location)
        }
        None => {
            let location = store.location(&image.key)?;
            (image.bytes, image.mime, location)
        }
    };
    let mut response = Response::new(Body::from(bytes));
    calls::annotate(&mut response, answer.cache, answer.balance);
    let headers = response.headers_mut();
    let text = |value: &str| HeaderValue::from_str(value).ok();
    if let Some(value) = text(&mime) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    headers.insert("x-cache-store", HeaderValue::from_static(store.kind()));
    headers.insert(header::CACHE_CONTROL, cache_control);
    if let Some(tag) = tag {
        headers.insert(header::ETAG, tag);
    }
    if store.kind() == "s3" {
        if let Some(value) = text(&location) {
            headers.insert("x-s3-key", value);
        }
    }
    if let Some(value) = text(answer.model) {
        headers.insert(calls::SERVED_MODEL, value);
    }
    if let Some(name) = answer.name {
        let extension = extension_of(&mime);
        let file = if name.ends_with(&format!(".{extension}")) {
            name.to_owned()
        } else {
            format!("{name}.{extension}")
        };
        // Names are ASCII letters, digits, `-`, `_` and `.` (checked when stored): no quoting
        // issues in the header.
        if let Some(value) = text(&format!("inline; filename=\"{file}\"")) {
            headers.insert(header::CONTENT_DISPOSITION, value);
        }
    }
    Ok(response)
}
