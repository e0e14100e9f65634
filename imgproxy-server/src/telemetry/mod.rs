//! What the server tells its operator: request ids and the one middleware that observes every
//! request (access log line, HTTP metrics), the log output, and the Prometheus endpoint.

pub mod logs;
pub mod metrics;
pub mod request;

pub use request::{observe, RequestId, RequestNote};
