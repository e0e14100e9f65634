//! Failover that cannot bill an image twice: which model variants may serve a request and in
//! which order (the model's other providers, the operator's fallback chains, the request's
//! own `models` and `provider`), the one rule of when a failed attempt may move on, the
//! record of every attempt, and the circuit breaker of each provider.
//!
//! The rule, the same for every provider: only a failure raised before the upstream could
//! have started work ([`ProviderError::is_pre_start`]: unreachable, 429, 503 with
//! `Retry-After`, a rejected key) is retried or sent elsewhere, and only while no upstream
//! job was reported and no partial image went to the client. A timeout, a 5xx, a refusal of
//! the content or of the request ends the request where it is.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
    time::{Duration, Instant},
};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::validate::Skipped;
use crate::{
    request::ProviderRouting, validate, Catalog, Error, ImageRequest, ModelSpec, ProviderError,
    Result, ValidatedRequest,
};
use std::sync::Arc;

/// How far failover goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailoverPolicy {
    /// Upstream attempts per request at most, retries and fallbacks included.
    pub max_attempts: u32,
    /// Longest `Retry-After` waited for before retrying the same provider; a longer one moves
    /// on to the next candidate instead.
    pub max_retry_after: Duration,
    /// When a provider's circuit opens and for how long.
    pub breaker: BreakerPolicy,
}

impl Default for FailoverPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            max_retry_after: Duration::from_secs(10),
            breaker: BreakerPolicy::default(),
        }
    }
}

/// When a provider's circuit opens: after `failures` consecutive pre-start failures, the
/// first of them at most `window` ago; it then stays open for `cooldown`, after which one
/// probe goes through (and closes it, or opens it again).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerPolicy {
    /// Consecutive pre-start failures that open the circuit (0 disables breakers).
    pub failures: u32,
    /// The span those failures must fall within.
    pub window: Duration,
    /// How long an open circuit skips its provider.
    pub cooldown: Duration,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        Self {
            failures: 5,
            window: Duration::from_secs(60),
            cooldown: Duration::from_secs(30),
        }
    }
}

/// One upstream attempt of a request, as the ledger and the logs keep it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Attempt {
    /// The provider called.
    pub provider: String,
    /// The model id.
    pub model: String,
    /// `ok`, a [`ProviderError::kind`], or `circuit_open` for a provider skipped unasked.
    pub outcome: String,
    /// How long it took, in milliseconds.
    pub duration_ms: u64,
}

impl Attempt {
    /// An attempt at `model` that ended with `outcome` after `elapsed`.
    pub fn of(model: &ModelSpec, outcome: &str, elapsed: Duration) -> Self {
        Self {
            provider: model.provider.clone(),
            model: model.id.clone(),
            outcome: outcome.to_owned(),
            duration_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

/// How a job token reported by a fallback (candidate `index` > 0) starts: a resumed run must
/// go back to the provider that started the job. The request's own model's tokens are bare.
const FALLBACK_JOB: &str = "fallback:";

/// The token a task records for a job that candidate `index` started.
pub fn job_token(index: usize, token: &str) -> String {
    if index == 0 {
        token.to_owned()
    } else {
        format!("{FALLBACK_JOB}{index}:{token}")
    }
}

/// The candidate that started a run's recorded jobs, and the jobs as its provider knows them.
pub fn resumed_jobs(jobs: &BTreeMap<u32, String>) -> (usize, BTreeMap<u32, String>) {
    let mut served = 0;
    let bare = jobs
        .iter()
        .map(|(first_index, token)| {
            let marked = token
                .strip_prefix(FALLBACK_JOB)
                .and_then(|rest| rest.split_once(':'))
                .and_then(|(index, bare)| Some((index.parse::<usize>().ok()?, bare)));
            match marked {
                Some((index, bare)) => {
                    served = index;
                    (*first_index, bare.to_owned())
                }
                None => (*first_index, token.clone()),
            }
        })
        .collect();
    (served, bare)
}

/// What happened on the way to a request's images: every attempt, which candidate served
/// (0 is the request's own model variant) and how many times it moved on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attempts {
    /// Every attempt, in order.
    pub log: Vec<Attempt>,
    /// Times the request moved to another provider or model.
    pub fallbacks: u32,
    /// The candidate that served: 0 is the request itself, `i` its fallback `i - 1`.
    pub served: usize,
}

impl Attempts {
    /// Upstream calls actually made (circuit skips and full lines are not calls).
    pub fn calls(&self) -> u32 {
        let calls = self
            .log
            .iter()
            .filter(|a| !UNCALLED.contains(&a.outcome.as_str()))
            .count();
        u32::try_from(calls).unwrap_or(u32::MAX)
    }
}

/// The outcome recorded for a candidate skipped because its provider's circuit is open.
pub const CIRCUIT_OPEN: &str = "circuit_open";

/// Outcomes of attempts that never reached the upstream: an open circuit, or the provider's
/// generation line here full (`Error::Overloaded`).
const UNCALLED: [&str; 2] = [CIRCUIT_OPEN, "overloaded"];

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Try the same candidate again after this wait.
    Retry(Duration),
    /// Try the next candidate.
    MoveOn,
    /// Stop: the failure is final.
    Stop,
}

impl FailoverPolicy {
    /// What follows a failed attempt: `started` says whether the upstream reported a job or
    /// a partial image went out (the attempt is then final, whatever the error), `made` is
    /// how many attempts were made so far.
    pub fn next(&self, error: &ProviderError, started: bool, made: u32) -> Next {
        if started || !error.is_pre_start() || made >= self.max_attempts {
            return Next::Stop;
        }
        match error.retry_after() {
            Some(wait) if wait <= self.max_retry_after && !error.disables_key() => {
                Next::Retry(wait)
            }
            _ => Next::MoveOn,
        }
    }
}

/// The state of one provider's circuit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Circuit {
    /// Calls go through.
    Closed,
    /// Calls are skipped until the cool-down ends.
    Open,
    /// The cool-down ended: one probe is under way, the rest are skipped.
    HalfOpen,
}

