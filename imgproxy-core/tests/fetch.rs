//! The reference fetcher against local fakes only: every SSRF, size, type and time refusal is a
//! 400 naming `image`, and allow-listed fakes and `data:` URLs succeed.

#![expect(clippy::unwrap_used, reason = "test helpers fail loudly")]

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use imgproxy_core::fetch::{FetchPolicy, ReferenceFetcher, ReferenceImage};
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

/// A fetcher that may reach `addr` (and only that port of its IP).
fn allowing(addr: &SocketAddr) -> FetchPolicy {
    FetchPolicy {
        allow_hosts: vec![addr.to_string()],
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

/// Fetches `route` of `server` with a fetcher that may reach it.
async fn fetched(server: &MockServer, route: &str) -> ReferenceImage {
    fetcher(allowing(server.address()))
        .fetch(&url(format!("{}{route}", server.uri())))
        .await
        .unwrap()
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
    let image = fetched(&server, "/x.png").await;
    assert_eq!((&image.bytes[..], image.mime.as_str()), (PNG, "image/png"));
}

#[tokio::test]
async fn image_url_objects_are_fetched_like_bare_urls() {
    let server = png_server().await;
    let input = ImageInput::ImageUrl {
        image_url: format!("{}/x.png", server.uri()),
    };
    let image = fetcher(allowing(server.address()))
        .fetch(&input)
        .await
        .unwrap();
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

/// Inputs refused without a connection (the default policy allows no host): each with a
/// part of its message.
#[tokio::test]
async fn refuses_forbidden_targets_schemes_and_data() {
    let b64 = base64::engine::general_purpose::STANDARD.encode(PNG);
    let oversized = FetchPolicy {
        max_bytes: 8,
        ..FetchPolicy::default()
    };
    refused(
        &fetcher(oversized),
        url(format!("data:image/png;base64,{b64}")),
        "limit of 8 bytes",
    )
    .await;
    let fetcher = fetcher(FetchPolicy::default());
    for (input, needle) in [
        ("data:text/html;base64,PGgxPmhpPC9oMT4=", "image/*"),
        ("http://10.0.0.1/x.png", "private"),
        ("http://192.168.0.10/x.png", "private"),
        ("http://172.16.5.4/x.png", "private"),
        ("http://100.64.0.1/x.png", "CGNAT"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        (
            "http://metadata.google.internal/computeMetadata/v1/",
            "metadata",
        ),
        ("http://metadata/", "metadata"),
        ("http://0.0.0.0/x.png", "unspecified"),
        ("http://[::]/x.png", "unspecified"),
        ("http://224.0.0.1/x.png", "multicast"),
        ("http://[fe80::1]/x.png", "link-local"),
        ("http://[fd00::1]/x.png", "unique-local"),
        ("ftp://example.com/x.png", "`ftp`"),
        ("file:///etc/passwd", "`file`"),
        ("gopher://example.com/", "`gopher`"),
    ] {
        refused(&fetcher, url(input), needle).await;
    }
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

/// A live PNG server on loopback, reached by other ports, addresses and names than the one
/// allowed (none, or port 1).
#[tokio::test]
async fn refuses_loopback_by_another_port_address_or_name() {
    let server = png_server().await;
    let port = server.address().port();
    let other_port = FetchPolicy {
        allow_hosts: vec!["127.0.0.1:1".into()],
        ..FetchPolicy::default()
    };
    refused(
        &fetcher(other_port),
        url(format!("{}/x.png", server.uri())),
        "loopback",
    )
    .await;
    let fetcher = fetcher(FetchPolicy::default());
    for host in ["[::1]", "[::ffff:127.0.0.1]"] {
        let input = url(format!("http://{host}:{port}/x.png"));
        refused(&fetcher, input, "loopback").await;
    }
    let message = refused(
        &fetcher,
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
    let image = fetched(&server, "/ok0").await;
    assert_eq!(image.mime, "image/png");
}

/// What an allowed host may answer and still be refused: redirects to forbidden targets or
/// schemes, too many redirects, bodies that are no image, errors.
#[tokio::test]
async fn refuses_bad_answers_of_an_allowed_host() {
    let server = MockServer::start().await;
    let port = server.address().port();
    let octet_stream = "application/octet-stream";
    let cases = [
        (
            redirect_to(&format!("http://127.0.0.2:{port}/x.png")),
            "`127.0.0.2` is a loopback address",
        ),
        (
            redirect_to(&format!("http://localhost:{port}/x.png")),
            "`localhost` resolves to a loopback address",
        ),
        (
            redirect_to("http://169.254.169.254/latest/meta-data"),
            "link-local",
        ),
        (redirect_to("ftp://example.com/x.png"), "`ftp`"),
        (
            ResponseTemplate::new(200).set_body_raw(&b"<html>hi</html>"[..], "text/html"),
            "not an image",
        ),
        (
            ResponseTemplate::new(200).set_body_raw(&b"just text"[..], octet_stream),
            "not an image",
        ),
        (ResponseTemplate::new(404), "HTTP 404"),
    ];
    let fetcher = fetcher(allowing(server.address()));
    for (case, (answer, needle)) in cases.into_iter().enumerate() {
        Mock::given(path(format!("/{case}")))
            .respond_with(answer)
            .mount(&server)
            .await;
        refused(&fetcher, url(format!("{}/{case}", server.uri())), needle).await;
    }
    redirect_chain(&server, "long", 4).await;
    let too_long = url(format!("{}/long0", server.uri()));
    refused(&fetcher, too_long, "redirected more than 3 times").await;
}

#[tokio::test]
async fn octet_stream_is_judged_by_its_bytes() {
    let server = MockServer::start().await;
    Mock::given(path("/png"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(PNG, "application/octet-stream"))
        .mount(&server)
        .await;
    let image = fetched(&server, "/png").await;
    assert_eq!(image.mime, "image/png");
}

#[tokio::test]
async fn refuses_an_oversized_body_by_content_length() {
    let server = png_server().await;
    let policy = FetchPolicy {
        max_bytes: 16,
        ..allowing(server.address())
    };
    refused(
        &fetcher(policy),
        url(format!("{}/x.png", server.uri())),
        "limit of 16 bytes",
    )
    .await;
}

/// Raw servers: a body of no declared length, none declared type, or none at all.
#[tokio::test]
async fn judges_raw_answers_by_their_bytes_and_time() {
    let head = "HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nConnection: close\r\n\r\n";
    let mut body = PNG.to_vec();
    body.resize(64 * 1024, 0);
    let addr = raw_server(head, body, false).await;
    let policy = FetchPolicy {
        max_bytes: 1024,
        ..allowing(&addr)
    };
    let input = url(format!("http://{addr}/x.png"));
    refused(&fetcher(policy), input, "limit of 1024 bytes").await;

    let untyped = "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n";
    let addr = raw_server(untyped, PNG.to_vec(), false).await;
    let image = fetcher(allowing(&addr))
        .fetch(&url(format!("http://{addr}/x.png")))
        .await
        .unwrap();
    assert_eq!(image.mime, "image/png");

    let hanging = "HTTP/1.1 200 OK\r\nContent-Type: image/png\r\n\r\n";
    let addr = raw_server(hanging, PNG.to_vec(), true).await;
    let policy = FetchPolicy {
        timeout: Duration::from_millis(300),
        ..allowing(&addr)
    };
    let input = url(format!("http://{addr}/x.png"));
    refused(&fetcher(policy), input, "timed out after 300ms").await;
}

#[test]
fn a_bad_allow_list_entry_is_a_configuration_error() {
    let policy = FetchPolicy {
        allow_hosts: vec!["http://fake/".into()],
        ..FetchPolicy::default()
    };
    assert_eq!(ReferenceFetcher::new(policy).unwrap_err().status(), 500);
}
