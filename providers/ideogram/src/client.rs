//! The provider itself: the provider type and its [`UpstreamAdapter`]. Everything that touches
//! the network lives here; what goes into a request and how answers are read is `convert`'s
//! job.

use futures_util::future::try_join_all;
use imgproxy_core::{
    upstream::{ApiClient, KeyHeader, Outcome, Upstream, UpstreamAdapter, UpstreamProvider},
    Generation, ProviderRequest,
};

use crate::{convert, DEFAULT_BASE_URL, PROVIDER_ID};

/// The Ideogram provider, built from [`UpstreamSettings`] by [`UpstreamProvider::new`].
///
/// The key goes as `Api-Key: <key>` to the API only, never to the image URLs;
/// `max_download_bytes` bounds the answer and each downloaded image.
///
/// [`UpstreamSettings`]: imgproxy_core::upstream::UpstreamSettings
pub type IdeogramProvider = UpstreamProvider<Ideogram>;

/// The [`UpstreamAdapter`] of Ideogram 3.0: one synchronous call makes `n` images.
///
/// It never retries: a failure after the images were made is ambiguous, and a retry could bill
/// them twice.
#[derive(Debug)]
pub enum Ideogram {}

impl UpstreamAdapter for Ideogram {
    const UPSTREAM: Upstream =
        Upstream::new(PROVIDER_ID, DEFAULT_BASE_URL).key_header(KeyHeader::Named("api-key"));

    async fn try_generate(api: &ApiClient, call: ProviderRequest<'_>) -> Outcome {
        let (endpoint, form) = convert::form(&call)?;
        tracing::debug!(
            provider = PROVIDER_ID,
            model = call.upstream_model(),
            n = call.n,
            ?endpoint,
            "calling Ideogram"
        );
        let url = api.url(&endpoint.path(call.upstream_model()));
        let response = api
            .send(api.post(url).multipart(form), convert::error_from_status)
            .await?;
        let answer = convert::parse_response(&api.read_body(response).await?)?;
        if answer.withheld > 0 {
            tracing::info!(
                provider = PROVIDER_ID,
                withheld = answer.withheld,
                "Ideogram's safety check withheld some images; the others are returned"
            );
        }
        // The URLs expire (after about a day), so every image is fetched now, all at once.
        let downloads = answer.images.into_iter().map(|image| async move {
            let (bytes, content_type) = api.download(&image.url).await?;
            convert::generated_image(bytes, content_type.as_deref(), image.revised_prompt)
        });
        Ok(Generation {
            images: try_join_all(downloads).await?,
            ..Generation::default()
        })
    }
}
