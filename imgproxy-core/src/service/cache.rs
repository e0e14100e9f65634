//! The generation cache's two mechanisms: the key (a hash of the canonical validated request,
//! scoped to a tenant) and single-flight (identical requests in flight at once share one
//! upstream call). Where entries are kept is `db::records`; the flow is `serving`.

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
};

use serde_json::json;
use sha2::{Digest as _, Sha256};
use tokio::sync::watch;

use crate::{ReferenceImage, ValidatedRequest};

/// How a request uses the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheMode {
    /// Answer from the cache when an identical request was made; store a new result.
    #[default]
    Use,
    /// Generate anew (`reroll`, `Cache-Control: no-cache`), then store the new result.
    Refresh,
    /// Neither read nor write the cache.
    Off,
}

/// Whether an answer came from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Served from stored images, with no upstream call and no charge (also when the request
    /// waited for an identical one that was in flight).
    Hit,
    /// Generated for this request.
    Miss,
}

impl CacheStatus {
    /// The `X-Cache-Status` header value: `HIT` or `MISS-GENERATED` (seed 000's names).
    pub fn header_value(self) -> &'static str {
        match self {
            Self::Hit => "HIT",
            Self::Miss => "MISS-GENERATED",
        }
    }
}

/// The cache key of `request` for `tenant`: SHA-256 (hex) of the canonical request. It covers
/// the model variant, the prompt, `n`, every parameter after defaults (so the seed too) and
/// the content hashes of the reference images and the mask, never how the answer is delivered
/// (`response_format`), so a `url` request and a `b64_json` one share an entry.
pub fn cache_key(
    tenant: &str,
    request: &ValidatedRequest,
    references: &[ReferenceImage],
    mask: Option<&ReferenceImage>,
) -> String {
    let hash = |image: &ReferenceImage| hex::encode(Sha256::digest(&image.bytes));
    let references: Vec<String> = references.iter().map(hash).collect();
    // `params` is a BTreeMap and serde_json's maps are sorted, so equal requests serialise to
    // equal bytes. `v` changes if this layout ever does, leaving old entries unreachable.
    let canonical = json!({
        "v": 1,
        "tenant": tenant,
        "model": request.model.id,
        "provider": request.model.provider,
        "upstream": request.model.upstream,
        "prompt": request.prompt,
        "n": request.n,
        "params": request.params,
        "output": request.output.format.map(crate::convert::RasterFormat::extension),
        "references": references,
        "mask": mask.map(hash),
    });
    hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
}

/// Runs at most one piece of work per key at a time in this process; callers that arrive
/// while it runs wait for its result instead of starting their own.
#[derive(Debug)]
pub struct SingleFlight<T> {
    flights: Mutex<HashMap<String, watch::Receiver<Option<T>>>>,
}

impl<T> Default for SingleFlight<T> {
    fn default() -> Self {
        Self {
            flights: Mutex::new(HashMap::new()),
        }
    }
}

impl<T: Clone> SingleFlight<T> {
    /// The result of `work` for `key`, and whether this caller ran it (`true`) or shared the
    /// result of a caller that was already running it (`false`). If the running caller goes
    /// away before it finishes (its request was dropped), a waiting caller runs `work` itself.
    pub async fn run<F, Fut>(&self, key: &str, work: F) -> (T, bool)
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = T>,
    {
        loop {
            let mut receiver = match self.join(key) {
                Joined::Wait(receiver) => receiver,
                Joined::Lead(sender) => {
                    let lead = Lead {
                        flights: &self.flights,
                        key,
                        sender,
                    };
                    let value = work().await;
                    lead.sender.send_replace(Some(value.clone()));
                    return (value, true);
                }
            };
            let shared = match receiver.wait_for(Option::is_some).await {
                Ok(value) => value.clone(),
                // The leader was dropped without a result: try again, perhaps as the leader.
                Err(_) => None,
            };
            if let Some(value) = shared {
                return (value, false);
            }
        }
    }

    /// Joins the flight of `key`, or starts it. (A separate function so that no lock guard
    /// lives in the async caller.)
    fn join(&self, key: &str) -> Joined<T> {
        let mut flights = self.flights.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(receiver) = flights.get(key) {
            return Joined::Wait(receiver.clone());
        }
        let (sender, receiver) = watch::channel(None);
        flights.insert(key.to_owned(), receiver);
        Joined::Lead(sender)
    }

