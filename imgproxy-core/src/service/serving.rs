//! The whole path of a served request: validate, price, fetch references, answer from the
//! cache, or generate once for every identical request in flight (single-flight, within this
//! process and across instances on one database), charge, store every image, record the cache
//! entry and the name, and answer in OpenAI's shape. Named-image recall lives here too.
//! [`crate::Gateway::generate`] is the bare path without any of it.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;

use async_trait::async_trait;
use tracing::Instrument as _;

use super::{
    cache::{cache_key, CacheMode, CacheStatus},
    db::{CachedImage, CachedResult, Database, NamedImage},
    metering::Meter,
    Service,
};
use crate::{
    failover::{Attempt, Attempts},
    gateway::{FileSource, Sinks},
    telemetry, Error, ImageData, ImageRequest, ImageResponse, ModelSpec, ReferenceImage, Result,
    Usage, ValidatedRequest,
};

/// Who asks, and how: the tenant that scopes cache entries, names and files (an API key's id,
/// or `""` for the operator), who pays (if anyone), how the cache is used, and the name to
/// store the first image under.
#[derive(Debug, Clone, Copy, Default)]
pub struct Call<'a> {
    /// The tenant.
    pub tenant: &'a str,
    /// Who pays; `None` for unmetered callers.
    pub meter: Option<Meter<'a>>,
    /// How the cache is used.
    pub cache: CacheMode,
    /// Store the (first) image under this name, for recall without a prompt.
    pub name: Option<&'a str>,
    /// Where partial images go, when the client streams.
    pub partials: Option<&'a crate::provider::PartialSender>,
    /// Where started upstream jobs are reported, when a task records them.
    pub jobs: Option<&'a crate::provider::JobSender>,
    /// Upstream jobs of an interrupted run to wait for instead of generating anew (the
    /// cache is then neither read nor claimed).
    pub resume: Option<&'a std::collections::BTreeMap<u32, String>>,
}

/// A served request. [`Service::response`] gives its OpenAI-shaped answer.
#[derive(Debug, Clone)]
pub struct Served {
    /// The images, as stored.
    pub images: Vec<StoredImage>,
    /// Whether it came from the cache.
    pub cache: CacheStatus,
    /// The model variant that served it: the request's, or the fallback that did.
    pub model: Arc<ModelSpec>,
    /// Every upstream attempt made for it and how many times it moved on (empty for images
    /// from the cache).
    pub attempts: Attempts,
    /// The paying key's balance afterwards, for metered callers.
    pub balance: Option<i64>,
    /// Credits this request cost, for metered callers (0 for a hit).
    pub credits_used: Option<u64>,
    /// How long this request waited on the upstream: its own generation, or the equal one in
    /// flight that it waited for; zero for a cache hit.
    pub upstream_time: Duration,
    request: ValidatedRequest,
    produced: Arc<Produced>,
}

impl Served {
    /// The stored result: image keys and metadata (what a task keeps).
    pub fn result(&self) -> &CachedResult {
        &self.produced.result
    }

    /// Token usage, when the images were generated for this request.
    pub fn usage(&self) -> Option<&Usage> {
        (self.cache == CacheStatus::Miss)
            .then_some(self.produced.usage.as_ref())
            .flatten()
    }

    /// What a task keeps of it: the stored images and the token usage.
    pub fn task_result(&self) -> serde_json::Value {
        task_result(self.result(), self.usage())
    }
}

/// An image in the store, with its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredImage {
    /// Image-store key.
    pub key: String,
    /// MIME type.
    pub mime: String,
    /// The bytes.
    pub bytes: Bytes,
}

/// How often a request waiting on another instance's identical generation looks whether it
/// is done (one read): this, plus up to [`CLAIM_POLL_JITTER_MS`] drawn per wait, so that
/// waiting instances spread their reads.
const CLAIM_POLL: Duration = Duration::from_millis(150);
const CLAIM_POLL_JITTER_MS: u64 = 100;
/// Upstream deadline assumed for models that set none (the provider timeout's default).
pub(super) const DEFAULT_DEADLINE_SECS: u64 = 300;
/// How long past its model's deadline a live instance's claim is honoured before another
/// instance takes it (a dead instance's claim is taken as soon as its lease has expired).
pub(super) const CLAIM_MARGIN_SECS: u64 = 60;

