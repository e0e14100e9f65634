//! Log output: a filter from `RUST_LOG` (default `info`), text or one JSON object per line,
//! colour only on a terminal; and the one subscriber that also feeds trace export.

use std::io::IsTerminal as _;

use tracing_subscriber::{
    fmt, layer::SubscriberExt as _, util::SubscriberInitExt as _, EnvFilter, Layer as _,
};

use super::traces::Setup;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (coloured when stderr is a terminal).
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Installs the process's subscriber: log lines to stderr, and the spans to `traces` when they
/// are exported. `RUST_LOG` filters the log lines only: traces see imgproxy's spans whatever it
/// says.
pub fn init(format: LogFormat, traces: &Setup) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let lines = match format {
        LogFormat::Text => fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .boxed(),
        LogFormat::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(lines.with_filter(filter))
        .with(traces.layer())
        .init();
}
