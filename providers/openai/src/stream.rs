//! OpenAI's streamed image answers (`stream: true`): Server-Sent Events of `*.partial_image`
//! (relayed to the client as they arrive) and `*.completed` (one per image, collected into the
//! generation). An `error` object in the stream is the upstream's failure, read by the
//! caller's error mapping.

use bytes::BytesMut;
use imgproxy_core::{
    provider::{ImageMeta, PartialImage, PartialSender},
    upstream::{self, ImageSource},
    ProviderError, Usage,
};
use serde::Deserialize;
use serde_json::Value;

use crate::{compat::ParsedImage, convert::ParsedResponse, errors::ErrorMapping};

/// One event's JSON, partial or completed.
#[derive(Debug, Deserialize)]
struct StreamEvent {
    #[serde(rename = "type", default)]
    kind: String,
    b64_json: Option<String>,
    partial_image_index: Option<u32>,
    background: Option<String>,
    output_format: Option<String>,
    quality: Option<String>,
    size: Option<String>,
    usage: Option<Value>,
    error: Option<Value>,
}

/// Reads the event stream of `response` to its end: partials go to `partials`, completed
/// images are returned as a parsed response, an error event is what `to_error` makes of it.
/// No event may hold more than `max_event_bytes` (the client's body limit: a completed image
/// is one event).
pub(crate) async fn read(
    mut response: reqwest::Response,
    partials: &PartialSender,
    model: &str,
    to_error: ErrorMapping,
    max_event_bytes: usize,
) -> Result<ParsedResponse, ProviderError> {
    let mut parsed = ParsedResponse {
        images: Vec::new(),
        usage: None,
        extra: ImageMeta::default(),
    };
    let mut events = Events::default();
    loop {
        let chunk = response.chunk().await.map_err(upstream::transport_error)?;
        let ended = chunk.is_none();
        if let Some(chunk) = chunk {
            events.pending.extend_from_slice(&chunk);
        }
        while let Some(event) = events.next(ended) {
            if handle(&event, partials, &mut parsed, model, to_error)? {
                return finish(parsed);
            }
        }
        if ended {
            return finish(parsed);
        }
        if events.pending.len() > max_event_bytes {
            return Err(upstream::failed(format!(
                "a streamed event is larger than {max_event_bytes} bytes"
            )));
        }
    }
}

/// The stream's bytes not yet read as events, and how far they are known to hold no event's
/// end: each byte is searched once, however many chunks a megabyte event arrives in.
#[derive(Default)]
struct Events {
    pending: BytesMut,
    searched: usize,
}

impl Events {
    /// The data of the next complete event (its `data:` lines joined), removed with any
    /// data-less blocks before it (comments such as `: keep-alive`); at the end of the stream,
    /// whatever is left counts as the last event.
    fn next(&mut self, ended: bool) -> Option<String> {
        loop {
            let (end, skip) = match self.boundary() {
                Some(found) => found,
                None if ended && !self.pending.trim_ascii().is_empty() => (self.pending.len(), 0),
                None => return None,
            };
            let block = self.pending.split_to(end + skip);
            self.searched = 0;
            let text = String::from_utf8_lossy(&block[..end]);
            let data: Vec<&str> = text
                .lines()
                .filter_map(|line| line.strip_prefix("data:"))
                .map(|line| line.strip_prefix(' ').unwrap_or(line))
                .collect();
            if !data.is_empty() {
                return Some(data.join("\n"));
            }
        }
    }

    /// Where the first blank line (`\n\n` or `\r\n\r\n`) begins, and its length.
    fn boundary(&mut self) -> Option<(usize, usize)> {
        let bytes = &self.pending[..];
        // A blank line may have begun in the last 3 bytes already searched.
        let from = self.searched.saturating_sub(3);
        for at in memchr::memchr_iter(b'\n', &bytes[from..]).map(|at| from + at) {
            if bytes.get(at + 1) == Some(&b'\n') {
                return Some((at, 2));
            }
            if at >= 1 && bytes[at - 1] == b'\r' && bytes.get(at + 1..at + 3) == Some(b"\r\n") {
                return Some((at - 1, 4));
            }
        }
        self.searched = bytes.len();
        None
    }
}