impl Circuit {
    /// The value of the circuit gauge: 0 closed, 1 open, 2 half-open.
    pub fn gauge(self) -> f64 {
        match self {
            Self::Closed => 0.0,
            Self::Open => 1.0,
            Self::HalfOpen => 2.0,
        }
    }

    /// Its name, for readiness detail.
    pub fn name(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

#[derive(Debug, Default)]
struct BreakerState {
    failures: u32,
    first_failure: Option<Instant>,
    open_until: Option<Instant>,
    probing: bool,
}

/// The circuit breakers of every provider, by provider name.
#[derive(Debug, Default)]
pub struct Breakers {
    policy: BreakerPolicy,
    states: Mutex<HashMap<String, BreakerState>>,
}

/// Leave to call a provider, from [`Breakers::admit`]; report how it went.
#[derive(Debug)]
#[must_use]
pub struct Admitted {
    probe: bool,
}

impl Breakers {
    /// Breakers that open as `policy` says.
    pub fn new(policy: BreakerPolicy) -> Self {
        Self {
            policy,
            states: Mutex::new(HashMap::new()),
        }
    }

    fn states(&self) -> std::sync::MutexGuard<'_, HashMap<String, BreakerState>> {
        // A panic elsewhere cannot leave a breaker half-written: every update is one step.
        self.states.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Leave to call `provider`; while its circuit is open (or its one probe is under way),
    /// how long until a probe may go.
    pub fn admit(&self, provider: &str) -> Result<Admitted, Duration> {
        if self.policy.failures == 0 {
            return Ok(Admitted { probe: false });
        }
        let now = Instant::now();
        let mut states = self.states();
        let state = states.entry(provider.to_owned()).or_default();
        match state.open_until {
            None => Ok(Admitted { probe: false }),
            Some(until) if now < until => Err(until - now),
            Some(_) if state.probing => Err(PROBE_WAIT),
            Some(_) => {
                state.probing = true;
                publish(provider, Circuit::HalfOpen);
                Ok(Admitted { probe: true })
            }
        }
    }

    /// An admitted call that never reached the provider (no slot, no such provider): it says
    /// nothing of the provider, but a probe's turn passes to the next call.
    pub fn abandon(&self, provider: &str, admitted: Admitted) {
        if admitted.probe {
            if let Some(state) = self.states().get_mut(provider) {
                state.probing = false;
            }
        }
    }

    /// Reports how an admitted call went: `pre_start_failure` when the upstream turned it
    /// away before starting work. Any other outcome, failures included, shows the provider
    /// is up and closes its circuit.
    pub fn report(&self, provider: &str, admitted: Admitted, pre_start_failure: bool) {
        if self.policy.failures == 0 {
            return;
        }
        let now = Instant::now();
        let mut states = self.states();
        let state = states.entry(provider.to_owned()).or_default();
        if admitted.probe {
            state.probing = false;
        }
        if !pre_start_failure {
            if state.open_until.is_some() || state.failures > 0 {
                *state = BreakerState::default();
                publish(provider, Circuit::Closed);
            }
            return;
        }
        if admitted.probe {
            state.open_until = Some(now + self.policy.cooldown);
            publish(provider, Circuit::Open);
            return;
        }
        let window_passed = state
            .first_failure
            .is_some_and(|first| now.duration_since(first) > self.policy.window);
        if state.failures == 0 || window_passed {
            state.failures = 0;
            state.first_failure = Some(now);
        }
        state.failures += 1;
        if state.failures >= self.policy.failures && state.open_until.is_none() {
            state.open_until = Some(now + self.policy.cooldown);
            tracing::warn!(
                provider,
                failures = state.failures,
                cooldown_secs = self.policy.cooldown.as_secs(),
                "circuit opened: skipping the provider for the cool-down"
            );
            publish(provider, Circuit::Open);
        }
    }

    /// Every provider whose circuit is not closed, with its state.
    pub fn tripped(&self) -> Vec<(String, Circuit)> {
        let now = Instant::now();
        let mut tripped: Vec<_> = self
            .states()
            .iter()
            .filter_map(|(provider, state)| {
                let until = state.open_until?;
                let circuit = if now < until && !state.probing {
                    Circuit::Open
                } else {
                    Circuit::HalfOpen
                };
                Some((provider.clone(), circuit))
            })
            .collect();
        tripped.sort_by(|a, b| a.0.cmp(&b.0));
        tripped
    }
}

/// What a caller skipped during a probe is told to wait.
const PROBE_WAIT: Duration = Duration::from_secs(1);

fn publish(provider: &str, circuit: Circuit) {
    crate::telemetry::circuit_state(provider, circuit.gauge());
}

/// The operator's fallback chains: model id → models to try after it, in order.
pub type FallbackChains = HashMap<String, Vec<String>>;

/// Fallback models one request may name at most.
pub const MAX_REQUEST_MODELS: usize = 8;

/// Validates `request` for its model, as [`validate::validate`] does, and plans what may
/// serve it if that model's provider turns it away: the model's other providers, then the
/// request's `models` (or else the operator's chain for the model) with their providers, all
/// as the request's `provider` allows and orders. Each candidate is validated for its own
/// model; one that cannot take the request is recorded as skipped, never altered to fit.
pub fn route(
    catalog: &Catalog,
    mut request: ImageRequest,
    default_model: &str,
    serves: &dyn Fn(&ModelSpec) -> bool,
    chains: &FallbackChains,
) -> Result<ValidatedRequest> {
    let models = request.models.take();
    let routing = request.provider.take().unwrap_or_default();
    if models
        .as_ref()
        .is_some_and(|m| m.len() > MAX_REQUEST_MODELS)
    {
        return Err(Error::invalid_param(
            "models",
            format!("`models` names at most {MAX_REQUEST_MODELS} fallback models"),
        ));
    }
    let resolved = catalog.resolve(request.model.as_deref().unwrap_or(default_model), serves)?;
    let variants = allowed_variants(catalog, &resolved.id, &routing, serves);
    let Some(first) = variants.first() else {
        let served_by: Vec<_> = catalog
            .variants(&resolved.id)
            .iter()
            .filter(|m| serves(m))
            .map(|m| format!("`{}`", m.provider))
            .collect();
        return Err(Error::invalid_param(
            "provider",
            format!(
                "no provider that `provider` allows serves the model `{}`; it is served by {}",
                resolved.id,
                served_by.join(", ")
            ),
        ));
    };
    let mut primary = validate::validate_for(first.clone(), &request)?;
    let one_provider_each = routing.allow_fallbacks == Some(false);
    let mut candidates: Vec<Arc<ModelSpec>> = if one_provider_each {
        Vec::new()
    } else {
        variants[1..].to_vec()
    };
    let asked = models.is_some();
    let chain =
        models.unwrap_or_else(|| chains.get(&primary.model.id).cloned().unwrap_or_default());
    for name in &chain {
        let fallback = match catalog.resolve(name, serves) {
            Ok(model) => model,
            Err(error) if asked => {
                return Err(Error::invalid_param("models", error.public_message()));
            }
            Err(error) => {
                primary.skipped.push(Skipped {
                    model: name.clone(),
                    provider: String::new(),
                    reason: error.public_message(),
                });
                continue;
            }
        };
        let variants = allowed_variants(catalog, &fallback.id, &routing, serves);
        let take = if one_provider_each { 1 } else { variants.len() };
        candidates.extend(variants.into_iter().take(take));
    }
    for model in candidates {
        let same = |m: &ModelSpec| m.id == model.id && m.provider == model.provider;
        if same(&primary.model) || primary.fallbacks.iter().any(|f| same(&f.model)) {
            continue;
        }
        match validate::validate_for(model.clone(), &request) {
            Ok(fallback) => primary.fallbacks.push(fallback),
            Err(error) => primary.skipped.push(Skipped {
                model: model.id.clone(),
                provider: model.provider.clone(),
                reason: error.public_message(),
            }),
        }
    }
    for skipped in &primary.skipped {
        tracing::debug!(model = %skipped.model, provider = %skipped.provider, reason = %skipped.reason, "fallback skipped");
    }
    Ok(primary)
}

/// The live, served variants of model `id` that `routing` allows, in its order (the
/// catalog's preference where it names none).
fn allowed_variants(
    catalog: &Catalog,
    id: &str,
    routing: &ProviderRouting,
    serves: &dyn Fn(&ModelSpec) -> bool,
) -> Vec<Arc<ModelSpec>> {
    let mut variants: Vec<Arc<ModelSpec>> = catalog
        .variants(id)
        .into_iter()
        .filter(|m| m.retired.is_none() && serves(m) && routing.allows(&m.provider))
        .cloned()
        .collect();
    variants.sort_by_key(|m| routing.rank(&m.provider));
    variants
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate_limited(secs: u64) -> ProviderError {
        ProviderError::RateLimited {
            retry_after: Some(Duration::from_secs(secs)),
        }
    }

    #[test]
    fn only_failures_before_the_upstream_started_move_on() {
        let policy = FailoverPolicy::default();
        assert_eq!(
            policy.next(&rate_limited(1), false, 1),
            Next::Retry(Duration::from_secs(1))
        );
        assert_eq!(policy.next(&rate_limited(60), false, 1), Next::MoveOn);
        let refused = ProviderError::Unavailable {
            message: "cannot reach upstream".into(),
            retry_after: None,
        };
        assert_eq!(policy.next(&refused, false, 1), Next::MoveOn);
        assert_eq!(
            policy.next(&ProviderError::Unauthorized { status: 401 }, false, 1),
            Next::MoveOn
        );
        // Started upstream, or out of attempts: final whatever the error.
        assert_eq!(policy.next(&refused, true, 1), Next::Stop);
        assert_eq!(policy.next(&refused, false, 3), Next::Stop);
        // Ambiguous or the client's doing: final.
        for error in [
            ProviderError::Timeout,
            ProviderError::Failed {
                message: "HTTP 500".into(),
            },
            ProviderError::ModerationBlocked {
                message: "no".into(),
            },
            ProviderError::InvalidRequest {
                message: "bad".into(),
                param: None,
                code: None,
            },
        ] {
            assert_eq!(policy.next(&error, false, 1), Next::Stop, "{error:?}");
        }
    }

    #[test]
    fn a_circuit_opens_after_consecutive_failures_and_one_probe_closes_it() {
        let breakers = Breakers::new(BreakerPolicy {
            failures: 3,
            window: Duration::from_secs(60),
            cooldown: Duration::from_millis(200),
        });
        for _ in 0..3 {
            let admitted = breakers.admit("p").expect("closed");
            breakers.report("p", admitted, true);
        }
        assert!(breakers.admit("p").is_err(), "open after three failures");
        assert_eq!(breakers.tripped(), vec![("p".to_owned(), Circuit::Open)]);
        std::thread::sleep(Duration::from_millis(250));
        let probe = breakers.admit("p").expect("one probe after the cool-down");
        assert!(breakers.admit("p").is_err(), "only one probe at a time");
        breakers.report("p", probe, false);
        assert!(breakers.tripped().is_empty());
        assert!(breakers.admit("p").is_ok());
        // A failed probe opens it again.
        for _ in 0..3 {
            let admitted = breakers.admit("q").expect("closed");
            breakers.report("q", admitted, true);
        }
        std::thread::sleep(Duration::from_millis(250));
        let probe = breakers.admit("q").expect("probe");
        breakers.report("q", probe, true);
        assert!(breakers.admit("q").is_err());
    }

    #[test]
    fn fallback_job_tokens_lead_back_to_their_candidate() {
        let jobs = BTreeMap::from([
            (0, job_token(2, "{\"id\":\"p:1\"}")),
            (1, job_token(2, "j")),
        ]);
        let (served, bare) = resumed_jobs(&jobs);
        assert_eq!(served, 2);
        assert_eq!(bare[&0], "{\"id\":\"p:1\"}");
        assert_eq!(bare[&1], "j");
        let own = BTreeMap::from([(0, job_token(0, "fallback-free"))]);
        assert_eq!(resumed_jobs(&own), (0, own.clone()));
    }

    #[test]
    fn a_success_in_between_resets_the_count() {
        let breakers = Breakers::new(BreakerPolicy {
            failures: 2,
            ..BreakerPolicy::default()
        });
        let a = breakers.admit("p").unwrap();
        breakers.report("p", a, true);
        let a = breakers.admit("p").unwrap();
        breakers.report("p", a, false);
        let a = breakers.admit("p").unwrap();
        breakers.report("p", a, true);
        assert!(breakers.admit("p").is_ok());
    }
}
