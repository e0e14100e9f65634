//! Uploaded files (OpenAI's Files API): what an upload accepts (images only, one of the
//! purposes the SDKs send), where its bytes and its record go, and the file object clients see.

use bytes::Bytes;
use serde::Serialize;

use super::{db::FileRecord, Service};
use crate::{provider::sniff_mime, Error, Result};

/// Purposes the OpenAI SDKs send.
pub const PURPOSES: [&str; 6] = [
    "assistants",
    "batch",
    "fine-tune",
    "vision",
    "user_data",
    "evals",
];

/// Longest kept filename, in characters; longer names are cut.
pub const MAX_FILENAME_CHARS: usize = 255;

/// OpenAI's file object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct FileObject {
    /// `file-...`.
    pub id: String,
    /// Always `file`.
    pub object: &'static str,
    /// Size in bytes.
    pub bytes: i64,
    /// Unix seconds.
    pub created_at: i64,
    /// The uploaded name.
    pub filename: String,
    /// The purpose given at upload.
    pub purpose: String,
    /// Always `processed`: files are stored as they arrive.
    pub status: &'static str,
    /// Always null.
    pub status_details: Option<String>,
    /// Always null: files do not expire.
    pub expires_at: Option<i64>,
}

impl From<&FileRecord> for FileObject {
    fn from(record: &FileRecord) -> Self {
        Self {
            id: record.id.clone(),
            object: "file",
            bytes: record.bytes,
            created_at: record.created_at,
            filename: record.filename.clone(),
            purpose: record.purpose.clone(),
            status: "processed",
            status_details: None,
            expires_at: None,
        }
    }
}

impl Service {
    /// Stores an uploaded image as a file of `tenant`. Only images are kept: that is what a
    /// file id is used for here.
    pub async fn create_file(
        &self,
        tenant: &str,
        filename: &str,
        purpose: &str,
        bytes: Bytes,
    ) -> Result<FileRecord> {
        let purpose = purpose.trim();
        if !PURPOSES.contains(&purpose) {
            return Err(Error::invalid_param(
                "purpose",
                format!("purpose must be one of {}", PURPOSES.join(", ")),
            ));
        }
        let Some(mime) = sniff_mime(&bytes) else {
            return Err(Error::invalid_param(
                "file",
                "the file is not an image (PNG, JPEG, WebP, GIF or SVG); imgproxy stores images only",
            ));
        };
        let filename: String = filename.chars().take(MAX_FILENAME_CHARS).collect();
        let size = i64::try_from(bytes.len()).unwrap_or(i64::MAX);
        let key = self.store.put(bytes, mime).await?;
        self.db
            .create_file(tenant, &filename, purpose, size, &key)
            .await
    }

    /// The bytes and MIME type of `tenant`'s file `id`, or `None` if there is no such file
    /// (or its image is gone from the store).
    pub async fn file_content(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<Option<(Bytes, &'static str)>> {
        let Some(record) = self.db.file(tenant, id).await? else {
            return Ok(None);
        };
        self.store.get(&record.image_key).await
    }
}
