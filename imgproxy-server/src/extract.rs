//! `OpenAIJson<T>`: a JSON body extractor whose every rejection is an OpenAI error (415, 413,
//! or 400 naming the field), never axum's plain-text 422; `OpenAIPath<T>` and `OpenAIQuery<T>`,
//! the same for path and query parameters; and the same mapping for multipart bodies.

use axum::{
    body::Bytes,
    extract::{
        path::ErrorKind, rejection::PathRejection, FromRequest, FromRequestParts, Path, Request,
    },
    http::{header, request::Parts},
};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON request body.
#[derive(Debug)]
pub struct OpenAIJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for OpenAIJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let is_json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|mime| {
                let mime = mime.trim().to_ascii_lowercase();
                mime == "application/json"
                    || (mime.starts_with("application/") && mime.ends_with("+json"))
            });
        if !is_json {
            return Err(ApiError::UnsupportedMediaType);
        }
        let limit = request
            .extensions()
            .get::<crate::state::BodyLimit>()
            .map_or(0, |l| l.0);
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge { limit }
                } else {
                    ApiError::BadBody {
                        message: format!(
                            "could not read the request body: {}",
                            rejection.body_text()
                        ),
                        param: None,
                    }
                }
            })?;
        // serde reads a struct from an array too (`[null, null]` would set the first fields).
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ApiError::BadBody {
                message: "the request body must be a JSON object".to_owned(),
                param: None,
            });
        }
        let mut deserializer = serde_json::Deserializer::from_slice(&bytes);
        let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
            let path = error.path().to_string();
            let inner = error.into_inner();
            let message = if inner.is_syntax() || inner.is_eof() {
                format!("the request body is not valid JSON: {inner}")
            } else if path == "." {
                format!("invalid request body: {inner}")
            } else {
                format!("invalid value for `{path}`: {inner}")
            };
            ApiError::BadBody {
                message,
                param: (path != "." && !inner.is_syntax()).then_some(path),
            }
        })?;
        Ok(Self(value))
    }
}

/// A multipart failure as OpenAI's error: 413 over the body limit, else 400.
pub fn multipart_error(error: axum::extract::multipart::MultipartError, limit: usize) -> ApiError {
    if error.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge { limit }
    } else {
        ApiError::BadBody {
            message: format!("could not read the multipart form: {}", error.body_text()),
            param: None,
        }
    }
}

/// Path parameters. A value axum cannot give (bytes that are not UTF-8 after percent-decoding,
/// as in `/v1/tasks/%ff`) names no resource: a 404 in OpenAI's envelope naming the parameter,
/// never axum's plain-text 400.
#[derive(Debug)]
pub struct OpenAIPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for OpenAIPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(Self(value)),
            Err(PathRejection::FailedToDeserializePathParams(error)) => {
                let (message, param) = match error.kind() {
                    ErrorKind::InvalidUtf8InPathParam { key } => (
                        format!(
                            "the path parameter `{key}` is not valid UTF-8: nothing has that id"
                        ),
                        Some(key.clone()),
                    ),
                    ErrorKind::ParseErrorAtKey { key, .. }
                    | ErrorKind::DeserializeError { key, .. } => (
                        format!("the path parameter `{key}` names nothing here"),
                        Some(key.clone()),
                    ),
                    _ => ("the path names nothing here".to_owned(), None),
                };
                Err(ApiError::BadPath { message, param })
            }
            // A route whose handler asks for a parameter the route lacks: our bug, not theirs.
            Err(rejection) => Err(ApiError::Core(imgproxy_core::Error::Internal(format!(
                "path extraction: {}",
                rejection.body_text()
            )))),
        }
    }
}

/// Query parameters, each at most once. A rejection is OpenAI's 400 naming the parameter,
/// never axum's plain-text one.
#[derive(Debug)]
pub struct OpenAIQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for OpenAIQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default().as_bytes();
        let mut seen = std::collections::HashSet::new();
        if let Some((name, _)) =
            url::form_urlencoded::parse(query).find(|(name, _)| !seen.insert(name.clone()))
        {
            let message = format!("`{name}` is given more than once");
            return Err(imgproxy_core::Error::invalid_param(name, message).into());
        }
        let deserializer = serde_urlencoded::Deserializer::new(url::form_urlencoded::parse(query));
        serde_path_to_error::deserialize(deserializer)
            .map(Self)
            .map_err(|error| {
                let path = error.path().to_string();
                let message = format!("invalid query: {}", error.into_inner());
                ApiError::Core(imgproxy_core::Error::InvalidRequest {
                    message,
                    param: (path != ".").then_some(path),
                    code: Some("invalid_value".to_owned()),
                })
            })
    }
}
