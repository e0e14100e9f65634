//! The gateway: a catalog plus providers (plus optionally an image store, a URL signer and
//! the records database). `generate` validates, routes to the model's provider, fans `n` out
//! over several upstream calls where the model makes fewer images per call, and answers in
//! OpenAI's response shape; `serving` adds the cache, metering and names on top.

use std::{collections::HashMap, sync::Arc, time::Duration};

use base64::Engine as _;
use bytes::Bytes;
use futures_util::{stream, StreamExt as _};
use tokio::sync::Semaphore;

use crate::{
    accounts::{Accounts, CachedResult},
    cache::SingleFlight,
    fetch::{FetchPolicy, ReferenceFetcher},
    provider::{ImageMeta, JobSender, PartialSender, ReferenceImage},
    serving::Shared,
    signing::UrlSigner,
    validate, Catalog, Error, Generation, ImageData, ImageInput, ImageProvider, ImageRequest,
    ImageResponse, ImageStore, ModelSpec, ProviderRequest, ResponseFormat, Result, Usage,
    ValidatedRequest,
};

/// The path under which stored images are served and signed: `{url_prefix}` ends with it.
pub const IMAGE_PATH: &str = "/images/";

/// Where a run's upstream calls report as they go (partial images, started upstream jobs),
/// and the jobs of an earlier run to resume instead of starting new ones.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sinks<'a> {
    /// Partial images, when the client streams.
    pub partials: Option<&'a PartialSender>,
    /// Upstream job tokens, when a task records them.
    pub jobs: Option<&'a JobSender>,
    /// Jobs to resume, by the `first_index` of their call.
    pub resume: Option<&'a std::collections::BTreeMap<u32, String>>,
}

/// Upstream calls one request may run at once when it fans `n` out.
const DEFAULT_FAN_OUT: usize = 4;

/// Builds a [`Gateway`].
#[derive(Debug)]
pub struct GatewayBuilder {
    catalog: Catalog,
    providers: HashMap<String, Arc<dyn ImageProvider>>,
    store: Option<(ImageStore, String)>,
    signer: Option<(UrlSigner, Duration)>,
    records: Option<Accounts>,
    fetcher: Option<ReferenceFetcher>,
    provider_limits: HashMap<String, Arc<Semaphore>>,
    default_model: String,
    fan_out: usize,
}

impl GatewayBuilder {
    /// Signs image URLs with `signer`, each valid for `ttl`: `{url_prefix}{key}?exp=..&sig=..`.
    #[must_use]
    pub fn url_signer(mut self, signer: UrlSigner, ttl: Duration) -> Self {
        self.signer = Some((signer, ttl));
        self
    }

    /// Keeps cache entries, named images and uploaded files in `records`' database.
    #[must_use]
    pub fn records(mut self, records: Accounts) -> Self {
        self.records = Some(records);
        self
    }

    /// Lets at most `max_concurrent` calls to provider `name` run at once across all requests;
    /// further calls wait for a slot (an operator's cap, e.g. an upstream account's limit).
    #[must_use]
    pub fn provider_limit(mut self, name: impl Into<String>, max_concurrent: usize) -> Self {
        self.provider_limits
            .insert(name.into(), Arc::new(Semaphore::new(max_concurrent.max(1))));
        self
    }

    /// Fetches reference images under `fetcher`'s policy (default: [`FetchPolicy::default`]).
    #[must_use]
    pub fn fetcher(mut self, fetcher: ReferenceFetcher) -> Self {
        self.fetcher = Some(fetcher);
        self
    }

    /// Registers a provider under its [`ImageProvider::name`].
    #[must_use]
    pub fn provider(mut self, provider: Arc<dyn ImageProvider>) -> Self {
        self.providers.insert(provider.name().to_owned(), provider);
        self
    }

    /// Enables `response_format=url`: images go to `store` and their URLs are
    /// `{url_prefix}{key}`, where `url_prefix` ends with [`IMAGE_PATH`].
    #[must_use]
    pub fn store(mut self, store: ImageStore, url_prefix: impl Into<String>) -> Self {
        self.store = Some((store, url_prefix.into()));
        self
    }

