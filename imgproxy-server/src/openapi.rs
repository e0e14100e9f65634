//! `GET /openapi.json`: the OpenAPI 3.1 document of the HTTP API. [`ROUTES`] says, as data, what
//! each route and method takes and answers; the schemas are schemars' of the very types the
//! handlers read and answer with (JSON Schema 2020-12, OpenAPI 3.1's dialect). A new route
//! gets its entry here (the router test fails until it has one).

use std::sync::LazyLock;

use axum::{http::header, response::IntoResponse};
use imgproxy_core::{
    service::{
        db::{ApiKey, CreatedKey, KeyChange, NewKey},
        files::{FileObject, PURPOSES},
        tasks::TaskObject,
    },
    surface::{
        chat::{ChatCompletion, ChatRequest},
        responses::ResponsesRequest,
    },
    ErrorEnvelope, ImageRequest, ImageResponse,
};
use schemars::{generate::SchemaSettings, json_schema, JsonSchema, Schema, SchemaGenerator};
use serde_json::{json, Map, Value};

use crate::handlers::{
    admin::Credit,
    console::{
        DeliveryFilter, DeliveryLine, LedgerFilter, LedgerLine, Summary, TaskFilter, TaskLine,
    },
    credits::Credits,
    estimate::Estimate,
    files::{DeletedFile, FilePage, ListQuery},
    health::{Health, Readiness},
    history::{Generation, HistoryQuery},
    models::{Filters, ModelObject},
    seed002::{GenerateRequest, Submitted},
    seed004::{SeedCreated, SeedError, SeedRequest},
    signed_urls::{SignRequest, SignedUrl},
    tasks::{SeedPoll, TaskQuery, WebhookSecret},
    List,
};
use crate::seed003::{InferenceJob, SeedRequest as Seed003Request};

/// Where a schema comes from: a generator call, so that named types become `$ref`s into
/// `components.schemas`.
type SchemaOf = fn(&mut SchemaGenerator) -> Schema;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone.
    Public,
    /// A Bearer key (the master key or an issued one); none on a server without a master key.
    Bearer,
    /// The URL API: a Bearer key, a signed URL (`kid`, `exp`, `sig`) or public mode.
    BearerOrSigned,
}

/// One route and method of the router.
#[derive(Debug)]
pub struct Route {
    /// `get`, `post`, `patch` or `delete`.
    pub method: &'static str,
    /// The path as the router spells it (`{id}` for a parameter; OpenAPI spells it the same).
    pub path: &'static str,
    /// A unique name for code generators.
    pub id: &'static str,
    /// What it does.
    pub summary: &'static str,
    /// Who may call it.
    pub access: Access,
    /// An object schema whose properties are the query parameters.
    pub query: Option<SchemaOf>,
    /// Whether `Prefer: respond-async` and `Idempotency-Key` apply (generations and edits).
    pub prefer: bool,
    /// The request body, by media type.
    pub body: &'static [(&'static str, SchemaOf)],
    /// An example JSON body (what the fuzzer tries first).
    pub example: Option<fn() -> Value>,
    /// Success answers: status and body by media type (none for a bodiless answer).
    pub answers: &'static [(u16, &'static [(&'static str, SchemaOf)])],
    /// Error statuses, each answered with OpenAI's error envelope.
    pub errors: &'static [u16],
}

fn of<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

fn inline<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    T::json_schema(generator)
}

fn prometheus_text(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "string", "description": "Prometheus text exposition format 0.0.4."})
}

/// A page or a file of the web UI, as text.
fn text(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "string"})
}

fn binary(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "string", "format": "binary"})
}

/// One Server-Sent Event of a `text/event-stream` answer, as a client parses it: before
/// OpenAPI 3.2's `itemSchema`, a stream's `schema` describes each event (its `event` name and
/// its `data` lines joined), not the body as one string, and fuzzers check each event by it.
fn sse_event(description: &str) -> Schema {
    json_schema!({
        "type": "object",
        "description": description,
        "required": ["data"],
        "properties": {
            "event": {"type": "string"},
            "data": {"type": "string"},
            "id": {"type": "string"},
            "retry": {"type": "integer"}
        }
    })
}

fn events(_: &mut SchemaGenerator) -> Schema {
    sse_event("OpenAI's Server-Sent Events (`stream: true`): `image_generation.partial_image` / `image_edit.partial_image` events, one `*.completed` event per image, `: keep-alive` comments, and a failure as `data: {\"error\": {...}}`.")
}

fn chat_chunks(_: &mut SchemaGenerator) -> Schema {
    sse_event("`stream: true`: `data:` lines of `chat.completion.chunk` objects (the message with `delta.images`, then the end with `finish_reason` and `usage`), `: keep-alive` comments, `data: [DONE]`; a failure as `data: {\"error\": {...}}`.")
}

