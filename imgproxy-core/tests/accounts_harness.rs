//! Shared by the `accounts*` tests: one store per test on SQLite (a file in a temp dir) and on
//! Postgres (a fresh schema), and raw SQL access to check what is stored; and, for the tests
//! that serve images, a service whose test model is served by a fake provider.
//!
//! Postgres is at `IMGPROXY_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`).
//! Every Postgres test is named `...::postgres`; to run the SQLite half only, leave them out
//! with libtest's filter, `cargo test -- --skip postgres`, which reports them as filtered out.
//! Rust has no runtime skip, so a Postgres test that cannot reach its server fails: an
//! unreachable server, or the old `IMGPROXY_TEST_POSTGRES_URL=skip`, which used to turn every
//! Postgres test into a pass. CI (`tests/run`) starts the local cluster and leaves the
//! variable unset, so they run against the real server.
#![allow(
    dead_code,
    reason = "included by several test crates, each using a part"
)]
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers fail loudly; `allow` as the including crate may expect these too"
)]

#[path = "../../tests/kit/src/fake.rs"]
pub mod fake;

use std::{path::Path, str::FromStr, sync::Arc};

use bytes::Bytes;
use imgproxy_core::{
    service::{
        db::{NewKey, NewTask},
        Database, ImageStore, Service,
    },
    Catalog, Error, Gateway, GeneratedImage, Generation, ImageProvider, ProviderError,
    ProviderRequest,
};
use sqlx::{postgres::PgConnectOptions, sqlite::SqliteConnectOptions, ConnectOptions};

// With a user: without one, sqlx asks the OS, which in CI may have no name for root.
const DEFAULT_POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Generates `mod $name { fn sqlite(); fn postgres(); }` running `$name(&Ctx)` on each backend.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                let ctx = $crate::harness::Ctx::sqlite().await;
                super::$name(&ctx).await;
                ctx.finish().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                let ctx = $crate::harness::Ctx::postgres(stringify!($name)).await;
                super::$name(&ctx).await;
                ctx.finish().await;
            }
        }
    )*};
}

/// Where a test's store lives, so that a second pool can open the same one.
#[derive(Debug)]
pub enum Place {
    Sqlite {
        url: String,
        path: std::path::PathBuf,
        _dir: tempfile::TempDir,
    },
    Postgres {
        url: String,
        schema: String,
    },
}

#[derive(Debug)]
pub struct Ctx {
    pub accounts: Database,
    pub place: Place,
}

impl Ctx {
    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        // A nested path: `connect` creates missing directories.
        let path = dir.path().join("data").join("accounts.db");
        let url = format!("sqlite://{}", path.display());
        let accounts = Database::connect(&url).await.unwrap();
        assert_eq!(accounts.backend(), "sqlite");
        Self {
            accounts,
            place: Place::Sqlite {
                url,
                path,
                _dir: dir,
            },
        }
    }

    pub async fn postgres(test: &str) -> Self {
        let url =
            std::env::var("IMGPROXY_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES.into());
        assert_ne!(
            url, "skip",
            "IMGPROXY_TEST_POSTGRES_URL=skip no longer passes the Postgres tests; leave them out \
             with `cargo test -- --skip postgres` (reported as filtered out)"
        );
        let mut random = [0_u8; 4];
        getrandom::fill(&mut random).unwrap();
        let schema = format!(
            "t_{test}_{}_{}",
            std::process::id(),
            u32::from_le_bytes(random)
        );
        let accounts = Database::connect_postgres_schema(&url, &schema)
            .await
            .unwrap_or_else(|e| {
                panic!("Postgres at {url}: {e} (`cargo test -- --skip postgres` leaves these out)")
            });
        assert_eq!(accounts.backend(), "postgres");
        Self {
            accounts,
            place: Place::Postgres { url, schema },
        }
    }

    /// A second, independent pool on the same store: another process, as far as the
    /// database can tell.
    pub async fn second_pool(&self) -> Database {
        match &self.place {
            Place::Sqlite { url, .. } => Database::connect(url).await.unwrap(),
            Place::Postgres { url, schema } => Database::connect_postgres_schema(url, schema)
                .await
                .unwrap(),
        }
    }

    pub async fn finish(self) {
        self.accounts.close().await;
        if let Place::Postgres { url, schema } = &self.place {
            Database::drop_postgres_schema(url, schema).await.unwrap();
        }
    }

    pub async fn key(&self, credits: i64) -> String {
        let new = NewKey {
            name: "test".into(),
            credits,
            ..NewKey::default()
        };
        self.accounts.create_key(new).await.unwrap().key.id
    }

    /// `SELECT COUNT(*) ...` with one text bind, on a connection of its own.
    pub async fn count(&self, sql: &'static str, bind: &str) -> i64 {
        /// The query on a connection made from `$options`, of either backend.
        macro_rules! count_on {
            ($options:expr) => {{
                let mut conn = $options.connect().await.unwrap();
                let query = sqlx::query_scalar(sql).bind(bind);
                query.fetch_one(&mut conn).await.unwrap()
            }};
        }
        match &self.place {
            Place::Sqlite { url, .. } => count_on!(SqliteConnectOptions::from_str(url).unwrap()),
            Place::Postgres { url, schema } => count_on!(PgConnectOptions::from_str(url)
                .unwrap()
                .options([("search_path", schema)])),
        }
    }

    /// Asserts the invariant of the ledger: it adds up to the balance.
    pub async fn assert_ledger_adds_up(&self, key: &str) -> i64 {
        let balance = self.accounts.balance(key).await.unwrap();
        assert_eq!(self.accounts.ledger_total(key).await.unwrap(), balance);
        assert!(balance >= 0);
        balance
    }
}

