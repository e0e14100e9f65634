//! Conversions between imgproxy's types and Ideogram's wire format (providers-2.md §12): the
//! multipart form of one call and the endpoint it goes to, the answer into image URLs, and
//! upstream failures into [`ProviderError`]s. Pure functions only; every byte sent or received
//! goes through `client`.

use std::{collections::BTreeMap, time::Duration};

use bytes::Bytes;
use imgproxy_core::{
    provider::extension_of,
    upstream::{self, failed, malformed, short},
    GeneratedImage, ProviderError, ProviderRequest,
};
use reqwest::multipart::{Form, Part};
use serde_json::Value;

use crate::wire::{ErrorBody, GenerateResponse};

/// Where a call goes: `generate` from the prompt alone, `remix` of a reference image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Generate,
    Remix,
}

impl Endpoint {
    /// The endpoint of `call`: a reference image is remixed (validation allows one at most).
    fn of(call: &ProviderRequest<'_>) -> Self {
        if call.references.is_empty() {
            Self::Generate
        } else {
            Self::Remix
        }
    }

    /// Its path below the API root, for the model whose upstream id is `upstream`
    /// (`ideogram-v3`: Ideogram names the model in the path, not the body).
    pub(crate) fn path(self, upstream: &str) -> String {
        let action = match self {
            Self::Generate => "generate",
            Self::Remix => "remix",
        };
        format!("v1/{upstream}/{action}")
    }
}

/// The text parts of one call, by field name.
///
/// Validated parameters go under their own names, except three that Ideogram spells its own
/// way: `size` is `resolution` (`auto` sends neither it nor a ratio: Ideogram's default),
/// `aspect_ratio` is written `16x9`, and `seed` is this call's seed within Ideogram's
/// `0..=2^31-1`. The catalog's `upstream_params` (the operator's constants) come after them;
/// `prompt` and `num_images` last, so that nothing can change what is asked for or how many
/// images are billed.
fn text_fields(call: &ProviderRequest<'_>) -> Result<BTreeMap<String, String>, ProviderError> {
    let request = call.request;
    let mut fields = BTreeMap::new();
    for (name, value) in &request.params {
        let (field, value) = match name.as_str() {
            "size" if value.as_str() == Some("auto") => continue,
            "size" => ("resolution", value.clone()),
            "aspect_ratio" => (
                "aspect_ratio",
                Value::from(value.as_str().unwrap_or_default().replace(':', "x")),
            ),
            "seed" => match call.seed() {
                Some(seed) => ("seed", Value::from(seed.rem_euclid(1 << 31))),
                None => continue,
            },
            // Only `remix` takes it; never dropped silently.
            "image_weight" if call.references.is_empty() => {
                return Err(ProviderError::InvalidRequest {
                    message: "`image_weight` is how much a remix keeps of its image: \
                              give a reference image too"
                        .into(),
                    param: Some("image_weight".into()),
                    code: Some("invalid_value".into()),
                });
            }
            other => (other, value.clone()),
        };
        insert_text(&mut fields, field, &value);
    }
    for (name, value) in &request.model.upstream_params {
        insert_text(&mut fields, name, value);
    }
    fields.insert("prompt".into(), request.prompt.clone());
    fields.insert("num_images".into(), call.n.to_string());
    Ok(fields)
}

/// Adds `value` as the text of part `name`: strings as they are, anything else (numbers,
/// booleans, `color_palette`'s object) as JSON text. A null is left out.
fn insert_text(fields: &mut BTreeMap<String, String>, name: &str, value: &Value) {
    let text = match value {
        Value::Null => return,
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    fields.insert(name.to_owned(), text);
}

/// The whole form of one call and where it goes: the text parts, then for a remix the
/// reference image as the file part `image`, typed with its MIME type. reqwest sets the
/// `multipart/form-data` header and its boundary.
pub(crate) fn form(call: &ProviderRequest<'_>) -> Result<(Endpoint, Form), ProviderError> {
    if call.mask.is_some() {
        // Validation keeps masks out (no `mask` capability); never drop one silently.
        return Err(ProviderError::Unsupported {
            feature: "masked edits",
        });
    }
    let mut form = Form::new();
    for (name, text) in text_fields(call)? {
        form = form.text(name, text);
    }
    let endpoint = Endpoint::of(call);
    if let [image] = call.references {
        // From `Bytes`, so the length is known and the request gets a `Content-Length`.
        let part = Part::stream(image.bytes.clone())
            .file_name(format!("image.{}", extension_of(&image.mime)))
            .mime_str(&image.mime)
            .map_err(|_| failed("the reference image has an unusable MIME type"))?;
        form = form.part("image", part);
    } else if call.references.len() > 1 {
        return Err(ProviderError::Unsupported {
            feature: "more than one reference image",
        });
    }
    Ok((endpoint, form))
}

/// One image of an answer, still to download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MadeImage {
    /// Its expiring URL.
    pub url: String,
    /// The prompt it was made from (MagicPrompt's rewrite), OpenAI's `revised_prompt`.
    pub revised_prompt: Option<String>,
}

/// What a 200 body holds: the images to download, and how many Ideogram withheld.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    pub images: Vec<MadeImage>,
    pub withheld: usize,
}

