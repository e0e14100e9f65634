//! The provider itself: its configuration, the provider type and its [`UpstreamAdapter`].
//! Everything that touches the network lives here; what goes into a form and how answers are
//! read is `convert`'s job, what error answers mean `error`'s.

use imgproxy_core::{
    upstream::{ApiClient, Outcome, Upstream, UpstreamAdapter, UpstreamProvider},
    Generation, ProviderRequest,
};
use reqwest::header::ACCEPT;

use crate::{convert, error, DEFAULT_BASE_URL, PROVIDER_ID};

/// What the adapter accepts: the image's own bytes, with `finish-reason` and `seed` in the
/// headers; error answers are JSON either way (providers-2.md §11). Raw bytes spare a base64
/// copy of every image.
const ACCEPT_IMAGE: &str = "image/*";

/// The Stability provider, built from [`UpstreamSettings`] by [`UpstreamProvider::new`].
///
/// The key goes as `Authorization: Bearer <key>` to the API only; images come back in the
/// answer itself, so `max_download_bytes` bounds them.
///
/// [`UpstreamSettings`]: imgproxy_core::upstream::UpstreamSettings
pub type StabilityProvider = UpstreamProvider<Stability>;

/// The [`UpstreamAdapter`] of Stability's `v2beta/stable-image/generate` routes. One call
/// makes one image; the gateway fans `n` out (the catalog sets `n_per_call = 1`), and an
/// operator's entry asking for more gets one call per image, in turn.
///
/// It never retries: a failure after the image was made is ambiguous, and a retry could bill
/// the generation twice.
#[derive(Debug)]
pub enum Stability {}

impl UpstreamAdapter for Stability {
    const UPSTREAM: Upstream = Upstream::new(PROVIDER_ID, DEFAULT_BASE_URL);

    async fn try_generate(api: &ApiClient, call: ProviderRequest<'_>) -> Outcome {
        let mapping = convert::input_mapping(&call.request.model)?;
        let url = api.url(&convert::path(&mapping));
        let mut images = Vec::with_capacity(call.n as usize);
        for offset in 0..call.n.max(1) {
            let form = convert::form(&call, offset, &mapping)?;
            tracing::debug!(
                provider = PROVIDER_ID,
                model = call.upstream_model(),
                references = call.references.len(),
                "calling Stability stable-image/generate"
            );
            let post = api
                .post(url.as_str())
                .header(ACCEPT, ACCEPT_IMAGE)
                .multipart(form);
            let response = api.send(post, error::error_from_status).await?;
            let headers = response.headers().clone();
            if let Some(seed) = headers.get("seed").and_then(|v| v.to_str().ok()) {
                tracing::debug!(provider = PROVIDER_ID, seed, "Stability image made");
            }
            let body = api.read_body(response).await?;
            images.push(convert::read_answer(&headers, body)?);
        }
        Ok(Generation {
            images,
            ..Generation::default()
        })
    }
}
