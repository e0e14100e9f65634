//! The reference fetcher against local fakes only: every SSRF, size, type and time refusal is a
//! 400 naming `image`, and allow-listed fakes and `data:` URLs succeed.

#![expect(clippy::unwrap_used, reason = "test helpers fail loudly")]

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use imgproxy_core::fetch::{FetchPolicy, ReferenceFetcher};
use imgproxy_core::ImageInput;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0";

fn url(text: impl Into<String>) -> ImageInput {
    ImageInput::Text(text.into())
}

fn fetcher(policy: FetchPolicy) -> ReferenceFetcher {
    ReferenceFetcher::new(policy).unwrap()
}

/// A fetcher that may reach `server` (and only that port of 127.0.0.1).
fn allowing(server: &MockServer) -> FetchPolicy {
    FetchPolicy {
        allow_hosts: vec![server.address().to_string()],
        ..FetchPolicy::default()
    }
}

/// A fake serving a PNG at `/x.png`.
async fn png_server() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/x.png"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(PNG, "image/png"))
        .mount(&server)
        .await;
    server
}

fn redirect_to(location: &str) -> ResponseTemplate {
    ResponseTemplate::new(302).insert_header("Location", location)
}

/// Asserts a 400 naming `image` whose message contains `needle`; returns the message.
async fn refused(fetcher: &ReferenceFetcher, input: ImageInput, needle: &str) -> String {
    let error = fetcher.fetch(&input).await.unwrap_err();
    let message = error.to_string();
    assert_eq!(error.status(), 400, "{message}");
    assert_eq!(error.param(), Some("image"), "{message}");
    assert!(message.contains(needle), "{message:?} lacks {needle:?}");
    message
}

/// A hand-written HTTP/1.1 server answering every connection with `head` then `body` and
/// closing (no Content-Length: the body ends at EOF), or never answering when `hang`.
async fn raw_server(head: &'static str, body: Vec<u8>, hang: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                if hang {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(&body).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn fetches_a_png_from_an_allow_listed_fake() {
    let server = png_server().await;
    let image = fetcher(allowing(&server))
        .fetch(&url(format!("{}/x.png", server.uri())))
        .await
        .unwrap();
    assert_eq!((&image.bytes[..], image.mime.as_str()), (PNG, "image/png"));
}

#[tokio::test]
async fn image_url_objects_are_fetched_like_bare_urls() {
    let server = png_server().await;
    let input = ImageInput::ImageUrl {
        image_url: format!("{}/x.png", server.uri()),
    };
    let image = fetcher(allowing(&server)).fetch(&input).await.unwrap();
    assert_eq!(image.mime, "image/png");
}

#[tokio::test]
async fn decodes_a_data_url() {
    let b64 = base64::engine::general_purpose::STANDARD.encode(PNG);
    let image = fetcher(FetchPolicy::default())
        .fetch(&url(format!("data:image/png;base64,{b64}")))
        .await
        .unwrap();
    assert_eq!((&image.bytes[..], image.mime.as_str()), (PNG, "image/png"));
}

#[tokio::test]
async fn refuses_an_oversized_data_url() {
    let b64 = base64::engine::general_purpose::STANDARD.encode(PNG);
    let policy = FetchPolicy {
        max_bytes: 8,
        ..FetchPolicy::default()
    };
    refused(
        &fetcher(policy),
        url(format!("data:image/png;base64,{b64}")),
        "limit of 8 bytes",
    )
    .await;
}

#[tokio::test]
async fn refuses_a_non_image_data_url() {
    refused(
        &fetcher(FetchPolicy::default()),
        url("data:text/html;base64,PGgxPmhpPC9oMT4="),
        "image/*",
    )
    .await;
}

#[tokio::test]
async fn leaves_file_ids_to_the_gateway() {
    let fetcher = fetcher(FetchPolicy::default());
    let file_id = ImageInput::FileId {
        file_id: "file_123".into(),
    };
    assert_eq!(imgproxy_core::fetch::file_id_of(&file_id), Some("file_123"));
    assert_eq!(
        imgproxy_core::fetch::file_id_of(&url("file-abc123")),
        Some("file-abc123")
    );
    assert_eq!(
        imgproxy_core::fetch::file_id_of(&url("https://example.com/a.png")),
        None
    );
    refused(&fetcher, file_id, "file store").await;
    refused(&fetcher, url("file-abc123"), "known file id").await;
}

#[tokio::test]
async fn refuses_loopback_literal_without_allow_list() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(PNG, "image/png"))
        .expect(0)
        .mount(&server)
        .await;
    refused(
        &fetcher(FetchPolicy::default()),
        url(format!("{}/x.png", server.uri())),
        "loopback",
    )
    .await;
}

#[tokio::test]
async fn refuses_an_allow_listed_ip_on_another_port() {
    let server = png_server().await;
    let policy = FetchPolicy {
        allow_hosts: vec!["127.0.0.1:1".into()],
        ..FetchPolicy::default()
    };
    refused(
        &fetcher(policy),
        url(format!("{}/x.png", server.uri())),
        "loopback",
    )
    .await;
}