    /// The model used when a request names none (default `placeholder`).
    #[must_use]
    pub fn default_model(mut self, model: impl Into<String>) -> Self {
        self.default_model = model.into();
        self
    }

    /// How many upstream calls of one request may run at once (default 4).
    #[must_use]
    pub fn fan_out_concurrency(mut self, limit: usize) -> Self {
        self.fan_out = limit.max(1);
        self
    }

    /// Builds the gateway.
    pub fn build(self) -> Gateway {
        // Building the default fetcher only fails if no HTTP client can be made at all; the
        // gateway then still serves requests without reference images.
        let fetcher = self.fetcher.or_else(|| {
            ReferenceFetcher::new(FetchPolicy::default())
                .inspect_err(|e| tracing::error!(error = %e, "reference fetching is unavailable"))
                .ok()
        });
        Gateway {
            catalog: Arc::new(self.catalog),
            providers: self.providers,
            store: self.store,
            signer: self.signer,
            records: self.records,
            flights: SingleFlight::default(),
            fetcher,
            provider_limits: self.provider_limits,
            default_model: self.default_model,
            fan_out: self.fan_out,
        }
    }
}

/// Validates, routes and answers image requests. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Gateway {
    catalog: Arc<Catalog>,
    providers: HashMap<String, Arc<dyn ImageProvider>>,
    store: Option<(ImageStore, String)>,
    signer: Option<(UrlSigner, Duration)>,
    records: Option<Accounts>,
    pub(crate) flights: SingleFlight<Shared>,
    fetcher: Option<ReferenceFetcher>,
    provider_limits: HashMap<String, Arc<Semaphore>>,
    default_model: String,
    fan_out: usize,
}

impl Gateway {
    /// Starts building a gateway over `catalog`.
    pub fn builder(catalog: Catalog) -> GatewayBuilder {
        GatewayBuilder {
            catalog,
            providers: HashMap::new(),
            store: None,
            signer: None,
            records: None,
            fetcher: None,
            provider_limits: HashMap::new(),
            default_model: "placeholder".into(),
            fan_out: DEFAULT_FAN_OUT,
        }
    }

    /// The catalog.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The image store, if one is configured.
    pub fn store(&self) -> Option<&ImageStore> {
        self.store.as_ref().map(|(store, _)| store)
    }

    /// The reference-image fetch policy (its `max_bytes` also bounds uploaded images).
    pub fn fetch_policy(&self) -> Option<&FetchPolicy> {
        self.fetcher.as_ref().map(ReferenceFetcher::policy)
    }

    /// The records database (cache entries, names, files), if configured.
    pub fn records(&self) -> Option<&Accounts> {
        self.records.as_ref()
    }

    /// The URL signer and the lifetime of the URLs it signs, if configured.
    pub fn signer(&self) -> Option<&(UrlSigner, Duration)> {
        self.signer.as_ref()
    }

    /// The model requests go to when they name none.
    pub fn default_model(&self) -> &str {
        &self.default_model
    }

    /// Whether a provider for `model` is configured.
    pub fn serves(&self, model: &ModelSpec) -> bool {
        self.providers.contains_key(&model.provider)
    }

    /// The models a configured provider serves, one variant per id (the one requests go to);
    /// retired ones are included so that clients can see their shutdown date.
    pub fn served_models(&self) -> impl Iterator<Item = &Arc<ModelSpec>> {
        let mut seen = std::collections::HashSet::new();
        self.catalog
            .models()
            .filter(move |model| seen.insert(model.id.as_str()))
            .filter_map(|model| {
                self.catalog
                    .variants(&model.id)
                    .into_iter()
                    .find(|v| self.serves(v))
            })
    }

    /// Validates `request` against its model, and checks that the model can be served.
    pub fn validate(&self, request: ImageRequest) -> Result<ValidatedRequest> {
        let validated = validate::validate(&self.catalog, request, &self.default_model, &|m| {
            self.serves(m)
        })?;
        Ok(validated)
    }

