//! Prometheus: the recorder the process installs, the HTTP-level metrics the server records
//! itself (the gateway's own are named in `imgproxy_core::telemetry`), and `GET /metrics`.

use std::time::Duration;

use axum::{
    extract::State,
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use imgproxy_core::Fault;
use metrics::{counter, describe_counter, describe_histogram, histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use secrecy::{ExposeSecret as _, SecretString};

use crate::error::ApiError;

/// HTTP requests, by `route` (the route template, never the raw path), `method` and
/// `status` class (`2xx` … `5xx`).
pub const HTTP_REQUESTS: &str = "imgproxy_http_requests_total";
/// Time from a request's head to its answer's last byte, by `route` and `method`.
pub const HTTP_DURATION: &str = "imgproxy_http_request_duration_seconds";
/// The gateway's own part of that time (the request's time minus the upstream's), by `route`.
pub const OVERHEAD: &str = "imgproxy_gateway_overhead_seconds";
/// Bytes of answer bodies sent, by `route`.
pub const RESPONSE_BYTES: &str = "imgproxy_http_response_bytes_total";
/// Error answers, by `fault` (`caller`, `policy`, `provider`, `gateway`) and `kind` (a closed
/// vocabulary): alert on `fault="gateway"`.
pub const ERRORS: &str = "imgproxy_errors_total";
/// Credits charged by the paying key, by `key_id`; only when `[metrics] key_labels` is on.
pub const KEY_CREDITS: &str = "imgproxy_key_credits_charged_total";

/// Request latencies: from a cache hit's milliseconds to a slow upstream's minutes.
const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0,
];
/// The gateway's own time: tens of microseconds to a second.
const OVERHEAD_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];
/// How often histograms are compacted.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Installs the process-wide Prometheus recorder (once, at start) and describes every metric.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(OVERHEAD.to_owned()), OVERHEAD_BUCKETS)?
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), DURATION_BUCKETS)?
        .install_recorder()?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(UPKEEP_EVERY);
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests by route template, method and status class."
    );
    describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "HTTP request time to the last byte."
    );
    describe_histogram!(OVERHEAD, Unit::Seconds, "Request time minus upstream time.");
    describe_counter!(RESPONSE_BYTES, Unit::Bytes, "Bytes of answer bodies sent.");
    describe_counter!(ERRORS, "Error answers by fault and kind.");
    describe_counter!(
        KEY_CREDITS,
        "Credits charged per key (only with key_labels)."
    );
    imgproxy_core::telemetry::describe();
    Ok(handle)
}

/// One finished HTTP request.
pub fn http_request(
    route: &str,
    method: &str,
    status: StatusCode,
    elapsed: Duration,
    overhead: Duration,
    bytes: u64,
) {
    let class = match status.as_u16() / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    };
    let route = route.to_owned();
    let method = method.to_owned();
    counter!(HTTP_REQUESTS, "route" => route.clone(), "method" => method.clone(), "status" => class)
        .increment(1);
    histogram!(HTTP_DURATION, "route" => route.clone(), "method" => method).record(elapsed);
    histogram!(OVERHEAD, "route" => route.clone()).record(overhead);
    counter!(RESPONSE_BYTES, "route" => route).increment(bytes);
}

/// One error answer.
pub fn error(fault: Fault, kind: &'static str) {
    counter!(ERRORS, "fault" => fault.as_str(), "kind" => kind).increment(1);
}

/// Credits charged to `key_id` (recorded only when the operator turned key labels on).
pub fn key_credits(key_id: &str, credits: u64) {
    counter!(KEY_CREDITS, "key_id" => key_id.to_owned()).increment(credits);
}

/// The sum of every series of `name` in `exposition` (Prometheus' text format, as the
/// recorder renders it), or only of those whose labels include `label` (`("status", "5xx")`);
/// 0 when there is none. Histogram series (`_bucket`, `_sum`, `_count`) have names of their own.
pub fn total(exposition: &str, name: &str, label: Option<(&str, &str)>) -> f64 {
    let wanted = label.map(|(key, value)| format!("{key}=\"{value}\""));
    exposition
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(labelled) => labelled.rsplit_once('}')?,
                None if rest.starts_with(' ') => ("", rest),
                None => return None,
            };
            let matches = wanted
                .as_deref()
                .is_none_or(|wanted| labels.split(',').any(|pair| pair.trim() == wanted));
            matches.then(|| value.split_whitespace().next()?.parse::<f64>().ok())?
        })
        // Not `sum`: the sum of no floats is -0.0, which a page would show as `-0`.
        .fold(0.0, |total, value| total + value)
}

/// What `GET /metrics` serves, and to whom.
#[derive(Debug, Clone)]
pub struct Exposition {
    /// The installed recorder's handle.
    pub handle: PrometheusHandle,
    /// The Bearer token a scrape must send, if any.
    pub token: Option<std::sync::Arc<SecretString>>,
}

/// `GET /metrics`: the text exposition format.
pub async fn scrape(State(exposition): State<Exposition>, headers: HeaderMap) -> Response {
    if let Some(token) = &exposition.token {
        let sent = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        let expected = token.expose_secret();
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            sent.as_bytes(),
            expected.as_bytes(),
        )) {
            return ApiError::Unauthorized.into_response();
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        exposition.handle.render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::total;

    #[test]
    fn totals_add_up_series_by_name_and_label() {
        let text = "# TYPE imgproxy_http_requests_total counter\n\
            imgproxy_http_requests_total{route=\"/v1/models\",method=\"GET\",status=\"2xx\"} 3\n\
            imgproxy_http_requests_total{route=\"/v1/a,b\",method=\"POST\",status=\"5xx\"} 2\n\
            imgproxy_http_requests_total_other 100\n\
            imgproxy_generations_in_flight 1.5\n";
        assert_eq!(total(text, "imgproxy_http_requests_total", None), 5.0);
        assert_eq!(
            total(
                text,
                "imgproxy_http_requests_total",
                Some(("status", "5xx"))
            ),
            2.0
        );
        assert_eq!(
            total(
                text,
                "imgproxy_http_requests_total",
                Some(("status", "4xx"))
            ),
            0.0
        );
        assert_eq!(total(text, "imgproxy_generations_in_flight", None), 1.5);
        assert!(total(text, "imgproxy_missing", None).is_sign_positive());
        assert_eq!(total(text, "imgproxy_missing", None), 0.0);
    }
}