fn response_events(_: &mut SchemaGenerator) -> Schema {
    sse_event("`stream: true`: the Responses API's events `response.created`, `response.in_progress`, `response.output_item.added`, `response.image_generation_call.in_progress`, `.generating`, `.partial_image`, `.completed`, `response.output_item.done` and `response.completed`; a failure as `error` then `response.failed`.")
}

fn response_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "required": ["id", "object", "status", "output"],
        "properties": {
            "id": {"type": "string"},
            "object": {"const": "response"},
            "created_at": {"type": "integer"},
            "status": {"type": "string"},
            "model": {"type": "string"},
            "output": {"type": "array", "items": {
                "type": "object",
                "required": ["type", "id", "status"],
                "properties": {
                    "type": {"const": "image_generation_call"},
                    "id": {"type": "string"},
                    "status": {"type": "string"},
                    "action": {"type": "string"},
                    "result": {"type": ["string", "null"], "description": "The image, base64."},
                    "revised_prompt": {"type": "string"},
                    "size": {"type": "string"},
                    "quality": {"type": "string"},
                    "background": {"type": "string"},
                    "output_format": {"type": "string"}
                }
            }},
            "usage": {"type": ["object", "null"]},
            "credits_used": {"type": "integer"}
        }
    })
}

fn any_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "object"})
}

/// The multipart form of `POST /v1/images/edits`, as OpenAI's SDKs send it: its text parts are
/// typed by the model they name, so they are strings here.
fn edit_form(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "required": ["image"],
        "properties": {
            "image": {"type": "array", "items": {"type": "string", "format": "binary"},
                      "description": "The images to edit (also `image[]`)."},
            "mask": {"type": "string", "format": "binary",
                     "description": "Its transparent areas are edited, on models that take a mask."},
            "prompt": {"type": "string"},
            "model": {"type": "string"},
            "n": {"type": "string"},
            "size": {"type": "string"},
            "quality": {"type": "string"},
            "background": {"type": "string"},
            "input_fidelity": {"type": "string"},
            "output_format": {"type": "string"},
            "output_compression": {"type": "string"},
            "response_format": {"type": "string"},
            "stream": {"type": "string"},
            "partial_images": {"type": "string"},
            "user": {"type": "string"}
        },
        "additionalProperties": {"type": "string", "description": "Any parameter the model's catalog entry declares."}
    })
}

/// The multipart form of `POST /v1/files`.
fn file_form(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "required": ["file", "purpose"],
        "properties": {
            "file": {"type": "string", "format": "binary", "description": "An image."},
            "purpose": {"type": "string", "enum": PURPOSES}
        },
        "additionalProperties": false
    })
}

/// The URL API's query (seed 000): what is not listed is a model parameter, typed by the
/// model's catalog entry.
fn url_api_query(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "properties": {
            "prompt": {"type": "string", "description": "What to draw; without it, `filename` recalls a named image."},
            "model": {"type": "string"},
            "ar": {"type": "string", "description": "Aspect ratio, e.g. `16:9`."},
            "size": {"type": "string", "description": "`WxH`."},
            "seed": {"type": "integer"},
            "image": {"type": "array", "items": {"type": "string"},
                      "description": "Reference images (URLs, data URLs or file ids); also `image_url`, `init_image`, or `images=a,b`."},
            "filename": {"type": "string", "description": "Store the result under this name, or recall it (also `name`, `slug`)."},
            "ext": {"type": "string", "enum": ["png", "jpg", "jpeg", "webp"]},
            "reroll": {"type": "string", "description": "Generate anew, replacing the cached image: `true`, `1`, `yes`, `on` or empty (a bare `reroll`); `false`, `0`, `no`, `off`."},
            "kid": {"type": "string", "description": "Signed URLs: the paying key."},
            "exp": {"type": "string", "description": "Signed URLs: expiry, Unix seconds (checked with `sig`; a Bearer request is not a signed one)."},
            "sig": {"type": "string", "description": "Signed URLs: the signature."}
        }
    })
}

/// The query of `GET /images/{key}`: the signature `response_format=url` adds.
fn image_query(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "properties": {
            "exp": {"type": "integer", "description": "Expiry, Unix seconds."},
            "sig": {"type": "string", "description": "HMAC-SHA256 signature."}
        }
    })
}

