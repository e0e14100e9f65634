//! An image answer's JSON body written as the parts `ImageResponse::into_json_parts` cuts it
//! into: each inline image's base64 goes to the socket as it is, with no copy into one buffer.

use std::{
    collections::VecDeque,
    convert::Infallible,
    pin::Pin,
    task::{Context, Poll},
};

use axum::{
    body::{Body, Bytes},
    http::header,
    response::{IntoResponse, Response},
};
use http_body::{Frame, SizeHint};
use imgproxy_core::ImageResponse;

use crate::error::ApiError;

/// `response` as an `application/json` answer.
pub fn image_json(response: ImageResponse) -> Result<Response, ApiError> {
    let body = JsonParts::new(response.into_json_parts()?);
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        Body::new(body),
    )
        .into_response())
}

/// A body of known length in parts; its exact size hint lets hyper send `Content-Length`.
#[derive(Debug)]
struct JsonParts {
    parts: VecDeque<Bytes>,
    remaining: u64,
}

impl JsonParts {
    fn new(parts: Vec<Bytes>) -> Self {
        let remaining = parts.iter().map(|part| part.len() as u64).sum();
        Self {
            parts: parts.into_iter().filter(|part| !part.is_empty()).collect(),
            remaining,
        }
    }
}

impl http_body::Body for JsonParts {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let part = self.parts.pop_front();
        if let Some(part) = &part {
            self.remaining -= part.len() as u64;
        }
        Poll::Ready(part.map(|part| Ok(Frame::data(part))))
    }

    fn is_end_stream(&self) -> bool {
        self.parts.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}
