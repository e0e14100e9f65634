//! `imgproxy serve`: turns settings into a gateway, binds, and runs until SIGINT / SIGTERM.

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use imgproxy_core::{
    clock::now_secs,
    fetch::{FetchPolicy, ReferenceFetcher},
    service::{
        db::new_instance_id, retention::Retention, signing::UrlSigner, tasks::Tasks, Database,
        ImageStore, Service, IMAGE_PATH,
    },
    Gateway, GatewayBuilder,
};
use imgproxy_provider_placeholder::PlaceholderProvider;
use tokio::net::TcpListener;

use crate::{
    build_app,
    cli::ServeArgs,
    config::{Env, Settings, ENV_MASTER_KEY, ENV_URL_SECRET},
    edge, handlers,
    listener::{self, ConnectionLimits},
    state::{Upstreams, UrlApi},
    telemetry::metrics,
    AppState,
};

/// The URL API's default model when a provider serves it (seed 000's default).
const URL_API_MODEL: &str = "flux-1.1-pro";

/// Reservations older than this whose owner holds no live lease are released (a backstop for
/// owners that never held one): longer than any request can run (the largest upstream
/// deadline is minutes). A dead instance's are released as soon as its lease expires.
const STALE_RESERVATION: Duration = Duration::from_secs(60 * 60);
/// How often that backstop runs (and expired idempotency keys are deleted).
const SWEEP_EVERY: Duration = Duration::from_secs(5 * 60);

/// Runs the server until a shutdown signal, then drains in-flight requests.
pub async fn run(args: ServeArgs, env: &dyn Env) -> anyhow::Result<()> {
    // Listen for SIGINT / SIGTERM from the start, on a task of its own: a signal that came
    // before the accept loop first looked would otherwise kill the process uncleanly.
    let stop = tokio::spawn(shutdown_signal());
    let settings = Settings::load(args.state.flags(args.listen), env)?;
    settings.check_serve()?;
    let open_files = listener::raise_open_files_limit();
    imgproxy_core::blocking::configure(settings.server.cpu_workers);
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("creating the data dir {}", settings.data_dir.display()))?;
    // Fresh at every start: processes sharing the data dir or the database are told apart,
    // and what a dead one left is recovered once its lease expires (see `Tasks::recover`).
    let instance_id = new_instance_id();
    let db = Database::connect(&settings.database_url)
        .await
        .context("opening the database")?;
    let sweeper = db.clone();
    let idempotency_window =
        i64::try_from(settings.idempotency_window.as_secs()).unwrap_or(i64::MAX);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(SWEEP_EVERY);
        loop {
            every.tick().await;
            match sweeper.release_expired(STALE_RESERVATION).await {
                Ok(0) => {}
                Ok(released) => tracing::warn!(
                    released,
                    "refunded credit reservations older than an hour without a live owner"
                ),
                Err(error) => tracing::error!(%error, "sweeping stale credit reservations failed"),
            }
            let expired_before = now_secs().saturating_sub(idempotency_window);
            if let Err(error) = sweeper.expire_idempotency_keys(expired_before).await {
                tracing::error!(%error, "expiring idempotency keys failed");
            }
        }
    });

    let listener = TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let local = listener.local_addr()?;
    let public_url = settings
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{local}"));
    let (gateway, upstreams) = build_gateway(&settings)?;
    let gateway = gateway.build();
    if let Some(public) = &settings.public {
        // Fail at start, not on the first public request, if the paying key is wrong.
        let key = db
            .get_key(&public.key_id)
            .await
            .with_context(|| format!("[public] key_id `{}`", public.key_id))?;
        anyhow::ensure!(!key.revoked, "[public] key `{}` is revoked", key.id);
        tracing::warn!(key = %key.id, "public mode: unauthenticated URL-API requests are billed to this key");
    }
    let url_api_model = url_api_default_model(&settings, &gateway);
    let service = Arc::new(
        Service::new(
            gateway,
            image_store(&settings)?,
            format!("{public_url}{IMAGE_PATH}"),
            db,
        )
        .with_url_signer(url_signer(&settings)?, settings.url_ttl)
        .with_idempotency_window(settings.idempotency_window)
        .with_instance(instance_id.clone()),
    );
    let tasks = Arc::new(
        Tasks::new(service.clone(), fetcher(&settings)?, settings.tasks.clone())?
            .with_callback_format(
                handlers::seed004::CALLBACK_FORMAT,
                handlers::seed004::callback_body,
            ),
    );
    // The lease first: from here on nothing of this instance's can be taken for dead.
    tasks.join().await?;
    tasks.recover().await?;
    tasks.start();
    sweep_store(&service, settings.retention);

    let served: Vec<&str> = service
        .gateway()
        .served_models()
        .filter(|m| m.retired.is_none())
        .map(|m| m.id.as_str())
        .collect();
    tracing::info!(
        models = %served.join(", "),
        data_dir = %settings.data_dir.display(),
        database = service.db().backend(),
        images = service.store().kind(),
        url_api_model = %url_api_model,
        "imgproxy listening on http://{local}"
    );
    if settings.master_key.is_none() {
        tracing::warn!(
            "no {ENV_MASTER_KEY} set: API access is open, so imgproxy listens on loopback only"
        );
    }

    let exposition = match settings.metrics.enabled {
        true => Some(metrics::Exposition {
            handle: metrics::install()?,
            token: settings.metrics.token.clone().map(Arc::new),
        }),
        false => None,
    };
    if let (Some(exposition), Some(address)) = (&exposition, settings.metrics.listen) {
        serve_metrics(address, exposition.clone()).await?;
    }
    let state = AppState {
        service,
        tasks: Some(tasks.clone()),
        limits: Arc::default(),
        master_key: settings.master_key.map(Arc::new),
        instance_id: instance_id.into(),
        max_body_bytes: settings.max_body_bytes,
        public_url: public_url.into(),
        url_api: Arc::new(UrlApi {
            default_model: url_api_model,
            path_form: settings.path_form,
            path_form_host: settings.path_form_host.clone(),
            cache_enabled: settings.cache_enabled,
            public: settings.public.clone(),
        }),
        cors: Arc::new(edge::Cors::from_settings(&settings.cors)),
        recorder: exposition.as_ref().map(|e| e.handle.clone()),
        metrics: exposition.filter(|_| settings.metrics.listen.is_none()),
        key_labels: settings.metrics.key_labels,
        upstreams,
        responses_image_model: settings.responses_image_model.as_deref().map(Arc::from),
    };
    let limits = ConnectionLimits::from_settings(&settings.server, open_files);
    tracing::info!(
        max_connections = limits.max_connections,
        header_read_timeout = ?limits.header_read_timeout,
        body_read_timeout = ?limits.body_read_timeout,
        idle_timeout = ?limits.idle_timeout,
        cpu_workers = imgproxy_core::blocking::workers(),
        "connection limits"
    );
    listener::serve(listener, build_app(state), limits, Arc::default(), async {
        // A failed signal task cannot stop the server: then only a kill does.
        if stop.await.is_err() {
            std::future::pending::<()>().await;
        }
    })
    .await;
    // Tasks still running stop with the process: whoever looks next recovers them at once.
    if let Err(error) = tasks.leave().await {
        tracing::warn!(%error, "ending the instance's lease failed; it expires by itself");
    }
    tracing::info!("imgproxy stopped");
    Ok(())
}

