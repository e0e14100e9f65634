//! The service layer (cargo feature `service`): what a server keeps around the kernel's
//! [`Gateway`]. A [`Service`] owns a gateway, the image store, the database (keys, ledger,
//! cache entries, names, files, tasks, webhook deliveries) and the URL signer, and adds the
//! cache with single-flight, metering, named images, idempotency keys and stored-image URLs. The kernel never
//! imports anything from here.

pub mod cache;
pub mod db;
pub mod files;
pub mod idempotency;
pub mod metering;
pub mod retention;
pub mod serving;
pub mod signing;
pub mod store;
pub mod tasks;
pub mod url_api;

use std::{sync::Arc, time::Duration};

pub use db::Database;
pub use serving::{Call, Served, StoredImage};
pub use store::ImageStore;

use crate::Gateway;

/// The path under which stored images are served and signed: a service's URL prefix ends
/// with it.
pub const IMAGE_PATH: &str = "/images/";

/// A gateway with everything a served request needs around it. Cheap to share behind an
/// `Arc`; the store and the database are handles to shared pools.
#[derive(Debug)]
pub struct Service {
    gateway: Arc<Gateway>,
    store: ImageStore,
    /// Where stored images are served: ends with [`IMAGE_PATH`].
    url_prefix: String,
    signer: Option<(signing::UrlSigner, Duration)>,
    db: Database,
    /// This process's instance id: the owner of its generation claims (and, in a server, of its
    /// reservations and tasks). Fresh per service unless set.
    instance: String,
    flights: cache::SingleFlight<serving::Shared>,
    /// How long idempotency keys are remembered.
    idempotency_window: Duration,
}

impl Service {
    /// A service over `gateway` that stores images in `store`, serves them under `url_prefix`
    /// (which ends with [`IMAGE_PATH`]) and keeps its records in `db`.
    pub fn new(
        gateway: impl Into<Arc<Gateway>>,
        store: ImageStore,
        url_prefix: impl Into<String>,
        db: Database,
    ) -> Self {
        Self {
            gateway: gateway.into(),
            store,
            url_prefix: url_prefix.into(),
            signer: None,
            db,
            instance: db::new_instance_id(),
            flights: cache::SingleFlight::default(),
            idempotency_window: idempotency::DEFAULT_WINDOW,
        }
    }

    /// Runs as instance `id` (see [`tasks::Tasks::join`], which holds its lease).
    #[must_use]
    pub fn with_instance(mut self, id: impl Into<String>) -> Self {
        self.instance = id.into();
        self
    }

    /// This process's instance id.
    pub fn instance_id(&self) -> &str {
        &self.instance
    }

    /// Signs image URLs with `signer`, each valid for `ttl`: `{url_prefix}{key}?exp=..&sig=..`.
    #[must_use]
    pub fn with_url_signer(mut self, signer: signing::UrlSigner, ttl: Duration) -> Self {
        self.signer = Some((signer, ttl));
        self
    }

    /// The kernel: catalog, providers, validation and generation.
    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gateway
    }

    /// The image store.
    pub fn store(&self) -> &ImageStore {
        &self.store
    }

    /// The database.
    pub fn db(&self) -> &Database {
        &self.db
    }

    /// The URL signer and the lifetime of the URLs it signs, if configured.
    pub fn signer(&self) -> Option<&(signing::UrlSigner, Duration)> {
        self.signer.as_ref()
    }

    /// The stored image behind `url`, when it is one this service handed out (under its URL
    /// prefix, signed and unexpired); `None` for any other URL. A URL of this service with a
    /// wrong or expired signature is refused, as `GET` of it would be.
    pub async fn stored_image_at(&self, url: &str) -> crate::Result<Option<crate::ReferenceImage>> {
        let Some(rest) = url.strip_prefix(&self.url_prefix) else {
            return Ok(None);
        };
        let Some((signer, _)) = &self.signer else {
            return Ok(None);
        };
        let (key, query) = rest.split_once('?').unwrap_or((rest, ""));
        let params: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        signer
            .verify(
                &format!("{IMAGE_PATH}{key}"),
                &params,
                crate::clock::now_secs(),
            )
            .map_err(|e| {
                crate::Error::invalid_param("image", format!("the image URL cannot be used: {e}"))
            })?;
        match self.store.get(key).await? {
            Some((bytes, mime)) => Ok(Some(crate::ReferenceImage {
                bytes,
                mime: mime.to_owned(),
            })),
            None => Err(crate::Error::invalid_param(
                "image",
                "the image URL names no stored image (it may have been deleted)",
            )),
        }
    }

    /// The URL of stored image `key`, signed when a signer is configured.
    pub fn image_url(&self, key: &str) -> String {
        match &self.signer {
            Some((signer, ttl)) => {
                let expires = crate::clock::now_secs()
                    .saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX));
                let query = signer.sign(&format!("{IMAGE_PATH}{key}"), &[], expires);
                format!("{}{key}?{query}", self.url_prefix)
            }
            None => format!("{}{key}", self.url_prefix),
        }
    }
}
