//! `stream: true`: the answer as Server-Sent Events, each surface in its own events (a
//! [`Shape`]): for the Images API, partial images relayed as the upstream sends them
//! (`*.partial_image`), then one `*.completed` event per image, a failure as
//! `data: {"error": {...}}`; chat chunks and the Responses API's events are written by their
//! handlers' shapes. `: keep-alive` comments while waiting. The
//! generation runs inside the response body, so a client that goes away drops it: the
//! upstream call is cancelled where it can be and an unsettled charge is refunded — unless
//! the request sent an `Idempotency-Key`: then it runs on, for the retry.

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use axum::{
    body::{Body, Bytes},
    http::{header, HeaderValue},
    response::{IntoResponse, Response},
};
use futures_util::{future::BoxFuture, stream};
use imgproxy_core::{
    provider::PartialImage,
    response::ImageStreamEvent,
    service::{cache::CacheMode, idempotency::Begun, Served},
    Error, ErrorBody, ErrorEnvelope, ImageRequest,
};
use tokio::sync::mpsc;
use tracing::Instrument as _;

use crate::{
    auth::Caller,
    calls::{self, Admitted},
    state::AppState,
};

/// How often a comment keeps a quiet stream (and the proxies on its way) open.
const KEEP_ALIVE: Duration = Duration::from_secs(10);

/// How a surface writes its stream: what opens it, each partial image, the served images
/// and a failure (the last two end it).
pub trait Shape: Send + 'static {
    /// Events sent as soon as the stream opens.
    fn opening(&mut self) -> Vec<Bytes> {
        Vec::new()
    }
    /// A partial image, as the upstream sent it.
    fn partial(&mut self, partial: &PartialImage) -> Bytes;
    /// The served request's images, and the end of the stream.
    fn completed(&mut self, state: &AppState, served: &Served) -> Vec<Bytes>;
    /// A failure after the stream began, and the end of the stream.
    fn failed(&mut self, error: &Error) -> Vec<Bytes>;
}

/// Which Images API endpoint streams: it names the events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// `image_generation.*`.
    Generation,
    /// `image_edit.*`.
    Edit,
}

impl Surface {
    fn event(self, kind: &str) -> String {
        let prefix = match self {
            Self::Generation => "image_generation",
            Self::Edit => "image_edit",
        };
        format!("{prefix}.{kind}")
    }
}

impl Shape for Surface {
    fn partial(&mut self, partial: &PartialImage) -> Bytes {
        sse(&self.event("partial_image"), &partial_event(partial, *self))
    }

    fn completed(&mut self, state: &AppState, served: &Served) -> Vec<Bytes> {
        let kind = self.event("completed");
        completed_events(state, served, *self)
            .into_iter()
            .flat_map(|event| image_sse(&kind, event))
            .collect()
    }

    fn failed(&mut self, error: &Error) -> Vec<Bytes> {
        vec![sse("error", &error_envelope(error))]
    }
}

/// What the stream still has to do.
struct Streaming {
    state: AppState,
    work: Option<BoxFuture<'static, Result<Served, Error>>>,
    partials: mpsc::UnboundedReceiver<PartialImage>,
    keep_alive: tokio::time::Interval,
    pending: VecDeque<Bytes>,
    shape: Box<dyn Shape>,
    /// Set when a partial image goes out: from then on a disconnect keeps one image's price.
    delivered: Arc<AtomicBool>,
}

/// The streamed answer to an already validated and admitted request, begun under its
/// idempotency key if it sent one.
pub fn respond(
    state: AppState,
    caller: Caller,
    admitted: Admitted,
    cache: CacheMode,
    request: ImageRequest,
    mut shape: Box<dyn Shape>,
    begun: Option<Begun>,
) -> Response {
    let (sender, partials) = mpsc::unbounded_channel();
    let delivered = Arc::new(AtomicBool::new(false));
    let marker = Arc::clone(&delivered);
    // The body is polled by the connection, outside the handler: the work keeps the request's
    // span, so that its log lines (and trace) stay the request's.
    let span = tracing::Span::current();
    let (attempt, replay) = match begun {
        Some(Begun::Run(attempt)) => (Some(attempt), None),
        Some(Begun::Replay(remembered)) => (None, Some(remembered)),
        None => (None, None),
    };
    let replayed = replay.is_some();
    let stream_state = state.clone();
    let serving = async move {
        let call = calls::call(
            &state,
            &caller,
            &admitted,
            cache,
            None,
            Some(&sender),
            Some(&marker),
        );
        let served = match &replay {
            Some(remembered) => state.service.replay(call, request, remembered).await?,
            None => state.service.serve(call, request).await?,
        };
        admitted.served(&served);
        Ok(served)
    }
    .instrument(span);
    let work: BoxFuture<'static, Result<Served, Error>> = match attempt {
        // Started now, on a task of its own: a client that goes away leaves it to finish, be
        // charged and be remembered for its retry.
        Some(attempt) => Box::pin(attempt.run(serving)),
        None => Box::pin(serving),
    };
    let mut keep_alive = tokio::time::interval(KEEP_ALIVE);
    keep_alive.reset();
    let streaming = Streaming {
        state: stream_state,
        work: Some(work),
        partials,
        keep_alive,
        pending: shape.opening().into(),
        shape,
        delivered,
    };
    let body = stream::unfold(streaming, |mut s| async move {
        let chunk = s.next_chunk().await?;
        Some((Ok::<_, std::convert::Infallible>(chunk), s))
    });
    let mut response = Body::from_stream(body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if replayed {
        calls::mark_replayed(&mut response);
    }
    response
}

