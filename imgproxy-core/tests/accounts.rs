//! Credits on SQLite and Postgres: reserve/settle/refund arithmetic and the ledger,
//! idempotency, and the crash-safe release of what a dead instance (its lease expired) left. Keys are in
//! `accounts_keys.rs`, concurrency under load in `accounts_concurrency.rs`.

#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

#[path = "accounts_harness.rs"]
mod harness;

use std::time::Duration;

use harness::{charge, Ctx};
use imgproxy_core::{service::db::Reservation, Error};

on_both_backends!(
    reserve_settle_refund_arithmetic,
    idempotent_by_request_id,
    abandoned_reservations_are_all_or_nothing,
    release_dead_exactly_once,
);

async fn reserve_settle_refund_arithmetic(ctx: &Ctx) {
    let accounts = &ctx.accounts;
    let key = ctx.key(100).await;
    let reserve = |id: &'static str, amount| accounts.reserve(&key, id, amount, charge("me"));

    let r1 = reserve("r1", 30).await.unwrap();
    assert_eq!(accounts.balance(&key).await.unwrap(), 70);
    assert_eq!(accounts.settle(&r1, 20).await.unwrap(), 80);
    let r2 = reserve("r2", 25).await.unwrap();
    assert_eq!(accounts.refund(&r2).await.unwrap(), 80);
    let r3 = reserve("r3", 10).await.unwrap();
    assert_eq!(accounts.settle(&r3, 10).await.unwrap(), 70);
    // Keeping more than was reserved would overspend: the reserved amount is the cap.
    let r4 = reserve("r4", 5).await.unwrap();
    assert_eq!(accounts.settle(&r4, 9).await.unwrap(), 65);

    let history = accounts.recent_charges(&key, 100).await.unwrap();
    let first = history
        .iter()
        .rev()
        .find(|e| e.request_id.as_deref() == Some("r1"));
    let first = first.unwrap();
    assert_eq!(
        (first.kind.as_str(), first.amount, first.balance_after),
        ("reserve", -30, 70)
    );
    assert_eq!(first.model.as_deref(), Some("placeholder"));
    assert_eq!(first.inputs, Some(charge("me").inputs));
    let settle = history
        .iter()
        .find(|e| e.request_id.as_deref() == Some("r1") && e.kind == "settle");
    let settle = settle.unwrap();
    assert_eq!((settle.amount, settle.balance_after), (10, 80));
    assert_eq!(
        settle.inputs,
        Some(serde_json::json!({ "reserved": 30, "kept": 20 }))
    );
    assert_eq!(history.len(), 9, "credit + 4 reserves + 4 closes");
    assert_eq!(accounts.recent_charges(&key, 2).await.unwrap().len(), 2);
    assert_eq!(ctx.assert_ledger_adds_up(&key).await, 65);

    // Short: nothing changes, no row is written, and the request id stays usable.
    let short = reserve("r5", 66).await;
    assert_eq!(
        short,
        Err(Error::InsufficientCredits {
            needed: 66,
            balance: 65
        })
    );
    assert!(short.unwrap_err().to_string().contains("66"));
    assert!(
        imgproxy_core::Error::InsufficientCredits {
            needed: 1,
            balance: 0
        }
        .status()
            == 402
    );
    assert!(harness::is_insufficient(&reserve("r6", u64::MAX).await));
    assert_eq!(accounts.recent_charges(&key, 100).await.unwrap().len(), 9);
    assert_eq!(reserve("r5", 65).await.unwrap().amount, 65);
    assert_eq!(accounts.balance(&key).await.unwrap(), 0);
    assert!(harness::is_insufficient(&reserve("r7", 1).await));
    // A free request (a cache hit) may reserve nothing even at zero.
    assert_eq!(reserve("r8", 0).await.unwrap().amount, 0);

    let unknown = accounts.reserve("key_nope", "r1", 1, charge("me")).await;
    harness::assert_not_found(&unknown);
    harness::assert_not_found(&accounts.balance("key_nope").await);
    harness::assert_not_found(&accounts.recent_charges("key_nope", 5).await);
    let ghost = Reservation {
        request_id: "ghost".into(),
        key_id: key.clone(),
        amount: 5,
    };
    harness::assert_not_found(&accounts.refund(&ghost).await);
    assert_eq!(ctx.assert_ledger_adds_up(&key).await, 0);
}

/// A request that goes away while its reservation is being written (a client hanging up)
/// leaves a whole reservation or none, never an open transaction on a shared connection:
/// every later write works, and the ledger adds up to the balance.
async fn abandoned_reservations_are_all_or_nothing(ctx: &Ctx) {
    let accounts = &ctx.accounts;
    let key = ctx.key(1_000).await;
    for i in 0..60_u64 {
        // Cut off after 0 to 590 µs: before, during and after the write.
        let cut = Duration::from_micros(i * 10);
        let id = format!("abandoned-{i}");
        // Short of credits every third time, so that failing writes are abandoned too.
        let amount = if i % 3 == 0 { 5_000 } else { 1 };
        let _ = tokio::time::timeout(cut, accounts.reserve(&key, &id, amount, charge("me"))).await;
    }
    // Let any rollback queued behind an abandoned write run.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = ctx.assert_ledger_adds_up(&key).await;
    let open = accounts
        .reserve(&key, "after", 7, charge("me"))
        .await
        .unwrap();
    assert_eq!(accounts.settle(&open, 7).await.unwrap(), before - 7);
    assert_eq!(ctx.assert_ledger_adds_up(&key).await, before - 7);
}

