//! The OpenAI-compatible images wire, shared by every adapter that speaks a dialect of it (this
//! crate, xAI, Together, any compatible gateway): the `data[]` success body, the
//! `{"error": {...}}` envelope, and reading both. It lives here, public, because the format is
//! OpenAI's: compatible adapters depend on this crate, never the other way, and core stays free
//! of any one vendor's wire. A dialect's own fields (xAI's `respect_moderation`, Together's
//! `index`) are the type parameters `R` and `I`, declared in its crate, which also decides what
//! they mean; how a status maps to an error stays with each adapter too.

use imgproxy_core::{
    provider::image_mime,
    upstream::{malformed, ImageSource},
    GeneratedImage, ProviderError, ProviderRequest, Usage,
};
use serde::{de::DeserializeOwned, Deserialize};
use serde_json::{Map, Value};

/// Copies the text parameters `names` that the request carries into `body`, under the same
/// names: the parameters a dialect takes as OpenAI does.
pub fn copy_text_params(body: &mut Map<String, Value>, call: &ProviderRequest<'_>, names: &[&str]) {
    for name in names {
        if let Some(value) = call.request.param_str(name) {
            body.insert((*name).into(), Value::from(value));
        }
    }
}

/// Completes a request body over the parameters already mapped into `body`: the catalog's
/// `upstream_params` come after them (they are the operator's constants for a particular
/// gateway and win), then `model`, `prompt` and `n`, last so that nothing can change what is
/// asked for or how many images are billed.
pub fn finish_body(body: &mut Map<String, Value>, call: &ProviderRequest<'_>) {
    let request = call.request;
    body.extend(request.model.upstream_params.clone());
    body.insert("model".into(), Value::from(request.model.upstream.as_str()));
    body.insert("prompt".into(), Value::from(request.prompt.as_str()));
    body.insert("n".into(), Value::from(call.n));
}

/// The success body of `POST /images/generations` and `POST /images/edits`: `data` and
/// `usage`, plus `R`, the fields a dialect adds at the top level, and `I`, those it adds to
/// each item. Unknown fields are ignored so that a new upstream field (`safety_identifier`,
/// `svg_usage`, ...) never breaks a paid-for generation.
#[derive(Debug, Deserialize)]
pub struct ImagesResponse<R = (), I = ()> {
    /// Optional in OpenAI's SDK type, but a response without it carries no image.
    pub data: Option<Vec<Image<I>>>,
    /// Kept loose and parsed on its own: a compatible gateway's odd `usage` must not cost us
    /// the images.
    pub usage: Option<Value>,
    /// The dialect's top-level fields.
    #[serde(flatten)]
    pub extra: R,
}

/// One item of `data`: inline base64 (GPT image models, or whenever `b64_json` was asked for)
/// or a URL (DALL·E-style gateways).
#[derive(Debug, Deserialize)]
pub struct Image<I = ()> {
    /// The image, base64-encoded in the body, decoded as it is read.
    pub b64_json: Option<InlineImage>,
    /// Where to download the image.
    pub url: Option<String>,
    /// The prompt as the upstream rewrote it.
    pub revised_prompt: Option<String>,
    /// The dialect's item fields.
    #[serde(flatten)]
    pub extra: I,
}

/// An inline image's bytes, decoded from base64 while the body is read: a string of megabytes
/// is decoded where it lies in the body, never copied out into a `String` first.
#[derive(Debug)]
pub struct InlineImage(pub bytes::Bytes);

impl<'de> Deserialize<'de> for InlineImage {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Base64;
        impl serde::de::Visitor<'_> for Base64 {
            type Value = InlineImage;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("an image in base64")
            }

            fn visit_bytes<E: serde::de::Error>(self, text: &[u8]) -> Result<InlineImage, E> {
                imgproxy_core::b64::decode(text.trim_ascii())
                    .map(InlineImage)
                    .map_err(|e| E::custom(format!("`b64_json` is not base64: {e}")))
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<InlineImage, E> {
                self.visit_bytes(text.as_bytes())
            }
        }
        // As bytes: serde_json then hands over the string's contents without checking them as
        // UTF-8, a pass over the megabytes that base64's own check makes needless.
        deserializer.deserialize_bytes(Base64)
    }
}

/// A success body read: its images in `data` order, before any URL is downloaded.
#[derive(Debug, PartialEq)]
pub struct Parsed<R = (), I = ()> {
    /// One per `data` item.
    pub images: Vec<ParsedImage<I>>,
    /// `usage`, if it had a usable shape.
    pub usage: Option<Usage>,
    /// The dialect's top-level fields.
    pub extra: R,
}

/// One `data` item read.
#[derive(Debug, PartialEq)]
pub struct ParsedImage<I = ()> {
    /// The decoded bytes, or the URL to download.
    pub source: ImageSource,
    /// The prompt as the upstream rewrote it.
    pub revised_prompt: Option<String>,
    /// The dialect's item fields.
    pub extra: I,
}

/// Reads a success body. Anything that is not this shape is a `Failed` "malformed upstream
/// response".
pub fn read<R: DeserializeOwned, I: DeserializeOwned>(
    body: &[u8],
) -> Result<ImagesResponse<R, I>, ProviderError> {
    serde_json::from_slice(body).map_err(malformed)
}

impl<R, I> ImagesResponse<R, I> {
    /// `data`, which a usable answer must have.
    pub fn data(&self) -> Result<&[Image<I>], ProviderError> {
        self.data.as_deref().ok_or_else(no_data)
    }

