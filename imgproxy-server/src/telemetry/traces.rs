//! Trace export over OTLP/HTTP: the request spans and their children (the `tracing` spans of
//! the kernel and the service layer) go to an OpenTelemetry collector, as the standard `OTEL_*`
//! variables configure, and nowhere without them. Here the spans get their OpenTelemetry names,
//! kinds and the HTTP conventions' attribute names; the README ("Traces") lists them all.

use std::{env, future::Future, time::Duration};

use anyhow::{bail, Context as _};
use axum::http::{HeaderMap, StatusCode};
use opentelemetry::{
    propagation::TextMapPropagator as _,
    trace::{SpanKind, Status, TracerProvider as _},
    Key, KeyValue, Value,
};
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response, ResponseBodyTooLarge};
use opentelemetry_otlp::{Protocol, WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::{
    error::OTelSdkResult,
    propagation::TraceContextPropagator,
    resource::{EnvResourceDetector, Resource},
    trace::{SdkTracerProvider, SpanData, SpanExporter},
};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::{filter::Targets, registry::LookupSpan, Layer};

/// Collector base URL; traces go to its `/v1/traces`.
const ENV_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// Collector URL for traces, taken as it is (wins over [`ENV_ENDPOINT`]).
const ENV_TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
/// `otlp` or `none`.
const ENV_EXPORTER: &str = "OTEL_TRACES_EXPORTER";
/// `true` turns every signal off.
const ENV_DISABLED: &str = "OTEL_SDK_DISABLED";
const ENV_PROTOCOLS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
];
const ENV_TIMEOUTS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
];
/// The service name unless `OTEL_SERVICE_NAME` or `OTEL_RESOURCE_ATTRIBUTES` give one.
const SERVICE_NAME: &str = "imgproxy";
/// A collector's answer is a few bytes; a larger one is refused.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// The request span's fields (named for the log lines) and their names in the OpenTelemetry
/// HTTP conventions; `imgproxy.request_id` is ours. Its `route` field is left out: the route
/// is known for sure only when the answer is (see [`answered`]).
const REQUEST_ATTRIBUTES: [(&str, &str); 2] = [
    ("request_id", "imgproxy.request_id"),
    ("method", "http.request.method"),
];

/// Trace export, while it runs. [`Traces::shutdown`] sends what is still buffered.
#[derive(Debug)]
pub struct Traces {
    provider: SdkTracerProvider,
    /// Where the spans go, without credentials, for the start-up line.
    destination: String,
    protocol: &'static str,
}

/// Whether traces are exported, from the `OTEL_*` variables.
#[derive(Debug)]
pub enum Setup {
    /// Exported.
    On(Traces),
    /// Not exported, and why.
    Off(&'static str),
}

impl Setup {
    /// Reads the `OTEL_*` variables and, when they ask for traces, starts the exporter (its
    /// batches go out from a thread of the SDK's, their HTTP on the current Tokio runtime).
    /// A setting it cannot follow is an error, not a silent default.
    pub fn from_env() -> anyhow::Result<Self> {
        if var(ENV_DISABLED).is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Ok(Self::Off("OTEL_SDK_DISABLED is true"));
        }
        match var(ENV_EXPORTER).map(|v| v.to_ascii_lowercase()).as_deref() {
            Some("none") => return Ok(Self::Off("OTEL_TRACES_EXPORTER is none")),
            Some("otlp") => {}
            Some(other) => bail!(
                "{ENV_EXPORTER}=`{other}`: imgproxy exports traces by `otlp` only (or `none`)"
            ),
            None if var(ENV_ENDPOINT).is_none() && var(ENV_TRACES_ENDPOINT).is_none() => {
                return Ok(Self::Off("no OTEL_EXPORTER_OTLP_ENDPOINT set"))
            }
            None => {}
        }
        Traces::start().map(Self::On)
    }

    /// The one line logged about traces at start.
    pub fn report(&self) {
        match self {
            Self::On(traces) => tracing::info!(
                destination = %traces.destination,
                protocol = traces.protocol,
                "exporting traces over OTLP"
            ),
            Self::Off(why) => tracing::info!("trace export off: {why}"),
        }
    }

    /// The layer that turns spans into OpenTelemetry spans, when traces are on.
    pub fn layer<S>(&self) -> Option<impl Layer<S>>
    where
        S: tracing::Subscriber + for<'span> LookupSpan<'span>,
    {
        let Self::On(traces) = self else {
            return None;
        };
        Some(
            tracing_opentelemetry::layer()
                .with_tracer(traces.provider.tracer("imgproxy"))
                .with_location(false)
                .with_threads(false)
                .with_target(false)
                .with_tracked_inactivity(false)
                // imgproxy's own spans, whatever `RUST_LOG` lets through to the logs; not the
                // access line (the request span carries the same), nor libraries' spans.
                .with_filter(
                    Targets::new()
                        .with_target("imgproxy", tracing::Level::INFO)
                        .with_target("imgproxy::access", tracing::level_filters::LevelFilter::OFF),
                ),
        )
    }

