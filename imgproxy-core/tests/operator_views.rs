//! What the playground's history and the operator's console read, on SQLite and Postgres:
//! pages of the ledger (one key's or every key's, by kind, with a cursor) and the images each
//! settled charge paid for, recorded by a metered serve; every tenant's tasks and webhook
//! deliveries listed newest first; and the counts of keys, credits, tasks and deliveries.

#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

#[path = "accounts_harness.rs"]
mod harness;

use std::sync::Arc;

use harness::{charge, fake::FakeProvider, one_image, Ctx};
use imgproxy_core::{
    service::{
        cache::CacheMode,
        db::{LedgerQuery, ServedBy, TaskOutcome, TaskStatus},
        metering::Meter,
        Call,
    },
    ImageRequest,
};
use serde_json::json;

on_both_backends!(
    ledger_pages,
    settles_name_their_images,
    tasks_and_deliveries,
);

async fn ledger_pages(ctx: &Ctx) {
    let accounts = &ctx.accounts;
    let (alice, bob) = (ctx.key(100).await, ctx.key(50).await);
    for (key, request_id, images) in [
        (&alice, "a1", ["img-a1.png"]),
        (&bob, "b1", ["img-b1.png"]),
        (&alice, "a2", ["img-a2.png"]),
    ] {
        let reservation = accounts
            .reserve(key, request_id, 2, charge("me"))
            .await
            .unwrap();
        let served = ServedBy {
            model: "placeholder",
            attempts: &[],
            images: &images,
        };
        accounts
            .settle_as(&reservation, 1, None, Some(served))
            .await
            .unwrap();
    }

    let settles = |key_id, before| LedgerQuery {
        key_id,
        kind: Some("settle"),
        before,
        limit: 10,
    };
    let page = accounts
        .ledger_page(&settles(Some(&alice), None))
        .await
        .unwrap();
    let seen: Vec<_> = page
        .iter()
        .map(|r| (r.entry.request_id.as_deref().unwrap(), r.image_keys.clone()))
        .collect();
    assert_eq!(
        seen,
        [
            ("a2", vec!["img-a2.png".to_owned()]),
            ("a1", vec!["img-a1.png".to_owned()])
        ],
        "alice's settles only, newest first, each with its images"
    );
    assert!(page.iter().all(|r| r.key_id == alice));
    // The images move out of `inputs` into the record; what the charge kept stays.
    let inputs = page[0].entry.inputs.as_ref().unwrap();
    assert_eq!(inputs.get("images"), None);
    assert_eq!(
        (inputs["reserved"].clone(), inputs["kept"].clone()),
        (json!(2), json!(1))
    );

    // The cursor: rows older than the last one seen.
    let older = accounts
        .ledger_page(&settles(Some(&alice), Some(page[0].id)))
        .await
        .unwrap();
    assert_eq!(older.len(), 1);
    assert_eq!(older[0].entry.request_id.as_deref(), Some("a1"));

    // Every key's rows of every kind: 2 credits, 3 reserves, 3 settles.
    let everything = LedgerQuery {
        limit: 100,
        ..LedgerQuery::default()
    };
    let all = accounts.ledger_page(&everything).await.unwrap();
    assert_eq!(all.len(), 8);
    assert!(all.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    assert!(all
        .iter()
        .any(|r| r.key_id == bob && r.entry.kind == "credit"));
    let reserves = all.iter().filter(|r| r.entry.kind == "reserve");
    assert!(reserves.clone().count() == 3 && reserves.clone().all(|r| r.image_keys.is_empty()));
    let limited = LedgerQuery {
        limit: 3,
        ..LedgerQuery::default()
    };
    assert_eq!(accounts.ledger_page(&limited).await.unwrap().len(), 3);
    // An unknown key has no rows (not an error: the page is empty).
    assert!(accounts
        .ledger_page(&settles(Some("key_unknown"), None))
        .await
        .unwrap()
        .is_empty());
}

async fn settles_name_their_images(ctx: &Ctx) {
    let dir = tempfile::tempdir().unwrap();
    let provider = Arc::new(FakeProvider::new("counting", |n, _| {
        Ok(one_image(format!("image-{n}").into_bytes()))
    }));
    let service = harness::service_for(&ctx.accounts, dir.path(), "counted", provider);
    let key = ctx.accounts.get_key(&ctx.key(10).await).await.unwrap();
    let call = Call {
        tenant: &key.id,
        meter: Some(Meter {
            db: &ctx.accounts,
            key: &key,
            request_id: "r1",
            surface: Some("/v1/images/generations"),
            owner: "test",
            delivered: None,
            task: None,
        }),
        cache: CacheMode::Off,
        ..Call::default()
    };
    let mut request = ImageRequest::new("counted", "a heron");
    request.n = Some(2);
    let served = service.serve(call, request).await.unwrap();
    let stored: Vec<String> = served.images.iter().map(|i| i.key.clone()).collect();
    assert_eq!(stored.len(), 2);

    let page = ctx
        .accounts
        .ledger_page(&LedgerQuery {
            key_id: Some(&key.id),
            kind: Some("settle"),
            before: None,
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].entry.request_id.as_deref(), Some("r1"));
    assert_eq!(page[0].image_keys, stored);
    // The row says what was kept of what, and the surface the request came through (taken
    // from the reservation: on SQLite by the settle's one batch, on Postgres in Rust).
    let inputs = page[0].entry.inputs.clone().unwrap();
    let fields: Vec<&str> = inputs
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        fields,
        ["attempts", "kept", "reserved", "surface"],
        "{inputs}"
    );
    assert_eq!(
        (&inputs["kept"], &inputs["surface"]),
        (
            &serde_json::json!(2),
            &serde_json::json!("/v1/images/generations")
        )
    );
    // The keys name images the store holds.
    for key in &page[0].image_keys {
        assert!(service.store().get(key).await.unwrap().is_some(), "{key}");
    }
    assert_eq!(ctx.assert_ledger_adds_up(&key.id).await, 8);
}

