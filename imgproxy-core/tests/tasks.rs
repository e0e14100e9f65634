//! Tasks and webhook deliveries in the database, on SQLite and Postgres: each task is claimed
//! once under concurrent workers of two "instances", ends once, cancels as documented, and a
//! delivery is leased to one attempt at a time.

#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

#[path = "accounts_harness.rs"]
mod harness;

use std::{collections::HashSet, sync::Arc};

use harness::Ctx;
use imgproxy_core::{
    service::db::{NewTask, TaskOutcome, TaskStatus},
    ErrorBody,
};
use serde_json::json;

fn new_task(tenant: &str, callback: Option<&str>) -> NewTask {
    NewTask {
        tenant: tenant.into(),
        key_id: None,
        kind: "generation".into(),
        model: "placeholder".into(),
        request: json!({"prompt": "p"}),
        callback_url: callback.map(str::to_owned),
    }
}

fn succeeded() -> TaskOutcome {
    TaskOutcome {
        status: TaskStatus::Succeeded,
        result: Some(json!({"images": []})),
        error: None,
        credits_used: Some(1),
    }
}

on_both_backends!(
    claimed_once,
    lifecycle_and_cancel,
    abandoned_and_interrupted,
    deliveries
);

async fn claimed_once(ctx: &Ctx) {
    let mut ids = HashSet::new();
    for _ in 0..40 {
        ids.insert(
            ctx.accounts
                .create_task(new_task("t", None))
                .await
                .unwrap()
                .id,
        );
    }
    let other = Arc::new(ctx.second_pool().await);
    let first = Arc::new(ctx.accounts.clone());
    // Eight workers, four per "instance", racing for 40 tasks.
    let workers: Vec<_> = (0..8)
        .map(|i| {
            let pool = if i % 2 == 0 {
                first.clone()
            } else {
                other.clone()
            };
            tokio::spawn(async move {
                let owner = format!("owner-{}", i % 2);
                let mut mine = Vec::new();
                while let Some(task) = pool.claim_task(&owner).await.unwrap() {
                    assert_eq!(task.status, TaskStatus::Processing);
                    assert!(pool
                        .finish_task(&task.id, &owner, &succeeded())
                        .await
                        .unwrap());
                    mine.push(task.id);
                }
                mine
            })
        })
        .collect();
    let mut claimed = Vec::new();
    for worker in workers {
        claimed.extend(worker.await.unwrap());
    }
    assert_eq!(claimed.len(), 40, "every task claimed exactly once");
    assert_eq!(claimed.iter().cloned().collect::<HashSet<_>>(), ids);
    for id in &ids {
        let task = ctx.accounts.task_by_id(id).await.unwrap().unwrap();
        assert_eq!(task.status, TaskStatus::Succeeded);
    }
}

