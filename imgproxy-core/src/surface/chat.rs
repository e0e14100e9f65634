//! `POST /v1/chat/completions` for image models, as OpenRouter documents it: the request
//! (`messages`, `modalities`, `image_config`) read into an image request, and the answer with
//! the images in `choices[0].message.images` (streamed: `delta.images`).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::{image_request, ParamPaths, References, Translated};
use crate::{Error, ImageInput, Usage};

/// Sampling and text-output parameters chat clients send by habit. They mean nothing to an
/// image model and are accepted without effect, so that a chat front end works unchanged.
pub const IGNORED: &[&str] = &[
    "temperature",
    "top_p",
    "top_k",
    "max_tokens",
    "max_completion_tokens",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "stop",
    "stream_options",
    "parallel_tool_calls",
    "reasoning",
    "reasoning_effort",
    "verbosity",
    "metadata",
    "store",
    "service_tier",
    "transforms",
    "usage",
];

/// Parameters of the image request that a chat completion carries elsewhere (in `messages`)
/// or that have no meaning in a chat answer.
const MISPLACED: &[(&str, &str)] = &[
    ("prompt", "the prompt is the text of the last user message in `messages`"),
    ("image", "reference images are `image_url` parts of user messages"),
    ("images", "reference images are `image_url` parts of user messages"),
    ("async", "chat completions answer when the images are made; use /v1/images/generations with `async` for tasks"),
    ("callback_url", "chat completions answer when the images are made; use /v1/images/generations with `async` for tasks"),
    ("partial_images", "chat completions stream the finished images; use /v1/images/generations or /v1/responses for partial images"),
    ("tools", "imgproxy serves image models only: tools are for text models"),
    ("tool_choice", "imgproxy serves image models only: tools are for text models"),
    ("functions", "imgproxy serves image models only: tools are for text models"),
];

/// The body of `POST /v1/chat/completions` for an image model.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(default)]
pub struct ChatRequest {
    /// An image model of the catalog.
    pub model: Option<String>,
    /// The conversation: the last user message's text is the prompt, its `image_url` parts
    /// (and the latest image the assistant made) are reference images.
    pub messages: Vec<ChatMessage>,
    /// Must include `image` when given (`["image", "text"]` or `["image"]`).
    pub modalities: Option<Vec<String>>,
    /// `aspect_ratio` and `image_size` (`1K`, `2K`, `4K`), and any other parameter the model
    /// takes.
    pub image_config: Option<Map<String, Value>>,
    /// Number of images.
    pub n: Option<u32>,
    /// Stream the answer as `chat.completion.chunk`s.
    pub stream: Option<bool>,
    /// End-user identifier.
    pub user: Option<String>,
    /// `url` for stored-image URLs instead of data URLs (imgproxy extension); the object
    /// form `{"type": "text"}` is accepted and means nothing here.
    pub response_format: Option<Value>,
    /// Catalog parameters of the model (`seed`, `quality`, ...) and imgproxy's extensions
    /// (`models`, `provider`, `reroll`).
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// One message of the conversation.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(default)]
pub struct ChatMessage {
    /// `system`, `developer`, `user`, `assistant` or `tool`.
    pub role: String,
    /// Text, or a list of `text` and `image_url` parts.
    pub content: Option<Content>,
    /// Images an assistant message carries (OpenRouter's shape of an earlier answer).
    pub images: Option<Vec<Value>>,
}

/// A message's content.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Parts: `{"type": "text", "text"}`, `{"type": "image_url", "image_url": {"url"}}`.
    Parts(Vec<Value>),
}

/// Reads a chat completion into the image request it asks for.
pub fn translate(chat: ChatRequest) -> Result<Translated, Error> {
    if let Some(modalities) = &chat.modalities {
        if !modalities.iter().any(|m| m == "image") {
            return Err(Error::invalid_param(
                "modalities",
                "imgproxy serves image models only: `modalities` must include `image`",
            ));
        }
    }
    let mut paths = ParamPaths::default();
    paths.insert("prompt", "messages");
    let (prompt, references, carried_image) = read_messages(&chat.messages)?;
    let mut fields = Map::new();
    fields.insert("prompt".into(), prompt.into());
    references.record(&mut fields, &mut paths, "messages");
    for (name, value) in [
        ("model", chat.model.map(Value::from)),
        ("n", chat.n.map(Value::from)),
        ("user", chat.user.map(Value::from)),
        ("response_format", response_format(chat.response_format)?),
    ] {
        if let Some(value) = value {
            fields.insert(name.into(), value);
        }
    }
    let mut params = Vec::new();
    for (name, value) in chat.image_config.unwrap_or_default() {
        let path = format!("image_config.{name}");
        params.push((name, value, path));
    }
    for (name, value) in chat.extra {
        if IGNORED.contains(&name.as_str()) {
            continue;
        }
        if let Some((_, why)) = MISPLACED.iter().find(|(n, _)| *n == name) {
            return Err(Error::invalid_param(name, *why));
        }
        params.push((name.clone(), value, name));
    }
    let request = image_request(fields, params, &mut paths)?;
    Ok(Translated {
        request,
        paths,
        carried_image,
    })
}

