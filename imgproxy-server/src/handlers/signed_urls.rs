//! `POST /v1/signed-urls`: a URL-API URL that carries no API key, for public HTML. It is
//! signed for the calling key (`kid`), which it bills, and checked before it is signed.

use axum::{extract::State, Extension, Json};
use imgproxy_core::{
    service::{signing, url_api},
    Error,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{auth::Caller, error::ApiError, extract::OpenAIJson, state::AppState};

/// The longest a signed URL may live: a year.
pub const MAX_EXPIRES_IN: u64 = 366 * 24 * 60 * 60;

/// The request body.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SignRequest {
    /// URL-API parameters (`prompt`, `model`, `filename`, `image`: a string or a list, ...).
    pub params: Map<String, Value>,
    /// Seconds until the URL expires (default: the server's URL lifetime).
    #[serde(default)]
    pub expires_in: Option<u64>,
}

/// The answer: the signed URL.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SignedUrl {
    /// Always `signed_url`.
    pub object: &'static str,
    /// The URL-API URL with `kid`, `exp` and `sig`.
    pub url: String,
    /// When it stops working, Unix seconds.
    pub expires_at: i64,
}

/// Signs a URL-API URL for the caller.
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    OpenAIJson(body): OpenAIJson<SignRequest>,
) -> Result<Json<SignedUrl>, ApiError> {
    let mut pairs = Vec::new();
    for (name, value) in body.params {
        if [signing::SIG, signing::EXPIRES, signing::KEY_ID].contains(&name.as_str()) {
            return Err(Error::invalid_param(
                format!("params.{name}"),
                format!("`{name}` is added by the signer"),
            )
            .into());
        }
        let values = match value {
            Value::Array(items) => items,
            other => vec![other],
        };
        for item in values {
            let text = match item {
                Value::String(text) => text,
                Value::Number(_) | Value::Bool(_) => item.to_string(),
                _ => {
                    return Err(Error::invalid_param(
                        format!("params.{name}"),
                        "parameter values are strings, numbers, booleans or lists of them",
                    )
                    .into())
                }
            };
            pairs.push((name.clone(), text));
        }
    }
    if let Some(key) = caller.paying_key() {
        pairs.push((signing::KEY_ID.to_owned(), key.id.clone()));
    }
    let expires_in = body
        .expires_in
        .unwrap_or_else(|| state.service.signer().map_or(0, |(_, ttl)| ttl.as_secs()));
    if !(1..=MAX_EXPIRES_IN).contains(&expires_in) {
        return Err(Error::invalid_param(
            "expires_in",
            format!("expires_in must be 1 to {MAX_EXPIRES_IN} seconds"),
        )
        .into());
    }
    // What cannot be served is not signed: parse and validate now.
    let gateway = state.service.gateway();
    let parsed = url_api::parse(
        &pairs,
        url_api::PathForm::default(),
        gateway.catalog(),
        &state.url_api.default_model,
        &|m| gateway.serves(m),
    )?;
    match (&parsed.request.prompt, &parsed.name) {
        (Some(_), _) => {
            gateway.validate(parsed.request)?;
        }
        (None, Some(_)) => {}
        (None, None) => {
            return Err(Error::invalid_param(
                "params.prompt",
                "a URL needs a `prompt`, or a `filename` to recall",
            )
            .into())
        }
    }
    let Some((signer, _)) = state.service.signer() else {
        return Err(Error::Internal("no URL signer is configured".into()).into());
    };
    let expires_at = imgproxy_core::clock::now_secs()
        .saturating_add(i64::try_from(expires_in).unwrap_or(i64::MAX));
    let query = signer.sign(GENERATE_PATH, &pairs, expires_at);
    Ok(Json(SignedUrl {
        object: "signed_url",
        url: format!("{}{GENERATE_PATH}?{query}", state.public_url),
        expires_at,
    }))
}

/// The URL API's path.
pub const GENERATE_PATH: &str = "/api/generate";
