//! Conversions between imgproxy's types and OpenAI's wire format: the request fields and the
//! response into images and metadata. Pure functions only; every byte sent or received goes
//! through `client`, failures are mapped in `errors`, the edits form is built in `edits`; the
//! wire shared with compatible dialects is `compat`.

use bytes::Bytes;
use imgproxy_core::{provider::ImageMeta, GeneratedImage, ProviderError, ProviderRequest};
use serde_json::{Map, Value};

use crate::compat;

/// Whether `upstream` is a GPT image model. These answer 400 to `response_format`.
pub(crate) fn is_gpt_image(upstream: &str) -> bool {
    upstream.starts_with("gpt-image") || upstream.starts_with("chatgpt-image")
}

/// The fields of one upstream call: the JSON body of `POST /images/generations`, and the
/// text fields of `POST /images/edits`. `model` is the name the upstream serves the model
/// under: the catalog's upstream id at OpenAI, a deployment's name at Azure.
///
/// The validated parameters already carry OpenAI's names, so they go through as they are.
/// The catalog's `upstream_params` come after them: they are the operator's constants for a
/// particular gateway and win. `model`, `prompt` and `n` come last, so nothing can change what
/// is asked for or how many images are billed.
pub(crate) fn generation_body(request: &ProviderRequest<'_>, model: &str) -> Map<String, Value> {
    let validated = request.request;
    let mut body: Map<String, Value> = validated
        .params
        .iter()
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    compat::finish_body(&mut body, request);
    body.insert("model".into(), Value::from(model));
    if is_gpt_image(&validated.model.upstream) {
        body.remove("response_format");
    }
    if let Some(partials) = streamed_partials(request) {
        body.insert("stream".into(), Value::Bool(true));
        body.insert("partial_images".into(), Value::from(partials));
    }
    body
}

/// How many partial images to ask the upstream to stream: only when the client streams and
/// asked for at least one (else a plain call answers just as well).
pub(crate) fn streamed_partials(request: &ProviderRequest<'_>) -> Option<u32> {
    request
        .partials
        .and(request.request.partial_images)
        .filter(|&k| k > 0)
}

/// A successful response, before any URL is downloaded: OpenAI's top-level extras are the
/// image metadata.
pub(crate) type ParsedResponse = compat::Parsed<ImageMeta>;

/// Parses a 200 body. Anything unusable is a `Failed` "malformed upstream response".
pub(crate) fn parse_response(body: &[u8]) -> Result<ParsedResponse, ProviderError> {
    compat::read::<ImageMeta, ()>(body)?.parse()
}

/// A finished image. The bytes decide the MIME type; failing that, a download's
/// `Content-Type`, then the `output_format` the upstream reported or we asked for.
pub(crate) fn generated_image(
    bytes: Bytes,
    content_type: Option<&str>,
    output_format: Option<&str>,
    revised_prompt: Option<String>,
) -> GeneratedImage {
    let from_format = output_format.and_then(compat::mime_of_format);
    compat::generated_image(bytes, &[content_type, from_format], revised_prompt)
}

#[cfg(test)]
mod tests {
    use imgproxy_core::upstream::ImageSource;

    use super::*;

    #[test]
    fn responses_need_data_with_an_image_in_each_item() {
        imgproxy_testkit::assert_data_items_required(
            parse_response,
            br#"{"data": [{"revised_prompt": "x"}]}"#,
        );
        let parsed =
            parse_response(br#"{"data": [{"url": "http://x/a.png"}], "usage": 3}"#).unwrap();
        assert_eq!(
            parsed.images[0].source,
            ImageSource::Url("http://x/a.png".into())
        );
        assert_eq!(parsed.usage, None, "an unreadable usage is dropped");
    }

    #[test]
    fn mime_comes_from_bytes_then_content_type_then_format() {
        let png = generated_image(
            Bytes::from_static(b"\x89PNG\r\n\x1a\n"),
            None,
            Some("jpeg"),
            None,
        );
        assert_eq!(png.mime, "image/png");
        let typed = generated_image(Bytes::new(), Some("image/avif; q=1"), Some("png"), None);
        assert_eq!(typed.mime, "image/avif");
        let gif = generated_image(Bytes::new(), Some("text/plain"), Some("gif"), None);
        assert_eq!(gif.mime, "image/gif");
    }
}