    /// Every item's image decoded (or its URL kept), in order. No `data`, or an item with
    /// neither `b64_json` nor `url`, is a `Failed` "malformed upstream response".
    pub fn parse(self) -> Result<Parsed<R, I>, ProviderError> {
        let images = self
            .data
            .ok_or_else(no_data)?
            .into_iter()
            .enumerate()
            .map(|(index, image)| image.parse(index))
            .collect::<Result<_, _>>()?;
        Ok(Parsed {
            images,
            usage: self.usage.and_then(Usage::lenient),
            extra: self.extra,
        })
    }
}

impl<I> Image<I> {
    fn parse(self, index: usize) -> Result<ParsedImage<I>, ProviderError> {
        let source = match (self.b64_json, self.url) {
            (Some(InlineImage(bytes)), _) => ImageSource::Inline(bytes),
            (None, Some(url)) => ImageSource::Url(url),
            (None, None) => {
                return Err(malformed(format!(
                    "`data[{index}]` has neither `b64_json` nor `url`"
                )))
            }
        };
        Ok(ParsedImage {
            source,
            revised_prompt: self.revised_prompt,
            extra: self.extra,
        })
    }
}

fn no_data() -> ProviderError {
    malformed("no `data`")
}

/// A finished image. The bytes decide the MIME type; failing that, the first `image/*` hint
/// (a download's `Content-Type`, a reported type, the MIME type of an `output_format`); failing
/// all, `application/octet-stream`: the image was paid for, so it is not thrown away.
pub fn generated_image(
    bytes: bytes::Bytes,
    hints: &[Option<&str>],
    revised_prompt: Option<String>,
) -> GeneratedImage {
    let mime = image_mime(&bytes, hints).unwrap_or_else(|| "application/octet-stream".to_owned());
    GeneratedImage {
        bytes,
        mime,
        revised_prompt,
    }
}

/// The MIME type of an `output_format`.
pub fn mime_of_format(format: &str) -> Option<&'static str> {
    match format {
        "png" => Some("image/png"),
        "jpeg" | "jpg" => Some("image/jpeg"),
        "webp" => Some("image/webp"),
        "gif" => Some("image/gif"),
        "svg" => Some("image/svg+xml"),
        _ => None,
    }
}

/// `{"error": {...}}`, the envelope of every OpenAI error.
#[derive(Debug, Deserialize)]
pub struct ErrorEnvelope {
    /// What went wrong.
    pub error: ErrorObject,
}

/// The fields of an OpenAI error. All optional and loosely typed: compatible gateways fill
/// them unevenly.
#[derive(Debug, Default, Deserialize)]
pub struct ErrorObject {
    /// The explanation.
    pub message: Option<String>,
    /// The request parameter at fault; a string at OpenAI.
    pub param: Option<Value>,
    /// A string at OpenAI; some compatible gateways send a number.
    pub code: Option<Value>,
}

impl ErrorObject {
    /// `message`, trimmed, if it says anything.
    pub fn message(&self) -> Option<&str> {
        self.message
            .as_deref()
            .map(str::trim)
            .filter(|m| !m.is_empty())
    }

    /// `param`, if it is text.
    pub fn param(&self) -> Option<String> {
        self.param.as_ref()?.as_str().map(str::to_owned)
    }

    /// `code` as text, whatever JSON type the upstream used.
    pub fn code(&self) -> Option<String> {
        match self.code.as_ref()? {
            Value::String(code) => Some(code.clone()),
            Value::Number(code) => Some(code.to_string()),
            _ => None,
        }
    }
}

/// The error object of a non-2xx body; empty when the body is not the envelope (HTML, another
/// gateway's JSON, nothing).
pub fn read_error(body: &[u8]) -> ErrorObject {
    serde_json::from_slice::<ErrorEnvelope>(body)
        .map(|envelope| envelope.error)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Default, PartialEq, Deserialize)]
    struct Marked {
        mark: Option<u32>,
    }

    #[test]
    fn dialect_fields_ride_along_at_both_levels() {
        let body = br#"{"data": [{"url": "http://x/a.png", "mark": 2}], "mark": 1, "new": true}"#;
        let parsed = read::<Marked, Marked>(body).unwrap().parse().unwrap();
        assert_eq!(parsed.extra, Marked { mark: Some(1) });
        assert_eq!(parsed.images[0].extra, Marked { mark: Some(2) });
        assert!(read::<(), ()>(br#"{"data": []}"#)
            .unwrap()
            .data()
            .unwrap()
            .is_empty());
    }

    #[test]
    fn inline_images_decode_from_the_body_with_escapes_and_padding_spaces() {
        let image = |body: &str| serde_json::from_str::<InlineImage>(body).map(|i| i.0);
        assert_eq!(image(r#"" QUJD ""#).unwrap(), &b"ABC"[..]);
        // `/` may be escaped in JSON: `/w==` is the byte 0xFF.
        assert_eq!(image(r#""\/w==""#).unwrap(), &[0xFF_u8][..]);
        let error = image(r#""not base64!""#).unwrap_err().to_string();
        assert!(error.contains("`b64_json` is not base64"), "{error}");
        assert!(image("[1, 2]").is_err());
        // Through a parsed value too (a string, not bytes, then).
        let value = serde_json::json!("QUJD");
        assert_eq!(InlineImage::deserialize(value).unwrap().0, &b"ABC"[..]);
    }

    #[test]
    fn error_objects_are_read_loosely() {
        let error = read_error(br#"{"error": {"message": " no ", "param": 3, "code": 1214}}"#);
        assert_eq!(
            (error.message(), error.param(), error.code()),
            (Some("no"), None, Some("1214".into()))
        );
        assert!(read_error(b"<html>").message.is_none());
    }
}
