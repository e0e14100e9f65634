//! `imgproxy-testkit`: the provider conformance suite (one [`Fixture`] per provider, the same
//! cases for all, stamped out by [`conformance_suite!`]), helpers to make test images, and a
//! fake provider for the tests of what sits above the providers ([`fake::FakeProvider`]).
//!
//! A fixture mounts wiremock fakes built from the provider's documented wire format; the
//! fakes assert the exact outgoing requests (`body_json`, headers) and their counts
//! (`expect`), while the cases here assert what the gateway answers.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test support code fails loudly"
)]

pub mod fake;
pub mod form;

use std::{io::Cursor, sync::Arc, time::Duration};

use async_trait::async_trait;
use base64::Engine as _;
use imgproxy_core::{
    upstream::{UpstreamAdapter, UpstreamProvider, UpstreamSettings},
    Catalog, Gateway, ImageInput, ImageProvider, ImageRequest, ImageResponse, ProviderError,
    ProviderRequest, ValidatedRequest,
};
use serde_json::Value;
use wiremock::{
    matchers::{header, method, path},
    Mock, MockBuilder, MockServer, ResponseTemplate,
};

/// Poll deadline fixtures should give async providers, so that deadline cases finish fast.
pub const TEST_DEADLINE: Duration = Duration::from_secs(2);

/// A provider under test.
#[async_trait]
pub trait Fixture: Send + Sync + 'static {
    /// Whether the upstream is asynchronous (submit, then poll); synchronous unless a fixture
    /// says so. Such fixtures are stamped out with `conformance_suite!(F, polling)`, which adds
    /// the polling cases.
    const ASYNC: bool = false;

    /// A gateway whose provider talks to `server`, with [`TEST_DEADLINE`] as poll deadline.
    fn gateway(server: &MockServer) -> Gateway;

    /// The request of the success cases: `n` images of [`Fixture::model`] with `references`
    /// reference images, at most [`Fixture::max_references`] (made by [`reference_png`], as
    /// data URLs) of [`Fixture::reference_model`]. Override for models that need other fields.
    fn request(n: u32, references: usize) -> ImageRequest {
        let references = references.min(Self::max_references());
        let model = if references > 0 {
            Self::reference_model()
        } else {
            Self::model()
        };
        let mut request = ImageRequest::new(model, "a red fox in the snow");
        request.n = Some(n);
        if references > 0 {
            request.images = Some(
                (0..references)
                    .map(|i| ImageInput::Text(data_url(&reference_png(i))))
                    .collect(),
            );
        }
        request
    }

    /// The model the cases request.
    fn model() -> &'static str;

    /// The most reference images the reference-image case sends (the model's
    /// `max_reference_images`, where it takes fewer than the case asks for).
    fn max_references() -> usize {
        usize::MAX
    }

    /// The model the reference-image case requests, where [`Fixture::model`] takes none.
    fn reference_model() -> &'static str {
        Self::model()
    }

    /// Mounts a successful exchange for [`Fixture::request`]`(n, references)`, asserting the
    /// exact outgoing requests (including where the reference images go).
    async fn success(server: &MockServer, n: u32, references: usize);
    /// Mounts the upstream's content-moderation refusal.
    async fn moderation(server: &MockServer);
    /// Mounts `answer` as the upstream's answer to the first call of
    /// [`Fixture::request`]`(1, 0)`, asserting that call exactly and expecting it once: the
    /// failure cases that are one bad answer use it.
    async fn answer_first_call(server: &MockServer, answer: ResponseTemplate);
    /// A 429 saying to retry after `seconds` (see [`too_many_requests`]).
    fn rate_limited(seconds: u64) -> ResponseTemplate;
    /// A 5xx.
    fn server_error() -> ResponseTemplate;
    /// A 200 whose body is not the documented shape.
    fn malformed() -> ResponseTemplate;
    /// A 200 whose body is cut off mid-JSON (see [`cut_off_json`]).
    fn truncated() -> ResponseTemplate;
    /// Async only: a job that completes after several polls.
    async fn slow_completion(_server: &MockServer) {}
    /// Async only: a job that ends in the upstream's failure status (not a moderation).
    async fn failed_status(_server: &MockServer) {}
    /// Async only: a job that never completes; mounts the cancel endpoint (`expect(1)`)
    /// where the API has one.
    async fn never_completes(_server: &MockServer) {}
}

/// A real PNG, distinct per `index`: reference image number `index` of the cases.
pub fn reference_png(index: usize) -> Vec<u8> {
    let shade = u8::try_from(index * 40 % 256).unwrap();
    png(8, 8, [shade, 100, 200])
}

