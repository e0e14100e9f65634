//! The gateway: a catalog, providers and the reference fetcher. It validates a request,
//! routes it to its model's provider, fans `n` out over several upstream calls where the model
//! makes fewer images per call, converts the answer to the asked format, and answers in
//! OpenAI's shape with inline images. The service layer (`service`, cargo feature) adds the
//! image store, the cache, metering and names around it.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use async_trait::async_trait;
use futures_util::{stream, StreamExt as _};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{field::Empty, Instrument as _};

use crate::{
    failover::{self, Attempt, Attempts, Breakers, FailoverPolicy, FallbackChains, Next},
    fetch::{FetchPolicy, ReferenceFetcher},
    provider::{ImageMeta, JobSender, PartialSender, ReferenceImage},
    relay::Relay,
    Catalog, Error, Generation, ImageData, ImageInput, ImageProvider, ImageRequest, ImageResponse,
    ModelSpec, ProviderRequest, ResponseFormat, Result, Usage, ValidatedRequest,
};

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

/// What every upstream call of one run shares: the request's reference images and mask, and
/// where the calls report.
#[derive(Debug, Clone, Copy)]
struct RunInputs<'a> {
    references: &'a [ReferenceImage],
    mask: Option<&'a ReferenceImage>,
    sinks: Sinks<'a>,
}

/// Uploaded files a request may name as reference images (`file-...`): the service layer's
/// file records, and its stored images. The kernel alone knows no files.
#[async_trait]
pub trait FileSource: Send + Sync {
    /// The image of file `id`, or `None` if there is no such file.
    async fn file(&self, id: &str) -> Result<Option<ReferenceImage>>;

    /// The stored image a URL this server handed out points to (a chat client sends the
    /// image it was answered with back to edit it), or `None` for any other URL, which is
    /// fetched.
    async fn stored(&self, _url: &str) -> Result<Option<ReferenceImage>> {
        Ok(None)
    }
}

/// Upstream calls one request may run at once when it fans `n` out.
const DEFAULT_FAN_OUT: usize = 4;

/// How many generations of each provider run at once, and how many may wait for a slot and
/// for how long, before a request is refused with a 503. Every provider is bounded: what
/// waits holds nothing but its request, and what runs holds its images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerationLimits {
    /// Generations one provider runs at once unless `per_provider` says otherwise.
    pub max_running: usize,
    /// Generations run at once, by provider name.
    pub per_provider: HashMap<String, usize>,
    /// Generations that may wait for a slot, per provider; more are refused at once.
    pub max_waiting: usize,
    /// Longest wait for a slot before the request is refused.
    pub max_wait: Duration,
}

impl GenerationLimits {
    /// Generations of an upstream provider run at once by default: their work is upstream,
    /// so this only bounds the images held in memory.
    pub const DEFAULT_MAX_RUNNING: usize = 64;
    /// Generations that may wait per provider by default.
    pub const DEFAULT_MAX_WAITING: usize = 256;
    /// Longest wait for a slot by default.
    pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(30);
    /// The provider that draws on this machine's CPU: its default is one generation per CPU.
    pub const LOCAL_PROVIDER: &'static str = "placeholder";
}

impl Default for GenerationLimits {
    fn default() -> Self {
        Self {
            max_running: Self::DEFAULT_MAX_RUNNING,
            per_provider: HashMap::from([(
                Self::LOCAL_PROVIDER.to_owned(),
                crate::blocking::default_workers(),
            )]),
            max_waiting: Self::DEFAULT_MAX_WAITING,
            max_wait: Self::DEFAULT_MAX_WAIT,
        }
    }
}

/// The admission of one provider's generations: slots, and a bounded line for them.
#[derive(Debug)]
struct Admission {
    running: Arc<Semaphore>,
    slots: usize,
    waiting: AtomicUsize,
    max_waiting: usize,
    max_wait: Duration,
}

/// Leaves the line when the waiting request is admitted, refused or dropped.
struct InLine<'a>(&'a AtomicUsize);

impl Drop for InLine<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Admission {
    fn new(max_running: usize, limits: &GenerationLimits) -> Self {
        Self {
            running: Arc::new(Semaphore::new(max_running.max(1))),
            slots: max_running.max(1),
            waiting: AtomicUsize::new(0),
            max_waiting: limits.max_waiting,
            max_wait: limits.max_wait,
        }
    }

