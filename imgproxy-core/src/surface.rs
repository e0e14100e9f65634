//! Other front doors onto the one image request: Chat Completions as OpenRouter serves image
//! models on it (`chat`) and the Responses API's `image_generation` tool (`responses`). Each
//! reads its own request into an [`ImageRequest`] plus where every parameter came from, so
//! that the catalog's refusals name the parameter in the client's own terms, and shapes the
//! served images back into its own answer. Validation, pricing, caching and storage stay the
//! image request's: nothing here decides what a model accepts.

pub mod chat;
pub mod responses;

use std::collections::BTreeMap;

use serde_json::Value;

use crate::{Catalog, Error, ImageInput, ImageRequest};

/// A request that came through another surface, as the image request it asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Translated {
    /// The image request.
    pub request: ImageRequest,
    /// Where its parameters came from.
    pub paths: ParamPaths,
    /// Whether its first reference image is one an earlier answer made (the conversation's
    /// latest image), rather than one the user attached.
    pub carried_image: bool,
}

/// Where each parameter of the image request came from in the surface's request:
/// `aspect_ratio` is `image_config.aspect_ratio` in a chat completion, `tools[0].size` in a
/// response. A parameter with no entry kept its name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParamPaths(BTreeMap<String, String>);

impl ParamPaths {
    /// Records that `param` came from `path`.
    pub fn insert(&mut self, param: impl Into<String>, path: impl Into<String>) {
        self.0.insert(param.into(), path.into());
    }

    /// Where `param` came from.
    pub fn path<'a>(&'a self, param: &'a str) -> &'a str {
        self.0.get(param).map_or(param, String::as_str)
    }

    /// `error` in the surface's terms: its `param`, and the message's mention of it.
    #[must_use]
    pub fn rename(&self, error: Error) -> Error {
        match error {
            Error::InvalidRequest {
                message,
                param: Some(param),
                code,
            } => {
                let path = self.path(&param);
                Error::InvalidRequest {
                    message: replace_word(&message, &param, path),
                    param: Some(path.to_owned()),
                    code,
                }
            }
            other => other,
        }
    }
}

impl Translated {
    /// Fits the request to its model in `catalog`. A model the catalog does not know is a
    /// 400 naming where the client wrote it: on a chat or responses surface that is most
    /// likely a text model, which imgproxy does not serve (the Images API answers 404 for
    /// it); retired and unserved models keep their own answers. The image carried from an
    /// earlier answer is edited only by a model that takes reference images: another makes a
    /// new image from the prompt. What these clients send by habit and a model cannot use
    /// means nothing for it: the end user's id (`user`, `safety_identifier`) where the model
    /// takes none, partial images where it makes none.
    pub fn fit(&mut self, catalog: &Catalog) -> Result<(), Error> {
        let model = self.request.model.as_deref().and_then(|m| catalog.get(m));
        if let Some(model) = model {
            if model.param("user").is_none() {
                self.request.user = None;
            }
            if model.param("safety_identifier").is_none() {
                self.request.safety_identifier = None;
            }
            if !model.has(crate::Capability::Streaming) {
                self.request.partial_images = None;
            }
        }
        if self.carried_image && model.is_some_and(|m| m.max_reference_images == 0) {
            if let Some(images) = &mut self.request.images {
                images.remove(0);
            }
            self.request.images = self.request.images.take().filter(|i| !i.is_empty());
            self.carried_image = false;
        }
        match &self.request.model {
            Some(name) if model.is_none() => Err(self.paths.rename(Error::invalid_param(
                "model",
                format!(
                    "`{}` is not an image model: imgproxy serves image models only; \
                     GET /v1/models lists them",
                    crate::quote(name)
                ),
            ))),
            _ => Ok(()),
        }
    }
}

/// `text` with every mention of `word` as a whole name (not inside a longer name or path)
/// replaced by `with`.
fn replace_word(text: &str, word: &str, with: &str) -> String {
    let part_of_name = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '[' | ']');
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(word) {
        let (before, after) = (&rest[..at], &rest[at + word.len()..]);
        let whole = !before.chars().next_back().is_some_and(part_of_name)
            && !after.chars().next().is_some_and(part_of_name);
        out.push_str(before);
        out.push_str(if whole { with } else { word });
        rest = after;
    }
    out.push_str(rest);
    out
}

/// Builds the image request from named parameters: `fields` are the image request's own
/// (already in its names); `params` are catalog parameters the surface passes through, each
/// with the path it came from. A parameter given twice is a 400 naming its second path.
fn image_request(
    fields: serde_json::Map<String, Value>,
    params: Vec<(String, Value, String)>,
    paths: &mut ParamPaths,
) -> Result<ImageRequest, Error> {
    let mut body = fields;
    for (name, value, path) in params {
        if body.contains_key(&name) {
            return Err(Error::invalid_param(
                path,
                format!("`{name}` is given twice"),
            ));
        }
        paths.insert(name.clone(), path);
        body.insert(name, value);
    }
    serde_json::from_value(Value::Object(body)).map_err(|e| {
        Error::invalid_param(
            "body",
            format!("the request's parameters do not make an image request: {e}"),
        )
    })
}

/// The reference images a surface found, with where each one was, for the image request's
/// `image` parameter (one image names its own path, several their common parent).
#[derive(Debug, Default)]
struct References {
    images: Vec<ImageInput>,
    paths: Vec<String>,
}

impl References {
    fn push(&mut self, image: ImageInput, path: String) {
        self.images.push(image);
        self.paths.push(path);
    }

    /// Records the images in `fields` (as `images`) and their path under `parent`.
    fn record(
        self,
        fields: &mut serde_json::Map<String, Value>,
        paths: &mut ParamPaths,
        parent: &str,
    ) {
        if self.images.is_empty() {
            return;
        }
        let path = match self.paths.as_slice() {
            [one] => one.clone(),
            _ => parent.to_owned(),
        };
        paths.insert("image", path.clone());
        paths.insert("images", path);
        fields.insert(
            "images".into(),
            serde_json::to_value(self.images).unwrap_or_default(),
        );
    }
}

/// An image as a data URL (`data:image/png;base64,...`).
pub fn data_url(mime: &str, b64: &str) -> String {
    let mut url = String::with_capacity(mime.len() + b64.len() + 13);
    url.push_str("data:");
    url.push_str(mime);
    url.push_str(";base64,");
    url.push_str(b64);
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_names_the_parameter_where_the_client_wrote_it() {
        let mut paths = ParamPaths::default();
        paths.insert("image_size", "image_config.image_size");
        let renamed = paths.rename(Error::invalid_param(
            "image_size",
            "`image_size` `8K` is not one of 1K, 2K",
        ));
        assert_eq!(renamed.param(), Some("image_config.image_size"));
        assert_eq!(
            renamed.to_string(),
            "`image_config.image_size` `8K` is not one of 1K, 2K"
        );
        let bare = paths.rename(Error::invalid_param(
            "image_size",
            "model `m` does not support image_size `8K`; see image_sizes",
        ));
        assert_eq!(
            bare.to_string(),
            "model `m` does not support image_config.image_size `8K`; see image_sizes"
        );
        let kept = paths.rename(Error::invalid_param("n", "bad n"));
        assert_eq!(kept.param(), Some("n"));
    }

    #[test]
    fn data_urls_carry_the_type() {
        assert_eq!(data_url("image/png", "AAAA"), "data:image/png;base64,AAAA");
    }
}