pub fn charge(owner: &str) -> imgproxy_core::service::db::Charge {
    imgproxy_core::service::db::Charge {
        model: "placeholder".into(),
        owner: owner.into(),
        inputs: serde_json::json!({ "n": 1, "per_image": 1 }),
    }
}

pub fn is_insufficient(result: &Result<impl std::fmt::Debug, Error>) -> bool {
    matches!(result, Err(Error::InsufficientCredits { .. }))
}

/// Asserts that `result` is the error of an unknown (or revoked) key.
pub fn assert_not_found(result: &Result<impl std::fmt::Debug, Error>) {
    assert!(matches!(result, Err(Error::NotFound { .. })), "{result:?}");
}

/// A service on `accounts` and an image store in `images` whose model `model` is the
/// placeholder's, served by `provider`.
pub fn service_for(
    accounts: &Database,
    images: &Path,
    model: &str,
    provider: Arc<dyn ImageProvider>,
) -> Service {
    let mut catalog = Catalog::embedded().unwrap();
    let mut spec = (**catalog.resolve("placeholder", &|_| true).unwrap()).clone();
    spec.id = model.into();
    spec.provider = provider.name().into();
    catalog.upsert(spec).unwrap();
    let gateway = Gateway::builder(catalog).provider(provider).build();
    Service::new(
        gateway,
        ImageStore::local(images).unwrap(),
        "http://test/images/",
        accounts.clone(),
    )
}

/// A generation of one PNG-labelled image of `bytes`.
pub fn one_image(bytes: impl Into<Bytes>) -> Generation {
    Generation {
        images: vec![GeneratedImage {
            bytes: bytes.into(),
            mime: "image/png".into(),
            revised_prompt: None,
        }],
        ..Generation::default()
    }
}

/// Fails as an upstream would (`boom`) when the prompt is `fail`: how the serving tests ask
/// their fake provider for a failure.
pub fn fail_when_asked(call: &ProviderRequest<'_>) -> Result<(), ProviderError> {
    if call.request.prompt == "fail" {
        return Err(ProviderError::Failed {
            message: "boom".into(),
        });
    }
    Ok(())
}

/// A generation task of `tenant` for the placeholder, with `callback` as its webhook.
pub fn new_task(tenant: &str, callback: Option<&str>) -> NewTask {
    NewTask {
        tenant: tenant.into(),
        key_id: None,
        kind: "generation".into(),
        model: "placeholder".into(),
        request: serde_json::json!({"prompt": "p"}),
        callback_url: callback.map(str::to_owned),
        request_id: Some("req_test".into()),
        callback_format: None,
    }
}