/// What an image answer may be.
const IMAGE: &[(&str, SchemaOf)] = &[
    ("image/png", binary),
    ("image/jpeg", binary),
    ("image/webp", binary),
    ("image/gif", binary),
    ("image/svg+xml", binary),
];
/// A generation or an edit: JSON, or the event stream for `stream: true`.
const IMAGES_ANSWER: &[(&str, SchemaOf)] = &[
    ("application/json", of::<ImageResponse>),
    ("text/event-stream", events),
];
/// An asynchronous submission: the task, at once.
const TASK_ACCEPTED: (u16, &[(&str, SchemaOf)]) = (202, &[("application/json", of::<TaskObject>)]);
/// Everything a generation can fail with.
const GENERATION_ERRORS: &[u16] = &[
    400, 401, 402, 403, 404, 409, 413, 415, 429, 500, 502, 503, 504,
];
const JSON: &str = "application/json";
/// A page of the web UI.
const HTML: &[(&str, SchemaOf)] = &[("text/html", text)];
/// A page of the web UI, for anyone: it holds no data.
const UI_PAGE: Route = Route {
    access: Access::Public,
    answers: &[(200, HTML)],
    ..DEFAULT
};
/// A listing of the console: master key only.
const ADMIN_LISTING_ERRORS: &[u16] = &[400, 401, 403, 500];
/// A 1x1 PNG, for examples.
const TINY_PNG: &str = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNgAAAAAgABSK+kcQAAAABJRU5ErkJggg==";
const MULTIPART: &str = "multipart/form-data";

/// What a route is unless its entry says otherwise: for a bearer key, without query, body or
/// example.
const DEFAULT: Route = Route {
    method: "get",
    path: "",
    id: "",
    summary: "",
    access: Access::Bearer,
    query: None,
    prefer: false,
    body: &[],
    example: None,
    answers: &[],
    errors: &[],
};

/// The URL API's `GET`s: the image itself, for a bearer key or a signature.
const URL_API: Route = Route {
    access: Access::BearerOrSigned,
    query: Some(url_api_query),
    answers: &[(200, IMAGE), (304, &[])],
    errors: &[400, 401, 402, 403, 404, 429, 500, 502, 503, 504],
    ..DEFAULT
};

/// `GET /v1/models/{id}`; ids with a slash have a route of their own that answers the same.
const RETRIEVE_MODEL: Route = Route {
    method: "get",
    path: "/v1/models/{id}",
    id: "retrieveModel",
    summary: "One model by id or alias, with its parameters, pricing and the JSON Schema of a request to it.",
    answers: &[(200, &[(JSON, of::<ModelObject>)])],
    errors: &[401, 404, 500],
    ..DEFAULT
};