    /// Validates and runs `request`, answering in OpenAI's shape.
    pub async fn generate(&self, request: ImageRequest) -> Result<ImageResponse> {
        let validated = self.validate(request)?;
        let references = self.fetch_references(&validated).await?;
        let mask = self.fetch_mask(&validated, "").await?;
        let mut generation = self
            .run(&validated, &references, mask.as_ref(), Sinks::default())
            .await?;
        let mut images = Vec::with_capacity(generation.images.len());
        for image in std::mem::take(&mut generation.images) {
            images.push(crate::serving::deliverable(&validated, image).await?);
        }
        generation.images = images;
        if let Some(first) = generation.images.first() {
            generation.meta.report_actual(&first.mime, &first.bytes);
        }
        self.respond(&validated, generation).await
    }

    /// Fetches and checks the request's reference images, all at once (file ids of the
    /// operator's tenant; see [`Gateway::fetch_references_for`]).
    pub async fn fetch_references(
        &self,
        request: &ValidatedRequest,
    ) -> Result<Vec<ReferenceImage>> {
        self.fetch_references_for(request, "").await
    }

    /// Fetches one reference image given by URL or data URL.
    pub(crate) async fn fetch_reference(&self, input: &ImageInput) -> Result<ReferenceImage> {
        let Some(fetcher) = &self.fetcher else {
            return Err(Error::Internal("reference fetching is unavailable".into()));
        };
        fetcher.fetch(input).await
    }

    /// Runs a validated request: one upstream call per `n_per_call` images, at most
    /// `fan_out` at once, results in order. Returns what succeeded if any call did.
    pub async fn run(
        &self,
        request: &ValidatedRequest,
        references: &[ReferenceImage],
        mask: Option<&ReferenceImage>,
        sinks: Sinks<'_>,
    ) -> Result<Generation> {
        let model = &request.model;
        let provider = self
            .providers
            .get(&model.provider)
            .ok_or_else(|| Error::ModelNotFound {
                message: format!("provider `{}` is not configured", model.provider),
            })?;
        let per_call = model.images_per_call();
        let calls: Vec<ProviderRequest<'_>> = (0..request.n)
            .step_by(per_call as usize)
            .map(|first_index| ProviderRequest {
                references,
                mask,
                partials: sinks.partials,
                jobs: sinks.jobs,
                request,
                n: per_call.min(request.n - first_index),
                first_index,
            })
            .collect();
        // Futures are built eagerly (not in a stream closure) so the result stays `Send`.
        let pending: Vec<_> = calls
            .into_iter()
            .map(|call| {
                call_provider(
                    provider.as_ref(),
                    self.provider_limits.get(&model.provider),
                    call,
                    sinks.resume,
                )
            })
            .collect();
        let results: Vec<_> = stream::iter(pending).buffered(self.fan_out).collect().await;

        let mut total = Generation::default();
        let mut first_error = None;
        for (asked, result) in results {
            match result {
                Ok(mut generation) if !generation.images.is_empty() => {
                    generation.images.truncate(asked as usize);
                    total.images.append(&mut generation.images);
                    if let Some(usage) = generation.usage {
                        total
                            .usage
                            .get_or_insert_with(Usage::default)
                            .accumulate(&usage);
                    }
                    if total.meta == ImageMeta::default() {
                        total.meta = generation.meta;
                    }
                }
                Ok(_) => {
                    first_error.get_or_insert_with(|| Error::Upstream {
                        provider: model.provider.clone(),
                        message: "the upstream returned no image".into(),
                    });
                }
                Err(error) => {
                    let error = error.into_error(&model.provider, &model.id);
                    tracing::warn!(model = %model.id, %error, "upstream call failed");
                    first_error.get_or_insert(error);
                }
            }
        }
        match first_error {
            Some(error) if total.images.is_empty() => Err(error),
            _ => Ok(total),
        }
    }

