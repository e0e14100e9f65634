//! The whole path of a served request: validate, price, fetch references, answer from the
//! cache, or generate once for every identical request in flight (single-flight), charge,
//! store every image, record the cache entry and the name, and answer in OpenAI's shape.
//! Named-image recall lives here too. [`Gateway::generate`] is the bare path without any of it.

use std::sync::Arc;

use bytes::Bytes;

use crate::{
    accounts::{CachedImage, CachedResult, NamedImage},
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
}

/// A served request.
#[derive(Debug, Clone)]
pub struct Served {
    /// The OpenAI-shaped answer (`credits_used` set for metered callers).
    pub response: ImageResponse,
    /// The images, as stored.
    pub images: Vec<StoredImage>,
    /// Whether it came from the cache.
    pub cache: CacheStatus,
    /// The model variant that served it.
    pub model: Arc<ModelSpec>,
    /// The paying key's balance afterwards, for metered callers.
    pub balance: Option<i64>,
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

/// A generation as every request waiting on it shares it.
#[derive(Debug)]
pub(crate) struct Produced {
    result: CachedResult,
    bytes: Vec<Bytes>,
    usage: Option<Usage>,
    /// Credits kept and the balance, when the request that ran it was metered.
    charged: Option<crate::metering::Charged>,
}

/// What single-flight hands every waiting request.
pub(crate) type Shared = Result<Arc<Produced>>;

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
        let validated = self.validate(request)?;
        let price = call.meter.map(|m| m.price(&validated)).transpose()?;
        let references = self.fetch_references_for(&validated, call.tenant).await?;
        let records = self.records().filter(|_| call.cache != CacheMode::Off);
        let key = cache_key(call.tenant, &validated, &references);
        let (validated, references, key) = (&validated, &references, key.as_str());

        let mut status = CacheStatus::Miss;
        let mut produced = None;
        if let (CacheMode::Use, Some(records)) = (call.cache, records) {
            if let Some(result) = records.cached(call.tenant, key).await? {
                produced = self.load(&result).await?.map(|bytes| {
                    Arc::new(Produced {
                        result,
                        bytes,
                        usage: None,
                        charged: None,
                    })
                });
                if produced.is_some() {
                    status = CacheStatus::Hit;
                }
            }
        }
        let produced = match produced {
            Some(hit) => hit,
            None => {
                let generate = || async move {
                    let work = async {
                        let generation = self.run(validated, references).await?;
                        let mut result = CachedResult {
                            images: Vec::with_capacity(generation.images.len()),
                            background: generation.meta.background,
                            output_format: generation.meta.output_format,
                            quality: generation.meta.quality,
                            size: generation.meta.size,
                        };
                        let mut bytes = Vec::with_capacity(generation.images.len());
                        for image in generation.images {
                            let key = store.put(image.bytes.clone(), &image.mime).await?;
                            result.images.push(CachedImage {
                                key,
                                mime: image.mime,
                                revised_prompt: image.revised_prompt,
                            });
                            bytes.push(image.bytes);
                        }
                        if let Some(records) = records {
                            records
                                .cache(call.tenant, key, &validated.model.id, &result)
                                .await?;
                        }
                        Ok(Produced {
                            result,
                            bytes,
                            usage: generation.usage,
                            charged: None,
                        })
                    };
                    let produced = match (&call.meter, price.clone()) {
                        (Some(meter), Some(price)) => meter
                            .charge(price, work, |p: &Produced| p.bytes.len())
                            .await
                            .map(|(mut produced, charged)| {
                                produced.charged = Some(charged);
                                produced
                            }),
                        _ => work.await,
                    };
                    produced.map(Arc::new)
                };
                if call.cache == CacheMode::Use {
                    let (shared, led) = self.flights.run(key, generate).await;
                    if !led {
                        status = CacheStatus::Hit;
                    }
                    shared?
                } else {
                    generate().await?
                }
            }
        };

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
        let mut response = self.response_of(
            validated,
            &produced.result,
            &produced.bytes,
            if status == CacheStatus::Miss {
                produced.usage.clone()
            } else {
                None
            },
        );
        response.credits_used = credits_used;
        Ok(Served {
            response,
            images,
            cache: status,
            model: validated.model.clone(),
            balance,
        })
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