/// Every route and method the router serves (the router test checks it against `app.rs`).
pub const ROUTES: &[Route] = &[
    Route {
        method: "post",
        path: "/v1/images/generations",
        id: "createImage",
        summary: "Generate images (OpenAI's `images.generate`), from the cache when the same request was made before. `stream: true` answers Server-Sent Events; `async: true` or `Prefer: respond-async` a task. Per-model parameters are in `GET /v1/models/{id}`'s `schema`.",
        prefer: true,
        example: Some(|| {
            json!({"model": "placeholder", "prompt": "a lighthouse at dusk", "size": "256x256", "seed": 7})
        }),
        body: &[(JSON, of::<ImageRequest>)],
        answers: &[(200, IMAGES_ANSWER), TASK_ACCEPTED],
        errors: GENERATION_ERRORS,
        ..DEFAULT
    },
    Route {
        method: "post",
        path: "/v1/chat/completions",
        id: "createChatCompletion",
        summary: "Images from an image model through Chat Completions, as OpenRouter serves them: the last user message's text is the prompt, its `image_url` parts (and the latest image the assistant made) the reference images, `image_config` the model's `aspect_ratio`, `image_size` and other parameters. The images are in `choices[0].message.images` (data URLs, or stored-image URLs with `response_format: \"url\"`). Validated, priced, cached and stored like `/v1/images/generations`.",
        prefer: false,
        example: Some(|| {
            json!({"model": "placeholder", "messages": [{"role": "user", "content": "a lighthouse at dusk"}], "modalities": ["image", "text"], "image_config": {"aspect_ratio": "16:9"}})
        }),
        body: &[(JSON, of::<ChatRequest>)],
        answers: &[(200, &[(JSON, of::<ChatCompletion>), ("text/event-stream", chat_chunks)])],
        errors: GENERATION_ERRORS,
        ..DEFAULT
    },
    Route {
        method: "post",
        path: "/v1/responses",
        id: "createResponse",
        summary: "The Responses API's `image_generation` tool: `input` is the prompt (and `input_image` parts the reference images), the tool's `model`, `size`, `quality`, `background`, `output_format`, `output_compression`, `moderation`, `partial_images`, `input_fidelity` and `input_image_mask` the image request. The output is one `image_generation_call` item per image. Validated, priced, cached and stored like `/v1/images/generations`.",
        prefer: false,
        example: Some(|| {
            json!({"model": "placeholder", "input": "a lighthouse at dusk", "tools": [{"type": "image_generation", "size": "256x256"}]})
        }),
        body: &[(JSON, of::<ResponsesRequest>)],
        answers: &[(200, &[(JSON, response_object), ("text/event-stream", response_events)])],
        errors: GENERATION_ERRORS,
        ..DEFAULT
    },
    Route {
        method: "post",
        path: "/v1/images/edits",
        id: "createImageEdit",
        summary: "Edit images (OpenAI's `images.edit`): the multipart form the SDKs send, or JSON with `images` and `mask`.",
        prefer: true,
        example: Some(|| {
            json!({"model": "placeholder", "prompt": "add a moon", "images": [TINY_PNG]})
        }),
        body: &[(MULTIPART, edit_form), (JSON, of::<ImageRequest>)],
        answers: &[(200, IMAGES_ANSWER), TASK_ACCEPTED],
        errors: GENERATION_ERRORS,
        ..DEFAULT
    },
    Route {
        method: "post",
        path: "/v1/images/estimate",
        id: "estimateImage",
        summary: "What a generation would cost, before it runs: the body of `POST /v1/images/generations`, validated the same way (a bad parameter is the same 400 naming it) and priced by the catalog. Nothing is generated, reserved or charged.",
        example: Some(|| {
            json!({"model": "placeholder", "prompt": "a lighthouse at dusk", "size": "512x512", "n": 2})
        }),
        body: &[(JSON, of::<ImageRequest>)],
        answers: &[(200, &[(JSON, of::<Estimate>)])],
        errors: &[400, 401, 404, 413, 415, 500],
        ..DEFAULT
    },
    Route {
        method: "get",
        path: "/v1/generations",
        id: "listGenerations",
        summary: "The calling key's recent generations, newest first: each settled charge with its request id, model, credits and signed URLs of the images it paid for. Issued keys only (the master key is not metered: 403).",
        query: Some(inline::<HistoryQuery>),
        answers: &[(200, &[(JSON, of::<List<Generation>>)])],
        errors: &[400, 401, 403, 500],
        ..DEFAULT
    },
    Route {
        method: "get",
        path: "/v1/models",
        id: "listModels",
        summary: "The models this server serves.",
        query: Some(inline::<Filters>),
        answers: &[(200, &[(JSON, of::<List<ModelObject>>)])],
        errors: &[400, 401, 500],
        ..DEFAULT
    },
    RETRIEVE_MODEL,
    Route {
        path: "/v1/models/{owner}/{name}",
        id: "retrieveOwnedModel",
        summary: "One model by an id or alias with a slash (`google/nano-banana-pro`).",
        ..RETRIEVE_MODEL
    },
    Route {
        method: "get",
        path: "/v1/credits",
        id: "getCredits",
        summary: "The calling key's balance and recent ledger entries.",
        answers: &[(200, &[(JSON, of::<Credits>)])],
        errors: &[401, 403, 500],
        ..DEFAULT
    },
    Route {
        method: "post",
        path: "/v1/files",
        id: "createFile",
        summary: "Upload an image (OpenAI's Files API); its id is a reference image.",
        body: &[(MULTIPART, file_form)],
        answers: &[(200, &[(JSON, of::<FileObject>)])],
        errors: &[400, 401, 413, 500],
        ..DEFAULT
    },
    Route {
        method: "get",
        path: "/v1/files",
        id: "listFiles",
        summary: "The caller's files, newest first.",
        query: Some(inline::<ListQuery>),
        answers: &[(200, &[(JSON, of::<FilePage>)])],
        errors: &[400, 401, 500],
        ..DEFAULT
    },
    Route {
        method: "get",
        path: "/v1/files/{id}",
        id: "retrieveFile",
        summary: "One of the caller's files.",
        answers: &[(200, &[(JSON, of::<FileObject>)])],
        errors: &[401, 404, 500],
        ..DEFAULT
    },
    Route {
        method: "delete",
        path: "/v1/files/{id}",
        id: "deleteFile",
        summary: "Delete one of the caller's files.",
        answers: &[(200, &[(JSON, of::<DeletedFile>)])],
        errors: &[401, 404, 500],
        ..DEFAULT
    },
    Route {
        method: "get",
        path: "/v1/files/{id}/content",
        id: "downloadFile",
        summary: "A file's bytes.",
        answers: &[(200, IMAGE)],
        errors: &[401, 404, 500],
        ..DEFAULT
    },
    Route {
        method: "post",
        path: "/v1/signed-urls",
        id: "createSignedUrl",
        summary: "A URL-API URL without a key in it, billed to the calling key; checked before it is signed.",
        example: Some(|| {
            json!({"params": {"prompt": "a red fox", "model": "placeholder"}, "expires_in": 3600})
        }),
        body: &[(JSON, of::<SignRequest>)],
        answers: &[(200, &[(JSON, of::<SignedUrl>)])],
        errors: &[400, 401, 403, 404, 413, 415, 500],
        ..DEFAULT
    },
    Route {
        method: "get",
        path: "/v1/tasks/{id}",
        id: "retrieveTask",
        summary: "An asynchronous task: its status, result or error, and its webhook's delivery.",
        answers: &[(200, &[(JSON, of::<TaskObject>)])],
        errors: &[400, 401, 404, 500],
        ..DEFAULT
    },
    Route {
        method: "post",
        path: "/v1/tasks/{id}/cancel",
        id: "cancelTask",
        summary: "Cancel a task: a queued one at once, a running one within a heartbeat.",
        answers: &[(200, &[(JSON, of::<TaskObject>)])],
        errors: &[400, 401, 404, 500],
        ..DEFAULT
    },
    Route {
        method: "get",
        path: "/v1/webhooks/secret",
        id: "getWebhookSecret",
        summary: "The secret that signs the caller's webhooks (Standard Webhooks).",
        answers: &[(200, &[(JSON, of::<WebhookSecret>)])],
        errors: &[401, 500],
        ..DEFAULT
    },
    Route {
        method: "post",
        path: "/imini/router/v1/images/generate",
        id: "seed002Generate",
        summary: "Seed 002's generation: a task, answered `{task_id, model, created_at, request_id}`; read it at `GET /v1/tasks/{id}`.",
        example: Some(|| {
            json!({"model": "google/nano-banana-pro", "prompt": "a lighthouse at dusk", "aspect_ratio": "1:1", "resolution": "1K"})
        }),
        body: &[(JSON, of::<GenerateRequest>)],
        answers: &[(200, &[(JSON, of::<Submitted>)])],
        errors: GENERATION_ERRORS,
        ..DEFAULT
    },
    Route {
        method: "get",
        path: "/api/v1/images/generations",
        id: "pollTask",
        summary: "A task in seed 004's envelope.",
        query: Some(inline::<TaskQuery>),
        answers: &[(200, &[(JSON, of::<SeedPoll>)])],
        errors: &[400, 401, 404, 500],
        ..DEFAULT
    },
    Route {
        method: "post",
        path: "/api/v1/images/generations",
        id: "createSeedTask",
        summary: "Seed 004's create: a task, answered and refused in its `{code, msg, data}` envelope; its webhook is seed 004's callback.",
        example: Some(|| {
            json!({"model": "placeholder", "prompt": "a red fox", "aspect_ratio": "1:1"})
        }),
        body: &[(JSON, of::<SeedRequest>)],
        // Its refusals are seed 004's envelope, not OpenAI's: listed as answers.
        answers: &[
            (200, &[(JSON, of::<SeedCreated>)]),
            (400, &[(JSON, of::<SeedError>)]),
            (401, &[(JSON, of::<SeedError>)]),
            (402, &[(JSON, of::<SeedError>)]),
            (404, &[(JSON, of::<SeedError>)]),
            (413, &[(JSON, of::<SeedError>)]),
            (415, &[(JSON, of::<SeedError>)]),
            (429, &[(JSON, of::<SeedError>)]),
            (500, &[(JSON, of::<SeedError>)]),
        ],
        errors: &[],
        ..DEFAULT
    },
    Route {
        method: "post",
        path: "/api/v1/image/generate",
        id: "seed003Generate",
        summary: "Seed 003's generation: its model keys, camelCase `params` and `attachmentMediaIds` (file ids), queued as a task read at `GET /v1/tasks/{id}`.",
        example: Some(|| {
            json!({"model": "nano-banana-2", "prompt": "A polished product shot of a ceramic mug on travertine", "params": {"aspectRatio": "1:1", "resolution": "1K"}})
        }),
        body: &[(JSON, of::<Seed003Request>)],
        answers: &[(200, &[(JSON, of::<InferenceJob>)])],
        errors: &[400, 401, 402, 404, 413, 415, 429, 500],
        ..DEFAULT
    },
    Route {
        method: "post",
        path: "/v1/admin/keys",
        id: "createKey",
        summary: "Issue a key (master key only); the answer holds its secret, shown this once.",
        example: Some(|| json!({"name": "ci", "credits": 1000, "rpm": 60})),
        body: &[(JSON, of::<NewKey>)],
        answers: &[(201, &[(JSON, of::<CreatedKey>)])],
        errors: &[400, 401, 403, 413, 415, 500],
        ..DEFAULT
    },
    Route {
        method: "get",
        path: "/v1/admin/keys",
        id: "listKeys",
        summary: "Every key, never its secret (master key only).",
        answers: &[(200, &[(JSON, of::<List<ApiKey>>)])],
        errors: &[401, 403, 500],
        ..DEFAULT
    },
    Route {
        method: "patch",
        path: "/v1/admin/keys/{id}",
        id: "updateKey",
        summary: "Change a key's limits or models: a field left out stays, `null` removes the limit (master key only).",
        example: Some(|| json!({"rpm": null, "max_concurrent": 4})),
        body: &[(JSON, of::<KeyChange>)],
        answers: &[(200, &[(JSON, of::<ApiKey>)])],
        errors: &[400, 401, 403, 404, 413, 415, 500],
        ..DEFAULT
    },
    Route {
        method: "post",
        path: "/v1/admin/keys/{id}/revoke",
        id: "revokeKey",
        summary: "Revoke a key (master key only).",
        answers: &[(200, &[(JSON, of::<ApiKey>)])],
        errors: &[401, 403, 404, 500],
        ..DEFAULT
    },
    Route {
        method: "post",
        path: "/v1/admin/keys/{id}/credit",
        id: "creditKey",
        summary: "Add credits to a key (master key only).",
        example: Some(|| json!({"amount": 100})),
        body: &[(JSON, of::<Credit>)],
        answers: &[(200, &[(JSON, of::<ApiKey>)])],
        errors: &[400, 401, 403, 404, 413, 415, 500],
        ..DEFAULT
    },
    Route {
        method: "get",
        path: "/v1/admin/ledger",
        id: "listLedger",
        summary: "Every key's ledger, newest first, each settled charge with signed URLs of the images it paid for; by key, by kind, and paged with `before` (master key only).",
        query: Some(inline::<LedgerFilter>),
        answers: &[(200, &[(JSON, of::<List<LedgerLine>>)])],
        errors: ADMIN_LISTING_ERRORS,
        ..DEFAULT
    },
    Route {
        method: "get",
        path: "/v1/admin/tasks",
        id: "listAllTasks",
        summary: "Every tenant's asynchronous tasks, newest first, and where they stand (master key only).",
        query: Some(inline::<TaskFilter>),
        answers: &[(200, &[(JSON, of::<List<TaskLine>>)])],
        errors: ADMIN_LISTING_ERRORS,
        ..DEFAULT
    },
    Route {
        method: "get",
        path: "/v1/admin/webhooks",
        id: "listWebhookDeliveries",
        summary: "Every webhook delivery, newest first, with its attempts and last error (master key only).",
        query: Some(inline::<DeliveryFilter>),
        answers: &[(200, &[(JSON, of::<List<DeliveryLine>>)])],
        errors: ADMIN_LISTING_ERRORS,
        ..DEFAULT
    },
    Route {
        method: "get",
        path: "/v1/admin/summary",
        id: "getSummary",
        summary: "Counts for the operator: keys, credits held, tasks and webhook deliveries by state, and this instance's request, error, image, credit and cache counters (master key only).",
        answers: &[(200, &[(JSON, of::<Summary>)])],
        errors: &[401, 403, 500],
        ..DEFAULT
    },
    Route {
        path: "/",
        id: "landingPage",
        summary: "The landing page: what this server is, with links to the playground and the console.",
        ..UI_PAGE
    },
    Route {
        path: "/playground",
        id: "playgroundPage",
        summary: "The playground (web UI): a form made from a model's catalog entry, its price, the run (plain or streamed) and the request as code. The page holds no data; it reads the API with the key typed into it.",
        ..UI_PAGE
    },
    Route {
        path: "/console",
        id: "consolePage",
        summary: "The operator console (web UI): keys, the ledger with thumbnails, tasks, webhooks and counters, read from the admin API with the master key typed into it. The page holds no data.",
        ..UI_PAGE
    },
    Route {
        path: "/ui/{asset}",
        id: "uiAsset",
        summary: "A script or the stylesheet of the web UI (`style.css`, `common.js`, `playground.js`, `console.js`).",
        access: Access::Public,
        answers: &[(
            200,
            &[("text/css", text), ("text/javascript", text)],
        )],
        errors: &[404],
        ..DEFAULT
    },
    Route {
        method: "get",
        path: "/images/{key}",
        id: "getImage",
        summary: "A stored image by content hash, behind the signature `response_format: url` hands out; 304 for `If-None-Match`.",
        access: Access::Public,
        query: Some(image_query),
        answers: &[(200, IMAGE), (304, &[])],
        errors: &[403, 404, 500],
        ..DEFAULT
    },
    Route {
        path: "/api/generate",
        id: "urlGenerate",
        summary: "The URL API: the image itself, generated or from the cache, or recalled by name.",
        ..URL_API
    },
    Route {
        path: "/{prompt}",
        id: "urlGeneratePrompt",
        summary: "The URL API's path form (`/api/generate?prompt=`); never for reserved first segments, file names or dot-segments (404).",
        ..URL_API
    },
    Route {
        path: "/{prompt}/{model}",
        id: "urlGeneratePromptModel",
        summary: "The URL API's path form with a model.",
        ..URL_API
    },
    Route {
        method: "get",
        path: "/healthz",
        id: "healthz",
        summary: "Liveness.",
        access: Access::Public,
        answers: &[(200, &[(JSON, of::<Health>)])],
        errors: &[],
        ..DEFAULT
    },
    Route {
        method: "get",
        path: "/readyz",
        id: "readyz",
        summary: "Readiness: the database answers, the image store takes a write, models are served (503 names what failed).",
        access: Access::Public,
        answers: &[
            (200, &[(JSON, of::<Readiness>)]),
            (503, &[(JSON, of::<Readiness>)]),
        ],
        errors: &[],
        ..DEFAULT
    },
    Route {
        method: "get",
        path: "/metrics",
        id: "metrics",
        summary: "Prometheus metrics (text exposition format), when served on this address; a Bearer token when `metrics.token` is set.",
        access: Access::Public,
        answers: &[(200, &[("text/plain", prometheus_text)])],
        errors: &[401],
        ..DEFAULT
    },
    Route {
        method: "get",
        path: "/openapi.json",
        id: "openapi",
        summary: "This document.",
        access: Access::Public,
        answers: &[(200, &[(JSON, any_object)])],
        errors: &[],
        ..DEFAULT
    },
];

