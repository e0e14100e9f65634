//! Seed 002's door, `POST /imini/router/v1/images/generate`: its body (`model`, `prompt`,
//! `images` objects, `aspect_ratio`, `resolution`) with its documented defaults becomes a task,
//! answered `{task_id, model, created_at, request_id}`; the task is read at `/v1/tasks/{id}`.
//! Seed 002 documents no error body, so errors keep imgproxy's (OpenAI's) envelope, in the
//! seed's parameter names.

use axum::{extract::State, Extension, Json};
use imgproxy_core::{Error, ImageInput, ImageRequest};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    auth::Caller, error::ApiError, extract::OpenAIJson, handlers::tasks, state::AppState,
    telemetry::RequestNote,
};

/// Seed 002's aspect ratio when neither it nor a reference image is given (with references the
/// model takes theirs).
const DEFAULT_ASPECT_RATIO: &str = "1:1";
/// Seed 002's resolution when none is given.
const DEFAULT_RESOLUTION: &str = "1K";

/// Submits a seed 002 generation as a task.
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(note): Extension<RequestNote>,
    OpenAIJson(asked): OpenAIJson<GenerateRequest>,
) -> Result<Json<Submitted>, ApiError> {
    let model = asked.model.clone();
    let task = tasks::queue(&state, &caller, &note, image_request(asked), None)
        .await
        .map_err(|error| match error {
            ApiError::Core(error) => ApiError::Core(in_seed_terms(error)),
            other => other,
        })?;
    Ok(Json(Submitted {
        task_id: task.id,
        model,
        created_at: iso_millis(task.created_at_ms),
        request_id: note.id().as_str().to_owned(),
    }))
}

/// Seed 002's request body.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GenerateRequest {
    /// `google/nano-banana-pro` (any model id or alias of this server is taken).
    pub model: String,
    /// The prompt.
    pub prompt: String,
    /// Up to 14 reference images; none means text-to-image.
    pub images: Option<Vec<ReferenceImage>>,
    /// `1:1` (the default without reference images), `2:3`, `3:2`, `3:4`, `4:3`, `4:5`, `5:4`,
    /// `9:16`, `16:9` or `21:9`.
    pub aspect_ratio: Option<String>,
    /// `1K` (the default), `2K` or `4K`.
    pub resolution: Option<String>,
}

/// One of seed 002's reference image objects. The seed does not spell the object out, so the
/// usual spellings are all taken.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ReferenceImage {
    /// `{"url": "..."}`: a URL or data URL.
    Url {
        /// URL or data URL.
        url: String,
    },
    /// A URL, data URL or file id, bare or as `{"image_url": ...}` / `{"file_id": ...}`.
    Input(ImageInput),
}

/// Seed 002's answer to a submission.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Submitted {
    /// `task_...`: read it at `GET /v1/tasks/{id}`.
    pub task_id: String,
    /// The model as asked for.
    pub model: String,
    /// When the task was created, ISO 8601 in UTC with milliseconds.
    pub created_at: String,
    /// The id of this HTTP request (also its `X-Request-Id`).
    pub request_id: String,
}

/// The gateway's request for seed 002's body, with the seed's defaults filled in.
fn image_request(asked: GenerateRequest) -> ImageRequest {
    let images: Vec<ImageInput> = asked
        .images
        .unwrap_or_default()
        .into_iter()
        .map(|image| match image {
            ReferenceImage::Url { url } => ImageInput::Text(url),
            ReferenceImage::Input(input) => input,
        })
        .collect();
    let mut request = ImageRequest::new(asked.model, asked.prompt);
    request.aspect_ratio = asked
        .aspect_ratio
        .or_else(|| images.is_empty().then(|| DEFAULT_ASPECT_RATIO.to_owned()));
    request.image_size = Some(
        asked
            .resolution
            .unwrap_or_else(|| DEFAULT_RESOLUTION.to_owned()),
    );
    request.images = (!images.is_empty()).then_some(images);
    request
}

/// `error` as a seed 002 client reads it: the gateway's `image_size` is the seed's `resolution`.
fn in_seed_terms(error: Error) -> Error {
    match error {
        Error::InvalidRequest {
            message,
            param: Some(param),
            code,
        } if param == "image_size" => Error::InvalidRequest {
            message: message.replace("image_size", "resolution"),
            param: Some("resolution".to_owned()),
            code,
        },
        other => other,
    }
}

