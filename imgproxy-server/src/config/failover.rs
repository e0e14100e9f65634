//! Failover (`[failover]` and `[fallbacks]`, declared in `config`): how many attempts a
//! request may make, how long a `Retry-After` is waited for, when a provider's circuit opens,
//! and each model's chain of fallback models. The rules themselves are
//! `imgproxy_core::failover`'s.

use std::time::Duration;

use imgproxy_core::failover::{BreakerPolicy, FailoverPolicy, FallbackChains};

use super::{Env, FailoverConfig};

/// Upstream attempts per request at most, retries and fallbacks included.
pub const ENV_FAILOVER_MAX_ATTEMPTS: &str = "IMGPROXY_FAILOVER_MAX_ATTEMPTS";
/// Longest `Retry-After` waited for before retrying the same provider.
pub const ENV_FAILOVER_MAX_RETRY_AFTER_SECS: &str = "IMGPROXY_FAILOVER_MAX_RETRY_AFTER_SECS";
/// Consecutive pre-start failures that open a provider's circuit (0: no breakers).
pub const ENV_BREAKER_FAILURES: &str = "IMGPROXY_BREAKER_FAILURES";
/// Seconds an open circuit skips its provider before one probe goes through.
pub const ENV_BREAKER_COOLDOWN_SECS: &str = "IMGPROXY_BREAKER_COOLDOWN_SECS";

/// Attempts a request may be allowed at most: each can wait up to a deadline.
const MAX_ATTEMPTS_LIMIT: u32 = 10;

impl FailoverConfig {
    /// The file's table with the environment over it.
    pub(super) fn policy(self, env: &dyn Env) -> anyhow::Result<FailoverPolicy> {
        let defaults = FailoverPolicy::default();
        let max_attempts = env
            .over(ENV_FAILOVER_MAX_ATTEMPTS, self.max_attempts)?
            .unwrap_or(defaults.max_attempts);
        anyhow::ensure!(
            (1..=MAX_ATTEMPTS_LIMIT).contains(&max_attempts),
            "`failover.max_attempts` ({ENV_FAILOVER_MAX_ATTEMPTS}) must be from 1 to {MAX_ATTEMPTS_LIMIT}"
        );
        let secs =
            |value: Option<u64>, default: Duration| value.map_or(default, Duration::from_secs);
        let breaker = BreakerPolicy {
            failures: env
                .over(ENV_BREAKER_FAILURES, self.breaker_failures)?
                .unwrap_or(defaults.breaker.failures),
            window: secs(self.breaker_window_secs, defaults.breaker.window),
            cooldown: secs(
                env.over(ENV_BREAKER_COOLDOWN_SECS, self.breaker_cooldown_secs)?,
                defaults.breaker.cooldown,
            ),
        };
        anyhow::ensure!(
            !breaker.window.is_zero() && !breaker.cooldown.is_zero(),
            "`failover.breaker_window_secs` and `failover.breaker_cooldown_secs` must be at least 1"
        );
        Ok(FailoverPolicy {
            max_attempts,
            max_retry_after: secs(
                env.over(ENV_FAILOVER_MAX_RETRY_AFTER_SECS, self.max_retry_after_secs)?,
                defaults.max_retry_after,
            ),
            breaker,
        })
    }
}

impl super::Settings {
    /// The `[fallbacks]` table as the gateway takes it.
    pub fn fallback_chains(&self) -> FallbackChains {
        self.fallbacks
            .iter()
            .map(|(model, chain)| (model.clone(), chain.clone()))
            .collect()
    }
}
