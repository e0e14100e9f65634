//! `ImageResponse`: the body imgproxy answers with, in OpenAI's `ImagesResponse` shape plus
//! `credits_used`.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::provider::ImageMeta;

/// The result of a generation, as OpenAI's `ImagesResponse`.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ImageResponse {
    /// Unix seconds.
    pub created: i64,
    /// One entry per image.
    pub data: Vec<ImageData>,
    /// Background, format, quality and size of the images, where known.
    #[serde(flatten)]
    pub meta: ImageMeta,
    /// Token usage, where the provider reports it.
    pub usage: Option<Usage>,
    /// Credits charged for this request (metered keys only).
    pub credits_used: Option<u64>,
    /// The catalog model that made the images: the one asked for, or the fallback that served.
    pub model: Option<String>,
}

impl ImageResponse {
    /// The one builder of every image response: `data` described by `meta` (what was made,
    /// see [`ImageMeta::or_asked`]), created now.
    pub fn new(data: Vec<ImageData>, meta: ImageMeta, usage: Option<Usage>) -> Self {
        Self {
            created: crate::clock::now_secs(),
            data,
            meta,
            usage,
            credits_used: None,
            model: None,
        }
    }

    /// This answer as a JSON body in parts, to be written in order. The base64 of each inline
    /// image is a part of its own, moved in, neither copied nor escaped: base64's alphabet needs
    /// no escaping in a JSON string, and serde_json's byte-by-byte escaping of a megabyte image
    /// costs several times its encoding (issue 18). The parts read exactly as
    /// `serde_json::to_vec(&self)` would.
    pub fn into_json_parts(mut self) -> crate::Result<Vec<Bytes>> {
        let inline: Vec<String> = self
            .data
            .iter_mut()
            .filter_map(|image| image.b64_json.as_mut().map(std::mem::take))
            .collect();
        spliced(&self, inline)
    }
}

/// The JSON of `value`, whose base64 strings were taken out (left as `"b64_json":""`), in
/// parts with `texts` put back in order, each a part of its own. Each left string reads
/// `"b64_json":""` in the JSON: the quotes of a JSON string are escaped, so no value can hold
/// that text, and the strings taken out come before any field whose keys pass through
/// (`usage`), so the marks found in order are theirs.
fn spliced(value: &impl Serialize, texts: Vec<String>) -> crate::Result<Vec<Bytes>> {
    const MARK: &[u8] = br#""b64_json":"""#;
    let json = Bytes::from(
        serde_json::to_vec(value)
            .map_err(|e| crate::Error::Internal(format!("writing an image answer: {e}")))?,
    );
    let mut parts = Vec::with_capacity(2 * texts.len() + 1);
    let mut start = 0;
    for text in texts {
        let found = json[start..]
            .windows(MARK.len())
            .position(|window| window == MARK)
            .ok_or_else(|| crate::Error::Internal("an inline image left no mark".into()))?;
        // Between the string's quotes.
        let inside = start + found + MARK.len() - 1;
        parts.push(json.slice(start..inside));
        parts.push(json_string_contents(text)?);
        start = inside;
    }
    parts.push(json.slice(start..));
    Ok(parts)
}

/// `text` as the contents of a JSON string: as it is when it is base64 (always, from
/// [`ImageData::inline`]; checked at SIMD speed), escaped otherwise.
fn json_string_contents(text: String) -> crate::Result<Bytes> {
    if crate::b64::is_valid(text.as_bytes()) {
        return Ok(Bytes::from(text));
    }
    let quoted = Bytes::from(
        serde_json::to_vec(&text)
            .map_err(|e| crate::Error::Internal(format!("writing an image response: {e}")))?,
    );
    Ok(quoted.slice(1..quoted.len() - 1))
}

impl ImageData {
    /// An image inline, as base64.
    pub fn inline(bytes: &[u8], revised_prompt: Option<String>) -> Self {
        Self {
            b64_json: Some(crate::b64::encode(bytes)),
            url: None,
            revised_prompt,
        }
    }

    /// An image by URL.
    pub fn link(url: String, revised_prompt: Option<String>) -> Self {
        Self {
            b64_json: None,
            url: Some(url),
            revised_prompt,
        }
    }

    /// The bytes of an inline image (the reverse of [`ImageData::inline`]); `None` for an
    /// image by URL, or base64 that does not decode.
    pub fn inline_bytes(&self) -> Option<Bytes> {
        let b64 = self.b64_json.as_deref()?;
        crate::b64::decode(b64).ok()
    }
}

/// One Server-Sent Event of a streamed image answer: OpenAI's `image_generation.*` and
/// `image_edit.*` events (`partial_image`, then `completed` per image).
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageStreamEvent {
    /// `image_generation.partial_image`, `image_edit.completed`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// The image, base64.
    pub b64_json: String,
    /// Which partial image this is (partial events only).
    pub partial_image_index: Option<u32>,
    /// Unix seconds.
    pub created_at: i64,
    /// Background, format, quality and size, where known.
    #[serde(flatten)]
    pub meta: ImageMeta,
    /// Token usage (on the last completed event).
    pub usage: Option<Usage>,
    /// Credits charged (on the last completed event, metered keys only).
    pub credits_used: Option<u64>,
}

