//! The one [`ImageProvider`] of every upstream API, written once: an [`UpstreamProvider`] holds
//! its instance name and the pool of keyed [`ApiClient`]s made from the settings; its
//! [`UpstreamAdapter`] speaks the upstream's protocol through the client of one key. Every
//! error the adapter returns passes through [`ApiClient::scrub`], so that no adapter can forget
//! to take the key out of its errors; every job token it reports names its key, so that a
//! resumed job is polled with the key that started it.

use std::{fmt, future::Future, marker::PhantomData};

use async_trait::async_trait;

use super::{api::ApiClient, pool::KeyPool, settings::Upstream, UpstreamSettings};
use crate::{relay::Relay, Generation, ImageProvider, KeyStatus, ProviderError, ProviderRequest};

/// What one call of an adapter comes to: the generation, or why there is none.
pub type Outcome = Result<Generation, ProviderError>;

/// The protocol of an upstream API: what an [`UpstreamProvider`] sends through its client and
/// how it reads the answers. Adapters hold no state; the provider holds the client.
pub trait UpstreamAdapter: 'static {
    /// The upstream this adapter speaks to.
    const UPSTREAM: Upstream;

    /// [`ImageProvider::generate`] through `api`, before the scrub.
    fn try_generate(
        api: &ApiClient,
        call: ProviderRequest<'_>,
    ) -> impl Future<Output = Outcome> + Send;

    /// [`ImageProvider::resume`] through `api`, before the scrub. Adapters of synchronous
    /// upstreams keep this default.
    fn try_resume(
        _api: &ApiClient,
        _call: ProviderRequest<'_>,
        _job: &str,
    ) -> impl Future<Output = Outcome> + Send {
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
        UpstreamProvider::named(A::UPSTREAM.name(), self.api_clients(&A::UPSTREAM)?)
    }
}

/// The [`ImageProvider`] of an upstream API whose protocol adapter `A` speaks, through a pool
/// of keys: each call takes the least busy live key; a key the upstream rejects (or whose
/// account is out of quota) is taken out, and the call moves to the next key when the
/// upstream cannot have started anything yet. Its errors never carry a key.
pub struct UpstreamProvider<A> {
    /// The provider instance name that catalog entries refer to.
    name: String,
    pool: KeyPool,
    adapter: PhantomData<fn() -> A>,
}

impl<A> fmt::Debug for UpstreamProvider<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamProvider")
            .field("name", &self.name)
            .field("pool", &self.pool)
            .finish()
    }
}

impl<A: UpstreamAdapter> UpstreamProvider<A> {
    /// Builds the provider and its HTTP clients (rustls, the settings' timeout).
    pub fn new(config: impl AdapterConfig<A>) -> Result<Self, ProviderError> {
        config.start()
    }

    /// The provider serving under `name` (the upstream's own, or an OpenAI-compatible
    /// endpoint's) through `keys`, one client per key of its pool (at least one).
    pub fn named(name: impl Into<String>, keys: Vec<ApiClient>) -> Result<Self, ProviderError> {
        let name = name.into();
        Ok(Self {
            pool: KeyPool::new(&name, keys)?,
            name,
            adapter: PhantomData,
        })
    }

    /// `call` through the pool: a new generation, or the wait for the upstream job `job`
    /// with the key that started it. A rejected key is taken out and, while the upstream has
    /// reported no job and sent no partial image, the call moves to the next live key.
    async fn call_with_keys(&self, call: ProviderRequest<'_>, job: Option<&str>) -> Outcome {
        let (mut lease, job) = match job {
            None => (self.pool.least_busy()?, None),
            Some(token) => {
                let (lease, job) = self.pool.owner(token)?;
                (lease, Some(job))
            }
        };
        loop {
            let (outlets, mut relay) = Relay::new(call);
            let keyed = outlets.request(call);
            let attempt = async {
                match job {
                    None => A::try_generate(lease.api(), keyed).await,
                    Some(job) => A::try_resume(lease.api(), keyed, job).await,
                }
            };
            let result = relay
                .drive(attempt, |token| self.pool.job_token(&lease, token))
                .await
                .map_err(|e| lease.api().scrub(e));
            self.pool.report(&lease, &result);
            match result {
                Err(error) if error.disables_key() && !relay.started() => {
                    tracing::debug!(provider = %self.name, "moving the call to the next key");
                    lease = self.pool.least_busy()?;
                }
                result => return result,
            }
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
        self.call_with_keys(call, None).await
    }

    async fn resume(
        &self,
        call: ProviderRequest<'_>,
        job: &str,
    ) -> Result<Generation, ProviderError> {
        self.call_with_keys(call, Some(job)).await
    }

    fn keys(&self) -> Vec<KeyStatus> {
        self.pool.statuses()
    }
}
