//! The pool of upstream keys of one provider: which key a call uses (the least busy live one,
//! ties taken in turn), which keys are out (rejected by the upstream, or their account out of
//! quota: until a restart), which are cooling after a 429, and which key an upstream job
//! belongs to (its token carries the key's fingerprint). Calling through a key is the
//! provider's business, not this file's.

use std::{
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

use super::api::ApiClient;
use crate::{KeyStatus, ProviderError};

/// The longest a key that answered 429 is passed over for the others.
const MAX_COOLING: Duration = Duration::from_secs(60);
/// How long a key that answered 429 without saying how long to wait is passed over.
const DEFAULT_COOLING: Duration = Duration::from_secs(1);
/// What starts a job token that names the key it was started with: `key:<fingerprint>:`.
const TOKEN_MARK: &str = "key:";

/// The keyed clients of one provider and what is known of each.
#[derive(Debug)]
pub(super) struct KeyPool {
    /// The provider, for logs and metrics.
    provider: String,
    /// One client per key, the first key first.
    keys: Vec<ApiClient>,
    state: Mutex<PoolState>,
}

#[derive(Debug)]
struct PoolState {
    keys: Vec<KeyState>,
    /// Where the next search for the least busy key starts, so that ties take turns.
    next: usize,
    /// The answer that took the last key out: what every call gets once none is left.
    last_out: Option<ProviderError>,
}

#[derive(Debug, Default)]
struct KeyState {
    in_flight: usize,
    /// The answer that took it out of the pool.
    out: Option<ProviderError>,
    /// Until when the others are preferred, after it answered 429.
    cooling_until: Option<Instant>,
}

/// One call's use of one key: counted as in flight until dropped.
#[derive(Debug)]
pub(super) struct Lease<'a> {
    pool: &'a KeyPool,
    index: usize,
}

impl Lease<'_> {
    /// The client of the leased key.
    pub(super) fn api(&self) -> &ApiClient {
        &self.pool.keys[self.index]
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let mut state = self.pool.state();
        let key = &mut state.keys[self.index];
        key.in_flight = key.in_flight.saturating_sub(1);
    }
}

impl KeyPool {
    /// The pool of `keys` (at least one) of `provider`.
    pub(super) fn new(provider: &str, keys: Vec<ApiClient>) -> Result<Self, ProviderError> {
        if keys.is_empty() {
            return Err(super::failure::failed(format!(
                "provider `{provider}` has no API key"
            )));
        }
        let state = PoolState {
            keys: keys.iter().map(|_| KeyState::default()).collect(),
            next: 0,
            last_out: None,
        };
        Ok(Self {
            provider: provider.to_owned(),
            keys,
            state: Mutex::new(state),
        })
    }