/// A generation as every request waiting on it shares it.
#[derive(Debug)]
pub(crate) struct Produced {
    result: CachedResult,
    bytes: Vec<Bytes>,
    usage: Option<Usage>,
    /// Credits kept and the balance, when the request that ran it was metered.
    charged: Option<crate::service::metering::Charged>,
    /// Read from the cache (another instance generated it while this one waited).
    from_cache: bool,
    /// How long the generation took upstream (zero when read from the cache).
    upstream_time: Duration,
    /// How it was come by (empty when read from the cache).
    attempts: Attempts,
}

impl super::metering::Billed for Produced {
    fn images(&self) -> usize {
        self.bytes.len()
    }

    fn task_result(&self) -> serde_json::Value {
        task_result(&self.result, self.usage.as_ref())
    }

    fn served(&self) -> (usize, &[Attempt]) {
        (self.attempts.served, &self.attempts.log)
    }

    fn image_keys(&self) -> Vec<&str> {
        self.result.images.iter().map(|i| i.key.as_str()).collect()
    }
}

/// What a task keeps of its generation: the stored images and the token usage.
fn task_result(result: &CachedResult, usage: Option<&Usage>) -> serde_json::Value {
    serde_json::json!({ "images": result, "usage": usage })
}

impl Produced {
    fn cached(result: CachedResult, bytes: Vec<Bytes>) -> Self {
        Self {
            result,
            bytes,
            usage: None,
            charged: None,
            from_cache: true,
            upstream_time: Duration::ZERO,
            attempts: Attempts::default(),
        }
    }
}

/// The outcome of claiming a generation across instances.
enum Claim {
    /// This request generates; the guard releases the claim.
    Held(HeldClaim),
    /// Another instance generated it meanwhile.
    Cached(Box<Produced>),
}

/// What single-flight hands every waiting request.
pub(crate) type Shared = Result<Arc<Produced>>;

/// One validated request on its way through the cache.
struct Job<'a> {
    call: Call<'a>,
    request: &'a ValidatedRequest,
    references: &'a [ReferenceImage],
    mask: Option<&'a ReferenceImage>,
    key: &'a str,
    price: Option<super::metering::Price>,
    /// The database, unless the cache is off for this request.
    records: Option<&'a Database>,
}

/// The model variant that made a stored result: the fallback it names, else the request's.
fn maker(request: &ValidatedRequest, result: &CachedResult) -> Arc<ModelSpec> {
    let fallback = result.fallback_model.as_deref().and_then(|id| {
        request
            .fallbacks
            .iter()
            .find(|f| f.model.id == id)
            .map(|f| f.model.clone())
    });
    fallback.unwrap_or_else(|| request.model.clone())
}

/// The uploaded files of one tenant, as reference images.
struct TenantFiles<'a> {
    service: &'a Service,
    tenant: &'a str,
}

#[async_trait]
impl FileSource for TenantFiles<'_> {
    async fn file(&self, id: &str) -> Result<Option<ReferenceImage>> {
        let content = self.service.file_content(self.tenant, id).await?;
        Ok(content.map(|(bytes, mime)| ReferenceImage {
            bytes,
            mime: mime.to_owned(),
        }))
    }

    async fn stored(&self, url: &str) -> Result<Option<ReferenceImage>> {
        self.service.stored_image_at(url).await
    }
}

