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
        // The whole body in one chunk, of no announced length: nothing to copy.
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

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    /// Serves one connection: reads the request head, then writes `head` and each of `parts`
    /// with a flush between, so that the client sees the body in several chunks.
    async fn serve_once(head: String, parts: Vec<Vec<u8>>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = [0_u8; 4096];
            let _ = socket.read(&mut request).await.unwrap();
            socket.write_all(head.as_bytes()).await.unwrap();
            for part in parts {
                socket.write_all(&part).await.unwrap();
                socket.flush().await.unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        });
        format!("http://{address}/")
    }

    async fn read(url: &str, max_bytes: usize) -> Result<Bytes, ProviderError> {
        let response = reqwest::get(url).await.unwrap();
        read_capped(response, max_bytes, "the body").await
    }

    fn body() -> Vec<u8> {
        (0..200_000_u32).map(|i| (i % 251) as u8).collect()
    }

    #[tokio::test]
    async fn a_body_of_announced_length_in_many_chunks_reads_whole() {
        let body = body();
        let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
        let parts = body.chunks(30_000).map(<[u8]>::to_vec).collect();
        let url = serve_once(head, parts).await;
        assert_eq!(read(&url, 1 << 20).await.unwrap(), body);
    }

    #[tokio::test]
    async fn a_chunked_body_reads_whole_and_is_capped() {
        let body = body();
        let mut parts: Vec<Vec<u8>> = body
            .chunks(30_000)
            .map(|chunk| [format!("{:x}\r\n", chunk.len()).as_bytes(), chunk, b"\r\n"].concat())
            .collect();
        parts.push(b"0\r\n\r\n".to_vec());
        let head = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_owned();
        let url = serve_once(head.clone(), parts.clone()).await;
        assert_eq!(read(&url, 1 << 20).await.unwrap(), body);
        let url = serve_once(head, parts).await;
        let error = read(&url, 100_000).await.unwrap_err();
        assert!(
            error.to_string().contains("larger than 100000 bytes"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn an_announced_length_over_the_cap_is_refused_before_reading() {
        let head = "HTTP/1.1 200 OK\r\ncontent-length: 5000\r\n\r\n".to_owned();
        let url = serve_once(head, vec![vec![0; 5000]]).await;
        let error = read(&url, 4999).await.unwrap_err();
        assert!(
            error.to_string().contains("larger than 4999 bytes"),
            "{error}"
        );
    }
}
