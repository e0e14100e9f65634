//! The provider itself: the provider type and its [`UpstreamAdapter`], which sends a
//! generation or a tool call and downloads what it made. What goes into a request and how
//! answers are read is `convert`'s job.

use futures_util::future::try_join_all;
use imgproxy_core::{
    upstream::{ApiClient, Outcome, Upstream, UpstreamAdapter, UpstreamProvider},
    GeneratedImage, Generation, ProviderError, ProviderRequest,
};
use imgproxy_provider_openai::compat::ParsedImage;
use serde_json::Value;

use crate::{convert, DEFAULT_BASE_URL, PROVIDER_ID};

/// The Recraft provider, built from [`UpstreamSettings`] by [`UpstreamProvider::new`].
///
/// The key goes as `Authorization: Bearer <key>` (marked sensitive) to the API only, never to
/// the hosts results are downloaded from; `max_download_bytes` bounds each download.
///
/// [`UpstreamSettings`]: imgproxy_core::upstream::UpstreamSettings
pub type RecraftProvider = UpstreamProvider<Recraft>;

/// The [`UpstreamAdapter`] of Recraft's API.
///
/// It never retries: a failure after the image was made is ambiguous, and a retry could bill
/// the generation twice.
#[derive(Debug)]
pub enum Recraft {}

impl UpstreamAdapter for Recraft {
    const UPSTREAM: Upstream = Upstream::new(PROVIDER_ID, DEFAULT_BASE_URL);

    async fn try_generate(api: &ApiClient, call: ProviderRequest<'_>) -> Outcome {
        let model = call.upstream_model();
        let mapping = convert::input_mapping(&call.request.model)?;
        let endpoint = if mapping.tool {
            format!("images/{model}")
        } else {
            "images/generations".to_owned()
        };
        let post = api.post(api.url(&endpoint));
        let post = if mapping.tool {
            post.multipart(convert::tool_form(&call)?)
        } else {
            post.json(&convert::generation_body(&call)?)
        };
        tracing::debug!(provider = PROVIDER_ID, model, n = call.n, %endpoint, "calling Recraft");
        let answer = api.send_for_body(post, convert::error_from_status).await?;
        let (images, credits) = if mapping.tool {
            let (image, credits) = convert::parse_tool(&answer)?;
            (vec![image], credits)
        } else {
            convert::parse_generation(&answer)?
        };
        // Recraft reports what it charged in API units; the catalog's price is what is billed.
        let credits = credits.unwrap_or(Value::Null);
        tracing::debug!(provider = PROVIDER_ID, model, %credits, "Recraft answered");

        let output_format = call.request.param_str("output_format");
        // At once and side by side: the result URLs are temporary (about a day).
        let downloads = images
            .into_iter()
            .map(|image| download(api, image, output_format));
        let mut generation = Generation {
            images: try_join_all(downloads).await?,
            ..Generation::default()
        };
        generation.meta.background = mapping.background;
        Ok(generation)
    }
}

/// The bytes of one result (downloaded without the key, within the client's limit), made an
/// image.
async fn download(
    api: &ApiClient,
    image: ParsedImage,
    output_format: Option<&str>,
) -> Result<GeneratedImage, ProviderError> {
    let (bytes, content_type) = api.fetch(image.source).await?;
    convert::generated_image(
        bytes,
        content_type.as_deref(),
        output_format,
        image.revised_prompt,
    )
}