    /// Reports the generations of `provider` running and waiting now.
    fn report(&self, provider: &str) {
        crate::telemetry::generations(
            provider,
            self.slots - self.running.available_permits().min(self.slots),
            self.waiting.load(Ordering::SeqCst),
        );
    }

    /// A slot for one generation of `provider`: at once if one is free, else after waiting
    /// in line; `Overloaded` if the line is full or the wait runs out.
    async fn admit(&self, provider: &str) -> Result<OwnedSemaphorePermit> {
        let admitted = self.wait_for_slot(provider).await;
        self.report(provider);
        admitted
    }

    async fn wait_for_slot(&self, provider: &str) -> Result<OwnedSemaphorePermit> {
        if let Ok(slot) = self.running.clone().try_acquire_owned() {
            return Ok(slot);
        }
        let overloaded = |retry_after: Duration| Error::Overloaded {
            provider: provider.to_owned(),
            retry_after,
        };
        let ahead = self.waiting.fetch_add(1, Ordering::SeqCst);
        let _in_line = InLine(&self.waiting);
        self.report(provider);
        if ahead >= self.max_waiting {
            // A full line drains in about one wait: come back then, at least a second later.
            return Err(overloaded(self.max_wait.max(Duration::from_secs(1))));
        }
        match tokio::time::timeout(self.max_wait, self.running.clone().acquire_owned()).await {
            Ok(Ok(slot)) => Ok(slot),
            // The semaphore is never closed; only the timeout can end the wait without a slot.
            _ => Err(overloaded(Duration::from_secs(
                (self.max_wait.as_secs() / 2).max(1),
            ))),
        }
    }
}

/// Builds a [`Gateway`]: the gateway being assembled.
#[derive(Debug)]
pub struct GatewayBuilder(Gateway);

impl GatewayBuilder {
    /// Lets at most `max_concurrent` calls to provider `name` run at once across all requests;
    /// further calls wait for a slot (an operator's cap, e.g. an upstream account's limit).
    #[must_use]
    pub fn provider_limit(mut self, name: impl Into<String>, max_concurrent: usize) -> Self {
        self.0
            .provider_limits
            .insert(name.into(), Arc::new(Semaphore::new(max_concurrent.max(1))));
        self
    }

    /// Bounds every provider's concurrent generations and the line waiting for them (default:
    /// [`GenerationLimits::default`]).
    #[must_use]
    pub fn generation_limits(mut self, limits: GenerationLimits) -> Self {
        self.0.generation_limits = limits;
        self
    }

    /// Fetches reference images under `fetcher`'s policy (default: [`FetchPolicy::default`]).
    #[must_use]
    pub fn fetcher(mut self, fetcher: ReferenceFetcher) -> Self {
        self.0.fetcher = Some(fetcher);
        self
    }

    /// Registers a provider under its [`ImageProvider::name`].
    #[must_use]
    pub fn provider(mut self, provider: Arc<dyn ImageProvider>) -> Self {
        self.0
            .providers
            .insert(provider.name().to_owned(), provider);
        self
    }

    /// The model used when a request names none (default `placeholder`).
    #[must_use]
    pub fn default_model(mut self, model: impl Into<String>) -> Self {
        self.0.default_model = model.into();
        self
    }

    /// How images are answered when a request names no `response_format` (default inline,
    /// `b64_json`).
    #[must_use]
    pub fn default_response_format(mut self, format: ResponseFormat) -> Self {
        self.0.default_response_format = format;
        self
    }

    /// How many upstream calls of one request may run at once (default 4).
    #[must_use]
    pub fn fan_out_concurrency(mut self, limit: usize) -> Self {
        self.0.fan_out = limit.max(1);
        self
    }

    /// Tries `chains[model]`, in order, when a model's providers turn a request away before
    /// starting work (a request's own `models` replaces its model's chain).
    #[must_use]
    pub fn fallbacks(mut self, chains: FallbackChains) -> Self {
        self.0.fallbacks = chains;
        self
    }