impl Service {
    /// Serves `request` for `call`: from the cache when an identical request of the same
    /// tenant was made (no upstream call, no charge), else generated, charged, stored and
    /// cached. Needs an image store; the cache needs the records database too.
    pub async fn serve(&self, call: Call<'_>, request: ImageRequest) -> Result<Served> {
        if let Some(name) = call.name {
            super::db::check_name(name)?;
        }
        let mut request = self.gateway.validate(request)?;
        let price = call.meter.map(|m| m.price(&mut request)).transpose()?;
        let files = self.files(call.tenant);
        let references = self
            .gateway
            .fetch_references(&request, Some(&files))
            .await?;
        let mask = self.gateway.fetch_mask(&request, Some(&files)).await?;
        let key = cache_key(call.tenant, &request, &references, mask.as_ref());
        let job = Job {
            call,
            request: &request,
            references: &references,
            mask: mask.as_ref(),
            key: &key,
            price,
            records: Some(&self.db).filter(|_| call.cache != CacheMode::Off),
        };
        let (produced, status) = match self.lookup(&job).await? {
            Some(hit) => {
                telemetry::cache_lookup("hit");
                (hit, CacheStatus::Hit)
            }
            None if call.cache == CacheMode::Use => {
                let (shared, led) = self
                    .flights
                    .run(&key, || self.generate_and_store(&job))
                    .await;
                telemetry::cache_lookup(if led { "miss" } else { "coalesced" });
                let produced = shared?;
                // A request that waited on another (here or on another instance) is a hit.
                let status = if led && !produced.from_cache {
                    CacheStatus::Miss
                } else {
                    CacheStatus::Hit
                };
                (produced, status)
            }
            None => {
                telemetry::cache_lookup("bypass");
                (self.generate_and_store(&job).await?, CacheStatus::Miss)
            }
        };
        let validated = &request;

        // Only the request that ran the generation was charged; a hit costs nothing.
        let (credits_used, balance) = match (status, produced.charged, &call.meter) {
            (CacheStatus::Miss, Some(charged), _) => (Some(charged.used), Some(charged.balance)),
            (_, _, Some(meter)) => (Some(0), Some(meter.db.balance(&meter.key.id).await?)),
            _ => (None, None),
        };
        let images = stored_images(&produced);
        if let (Some(name), Some(first)) = (call.name, images.first()) {
            let named = NamedImage {
                image_key: first.key.clone(),
                model: validated.model.id.clone(),
                upstream_model: validated.model.upstream.clone(),
                updated_at: crate::clock::now_secs(),
            };
            self.db.name_image(call.tenant, name, &named).await?;
        }
        let attempts = match status {
            CacheStatus::Miss => produced.attempts.clone(),
            _ => Attempts::default(),
        };
        let model = maker(validated, &produced.result);
        Ok(Served {
            images,
            cache: status,
            model,
            attempts,
            balance,
            credits_used,
            upstream_time: produced.upstream_time,
            request,
            produced,
        })
    }

    /// `request` answered again with the images an earlier request stored (`result`), as a
    /// hit: no upstream call, no charge (see `idempotency`).
    pub(super) async fn served_again(
        &self,
        call: Call<'_>,
        request: ValidatedRequest,
        result: CachedResult,
    ) -> Result<Served> {
        let bytes = self.load(&result).await?.ok_or_else(|| {
            Error::Internal("an image of a remembered answer is gone from the store".into())
        })?;
        let produced = Arc::new(Produced::cached(result, bytes));
        let (credits_used, balance) = match &call.meter {
            Some(meter) => (Some(0), Some(meter.db.balance(&meter.key.id).await?)),
            None => (None, None),
        };
        Ok(Served {
            images: stored_images(&produced),
            cache: CacheStatus::Hit,
            model: maker(&request, &produced.result),
            attempts: Attempts::default(),
            balance,
            credits_used,
            upstream_time: Duration::ZERO,
            request,
            produced,
        })
    }

    /// The OpenAI-shaped answer to a served request, in its `response_format` (`usage` only
    /// when it was generated for this request). Built on demand: the URL API needs none.
    pub fn response(&self, served: &Served) -> ImageResponse {
        let produced = &served.produced;
        let data = produced
            .result
            .images
            .iter()
            .zip(&produced.bytes)
            .map(|(image, bytes)| self.image_data(served.request.response_format, image, bytes))
            .collect();
        let meta = produced.result.meta.clone().or_asked(&served.request);
        let mut response = ImageResponse::new(data, meta, served.usage().cloned());
        response.credits_used = served.credits_used;
        response.model = Some(served.model.id.clone());
        response
    }

