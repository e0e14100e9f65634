//! Database under concurrent load, on SQLite and Postgres: however many reservations race,
//! a key never spends more than it has and its ledger adds up to its balance.

#![expect(clippy::unwrap_used, clippy::panic, reason = "tests fail loudly")]

#[path = "accounts_harness.rs"]
mod harness;

use harness::{charge, Ctx};
use imgproxy_core::{service::Database, Error};

on_both_backends!(
    exactly_fifty_of_two_hundred,
    mixed_amounts_never_overspend,
    two_pools_never_overspend,
);

/// Fires `amounts.len()` reservations at once, task `i` on `pools[i % pools.len()]`, and
/// returns each outcome with its amount.
async fn race(pools: &[Database], key: &str, amounts: &[u64]) -> Vec<(u64, Result<(), Error>)> {
    let tasks: Vec<_> = amounts
        .iter()
        .enumerate()
        .map(|(i, &amount)| {
            let (accounts, key) = (pools[i % pools.len()].clone(), key.to_owned());
            tokio::spawn(async move {
                let result = accounts
                    .reserve(&key, &format!("req-{i}"), amount, charge("me"))
                    .await;
                (amount, result.map(|r| assert_eq!(r.amount, amount)))
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }
    outcomes
}

/// Asserts that every failure is an honest `InsufficientCredits`, and returns the credits the
/// successes took.
fn taken(outcomes: &[(u64, Result<(), Error>)]) -> u64 {
    let mut total = 0;
    for (amount, result) in outcomes {
        match result {
            Ok(()) => total += amount,
            Err(Error::InsufficientCredits { needed, balance }) => {
                assert_eq!(needed, amount);
                assert!(
                    *balance >= 0 && (*balance as u64) < *amount,
                    "{balance} < {amount}"
                );
            }
            Err(other) => panic!("unexpected error under load: {other:?}"),
        }
    }
    total
}

async fn exactly_fifty_of_two_hundred(ctx: &Ctx) {
    let key = ctx.key(50).await;
    let outcomes = race(std::slice::from_ref(&ctx.accounts), &key, &[1; 200]).await;
    let ok = outcomes.iter().filter(|(_, r)| r.is_ok()).count();
    assert_eq!((ok, 200 - ok), (50, 150));
    assert_eq!(taken(&outcomes), 50);
    assert_eq!(ctx.assert_ledger_adds_up(&key).await, 0);
    let reserves = "SELECT COUNT(*) FROM ledger WHERE key_id = $1 AND kind = 'reserve'";
    assert_eq!(ctx.count(reserves, &key).await, 50);
}

async fn mixed_amounts_never_overspend(ctx: &Ctx) {
    let key = ctx.key(50).await;
    let amounts: Vec<u64> = (0..200).map(|i| if i % 2 == 0 { 1 } else { 3 }).collect();
    let outcomes = race(std::slice::from_ref(&ctx.accounts), &key, &amounts).await;
    let total = taken(&outcomes);
    assert!(total <= 50, "overspent: {total}");
    let balance = ctx.assert_ledger_adds_up(&key).await;
    assert_eq!(balance, 50 - total as i64);
    // Balances only fall here, so a 1-credit request that failed saw 0 and it stayed 0; and a
    // hundred 1-credit requests cannot all have fit in 50. So the key is exactly used up.
    assert_eq!(balance, 0);
}

/// Two pools on one store stand for two server processes: reserves on both, and each
/// reservation closed (settled in part, or refunded) through the other.
async fn two_pools_never_overspend(ctx: &Ctx) {
    let second = ctx.second_pool().await;
    let pools = [ctx.accounts.clone(), second.clone()];
    let key = ctx.key(50).await;
    let amounts: Vec<u64> = (0..300).map(|i| if i % 3 == 0 { 3 } else { 1 }).collect();
    let tasks: Vec<_> = amounts
        .iter()
        .enumerate()
        .map(|(i, &amount)| {
            let (here, there, key) = (
                pools[i % 2].clone(),
                pools[(i + 1) % 2].clone(),
                key.clone(),
            );
            tokio::spawn(async move {
                let reservation = match here
                    .reserve(&key, &format!("req-{i}"), amount, charge("me"))
                    .await
                {
                    Ok(reservation) => reservation,
                    Err(Error::InsufficientCredits { .. }) => return 0,
                    Err(other) => panic!("unexpected error under load: {other:?}"),
                };
                tokio::task::yield_now().await;
                if i % 4 == 0 {
                    there.refund(&reservation).await.unwrap();
                    0
                } else {
                    there.settle(&reservation, amount - 1).await.unwrap();
                    amount - 1
                }
            })
        })
        .collect();
    let mut kept = 0;
    for task in tasks {
        kept += task.await.unwrap();
    }
    assert!(kept <= 50, "overspent: {kept}");
    let balance = ctx.assert_ledger_adds_up(&key).await;
    assert_eq!(balance, 50 - kept as i64);
    let open = "SELECT COUNT(*) FROM reservations WHERE key_id = $1 AND status = 'reserved'";
    assert_eq!(ctx.count(open, &key).await, 0);
    second.close().await;
}
