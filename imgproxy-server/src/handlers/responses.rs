//! `POST /v1/responses` with the `image_generation` tool: the tool call is read into an image
//! request (`imgproxy_core::surface::responses`) and served exactly like
//! `/v1/images/generations`; the answer is a `response` whose output is one
//! `image_generation_call` item per image, or, for `stream: true`, the Responses API's events
//! (`response.created` ... `response.image_generation_call.partial_image` ...
//! `response.completed`).

use axum::{
    body::Bytes,
    extract::State,
    http::HeaderMap,
    response::{IntoResponse, Response},
    Extension, Json,
};
use imgproxy_core::{
    provider::{ImageMeta, PartialImage},
    service::Served,
    surface::{
        responses::{self, ResponsesRequest, ToolCall},
        Translated,
    },
    Error, ErrorBody,
};
use serde_json::{json, Value};

use crate::{
    auth::Caller,
    error::ApiError,
    extract::OpenAIJson,
    handlers::{generations, stream},
    state::AppState,
    telemetry::RequestNote,
};

/// What idempotency keys of this endpoint are fingerprinted under.
const ENDPOINT: &str = "responses";

/// Runs a response's `image_generation` tool.
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(note): Extension<RequestNote>,
    headers: HeaderMap,
    OpenAIJson(body): OpenAIJson<ResponsesRequest>,
) -> Result<Response, ApiError> {
    let streams = body.stream == Some(true);
    let catalog = state.service.gateway().catalog();
    let (mut translated, call) =
        responses::translate(body, state.responses_image_model.as_deref(), &|model| {
            !catalog.variants(model).is_empty()
        })?;
    translated.fit(catalog)?;
    let Translated { request, paths, .. } = translated;
    if let Some(model) = &request.model {
        note.model(model);
    }
    let answer = Answer {
        id: format!("resp_{}", note.id().as_str()),
        created_at: imgproxy_core::clock::now_secs(),
        call,
    };
    if streams {
        let shape = Box::new(ResponseStream {
            answer,
            sequence: 0,
        });
        return generations::open_stream(state, caller, &note, &headers, request, ENDPOINT, shape)
            .await
            .map_err(|e| e.in_terms_of(&paths));
    }
    let (served, replayed) =
        generations::run(state.clone(), caller, &note, &headers, request, ENDPOINT)
            .await
            .map_err(|e| e.in_terms_of(&paths))?;
    let mut response = Json(answer.completed(&state, &served)).into_response();
    generations::annotate(&mut response, &served, replayed);
    Ok(response)
}

/// What every event of one response names.
struct Answer {
    id: String,
    created_at: i64,
    call: ToolCall,
}

impl Answer {
    /// The id of the output item of image `index`.
    fn item_id(&self, index: usize) -> String {
        let id = responses::call_id(&self.id);
        if index == 0 {
            id
        } else {
            format!("{id}_{index}")
        }
    }

    /// The item of image `index` while it is made.
    fn item_in_progress(&self, index: usize) -> Value {
        let meta = ImageMeta::default();
        responses::output_item(
            &self.item_id(index),
            "in_progress",
            self.call.action,
            None,
            &meta,
            None,
        )
    }

    /// The response in `status` with `output`.
    fn response(&self, status: &str, output: Vec<Value>, error: Option<&ErrorBody>) -> Value {
        responses::response_object(
            &self.id,
            self.created_at,
            &self.call,
            status,
            output,
            error,
            None,
        )
    }

    /// The completed response: one item per served image, with its base64 and metadata.
    fn completed(&self, state: &AppState, served: &Served) -> Value {
        let answer = state.service.response(served);
        let output = answer
            .data
            .iter()
            .enumerate()
            .map(|(index, data)| {
                responses::output_item(
                    &self.item_id(index),
                    "completed",
                    self.call.action,
                    data.b64_json.as_deref(),
                    &answer.meta,
                    data.revised_prompt.as_deref(),
                )
            })
            .collect();
        let mut response = responses::response_object(
            &self.id,
            self.created_at,
            &self.call,
            "completed",
            output,
            None,
            answer.usage.as_ref(),
        );
        if let Some(credits) = answer.credits_used {
            response["credits_used"] = credits.into();
        }
        response
    }
}

/// The Responses API's events for one response, numbered in order.
struct ResponseStream {
    answer: Answer,
    sequence: u64,
}

impl ResponseStream {
    /// The event `kind` with `fields`, and its sequence number.
    fn event(&mut self, kind: &str, fields: Value) -> Bytes {
        let mut data = json!({"type": kind, "sequence_number": self.sequence});
        if let (Some(data), Value::Object(fields)) = (data.as_object_mut(), fields) {
            data.extend(fields);
        }
        self.sequence += 1;
        stream::sse(kind, &data)
    }

    /// The events of image `index`'s item beginning: added, in progress, generating.
    fn item_started(&mut self, index: usize) -> Vec<Bytes> {
        let item = self.answer.item_in_progress(index);
        let item_id = self.answer.item_id(index);
        vec![
            self.event(
                "response.output_item.added",
                json!({"output_index": index, "item": item}),
            ),
            self.event(
                "response.image_generation_call.in_progress",
                json!({"output_index": index, "item_id": item_id}),
            ),
            self.event(
                "response.image_generation_call.generating",
                json!({"output_index": index, "item_id": item_id}),
            ),
        ]
    }
}

impl stream::Shape for ResponseStream {
    fn opening(&mut self) -> Vec<Bytes> {
        let response = self.answer.response("in_progress", Vec::new(), None);
        let mut events = vec![
            self.event("response.created", json!({"response": response})),
            self.event("response.in_progress", json!({"response": response})),
        ];
        events.extend(self.item_started(0));
        events
    }

    fn partial(&mut self, partial: &PartialImage) -> Bytes {
        let item_id = self.answer.item_id(0);
        let mut fields = json!({
            "output_index": 0,
            "item_id": item_id,
            "partial_image_index": partial.index,
            "partial_image_b64": partial.b64_json,
        });
        for (name, value) in [
            ("background", &partial.meta.background),
            ("output_format", &partial.meta.output_format),
            ("quality", &partial.meta.quality),
            ("size", &partial.meta.size),
        ] {
            if let Some(value) = value {
                fields[name] = value.clone().into();
            }
        }
        self.event("response.image_generation_call.partial_image", fields)
    }

    fn completed(&mut self, state: &AppState, served: &Served) -> Vec<Bytes> {
        let response = self.answer.completed(state, served);
        let items = response["output"].as_array().cloned().unwrap_or_default();
        let mut events = Vec::new();
        for (index, item) in items.into_iter().enumerate() {
            if index > 0 {
                events.extend(self.item_started(index));
            }
            let item_id = self.answer.item_id(index);
            events.push(self.event(
                "response.image_generation_call.completed",
                json!({"output_index": index, "item_id": item_id}),
            ));
            events.push(self.event(
                "response.output_item.done",
                json!({"output_index": index, "item": item}),
            ));
        }
        events.push(self.event("response.completed", json!({"response": response})));
        events
    }

    fn failed(&mut self, error: &Error) -> Vec<Bytes> {
        let body = ErrorBody::from(error);
        let response = self.answer.response("failed", Vec::new(), Some(&body));
        vec![
            self.event(
                "error",
                json!({"code": body.code.as_deref().unwrap_or(&body.kind), "message": body.message, "param": body.param}),
            ),
            self.event("response.failed", json!({"response": response})),
        ]
    }
}