/// The document, built once.
static DOCUMENT: LazyLock<String> = LazyLock::new(|| document().to_string());

/// `GET /openapi.json`.
pub async fn serve() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        DOCUMENT.as_str(),
    )
}

/// The OpenAPI 3.1 document of [`ROUTES`].
pub fn document() -> Value {
    let (mut requests, mut answers) = generators();
    let error = answers.subschema_for::<ErrorEnvelope>().to_value();

    let mut paths = Map::new();
    for route in ROUTES {
        let operation = operation(route, &mut requests, &mut answers, &error);
        if let Some(item) = paths
            .entry(route.path)
            .or_insert_with(|| json!({}))
            .as_object_mut()
        {
            item.insert(route.method.to_owned(), operation);
        }
    }
    let mut schemas = requests.take_definitions(true);
    for (name, schema) in answers.take_definitions(true) {
        // One name, one schema: a type read and written alike has the same schema both ways
        // (the test checks that no two differ).
        schemas.entry(name).or_insert(schema);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "imgproxy",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "One OpenAI-compatible front door for every image model. Every error is OpenAI's envelope `{\"error\": {\"message\", \"type\", \"param\", \"code\"}}`; a bad parameter is a 400 naming it in `param`.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The master key (`IMGPROXY_MASTER_KEY`) or a key issued by `POST /v1/admin/keys`. A server without a master key listens on loopback and takes requests without one.",
                },
            },
        },
    })
}