/// `2026-04-07T03:00:17.062Z` for Unix milliseconds.
fn iso_millis(unix_ms: i64) -> String {
    const DAY_MS: i64 = 86_400_000;
    let (year, month, day) = civil_date(unix_ms.div_euclid(DAY_MS));
    let of_day = unix_ms.rem_euclid(DAY_MS);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        of_day / 3_600_000,
        of_day / 60_000 % 60,
        of_day / 1000 % 60,
        of_day % 1000
    )
}

/// The Gregorian date `days` after 1970-01-01. Years are counted from 1 March, so that the leap
/// day is the last day of a year, in eras of 400 years (146 097 days, which repeat exactly).
fn civil_date(days: i64) -> (i64, i64, i64) {
    // 0000-03-01 is 719 468 days before 1970-01-01.
    let since_era_zero = days + 719_468;
    let era = since_era_zero.div_euclid(146_097);
    let day_of_era = since_era_zero.rem_euclid(146_097);
    // Take out the leap days before this day (every 4th year, not the 100th, the 400th).
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    // Months from March run 31, 30, 31, 30, 31 days: 153 days per 5 months.
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = era * 400 + year_of_era + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn translated(body: Value) -> Value {
        let asked: GenerateRequest = serde_json::from_value(body).unwrap();
        serde_json::to_value(image_request(asked)).unwrap()
    }

    #[test]
    fn the_seed_example_keeps_its_fields() {
        let request = translated(json!({
            "model": "google/nano-banana-pro",
            "prompt": "A cute shiba inu in a spacesuit standing on the moon, 3D cartoon style",
            "aspect_ratio": "1:1",
            "resolution": "1K"
        }));
        assert_eq!(
            request,
            json!({
                "model": "google/nano-banana-pro",
                "prompt": "A cute shiba inu in a spacesuit standing on the moon, 3D cartoon style",
                "aspect_ratio": "1:1",
                "image_size": "1K"
            })
        );
    }

    #[test]
    fn defaults_are_the_seeds_and_references_keep_their_own_ratio() {
        let bare = translated(json!({"model": "m", "prompt": "p"}));
        assert_eq!(bare["aspect_ratio"], "1:1");
        assert_eq!(bare["image_size"], "1K");
        let referenced = translated(json!({
            "model": "m",
            "prompt": "p",
            "images": [
                {"url": "https://example.com/a.png"},
                {"image_url": "https://example.com/b.png"},
                {"file_id": "file_1"},
                "https://example.com/c.png"
            ]
        }));
        assert!(referenced.get("aspect_ratio").is_none());
        assert_eq!(
            referenced["images"],
            json!([
                "https://example.com/a.png",
                {"image_url": "https://example.com/b.png"},
                {"file_id": "file_1"},
                "https://example.com/c.png"
            ])
        );
        let empty = translated(json!({"model": "m", "prompt": "p", "images": []}));
        assert_eq!(empty["aspect_ratio"], "1:1");
        assert!(empty.get("images").is_none());
    }

    #[test]
    fn unknown_fields_are_refused() {
        let asked =
            serde_json::from_value::<GenerateRequest>(json!({"model": "m", "prompt": "p", "n": 2}));
        assert!(asked.unwrap_err().to_string().contains("unknown field `n`"));
    }

    #[test]
    fn a_bad_resolution_is_named_as_the_seed_names_it() {
        let error = in_seed_terms(Error::invalid_param(
            "image_size",
            "image_size `8K` is not one of 1K, 2K, 4K",
        ));
        let Error::InvalidRequest { message, param, .. } = error else {
            panic!("not an invalid request: {error:?}");
        };
        assert_eq!(param.as_deref(), Some("resolution"));
        assert_eq!(message, "resolution `8K` is not one of 1K, 2K, 4K");
        let other = in_seed_terms(Error::invalid_param("aspect_ratio", "no"));
        assert!(
            matches!(other, Error::InvalidRequest { param: Some(p), .. } if p == "aspect_ratio")
        );
    }

    #[test]
    fn times_are_iso_8601_utc_with_milliseconds() {
        assert_eq!(iso_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso_millis(1_775_530_817_062), "2026-04-07T03:00:17.062Z");
        assert_eq!(iso_millis(951_868_799_999), "2000-02-29T23:59:59.999Z");
        assert_eq!(iso_millis(4_107_542_400_000), "2100-03-01T00:00:00.000Z");
        assert_eq!(iso_millis(-1), "1969-12-31T23:59:59.999Z");
    }
}