    fn state(&self) -> MutexGuard<'_, PoolState> {
        // Every update is one step under the lock: a panic elsewhere leaves nothing half-done.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lease(&self, state: &mut PoolState, index: usize) -> Lease<'_> {
        state.keys[index].in_flight += 1;
        Lease { pool: self, index }
    }

    /// The error of a call when no key is left.
    fn none_left(state: &PoolState) -> ProviderError {
        state
            .last_out
            .clone()
            .unwrap_or(ProviderError::Unauthorized { status: 401 })
    }

    /// The live key with the fewest calls in flight, keys cooling after a 429 last; ties are
    /// taken in turn. The error that took the last key out when none is live.
    pub(super) fn least_busy(&self) -> Result<Lease<'_>, ProviderError> {
        let now = Instant::now();
        let mut state = self.state();
        let count = state.keys.len();
        let chosen = (0..count)
            .map(|offset| (state.next + offset) % count)
            .filter(|&index| state.keys[index].out.is_none())
            .min_by_key(|&index| {
                let key = &state.keys[index];
                let cooling = key.cooling_until.is_some_and(|until| now < until);
                (cooling, key.in_flight)
            });
        let Some(index) = chosen else {
            return Err(Self::none_left(&state));
        };
        state.next = (index + 1) % count;
        Ok(self.lease(&mut state, index))
    }

    /// The key that started the upstream job `token` and the token as the adapter made it.
    /// A token that names no key of this pool (one from before pools, or from a key no longer
    /// configured) is tried with the first live key.
    pub(super) fn owner<'t>(&self, token: &'t str) -> Result<(Lease<'_>, &'t str), ProviderError> {
        let named = token.strip_prefix(TOKEN_MARK).and_then(|rest| {
            let (fingerprint, inner) = rest.split_once(':')?;
            Some((fingerprint, inner))
        });
        if let Some((fingerprint, inner)) = named {
            if let Some(index) = self
                .keys
                .iter()
                .position(|k| k.fingerprint() == fingerprint)
            {
                // Its own key even when out: no other account can see the job, and an
                // account out of quota may still read a job it started.
                return Ok((self.lease(&mut self.state(), index), inner));
            }
        }
        let inner = named.map_or(token, |(_, inner)| inner);
        let mut state = self.state();
        let Some(index) = state.keys.iter().position(|key| key.out.is_none()) else {
            return Err(Self::none_left(&state));
        };
        Ok((self.lease(&mut state, index), inner))
    }

    /// `token`, a job the adapter started with `lease`'s key, as the provider reports it: with
    /// the key's fingerprint in front when the pool has more than one key to choose from.
    pub(super) fn job_token(&self, lease: &Lease<'_>, token: &str) -> String {
        match self.keys.len() {
            1 => token.to_owned(),
            _ => format!("{TOKEN_MARK}{}:{token}", lease.api().fingerprint()),
        }
    }

    /// What `lease`'s call came to: a rejected key or an account out of quota takes the key
    /// out; a 429 passes it over for a while; a success ends that. Nothing else is the key's
    /// doing (an unreachable upstream is the same for every key).
    pub(super) fn report<T>(&self, lease: &Lease<'_>, result: &Result<T, ProviderError>) {
        let mut state = self.state();
        let key = &mut state.keys[lease.index];
        match result {
            Ok(_) => key.cooling_until = None,
            Err(error) if error.disables_key() => {
                if key.out.is_none() {
                    key.out = Some(error.clone());
                    state.last_out = Some(error.clone());
                    tracing::warn!(
                        provider = %self.provider,
                        key = lease.api().fingerprint(),
                        reason = error.kind(),
                        "upstream key taken out of the pool until a restart"
                    );
                }
            }
            Err(ProviderError::RateLimited { retry_after }) => {
                let wait = retry_after.unwrap_or(DEFAULT_COOLING).min(MAX_COOLING);
                key.cooling_until = Some(Instant::now() + wait);
            }
            Err(_) => {}
        }
        let disabled = state.keys.iter().filter(|k| k.out.is_some()).count();
        crate::telemetry::upstream_keys(&self.provider, state.keys.len() - disabled, disabled);
    }

    /// Every key's state, first key first.
    pub(super) fn statuses(&self) -> Vec<KeyStatus> {
        let state = self.state();
        self.keys
            .iter()
            .zip(&state.keys)
            .map(|(api, key)| KeyStatus {
                fingerprint: api.fingerprint().to_owned(),
                state: if key.out.is_some() {
                    "disabled"
                } else {
                    "live"
                },
                reason: key.out.as_ref().map(ProviderError::kind),
                in_flight: key.in_flight,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use reqwest::Url;

    use super::*;
    use crate::upstream::KeyHeader;

    fn pool_of(keys: &[&str]) -> KeyPool {
        let root = Url::parse("https://api.example.com/").unwrap();
        let clients = keys
            .iter()
            .map(|key| {
                ApiClient::new(root.clone(), KeyHeader::BEARER, key, Duration::from_secs(5))
                    .unwrap()
            })
            .collect();
        KeyPool::new("example", clients).unwrap()
    }

    fn fingerprint_of(lease: &Lease<'_>) -> String {
        lease.api().fingerprint().to_owned()
    }

    const REJECTED: Result<(), ProviderError> = Err(ProviderError::Unauthorized { status: 401 });

    #[test]
    fn the_least_busy_key_is_taken_and_ties_take_turns() {
        let pool = pool_of(&["k1", "k2", "k3"]);
        let [k1, k2, k3] = [0, 1, 2].map(|i| pool.keys[i].fingerprint().to_owned());
        // Idle keys take turns.
        let turns: Vec<_> = (0..4)
            .map(|_| fingerprint_of(&pool.least_busy().unwrap()))
            .collect();
        assert_eq!(turns, [k1.clone(), k2.clone(), k3.clone(), k1.clone()]);
        // A busy key is passed over until the others are as busy.
        let first = pool.least_busy().unwrap();
        assert_eq!(fingerprint_of(&first), k2);
        let second = pool.least_busy().unwrap();
        assert_eq!(fingerprint_of(&second), k3);
        let third = pool.least_busy().unwrap();
        assert_eq!(fingerprint_of(&third), k1);
        drop(second);
        assert_eq!(fingerprint_of(&pool.least_busy().unwrap()), k3);
        let in_flight: Vec<_> = pool.statuses().iter().map(|s| s.in_flight).collect();
        assert_eq!(in_flight, [1, 1, 0]);
    }

    #[test]
    fn a_rejected_key_is_taken_out_and_reported_and_the_last_error_stays() {
        let pool = pool_of(&["k1", "k2"]);
        let lease = pool.least_busy().unwrap();
        let bad = fingerprint_of(&lease);
        pool.report(&lease, &REJECTED);
        drop(lease);
        for _ in 0..3 {
            assert_ne!(fingerprint_of(&pool.least_busy().unwrap()), bad);
        }
        let statuses = pool.statuses();
        assert_eq!(statuses[0].fingerprint, bad);
        assert_eq!(
            (statuses[0].state, statuses[0].reason),
            ("disabled", Some("unauthorized"))
        );
        assert_eq!((statuses[1].state, statuses[1].reason), ("live", None));
        // The last key out: every call gets the answer that took it out.
        let lease = pool.least_busy().unwrap();
        let quota = ProviderError::QuotaExhausted {
            message: "insufficient_quota".into(),
        };
        pool.report::<()>(&lease, &Err(quota.clone()));
        drop(lease);
        assert_eq!(pool.least_busy().unwrap_err(), quota);
        assert_eq!(pool.owner("job").unwrap_err(), quota);
    }

    #[test]
    fn failures_that_are_not_the_keys_leave_it_in_and_a_429_cools_it() {
        let pool = pool_of(&["k1", "k2"]);
        let lease = pool.least_busy().unwrap();
        let limited = fingerprint_of(&lease);
        for error in [
            ProviderError::Unavailable {
                message: "connection refused".into(),
                retry_after: None,
            },
            ProviderError::Timeout,
            ProviderError::RateLimited {
                retry_after: Some(Duration::from_secs(30)),
            },
        ] {
            pool.report::<()>(&lease, &Err(error));
        }
        drop(lease);
        assert!(pool.statuses().iter().all(|s| s.state == "live"));
        // Cooling: the other key is taken even when it is busier.
        let other = pool.least_busy().unwrap();
        assert_ne!(fingerprint_of(&other), limited);
        let again = pool.least_busy().unwrap();
        assert_ne!(fingerprint_of(&again), limited);
        // A success ends the cooling.
        let (cooled, _) = pool.owner("job").unwrap();
        assert_eq!(fingerprint_of(&cooled), limited);
        pool.report(&cooled, &Ok(()));
        drop(cooled);
        assert_eq!(fingerprint_of(&pool.least_busy().unwrap()), limited);
    }

    #[test]
    fn a_job_token_names_its_key_and_resumes_with_it() {
        let pool = pool_of(&["k1", "k2"]);
        let _busy = pool.least_busy().unwrap();
        let lease = pool.least_busy().unwrap();
        let token = pool.job_token(&lease, "https://api.example.com/poll?id=1:2");
        assert_eq!(
            token,
            format!(
                "key:{}:https://api.example.com/poll?id=1:2",
                fingerprint_of(&lease)
            )
        );
        // Even when that key is out: no other key can see its job.
        pool.report(&lease, &REJECTED);
        let (owner, inner) = pool.owner(&token).unwrap();
        assert_eq!(fingerprint_of(&owner), fingerprint_of(&lease));
        assert_eq!(inner, "https://api.example.com/poll?id=1:2");
        // Tokens from before pools, or of a key no longer configured: the first live key.
        let first = pool.keys[0].fingerprint().to_owned();
        let (owner, inner) = pool.owner("pred-123").unwrap();
        assert_eq!((fingerprint_of(&owner), inner), (first.clone(), "pred-123"));
        let (owner, inner) = pool.owner("key:00000000:pred-9").unwrap();
        assert_eq!((fingerprint_of(&owner), inner), (first, "pred-9"));
        // One key: the token is the adapter's own.
        let single = pool_of(&["k1"]);
        let lease = single.least_busy().unwrap();
        assert_eq!(single.job_token(&lease, "pred-1"), "pred-1");
    }
}