/// Schema generators whose named types go to `components.schemas`: what clients send is
/// described as it is read, what they get as it is written.
fn generators() -> (SchemaGenerator, SchemaGenerator) {
    let settings = SchemaSettings::draft2020_12().with(|s| {
        s.definitions_path = "/components/schemas".into();
        s.meta_schema = None;
    });
    (
        settings.clone().for_deserialize().into_generator(),
        settings.for_serialize().into_generator(),
    )
}

fn operation(
    route: &Route,
    requests: &mut SchemaGenerator,
    answers: &mut SchemaGenerator,
    error: &Value,
) -> Value {
    let mut parameters: Vec<Value> = route
        .path
        .split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| {
            json!({"name": name, "in": "path", "required": true,
                   "schema": {"type": "string", "minLength": 1}})
        })
        .collect();
    if let Some(query) = route.query {
        parameters.extend(query_parameters(&query(requests).to_value()));
    }
    if route.prefer {
        parameters.push(json!({
            "name": "Prefer", "in": "header", "required": false,
            "description": "`respond-async` runs the request as a task (like `async: true`).",
            "schema": {"type": "string"},
        }));
        parameters.push(json!({
            "name": "Idempotency-Key", "in": "header", "required": false,
            "description": "Your key for this request (1 to 255 printable ASCII characters), \
                remembered for a day: a retry with the same key and body answers the first \
                request's images (or task) again, uncharged, with `Idempotent-Replayed: true`, \
                also after the first client disconnected; the same key with another body is \
                409 `idempotency_key_reused`.",
            "schema": {"type": "string", "minLength": 1, "maxLength": 255},
        }));
    }
    let mut responses = Map::new();
    for (status, contents) in route.answers {
        let mut response = json!({"description": reason(*status)});
        if !contents.is_empty() {
            response["content"] = media(contents, answers);
        }
        responses.insert(status.to_string(), response);
    }
    for status in route.errors {
        let mut response = json!({
            "description": reason(*status),
            "content": {"application/json": {"schema": error}},
        });
        if matches!(status, 429 | 503) {
            response["headers"] = json!({"Retry-After": {
                "description": "Seconds to wait before retrying.",
                "schema": {"type": "integer"},
            }});
        }
        responses.insert(status.to_string(), response);
    }
    let mut operation = json!({
        "operationId": route.id,
        "summary": route.summary,
        "responses": responses,
        "security": match route.access {
            Access::Public => json!([]),
            Access::Bearer => json!([{"bearer": []}]),
            Access::BearerOrSigned => json!([{"bearer": []}, {}]),
        },
    });
    if !parameters.is_empty() {
        operation["parameters"] = Value::Array(parameters);
    }
    if !route.body.is_empty() {
        let mut content = media(route.body, requests);
        if let (Some(example), Some(json)) = (route.example, content.get_mut(JSON)) {
            json["example"] = example();
        }
        operation["requestBody"] = json!({"required": true, "content": content});
    }
    operation
}

