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
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ProviderError;

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

/// The request's choice of providers, as OpenRouter's `provider` object spells it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderRouting {
    /// Providers to try first, in this order; the model's other providers follow unless
    /// `allow_fallbacks` is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<Vec<String>>,
    /// The only providers that may serve the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub only: Option<Vec<String>>,
    /// Providers that may not serve the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore: Option<Vec<String>>,
    /// Whether another provider of the model may serve it when the first turns it away
    /// (default true). Fallback models in `models` are tried either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_fallbacks: Option<bool>,
}

impl ProviderRouting {
    /// Whether `provider` may serve the request.
    pub fn allows(&self, provider: &str) -> bool {
        let named = |list: &Option<Vec<String>>| list.iter().flatten().any(|p| p == provider);
        (self.only.is_none() || named(&self.only)) && !named(&self.ignore)
    }

    /// Where `provider` stands in the request's order (unnamed ones after, as they were).
    pub fn rank(&self, provider: &str) -> usize {
        self.order
            .iter()
            .flatten()
            .position(|p| p == provider)
            .unwrap_or(usize::MAX)
    }

    /// Every provider name the routing mentions.
    pub fn named(&self) -> impl Iterator<Item = &String> {
        [&self.order, &self.only, &self.ignore]
            .into_iter()
            .flatten()
            .flatten()
    }
}

/// A candidate that could not take the request, and why (it is never altered to fit).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    /// The model id.
    pub model: String,
    /// Its provider.
    pub provider: String,
    /// Why it was passed over.
    pub reason: String,
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
    /// Upstream calls actually made (circuit skips are not calls).
    pub fn calls(&self) -> u32 {
        let calls = self
            .log
            .iter()
            .filter(|a| a.outcome != CIRCUIT_OPEN)
            .count();
        u32::try_from(calls).unwrap_or(u32::MAX)
    }
}

/// The outcome recorded for a candidate skipped because its provider's circuit is open.
pub const CIRCUIT_OPEN: &str = "circuit_open";

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

    /// Leave to call `provider`, or `None` while its circuit is open (or its one probe is
    /// under way).
    pub fn admit(&self, provider: &str) -> Option<Admitted> {
        if self.policy.failures == 0 {
            return Some(Admitted { probe: false });
        }
        let mut states = self.states();
        let state = states.entry(provider.to_owned()).or_default();
        match state.open_until {
            None => Some(Admitted { probe: false }),
            Some(until) if Instant::now() < until => None,
            Some(_) if state.probing => None,
            Some(_) => {
                state.probing = true;
                publish(provider, Circuit::HalfOpen);
                Some(Admitted { probe: true })
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

fn publish(provider: &str, circuit: Circuit) {
    crate::telemetry::circuit_state(provider, circuit.gauge());
}

/// The operator's fallback chains: model id → models to try after it, in order.
pub type FallbackChains = HashMap<String, Vec<String>>;

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
    fn routing_filters_and_orders_providers() {
        let routing = ProviderRouting {
            order: Some(vec!["b".into()]),
            ignore: Some(vec!["c".into()]),
            ..ProviderRouting::default()
        };
        assert!(routing.allows("a") && routing.allows("b") && !routing.allows("c"));
        assert!(routing.rank("b") < routing.rank("a"));
        let only = ProviderRouting {
            only: Some(vec!["a".into()]),
            ..ProviderRouting::default()
        };
        assert!(only.allows("a") && !only.allows("b"));
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
        assert!(breakers.admit("p").is_none(), "open after three failures");
        assert_eq!(breakers.tripped(), vec![("p".to_owned(), Circuit::Open)]);
        std::thread::sleep(Duration::from_millis(250));
        let probe = breakers.admit("p").expect("one probe after the cool-down");
        assert!(breakers.admit("p").is_none(), "only one probe at a time");
        breakers.report("p", probe, false);
        assert!(breakers.tripped().is_empty());
        assert!(breakers.admit("p").is_some());
        // A failed probe opens it again.
        for _ in 0..3 {
            let admitted = breakers.admit("q").expect("closed");
            breakers.report("q", admitted, true);
        }
        std::thread::sleep(Duration::from_millis(250));
        let probe = breakers.admit("q").expect("probe");
        breakers.report("q", probe, true);
        assert!(breakers.admit("q").is_none());
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
        assert!(breakers.admit("p").is_some());
    }
}