    /// How far failover goes: attempts, `Retry-After` waits and circuit breakers (default:
    /// [`FailoverPolicy::default`]).
    #[must_use]
    pub fn failover(mut self, policy: FailoverPolicy) -> Self {
        self.0.breakers = Breakers::new(policy.breaker);
        self.0.failover = policy;
        self
    }

    /// Builds the gateway.
    pub fn build(self) -> Gateway {
        let mut gateway = self.0;
        let limits = &gateway.generation_limits;
        gateway.admissions = gateway
            .providers
            .keys()
            .map(|name| {
                let max_running = limits
                    .per_provider
                    .get(name)
                    .copied()
                    .unwrap_or(limits.max_running);
                (name.clone(), Admission::new(max_running, limits))
            })
            .collect();
        // Building the default fetcher only fails if no HTTP client can be made at all; the
        // gateway then still serves requests without reference images.
        if gateway.fetcher.is_none() {
            gateway.fetcher = ReferenceFetcher::new(FetchPolicy::default())
                .inspect_err(|e| tracing::error!(error = %e, "reference fetching is unavailable"))
                .ok();
        }
        gateway
    }
}

/// Validates, routes and answers image requests. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Gateway {
    catalog: Arc<Catalog>,
    providers: HashMap<String, Arc<dyn ImageProvider>>,
    fetcher: Option<ReferenceFetcher>,
    provider_limits: HashMap<String, Arc<Semaphore>>,
    generation_limits: GenerationLimits,
    admissions: HashMap<String, Admission>,
    default_model: String,
    default_response_format: ResponseFormat,
    fan_out: usize,
    fallbacks: FallbackChains,
    failover: FailoverPolicy,
    breakers: Breakers,
}

impl Gateway {
    /// Starts building a gateway over `catalog`.
    pub fn builder(catalog: Catalog) -> GatewayBuilder {
        GatewayBuilder(Self {
            catalog: Arc::new(catalog),
            providers: HashMap::new(),
            fetcher: None,
            provider_limits: HashMap::new(),
            generation_limits: GenerationLimits::default(),
            admissions: HashMap::new(),
            default_model: "placeholder".into(),
            default_response_format: ResponseFormat::B64Json,
            fan_out: DEFAULT_FAN_OUT,
            fallbacks: FallbackChains::new(),
            failover: FailoverPolicy::default(),
            breakers: Breakers::new(FailoverPolicy::default().breaker),
        })
    }

    /// The catalog.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The reference-image fetch policy (its `max_bytes` also bounds uploaded images).
    pub fn fetch_policy(&self) -> Option<&FetchPolicy> {
        self.fetcher.as_ref().map(ReferenceFetcher::policy)
    }

    /// The model requests go to when they name none.
    pub fn default_model(&self) -> &str {
        &self.default_model
    }

    /// Whether a provider for `model` is configured.
    pub fn serves(&self, model: &ModelSpec) -> bool {
        self.providers.contains_key(&model.provider)
    }

    /// Whether requests naming `model` are answered: its provider is configured, or it is a
    /// retired name redirected to a model that is served.
    pub fn answers(&self, model: &ModelSpec) -> bool {
        let serves = |m: &ModelSpec| self.serves(m);
        self.serves(model)
            || model.retired.as_ref().is_some_and(|retired| {
                retired.redirect && self.catalog.resolve(&retired.replacement, &serves).is_ok()
            })
    }