/// `{media type: {"schema": ...}}`.
fn media(contents: &[(&str, SchemaOf)], generator: &mut SchemaGenerator) -> Value {
    contents
        .iter()
        .map(|(mime, schema)| ((*mime).to_owned(), json!({"schema": schema(generator)})))
        .collect::<Map<_, _>>()
        .into()
}

/// One query parameter per property of an object schema. A query parameter is absent or
/// text, never `null`: an optional field's `null` alternative is dropped.
fn query_parameters(object: &Value) -> Vec<Value> {
    let required: Vec<&str> = object["required"]
        .as_array()
        .map(|names| names.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(properties) = object["properties"].as_object() else {
        return Vec::new();
    };
    properties
        .iter()
        .map(|(name, schema)| {
            let mut schema = schema.clone();
            if let Some(types) = schema.get_mut("type").and_then(Value::as_array_mut) {
                types.retain(|t| t != "null");
                if let [only] = types.as_slice() {
                    schema["type"] = only.clone();
                }
            }
            let description = schema.as_object_mut().and_then(|s| s.remove("description"));
            let mut parameter = json!({
                "name": name, "in": "query",
                "required": required.contains(&name.as_str()),
                "schema": schema,
            });
            if let Some(description) = description {
                parameter["description"] = description;
            }
            parameter
        })
        .collect()
}

fn reason(status: u16) -> &'static str {
    axum::http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Answer")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_schema_name_means_two_things() {
        let (mut requests, mut answers) = generators();
        for route in ROUTES {
            for (_, schema) in route.body {
                schema(&mut requests);
            }
            for (_, contents) in route.answers {
                for (_, schema) in *contents {
                    schema(&mut answers);
                }
            }
        }
        let read = requests.take_definitions(true);
        for (name, schema) in answers.take_definitions(true) {
            if let Some(other) = read.get(&name) {
                assert_eq!(other, &schema, "`{name}` is read and written differently");
            }
        }
    }

    #[test]
    fn ids_are_unique_refs_resolve_and_errors_are_the_envelope() {
        let document = document();
        let mut ids = std::collections::BTreeSet::new();
        for route in ROUTES {
            assert!(ids.insert(route.id), "duplicate operationId {}", route.id);
            let operation = &document["paths"][route.path][route.method];
            for status in route.errors {
                assert_eq!(
                    operation["responses"][status.to_string()]["content"]["application/json"]
                        ["schema"]["$ref"],
                    "#/components/schemas/ErrorEnvelope"
                );
            }
        }
        let mut unresolved = Vec::new();
        every_ref(&document, &mut |pointer| {
            if document.pointer(pointer.trim_start_matches('#')).is_none() {
                unresolved.push(pointer.to_owned());
            }
        });
        assert!(unresolved.is_empty(), "{unresolved:?}");
        let envelope = &document["components"]["schemas"]["ErrorBody"];
        assert_eq!(
            envelope["required"],
            json!(["message", "type", "param", "code"])
        );
    }

    #[test]
    fn an_event_stream_is_documented_event_by_event() {
        let document = document();
        let mut streams = 0;
        for route in ROUTES {
            let answers = &document["paths"][route.path][route.method]["responses"];
            for answer in answers.as_object().into_iter().flat_map(|a| a.values()) {
                let Some(schema) = answer["content"].get("text/event-stream") else {
                    continue;
                };
                let event = &schema["schema"];
                assert_eq!(event["type"], "object", "{} {}", route.method, route.path);
                assert_eq!(event["properties"]["data"]["type"], "string");
                assert_eq!(event["required"], json!(["data"]));
                streams += 1;
            }
        }
        assert_eq!(
            streams, 4,
            "generations, edits, chat completions and responses stream"
        );
    }

    fn every_ref(value: &Value, visit: &mut impl FnMut(&str)) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(pointer)) = map.get("$ref") {
                    visit(pointer);
                }
                map.values().for_each(|v| every_ref(v, visit));
            }
            Value::Array(items) => items.iter().for_each(|v| every_ref(v, visit)),
            _ => {}
        }
    }
}
