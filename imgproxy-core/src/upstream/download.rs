//! Bytes from upstream hosts within a limit: generated images downloaded without credentials,
//! and any response body an adapter must not read unbounded. Where an image is (inline or at
//! a URL) is [`ImageSource`]; fetching it with an API's client is `api`'s job.

use bytes::{Bytes, BytesMut};

use super::failure::{failed, transport_error};
use crate::{provider::image_mime, GeneratedImage, ProviderError};

/// Largest generated image downloaded from an upstream URL.
pub const DEFAULT_MAX_DOWNLOAD_BYTES: usize = 50 * 1024 * 1024;

/// Where the bytes of one returned image are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// In the answer itself (decoded base64, a `data:` URI).
    Inline(Bytes),
    /// To download, without credentials, from this URL.
    Url(String),
}

/// Downloads a generated image from `url` (no credentials sent), within `max_bytes`.
/// Returns the bytes and the `Content-Type`.
pub async fn download(
    client: &reqwest::Client,
    url: &str,
    max_bytes: usize,
) -> Result<(Bytes, Option<String>), ProviderError> {
    let response = client.get(url).send().await.map_err(transport_error)?;
    let status = response.status();
    if !status.is_success() {
        return Err(failed(format!(
            "downloading a generated image failed with HTTP {}",
            status.as_u16()
        )));
    }
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = read_capped(response, max_bytes, "a generated image").await?;
    Ok((bytes, content_type))
}

/// Reads the body of `response` within `max_bytes`, counted as it streams since
/// `Content-Length` may be absent or wrong. Past the limit, a `Failed` saying that `what` is
/// larger than it.
pub async fn read_capped(
    mut response: reqwest::Response,
    max_bytes: usize,
    what: &str,
) -> Result<Bytes, ProviderError> {
    let too_large = || failed(format!("{what} is larger than {max_bytes} bytes"));
    if response
        .content_length()
        .is_some_and(|length| length > max_bytes as u64)
    {
        return Err(too_large());
    }
    // One buffer of the announced length takes each chunk as it arrives, still in the CPU's
    // cache, and is all the memory the body holds. Without an announced length the chunks
    // are kept and joined once at the end: a growing buffer would copy a megabyte body about
    // twice over and keep up to twice its size allocated.
    let announced = response
        .content_length()
        .map_or(0, |length| length as usize);
    let mut body = BytesMut::with_capacity(announced);
    let mut chunks = Vec::new();
    let mut length = 0;
    while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
        length += chunk.len();
        if length > max_bytes {
            return Err(too_large());
        }
        if length == chunk.len() && length == announced {
            // The whole body in one chunk: nothing to copy.
            return Ok(chunk);
        }
        if length <= body.capacity() {
            body.extend_from_slice(&chunk);
        } else {
            chunks.push(chunk);
        }
    }
    if chunks.is_empty() {
        return Ok(body.freeze());
    }
    if body.is_empty() && chunks.len() == 1 {
        return Ok(chunks.swap_remove(0));
    }
    let mut joined = Vec::with_capacity(length);
    joined.extend_from_slice(&body);
    for chunk in &chunks {
        joined.extend_from_slice(chunk);
    }
    Ok(Bytes::from(joined))
}

/// A generated image that must be one: the bytes decide the MIME type, else the first
/// `image/*` of `hints` (a declared type, a download's `Content-Type`). Anything else, an
/// error page served with a 200 say, is a `Failed` with the message `not_an_image`.
pub fn sniffed_image(
    bytes: Bytes,
    hints: &[Option<&str>],
    not_an_image: &str,
) -> Result<GeneratedImage, ProviderError> {
    let mime = image_mime(&bytes, hints).ok_or_else(|| failed(not_an_image))?;
    Ok(GeneratedImage {
        bytes,
        mime,
        revised_prompt: None,
    })
}