/// Serves `/metrics` alone on `address`, apart from the API (for a scrape network only).
async fn serve_metrics(
    address: std::net::SocketAddr,
    exposition: metrics::Exposition,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address} for metrics"))?;
    tracing::info!("metrics on http://{}/metrics", listener.local_addr()?);
    let app = crate::app::metrics_router::<()>(exposition);
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "the metrics listener failed");
        }
    });
    Ok(())
}

/// Sweeps the image store under `retention` every `every`, when a limit is set. Instances
/// sharing a store may all sweep: deletes of what nothing needs are idempotent.
fn sweep_store(service: &Arc<Service>, (retention, every): (Retention, Duration)) {
    if !retention.is_enabled() {
        return;
    }
    let service = service.clone();
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        loop {
            ticks.tick().await;
            match service.sweep(&retention).await {
                Ok(report) if report.objects > 0 || report.cache_entries > 0 => tracing::info!(
                    cache_entries = report.cache_entries,
                    objects = report.objects,
                    freed_bytes = report.bytes,
                    remaining_bytes = report.remaining_bytes,
                    "retention sweep"
                ),
                Ok(_) => {}
                Err(error) => tracing::error!(%error, "retention sweep failed"),
            }
        }
    });
}

/// The URL signer: the configured secret, else the one kept in the data dir (made on first
/// use). Instances that serve each other's URLs need the same secret: set it in config.
pub fn url_signer(settings: &Settings) -> anyhow::Result<UrlSigner> {
    use secrecy::ExposeSecret as _;
    let secret = match &settings.url_secret {
        Some(secret) => secret.expose_secret().to_owned(),
        None => {
            let path = settings.data_dir.join("url-secret");
            match std::fs::read_to_string(&path) {
                Ok(text) if !text.trim().is_empty() => text.trim().to_owned(),
                _ => {
                    let mut bytes = [0_u8; 32];
                    getrandom::fill(&mut bytes)
                        .map_err(|e| anyhow::anyhow!("random source: {e}"))?;
                    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                    std::fs::create_dir_all(&settings.data_dir)?;
                    write_private(&path, &secret)
                        .with_context(|| format!("writing {}", path.display()))?;
                    secret
                }
            }
        }
    };
    UrlSigner::new(secret.as_bytes()).with_context(|| {
        format!(
            "the URL secret ({ENV_URL_SECRET} or [urls] secret) must be at least {} characters",
            imgproxy_core::service::signing::MIN_SECRET_BYTES
        )
    })
}