impl ImageStreamEvent {
    /// This event's JSON in parts, its base64 a part of its own, neither copied nor escaped
    /// (see [`ImageResponse::into_json_parts`]): a completed event carries a whole image.
    pub fn into_json_parts(mut self) -> crate::Result<Vec<Bytes>> {
        let text = std::mem::take(&mut self.b64_json);
        spliced(&self, vec![text])
    }
}

/// One image: inline base64 or a URL served by imgproxy.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct ImageData {
    /// Base64 of the image bytes.
    pub b64_json: Option<String>,
    /// Durable URL of the image.
    pub url: Option<String>,
    /// The prompt the provider actually used, where it reports one.
    pub revised_prompt: Option<String>,
}

/// Token usage as OpenAI reports it; fields imgproxy does not know pass through in `extra`.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct Usage {
    /// Input tokens (text and image).
    pub input_tokens: Option<u64>,
    /// Output tokens.
    pub output_tokens: Option<u64>,
    /// Sum of input and output tokens.
    pub total_tokens: Option<u64>,
    /// Newer or provider-specific fields (`input_tokens_details`, `reasoning_tokens`, ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Usage {
    /// Reads an upstream's `usage`, or `None` for `null`. A `usage` of an unexpected shape is
    /// dropped with a warning rather than failing a generation that is already paid for.
    pub fn lenient(value: Value) -> Option<Self> {
        if value.is_null() {
            return None;
        }
        serde_json::from_value(value)
            .inspect_err(|e| tracing::warn!(error = %e, "ignoring an unreadable upstream `usage`"))
            .ok()
    }

    /// Adds `other` into `self` (for `n` fanned out over several upstream calls).
    pub fn accumulate(&mut self, other: &Self) {
        fn add(a: &mut Option<u64>, b: Option<u64>) {
            if let Some(b) = b {
                *a = Some(a.unwrap_or(0) + b);
            }
        }
        add(&mut self.input_tokens, other.input_tokens);
        add(&mut self.output_tokens, other.output_tokens);
        add(&mut self.total_tokens, other.total_tokens);
        for (key, value) in &other.extra {
            self.extra
                .entry(key.clone())
                .or_insert_with(|| value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn json_parts_read_as_the_whole_json() {
        let mut usage = Usage::default();
        // A key that passes through and looks like the mark the parts are cut at.
        usage.extra.insert("b64_json".into(), json!(""));
        let mut response = ImageResponse::new(
            vec![
                ImageData::inline(&[0xff; 3000], Some(r#"say "b64_json":"" twice"#.into())),
                ImageData::link("http://x/a.png".into(), None),
                ImageData::inline(b"second", None),
                // Not base64: escaped, not spliced in as it is.
                ImageData {
                    b64_json: Some("quote \" and \\ and \n".into()),
                    ..ImageData::default()
                },
            ],
            ImageMeta::default(),
            Some(usage),
        );
        response.credits_used = Some(3);
        let whole = serde_json::to_vec(&response).unwrap();
        let parts = response.into_json_parts().unwrap();
        assert_eq!(parts.len(), 7, "three inline images cut the JSON in seven");
        assert_eq!(parts.concat(), whole);
    }

    #[test]
    fn stream_event_parts_read_as_the_whole_json() {
        let mut usage = Usage::default();
        usage.extra.insert("b64_json".into(), json!(""));
        for b64_json in [
            crate::b64::encode(&[7; 5000]),
            String::new(),
            "not \"base64\"".into(),
        ] {
            let event = ImageStreamEvent {
                kind: "image_generation.completed".into(),
                b64_json,
                partial_image_index: None,
                created_at: 1,
                meta: ImageMeta::default(),
                usage: Some(usage.clone()),
                credits_used: Some(2),
            };
            let whole = serde_json::to_vec(&event).unwrap();
            let parts = event.into_json_parts().unwrap();
            assert_eq!(parts.len(), 3);
            assert_eq!(parts.concat(), whole);
        }
    }

    #[test]
    fn inline_bytes_reverse_inline() {
        let image = ImageData::inline(b"\x89PNG", None);
        assert_eq!(image.inline_bytes().as_deref(), Some(&b"\x89PNG"[..]));
        assert_eq!(
            ImageData::link("http://x/a.png".into(), None).inline_bytes(),
            None
        );
    }

    #[test]
    fn response_round_trips_with_usage_details() {
        let body = json!({
            "created": 1713833628,
            "data": [{"b64_json": "AAAA", "revised_prompt": "otter"}, {"url": "http://x/images/a.png"}],
            "background": "transparent", "output_format": "png", "size": "1024x1024",
            "quality": "high", "credits_used": 40,
            "usage": {"total_tokens": 100, "input_tokens": 50, "output_tokens": 50,
                      "input_tokens_details": {"text_tokens": 10, "image_tokens": 40},
                      "model": "gpt-image-2", "reasoning_tokens": 3}
        });
        let response: ImageResponse = serde_json::from_value(body.clone()).unwrap();
        assert_eq!(response.usage.as_ref().unwrap().total_tokens, Some(100));
        assert_eq!(serde_json::to_value(&response).unwrap(), body);
    }

    #[test]
    fn usage_accumulates() {
        let mut total = Usage::default();
        let one = Usage {
            input_tokens: Some(5),
            output_tokens: Some(7),
            total_tokens: Some(12),
            ..Usage::default()
        };
        total.accumulate(&one);
        total.accumulate(&one);
        assert_eq!(
            (total.input_tokens, total.total_tokens),
            (Some(10), Some(24))
        );
    }
}
