//! DashScope's wire types (providers-2.md §8.3–§8.5): the request bodies of both endpoints,
//! the one loose answer shape they and the task poll share, and the catalog's
//! `upstream_input` for DashScope models. Private to the crate.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A DashScope model's `upstream_input` table in the catalog.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct InputMapping {
    /// Which API generates: the synchronous one unless the catalog says otherwise.
    pub endpoint: Endpoint,
    /// `W:H` → the listed `WxH` size that stands for it, for models whose fixed sizes are
    /// only near that ratio (`16:9` is `1664x928`).
    pub ratio_sizes: BTreeMap<String, String>,
}

/// DashScope's two generation APIs (providers-2.md §8.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub(crate) enum Endpoint {
    /// `POST services/aigc/multimodal-generation/generation`: one call, images in the answer.
    #[default]
    #[serde(rename = "multimodal-generation")]
    MultimodalGeneration,
    /// `POST services/aigc/text2image/image-synthesis` with `X-DashScope-Async: enable`, then
    /// `GET tasks/{id}`: `qwen-image` and `qwen-image-plus` only.
    #[serde(rename = "text2image")]
    Text2Image,
}

/// The body of either endpoint: `input` is the messages of the synchronous API or the prompt
/// of the task API; `parameters` are the same for both.
#[derive(Debug, Serialize)]
pub(crate) struct GenerationRequest<'a, I> {
    pub model: &'a str,
    pub input: I,
    pub parameters: Map<String, Value>,
}

/// The synchronous API's `input`: exactly one user message.
#[derive(Debug, Serialize)]
pub(crate) struct MessagesInput<'a> {
    pub messages: [Message<'a>; 1],
}

/// One chat-style message: its images (data URLs) and its one text.
#[derive(Debug, Serialize)]
pub(crate) struct Message<'a> {
    pub role: &'static str,
    pub content: Vec<Content<'a>>,
}

/// One item of a message's `content`: one key each, no `type`.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub(crate) enum Content<'a> {
    Image { image: String },
    Text { text: &'a str },
}

/// The task API's `input`.
#[derive(Debug, Serialize)]
pub(crate) struct PromptInput<'a> {
    pub prompt: &'a str,
}

/// Every answer DashScope gives, loose on purpose: a synchronous result (`output.choices`), a
/// submitted or polled task (`output.task_status`), or an error (`code`, `message`), which may
/// come with HTTP 200 too.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Answer {
    pub code: Option<String>,
    pub message: Option<String>,
    pub output: Option<Output>,
}

/// `output` of an answer.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Output {
    /// Synchronous results: each choice's `message.content[].image`.
    pub choices: Vec<Choice>,
    pub task_id: Option<String>,
    /// `PENDING`, `RUNNING`, `SUCCEEDED`, `FAILED`, `CANCELED` or `UNKNOWN`.
    pub task_status: Option<String>,
    /// A finished task's images.
    pub results: Vec<TaskResult>,
    /// Why a task failed.
    pub code: Option<String>,
    pub message: Option<String>,
}

/// One choice of a synchronous answer.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Choice {
    pub message: ChoiceMessage,
}

/// A choice's message.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ChoiceMessage {
    pub content: Vec<ContentOut>,
}

/// One item of an answer's content: an image URL, or base64 (raw or a data URL).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ContentOut {
    pub image: Option<String>,
}

/// One image of a finished task, or why it is missing.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct TaskResult {
    pub url: Option<String>,
    /// The prompt after DashScope's rewrite (`prompt_extend`).
    pub actual_prompt: Option<String>,
    pub code: Option<String>,
    pub message: Option<String>,
}
