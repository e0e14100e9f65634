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
        let mapping = convert::input_mapping(&call.request.model)?;
        let answer = if mapping.tool {
            Self::tool(api, &call).await?
        } else {
            Self::generation(api, &call).await?
        };
        // What Recraft charged, in API units, for an operator to compare; the catalog's price
        // is what is billed.
        let credits = answer.credits.unwrap_or(Value::Null);
        tracing::debug!(provider = PROVIDER_ID, model = call.upstream_model(), %credits, "Recraft answered");

        let output_format = call.request.param_str("output_format");
        // At once and side by side: the result URLs are temporary (about a day).
        let downloads = answer
            .images
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

impl Recraft {
    /// `POST /images/generations` (JSON): `call.n` images at once.
    async fn generation(
        api: &ApiClient,
        call: &ProviderRequest<'_>,
    ) -> Result<convert::Answer, ProviderError> {
        let body = convert::generation_body(call)?;
        let model = call.upstream_model();
        tracing::debug!(
            provider = PROVIDER_ID,
            model,
            n = call.n,
            "calling Recraft images/generations"
        );
        let post = api.post(api.url("images/generations")).json(&body);
        let answer = api.send_for_body(post, convert::error_from_status).await?;
        convert::parse_generation(&answer)
    }

    /// `POST /images/<tool>` (multipart, the tool named by the model's upstream id): one image.
    async fn tool(
        api: &ApiClient,
        call: &ProviderRequest<'_>,
    ) -> Result<convert::Answer, ProviderError> {
        let form = convert::tool_form(call)?;
        let tool = call.upstream_model();
        tracing::debug!(provider = PROVIDER_ID, tool, "calling a Recraft tool");
        let post = api.post(api.url(&format!("images/{tool}"))).multipart(form);
        let answer = api.send_for_body(post, convert::error_from_status).await?;
        convert::parse_tool(&answer)
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
