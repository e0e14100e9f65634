//! `POST /v1/chat/completions` for image models, in OpenRouter's shape: the conversation is
//! read into an image request (`imgproxy_core::surface::chat`) and served exactly like
//! `/v1/images/generations` (validation, credits, cache, idempotency); the answer is a
//! `chat.completion` with the images in `choices[0].message.images`, or its chunks with
//! `delta.images` for `stream: true`.

use axum::{
    body::Bytes,
    extract::State,
    http::HeaderMap,
    response::{IntoResponse, Response},
    Extension, Json,
};
use imgproxy_core::{
    provider::PartialImage,
    service::Served,
    surface::{
        chat::{self, ChatCompletion, ChatRequest},
        data_url, Translated,
    },
    Error,
};

use crate::{
    auth::Caller,
    error::ApiError,
    extract::OpenAIJson,
    handlers::{generations, stream},
    state::AppState,
    telemetry::RequestNote,
};

/// What idempotency keys of this endpoint are fingerprinted under.
const ENDPOINT: &str = "chat";

/// Makes images for a chat completion.
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(note): Extension<RequestNote>,
    headers: HeaderMap,
    OpenAIJson(body): OpenAIJson<ChatRequest>,
) -> Result<Response, ApiError> {
    let streams = body.stream == Some(true);
    let mut translated = chat::translate(body)?;
    translated.fit(state.service.gateway().catalog())?;
    let Translated {
        mut request, paths, ..
    } = translated;
    caller.fill_response_format(&mut request);
    if let Some(model) = &request.model {
        note.model(model);
    }
    let id = format!("chatcmpl-{}", note.id().as_str());
    if streams {
        let shape = Box::new(ChatStream { id });
        return generations::open_stream(state, caller, &note, &headers, request, ENDPOINT, shape)
            .await
            .map_err(|e| e.in_terms_of(&paths));
    }
    let (served, replayed) =
        generations::run(state.clone(), caller, &note, &headers, request, ENDPOINT)
            .await
            .map_err(|e| e.in_terms_of(&paths))?;
    let mut response = Json(completion(&state, &served, id)).into_response();
    generations::annotate(&mut response, &served, replayed);
    Ok(response)
}

/// The chat completion of a served request: each image as a data URL, or as the stored
/// image's URL when the request (or the key's or server's default) asked for URLs.
fn completion(state: &AppState, served: &Served, id: String) -> ChatCompletion {
    let response = state.service.response(served);
    let text = response
        .data
        .iter()
        .find_map(|data| data.revised_prompt.clone());
    let urls = served
        .images
        .iter()
        .zip(response.data)
        .map(|(image, data)| match (data.url, data.b64_json) {
            (Some(url), _) => url,
            (None, b64) => data_url(&image.mime, b64.as_deref().unwrap_or_default()),
        })
        .collect();
    let mut answer = ChatCompletion::new(
        id,
        served.model.id.clone(),
        urls,
        text,
        response.usage.as_ref(),
    );
    answer.credits_used = response.credits_used;
    answer
}

/// A chat completion's stream: the message with its images in one chunk, the end with the
/// usage in another, then `[DONE]`.
struct ChatStream {
    id: String,
}

impl stream::Shape for ChatStream {
    fn partial(&mut self, _: &PartialImage) -> Bytes {
        // Chat refuses `partial_images` (see `surface::chat`), so none arrive; a comment keeps
        // the stream valid should one.
        Bytes::from_static(b": partial image\n\n")
    }

    fn completed(&mut self, state: &AppState, served: &Served) -> Vec<Bytes> {
        let answer = completion(state, served, std::mem::take(&mut self.id));
        let mut events: Vec<Bytes> = answer.into_chunks().iter().map(stream::data).collect();
        events.push(Bytes::from_static(b"data: [DONE]\n\n"));
        events
    }

    fn failed(&mut self, error: &Error) -> Vec<Bytes> {
        vec![stream::data(&stream::error_envelope(error))]
    }
}