    /// Sends the spans still buffered and stops the exporter (at most a few seconds).
    pub async fn shutdown(self) {
        let Self::On(traces) = self else { return };
        // Blocking: the batch thread's last export runs on this runtime meanwhile.
        let stopped = tokio::task::spawn_blocking(move || traces.provider.shutdown()).await;
        if let Ok(Err(error)) = stopped {
            tracing::warn!(%error, "flushing the last traces failed");
        }
    }
}

impl Traces {
    fn start() -> anyhow::Result<Self> {
        let (protocol, protocol_name) = protocol()?;
        let timeout = timeout()?;
        let client = RuntimeClient {
            client: reqwest::Client::builder()
                .timeout(timeout)
                .build()
                .context("building the trace exporter's HTTP client")?,
            runtime: tokio::runtime::Handle::current(),
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_protocol(protocol)
            .build()
            .context("the OTEL_EXPORTER_OTLP_* settings")?;
        let provider = SdkTracerProvider::builder()
            .with_resource(resource())
            .with_batch_exporter(Conventions(exporter))
            .build();
        Ok(Self {
            provider,
            destination: destination(),
            protocol: protocol_name,
        })
    }
}

/// Continues the caller's trace: the request span becomes a child of the span a W3C
/// `traceparent` header names (nothing happens without one, or with traces off).
pub fn continue_trace(span: &tracing::Span, headers: &HeaderMap) {
    if !headers.contains_key("traceparent") {
        return;
    }
    let parent =
        TraceContextPropagator::new().extract(&opentelemetry_http::HeaderExtractor(headers));
    // Fails only when traces are off (no layer) or the span is disabled: nothing to continue.
    let _ = span.set_parent(parent);
}

/// Notes the answer on the request span: its route template and status; a 5xx marks it failed
/// (the HTTP server conventions leave 4xx unset: the caller's mistake, not the server's).
pub fn answered(span: &tracing::Span, route: &str, status: StatusCode) {
    span.set_attribute("http.route", route.to_owned());
    span.set_attribute("http.response.status_code", i64::from(status.as_u16()));
    if status.is_server_error() {
        span.set_attribute("error.type", status.as_str().to_owned());
        span.set_status(Status::error(""));
    }
}

/// Gives spans their OpenTelemetry names, kinds and attribute names on their way out: the
/// request span is the server span `{method} {route}`, an upstream call (any span with a
/// `gen_ai.operation.name`) the client span `{operation} {model}`.
#[derive(Debug)]
struct Conventions<E>(E);

impl<E: SpanExporter> SpanExporter for Conventions<E> {
    fn export(&self, mut batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
        batch.iter_mut().for_each(follow_conventions);
        self.0.export(batch)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.0.set_resource(resource);
    }
}

fn follow_conventions(span: &mut SpanData) {
    if span.name == "request" {
        span.attributes
            .retain(|attribute| attribute.key.as_str() != "route");
        for attribute in &mut span.attributes {
            if let Some((_, name)) = REQUEST_ATTRIBUTES
                .iter()
                .find(|(field, _)| attribute.key.as_str() == *field)
            {
                attribute.key = Key::from_static_str(name);
            }
        }
        span.span_kind = SpanKind::Server;
        let method = attribute(span, "http.request.method");
        let route = attribute(span, "http.route");
        span.name = format!("{method} {route}").trim().to_owned().into();
    } else if let Some(operation) = attribute_opt(span, "gen_ai.operation.name") {
        let model = attribute(span, "gen_ai.request.model");
        span.span_kind = SpanKind::Client;
        span.name = format!("{operation} {model}").trim().to_owned().into();
    }
}

fn attribute_opt(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

fn attribute(span: &SpanData, key: &str) -> String {
    attribute_opt(span, key).unwrap_or_default()
}

/// The exporter's HTTP client: the workspace's reqwest (rustls), each request run on the
/// server's runtime, since the SDK's batch processor exports from a plain thread.
#[derive(Debug)]
struct RuntimeClient {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl HttpClient for RuntimeClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let request = reqwest::Request::try_from(request)?;
        let client = self.client.clone();
        self.runtime
            .spawn(async move {
                let mut response = client.execute(request).await?;
                let mut body = Vec::new();
                while let Some(chunk) = response.chunk().await? {
                    if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                        return Err(ResponseBodyTooLarge::new().into());
                    }
                    body.extend_from_slice(&chunk);
                }
                let mut answer = Response::new(Bytes::from(body));
                *answer.status_mut() = response.status();
                *answer.headers_mut() = std::mem::take(response.headers_mut());
                Ok(answer)
            })
            .await?
    }
}