async fn lifecycle_and_cancel(ctx: &Ctx) {
    let accounts = &ctx.accounts;
    let task = accounts.create_task(new_task("alice", None)).await.unwrap();
    assert_eq!(task.status, TaskStatus::Queued);
    assert!(accounts.task("bob", &task.id).await.unwrap().is_none());
    assert!(accounts
        .cancel_task("bob", &task.id)
        .await
        .unwrap()
        .is_none());
    // A queued task is canceled at once and never claimed.
    let canceled = accounts
        .cancel_task("alice", &task.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(canceled.status, TaskStatus::Canceled);
    assert!(accounts.claim_task("w").await.unwrap().is_none());

    // A running one is asked to stop: its heartbeat says so.
    let running = accounts.create_task(new_task("alice", None)).await.unwrap();
    let claimed = accounts.claim_task("w").await.unwrap().unwrap();
    assert_eq!(claimed.id, running.id);
    assert_eq!(
        accounts.task_heartbeat(&running.id, "w").await.unwrap(),
        Some(false)
    );
    let asked = accounts
        .cancel_task("alice", &running.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (asked.status, asked.cancel_requested),
        (TaskStatus::Processing, true)
    );
    assert_eq!(
        accounts.task_heartbeat(&running.id, "w").await.unwrap(),
        Some(true)
    );
    // Another owner cannot beat or end it; the owner ends it once.
    assert_eq!(
        accounts.task_heartbeat(&running.id, "x").await.unwrap(),
        None
    );
    assert!(!accounts
        .finish_task(&running.id, "x", &succeeded())
        .await
        .unwrap());
    let canceled = TaskOutcome {
        status: TaskStatus::Canceled,
        result: None,
        error: None,
        credits_used: Some(0),
    };
    assert!(accounts
        .finish_task(&running.id, "w", &canceled)
        .await
        .unwrap());
    assert!(!accounts
        .finish_task(&running.id, "w", &succeeded())
        .await
        .unwrap());
    let ended = accounts.task("alice", &running.id).await.unwrap().unwrap();
    assert_eq!(ended.status, TaskStatus::Canceled);
    assert!(ended.finished_at_ms.is_some());
}

async fn abandoned_and_interrupted(ctx: &Ctx) {
    let accounts = &ctx.accounts;
    let error: ErrorBody = serde_json::from_value(
        json!({"message": "gone", "type": "server_error", "param": null, "code": "interrupted"}),
    )
    .unwrap();
    let mine = accounts.create_task(new_task("t", None)).await.unwrap();
    accounts.claim_task("me").await.unwrap().unwrap();
    let theirs = accounts.create_task(new_task("t", None)).await.unwrap();
    accounts.claim_task("them").await.unwrap().unwrap();
    // A restart of `me` sees only its own running task, with the upstream jobs it recorded.
    accounts
        .record_task_job(&mine.id, "me", 0, "job-0")
        .await
        .unwrap();
    accounts
        .record_task_job(&mine.id, "other", 1, "job-1")
        .await
        .unwrap();
    let running = accounts.running_tasks("me").await.unwrap();
    assert_eq!(running.len(), 1);
    assert_eq!(running[0].id, mine.id);
    assert_eq!(
        running[0]
            .upstream_jobs
            .clone()
            .into_iter()
            .collect::<Vec<_>>(),
        [(0, "job-0".to_owned())]
    );
    let interrupted = TaskOutcome {
        status: TaskStatus::Failed,
        result: None,
        error: Some(error.clone()),
        credits_used: Some(0),
    };
    assert!(accounts
        .finish_task(&mine.id, "me", &interrupted)
        .await
        .unwrap());
    let failed = accounts.task_by_id(&mine.id).await.unwrap().unwrap();
    assert_eq!(failed.status, TaskStatus::Failed);
    assert_eq!(failed.error.unwrap().code.as_deref(), Some("interrupted"));
    assert!(accounts.running_tasks("me").await.unwrap().is_empty());
    // `them` beat a moment ago: not abandoned within a minute, abandoned after no silence.
    assert_eq!(
        accounts.fail_abandoned_tasks(60_000, &error).await.unwrap(),
        0
    );
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert_eq!(accounts.fail_abandoned_tasks(1, &error).await.unwrap(), 1);
    let task = accounts.task_by_id(&theirs.id).await.unwrap().unwrap();
    assert_eq!(task.status, TaskStatus::Failed);
    assert!(!accounts
        .finish_task(&theirs.id, "them", &succeeded())
        .await
        .unwrap());
}

async fn deliveries(ctx: &Ctx) {
    let accounts = &ctx.accounts;
    let task = accounts
        .create_task(new_task("t", Some("https://example.com/hook")))
        .await
        .unwrap();
    assert!(accounts.claim_delivery(10_000).await.unwrap().is_none());
    accounts.claim_task("w").await.unwrap().unwrap();
    assert!(accounts
        .finish_task(&task.id, "w", &succeeded())
        .await
        .unwrap());
    // One pending delivery, leased to one attempt at a time.
    let other = ctx.second_pool().await;
    let (a, b) = tokio::join!(
        accounts.claim_delivery(10_000),
        other.claim_delivery(10_000)
    );
    let claims = [a.unwrap(), b.unwrap()];
    assert_eq!(claims.iter().flatten().count(), 1);
    let delivery = claims.into_iter().flatten().next().unwrap();
    assert_eq!(
        (delivery.attempts, delivery.url.as_str()),
        (1, "https://example.com/hook")
    );
    accounts
        .record_delivery(&task.id, false, Some("answered HTTP 500"), Some(0))
        .await
        .unwrap();
    let retry = accounts.claim_delivery(10_000).await.unwrap().unwrap();
    assert_eq!(retry.attempts, 2);
    accounts
        .record_delivery(&task.id, true, None, None)
        .await
        .unwrap();
    let done = accounts.delivery(&task.id).await.unwrap().unwrap();
    assert_eq!((done.status.as_str(), done.attempts), ("delivered", 2));
    assert!(accounts.claim_delivery(10_000).await.unwrap().is_none());
    // A task without a callback has no delivery; secrets are per tenant and stable.
    let secret = accounts.webhook_secret("t").await.unwrap();
    assert!(secret.starts_with("whsec_"));
    assert_eq!(accounts.webhook_secret("t").await.unwrap(), secret);
    assert_ne!(accounts.webhook_secret("u").await.unwrap(), secret);
}