    /// The OpenAI answer for a stored result (a task's) in `format`: freshly signed URLs, or
    /// the bytes from the store.
    pub async fn stored_response(
        &self,
        result: &CachedResult,
        format: crate::ResponseFormat,
        usage: Option<Usage>,
    ) -> Result<ImageResponse> {
        let mut data = Vec::with_capacity(result.images.len());
        for image in &result.images {
            let bytes = match format {
                crate::ResponseFormat::Url => Bytes::new(),
                crate::ResponseFormat::B64Json => {
                    let (bytes, _) = self.store.get(&image.key).await?.ok_or_else(|| {
                        Error::Internal(format!("stored image {} is gone", image.key))
                    })?;
                    bytes
                }
            };
            data.push(self.image_data(format, image, &bytes));
        }
        Ok(ImageResponse::new(data, result.meta.clone(), usage))
    }

    /// One stored image in `format`: its bytes inline, or its URL.
    fn image_data(
        &self,
        format: crate::ResponseFormat,
        image: &CachedImage,
        bytes: &[u8],
    ) -> ImageData {
        let revised_prompt = image.revised_prompt.clone();
        match format {
            crate::ResponseFormat::B64Json => ImageData::inline(bytes, revised_prompt),
            crate::ResponseFormat::Url => {
                ImageData::link(self.image_url(&image.key), revised_prompt)
            }
        }
    }

    /// The cached result of `job`, when the cache is used and has all its images.
    async fn lookup(&self, job: &Job<'_>) -> Result<Option<Arc<Produced>>> {
        let (CacheMode::Use, Some(records)) = (job.call.cache, job.records) else {
            return Ok(None);
        };
        Ok(self
            .cached_result(records, job.call.tenant, job.key)
            .await?
            .map(Arc::new))
    }

    /// Generates `job` (once across instances, see [`Service::claim`]), charges the images
    /// returned, stores them and records the cache entry.
    async fn generate_and_store(&self, job: &Job<'_>) -> Shared {
        let (call, key) = (&job.call, job.key);
        let mut claim = match job.records.filter(|_| call.cache == CacheMode::Use) {
            Some(records) => match self
                .claim(records, call.tenant, key, &job.request.model)
                .await?
            {
                Claim::Held(guard) => Some(guard),
                Claim::Cached(produced) => return Ok(Arc::new(*produced)),
            },
            None => None,
        };
        let work = async {
            let start = std::time::Instant::now();
            let (generation, attempts) = self
                .gateway
                .generate_images(
                    job.request,
                    job.references,
                    job.mask,
                    Sinks {
                        partials: job.call.partials,
                        jobs: job.call.jobs,
                        resume: job.call.resume,
                    },
                )
                .await?;
            let upstream_time = start.elapsed();
            let served = job.request.candidate(attempts.served);
            let mut result = CachedResult {
                images: Vec::with_capacity(generation.images.len()),
                meta: generation.meta,
                fallback_model: (attempts.served > 0).then(|| served.model.id.clone()),
            };
            let mut bytes = Vec::with_capacity(generation.images.len());
            let store = tracing::info_span!(
                "store_images",
                imgproxy.images = generation.images.len() as i64,
                imgproxy.store = self.store.kind(),
            );
            for image in generation.images {
                let put = self.store.put(image.bytes.clone(), &image.mime);
                let key = put.instrument(store.clone()).await?;
                result.images.push(CachedImage {
                    key,
                    mime: image.mime,
                    revised_prompt: image.revised_prompt,
                });
                bytes.push(image.bytes);
            }
            drop(store);
            Ok(Produced {
                result,
                bytes,
                usage: generation.usage,
                charged: None,
                from_cache: false,
                upstream_time,
                attempts,
            })
        };
        let produced = match (&call.meter, job.price.clone()) {
            (Some(meter), Some(price)) => {
                meter
                    .charge(price, work)
                    .await
                    .map(|(mut produced, charged)| {
                        produced.charged = Some(charged);
                        produced
                    })
            }
            _ => work.await,
        };
        // Only once it is paid for: a refunded generation must not become a free hit. The
        // claim is released with the entry, in one write; after a failure, on its own.
        if let (Ok(produced), Some(records)) = (&produced, job.records) {
            let owner = claim.as_ref().and_then(HeldClaim::holder);
            // The images are made and stored: a cache entry that cannot be written costs a
            // later hit, not this answer.
            match records
                .cache_and_release(
                    call.tenant,
                    key,
                    &job.request.model.id,
                    &produced.result,
                    owner,
                )
                .await
            {
                Ok(()) => {
                    if let Some(guard) = &mut claim {
                        guard.disarm();
                    }
                }
                Err(error) => tracing::error!(%error, "recording a cache entry failed"),
            }
        }
        if let Some(guard) = claim {
            guard.release().await;
        }
        produced.map(Arc::new)
    }