/// `response_format`: chat's object form means text output and is ignored unless it asks
/// for JSON; a string picks how images come back.
fn response_format(format: Option<Value>) -> Result<Option<Value>, Error> {
    match format {
        None => Ok(None),
        Some(Value::String(format)) => Ok(Some(format.into())),
        Some(Value::Object(object)) if object.get("type") == Some(&json!("text")) => Ok(None),
        Some(_) => Err(Error::invalid_param(
            "response_format",
            "imgproxy serves image models only: `response_format` is `url` or `b64_json`",
        )),
    }
}

/// The prompt (the text of the last user message) and the reference images: the latest
/// image the assistant made, then those the user attached after it (or all of them when
/// the assistant has made none); and whether there is such an image of the assistant.
fn read_messages(messages: &[ChatMessage]) -> Result<(String, References, bool), Error> {
    let last_user = messages
        .iter()
        .rposition(|m| m.role == "user")
        .ok_or_else(|| {
            Error::invalid_param(
                "messages",
                "`messages` needs a user message: its text is the prompt",
            )
        })?;
    let last_image = messages.iter().enumerate().rev().find_map(|(i, m)| {
        (m.role == "assistant")
            .then(|| assistant_image(i, m))
            .flatten()
    });
    let mut references = References::default();
    let carried = last_image.is_some();
    let from = match last_image {
        Some((i, url, path)) => {
            references.push(ImageInput::Text(url), path);
            i + 1
        }
        None => 0,
    };
    let mut prompt = String::new();
    for (i, message) in messages.iter().enumerate().skip(from) {
        if message.role != "user" {
            continue;
        }
        for (j, part) in parts(message).iter().enumerate() {
            let path = match &message.content {
                Some(Content::Parts(_)) => format!("messages[{i}].content[{j}]"),
                _ => format!("messages[{i}].content"),
            };
            match part {
                Part::Text(text) if i == last_user => {
                    if !prompt.is_empty() {
                        prompt.push('\n');
                    }
                    prompt.push_str(text);
                }
                Part::Text(_) => {}
                Part::Image(url) => references.push(ImageInput::Text(url.clone()), path),
                Part::Other(kind) => {
                    return Err(Error::invalid_param(
                        path,
                        format!("a `{kind}` part cannot be read: user messages take `text` and `image_url` parts"),
                    ))
                }
            }
        }
    }
    Ok((prompt, references, carried))
}

/// A part of a message's content.
enum Part {
    Text(String),
    Image(String),
    Other(String),
}

fn parts(message: &ChatMessage) -> Vec<Part> {
    match &message.content {
        None => Vec::new(),
        Some(Content::Text(text)) => vec![Part::Text(text.clone())],
        Some(Content::Parts(parts)) => parts.iter().map(part).collect(),
    }
}

fn part(value: &Value) -> Part {
    let kind = value.get("type").and_then(Value::as_str).unwrap_or("");
    match kind {
        "text" => Part::Text(
            value
                .get("text")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
        ),
        "image_url" => match image_url(value) {
            Some(url) => Part::Image(url),
            None => Part::Other("image_url without a url".into()),
        },
        other => Part::Other(other.to_owned()),
    }
}

/// The URL of an `image_url` part: `{"image_url": {"url"}}`, or `{"image_url": "..."}`.
fn image_url(part: &Value) -> Option<String> {
    let image_url = part.get("image_url")?;
    image_url
        .get("url")
        .unwrap_or(image_url)
        .as_str()
        .map(str::to_owned)
}

/// The last image of assistant message `index`: in its `images`, else in its content parts.
fn assistant_image(index: usize, message: &ChatMessage) -> Option<(usize, String, String)> {
    if let Some(images) = &message.images {
        if let Some((j, url)) = images
            .iter()
            .enumerate()
            .rev()
            .find_map(|(j, image)| image_url(image).map(|url| (j, url)))
        {
            return Some((index, url, format!("messages[{index}].images[{j}]")));
        }
    }
    parts(message)
        .into_iter()
        .enumerate()
        .rev()
        .find_map(|(j, part)| match part {
            Part::Image(url) => Some((index, url, format!("messages[{index}].content[{j}]"))),
            _ => None,
        })
}