#[tokio::test]
async fn refuses_private_link_local_and_metadata_targets() {
    let fetcher = fetcher(FetchPolicy::default());
    refused(&fetcher, url("http://10.0.0.1/x.png"), "private").await;
    refused(&fetcher, url("http://192.168.0.10/x.png"), "private").await;
    refused(&fetcher, url("http://172.16.5.4/x.png"), "private").await;
    refused(&fetcher, url("http://100.64.0.1/x.png"), "CGNAT").await;
    refused(
        &fetcher,
        url("http://169.254.169.254/latest/meta-data"),
        "link-local",
    )
    .await;
    refused(
        &fetcher,
        url("http://metadata.google.internal/computeMetadata/v1/"),
        "metadata",
    )
    .await;
    refused(&fetcher, url("http://metadata/"), "metadata").await;
    refused(&fetcher, url("http://0.0.0.0/x.png"), "unspecified").await;
    refused(&fetcher, url("http://[::]/x.png"), "unspecified").await;
    refused(&fetcher, url("http://224.0.0.1/x.png"), "multicast").await;
    refused(&fetcher, url("http://[fe80::1]/x.png"), "link-local").await;
    refused(&fetcher, url("http://[fd00::1]/x.png"), "unique-local").await;
}

#[tokio::test]
async fn refuses_ipv6_loopback_and_ipv4_mapped_loopback() {
    let server = png_server().await;
    let port = server.address().port();
    let fetcher = fetcher(FetchPolicy::default());
    refused(
        &fetcher,
        url(format!("http://[::1]:{port}/x.png")),
        "loopback",
    )
    .await;
    refused(
        &fetcher,
        url(format!("http://[::ffff:127.0.0.1]:{port}/x.png")),
        "loopback",
    )
    .await;
}

#[tokio::test]
async fn refuses_a_name_resolving_to_loopback() {
    let server = png_server().await;
    let port = server.address().port();
    let message = refused(
        &fetcher(FetchPolicy::default()),
        url(format!("http://localhost:{port}/x.png")),
        "resolves to a loopback address",
    )
    .await;
    assert!(!message.contains("127.0.0.1"), "{message}");
}

#[tokio::test]
async fn an_allow_listed_name_may_resolve_to_loopback() {
    let server = png_server().await;
    let port = server.address().port();
    let policy = FetchPolicy {
        allow_hosts: vec![format!("localhost:{port}")],
        ..FetchPolicy::default()
    };
    let image = fetcher(policy)
        .fetch(&url(format!("http://localhost:{port}/x.png")))
        .await
        .unwrap();
    assert_eq!(image.mime, "image/png");
}

#[tokio::test]
async fn refuses_a_redirect_to_a_loopback_literal() {
    let server = MockServer::start().await;
    let port = server.address().port();
    Mock::given(path("/start"))
        .respond_with(redirect_to(&format!("http://127.0.0.2:{port}/x.png")))
        .mount(&server)
        .await;
    refused(
        &fetcher(allowing(&server)),
        url(format!("{}/start", server.uri())),
        "`127.0.0.2` is a loopback address",
    )
    .await;
}

#[tokio::test]
async fn refuses_a_redirect_to_a_name_resolving_to_loopback() {
    let server = png_server().await;
    let port = server.address().port();
    Mock::given(path("/start"))
        .respond_with(redirect_to(&format!("http://localhost:{port}/x.png")))
        .mount(&server)
        .await;
    refused(
        &fetcher(allowing(&server)),
        url(format!("{}/start", server.uri())),
        "`localhost` resolves to a loopback address",
    )
    .await;
}

#[tokio::test]
async fn refuses_a_redirect_to_the_metadata_address_and_to_ftp() {
    let server = MockServer::start().await;
    Mock::given(path("/meta"))
        .respond_with(redirect_to("http://169.254.169.254/latest/meta-data"))
        .mount(&server)
        .await;
    Mock::given(path("/ftp"))
        .respond_with(redirect_to("ftp://example.com/x.png"))
        .mount(&server)
        .await;
    let fetcher = fetcher(allowing(&server));
    refused(
        &fetcher,
        url(format!("{}/meta", server.uri())),
        "link-local",
    )
    .await;
    refused(&fetcher, url(format!("{}/ftp", server.uri())), "`ftp`").await;
}

#[tokio::test]
async fn refuses_non_http_schemes() {
    let fetcher = fetcher(FetchPolicy::default());
    refused(&fetcher, url("ftp://example.com/x.png"), "`ftp`").await;
    refused(&fetcher, url("file:///etc/passwd"), "`file`").await;
    refused(&fetcher, url("gopher://example.com/"), "`gopher`").await;
}