    /// The image stored under `name` for `tenant`, with its bytes and MIME type; `None` when
    /// the name is unknown (or its image is gone from the store).
    pub async fn recall(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<Option<(NamedImage, StoredImage)>> {
        let Some(named) = self.db.named_image(tenant, name).await? else {
            return Ok(None);
        };
        let Some((bytes, mime)) = self.store.get(&named.image_key).await? else {
            tracing::warn!(name, key = %named.image_key, "a named image is missing from the store");
            return Ok(None);
        };
        let image = StoredImage {
            key: named.image_key.clone(),
            mime: mime.to_owned(),
            bytes,
        };
        Ok(Some((named, image)))
    }

    /// Claims the generation of `key` across instances, or waits for the request that holds
    /// it and returns its cached result. A holder on a dead instance (its lease expired) is
    /// replaced at once; any holder, once its claim is older than the model's deadline.
    async fn claim(
        &self,
        records: &Database,
        tenant: &str,
        key: &str,
        model: &ModelSpec,
    ) -> Result<Claim> {
        let owner = claim_owner()?;
        let stale_after = Duration::from_secs(
            model
                .deadline_secs
                .unwrap_or(DEFAULT_DEADLINE_SECS)
                .saturating_add(CLAIM_MARGIN_SECS),
        );
        let poll = CLAIM_POLL + Duration::from_millis(random_below(CLAIM_POLL_JITTER_MS + 1)?);
        loop {
            if records
                .claim_generation(tenant, key, &owner, &self.instance, stale_after)
                .await?
            {
                let guard = HeldClaim::new(records, ClaimKind::Generation, tenant, key, owner);
                // The previous holder may have finished between our look-up and our claim.
                if let Some(produced) = self.cached_result(records, tenant, key).await? {
                    guard.release().await;
                    return Ok(Claim::Cached(Box::new(produced)));
                }
                return Ok(Claim::Held(guard));
            }
            // One read per poll while the claim stands; the holder caches its result before
            // it releases the claim, so a fallen claim leaves a result or a free generation.
            loop {
                tokio::time::sleep(poll).await;
                if records.generation_claimed(tenant, key, stale_after).await? {
                    continue;
                }
                if let Some(produced) = self.cached_result(records, tenant, key).await? {
                    return Ok(Claim::Cached(Box::new(produced)));
                }
                break;
            }
        }
    }

    async fn cached_result(
        &self,
        records: &Database,
        tenant: &str,
        key: &str,
    ) -> Result<Option<Produced>> {
        let Some(result) = records.cached(tenant, key).await? else {
            return Ok(None);
        };
        Ok(self
            .load(&result)
            .await?
            .map(|bytes| Produced::cached(result, bytes)))
    }

    /// The bytes of every image of a cached result, or `None` if any is gone from the store
    /// (then the entry is regenerated).
    async fn load(&self, result: &CachedResult) -> Result<Option<Vec<Bytes>>> {
        let mut all = Vec::with_capacity(result.images.len());
        for image in &result.images {
            match self.store.get(&image.key).await? {
                Some((bytes, _)) => all.push(bytes),
                None => return Ok(None),
            }
        }
        Ok(Some(all))
    }

    /// The uploaded files of `tenant`, as reference images.
    fn files<'a>(&'a self, tenant: &'a str) -> TenantFiles<'a> {
        TenantFiles {
            service: self,
            tenant,
        }
    }
}

/// The stored images of a generation, with their bytes.
fn stored_images(produced: &Produced) -> Vec<StoredImage> {
    produced
        .result
        .images
        .iter()
        .zip(&produced.bytes)
        .map(|(image, bytes)| StoredImage {
            key: image.key.clone(),
            mime: image.mime.clone(),
            bytes: bytes.clone(),
        })
        .collect()
}

/// What a [`HeldClaim`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ClaimKind {
    /// The right to generate a cache key's images (see `claim_generation`).
    Generation,
    /// The first request with an `Idempotency-Key` (see `claim_idempotency_key`).
    IdempotencyKey,
}