/// Writes a secret readable by its owner only: whoever reads it can sign URLs for any key.
fn write_private(path: &std::path::Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(secret.as_bytes())
}

/// The URL API's default model: the configured one, else `flux-1.1-pro` when a provider
/// serves it, else the gateway's default (the placeholder).
fn url_api_default_model(settings: &Settings, gateway: &Gateway) -> String {
    if let Some(model) = &settings.url_api_default_model {
        return model.clone();
    }
    let served = gateway
        .catalog()
        .resolve(URL_API_MODEL, &|m| gateway.serves(m))
        .is_ok_and(|m| gateway.serves(m));
    if served {
        URL_API_MODEL.to_owned()
    } else {
        gateway.default_model().to_owned()
    }
}

/// The image store that `settings` describe: the data dir, or S3.
pub fn image_store(settings: &Settings) -> anyhow::Result<ImageStore> {
    let store = match &settings.s3 {
        Some(location) => ImageStore::s3(location)?,
        None => ImageStore::local(&settings.data_dir)?,
    };
    Ok(store.with_memory_cache(settings.memory_cache_bytes))
}

/// The gateway that `settings` describe: the embedded catalog with the config's overrides,
/// the placeholder, every provider with a key and the reference fetcher; and those upstream
/// providers, whose keys readiness reports.
pub fn build_gateway(settings: &Settings) -> anyhow::Result<(GatewayBuilder, Upstreams)> {
    let catalog = settings.catalog()?;
    // The embedded entries are kept fresh by a test; an operator's may name a dead upstream.
    for (model, shutdown) in catalog.stale_models()? {
        tracing::warn!(
            model = %model.id,
            provider = %model.provider,
            upstream = %model.upstream,
            shutdown_date = %shutdown.date,
            source = %shutdown.source,
            "this model calls an upstream id that its provider has shut down: its requests will fail upstream"
        );
    }
    let mut builder = Gateway::builder(catalog)
        .generation_limits(settings.server.generations.clone())
        .failover(settings.failover.clone())
        .fallbacks(settings.fallback_chains())
        .default_response_format(settings.default_response_format)
        .provider(Arc::new(PlaceholderProvider::new()))
        .fetcher(fetcher(settings)?);
    if let Some(model) = &settings.default_model {
        builder = builder.default_model(model);
    }
    let mut upstreams = Vec::with_capacity(settings.providers.len());
    for provider in &settings.providers {
        let client = provider
            .start()
            .with_context(|| format!("provider `{}`", provider.name))?;
        tracing::info!(provider = %provider.name, base_url = provider.base_url.as_deref().unwrap_or("default"), keys = 1 + provider.more_keys.len(), "upstream enabled");
        upstreams.push(client.clone());
        builder = builder.provider(client);
        if let Some(max_concurrent) = provider.max_concurrent {
            builder = builder.provider_limit(&provider.name, max_concurrent);
        }
    }
    Ok((builder, upstreams.into()))
}

/// The guarded fetcher of reference images (and callback URLs) that `settings` describe.
pub fn fetcher(settings: &Settings) -> anyhow::Result<ReferenceFetcher> {
    let mut policy = FetchPolicy {
        allow_hosts: settings.fetch.allow_hosts.clone(),
        ..FetchPolicy::default()
    };
    if let Some(max_bytes) = settings.fetch.max_bytes {
        policy.max_bytes = max_bytes;
    }
    if let Some(seconds) = settings.fetch.timeout_secs {
        policy.timeout = Duration::from_secs(seconds);
    }
    Ok(ReferenceFetcher::new(policy)?)
}

async fn shutdown_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