/// Handles one event's data; `true` at `[DONE]`.
fn handle(
    data: &str,
    partials: &PartialSender,
    parsed: &mut ParsedResponse,
    model: &str,
    to_error: ErrorMapping,
) -> Result<bool, ProviderError> {
    if data.trim() == "[DONE]" {
        return Ok(true);
    }
    let event: StreamEvent = serde_json::from_str(data)
        .map_err(|e| upstream::failed(format!("malformed stream event: {e}")))?;
    if let Some(error) = event.error {
        // Mapped like an error answer of the status it stands for: a refusal of the request
        // (invalid, moderated) as a 400, anything else as the upstream's own failure.
        let refused = error.get("type").and_then(Value::as_str) == Some("invalid_request_error")
            || error.get("code").and_then(Value::as_str) == Some("moderation_blocked");
        let body = serde_json::json!({ "error": error }).to_string();
        let status = if refused { 400 } else { 500 };
        return Err(to_error(status, None, body.as_bytes(), model));
    }
    let meta = ImageMeta {
        background: event.background,
        output_format: event.output_format,
        quality: event.quality,
        size: event.size,
    };
    if event.kind.ends_with(".partial_image") {
        if let Some(b64_json) = event.b64_json {
            // The client may be gone; the generation still completes (and is cached).
            let _ = partials.send(PartialImage {
                b64_json,
                index: event.partial_image_index.unwrap_or(0),
                meta,
            });
        }
    } else if event.kind.ends_with(".completed") {
        let b64 = event
            .b64_json
            .ok_or_else(|| upstream::failed("a completed stream event has no `b64_json`"))?;
        let bytes = imgproxy_core::b64::decode(b64.trim())
            .map_err(|e| upstream::failed(format!("bad `b64_json`: {e}")))?;
        parsed.images.push(ParsedImage {
            source: ImageSource::Inline(bytes),
            revised_prompt: None,
            extra: (),
        });
        if let Some(usage) = event.usage.and_then(Usage::lenient) {
            parsed
                .usage
                .get_or_insert_with(Usage::default)
                .accumulate(&usage);
        }
        if parsed.extra == ImageMeta::default() {
            parsed.extra = meta;
        }
    }
    Ok(false)
}

fn finish(parsed: ParsedResponse) -> Result<ParsedResponse, ProviderError> {
    if parsed.images.is_empty() {
        return Err(upstream::failed(
            "the upstream's stream ended without a completed image",
        ));
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_on_blank_lines_and_comments_carry_nothing() {
        let mut events = Events::default();
        events.pending.extend_from_slice(
            b": keep-alive\n\nevent: x\ndata: {\"a\":1}\n\nevent: y\r\ndata: {\"b\":2}\r\n\r\ndata: [DO",
        );
        assert_eq!(events.next(false).as_deref(), Some("{\"a\":1}"));
        assert_eq!(events.next(false).as_deref(), Some("{\"b\":2}"));
        assert_eq!(events.next(false), None);
        events.pending.extend_from_slice(b"NE]");
        assert_eq!(events.next(true).as_deref(), Some("[DONE]"));
    }

    #[test]
    fn an_event_split_anywhere_reads_the_same() {
        let stream = b"data: {\"a\":\r\ndata: 1}\r\n\r\n: ping\n\ndata: [DONE]\n\n";
        for size in 1..stream.len() {
            let mut events = Events::default();
            let mut read = Vec::new();
            for chunk in stream.chunks(size) {
                events.pending.extend_from_slice(chunk);
                while let Some(event) = events.next(false) {
                    read.push(event);
                }
            }
            assert_eq!(read, ["{\"a\":\n1}", "[DONE]"], "chunks of {size}");
        }
    }
}