    /// The models requests are answered for, one variant per id (the one requests go to);
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
                    .find(|v| self.answers(v))
            })
    }

    /// Every provider whose circuit is not closed, with its state.
    pub fn circuits(&self) -> Vec<(String, failover::Circuit)> {
        self.breakers.tripped()
    }

    /// Validates `request` against its model, and checks that the model can be served.
    pub fn validate(&self, mut request: ImageRequest) -> Result<ValidatedRequest> {
        let span = tracing::info_span!("validate", imgproxy.model = Empty).entered();
        request
            .response_format
            .get_or_insert_with(|| self.default_response_format.name().into());
        let validated = failover::route(
            &self.catalog,
            request,
            &self.default_model,
            &|m| self.serves(m),
            &self.fallbacks,
        )?;
        span.record("imgproxy.model", validated.model.id.as_str());
        Ok(validated)
    }

    /// Validates and generates `request`, answering in OpenAI's shape with inline images
    /// (`response_format: url` needs the service layer's image store).
    pub async fn generate(&self, request: ImageRequest) -> Result<ImageResponse> {
        let validated = self.validate(request)?;
        if validated.response_format == ResponseFormat::Url {
            return Err(Error::invalid_param(
                "response_format",
                "response_format `url` needs an image store, and none is configured",
            ));
        }
        let references = self.fetch_references(&validated, None).await?;
        let mask = self.fetch_mask(&validated, None).await?;
        let (generation, _) = self
            .generate_images(&validated, &references, mask.as_ref(), Sinks::default())
            .await?;
        let data = generation
            .images
            .iter()
            .map(|image| ImageData::inline(&image.bytes, image.revised_prompt.clone()))
            .collect();
        Ok(ImageResponse::new(
            data,
            generation.meta.or_asked(&validated),
            generation.usage,
        ))
    }

    /// Fetches and checks the request's reference images, all at once: uploaded files from
    /// `files`, URLs and data URLs through the guarded fetcher.
    pub async fn fetch_references(
        &self,
        request: &ValidatedRequest,
        files: Option<&dyn FileSource>,
    ) -> Result<Vec<ReferenceImage>> {
        futures_util::future::try_join_all(
            request
                .reference_images
                .iter()
                .map(|input| self.fetch_input(input, files)),
        )
        .await
    }

    /// Resolves the request's mask like a reference image; refusals name `mask`.
    pub async fn fetch_mask(
        &self,
        request: &ValidatedRequest,
        files: Option<&dyn FileSource>,
    ) -> Result<Option<ReferenceImage>> {
        let Some(input) = &request.mask else {
            return Ok(None);
        };
        let fetched = self.fetch_input(input, files).await;
        fetched.map(Some).map_err(|error| match error {
            Error::InvalidRequest { message, code, .. } => Error::InvalidRequest {
                message: message.replace("reference image", "mask"),
                param: Some("mask".into()),
                code,
            },
            other => other,
        })
    }

    /// One reference image, in a span of its own (never its URL: it may hold a token).
    async fn fetch_input(
        &self,
        input: &ImageInput,
        files: Option<&dyn FileSource>,
    ) -> Result<ReferenceImage> {
        let source = match crate::fetch::file_id_of(input) {
            Some(_) => "file",
            None => "url",
        };
        let span = tracing::info_span!(
            "fetch_reference",
            imgproxy.reference.source = source,
            imgproxy.reference.bytes = Empty,
        );
        let fetched = self
            .resolve_input(input, files)
            .instrument(span.clone())
            .await;
        if let Ok(image) = &fetched {
            span.record("imgproxy.reference.bytes", image.bytes.len() as i64);
        }
        fetched
    }

    /// One reference image: a file of `files`, or fetched by URL or data URL.
    async fn resolve_input(
        &self,
        input: &ImageInput,
        files: Option<&dyn FileSource>,
    ) -> Result<ReferenceImage> {
        if let Some(id) = crate::fetch::file_id_of(input) {
            let unknown = || Error::invalid_param("image", format!("no file `{id}`"));
            return match files {
                Some(files) => files.file(id).await?.ok_or_else(unknown),
                None => Err(unknown()),
            };
        }
        let url = match input {
            ImageInput::Text(url) | ImageInput::ImageUrl { image_url: url } => url.trim(),
            ImageInput::FileId { .. } => "",
        };
        if let Some(files) = files {
            if let Some(stored) = files.stored(url).await? {
                return Ok(stored);
            }
        }
        self.fetch_reference(input).await
    }

    /// Fetches one reference image given by URL or data URL.
    pub async fn fetch_reference(&self, input: &ImageInput) -> Result<ReferenceImage> {
        let Some(fetcher) = &self.fetcher else {
            return Err(Error::Internal("reference fetching is unavailable".into()));
        };
        fetcher.fetch(input).await
    }

    /// Generates the images of a validated request, failing over as [`crate::failover`]
    /// rules: the request's model first, then its fallbacks, each tried only while the ones
    /// before turned it away before starting work (a provider whose circuit is open is skipped
    /// uncalled), with a retry of the same provider after a short `Retry-After`. Returns the
    /// images, converted to the asked format, and how they were come by.
    pub async fn generate_images(
        &self,
        request: &ValidatedRequest,
        references: &[ReferenceImage],
        mask: Option<&ReferenceImage>,
        sinks: Sinks<'_>,
    ) -> Result<(Generation, Attempts)> {
        let candidates: Vec<&ValidatedRequest> =
            std::iter::once(request).chain(&request.fallbacks).collect();
        let mut attempts = Attempts::default();
        let run = RunInputs {
            references,
            mask,
            sinks,
        };
        if let Some(resume) = sinks.resume {
            // A resumed run waits for the jobs its first run started, where it started them.
            let (served, jobs) = failover::resumed_jobs(resume);
            let candidate = candidates.get(served).copied().unwrap_or(request);
            attempts.served = served;
            let run = RunInputs {
                sinks: Sinks {
                    resume: Some(&jobs),
                    ..sinks
                },
                ..run
            };
            let generation = self
                .attempt(candidate, run, served)
                .await
                .map_err(|failure| failure.error)?;
            return Ok((self.deliver(candidate, generation).await?, attempts));
        }
        let mut last_error = None;
        let mut index = 0;
        while let Some(&candidate) = candidates.get(index) {
            let provider = candidate.model.provider.as_str();
            let admitted = match self.breakers.admit(provider) {
                Ok(admitted) => admitted,
                Err(retry_after) => {
                    let skip =
                        Attempt::of(&candidate.model, failover::CIRCUIT_OPEN, Duration::ZERO);
                    attempts.log.push(skip);
                    crate::telemetry::fallback(provider, failover::CIRCUIT_OPEN);
                    last_error.get_or_insert(Error::CircuitOpen {
                        provider: provider.to_owned(),
                        retry_after,
                    });
                    index += 1;
                    continue;
                }
            };
            let start = std::time::Instant::now();
            let outcome = self.attempt(candidate, run, index).await;
            let elapsed = start.elapsed();
            let failure = match outcome {
                Ok(generation) => {
                    self.breakers.report(provider, admitted, false);
                    attempts
                        .log
                        .push(Attempt::of(&candidate.model, "ok", elapsed));
                    attempts.served = index;
                    return Ok((self.deliver(candidate, generation).await?, attempts));
                }
                Err(failure) => failure,
            };
            attempts
                .log
                .push(Attempt::of(&candidate.model, failure.kind(), elapsed));
            let Some(upstream) = &failure.upstream else {
                self.breakers.abandon(provider, admitted);
                // This provider's own line here is full: nothing went upstream, so another
                // candidate may serve (it says nothing of the provider's health).
                if matches!(failure.error, Error::Overloaded { .. }) && index + 1 < candidates.len()
                {
                    crate::telemetry::fallback(provider, failure.kind());
                    last_error = Some(failure.error);
                    index += 1;
                    continue;
                }
                return Err(failure.error);
            };
            let pre_start = !failure.started && upstream.is_pre_start();
            self.breakers.report(provider, admitted, pre_start);
            match self
                .failover
                .next(upstream, failure.started, attempts.calls())
            {
                Next::Retry(wait) => {
                    tracing::info!(provider, wait_ms = wait.as_millis() as u64, error = %failure.error, "retrying after the upstream's Retry-After");
                    crate::telemetry::retry(provider);
                    tokio::time::sleep(wait).await;
                }
                Next::MoveOn if index + 1 < candidates.len() => {
                    tracing::warn!(provider, model = %candidate.model.id, error = %failure.error, "moving on to the next candidate");
                    crate::telemetry::fallback(provider, upstream.kind());
                    last_error = Some(failure.error);
                    index += 1;
                }
                _ => return Err(failure.error),
            }
        }
        Err(last_error.unwrap_or_else(|| Error::Internal("no candidate served".into())))
    }

    /// One attempt at `candidate` (the request's candidate number `index`): a slot of its
    /// provider (see [`GenerationLimits`]: none within the wait is `Overloaded`), then its
    /// upstream calls.
    async fn attempt(
        &self,
        candidate: &ValidatedRequest,
        run: RunInputs<'_>,
        index: usize,
    ) -> std::result::Result<Generation, Failure> {
        let provider = &candidate.model.provider;
        let admission = self.admissions.get(provider);
        let slot = match admission {
            Some(admission) => Some(admission.admit(provider).await?),
            // An unknown provider fails in `call_upstream` with the right error.
            None => None,
        };
        let called = self.call_upstream(candidate, run, index).await;
        drop(slot);
        if let Some(admission) = admission {
            admission.report(provider);
        }
        called
    }

    /// The images of a generation converted to the asked format, with the metadata read from
    /// what was made.
    async fn deliver(
        &self,
        request: &ValidatedRequest,
        mut generation: Generation,
    ) -> Result<Generation> {
        let mut images = Vec::with_capacity(generation.images.len());
        let mut pixels = 0_u64;
        for image in std::mem::take(&mut generation.images) {
            let image = crate::convert::deliverable(request, image).await?;
            if let Some((width, height)) = crate::convert::dimensions(&image.bytes) {
                pixels += u64::from(width) * u64::from(height);
            }
            images.push(image);
        }
        crate::telemetry::images_generated(&request.model.id, images.len() as u64, pixels);
        generation.images = images;
        if let Some(first) = generation.images.first() {
            generation.meta.report_actual(&first.mime, &first.bytes);
        }
        Ok(generation)
    }

    /// The upstream calls of one candidate: one per `n_per_call` images, at most `fan_out` at
    /// once, results in order. Returns what succeeded if any call did.
    async fn call_upstream(
        &self,
        request: &ValidatedRequest,
        run: RunInputs<'_>,
        index: usize,
    ) -> std::result::Result<Generation, Failure> {
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
                references: run.references,
                mask: run.mask,
                partials: run.sinks.partials,
                jobs: run.sinks.jobs,
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
                    run.sinks.resume,
                    index,
                )
            })
            .collect();
        let results: Vec<Called> = stream::iter(pending).buffered(self.fan_out).collect().await;

        let mut total = Generation::default();
        let mut failed: Option<crate::ProviderError> = None;
        let mut started = false;
        for called in results {
            started |= called.started;
            let outcome = match &called.result {
                Ok(generation) if generation.images.is_empty() => "empty",
                Ok(_) => "ok",
                Err(error) => error.kind(),
            };
            crate::telemetry::upstream_call(&model.provider, &model.id, outcome, called.elapsed);
            let error = match called.result {
                Ok(mut generation) if !generation.images.is_empty() => {
                    generation.images.truncate(called.asked as usize);
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
                    continue;
                }
                Ok(_) => crate::upstream::failed("the upstream returned no image"),
                Err(error) => {
                    tracing::warn!(model = %model.id, %error, "upstream call failed");
                    error
                }
            };
            // The failure that speaks for the calls: the first one that could have started
            // work upstream, if any did, so that a fan-out is only retried when none could.
            match &failed {
                Some(first) if !first.is_pre_start() || error.is_pre_start() => {}
                _ => failed = Some(error),
            }
        }
        match failed {
            Some(error) if total.images.is_empty() => Err(Failure {
                error: error.clone().into_error(&model.provider, &model.id),
                upstream: Some(error),
                started,
            }),
            _ => Ok(total),
        }
    }
}

