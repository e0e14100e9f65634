//! Failover through the kernel's `Gateway`, against scripted providers that count their calls:
//! what moves on (pre-start failures only), what retries, what stops, and the circuits.

#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use async_trait::async_trait;
use bytes::Bytes;
use imgproxy_core::{
    failover::{BreakerPolicy, FailoverPolicy, FallbackChains},
    gateway::Sinks,
    Catalog, Error, Gateway, GeneratedImage, Generation, ImageProvider, ImageRequest,
    ProviderError, ProviderRequest,
};
use serde_json::json;

/// A provider that answers from a script, then succeeds; it can report a job first.
#[derive(Debug, Default)]
struct Scripted {
    name: &'static str,
    script: Mutex<VecDeque<Result<(), ProviderError>>>,
    report_job: bool,
    /// How long each call takes.
    delay: Duration,
    calls: AtomicUsize,
}

impl Scripted {
    fn new(name: &'static str, script: Vec<Result<(), ProviderError>>) -> Arc<Self> {
        Arc::new(Self {
            name,
            script: Mutex::new(script.into()),
            ..Self::default()
        })
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl ImageProvider for Scripted {
    fn name(&self) -> &str {
        self.name
    }

    async fn generate(&self, call: ProviderRequest<'_>) -> Result<Generation, ProviderError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        if self.report_job {
            call.report_job("job-1".into());
        }
        let next = self.script.lock().unwrap().pop_front().unwrap_or(Ok(()));
        next?;
        Ok(Generation {
            images: vec![GeneratedImage {
                bytes: Bytes::from(self.name.as_bytes().to_vec()),
                mime: "image/png".into(),
                revised_prompt: None,
            }],
            ..Generation::default()
        })
    }
}

fn refused() -> ProviderError {
    ProviderError::Unavailable {
        message: "cannot reach upstream".into(),
        retry_after: None,
    }
}

/// `first` (served by `one`, with a second variant on `one-b`) and `second` (served by `two`),
/// both the placeholder's model under other names.
fn catalog() -> Catalog {
    let mut catalog = Catalog::embedded().unwrap();
    let base = (**catalog.resolve("placeholder", &|_| true).unwrap()).clone();
    for (id, provider) in [("first", "one"), ("first", "one-b"), ("second", "two")] {
        let mut model = base.clone();
        model.id = id.into();
        model.aliases = Vec::new();
        model.provider = provider.into();
        catalog.upsert(model).unwrap();
    }
    catalog
}

fn gateway(
    providers: &[&Arc<Scripted>],
    chains: FallbackChains,
    policy: FailoverPolicy,
) -> Gateway {
    let mut builder = Gateway::builder(catalog())
        .fallbacks(chains)
        .failover(policy);
    for provider in providers {
        builder = builder.provider((*provider).clone());
    }
    builder.build()
}

fn chain() -> FallbackChains {
    FallbackChains::from([("first".to_owned(), vec!["second".to_owned()])])
}

fn request(body: serde_json::Value) -> ImageRequest {
    let mut body = body;
    body["prompt"] = json!("a lighthouse");
    serde_json::from_value(body).unwrap()
}

async fn run(
    gateway: &Gateway,
    body: serde_json::Value,
) -> Result<(String, imgproxy_core::failover::Attempts), Error> {
    let validated = gateway.validate(request(body))?;
    let (generation, attempts) = gateway
        .generate_images(&validated, &[], None, Sinks::default())
        .await?;
    let served_by = String::from_utf8(generation.images[0].bytes.to_vec()).unwrap();
    assert_eq!(
        validated.candidate(attempts.served).model.provider,
        served_by,
        "the candidate reported is the one that served"
    );
    Ok((served_by, attempts))
}

#[tokio::test]
async fn a_refused_connection_falls_back_to_the_next_model() {
    let one = Scripted::new("one", vec![Err(refused())]);
    let two = Scripted::new("two", vec![]);
    let gateway = gateway(&[&one, &two], chain(), FailoverPolicy::default());
    let (served, attempts) = run(&gateway, json!({"model": "first"})).await.unwrap();
    assert_eq!((served.as_str(), one.calls(), two.calls()), ("two", 1, 1));
    assert_eq!(attempts.served, 1);
    let outcomes: Vec<_> = attempts.log.iter().map(|a| a.outcome.as_str()).collect();
    assert_eq!(outcomes, ["unavailable", "ok"]);
    assert_eq!(attempts.log[1].model, "second");
}

#[tokio::test]
async fn the_models_other_provider_comes_before_fallback_models() {
    let one = Scripted::new(
        "one",
        vec![Err(ProviderError::Unauthorized { status: 401 })],
    );
    let one_b = Scripted::new("one-b", vec![]);
    let two = Scripted::new("two", vec![]);
    let gateway = gateway(&[&one, &one_b, &two], chain(), FailoverPolicy::default());
    let (served, _) = run(&gateway, json!({"model": "first"})).await.unwrap();
    assert_eq!((served.as_str(), two.calls()), ("one-b", 0));
}

#[tokio::test]
async fn a_short_retry_after_retries_the_same_provider() {
    let wait = ProviderError::RateLimited {
        retry_after: Some(Duration::from_millis(20)),
    };
    let one = Scripted::new("one", vec![Err(wait)]);
    let two = Scripted::new("two", vec![]);
    let gateway = gateway(&[&one, &two], chain(), FailoverPolicy::default());
    let (served, attempts) = run(&gateway, json!({"model": "first"})).await.unwrap();
    assert_eq!((served.as_str(), one.calls(), two.calls()), ("one", 2, 0));
    assert_eq!(attempts.calls(), 2);
}

#[tokio::test]
async fn ambiguous_failures_refusals_and_started_jobs_never_move_on() {
    let cases = [
        (
            ProviderError::Failed {
                message: "upstream answered HTTP 500".into(),
            },
            502,
        ),
        (ProviderError::Timeout, 504),
        (
            ProviderError::ModerationBlocked {
                message: "refused".into(),
            },
            400,
        ),
    ];
    for (error, status) in cases {
        let one = Scripted::new("one", vec![Err(error.clone())]);
        let two = Scripted::new("two", vec![]);
        let gateway = gateway(&[&one, &two], chain(), FailoverPolicy::default());
        let failed = run(&gateway, json!({"model": "first"})).await.unwrap_err();
        assert_eq!(failed.status(), status, "{error:?}");
        assert_eq!((one.calls(), two.calls()), (1, 0), "{error:?}");
    }
    // A pre-start-looking failure after the upstream reported its job is final too.
    let one = Arc::new(Scripted {
        name: "one",
        script: Mutex::new(vec![Err(refused())].into()),
        report_job: true,
        ..Scripted::default()
    });
    let two = Scripted::new("two", vec![]);
    let gateway = gateway(&[&one, &two], chain(), FailoverPolicy::default());
    assert!(run(&gateway, json!({"model": "first"})).await.is_err());
    assert_eq!(two.calls(), 0);
}

#[tokio::test]
async fn attempts_are_capped() {
    let one = Scripted::new("one", vec![Err(refused())]);
    let two = Scripted::new("two", vec![Err(refused())]);
    let policy = FailoverPolicy {
        max_attempts: 1,
        ..FailoverPolicy::default()
    };
    let gateway = gateway(&[&one, &two], chain(), policy);
    assert!(run(&gateway, json!({"model": "first"})).await.is_err());
    assert_eq!((one.calls(), two.calls()), (1, 0));
}

#[tokio::test]
async fn an_open_circuit_skips_its_provider_until_a_probe_succeeds() {
    let one = Scripted::new("one", vec![Err(refused()), Err(refused())]);
    let policy = FailoverPolicy {
        breaker: BreakerPolicy {
            failures: 2,
            window: Duration::from_secs(60),
            cooldown: Duration::from_millis(200),
        },
        ..FailoverPolicy::default()
    };
    let gateway = gateway(&[&one], FallbackChains::new(), policy);
    for _ in 0..2 {
        assert!(run(&gateway, json!({"model": "first"})).await.is_err());
    }
    let skipped = run(&gateway, json!({"model": "first"})).await.unwrap_err();
    assert_eq!(
        (skipped.status(), skipped.code()),
        (503, Some("circuit_open"))
    );
    assert!(skipped.retry_after().is_some());
    assert_eq!(one.calls(), 2, "an open circuit is not called");
    assert_eq!(gateway.circuits().len(), 1);
    tokio::time::sleep(Duration::from_millis(250)).await;
    let (served, _) = run(&gateway, json!({"model": "first"})).await.unwrap();
    assert_eq!((served.as_str(), one.calls()), ("one", 3));
    assert!(
        gateway.circuits().is_empty(),
        "the probe's success closed it"
    );
}

#[tokio::test]
async fn a_request_chooses_its_fallbacks_and_providers() {
    let one = Scripted::new("one", vec![Err(refused())]);
    let one_b = Scripted::new("one-b", vec![]);
    let two = Scripted::new("two", vec![]);
    let gateway = gateway(
        &[&one, &one_b, &two],
        FallbackChains::new(),
        FailoverPolicy::default(),
    );
    // `models` names the fallbacks; without provider fallbacks `one-b` is not tried.
    let body =
        json!({"model": "first", "models": ["second"], "provider": {"allow_fallbacks": false}});
    let (served, _) = run(&gateway, body).await.unwrap();
    assert_eq!((served.as_str(), one_b.calls()), ("two", 0));
    // `order` puts a provider first; `only` and `ignore` filter.
    let (served, _) = run(
        &gateway,
        json!({"model": "first", "provider": {"order": ["one-b"]}}),
    )
    .await
    .unwrap();
    assert_eq!(served, "one-b");
    let refused_all = run(
        &gateway,
        json!({"model": "first", "provider": {"ignore": ["one", "one-b"]}}),
    )
    .await
    .unwrap_err();
    assert_eq!(
        (refused_all.status(), refused_all.param()),
        (400, Some("provider"))
    );
    let unknown = run(
        &gateway,
        json!({"model": "first", "models": ["no-such-model"]}),
    )
    .await
    .unwrap_err();
    assert_eq!((unknown.status(), unknown.param()), (400, Some("models")));
}

#[tokio::test]
async fn a_fallback_that_cannot_take_the_request_is_skipped_not_altered() {
    let mut catalog = catalog();
    let mut strict = (**catalog.get("second").unwrap()).clone();
    strict.max_n = 1;
    catalog.upsert(strict).unwrap();
    // Both of the request's two images are refused.
    let one = Scripted::new("one", vec![Err(refused()), Err(refused())]);
    let two = Scripted::new("two", vec![]);
    let gateway = Gateway::builder(catalog)
        .provider(one.clone())
        .provider(two.clone())
        .fallbacks(chain())
        .build();
    let validated = gateway
        .validate(request(json!({"model": "first", "n": 2})))
        .unwrap();
    assert!(validated.fallbacks.is_empty());
    assert_eq!(validated.skipped.len(), 1);
    assert!(
        validated.skipped[0].reason.contains("n must be"),
        "{:?}",
        validated.skipped
    );
    assert!(gateway
        .generate_images(&validated, &[], None, Sinks::default())
        .await
        .is_err());
    assert_eq!(two.calls(), 0);
}

#[tokio::test]
async fn a_full_line_at_one_provider_moves_on_without_an_upstream_call() {
    let one = Arc::new(Scripted {
        name: "one",
        delay: Duration::from_millis(500),
        ..Scripted::default()
    });
    let two = Scripted::new("two", vec![]);
    // One generation of `one` runs at a time and none may wait for it.
    let limits = imgproxy_core::gateway::GenerationLimits {
        per_provider: [("one".to_owned(), 1)].into(),
        max_waiting: 0,
        ..Default::default()
    };
    let gateway = Arc::new(
        Gateway::builder(catalog())
            .provider(one.clone())
            .provider(two.clone())
            .fallbacks(chain())
            .generation_limits(limits)
            .build(),
    );
    let busy = gateway.clone();
    let first = tokio::spawn(async move { run(&busy, json!({"model": "first"})).await });
    while one.calls() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (served, attempts) = run(&gateway, json!({"model": "first"})).await.unwrap();
    assert_eq!((served.as_str(), one.calls(), two.calls()), ("two", 1, 1));
    assert_eq!(attempts.log[0].outcome, "overloaded");
    assert_eq!(attempts.calls(), 1, "a full line is no upstream call");
    assert_eq!(first.await.unwrap().unwrap().0, "one");
}