/// An image of an answer, as OpenRouter shapes it.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct ChatImage {
    /// Always `image_url`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Where the image is.
    pub image_url: ImageUrl,
}

/// A data URL or a stored image's URL.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct ImageUrl {
    /// `data:image/png;base64,...` or `https://.../images/...`.
    pub url: String,
}

impl ChatImage {
    /// The image at `url`.
    pub fn new(url: String) -> Self {
        Self {
            kind: "image_url",
            image_url: ImageUrl { url },
        }
    }
}

/// The assistant's message.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct ChatAnswer {
    /// Always `assistant`.
    pub role: &'static str,
    /// The model's text: the prompt it used when it rewrote it, else null.
    pub content: Option<String>,
    /// The images.
    pub images: Vec<ChatImage>,
}

/// One choice of a chat completion.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Choice {
    /// Always 0: every image is in the one message.
    pub index: u32,
    /// The answer.
    pub message: ChatAnswer,
    /// Always `stop`.
    pub finish_reason: &'static str,
}

/// Token usage in chat's names.
#[derive(Debug, Clone, Default, PartialEq, Serialize, JsonSchema)]
pub struct ChatUsage {
    /// Input tokens.
    pub prompt_tokens: u64,
    /// Output tokens.
    pub completion_tokens: u64,
    /// Their sum.
    pub total_tokens: u64,
}

impl From<&Usage> for ChatUsage {
    fn from(usage: &Usage) -> Self {
        let prompt_tokens = usage.input_tokens.unwrap_or(0);
        let completion_tokens = usage.output_tokens.unwrap_or(0);
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: usage
                .total_tokens
                .unwrap_or(prompt_tokens + completion_tokens),
        }
    }
}

/// `chat.completion`: the answer of a chat completion that made images.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct ChatCompletion {
    /// `chatcmpl-...`.
    pub id: String,
    /// Always `chat.completion`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: i64,
    /// The catalog model that made the images.
    pub model: String,
    /// One choice holding every image.
    pub choices: Vec<Choice>,
    /// Token usage, where the provider reports it.
    pub usage: Option<ChatUsage>,
    /// Credits charged (metered keys only).
    pub credits_used: Option<u64>,
}

impl ChatCompletion {
    /// The answer with `images` (URLs), `text` and `usage`.
    pub fn new(
        id: String,
        model: String,
        images: Vec<String>,
        text: Option<String>,
        usage: Option<&Usage>,
    ) -> Self {
        Self {
            id,
            object: "chat.completion",
            created: crate::clock::now_secs(),
            model,
            choices: vec![Choice {
                index: 0,
                message: ChatAnswer {
                    role: "assistant",
                    content: text,
                    images: images.into_iter().map(ChatImage::new).collect(),
                },
                finish_reason: "stop",
            }],
            usage: usage.map(ChatUsage::from),
            credits_used: None,
        }
    }