/// A failed attempt: the gateway's error; the upstream's own, when an upstream call failed;
/// and whether the upstream had started work (it reported a job, or a partial image went out).
#[derive(Debug)]
struct Failure {
    error: Error,
    upstream: Option<crate::ProviderError>,
    started: bool,
}

impl Failure {
    /// The attempt's outcome word.
    fn kind(&self) -> &'static str {
        self.upstream
            .as_ref()
            .map_or_else(|| self.error.fault().1, crate::ProviderError::kind)
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Self {
            error,
            upstream: None,
            started: false,
        }
    }
}

/// One upstream call's outcome: images asked for, time taken, result, and whether the
/// upstream started work (a job reported, a partial image forwarded).
struct Called {
    asked: u32,
    elapsed: Duration,
    result: std::result::Result<Generation, crate::ProviderError>,
    started: bool,
}

/// One upstream call under the provider's concurrency limit, in its span. The call's job
/// tokens and partial images pass through here on their way out, which is how the gateway
/// knows that the upstream started work; a job token of candidate `index` > 0 is marked with
/// it, so that a resumed run goes back to the provider that started the job.
async fn call_provider(
    provider: &dyn ImageProvider,
    limit: Option<&Arc<Semaphore>>,
    call: ProviderRequest<'_>,
    resume: Option<&std::collections::BTreeMap<u32, String>>,
    index: usize,
) -> Called {
    // The semaphore is never closed, so acquiring only waits; an error cannot happen.
    let _slot = match limit {
        Some(semaphore) => semaphore.acquire().await.ok(),
        None => None,
    };
    let (outlets, mut relay) = Relay::new(call);
    let call = outlets.request(call);
    let span = upstream_span(provider, &call);
    let start = std::time::Instant::now();
    let work = async {
        match resume.map(|jobs| jobs.get(&call.first_index)) {
            None => provider.generate(call).await,
            Some(Some(job)) => provider.resume(call, job).await,
            // Starting it now would make the images twice as fast as they are paid for: no.
            Some(None) => Err(crate::ProviderError::Failed {
                message: "this part of the interrupted task had not started upstream".into(),
            }),
        }
    }
    .instrument(span.clone());
    let result = relay
        .drive(work, |token| failover::job_token(index, token))
        .await;
    match &result {
        Ok(generation) => {
            if let Some(usage) = &generation.usage {
                span.record(
                    "gen_ai.usage.input_tokens",
                    usage.input_tokens.map(|t| t as i64),
                );
                span.record(
                    "gen_ai.usage.output_tokens",
                    usage.output_tokens.map(|t| t as i64),
                );
            }
        }
        Err(error) => {
            span.record("error.type", error.kind());
        }
    }
    Called {
        asked: call.n,
        elapsed: start.elapsed(),
        result,
        started: relay.started(),
    }
}

