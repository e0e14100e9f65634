//! The multipart form of `POST /images/edits`, where a call with reference images goes: the
//! generation fields as text parts, one `image[]` file part per reference and the `mask`
//! part, laid out as openai-python sends them. Building only; `client` sends it.

use imgproxy_core::{
    provider::extension_of, text_params::form_text, ProviderError, ProviderRequest, ReferenceImage,
};
use reqwest::multipart::{Form, Part};

use crate::convert;

/// The name of every reference image's part. openai-python sends a list of files as `image[]`,
/// even a one-element list.
const IMAGE_FIELD: &str = "image[]";

/// The text parts of an edit, by name: the same fields, with the same precedence, as the
/// generation body (so never `response_format` for GPT image models), `model` named so.
pub(crate) fn text_fields(request: &ProviderRequest<'_>, model: &str) -> Vec<(String, String)> {
    convert::generation_body(request, model)
        .into_iter()
        .filter_map(|(name, value)| Some((name, form_text(value)?)))
        .collect()
}

/// The file name of reference `index`: `image-<index>.<extension of its MIME type>`.
fn file_name(index: usize, reference: &ReferenceImage) -> String {
    format!("image-{index}.{}", extension_of(&reference.mime))
}

/// The whole form, `model` named so: the text parts first, then the references in request
/// order, each typed with its MIME type. reqwest sets the `multipart/form-data` header and its
/// boundary.
pub(crate) fn form(request: &ProviderRequest<'_>, model: &str) -> Result<Form, ProviderError> {
    let mut form = Form::new();
    for (name, value) in text_fields(request, model) {
        form = form.text(name, value);
    }
    for (index, reference) in request.references.iter().enumerate() {
        // From `Bytes`, so the length is known and the request gets a `Content-Length`.
        let part = Part::stream(reference.bytes.clone())
            .file_name(file_name(index, reference))
            .mime_str(&reference.mime)
            .map_err(|_| ProviderError::Failed {
                message: format!("reference image {index} has an unusable MIME type"),
            })?;
        form = form.part(IMAGE_FIELD, part);
    }
    if let Some(mask) = request.mask {
        let part = Part::stream(mask.bytes.clone())
            .file_name(format!("mask.{}", extension_of(&mask.mime)))
            .mime_str(&mask.mime)
            .map_err(|_| ProviderError::Failed {
                message: "the mask has an unusable MIME type".into(),
            })?;
        form = form.part("mask", part);
    }
    Ok(form)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    #[test]
    fn file_names_follow_the_mime_type() {
        let reference = |mime: &str| ReferenceImage {
            bytes: Bytes::new(),
            mime: mime.into(),
        };
        assert_eq!(file_name(0, &reference("image/png")), "image-0.png");
        assert_eq!(file_name(1, &reference("image/jpeg")), "image-1.jpg");
        assert_eq!(file_name(2, &reference("image/webp")), "image-2.webp");
    }
}
