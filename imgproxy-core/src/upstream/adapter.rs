//! The one [`ImageProvider`] of every upstream API, written once: an [`UpstreamProvider`] holds
//! its instance name and the keyed [`ApiClient`] made from the settings; its
//! [`UpstreamAdapter`] speaks the upstream's protocol through that client. Every error the
//! adapter returns passes through [`ApiClient::scrub`], so that no adapter can forget to take
//! the key out of its errors.

use std::{fmt, future::Future, marker::PhantomData};

use async_trait::async_trait;

use super::{api::ApiClient, settings::Upstream, UpstreamSettings};
use crate::{Generation, ImageProvider, ProviderError, ProviderRequest};

/// The protocol of an upstream API: what an [`UpstreamProvider`] sends through its client and
/// how it reads the answers. Adapters hold no state; the provider holds the client.
pub trait UpstreamAdapter: 'static {
    /// The upstream this adapter speaks to.
    const UPSTREAM: Upstream;

    /// [`ImageProvider::generate`] through `api`, before the scrub.
    fn try_generate(
        api: &ApiClient,
        call: ProviderRequest<'_>,
    ) -> impl Future<Output = Result<Generation, ProviderError>> + Send;

    /// [`ImageProvider::resume`] through `api`, before the scrub. Adapters of synchronous
    /// upstreams keep this default.
    fn try_resume(
        _api: &ApiClient,
        _call: ProviderRequest<'_>,
        _job: &str,
    ) -> impl Future<Output = Result<Generation, ProviderError>> + Send {
        async { Err(ProviderError::RESUME_UNSUPPORTED) }
    }
}

/// What an [`UpstreamProvider`] of adapter `A` starts from: [`UpstreamSettings`] for an
/// adapter that needs nothing else, or an adapter's own settings, which implement this.
pub trait AdapterConfig<A> {
    /// The provider these settings describe.
    fn start(self) -> Result<UpstreamProvider<A>, ProviderError>;
}

impl<A: UpstreamAdapter> AdapterConfig<A> for UpstreamSettings {
    fn start(self) -> Result<UpstreamProvider<A>, ProviderError> {
        let api = self.api_client(&A::UPSTREAM)?;
        Ok(UpstreamProvider::named(A::UPSTREAM.name(), api))
    }
}

/// The [`ImageProvider`] of an upstream API whose protocol adapter `A` speaks. Its errors never
/// carry the key.
pub struct UpstreamProvider<A> {
    /// The provider instance name that catalog entries refer to.
    name: String,
    api: ApiClient,
    adapter: PhantomData<fn() -> A>,
}

impl<A> fmt::Debug for UpstreamProvider<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamProvider")
            .field("name", &self.name)
            .field("api", &self.api)
            .finish()
    }
}

impl<A: UpstreamAdapter> UpstreamProvider<A> {
    /// Builds the provider and its HTTP client (rustls, the settings' timeout).
    pub fn new(config: impl AdapterConfig<A>) -> Result<Self, ProviderError> {
        config.start()
    }

    /// The provider serving under `name` (the upstream's own, or an OpenAI-compatible
    /// endpoint's) through `api`.
    pub fn named(name: impl Into<String>, api: ApiClient) -> Self {
        Self {
            name: name.into(),
            api,
            adapter: PhantomData,
        }
    }
}

#[async_trait]
impl<A: UpstreamAdapter> ImageProvider for UpstreamProvider<A> {
    fn name(&self) -> &str {
        &self.name
    }

    fn genai_name(&self) -> &str {
        A::UPSTREAM.genai().unwrap_or(&self.name)
    }

    async fn generate(&self, call: ProviderRequest<'_>) -> Result<Generation, ProviderError> {
        A::try_generate(&self.api, call)
            .await
            .map_err(|e| self.api.scrub(e))
    }

    async fn resume(
        &self,
        call: ProviderRequest<'_>,
        job: &str,
    ) -> Result<Generation, ProviderError> {
        A::try_resume(&self.api, call, job)
            .await
            .map_err(|e| self.api.scrub(e))
    }
}