/// The span of one upstream call, in the OpenTelemetry GenAI conventions' words where they
/// have them (they name no image operation: `generate_image` is ours) and `imgproxy.*` ones
/// where they do not (README, "Traces"). Never the prompt, a key or a URL. Numbers are `i64`:
/// OpenTelemetry has no unsigned integers (an unsigned one would be exported as text).
fn upstream_span(provider: &dyn ImageProvider, call: &ProviderRequest<'_>) -> tracing::Span {
    let model = &call.request.model;
    tracing::info_span!(
        "upstream",
        gen_ai.operation.name = "generate_image",
        gen_ai.provider.name = provider.genai_name(),
        gen_ai.request.model = model.upstream.as_str(),
        "gen_ai.output.type" = "image",
        gen_ai.request.choice.count = i64::from(call.n),
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
        imgproxy.model = model.id.as_str(),
        imgproxy.call.first_index = i64::from(call.first_index),
        "error.type" = Empty,
    )
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::Bytes;

    use super::*;
    use crate::{GeneratedImage, ProviderError};

    /// A generation of one PNG-labelled image of `bytes`.
    fn one_image(bytes: Bytes) -> Generation {
        Generation {
            images: vec![GeneratedImage {
                bytes,
                mime: "image/png".into(),
                revised_prompt: None,
            }],
            ..Generation::default()
        }
    }

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
            Ok(one_image(Bytes::from(call.first_index.to_string())))
        }
    }

    /// The embedded catalog plus model `counted`: the placeholder's, served by `counting`.
    fn counted_catalog() -> Catalog {
        let mut catalog = Catalog::embedded().unwrap();
        let mut model = (**catalog.resolve("placeholder", &|_| true).unwrap()).clone();
        model.id = "counted".into();
        model.provider = "counting".into();
        catalog.upsert(model).unwrap();
        catalog
    }

    fn gateway(provider: Arc<Counting>) -> Gateway {
        Gateway::builder(counted_catalog())
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
            .map(|d| String::from_utf8(d.inline_bytes().unwrap().to_vec()).unwrap())
            .collect();
        assert_eq!(order, (0..10).map(|i| i.to_string()).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_provider_limit_caps_calls_across_requests() {
        let provider = Arc::new(Counting::default());
        let gateway = Arc::new(
            Gateway::builder(counted_catalog())
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

    /// Holds every call until `open` is notified.
    #[derive(Debug)]
    struct Gated {
        entered: tokio::sync::Notify,
        open: tokio::sync::Semaphore,
    }

    impl Default for Gated {
        fn default() -> Self {
            Self {
                entered: tokio::sync::Notify::new(),
                open: tokio::sync::Semaphore::new(0),
            }
        }
    }

    #[async_trait]
    impl ImageProvider for Gated {
        fn name(&self) -> &str {
            "counting"
        }
        async fn generate(&self, _call: ProviderRequest<'_>) -> Result<Generation, ProviderError> {
            self.entered.notify_one();
            let _pass = self.open.acquire().await;
            Ok(one_image(Bytes::from_static(b"x")))
        }
    }

    fn gated_gateway(provider: Arc<Gated>, max_wait: Duration) -> Arc<Gateway> {
        Arc::new(
            Gateway::builder(counted_catalog())
                .provider(provider)
                .generation_limits(GenerationLimits {
                    max_running: 1,
                    per_provider: HashMap::new(),
                    max_waiting: 1,
                    max_wait,
                })
                .build(),
        )
    }

    /// One single-image generation on `gateway`, running on its own task.
    fn spawn_generation(gateway: &Arc<Gateway>) -> tokio::task::JoinHandle<Result<ImageResponse>> {
        let gateway = gateway.clone();
        tokio::spawn(async move { gateway.generate(request(1)).await })
    }

    async fn until_waiting(gateway: &Gateway, waiting: usize) {
        while gateway.admissions["counting"]
            .waiting
            .load(Ordering::SeqCst)
            != waiting
        {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn generations_beyond_the_slots_and_the_line_are_refused_with_a_retry_hint() {
        let provider = Arc::new(Gated::default());
        let gateway = gated_gateway(provider.clone(), Duration::from_secs(3600));
        let running = spawn_generation(&gateway);
        provider.entered.notified().await;
        let waiting = spawn_generation(&gateway);
        until_waiting(&gateway, 1).await;
        // Without a bound it would hang behind the gate: the timeout makes that a failure.
        let refused = tokio::time::timeout(Duration::from_secs(60), gateway.generate(request(1)))
            .await
            .expect("refused at once")
            .unwrap_err();
        assert_eq!(refused.status(), 503, "{refused}");
        assert!(refused
            .retry_after()
            .is_some_and(|d| d >= Duration::from_secs(1)));
        provider.open.add_permits(2);
        assert_eq!(running.await.unwrap().unwrap().data.len(), 1);
        assert_eq!(waiting.await.unwrap().unwrap().data.len(), 1);
        until_waiting(&gateway, 0).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_that_runs_out_is_refused() {
        let provider = Arc::new(Gated::default());
        let gateway = gated_gateway(provider.clone(), Duration::from_secs(5));
        let running = spawn_generation(&gateway);
        provider.entered.notified().await;
        // The paused clock jumps to the end of the wait as soon as everything is idle.
        let refused = tokio::time::timeout(Duration::from_secs(60), gateway.generate(request(1)))
            .await
            .expect("refused after the wait")
            .unwrap_err();
        assert_eq!(refused.code(), Some("overloaded"));
        assert_eq!(
            gateway.admissions["counting"]
                .waiting
                .load(Ordering::SeqCst),
            0
        );
        provider.open.add_permits(1);
        assert_eq!(running.await.unwrap().unwrap().data.len(), 1);
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

    #[test]
    fn a_request_naming_no_format_gets_the_gateways_default() {
        let url_first = Gateway::builder(counted_catalog())
            .provider(Arc::new(Counting::default()))
            .default_response_format(ResponseFormat::Url)
            .build();
        let format = |gateway: &Gateway, asked: Option<&str>| {
            let mut req = request(1);
            req.response_format = asked.map(Into::into);
            gateway.validate(req).unwrap().response_format
        };
        let inline_first = gateway(Arc::new(Counting::default()));
        assert_eq!(format(&inline_first, None), ResponseFormat::B64Json);
        assert_eq!(format(&url_first, None), ResponseFormat::Url);
        assert_eq!(
            format(&url_first, Some("b64_json")),
            ResponseFormat::B64Json
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
                .contains("no provider for it is configured (`openai` or `azure`)"),
            "{error}"
        );
    }
}