/// A held claim of a tenant's key; released when its work ends, or in the background if it is
/// dropped first (else other requests wait until it goes stale).
#[derive(Debug)]
pub(super) struct HeldClaim {
    db: Database,
    kind: ClaimKind,
    tenant: String,
    key: String,
    /// `None` once released or taken over.
    holder: Option<String>,
}

impl HeldClaim {
    pub(super) fn new(
        db: &Database,
        kind: ClaimKind,
        tenant: &str,
        key: &str,
        holder: String,
    ) -> Self {
        Self {
            db: db.clone(),
            kind,
            tenant: tenant.to_owned(),
            key: key.to_owned(),
            holder: Some(holder),
        }
    }

    /// Who holds the claim, until it is released or taken over.
    pub(super) fn holder(&self) -> Option<&str> {
        self.holder.as_deref()
    }

    /// Forgets the claim: it was released by other means (with the cache entry).
    pub(super) fn disarm(&mut self) {
        self.holder = None;
    }

    /// Takes the claim over: its holder (`None` if it was taken before), database, tenant and
    /// key. Dropping the emptied guard releases nothing.
    pub(super) fn take(&mut self) -> (Option<String>, Database, String, String) {
        (
            self.holder.take(),
            self.db.clone(),
            std::mem::take(&mut self.tenant),
            std::mem::take(&mut self.key),
        )
    }

    pub(super) async fn release(mut self) {
        if let (Some(holder), db, tenant, key) = self.take() {
            release(self.kind, &db, &tenant, &key, &holder).await;
        }
    }
}

impl Drop for HeldClaim {
    fn drop(&mut self) {
        let kind = self.kind;
        if let (Some(holder), db, tenant, key) = self.take() {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move { release(kind, &db, &tenant, &key, &holder).await });
            }
        }
    }
}

async fn release(kind: ClaimKind, db: &Database, tenant: &str, key: &str, holder: &str) {
    let released = match kind {
        ClaimKind::Generation => db.release_generation(tenant, key, holder).await,
        ClaimKind::IdempotencyKey => db.release_idempotency_key(tenant, key, holder).await,
    };
    if let Err(error) = released {
        // Not lost: a generation claim goes stale after the model's deadline, or falls with
        // this instance's lease; an idempotency key, once its attempt counts as abandoned.
        match kind {
            ClaimKind::Generation => tracing::warn!(%error, "releasing a generation claim failed"),
            ClaimKind::IdempotencyKey => {
                tracing::warn!(%error, "freeing an unused idempotency key failed")
            }
        }
    }
}

/// A random claim owner id.
pub(super) fn claim_owner() -> Result<String> {
    let mut bytes = [0_u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| Error::Internal(format!("random source: {e}")))?;
    Ok(hex::encode(bytes))
}

/// A random number below `bound` (which is small: the modulo bias does not matter).
pub(super) fn random_below(bound: u64) -> Result<u64> {
    let mut bytes = [0_u8; 8];
    getrandom::fill(&mut bytes).map_err(|e| Error::Internal(format!("random source: {e}")))?;
    Ok(u64::from_le_bytes(bytes) % bound.max(1))
}