/// Reads a 200 body. An image with `is_image_safe: false` is withheld (its `url` is empty) and
/// dropped; when every image was withheld the call is a moderation refusal. No image at all,
/// or one that is not withheld yet has no URL, is a `Failed`.
pub(crate) fn parse_response(body: &[u8]) -> Result<Answer, ProviderError> {
    let response: GenerateResponse = serde_json::from_slice(body).map_err(malformed)?;
    if response.data.is_empty() {
        return Err(failed("Ideogram returned no image"));
    }
    let total = response.data.len();
    let mut images = Vec::with_capacity(total);
    for (index, item) in response.data.into_iter().enumerate() {
        if item.is_image_safe == Some(false) {
            continue;
        }
        let url = item.url.filter(|url| !url.trim().is_empty());
        let url = url.ok_or_else(|| malformed(format!("data[{index}] has no `url`")))?;
        images.push(MadeImage {
            url,
            revised_prompt: item.prompt,
        });
    }
    if images.is_empty() {
        return Err(ProviderError::ModerationBlocked {
            message: format!("Ideogram's safety check withheld every image ({total} of {total})"),
        });
    }
    Ok(Answer {
        withheld: total - images.len(),
        images,
    })
}

/// A downloaded image: the bytes decide the MIME type, else the download's `Content-Type`;
/// anything else (an expired link's error page served with a 200) is a `Failed`.
pub(crate) fn generated_image(
    bytes: Bytes,
    content_type: Option<&str>,
    revised_prompt: Option<String>,
) -> Result<GeneratedImage, ProviderError> {
    let image = upstream::sniffed_image(
        bytes,
        &[content_type],
        "an Ideogram image URL served something that is not an image",
    )?;
    Ok(GeneratedImage {
        revised_prompt,
        ..image
    })
}

/// The error for a non-2xx answer: 422 is Ideogram's "prompt or image failed the safety
/// check" (providers-2.md §12), a moderation refusal; everything else maps by status (core's
/// generic mapping).
pub(crate) fn error_from_status(
    status: u16,
    retry_after: Option<Duration>,
    body: &[u8],
) -> ProviderError {
    let error = ErrorBody::read(body);
    let message = error
        .message()
        .map_or_else(|| upstream::excerpt(body), str::to_owned);
    if status == 422 {
        let why = if message.is_empty() {
            "the prompt or image failed the safety check".to_owned()
        } else {
            short(&message)
        };
        return ProviderError::ModerationBlocked {
            message: format!("Ideogram refused the content: {why}"),
        };
    }
    upstream::status_error(status, retry_after, &message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_images_are_dropped_and_all_unsafe_is_moderation() {
        let answer = parse_response(
            br#"{"created": "2026-06-02T16:24:11Z", "data": [
                {"url": "https://x/a.png", "prompt": "a fox, rewritten", "is_image_safe": true,
                 "resolution": "1024x1024", "seed": 1},
                {"url": null, "prompt": "p", "is_image_safe": false},
                {"url": "", "prompt": "p", "is_image_safe": false}]}"#,
        )
        .unwrap();
        assert_eq!(answer.withheld, 2);
        assert_eq!(
            answer.images,
            [MadeImage {
                url: "https://x/a.png".into(),
                revised_prompt: Some("a fox, rewritten".into())
            }]
        );
        let every = parse_response(br#"{"data": [{"url": "", "is_image_safe": false}]}"#);
        let Err(ProviderError::ModerationBlocked { message }) = every else {
            panic!("{every:?}");
        };
        assert!(message.contains("1 of 1"), "{message}");
    }

    #[test]
    fn empty_or_unreadable_answers_and_safe_items_without_url_fail() {
        for body in [
            &br#"{"created": "x"}"#[..],
            br#"{"data": []}"#,
            br#"{"data": [{"url": null, "is_image_safe": true}]}"#,
            br#"{"data": [{"prompt": "p"}]}"#,
            b"<html>",
        ] {
            assert!(
                matches!(parse_response(body), Err(ProviderError::Failed { .. })),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn a_422_is_moderation_and_other_statuses_map_by_meaning() {
        let refusal = br#"{"error": "Prompt or provided image failed the safety checks"}"#;
        let ProviderError::ModerationBlocked { message } = error_from_status(422, None, refusal)
        else {
            panic!("a 422 is moderation");
        };
        assert!(message.ends_with("failed the safety checks"), "{message}");
        assert!(matches!(
            error_from_status(422, None, b""),
            ProviderError::ModerationBlocked { .. }
        ));
        let ProviderError::InvalidRequest { message, .. } =
            error_from_status(400, None, br#"{"detail": "Invalid resolution"}"#)
        else {
            panic!("a 400 is an invalid request");
        };
        assert!(message.ends_with("Invalid resolution"), "{message}");
        assert_eq!(
            error_from_status(401, None, br#"{"error": {"message": "bad key"}}"#),
            ProviderError::Unauthorized { status: 401 }
        );
        assert_eq!(
            error_from_status(429, Some(Duration::from_secs(3)), b""),
            ProviderError::RateLimited {
                retry_after: Some(Duration::from_secs(3))
            }
        );
        assert!(matches!(
            error_from_status(500, None, b"<html>oops</html>"),
            ProviderError::Failed { message } if message.contains("oops")
        ));
    }

    #[test]
    fn downloads_must_be_images_and_keep_the_revised_prompt() {
        let png = Bytes::from_static(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR");
        let image = generated_image(png, Some("text/plain"), Some("p".into())).unwrap();
        assert_eq!(
            (image.mime.as_str(), image.revised_prompt.as_deref()),
            ("image/png", Some("p"))
        );
        let page = Bytes::from_static(b"<html>expired</html>");
        assert!(matches!(
            generated_image(page, Some("text/html"), None),
            Err(ProviderError::Failed { .. })
        ));
    }
}
