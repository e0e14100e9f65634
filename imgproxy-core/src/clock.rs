//! The one clock: Unix time as every response, record, task and signature writes it.

use std::time::Duration;

/// Unix seconds now.
pub fn now_secs() -> i64 {
    now().as_secs().try_into().unwrap_or(i64::MAX)
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    now().as_millis().try_into().unwrap_or(i64::MAX)
}

fn now() -> Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}