/// `OTEL_SERVICE_NAME`, else a `service.name` of `OTEL_RESOURCE_ATTRIBUTES`, else `imgproxy`;
/// the other resource attributes as the SDK detects them, and the version.
fn resource() -> Resource {
    let from_attributes = Resource::builder_empty()
        .with_detector(Box::new(EnvResourceDetector::new()))
        .build()
        .get(&Key::from_static_str("service.name"));
    let name = var("OTEL_SERVICE_NAME")
        .map(Value::from)
        .or(from_attributes)
        .unwrap_or_else(|| SERVICE_NAME.into());
    Resource::builder()
        .with_service_name(name)
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build()
}

/// `http/protobuf` (the standard's default) or `http/json`; gRPC is not built in.
fn protocol() -> anyhow::Result<(Protocol, &'static str)> {
    let Some((name, value)) = ENV_PROTOCOLS
        .iter()
        .find_map(|name| var(name).map(|value| (name, value)))
    else {
        return Ok((Protocol::HttpBinary, "http/protobuf"));
    };
    match value.to_ascii_lowercase().as_str() {
        "http/protobuf" => Ok((Protocol::HttpBinary, "http/protobuf")),
        "http/json" => Ok((Protocol::HttpJson, "http/json")),
        _ => bail!("{name}=`{value}`: imgproxy exports over `http/protobuf` or `http/json`"),
    }
}

/// How long one export may take: `OTEL_EXPORTER_OTLP_[TRACES_]TIMEOUT` milliseconds, else 10 s.
fn timeout() -> anyhow::Result<Duration> {
    match ENV_TIMEOUTS
        .iter()
        .find_map(|name| var(name).map(|value| (name, value)))
    {
        Some((name, value)) => value
            .trim()
            .parse()
            .map(Duration::from_millis)
            .with_context(|| format!("{name}=`{value}`: milliseconds expected")),
        None => Ok(opentelemetry_otlp::OTEL_EXPORTER_OTLP_TIMEOUT_DEFAULT),
    }
}

/// The traces' endpoint as the exporter resolves it, reduced to scheme, host, port and path
/// (a URL's user, password or query may be a credential).
fn destination() -> String {
    let endpoint = var(ENV_TRACES_ENDPOINT).unwrap_or_else(|| {
        let base = var(ENV_ENDPOINT).unwrap_or_else(|| "http://localhost:4318".into());
        format!("{}/v1/traces", base.trim_end_matches('/'))
    });
    match url::Url::parse(&endpoint) {
        Ok(url) => format!(
            "{}://{}{}{}",
            url.scheme(),
            url.host_str().unwrap_or_default(),
            url.port().map(|p| format!(":{p}")).unwrap_or_default(),
            url.path()
        ),
        Err(_) => "(an unparsable endpoint)".into(),
    }
}

/// A variable's value, unless unset or empty (the standard treats both alike).
fn var(name: &str) -> Option<String> {
    env::var(name).ok().filter(|v| !v.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use opentelemetry::trace::{SpanContext, SpanId, Status as SpanStatus};
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};

    use super::*;

    fn span(name: &'static str, attributes: Vec<KeyValue>) -> SpanData {
        SpanData {
            span_context: SpanContext::empty_context(),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: name.into(),
            start_time: SystemTime::UNIX_EPOCH,
            end_time: SystemTime::UNIX_EPOCH,
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: SpanStatus::Unset,
            instrumentation_scope: Default::default(),
        }
    }

    /// The request span becomes a server span in HTTP terms, an upstream call a client span
    /// named for its operation and model; others keep their name and kind.
    #[test]
    fn spans_follow_the_conventions_of_what_they_are() {
        let cases = [
            (
                "request",
                vec![
                    KeyValue::new("request_id", "req_1"),
                    KeyValue::new("method", "POST"),
                    KeyValue::new("route", "fallback"),
                    KeyValue::new("http.route", "/v1/images/generations"),
                ],
                "POST /v1/images/generations",
                SpanKind::Server,
            ),
            (
                "upstream",
                vec![
                    KeyValue::new("gen_ai.operation.name", "generate_image"),
                    KeyValue::new("gen_ai.request.model", "gpt-image-1"),
                ],
                "generate_image gpt-image-1",
                SpanKind::Client,
            ),
            (
                "store_images",
                vec![KeyValue::new("imgproxy.images", 2)],
                "store_images",
                SpanKind::Internal,
            ),
        ];
        for (name, attributes, renamed, kind) in cases {
            let mut data = span(name, attributes);
            follow_conventions(&mut data);
            assert_eq!((data.name.as_ref(), &data.span_kind), (renamed, &kind));
            if name == "request" {
                let keys: Vec<&str> = data.attributes.iter().map(|kv| kv.key.as_str()).collect();
                assert_eq!(
                    keys,
                    ["imgproxy.request_id", "http.request.method", "http.route"]
                );
            }
        }
    }
}
