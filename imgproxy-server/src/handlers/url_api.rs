//! The URL API (seed 000): `GET /api/generate?...` and the path forms `/{prompt}` and
//! `/{prompt}/{model}`, answering with the image bytes and the cache headers. Parsing the
//! query is core's `url_api`; serving it is core's `serving`.

use axum::{
    body::Body,
    extract::{Request, State},
    http::{header, HeaderMap, HeaderValue, Method, Uri},
    response::{IntoResponse, Response},
};
use imgproxy_core::{
    convert::RasterFormat,
    provider::extension_of,
    service::{
        cache::CacheStatus,
        url_api::{self, PathForm},
        StoredImage,
    },
    Error,
};

use crate::{
    auth::{self, Caller},
    calls,
    error::ApiError,
    state::AppState,
};

/// First path segments that are routes (or browser probes), never prompts of the path form.
const RESERVED_SEGMENTS: [&str; 8] = [
    "v1",
    "api",
    "images",
    "healthz",
    "readyz",
    "metrics",
    "favicon.ico",
    "robots.txt",
];

/// `GET /api/generate`.
pub async fn generate(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    serve(&state, &method, &headers, &uri, PathForm::default()).await
}

/// The router's fallback: the path form when it applies, else a 404 in OpenAI's envelope.
pub async fn fallback(State(state): State<AppState>, request: Request) -> Response {
    let uri = request.uri().clone();
    let segments = (request.method() == Method::GET && state.url_api.path_form)
        .then(|| path_form_segments(uri.path()))
        .flatten();
    let Some((prompt, model)) = segments else {
        return ApiError::NotFound {
            message: format!("unknown route: {} {}", request.method(), uri.path()),
        }
        .into_response();
    };
    let path = PathForm {
        prompt: Some(&prompt),
        model: model.as_deref(),
    };
    serve(&state, request.method(), request.headers(), &uri, path)
        .await
        .into_response()
}

/// The decoded prompt (and model) of a path-form path: one or two non-empty segments, the
/// first not a reserved route name. `+` is a space, as in the query form.
fn path_form_segments(path: &str) -> Option<(String, Option<String>)> {
    let trimmed = path.strip_prefix('/')?.trim_end_matches('/');
    let mut parts = trimmed.split('/');
    let (first, second, rest) = (parts.next()?, parts.next(), parts.next());
    if first.is_empty() || rest.is_some() || second.is_some_and(str::is_empty) {
        return None;
    }
    if RESERVED_SEGMENTS
        .iter()
        .any(|r| first.eq_ignore_ascii_case(r))
    {
        return None;
    }
    let decode = |segment: &str| -> String {
        url::form_urlencoded::parse(format!("s={segment}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    Some((decode(first), second.map(decode)))
}

async fn serve(
    state: &AppState,
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
    let admitted = calls::admit(state, &caller, 1).await?;
    // A header is not covered by a URL's signature: whoever holds a signed URL, or reaches
    // the public mode, must not make it regenerate (and bill) with `Cache-Control: no-cache`,
    // which browsers send on a hard reload. `reroll` in the (signed) query still works.
    let by_url = matches!(caller, Caller::Public { .. })
        || (!headers.contains_key(header::AUTHORIZATION)
            && pairs
                .iter()
                .any(|(k, _)| k == imgproxy_core::service::signing::SIG));
    let unsigned = HeaderMap::new();
    let cache = calls::cache_mode(if by_url { &unsigned } else { headers }, parsed.reroll);
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
    let Some(image) = served.images.into_iter().next() else {
        return Err(Error::Internal("a generation returned no image".into()).into());
    };
    let answer = Answer {
        cache: served.cache,
        model: &served.model.upstream,
        name: parsed.name.as_deref(),
        balance: served.balance,
    };
    respond(state, image, parsed.ext, answer).await
}

/// What the headers of an image answer say.
struct Answer<'a> {
    cache: CacheStatus,
    model: &'a str,
    name: Option<&'a str>,
    balance: Option<i64>,
}

/// The image bytes (converted to `ext` when asked) with the URL API's headers.
async fn respond(
    state: &AppState,
    image: StoredImage,
    ext: Option<RasterFormat>,
    answer: Answer<'_>,
) -> Result<Response, ApiError> {
    let store = state.service.store();
    let (bytes, mime, location) = match ext.filter(|format| format.mime() != image.mime) {
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
    if store.kind() == "s3" {
        if let Some(value) = text(&location) {
            headers.insert("x-s3-key", value);
        }
    }
    if let Some(value) = text(answer.model) {
        headers.insert("x-model", value);
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

#[cfg(test)]
mod tests {
    use super::path_form_segments;

    #[test]
    fn the_path_form_never_shadows_routes() {
        assert_eq!(
            path_form_segments("/a+red%20fox"),
            Some(("a red fox".into(), None))
        );
        assert_eq!(
            path_form_segments("/fox/placeholder"),
            Some(("fox".into(), Some("placeholder".into())))
        );
        for routed in [
            "/",
            "/v1/nope",
            "/api/x",
            "/images/k",
            "/favicon.ico",
            "/a/b/c",
        ] {
            assert_eq!(path_form_segments(routed), None, "{routed}");
        }
    }
}
