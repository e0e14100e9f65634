//! The provider itself: its configuration, the provider type and its [`UpstreamAdapter`].
//! Everything that touches the network lives here; what goes into a request and how answers
//! are read is `convert`'s job.

use imgproxy_core::{
    upstream::{ApiClient, Outcome, Upstream, UpstreamAdapter, UpstreamProvider},
    Generation, ProviderRequest,
};
use imgproxy_provider_openai::compat;

use crate::{
    convert::{self, Endpoint},
    DEFAULT_BASE_URL, PROVIDER_ID,
};

/// The xAI provider, built from [`UpstreamSettings`] by [`UpstreamProvider::new`].
///
/// The key goes as `Authorization: Bearer <key>` to the API only; `max_download_bytes` bounds an
/// image downloaded from a `url` item.
///
/// [`UpstreamSettings`]: imgproxy_core::upstream::UpstreamSettings
pub type XaiProvider = UpstreamProvider<Xai>;

/// The [`UpstreamAdapter`] of xAI's images API.
///
/// It never retries: a failure after the image was made is ambiguous, and a retry could bill
/// the generation twice.
#[derive(Debug)]
pub enum Xai {}

impl UpstreamAdapter for Xai {
    const UPSTREAM: Upstream = Upstream::new(PROVIDER_ID, DEFAULT_BASE_URL).genai_name("x_ai");

    async fn try_generate(api: &ApiClient, call: ProviderRequest<'_>) -> Outcome {
        let (endpoint, body) = convert::request_body(&call)?;
        let url = api.url(match endpoint {
            Endpoint::Generations => "images/generations",
            Endpoint::Edits => "images/edits",
        });
        tracing::debug!(
            provider = PROVIDER_ID,
            model = call.upstream_model(),
            n = call.n,
            references = call.references.len(),
            ?endpoint,
            "calling xAI"
        );
        let answer = api
            .send_for_body(api.post(url).json(&body), convert::error_from_status)
            .await?;
        let parsed = convert::parse_response(&answer)?;

        let mut images = Vec::with_capacity(parsed.images.len());
        // Sequential on purpose: URL items only appear if xAI ignores `b64_json`.
        for image in parsed.images {
            let (bytes, content_type) = api.fetch(image.source).await?;
            // The bytes decide the MIME type; failing that, the `mime_type` xAI reported, then
            // a download's `Content-Type`.
            let declared = [image.mime.as_deref(), content_type.as_deref()];
            images.push(compat::generated_image(
                bytes,
                &declared,
                image.revised_prompt,
            ));
        }
        let mut generation = Generation {
            usage: parsed.usage,
            ..Generation::default()
        };
        // xAI takes no `output_format`; report what it actually returned.
        generation.meta.output_format = images
            .first()
            .and_then(|image| image.mime.strip_prefix("image/"))
            .map(str::to_owned);
        generation.images = images;
        Ok(generation)
    }
}
