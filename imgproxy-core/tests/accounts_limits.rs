//! Key limits: what a key may be created with (on both backends), and the rate and concurrency
//! counts that instances sharing one Postgres database share (`Database::admit_shared`), seen
//! through two independent pools as two instances would.

#![expect(clippy::unwrap_used, clippy::panic, reason = "tests fail loudly")]

#[path = "accounts_harness.rs"]
mod harness;

use harness::Ctx;
use imgproxy_core::{
    service::db::{KeyLimitsSpec, NewKey, SharedAdmission},
    Catalog, Error,
};

on_both_backends!(limits_that_mean_nothing_are_refused);

async fn limits_that_mean_nothing_are_refused(ctx: &Ctx) {
    let base = || NewKey {
        name: "limits".into(),
        ..NewKey::default()
    };
    let cases = [
        (
            "rpm",
            NewKey {
                rpm: Some(0),
                ..base()
            },
        ),
        (
            "images_per_minute",
            NewKey {
                images_per_minute: Some(0),
                ..base()
            },
        ),
        (
            "max_concurrent",
            NewKey {
                max_concurrent: Some(0),
                ..base()
            },
        ),
        (
            "rpm",
            NewKey {
                rpm: Some(u32::MAX),
                ..base()
            },
        ),
        (
            "models",
            NewKey {
                models: Some(vec![]),
                ..base()
            },
        ),
        (
            "credits",
            NewKey {
                credits: -1,
                ..base()
            },
        ),
    ];
    for (field, new) in cases {
        match ctx.accounts.create_key(new.clone()).await {
            Err(Error::InvalidRequest { param, .. }) => {
                assert_eq!(param.as_deref(), Some(field), "{new:?}");
            }
            other => panic!("{new:?} must be refused on `{field}`, got {other:?}"),
        }
    }
    assert!(ctx.accounts.list_keys().await.unwrap().is_empty());
    let fine = NewKey {
        rpm: Some(1),
        images_per_minute: Some(10),
        max_concurrent: Some(1),
        ..base()
    };
    ctx.accounts.create_key(fine).await.unwrap();
}