    /// Turns generated images into the OpenAI response: inline base64 or stored URLs.
    pub async fn respond(
        &self,
        request: &ValidatedRequest,
        generation: Generation,
    ) -> Result<ImageResponse> {
        let mut data = Vec::with_capacity(generation.images.len());
        for image in generation.images {
            let (b64_json, url) = match request.response_format {
                ResponseFormat::B64Json => (
                    Some(base64::engine::general_purpose::STANDARD.encode(&image.bytes)),
                    None,
                ),
                ResponseFormat::Url => {
                    let Some((store, _)) = &self.store else {
                        return Err(Error::invalid_param(
                            "response_format",
                            "response_format `url` needs an image store, and none is configured",
                        ));
                    };
                    let key = store.put(image.bytes, &image.mime).await?;
                    (None, self.image_url(&key))
                }
            };
            data.push(ImageData {
                b64_json,
                url,
                revised_prompt: image.revised_prompt,
            });
        }
        Ok(self.shape(request, data, generation.meta, generation.usage))
    }
}

impl Gateway {
    /// The URL of stored image `key`, signed when a signer is configured; `None` without a
    /// store.
    pub fn image_url(&self, key: &str) -> Option<String> {
        let (_, prefix) = self.store.as_ref()?;
        Some(match &self.signer {
            Some((signer, ttl)) => {
                let expires = crate::accounts::now_secs()
                    .saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX));
                let query = signer.sign(&format!("{IMAGE_PATH}{key}"), &[], expires);
                format!("{prefix}{key}?{query}")
            }
            None => format!("{prefix}{key}"),
        })
    }

    /// The OpenAI response for a stored result, in the request's `response_format`.
    pub(crate) fn response_of(
        &self,
        request: &ValidatedRequest,
        result: &CachedResult,
        bytes: &[Bytes],
        usage: Option<Usage>,
    ) -> ImageResponse {
        let data = result
            .images
            .iter()
            .zip(bytes)
            .map(|(image, bytes)| {
                let (b64_json, url) = match request.response_format {
                    ResponseFormat::B64Json => (
                        Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
                        None,
                    ),
                    ResponseFormat::Url => (None, self.image_url(&image.key)),
                };
                ImageData {
                    b64_json,
                    url,
                    revised_prompt: image.revised_prompt.clone(),
                }
            })
            .collect();
        self.shape(request, data, result.meta.clone(), usage)
    }

    /// The response around `data`: metadata the upstream reported, else what was asked.
    fn shape(
        &self,
        request: &ValidatedRequest,
        data: Vec<ImageData>,
        meta: ImageMeta,
        usage: Option<Usage>,
    ) -> ImageResponse {
        let param = |name: &str| {
            request
                .param_str(name)
                .filter(|v| *v != "auto")
                .map(str::to_owned)
        };
        ImageResponse {
            created: crate::accounts::now_secs(),
            data,
            background: meta.background.or_else(|| param("background")),
            output_format: meta.output_format.or_else(|| param("output_format")),
            quality: meta.quality.or_else(|| param("quality")),
            size: meta.size.or_else(|| param("size")),
            usage,
            credits_used: None,
        }
    }
}