async fn idempotent_by_request_id(ctx: &Ctx) {
    let accounts = &ctx.accounts;
    let key = ctx.key(100).await;
    let first = accounts
        .reserve(&key, "req", 10, charge("me"))
        .await
        .unwrap();
    // A retry, even with a different amount, returns the open reservation and charges nothing.
    assert_eq!(
        accounts
            .reserve(&key, "req", 99, charge("me"))
            .await
            .unwrap(),
        first
    );
    assert_eq!(accounts.balance(&key).await.unwrap(), 90);

    assert_eq!(accounts.settle(&first, 4).await.unwrap(), 96);
    assert_eq!(
        accounts.settle(&first, 0).await.unwrap(),
        96,
        "second settle is a no-op"
    );
    assert_eq!(
        accounts.refund(&first).await.unwrap(),
        96,
        "refund after settle is a no-op"
    );
    let reused = accounts.reserve(&key, "req", 10, charge("me")).await;
    let code = match &reused {
        Err(Error::InvalidRequest { code, .. }) => code.as_deref(),
        _ => None,
    };
    assert_eq!(code, Some("request_id_reused"), "{reused:?}");
    let rows = "SELECT COUNT(*) FROM ledger WHERE request_id = $1";
    assert_eq!(
        ctx.count(rows, "req").await,
        2,
        "one reserve and one settle"
    );

    // Request ids are per key: another key's `req` is its own reservation.
    let other = ctx.key(10).await;
    accounts
        .reserve(&other, "req", 10, charge("me"))
        .await
        .unwrap();
    assert_eq!(accounts.balance(&other).await.unwrap(), 0);

    // The same id from 20 tasks at once: one charge. Then settles and refunds race: one wins.
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (accounts, key) = (accounts.clone(), key.clone());
            tokio::spawn(async move { accounts.reserve(&key, "burst", 7, charge("me")).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap().amount, 7);
    }
    assert_eq!(accounts.balance(&key).await.unwrap(), 89);
    let burst = Reservation {
        request_id: "burst".into(),
        key_id: key.clone(),
        amount: 7,
    };
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let (accounts, burst) = (accounts.clone(), burst.clone());
            tokio::spawn(async move {
                if i % 2 == 0 {
                    accounts.settle(&burst, 7).await
                } else {
                    accounts.refund(&burst).await
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(
        ctx.count(rows, "burst").await,
        2,
        "one reserve and exactly one close"
    );
    let balance = ctx.assert_ledger_adds_up(&key).await;
    assert!(balance == 89 || balance == 96, "{balance}");
}

async fn release_dead_exactly_once(ctx: &Ctx) {
    let accounts = &ctx.accounts;
    let key = ctx.key(100).await;
    let hour = Duration::from_secs(3600);
    accounts.join_instance("dead", hour).await.unwrap();
    accounts.join_instance("alive", hour).await.unwrap();
    let mut orphans = Vec::new();
    for id in ["d1", "d2", "d3"] {
        orphans.push(
            accounts
                .reserve(&key, id, 10, charge("dead"))
                .await
                .unwrap(),
        );
    }
    let alive = accounts
        .reserve(&key, "a1", 5, charge("alive"))
        .await
        .unwrap();
    accounts.settle(&orphans[0], 10).await.unwrap(); // finished before the crash
    assert_eq!(accounts.balance(&key).await.unwrap(), 65);

    // Nothing of an instance is released while its lease lives.
    assert_eq!(accounts.release_dead("dead").await.unwrap(), 0);
    assert_eq!(accounts.release_dead("alive").await.unwrap(), 0);
    accounts.leave_instance("dead").await.unwrap();

    // Two instances recover the dead one at the same time: each reservation once.
    let second = ctx.second_pool().await;
    let (a, b) = tokio::join!(accounts.release_dead("dead"), second.release_dead("dead"));
    assert_eq!(a.unwrap() + b.unwrap(), 2);
    assert_eq!(accounts.release_dead("dead").await.unwrap(), 0);
    assert_eq!(accounts.balance(&key).await.unwrap(), 85);
    // The dead request's settle, arriving late, charges nothing, and says so.
    let late = accounts
        .settle_as(&orphans[1], 10, None, None)
        .await
        .unwrap();
    assert_eq!((late.balance, late.kept), (85, 0));
    // The one settled before the crash still says what it kept.
    let before = accounts
        .settle_as(&orphans[0], 3, None, None)
        .await
        .unwrap();
    assert_eq!((before.balance, before.kept), (85, 10));

    // The live instance's reservation is left alone, however old, and settles normally.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let released = second.release_expired(Duration::from_millis(10)).await;
    assert_eq!(released.unwrap(), 0);
    assert_eq!(accounts.settle(&alive, 5).await.unwrap(), 85);
    // The backstop: an old reservation of an owner that never held a lease is released.
    let leaseless = accounts
        .reserve(&key, "o1", 5, charge("old-version"))
        .await
        .unwrap();
    assert_eq!(accounts.release_expired(hour).await.unwrap(), 0);
    assert_eq!(accounts.balance(&key).await.unwrap(), 80);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let released = second.release_expired(Duration::from_millis(10)).await;
    assert_eq!(released.unwrap(), 1);
    assert_eq!(accounts.refund(&leaseless).await.unwrap(), 85);

    let released = accounts.recent_charges(&key, 100).await.unwrap();
    let released = released
        .iter()
        .filter(|e| e.inputs.as_ref().is_some_and(|i| i["released"] == true));
    assert_eq!(released.count(), 3);
    assert_eq!(ctx.assert_ledger_adds_up(&key).await, 85);
    second.close().await;
}
