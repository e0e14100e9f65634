//! `/v1/files`: uploaded images (OpenAI's Files API shape), scoped to the caller's tenant and
//! usable as reference images by id. Content lives in the image store; the record in the
//! database.

use axum::{
    extract::{multipart::MultipartRejection, Multipart, State},
    http::{header, StatusCode},
    response::IntoResponse,
    Extension, Json,
};
use imgproxy_core::{
    service::files::{FileObject, MAX_FILENAME_CHARS},
    Error,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    auth::Caller,
    error::ApiError,
    extract::{multipart_error as multipart, OpenAIPath, OpenAIQuery},
    state::AppState,
};

/// Most files one list returns.
const LIST_LIMIT: u32 = 10_000;

/// `POST /v1/files`: multipart with a `file` part and a `purpose` part.
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    form: Result<Multipart, MultipartRejection>,
) -> Result<(StatusCode, Json<FileObject>), ApiError> {
    let limit = state.max_body_bytes;
    let mut form = form.map_err(|rejection| ApiError::BadBody {
        message: format!(
            "expected a `multipart/form-data` body with `file` and `purpose`: {}",
            rejection.body_text()
        ),
        param: None,
    })?;
    let (mut file, mut purpose) = (None, None);
    while let Some(field) = form.next_field().await.map_err(|e| multipart(e, limit))? {
        match field.name() {
            Some("file") => {
                let filename = field
                    .file_name()
                    .unwrap_or("upload")
                    .chars()
                    .take(MAX_FILENAME_CHARS)
                    .collect::<String>();
                let bytes = field.bytes().await.map_err(|e| multipart(e, limit))?;
                file = Some((filename, bytes));
            }
            Some("purpose") => purpose = Some(field.text().await.map_err(|e| multipart(e, limit))?),
            Some(other) => {
                return Err(Error::invalid_param(
                    other,
                    format!("unknown form field `{other}`: send `file` and `purpose`"),
                )
                .into())
            }
            None => {}
        }
    }
    let Some((filename, bytes)) = file else {
        return Err(Error::invalid_param("file", "the form needs a `file` part").into());
    };
    let Some(purpose) = purpose else {
        return Err(Error::invalid_param("purpose", "the form needs a `purpose` part").into());
    };
    let record = state
        .service
        .create_file(caller.tenant(), &filename, &purpose, bytes)
        .await?;
    Ok((StatusCode::OK, Json(FileObject::from(&record))))
}

/// The query of `GET /v1/files`, as OpenAI's SDKs send it.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only files of this purpose.
    purpose: Option<String>,
    /// Most files to return (default 10000).
    #[schemars(range(min = 1, max = LIST_LIMIT))]
    limit: Option<u32>,
    /// `desc` (newest first, the default) or `asc`.
    #[schemars(extend("enum" = ["asc", "desc"]))]
    order: Option<String>,
    /// The id of the last file of the previous page.
    after: Option<String>,
}

/// The answer of `GET /v1/files`: OpenAI's cursor page.
#[derive(Debug, Serialize, JsonSchema)]
pub struct FilePage {
    /// Always `list`.
    pub object: &'static str,
    /// The files of this page.
    pub data: Vec<FileObject>,
    /// The id of the first file of the page.
    pub first_id: Option<String>,
    /// The id of the last file of the page: the next page's `after`.
    pub last_id: Option<String>,
    /// Whether more files follow.
    pub has_more: bool,
}

/// The answer of `DELETE /v1/files/{id}`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct DeletedFile {
    /// The file's id.
    pub id: String,
    /// Always `file`.
    pub object: &'static str,
    /// Always true.
    pub deleted: bool,
}

/// `GET /v1/files`.
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    OpenAIQuery(query): OpenAIQuery<ListQuery>,
) -> Result<Json<FilePage>, ApiError> {
    let limit = query.limit.unwrap_or(LIST_LIMIT);
    if !(1..=LIST_LIMIT).contains(&limit) {
        return Err(
            Error::invalid_param("limit", format!("limit must be 1 to {LIST_LIMIT}")).into(),
        );
    }
    let mut files = state
        .service
        .db()
        .files(caller.tenant(), LIST_LIMIT)
        .await?;
    match query.order.as_deref() {
        None | Some("desc") => {}
        Some("asc") => files.reverse(),
        Some(_) => {
            return Err(Error::invalid_param("order", "order must be `asc` or `desc`").into())
        }
    }
    if let Some(purpose) = &query.purpose {
        files.retain(|f| f.purpose == *purpose);
    }
    if let Some(after) = &query.after {
        let Some(at) = files.iter().position(|f| f.id == *after) else {
            return Err(Error::invalid_param("after", format!("no file `{after}`")).into());
        };
        files.drain(..=at);
    }
    let has_more = files.len() > limit as usize;
    files.truncate(limit as usize);
    let data: Vec<FileObject> = files.iter().map(FileObject::from).collect();
    Ok(Json(FilePage {
        object: "list",
        first_id: data.first().map(|f| f.id.clone()),
        last_id: data.last().map(|f| f.id.clone()),
        data,
        has_more,
    }))
}

/// `GET /v1/files/{id}`.
pub async fn retrieve(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    OpenAIPath(id): OpenAIPath<String>,
) -> Result<Json<FileObject>, ApiError> {
    Ok(Json(find(&state, &caller, &id).await?))
}

/// `GET /v1/files/{id}/content`.
pub async fn content(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    OpenAIPath(id): OpenAIPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    let stored = state.service.file_content(caller.tenant(), &id).await?;
    let Some((bytes, mime)) = stored else {
        return Err(not_found(&id));
    };
    Ok(([(header::CONTENT_TYPE, mime)], bytes))
}

/// `DELETE /v1/files/{id}`. The record goes; the image stays in the content-addressed store,
/// where cache entries or other files may share it.
pub async fn delete(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    OpenAIPath(id): OpenAIPath<String>,
) -> Result<Json<DeletedFile>, ApiError> {
    let deleted = state.service.db().delete_file(caller.tenant(), &id).await?;
    if !deleted {
        return Err(not_found(&id));
    }
    Ok(Json(DeletedFile {
        id,
        object: "file",
        deleted: true,
    }))
}

async fn find(state: &AppState, caller: &Caller, id: &str) -> Result<FileObject, ApiError> {
    let record = state.service.db().file(caller.tenant(), id).await?;
    record
        .as_ref()
        .map(FileObject::from)
        .ok_or_else(|| not_found(id))
}

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound {
        message: format!("no file `{id}`"),
    }
}
