//! Upstream failures into [`ProviderError`]s: fal's error bodies (validation items, `detail`
//! texts, `message`), its statuses and headers, and the result endpoint's "not ready yet" (the
//! key is already scrubbed from a [`Rejection`]). Pure functions only. It reads the input
//! mapping of `convert` (to name the parameter at fault), never the other way.

use std::collections::BTreeMap;

use imgproxy_core::{
    upstream::{self, short, FastApiError, Rejection},
    ProviderError,
};
use serde_json::Value;

use crate::convert::InputMapping;

/// The moderation `type` of fal's validation items (third-party reports: a 422 on the result).
const CONTENT_POLICY: &str = "content_policy_violation";

/// Whether a result-endpoint error only says the job is not done yet (vercel special-cases it).
pub(crate) fn still_in_progress(body: &[u8]) -> bool {
    FastApiError::read(body)
        .detail_text()
        .is_some_and(|text| text.to_ascii_lowercase().contains("still in progress"))
}

/// Maps a non-2xx answer: 429 with its wait; 504 from a user timeout; a content-policy item →
/// moderation; validation items → invalid request naming our parameter; else by status.
pub(crate) fn upstream_error(
    rejection: &Rejection,
    mapping: &InputMapping,
    params: &BTreeMap<String, Value>,
) -> ProviderError {
    let Rejection {
        status,
        ref headers,
        ref body,
    } = *rejection;
    let retry_after = rejection.retry_after();
    if status == 429 {
        return ProviderError::RateLimited { retry_after };
    }
    let timeout_type = headers
        .get("x-fal-request-timeout-type")
        .and_then(|v| v.to_str().ok());
    if status == 504 && timeout_type == Some("user") {
        return ProviderError::Timeout;
    }
    let error = FastApiError::read(body);
    let detail_items = error.items();
    let items = detail_items.as_deref().unwrap_or_default();
    if let Some(item) = items
        .iter()
        .find(|i| i.kind.as_deref() == Some(CONTENT_POLICY))
    {
        let message = item
            .msg
            .as_deref()
            .unwrap_or("the upstream refused the content");
        return ProviderError::ModerationBlocked {
            message: short(message),
        };
    }
    let field = |loc: &[Value]| {
        loc.iter()
            .rev()
            .filter_map(Value::as_str)
            .find(|part| *part != "body")
            .map(str::to_owned)
    };
    let text = match (error.detail_text(), &detail_items) {
        (Some(text), _) => text.to_owned(),
        (None, Some(items)) => items
            .iter()
            .map(|item| {
                let msg = item.msg.as_deref().unwrap_or("invalid");
                field(&item.loc).map_or_else(|| msg.to_owned(), |f| format!("{f}: {msg}"))
            })
            .collect::<Vec<_>>()
            .join("; "),
        (None, None) => error.message.clone().unwrap_or_default(),
    };
    if matches!(status, 400 | 422) && !text.is_empty() {
        let param = items
            .first()
            .and_then(|item| field(&item.loc))
            .and_then(|f| mapping.param_of(&f, params));
        return ProviderError::InvalidRequest {
            message: format!("upstream rejected the request: {}", short(&text)),
            param,
            code: Some("upstream_invalid_request".into()),
        };
    }
    upstream::status_error(status, retry_after, &text)
}