/// Mounts `/{prefix}0` → `/{prefix}1` → … → `/{prefix}{hops}`, which serves the PNG.
async fn redirect_chain(server: &MockServer, prefix: &str, hops: usize) {
    for hop in 0..hops {
        Mock::given(path(format!("/{prefix}{hop}")))
            .respond_with(redirect_to(&format!("/{prefix}{}", hop + 1)))
            .mount(server)
            .await;
    }
    Mock::given(path(format!("/{prefix}{hops}")))
        .respond_with(ResponseTemplate::new(200).set_body_raw(PNG, "image/png"))
        .mount(server)
        .await;
}

#[tokio::test]
async fn follows_redirects_up_to_the_limit() {
    let server = MockServer::start().await;
    redirect_chain(&server, "ok", 3).await;
    let image = fetcher(allowing(&server))
        .fetch(&url(format!("{}/ok0", server.uri())))
        .await
        .unwrap();
    assert_eq!(image.mime, "image/png");
}

#[tokio::test]
async fn refuses_a_too_long_chain_of_redirects() {
    let server = MockServer::start().await;
    redirect_chain(&server, "long", 4).await;
    refused(
        &fetcher(allowing(&server)),
        url(format!("{}/long0", server.uri())),
        "redirected more than 3 times",
    )
    .await;
}

#[tokio::test]
async fn refuses_an_oversized_body_by_content_length() {
    let server = png_server().await;
    let policy = FetchPolicy {
        max_bytes: 16,
        ..allowing(&server)
    };
    refused(
        &fetcher(policy),
        url(format!("{}/x.png", server.uri())),
        "limit of 16 bytes",
    )
    .await;
}

#[tokio::test]
async fn refuses_an_oversized_body_without_content_length_while_streaming() {
    let head = "HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nConnection: close\r\n\r\n";
    let mut body = PNG.to_vec();
    body.resize(64 * 1024, 0);
    let addr = raw_server(head, body, false).await;
    let policy = FetchPolicy {
        max_bytes: 1024,
        allow_hosts: vec![addr.to_string()],
        ..FetchPolicy::default()
    };
    refused(
        &fetcher(policy),
        url(format!("http://{addr}/x.png")),
        "limit of 1024 bytes",
    )
    .await;
}

#[tokio::test]
async fn refuses_an_html_body() {
    let server = MockServer::start().await;
    Mock::given(path("/page"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(&b"<html>hi</html>"[..], "text/html"))
        .mount(&server)
        .await;
    refused(
        &fetcher(allowing(&server)),
        url(format!("{}/page", server.uri())),
        "not an image",
    )
    .await;
}

#[tokio::test]
async fn octet_stream_is_judged_by_its_bytes() {
    let server = MockServer::start().await;
    Mock::given(path("/png"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(PNG, "application/octet-stream"))
        .mount(&server)
        .await;
    Mock::given(path("/junk"))
        .respond_with(
            ResponseTemplate::new(200).set_body_raw(&b"just text"[..], "application/octet-stream"),
        )
        .mount(&server)
        .await;
    let fetcher = fetcher(allowing(&server));
    let image = fetcher
        .fetch(&url(format!("{}/png", server.uri())))
        .await
        .unwrap();
    assert_eq!(image.mime, "image/png");
    refused(
        &fetcher,
        url(format!("{}/junk", server.uri())),
        "not an image",
    )
    .await;
}

#[tokio::test]
async fn a_missing_content_type_is_judged_by_the_bytes() {
    let head = "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n";
    let addr = raw_server(head, PNG.to_vec(), false).await;
    let policy = FetchPolicy {
        allow_hosts: vec![addr.to_string()],
        ..FetchPolicy::default()
    };
    let image = fetcher(policy)
        .fetch(&url(format!("http://{addr}/x.png")))
        .await
        .unwrap();
    assert_eq!(image.mime, "image/png");
}

#[tokio::test]
async fn refuses_a_non_2xx_answer_with_its_status() {
    let server = MockServer::start().await;
    Mock::given(path("/gone"))
        .respond_with(ResponseTemplate::new(404))
        .mount(&server)
        .await;
    refused(
        &fetcher(allowing(&server)),
        url(format!("{}/gone", server.uri())),
        "HTTP 404",
    )
    .await;
}

#[tokio::test]
async fn refuses_when_the_fetch_times_out() {
    let head = "HTTP/1.1 200 OK\r\nContent-Type: image/png\r\n\r\n";
    let addr = raw_server(head, PNG.to_vec(), true).await;
    let policy = FetchPolicy {
        timeout: Duration::from_millis(300),
        allow_hosts: vec![addr.to_string()],
        ..FetchPolicy::default()
    };
    refused(
        &fetcher(policy),
        url(format!("http://{addr}/x.png")),
        "timed out after 300ms",
    )
    .await;
}

#[test]
fn a_bad_allow_list_entry_is_a_configuration_error() {
    let policy = FetchPolicy {
        allow_hosts: vec!["http://fake/".into()],
        ..FetchPolicy::default()
    };
    assert_eq!(ReferenceFetcher::new(policy).unwrap_err().status(), 500);
}