/// A real `width`×`height` PNG of one colour.
pub fn png(width: u32, height: u32, rgb: [u8; 3]) -> Vec<u8> {
    let image = image::RgbImage::from_pixel(width, height, image::Rgb(rgb));
    let mut out = Cursor::new(Vec::new());
    image.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// A real 16×16 PNG, distinct per `index`: image number `index` a fake upstream answers with.
pub fn output_png(index: usize) -> Vec<u8> {
    let shade = u8::try_from(index * 50 % 256).unwrap();
    png(16, 16, [shade, 0, 0])
}

/// Base64 of `bytes`.
pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// `bytes` as a `data:image/png;base64,...` URL.
pub fn data_url(bytes: &[u8]) -> String {
    format!("data:image/png;base64,{}", b64(bytes))
}

/// A gateway over the embedded catalog whose one provider is `provider`.
pub fn gateway_of(provider: impl ImageProvider + 'static) -> Gateway {
    Gateway::builder(Catalog::embedded().unwrap())
        .provider(Arc::new(provider))
        .build()
}

/// One attempt per request: tests that read how one upstream answer maps (a 429's wait
/// included) must not see the gateway retry it; failover has tests of its own.
pub fn one_attempt() -> imgproxy_core::failover::FailoverPolicy {
    imgproxy_core::failover::FailoverPolicy {
        max_attempts: 1,
        ..Default::default()
    }
}

/// The provider of adapter `A`, keyed with `key`, whose API root is `server`.
pub fn provider_at<A: UpstreamAdapter>(server: &MockServer, key: &str) -> UpstreamProvider<A> {
    UpstreamProvider::new(UpstreamSettings::new(key).with_base_url(server.uri())).unwrap()
}

/// A gateway over the embedded catalog whose one provider is adapter `A`'s, keyed with `key`
/// and talking to `server`.
pub fn gateway_at<A: UpstreamAdapter>(server: &MockServer, key: &str) -> Gateway {
    gateway_of(provider_at::<A>(server, key))
}

/// Asserts the names a provider of adapter `A` goes by: `name` in catalog entries, `genai` in
/// traces (the GenAI semantic conventions' `gen_ai.provider.name`).
pub fn assert_provider_names<A: UpstreamAdapter>(name: &str, genai: &str) {
    let provider = UpstreamProvider::<A>::new(UpstreamSettings::new("key")).unwrap();
    assert_eq!((provider.name(), provider.genai_name()), (name, genai));
}

/// The error `gateway` answers `request` with; a success fails the test.
pub async fn refusal(gateway: &Gateway, request: ImageRequest) -> imgproxy_core::Error {
    match gateway.generate(request).await {
        Ok(response) => panic!("expected a failure, got {} images", response.data.len()),
        Err(error) => error,
    }
}

/// Asserts that `parse`, an OpenAI-compatible adapter's reading of a 200 body, needs `data`
/// with an image in each item: a body without `data`, `item_without_image` (whose one item has
/// neither `b64_json` nor `url`) and an item of bad base64 are each a `Failed` saying so.
pub fn assert_data_items_required<T: std::fmt::Debug>(
    parse: impl Fn(&[u8]) -> Result<T, ProviderError>,
    item_without_image: &[u8],
) {
    let failed = |body: &[u8]| match parse(body) {
        Err(ProviderError::Failed { message }) => message,
        other => panic!("expected a failure, got {other:?}"),
    };
    assert!(failed(br#"{"created": 1}"#).starts_with("malformed upstream response: "));
    assert!(failed(item_without_image).contains("data[0]"));
    assert!(failed(br#"{"data": [{"b64_json": "!!"}]}"#).contains("b64_json"));
}

/// The provider call of one image of `request`: the first, with no reference images, mask,
/// partials or job reports (set those with struct update syntax).
pub fn one_image(request: &ValidatedRequest) -> ProviderRequest<'_> {
    ProviderRequest {
        request,
        n: 1,
        first_index: 0,
        references: &[],
        mask: None,
        partials: None,
        jobs: None,
    }
}

/// A POST to `endpoint` carrying `Authorization: Bearer {key}`.
pub fn bearer_post(endpoint: &str, key: &str) -> MockBuilder {
    Mock::given(method("POST"))
        .and(path(endpoint))
        .and(header("authorization", format!("Bearer {key}").as_str()))
}

/// Mounts `request` on `server`, answered with `response` and expected exactly once.
pub async fn mount_once(server: &MockServer, request: MockBuilder, response: ResponseTemplate) {
    request.respond_with(response).expect(1).mount(server).await;
}

/// Mounts `file_path` on `server` as a file to download, served once as `body` of
/// `content_type`.
pub async fn serve_file_once(
    server: &MockServer,
    file_path: &str,
    body: impl Into<Vec<u8>>,
    content_type: &str,
) {
    let file = ResponseTemplate::new(200).set_body_raw(body, content_type);
    mount_once(
        server,
        Mock::given(method("GET")).and(path(file_path)),
        file,
    )
    .await;
}

/// Asserts that `error` is answered with `status` and the error code `code`.
pub fn assert_error(error: &imgproxy_core::Error, status: u16, code: &str) {
    assert_eq!((error.status(), error.code()), (status, Some(code)));
}

/// `base` with the fields of `extra` added (both JSON objects; `extra` wins).
pub fn merged(mut base: Value, extra: Value) -> Value {
    if let (Value::Object(base), Value::Object(extra)) = (&mut base, extra) {
        base.extend(extra);
    }
    base
}

/// The request a client sends as the JSON `body`.
pub fn request_of(body: Value) -> ImageRequest {
    serde_json::from_value(body).unwrap()
}

/// Mounts `request` as a call that must never come: answered 500, expected 0 times, and
/// matched ahead of every other mock.
pub async fn forbid(server: &MockServer, request: MockBuilder) {
    request
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .with_priority(1)
        .mount(server)
        .await;
}

/// Mounts `answer` to the first `request` only, ahead of every other mock: a transient
/// failure before the mocks of the normal exchange answer.
pub async fn answer_first_only(
    server: &MockServer,
    request: MockBuilder,
    answer: ResponseTemplate,
) {
    request
        .respond_with(answer)
        .up_to_n_times(1)
        .expect(1)
        .with_priority(1)
        .mount(server)
        .await;
}

/// Asserts that `gateway` refuses each request of `cases` with a 400 naming its parameter,
/// and that none of them reached `server`.
pub async fn assert_refused_before_any_call(
    gateway: &Gateway,
    server: &MockServer,
    cases: impl IntoIterator<Item = (ImageRequest, &str)>,
) {
    for (request, param) in cases {
        let sent = format!("{request:?}");
        let error = gateway.generate(request).await.expect_err(&sent);
        assert_eq!(
            (error.status(), error.param()),
            (400, Some(param)),
            "{sent}: {error}"
        );
    }
    let received = server.received_requests().await.unwrap_or_default();
    assert!(received.is_empty(), "{received:?}");
}

/// A 429 asking to retry after `seconds`, with the JSON `body`.
pub fn too_many_requests(seconds: u64, body: Value) -> ResponseTemplate {
    ResponseTemplate::new(429)
        .insert_header("retry-after", seconds.to_string().as_str())
        .set_body_json(body)
}

/// A 200 labelled `application/json` whose body is `cut_off`, JSON cut off midway.
pub fn cut_off_json(cut_off: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_raw(cut_off, "application/json")
}

/// A wiremock matcher for requests without the header `.0`: download and output URLs never
/// see the key (`WithoutHeader("authorization")`).
#[derive(Debug, Clone, Copy)]
pub struct WithoutHeader(pub &'static str);

impl wiremock::Match for WithoutHeader {
    fn matches(&self, request: &wiremock::Request) -> bool {
        !request.headers.contains_key(self.0)
    }
}

/// The cases, generic over the fixture; [`conformance_suite!`] makes one test of each.
pub mod cases {
    use super::*;

    async fn run<F: Fixture>(
        server: &MockServer,
        request: ImageRequest,
    ) -> imgproxy_core::Result<ImageResponse> {
        F::gateway(server).generate(request).await
    }

    /// `n` images come back, each a decodable image.
    pub async fn success<F: Fixture>(n: u32, references: usize) {
        let server = MockServer::start().await;
        F::success(&server, n, references).await;
        let response = run::<F>(&server, F::request(n, references))
            .await
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(response.data.len(), n as usize);
        for image in &response.data {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(image.b64_json.as_ref().unwrap())
                .unwrap();
            assert!(
                imgproxy_core::provider::sniff_mime(&bytes).is_some(),
                "not an image: {:?}",
                &bytes[..bytes.len().min(16)]
            );
        }
    }

    /// How long the rate-limited upstream asks to wait.
    const RETRY_AFTER_SECS: u64 = 17;

    /// An upstream failure a case mounts with its [`Fixture`] method.
    #[derive(Debug, Clone, Copy)]
    pub enum Failure {
        /// [`Fixture::moderation`].
        Moderation,
        /// [`Fixture::rate_limited`].
        RateLimited,
        /// [`Fixture::server_error`].
        ServerError,
        /// [`Fixture::malformed`].
        Malformed,
        /// [`Fixture::truncated`].
        Truncated,
        /// [`Fixture::failed_status`].
        FailedStatus,
        /// [`Fixture::never_completes`].
        NeverCompletes,
    }

    impl Failure {
        async fn mount<F: Fixture>(self, server: &MockServer) {
            match self {
                Self::Moderation => F::moderation(server).await,
                Self::RateLimited => {
                    F::answer_first_call(server, F::rate_limited(RETRY_AFTER_SECS)).await;
                }
                Self::ServerError => F::answer_first_call(server, F::server_error()).await,
                Self::Malformed => F::answer_first_call(server, F::malformed()).await,
                Self::Truncated => F::answer_first_call(server, F::truncated()).await,
                Self::FailedStatus => F::failed_status(server).await,
                Self::NeverCompletes => F::never_completes(server).await,
            }
        }

        /// The status the gateway answers with, and the code where one is fixed: a content
        /// refusal is 400 `moderation_blocked`, an upstream 429 a 429, a job past its deadline
        /// a 504; any other failure of the upstream is a 502.
        fn answer(self) -> (u16, Option<&'static str>) {
            match self {
                Self::Moderation => (400, Some("moderation_blocked")),
                Self::RateLimited => (429, None),
                Self::NeverCompletes => (504, Some("upstream_timeout")),
                Self::ServerError | Self::Malformed | Self::Truncated | Self::FailedStatus => {
                    (502, None)
                }
            }
        }
    }

    /// The upstream fails as `failure` says, and the request fails with its answer. A 429
    /// carries the upstream's wait; a job past its deadline is cancelled upstream.
    pub async fn fails<F: Fixture>(failure: Failure) {
        let server = MockServer::start().await;
        failure.mount::<F>(&server).await;
        let error = run::<F>(&server, F::request(1, 0))
            .await
            .expect_err("the request should fail");
        let (status, code) = failure.answer();
        assert_eq!(error.status(), status, "{error:?}");
        if let Some(code) = code {
            assert_eq!(error.code(), Some(code), "{error:?}");
        }
        match failure {
            Failure::RateLimited => assert_eq!(
                error.retry_after(),
                Some(Duration::from_secs(RETRY_AFTER_SECS))
            ),
            // The cancel is sent in the background; give it a moment before the fake
            // verifies.
            Failure::NeverCompletes => tokio::time::sleep(Duration::from_millis(300)).await,
            _ => {}
        }
    }

    /// A job that needs several polls still succeeds.
    pub async fn slow_completion<F: Fixture>() {
        let server = MockServer::start().await;
        F::slow_completion(&server).await;
        let response = run::<F>(&server, F::request(1, 0))
            .await
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(response.data.len(), 1);
    }
}

/// Stamps out the conformance cases for a [`Fixture`] as `#[tokio::test]`s in a module
/// `conformance`: `conformance_suite!(Fixture)` for a synchronous upstream,
/// `conformance_suite!(Fixture, polling)` for an asynchronous one (submit, then poll), which
/// adds the polling cases. Cases that do not apply to a provider are not generated, so none
/// passes without asserting anything; `fixture_kind_matches` fails if the form used does not
/// match [`Fixture::ASYNC`].
#[macro_export]
macro_rules! conformance_suite {
    ($fixture:ty) => {
        $crate::conformance_suite!(@suite $fixture, false, {});
    };
    ($fixture:ty, polling) => {
        $crate::conformance_suite!(@suite $fixture, true, {
            slow_completion_succeeds => slow_completion(),
            failed_status_is_502 => fails(cases::Failure::FailedStatus),
            deadline_exceeded_is_504_and_cancelled => fails(cases::Failure::NeverCompletes),
        });
    };
    (@suite $fixture:ty, $polling:literal, { $($name:ident => $case:ident($($arg:expr),*),)* }) => {
        mod conformance {
            use $crate::{cases, Fixture as _};

            #[test]
            fn fixture_kind_matches() {
                assert_eq!(
                    <$fixture>::ASYNC,
                    $polling,
                    "an asynchronous fixture uses `conformance_suite!(F, polling)`, a synchronous \
                     one `conformance_suite!(F)`"
                );
            }

            $crate::conformance_suite!(@tests $fixture,
                success_one_image => success(1, 0),
                success_several_images => success(2, 0),
                reference_images_reach_the_upstream => success(1, 2),
                moderation_block_is_400_moderation_blocked => fails(cases::Failure::Moderation),
                rate_limit_is_429_with_retry_after => fails(cases::Failure::RateLimited),
                server_error_is_502 => fails(cases::Failure::ServerError),
                malformed_body_is_502 => fails(cases::Failure::Malformed),
                truncated_body_is_502 => fails(cases::Failure::Truncated),
                $($name => $case($($arg),*),)*
            );
        }
    };
    (@tests $fixture:ty, $($name:ident => $case:ident($($arg:expr),*),)*) => {
        $(
            #[tokio::test]
            async fn $name() {
                cases::$case::<$fixture>($($arg),*).await;
            }
        )*
    };
}