async fn tasks_and_deliveries(ctx: &Ctx) {
    let accounts = &ctx.accounts;
    let empty = accounts.overview().await.unwrap();
    assert_eq!((empty.active_keys, empty.balance), (0, 0));
    assert!(empty.tasks.is_empty() && empty.deliveries.is_empty());

    let first = accounts
        .create_task(harness::new_task("alice", Some("http://hooks.test/a")))
        .await
        .unwrap();
    // It is claimed and fails; its webhook is queued with the end.
    let claimed = accounts.claim_task("worker").await.unwrap().unwrap();
    assert_eq!(claimed.id, first.id);
    let failed = TaskOutcome {
        status: TaskStatus::Failed,
        result: None,
        error: Some(imgproxy_core::ErrorBody::from(
            &imgproxy_core::Error::Internal("boom".into()),
        )),
        credits_used: Some(0),
    };
    assert!(accounts
        .finish_task(&first.id, "worker", &failed)
        .await
        .unwrap());
    let second = accounts
        .create_task(harness::new_task("bob", None))
        .await
        .unwrap();

    let listed = accounts.list_tasks(None, 10).await.unwrap();
    let ids: Vec<&str> = listed.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&first.id.as_str()) && ids.contains(&second.id.as_str()));
    let ended = listed.iter().find(|t| t.id == first.id).unwrap();
    assert_eq!(
        (ended.status, ended.tenant.as_str()),
        (TaskStatus::Failed, "alice")
    );
    assert_eq!(ended.error.as_ref().unwrap().kind, "server_error");
    assert!(ended.finished_at_ms.is_some());
    assert_eq!(ended.request_id.as_deref(), Some("req_test"));
    let queued = accounts
        .list_tasks(Some(TaskStatus::Queued), 10)
        .await
        .unwrap();
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].id, second.id);
    assert_eq!(accounts.list_tasks(None, 1).await.unwrap().len(), 1);

    let deliveries = accounts.list_deliveries(None, 10).await.unwrap();
    assert_eq!(deliveries.len(), 1);
    assert_eq!(
        (
            deliveries[0].task_id.as_str(),
            deliveries[0].status.as_str()
        ),
        (first.id.as_str(), "pending")
    );
    assert!(accounts
        .list_deliveries(Some("delivered"), 10)
        .await
        .unwrap()
        .is_empty());

    let kept = ctx.key(30).await;
    let gone = ctx.key(5).await;
    accounts.revoke_key(&gone).await.unwrap();
    let overview = accounts.overview().await.unwrap();
    assert_eq!(
        (
            overview.active_keys,
            overview.revoked_keys,
            overview.balance
        ),
        (1, 1, 30),
        "{kept} holds the only credits that count"
    );
    assert_eq!(overview.tasks.get("failed"), Some(&1));
    assert_eq!(overview.tasks.get("queued"), Some(&1));
    assert_eq!(overview.deliveries.get("pending"), Some(&1));
}