async fn call_provider(
    provider: &dyn ImageProvider,
    limit: Option<&Arc<Semaphore>>,
    call: ProviderRequest<'_>,
    resume: Option<&std::collections::BTreeMap<u32, String>>,
) -> (u32, Result<Generation, crate::ProviderError>) {
    // The semaphore is never closed, so acquiring only waits; an error cannot happen.
    let _slot = match limit {
        Some(semaphore) => semaphore.acquire().await.ok(),
        None => None,
    };
    let result = match resume.map(|jobs| jobs.get(&call.first_index)) {
        None => provider.generate(call).await,
        Some(Some(job)) => provider.resume(call, job).await,
        // Starting it now would make the images twice as fast as they are paid for: no.
        Some(None) => Err(crate::ProviderError::Failed {
            message: "this part of the interrupted task had not started upstream".into(),
        }),
    };
    (call.n, result)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;
    use bytes::Bytes;

    use super::*;
    use crate::{GeneratedImage, ProviderError};

    /// Counts concurrent calls; fails the call whose first index is `fail_at`.
    #[derive(Debug, Default)]
    struct Counting {
        in_flight: AtomicUsize,
        peak: AtomicUsize,
        calls: AtomicUsize,
        fail_at: Option<u32>,
    }

    #[async_trait]
    impl ImageProvider for Counting {
        fn name(&self) -> &str {
            "counting"
        }
        async fn generate(&self, call: ProviderRequest<'_>) -> Result<Generation, ProviderError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.peak.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            if self.fail_at == Some(call.first_index) {
                return Err(ProviderError::Failed {
                    message: "boom".into(),
                });
            }
            let image = GeneratedImage {
                bytes: Bytes::from(call.first_index.to_string()),
                mime: "image/png".into(),
                revised_prompt: None,
            };
            Ok(Generation {
                images: vec![image],
                ..Generation::default()
            })
        }
    }

    fn gateway(provider: Arc<Counting>) -> Gateway {
        let mut catalog = Catalog::embedded().unwrap();
        let mut model = (**catalog.resolve("placeholder", &|_| true).unwrap()).clone();
        model.id = "counted".into();
        model.provider = "counting".into();
        catalog.upsert(model).unwrap();
        Gateway::builder(catalog)
            .provider(provider)
            .fan_out_concurrency(3)
            .build()
    }

    fn request(n: u32) -> ImageRequest {
        let mut request = ImageRequest::new("counted", "p");
        request.n = Some(n);
        request
    }

    #[tokio::test]
    async fn fans_out_one_call_per_image_with_bounded_concurrency_in_order() {
        let provider = Arc::new(Counting::default());
        let response = gateway(provider.clone())
            .generate(request(10))
            .await
            .unwrap();
        assert_eq!(provider.calls.load(Ordering::SeqCst), 10);
        assert!(provider.peak.load(Ordering::SeqCst) <= 3);
        let order: Vec<_> = response
            .data
            .iter()
            .map(|d| {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(d.b64_json.as_ref().unwrap())
                    .unwrap();
                String::from_utf8(bytes).unwrap()
            })
            .collect();
        assert_eq!(order, (0..10).map(|i| i.to_string()).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_provider_limit_caps_calls_across_requests() {
        let provider = Arc::new(Counting::default());
        let mut catalog = Catalog::embedded().unwrap();
        let mut model = (**catalog.resolve("placeholder", &|_| true).unwrap()).clone();
        model.id = "counted".into();
        model.provider = "counting".into();
        catalog.upsert(model).unwrap();
        let gateway = Arc::new(
            Gateway::builder(catalog)
                .provider(provider.clone())
                .provider_limit("counting", 2)
                .build(),
        );
        let requests: Vec<_> = (0..4)
            .map(|_| {
                let gateway = gateway.clone();
                tokio::spawn(async move { gateway.generate(request(3)).await })
            })
            .collect();
        for handle in requests {
            assert_eq!(handle.await.unwrap().unwrap().data.len(), 3);
        }
        assert_eq!(provider.calls.load(Ordering::SeqCst), 12);
        assert_eq!(provider.peak.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn returns_the_images_that_succeeded_and_fails_only_if_none_did() {
        let provider = Arc::new(Counting {
            fail_at: Some(1),
            ..Counting::default()
        });
        let response = gateway(provider).generate(request(3)).await.unwrap();
        assert_eq!(response.data.len(), 2);
        let provider = Arc::new(Counting {
            fail_at: Some(0),
            ..Counting::default()
        });
        let error = gateway(provider).generate(request(1)).await.unwrap_err();
        assert_eq!(error.status(), 502);
    }

    #[tokio::test]
    async fn url_format_without_a_store_is_a_clear_400() {
        let provider = Arc::new(Counting::default());
        let mut req = request(1);
        req.response_format = Some("url".into());
        let error = gateway(provider).generate(req).await.unwrap_err();
        assert_eq!(
            (error.status(), error.param()),
            (400, Some("response_format"))
        );
    }

    #[tokio::test]
    async fn an_unconfigured_provider_is_model_not_found() {
        let gateway = Gateway::builder(Catalog::embedded().unwrap()).build();
        let error = gateway
            .generate(ImageRequest::new("gpt-image-2", "p"))
            .await
            .unwrap_err();
        assert_eq!(error.code(), Some("model_not_found"));
        assert!(
            error
                .to_string()
                .contains("no provider for it is configured (`openai`)"),
            "{error}"
        );
    }
}