impl Streaming {
    /// The next bytes to send, `None` at the end.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        loop {
            if let Some(chunk) = self.pending.pop_front() {
                return Some(chunk);
            }
            let work = self.work.as_mut()?;
            tokio::select! {
                // Partials first: they were sent before the generation finished.
                biased;
                Some(partial) = self.partials.recv() => {
                    self.delivered.store(true, Ordering::SeqCst);
                    return Some(self.shape.partial(&partial));
                }
                outcome = work => {
                    self.work = None;
                    while let Ok(partial) = self.partials.try_recv() {
                        let event = self.shape.partial(&partial);
                        self.pending.push_back(event);
                    }
                    let ending = match outcome {
                        Ok(served) => self.shape.completed(&self.state, &served),
                        Err(error) => {
                            let (fault, kind) = error.fault();
                            crate::telemetry::metrics::error(fault, kind);
                            if error.status() >= 500 {
                                tracing::error!(%error, "streamed request failed");
                            }
                            self.shape.failed(&error)
                        }
                    };
                    self.pending.extend(ending);
                }
                _ = self.keep_alive.tick() => return Some(Bytes::from_static(b": keep-alive\n\n")),
            }
        }
    }
}

/// One `event:` + `data:` block.
pub fn sse(event: &str, data: &impl serde::Serialize) -> Bytes {
    let data = serde_json::to_string(data).unwrap_or_else(|_| "{}".to_owned());
    Bytes::from(format!("event: {event}\ndata: {data}\n\n"))
}

/// One `event:` + `data:` block carrying an image, in parts: its base64 goes out as it is
/// (`ImageStreamEvent::into_json_parts`), not escaped byte by byte into a copy.
fn image_sse(event: &str, data: ImageStreamEvent) -> Vec<Bytes> {
    match data.into_json_parts() {
        Ok(parts) => std::iter::once(Bytes::from(format!("event: {event}\ndata: ")))
            .chain(parts)
            .chain(std::iter::once(Bytes::from_static(b"\n\n")))
            .collect(),
        Err(error) => {
            tracing::error!(%error, "writing a streamed image event");
            vec![sse("error", &error_envelope(&error))]
        }
    }
}

/// OpenAI's `{"error": {...}}` of a failure after the stream began (the SDKs raise it).
pub fn error_envelope(error: &Error) -> ErrorEnvelope {
    ErrorEnvelope {
        error: ErrorBody::from(error),
    }
}

/// One `data:` block without an event name (how chat completions stream).
pub fn data(data: &impl serde::Serialize) -> Bytes {
    let data = serde_json::to_string(data).unwrap_or_else(|_| "{}".to_owned());
    Bytes::from(format!("data: {data}\n\n"))
}

fn partial_event(partial: &PartialImage, surface: Surface) -> ImageStreamEvent {
    ImageStreamEvent {
        kind: surface.event("partial_image"),
        b64_json: partial.b64_json.clone(),
        partial_image_index: Some(partial.index),
        created_at: imgproxy_core::clock::now_secs(),
        meta: partial.meta.clone(),
        usage: None,
        credits_used: None,
    }
}

/// One completed event per image, with the answer's metadata; usage on the last.
fn completed_events(state: &AppState, served: &Served, surface: Surface) -> Vec<ImageStreamEvent> {
    let response = state.service.response(served);
    let meta = response.meta;
    let count = served.images.len();
    served
        .images
        .iter()
        .zip(response.data)
        .enumerate()
        .map(|(index, (image, data))| {
            let last = index + 1 == count;
            // The answer is already base64 (moved, not copied) unless the client asked for URLs.
            let b64_json = data
                .b64_json
                .unwrap_or_else(|| imgproxy_core::b64::encode(&image.bytes));
            ImageStreamEvent {
                kind: surface.event("completed"),
                b64_json,
                partial_image_index: None,
                created_at: response.created,
                meta: meta.clone(),
                usage: response.usage.clone().filter(|_| last),
                credits_used: response.credits_used.filter(|_| last),
            }
        })
        .collect()
}