    /// The same answer as `chat.completion.chunk`s: the message (role, text, images), then
    /// the end with the usage.
    pub fn into_chunks(self) -> [Value; 2] {
        let head = json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model});
        let mut delta = head.clone();
        let message = self.choices.into_iter().next().map(|c| c.message);
        delta["choices"] = json!([{"index": 0, "delta": message, "finish_reason": null}]);
        let mut end = head;
        end["choices"] = json!([{"index": 0, "delta": {}, "finish_reason": "stop"}]);
        if let Some(usage) = self.usage {
            end["usage"] = json!(usage);
        }
        if let Some(credits) = self.credits_used {
            end["credits_used"] = json!(credits);
        }
        [delta, end]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(body: Value) -> Result<Translated, Error> {
        translate(serde_json::from_value(body).unwrap())
    }

    #[test]
    fn openrouters_request_becomes_the_image_request() {
        let translated = chat(json!({
            "model": "nano-banana-2",
            "messages": [
                {"role": "system", "content": "You are helpful."},
                {"role": "user", "content": [
                    {"type": "text", "text": "a lighthouse"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
                ]}
            ],
            "modalities": ["image", "text"],
            "image_config": {"aspect_ratio": "16:9", "image_size": "2K"},
            "temperature": 0.7,
            "seed": 7
        }))
        .unwrap();
        let request = translated.request;
        assert_eq!(request.model.as_deref(), Some("nano-banana-2"));
        assert_eq!(request.prompt.as_deref(), Some("a lighthouse"));
        assert_eq!(request.aspect_ratio.as_deref(), Some("16:9"));
        assert_eq!(request.image_size.as_deref(), Some("2K"));
        assert_eq!(request.seed, Some(7));
        assert!(request.extra.is_empty(), "temperature is dropped");
        assert_eq!(
            request.images,
            Some(vec![ImageInput::Text("data:image/png;base64,AAAA".into())])
        );
        let paths = translated.paths;
        assert_eq!(paths.path("image_size"), "image_config.image_size");
        assert_eq!(paths.path("image"), "messages[1].content[1]");
        assert_eq!(paths.path("prompt"), "messages");
    }

    #[test]
    fn the_latest_assistant_image_is_the_one_edited() {
        let translated = chat(json!({
            "model": "nano-banana-2",
            "messages": [
                {"role": "user", "content": [{"type": "image_url", "image_url": "https://example.com/old.png"}, {"type": "text", "text": "a cat"}]},
                {"role": "assistant", "content": null, "images": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,CAT"}}]},
                {"role": "user", "content": "make it blue"}
            ]
        }))
        .unwrap();
        assert_eq!(translated.request.prompt.as_deref(), Some("make it blue"));
        assert_eq!(
            translated.request.images,
            Some(vec![ImageInput::Text("data:image/png;base64,CAT".into())])
        );
        assert_eq!(translated.paths.path("image"), "messages[1].images[0]");
    }

    #[test]
    fn a_model_without_references_draws_anew_and_a_text_model_is_refused() {
        let catalog = crate::Catalog::embedded().unwrap();
        let conversation = |model: &str| {
            json!({
                "model": model,
                "messages": [
                    {"role": "user", "content": "a cat"},
                    {"role": "assistant", "images": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,CAT"}}]},
                    {"role": "user", "content": "make it blue"}
                ]
            })
        };
        let mut edits = chat(conversation("nano-banana-2")).unwrap();
        edits.request.user = Some("end-user-1".into());
        edits.fit(&catalog).unwrap();
        assert_eq!(edits.request.images.map(|i| i.len()), Some(1));
        assert_eq!(
            edits.request.user, None,
            "a chat client's habitual `user` means nothing to a model that takes none"
        );
        // FLUX.1 [schnell] on Together takes no reference image.
        let mut draws = chat(conversation("flux-schnell")).unwrap();
        draws.fit(&catalog).unwrap();
        assert_eq!(draws.request.images, None);
        let mut text = chat(conversation("gpt-4o")).unwrap();
        let refused = text.fit(&catalog).unwrap_err();
        assert_eq!((refused.status(), refused.param()), (400, Some("model")));
    }

    #[test]
    fn what_an_image_model_cannot_do_is_refused_by_name() {
        let no_image =
            chat(json!({"messages": [{"role": "user", "content": "hi"}], "modalities": ["text"]}));
        assert_eq!(no_image.unwrap_err().param(), Some("modalities"));
        let no_user = chat(json!({"messages": [{"role": "system", "content": "hi"}]}));
        assert_eq!(no_user.unwrap_err().param(), Some("messages"));
        let audio =
            chat(json!({"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}));
        assert_eq!(audio.unwrap_err().param(), Some("messages[0].content[0]"));
        let tools = chat(json!({"messages": [{"role": "user", "content": "hi"}], "tools": []}));
        assert_eq!(tools.unwrap_err().param(), Some("tools"));
        let twice = chat(
            json!({"messages": [{"role": "user", "content": "hi"}], "image_config": {"seed": 1}, "seed": 2}),
        );
        assert_eq!(twice.unwrap_err().param(), Some("seed"));
        let json_mode = chat(
            json!({"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "json_object"}}),
        );
        assert_eq!(json_mode.unwrap_err().param(), Some("response_format"));
    }

    #[test]
    fn the_answer_puts_images_in_the_message_and_streams_as_two_chunks() {
        let usage = Usage {
            input_tokens: Some(3),
            output_tokens: Some(5),
            ..Usage::default()
        };
        let answer = ChatCompletion::new(
            "chatcmpl-1".into(),
            "nano-banana-2".into(),
            vec!["data:image/png;base64,AA".into()],
            None,
            Some(&usage),
        );
        let value = serde_json::to_value(&answer).unwrap();
        assert_eq!(
            value["choices"][0]["message"]["images"][0]["image_url"]["url"],
            "data:image/png;base64,AA"
        );
        assert_eq!(value["choices"][0]["message"]["content"], Value::Null);
        assert_eq!(value["usage"]["total_tokens"], 8);
        let [delta, end] = answer.into_chunks();
        assert_eq!(delta["object"], "chat.completion.chunk");
        assert_eq!(
            delta["choices"][0]["delta"]["images"][0]["type"],
            "image_url"
        );
        assert_eq!(end["choices"][0]["finish_reason"], "stop");
        assert_eq!(end["usage"]["prompt_tokens"], 3);
    }
}
