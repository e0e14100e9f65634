//! fal's queue API bodies as serde types (providers.md §7). Private: `convert` turns them into
//! imgproxy's types. Unknown fields are ignored, so new upstream fields do not break us.

use serde::Deserialize;
use serde_json::Value;

/// The answer to a submit: where to poll, fetch and cancel the job.
#[derive(Debug, Deserialize, serde::Serialize)]
pub(crate) struct QueuedJob {
    /// Kept for logs only.
    pub request_id: Option<String>,
    pub status_url: String,
    pub response_url: String,
    /// Absent from some answers; without it a job cannot be cancelled.
    pub cancel_url: Option<String>,
}

/// A status poll's answer. `IN_QUEUE` and `IN_PROGRESS` are pending, `COMPLETED` is done;
/// `FAILED` and `CANCELED` appear in third-party schemas only, and are terminal if they come.
#[derive(Debug, Deserialize)]
pub(crate) struct QueueStatus {
    pub status: String,
    /// An error text some answers carry.
    pub error: Option<Value>,
}

/// A model's output: a list of files (`images`) or a single one (`image`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Output {
    pub images: Option<Vec<File>>,
    pub image: Option<File>,
    /// Per image (or, on some models, one flag for all): the safety checker flagged it.
    pub has_nsfw_concepts: Option<Value>,
    /// The same flag under the name other models use.
    pub nsfw_content_detected: Option<Value>,
}

/// One output file.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct File {
    /// `https://...` on fal's CDN, or a `data:` URI.
    pub url: String,
    pub content_type: Option<String>,
    pub width: Option<u32>,
    pub height: Option<u32>,
}
