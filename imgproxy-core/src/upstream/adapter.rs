//! The one [`ImageProvider`] impl of every adapter of an upstream API: an adapter implements
//! [`UpstreamAdapter`], and the blanket impl here passes every error it returns through
//! [`ApiClient::scrub`], so that no adapter can forget to take the key out of its errors.

use async_trait::async_trait;

use super::{api::ApiClient, settings::Upstream};
use crate::{Generation, ImageProvider, ProviderError, ProviderRequest};

/// An adapter of an upstream API, reached through an [`ApiClient`]. It is an [`ImageProvider`]
/// whose errors never carry the key.
#[async_trait]
pub trait UpstreamAdapter: Send + Sync + std::fmt::Debug {
    /// The upstream this adapter speaks to.
    const UPSTREAM: Upstream;

    /// The provider instance name that catalog entries refer to: the upstream's, unless the
    /// adapter serves under a name of its own (an OpenAI-compatible endpoint).
    fn name(&self) -> &str {
        Self::UPSTREAM.name()
    }

    /// The client of the upstream API, whose key is scrubbed from every error.
    fn api(&self) -> &ApiClient;

    /// [`ImageProvider::generate`], before the scrub.
    async fn try_generate(&self, call: ProviderRequest<'_>) -> Result<Generation, ProviderError>;

    /// [`ImageProvider::resume`], before the scrub. Adapters of synchronous upstreams keep
    /// this default.
    async fn try_resume(
        &self,
        _call: ProviderRequest<'_>,
        _job: &str,
    ) -> Result<Generation, ProviderError> {
        Err(ProviderError::Unsupported {
            feature: "resuming upstream jobs",
        })
    }
}

#[async_trait]
impl<T: UpstreamAdapter> ImageProvider for T {
    fn name(&self) -> &str {
        UpstreamAdapter::name(self)
    }

    async fn generate(&self, call: ProviderRequest<'_>) -> Result<Generation, ProviderError> {
        self.try_generate(call)
            .await
            .map_err(|e| self.api().scrub(e))
    }

    async fn resume(
        &self,
        call: ProviderRequest<'_>,
        job: &str,
    ) -> Result<Generation, ProviderError> {
        self.try_resume(call, job)
            .await
            .map_err(|e| self.api().scrub(e))
    }
}