    /// Keys in flight now (for tests and metrics).
    pub fn in_flight(&self) -> usize {
        self.flights
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

enum Joined<T> {
    Lead(watch::Sender<Option<T>>),
    Wait(watch::Receiver<Option<T>>),
}

/// The running caller's hold on a key; dropping it (finished or cancelled) frees the key.
struct Lead<'a, T> {
    flights: &'a Mutex<HashMap<String, watch::Receiver<Option<T>>>>,
    key: &'a str,
    sender: watch::Sender<Option<T>>,
}

impl<T> Drop for Lead<'_, T> {
    fn drop(&mut self) {
        let mut flights = self.flights.lock().unwrap_or_else(PoisonError::into_inner);
        if flights
            .get(self.key)
            .is_some_and(|receiver| receiver.same_channel(&self.sender.subscribe()))
        {
            flights.remove(self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{
            atomic::{AtomicUsize, Ordering},
            Arc,
        },
        time::Duration,
    };

    use serde_json::json;

    use super::*;
    use crate::{Catalog, ImageRequest};

    fn validated(body: serde_json::Value) -> ValidatedRequest {
        let catalog = Catalog::embedded().unwrap();
        let request: ImageRequest = serde_json::from_value(body).unwrap();
        crate::validate::validate(&catalog, request, "placeholder", &|_| true).unwrap()
    }

    fn reference(bytes: &'static [u8]) -> ReferenceImage {
        ReferenceImage {
            bytes: bytes::Bytes::from_static(bytes),
            mime: "image/png".into(),
        }
    }

    #[test]
    fn equal_requests_share_a_key_and_any_difference_changes_it() {
        let base = json!({"model": "placeholder", "prompt": "fox", "size": "512x512"});
        let key = cache_key("t", &validated(base.clone()), &[], None);
        // Defaults filled in and delivery format ignored: still the same request.
        let same = json!({"model": "placeholder", "prompt": "fox", "size": "512x512",
                          "quality": "auto", "response_format": "url"});
        assert_eq!(key, cache_key("t", &validated(same), &[], None));
        for other in [
            json!({"model": "placeholder", "prompt": "fox ", "size": "512x512"}),
            json!({"model": "placeholder", "prompt": "fox", "size": "256x256"}),
            json!({"model": "placeholder", "prompt": "fox", "size": "512x512", "seed": 1}),
            json!({"model": "placeholder", "prompt": "fox", "size": "512x512", "n": 2}),
        ] {
            assert_ne!(key, cache_key("t", &validated(other), &[], None));
        }
        assert_ne!(key, cache_key("u", &validated(base.clone()), &[], None));
        let with_ref = cache_key("t", &validated(base.clone()), &[reference(b"a")], None);
        assert_ne!(key, with_ref);
        assert_ne!(
            with_ref,
            cache_key("t", &validated(base.clone()), &[reference(b"b")], None)
        );
        let mask = reference(b"m");
        assert_ne!(
            with_ref,
            cache_key("t", &validated(base), &[reference(b"a")], Some(&mask))
        );
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_run() {
        let flights = Arc::new(SingleFlight::<u32>::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let (flights, runs) = (flights.clone(), runs.clone());
                tokio::spawn(async move {
                    flights
                        .run("k", || async {
                            runs.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            7
                        })
                        .await
                })
            })
            .collect();
        let mut leaders = 0;
        for task in tasks {
            let (value, led) = task.await.unwrap();
            assert_eq!(value, 7);
            leaders += usize::from(led);
        }
        assert_eq!((runs.load(Ordering::SeqCst), leaders), (1, 1));
        assert_eq!(flights.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_waiting_caller_takes_over_when_the_leader_is_dropped() {
        let flights = Arc::new(SingleFlight::<u32>::default());
        let leader = {
            let flights = flights.clone();
            tokio::spawn(async move {
                flights
                    .run("k", || async {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                        1
                    })
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let follower = {
            let flights = flights.clone();
            tokio::spawn(async move { flights.run("k", || async { 2 }).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        leader.abort();
        assert_eq!(follower.await.unwrap(), (2, true));
        assert_eq!(flights.in_flight(), 0);
    }
}
