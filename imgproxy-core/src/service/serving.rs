//! The whole path of a served request: validate, price, fetch references, answer from the
//! cache, or generate once for every identical request in flight (single-flight, within this
//! process and across instances on one database), charge, store every image, record the cache
//! entry and the name, and answer in OpenAI's shape. Named-image recall lives here too.
//! [`Gateway::generate`] is the bare path without any of it.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;

use crate::{
    accounts::{Accounts, CachedImage, CachedResult, NamedImage},
    cache::{cache_key, CacheMode, CacheStatus},
    metering::Meter,
    Error, Gateway, ImageRequest, ImageResponse, ModelSpec, ReferenceImage, Result, Usage,
    ValidatedRequest,
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

/// A served request. [`Gateway::response`] gives its OpenAI-shaped answer.
#[derive(Debug, Clone)]
pub struct Served {
    /// The images, as stored.
    pub images: Vec<StoredImage>,
    /// Whether it came from the cache.
    pub cache: CacheStatus,
    /// The model variant that served it.
    pub model: Arc<ModelSpec>,
    /// The paying key's balance afterwards, for metered callers.
    pub balance: Option<i64>,
    /// Credits this request cost, for metered callers (0 for a hit).
    pub credits_used: Option<u64>,
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

/// How often a request waiting on another instance's identical generation looks for it.
const CLAIM_POLL: Duration = Duration::from_millis(150);
/// Upstream deadline assumed for models that set none (the provider timeout's default).
const DEFAULT_DEADLINE_SECS: u64 = 300;
/// How long past its model's deadline a claim is honoured before another instance takes it.
const CLAIM_MARGIN_SECS: u64 = 60;

/// A generation as every request waiting on it shares it.
#[derive(Debug)]
pub(crate) struct Produced {
    result: CachedResult,
    bytes: Vec<Bytes>,
    usage: Option<Usage>,
    /// Credits kept and the balance, when the request that ran it was metered.
    charged: Option<crate::metering::Charged>,
    /// Read from the cache (another instance generated it while this one waited).
    from_cache: bool,
}

impl Produced {
    fn cached(result: CachedResult, bytes: Vec<Bytes>) -> Self {
        Self {
            result,
            bytes,
            usage: None,
            charged: None,
            from_cache: true,
        }
    }
}

/// The outcome of claiming a generation across instances.
enum Claim {
    /// This request generates; the guard releases the claim.
    Held(ClaimGuard),
    /// Another instance generated it meanwhile.
    Cached(Produced),
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
    price: Option<crate::metering::Price>,
    store: &'a crate::ImageStore,
    /// The records database, unless the cache is off for this request.
    records: Option<&'a Accounts>,
}

impl Gateway {
    /// Serves `request` for `call`: from the cache when an identical request of the same
    /// tenant was made (no upstream call, no charge), else generated, charged, stored and
    /// cached. Needs an image store; the cache needs the records database too.
    pub async fn serve(&self, call: Call<'_>, request: ImageRequest) -> Result<Served> {
        let Some(store) = self.store() else {
            return Err(Error::Internal("serving needs an image store".into()));
        };
        if let Some(name) = call.name {
            crate::accounts::check_name(name)?;
        }
        let request = self.validate(request)?;
        let price = call.meter.map(|m| m.price(&request)).transpose()?;
        let references = self.fetch_references_for(&request, call.tenant).await?;
        let mask = self.fetch_mask(&request, call.tenant).await?;
        let key = cache_key(call.tenant, &request, &references, mask.as_ref());
        let job = Job {
            call,
            request: &request,
            references: &references,
            mask: mask.as_ref(),
            key: &key,
            price,
            store,
            records: self.records().filter(|_| call.cache != CacheMode::Off),
        };
        let (produced, status) = match self.lookup(&job).await? {
            Some(hit) => (hit, CacheStatus::Hit),
            None if call.cache == CacheMode::Use => {
                let (shared, led) = self.flights.run(&key, || self.produce(&job)).await;
                let produced = shared?;
                // A request that waited on another (here or on another instance) is a hit.
                let status = if led && !produced.from_cache {
                    CacheStatus::Miss
                } else {
                    CacheStatus::Hit
                };
                (produced, status)
            }
            None => (self.produce(&job).await?, CacheStatus::Miss),
        };
        let validated = &request;

        // Only the request that ran the generation was charged; a hit costs nothing.
        let (credits_used, balance) = match (status, produced.charged, &call.meter) {
            (CacheStatus::Miss, Some(charged), _) => (Some(charged.used), Some(charged.balance)),
            (_, _, Some(meter)) => (Some(0), Some(meter.accounts.balance(&meter.key.id).await?)),
            _ => (None, None),
        };
        let images: Vec<StoredImage> = produced
            .result
            .images
            .iter()
            .zip(&produced.bytes)
            .map(|(image, bytes)| StoredImage {
                key: image.key.clone(),
                mime: image.mime.clone(),
                bytes: bytes.clone(),
            })
            .collect();
        if let (Some(name), Some(records), Some(first)) =
            (call.name, self.records(), images.first())
        {
            let named = NamedImage {
                image_key: first.key.clone(),
                model: validated.model.id.clone(),
                upstream_model: validated.model.upstream.clone(),
                updated_at: crate::accounts::now_secs(),
            };
            records.name_image(call.tenant, name, &named).await?;
        }
        Ok(Served {
            images,
            cache: status,
            model: validated.model.clone(),
            balance,
            credits_used,
            request,
            produced,
        })
    }

    /// The OpenAI-shaped answer to a served request, in its `response_format` (`usage` only
    /// when it was generated for this request). Built on demand: the URL API needs none.
    pub fn response(&self, served: &Served) -> ImageResponse {
        let produced = &served.produced;
        let usage = (served.cache == CacheStatus::Miss)
            .then(|| produced.usage.clone())
            .flatten();
        let mut response =
            self.response_of(&served.request, &produced.result, &produced.bytes, usage);
        response.credits_used = served.credits_used;
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
            let (b64_json, url) = match format {
                crate::ResponseFormat::Url => (None, self.image_url(&image.key)),
                crate::ResponseFormat::B64Json => {
                    use base64::Engine as _;
                    let store = self
                        .store()
                        .ok_or_else(|| Error::Internal("no image store".into()))?;
                    let (bytes, _) = store.get(&image.key).await?.ok_or_else(|| {
                        Error::Internal(format!("stored image {} is gone", image.key))
                    })?;
                    (
                        Some(base64::engine::general_purpose::STANDARD.encode(&bytes)),
                        None,
                    )
                }
            };
            data.push(crate::ImageData {
                b64_json,
                url,
                revised_prompt: image.revised_prompt.clone(),
            });
        }
        Ok(ImageResponse {
            created: crate::accounts::now_secs(),
            data,
            background: result.meta.background.clone(),
            output_format: result.meta.output_format.clone(),
            quality: result.meta.quality.clone(),
            size: result.meta.size.clone(),
            usage,
            credits_used: None,
        })
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

    /// Generates `job` (once across instances, see [`Gateway::claim`]), charges the images
    /// returned, stores them and records the cache entry.
    async fn produce(&self, job: &Job<'_>) -> Shared {
        let (call, key) = (&job.call, job.key);
        let claim = match job.records.filter(|_| call.cache == CacheMode::Use) {
            Some(records) => match self
                .claim(records, call.tenant, key, &job.request.model)
                .await?
            {
                Claim::Held(guard) => Some(guard),
                Claim::Cached(produced) => return Ok(Arc::new(produced)),
            },
            None => None,
        };
        let work = async {
            let generation = self
                .run(
                    job.request,
                    job.references,
                    job.mask,
                    crate::gateway::Sinks {
                        partials: job.call.partials,
                        jobs: job.call.jobs,
                        resume: job.call.resume,
                    },
                )
                .await?;
            let mut result = CachedResult {
                images: Vec::with_capacity(generation.images.len()),
                meta: generation.meta,
            };
            let mut bytes = Vec::with_capacity(generation.images.len());
            for image in generation.images {
                let image = deliverable(job.request, image).await?;
                let key = job.store.put(image.bytes.clone(), &image.mime).await?;
                result.images.push(CachedImage {
                    key,
                    mime: image.mime,
                    revised_prompt: image.revised_prompt,
                });
                bytes.push(image.bytes);
            }
            if let (Some(first), Some(bytes)) = (result.images.first(), bytes.first()) {
                result.meta.report_actual(&first.mime, bytes);
            }
            Ok(Produced {
                result,
                bytes,
                usage: generation.usage,
                charged: None,
                from_cache: false,
            })
        };
        let produced = match (&call.meter, job.price.clone()) {
            (Some(meter), Some(price)) => meter
                .charge(price, work, |p: &Produced| p.bytes.len())
                .await
                .map(|(mut produced, charged)| {
                    produced.charged = Some(charged);
                    produced
                }),
            _ => work.await,
        };
        // Only once it is paid for: a refunded generation must not become a free hit.
        if let (Ok(produced), Some(records)) = (&produced, job.records) {
            // The images are made and stored: a cache entry that cannot be written costs a
            // later hit, not this answer.
            if let Err(error) = records
                .cache(call.tenant, key, &job.request.model.id, &produced.result)
                .await
            {
                tracing::error!(%error, "recording a cache entry failed");
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
        let (Some(records), Some(store)) = (self.records(), self.store()) else {
            return Ok(None);
        };
        let Some(named) = records.named_image(tenant, name).await? else {
            return Ok(None);
        };
        let Some((bytes, mime)) = store.get(&named.image_key).await? else {
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

    /// Claims the generation of `key` across instances, or waits for the instance that holds
    /// it and returns its cached result. A holder that died is replaced once its claim is
    /// older than the model's deadline.
    async fn claim(
        &self,
        records: &Accounts,
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
        loop {
            if records
                .claim_generation(tenant, key, &owner, stale_after)
                .await?
            {
                let guard = ClaimGuard {
                    records: records.clone(),
                    tenant: tenant.to_owned(),
                    key: key.to_owned(),
                    owner: Some(owner),
                };
                // The previous holder may have finished between our look-up and our claim.
                if let Some(produced) = self.cached_result(records, tenant, key).await? {
                    guard.release().await;
                    return Ok(Claim::Cached(produced));
                }
                return Ok(Claim::Held(guard));
            }
            tokio::time::sleep(CLAIM_POLL).await;
            if let Some(produced) = self.cached_result(records, tenant, key).await? {
                return Ok(Claim::Cached(produced));
            }
        }
    }

    async fn cached_result(
        &self,
        records: &Accounts,
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
        let Some(store) = self.store() else {
            return Ok(None);
        };
        let mut all = Vec::with_capacity(result.images.len());
        for image in &result.images {
            match store.get(&image.key).await? {
                Some((bytes, _)) => all.push(bytes),
                None => return Ok(None),
            }
        }
        Ok(Some(all))
    }

    /// Resolves the request's reference images: uploaded file ids of `tenant` from the store,
    /// URLs and data URLs through the guarded fetcher.
    pub async fn fetch_references_for(
        &self,
        request: &ValidatedRequest,
        tenant: &str,
    ) -> Result<Vec<ReferenceImage>> {
        futures_util::future::try_join_all(request.reference_images.iter().map(|input| async {
            match crate::fetch::file_id_of(input) {
                Some(id) => self.file_reference(tenant, id).await,
                None => self.fetch_reference(input).await,
            }
        }))
        .await
    }

    /// Resolves the request's mask like a reference image; refusals name `mask`.
    pub async fn fetch_mask(
        &self,
        request: &ValidatedRequest,
        tenant: &str,
    ) -> Result<Option<ReferenceImage>> {
        let Some(input) = &request.mask else {
            return Ok(None);
        };
        let fetched = match crate::fetch::file_id_of(input) {
            Some(id) => self.file_reference(tenant, id).await,
            None => self.fetch_reference(input).await,
        };
        fetched.map(Some).map_err(|error| match error {
            Error::InvalidRequest { message, code, .. } => Error::InvalidRequest {
                message: message.replace("reference image", "mask"),
                param: Some("mask".into()),
                code,
            },
            other => other,
        })
    }

    async fn file_reference(&self, tenant: &str, id: &str) -> Result<ReferenceImage> {
        let unknown = || Error::invalid_param("image", format!("no file `{id}`"));
        let (Some(records), Some(store)) = (self.records(), self.store()) else {
            return Err(unknown());
        };
        let file = records.file(tenant, id).await?.ok_or_else(unknown)?;
        let (bytes, mime) = store.get(&file.image_key).await?.ok_or_else(unknown)?;
        Ok(ReferenceImage {
            bytes,
            mime: mime.to_owned(),
        })
    }
}

/// A held generation claim; released when the generation ends, or in the background if the
/// request is dropped first (else other instances wait until it goes stale).
struct ClaimGuard {
    records: Accounts,
    tenant: String,
    key: String,
    owner: Option<String>,
}

impl ClaimGuard {
    async fn release(mut self) {
        if let Some(owner) = self.owner.take() {
            release(&self.records, &self.tenant, &self.key, &owner).await;
        }
    }
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        let Some(owner) = self.owner.take() else {
            return;
        };
        let (records, tenant, key) = (
            self.records.clone(),
            std::mem::take(&mut self.tenant),
            std::mem::take(&mut self.key),
        );
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { release(&records, &tenant, &key, &owner).await });
        }
    }
}

async fn release(records: &Accounts, tenant: &str, key: &str, owner: &str) {
    if let Err(error) = records.release_generation(tenant, key, owner).await {
        // Not lost: the claim goes stale after the model's deadline.
        tracing::warn!(%error, "releasing a generation claim failed");
    }
}

/// A random claim owner id.
fn claim_owner() -> Result<String> {
    let mut bytes = [0_u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| Error::Internal(format!("random source: {e}")))?;
    Ok(hex::encode(bytes))
}

/// `image` as the request wants it: converted to its raster `output_format` when the upstream
/// answered in another (SVG and GIF are left as they are: they cannot be converted).
pub(crate) async fn deliverable(
    request: &ValidatedRequest,
    image: crate::GeneratedImage,
) -> Result<crate::GeneratedImage> {
    let Some(target) = request.wanted_format() else {
        return Ok(image);
    };
    let convertible = matches!(
        image.mime.as_str(),
        "image/png" | "image/jpeg" | "image/webp"
    );
    if image.mime == target.mime() || !convertible {
        return Ok(image);
    }
    let (source, mime) = (image.bytes.clone(), image.mime.clone());
    let quality = request.wanted_compression();
    let converted = tokio::task::spawn_blocking(move || {
        crate::convert::convert(&source, &mime, target, quality, "output_format")
    })
    .await
    .map_err(|e| Error::Internal(format!("image conversion task: {e}")))?
    // Bytes the upstream sent that do not decode are the upstream's fault.
    .map_err(|error| Error::Upstream {
        provider: request.model.provider.clone(),
        message: format!("its image could not be converted: {error}"),
    })?;
    Ok(crate::GeneratedImage {
        bytes: converted,
        mime: target.mime().to_owned(),
        ..image
    })
}
