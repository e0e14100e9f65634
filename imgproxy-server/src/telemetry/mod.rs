//! What the server tells its operator: request ids and the one middleware that observes every
//! request (access log line, HTTP metrics), the log output, the Prometheus endpoint and the
//! OpenTelemetry trace export.

pub mod logs;
pub mod metrics;
pub mod request;
pub mod traces;

pub use request::{observe, RequestId, RequestNote};