#[test]
fn models_are_checked_against_the_catalog_and_stored_as_ids() {
    let catalog = Catalog::embedded().unwrap();
    let mut unknown = NewKey {
        name: "m".into(),
        models: Some(vec!["placeholder".into(), "nope".into()]),
        ..NewKey::default()
    };
    match unknown.resolve_models(&catalog) {
        Err(Error::InvalidRequest { param, message, .. }) => {
            assert_eq!(param.as_deref(), Some("models"));
            assert!(message.contains("`nope`"), "{message}");
        }
        other => panic!("an unknown model must be refused, got {other:?}"),
    }
    // An alias is stored as the id requests are charged under, once.
    let placeholder = catalog.get("placeholder").unwrap();
    let Some(alias) = catalog
        .models()
        .find(|m| !m.aliases.is_empty() && m.retired.is_none())
        .map(|m| (m.aliases[0].clone(), m.id.clone()))
    else {
        panic!("the embedded catalog has no alias to test with");
    };
    let mut key = NewKey {
        name: "m".into(),
        models: Some(vec![
            alias.0.clone(),
            alias.1.clone(),
            placeholder.id.clone(),
        ]),
        ..NewKey::default()
    };
    key.resolve_models(&catalog).unwrap();
    assert_eq!(key.models, Some(vec![alias.1, placeholder.id.clone()]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_rate_limits_are_shared_by_every_pool() {
    let ctx = Ctx::postgres("shared_rate").await;
    let other = ctx.second_pool().await;
    let limits = KeyLimitsSpec {
        rpm: Some(5),
        images_per_minute: Some(12),
        max_concurrent: None,
    };
    // 20 admissions racing over two "instances": exactly 5 get in.
    let mut racing = tokio::task::JoinSet::new();
    for i in 0..20 {
        let db = if i % 2 == 0 {
            ctx.accounts.clone()
        } else {
            other.clone()
        };
        racing.spawn(async move { db.admit_shared("key_a", limits, 1, "p").await.unwrap() });
    }
    let mut admitted = 0;
    while let Some(outcome) = racing.join_next().await {
        match outcome.unwrap() {
            SharedAdmission::Admitted { lease } => {
                assert_eq!(lease, None);
                admitted += 1;
            }
            SharedAdmission::Refused(refusal) => {
                assert_eq!(refusal.limit, "requests per minute");
                let wait = refusal.retry_after.as_secs();
                assert!((1..=61).contains(&wait), "Retry-After {wait}");
            }
        }
    }
    assert_eq!(admitted, 5);
    // Images count apart, per key; a refused request counts nothing.
    let images = KeyLimitsSpec {
        rpm: None,
        images_per_minute: Some(12),
        max_concurrent: None,
    };
    let admit = |db: &imgproxy_core::service::Database, n| {
        let db = db.clone();
        async move { db.admit_shared("key_b", images, n, "p").await.unwrap() }
    };
    assert!(matches!(
        admit(&ctx.accounts, 10).await,
        SharedAdmission::Admitted { .. }
    ));
    assert!(matches!(
        admit(&other, 3).await,
        SharedAdmission::Refused(_)
    ));
    assert!(matches!(
        admit(&other, 2).await,
        SharedAdmission::Admitted { .. }
    ));
    assert!(matches!(
        admit(&ctx.accounts, 1).await,
        SharedAdmission::Refused(_)
    ));
    let buckets = ctx
        .count(
            "SELECT COUNT(*) FROM key_rate_buckets WHERE key_id = $1",
            "key_b",
        )
        .await;
    assert!(
        (1..=2).contains(&buckets),
        "{buckets} buckets for two seconds at most"
    );
    other.close().await;
    ctx.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_concurrency_leases_are_shared_released_and_expire() {
    let ctx = Ctx::postgres("shared_leases").await;
    let other = ctx.second_pool().await;
    let limits = KeyLimitsSpec {
        rpm: None,
        images_per_minute: None,
        max_concurrent: Some(2),
    };
    let lease = |outcome: SharedAdmission| match outcome {
        SharedAdmission::Admitted { lease: Some(id) } => id,
        other => panic!("expected a lease, got {other:?}"),
    };
    let first = lease(
        ctx.accounts
            .admit_shared("key_c", limits, 1, "a")
            .await
            .unwrap(),
    );
    let _second = lease(other.admit_shared("key_c", limits, 1, "b").await.unwrap());
    match other.admit_shared("key_c", limits, 1, "b").await.unwrap() {
        SharedAdmission::Refused(refusal) => assert_eq!(refusal.limit, "concurrent requests"),
        admitted => panic!("a third request in flight must be refused, got {admitted:?}"),
    }
    // Another key is not affected.
    lease(other.admit_shared("key_d", limits, 1, "b").await.unwrap());
    // A released slot is free at once, for every instance.
    ctx.accounts.release_lease(&first).await.unwrap();
    let third = lease(other.admit_shared("key_c", limits, 1, "b").await.unwrap());
    // Renewal keeps a lease alive; an instance that stopped renewing (crashed) loses its
    // slot when its lease expires: here, expired by hand rather than by waiting 30 s.
    other
        .renew_leases(std::slice::from_ref(&third))
        .await
        .unwrap();
    assert_eq!(
        ctx.count(
            "SELECT COUNT(*) FROM key_leases WHERE key_id = $1 AND expires_at_ms > 0",
            "key_c"
        )
        .await,
        2
    );
    ctx.count(
        "WITH expired AS (UPDATE key_leases SET expires_at_ms = 0 WHERE owner = $1 RETURNING 1) \
         SELECT COUNT(*) FROM expired",
        "b",
    )
    .await;
    lease(
        ctx.accounts
            .admit_shared("key_c", limits, 1, "a")
            .await
            .unwrap(),
    );
    lease(
        ctx.accounts
            .admit_shared("key_c", limits, 1, "a")
            .await
            .unwrap(),
    );
    other.close().await;
    ctx.finish().await;
}
