//! The provider itself: its configuration, the provider type and its [`UpstreamAdapter`].
//! Everything that touches the network lives here; what goes into a request and how answers
//! are read is `convert`'s job.

use imgproxy_core::{
    upstream::{ApiClient, Outcome, Upstream, UpstreamAdapter, UpstreamProvider},
    Generation, ProviderRequest,
};

use crate::{convert, DEFAULT_BASE_URL, PROVIDER_ID};

/// The Together provider, built from [`UpstreamSettings`] by [`UpstreamProvider::new`].
///
/// The key goes as `Authorization: Bearer <key>` to the API only; `max_download_bytes` bounds an
/// image downloaded from a `url` item.
///
/// [`UpstreamSettings`]: imgproxy_core::upstream::UpstreamSettings
pub type TogetherProvider = UpstreamProvider<Together>;

/// The [`UpstreamAdapter`] of Together's images API.
///
/// It never retries: a failure after the image was made is ambiguous, and a retry could bill
/// the generation twice.
#[derive(Debug)]
pub enum Together {}

impl UpstreamAdapter for Together {
    const UPSTREAM: Upstream = Upstream::new(PROVIDER_ID, DEFAULT_BASE_URL);

    async fn try_generate(api: &ApiClient, call: ProviderRequest<'_>) -> Outcome {
        let body = convert::request_body(&call)?;
        tracing::debug!(
            provider = PROVIDER_ID,
            model = call.upstream_model(),
            n = call.n,
            "calling Together images/generations"
        );
        let post = api.post(api.url("images/generations")).json(&body);
        let answer = api.send_for_body(post, convert::error_from_status).await?;
        let sources = convert::parse_response(&answer)?;

        let output_format = call.request.param_str("output_format");
        let mut images = Vec::with_capacity(sources.len());
        // Sequential on purpose: URL items only appear if Together ignores `base64`.
        for source in sources {
            let (bytes, content_type) = api.fetch(source).await?;
            images.push(convert::generated_image(
                bytes,
                content_type.as_deref(),
                output_format,
            ));
        }
        let mut generation = Generation {
            images,
            ..Generation::default()
        };
        // Together renders exactly the width and height it was sent.
        generation.meta.size = Some(convert::pixel_size(&call).to_string());
        Ok(generation)
    }
}
