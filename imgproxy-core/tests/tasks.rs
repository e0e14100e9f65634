//! Tasks and webhook deliveries in the database, on SQLite and Postgres: each task is claimed
//! once under concurrent workers of two "instances", ends once, cancels as documented, is taken
//! over only from a dead instance (its lease expired), and a delivery is leased to one attempt
//! at a time; and the money of tasks recovered from crashes at every point (a task is charged
//! at most once across all its runs, and its record says what it cost).

#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

#[path = "accounts_harness.rs"]
mod harness;

use std::{
    collections::{BTreeMap, HashSet},
    path::Path,
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use harness::{charge, fake::FakeProvider, new_task, one_image, service_for, Ctx};
use imgproxy_core::{
    fetch::{FetchPolicy, ReferenceFetcher},
    service::{
        cache::CacheMode,
        db::{ApiKey, NewTask, TaskOutcome, TaskRecord, TaskStatus},
        metering::Meter,
        tasks::{Recovered, TaskSettings, Tasks},
        Call, Database,
    },
    ImageRequest,
};
use serde_json::json;

fn succeeded() -> TaskOutcome {
    TaskOutcome {
        status: TaskStatus::Succeeded,
        result: Some(json!({"images": []})),
        error: None,
        credits_used: Some(1),
    }
}

/// `owner` does not run task `id`: it can neither beat nor end it.
async fn assert_not_running_for(ctx: &Ctx, id: &str, owner: &str) {
    let accounts = &ctx.accounts;
    assert_eq!(accounts.task_heartbeat(id, owner).await.unwrap(), None);
    assert!(!accounts.finish_task(id, owner, &succeeded()).await.unwrap());
}

on_both_backends!(
    claimed_once,
    lifecycle_and_cancel,
    leases_and_adoption,
    deliveries,
    resumed_then_killed_charged_once,
    killed_between_settle_and_finish,
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
    assert_not_running_for(ctx, &running.id, "x").await;
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

/// No instance is dead and no task orphaned.
async fn assert_nothing_to_take_over(accounts: &Database) {
    assert!(accounts.dead_instances().await.unwrap().is_empty());
    assert!(accounts
        .adopt_orphaned_tasks("survivor", 1)
        .await
        .unwrap()
        .is_empty());
}

async fn leases_and_adoption(ctx: &Ctx) {
    let accounts = &ctx.accounts;
    let hour = Duration::from_secs(3600);
    for instance in ["me", "them", "survivor"] {
        accounts.join_instance(instance, hour).await.unwrap();
    }
    let mine = accounts.create_task(new_task("t", None)).await.unwrap();
    accounts.claim_task("me").await.unwrap().unwrap();
    let theirs = accounts.create_task(new_task("t", None)).await.unwrap();
    accounts.claim_task("them").await.unwrap().unwrap();
    // Only a task's owner records its upstream jobs.
    accounts
        .record_task_job(&theirs.id, "them", 0, "job-0")
        .await
        .unwrap();
    accounts
        .record_task_job(&theirs.id, "me", 1, "job-1")
        .await
        .unwrap();

    // While every lease lives nothing is taken over, however long a task has not beaten.
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_nothing_to_take_over(accounts).await;

    // `them` dies: two survivors on two pools race for its task, and one gets it, as it was.
    accounts.leave_instance("them").await.unwrap();
    assert_eq!(accounts.dead_instances().await.unwrap(), ["them"]);
    let other = ctx.second_pool().await;
    other.join_instance("other", hour).await.unwrap();
    let (a, b) = tokio::join!(
        accounts.adopt_orphaned_tasks("survivor", 60_000),
        other.adopt_orphaned_tasks("other", 60_000)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.len() + b.len(), 1, "{a:?} {b:?}");
    let (adopted, new_owner) = if a.is_empty() {
        (&b[0], "other")
    } else {
        (&a[0], "survivor")
    };
    assert_eq!(adopted.id, theirs.id);
    assert_eq!(
        adopted
            .upstream_jobs
            .clone()
            .into_iter()
            .collect::<Vec<_>>(),
        [(0, "job-0".to_owned())]
    );
    // The dead owner can no longer beat or end it; the new one can.
    assert_not_running_for(ctx, &theirs.id, "them").await;
    assert_eq!(
        accounts
            .task_heartbeat(&theirs.id, new_owner)
            .await
            .unwrap(),
        Some(false)
    );
    // The live instance's task stays its own.
    assert_eq!(
        accounts.task_by_id(&mine.id).await.unwrap().unwrap().status,
        TaskStatus::Processing
    );
    assert_eq!(
        accounts.task_heartbeat(&mine.id, "me").await.unwrap(),
        Some(false)
    );

    // Forgetting takes only the dead; a dead instance that renews is alive again (and told).
    accounts.forget_instance("me").await.unwrap();
    accounts.forget_instance("them").await.unwrap();
    assert!(accounts.dead_instances().await.unwrap().is_empty());
    assert!(accounts.renew_instance("me", hour).await.unwrap());
    accounts.leave_instance("me").await.unwrap();
    assert!(!accounts.renew_instance("me", hour).await.unwrap());
    assert_nothing_to_take_over(accounts).await;

    // A task handed back (its end could not be recorded), or one of an owner that never held a
    // lease, is taken over once it has not beaten for the given silence.
    accounts.disown_task(&mine.id, "me").await.unwrap();
    let leaseless = accounts.create_task(new_task("t", None)).await.unwrap();
    accounts.claim_task("old-version").await.unwrap().unwrap();
    assert_eq!(
        accounts
            .adopt_orphaned_tasks("survivor", 60_000)
            .await
            .unwrap()
            .iter()
            .map(|t| t.id.as_str())
            .collect::<Vec<_>>(),
        [mine.id.as_str()],
        "a leaseless owner's task that beat a moment ago is left alone"
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    let taken = accounts.adopt_orphaned_tasks("survivor", 1).await.unwrap();
    assert_eq!(
        taken.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
        [leaseless.id.as_str()]
    );
    other.close().await;
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

// ------------------------------------------------------------------------------------------
// Recovery and money: each crash point is reached by doing what a run does, step by step, and
// stopping where the process would have died; its instance's lease then ends and another
// instance recovers.
// ------------------------------------------------------------------------------------------

/// An upstream whose jobs finish while nobody waits: `generate` answers at once
/// (`generated-<n>`) and `resume` returns the job's image (`job-<job>`). Counts both.
fn upstream() -> Arc<FakeProvider> {
    let provider = FakeProvider::new("upstream", |n, _| {
        Ok(one_image(format!("generated-{n}").into_bytes()))
    });
    Arc::new(provider.resuming(|job| Ok(one_image(format!("job-{job}").into_bytes()))))
}

/// One instance: a service as `id` (its lease joined) and its task runner, not started.
async fn instance(ctx: &Ctx, images: &Path, id: &str, upstream: &Arc<FakeProvider>) -> Arc<Tasks> {
    let service = service_for(&ctx.accounts, images, "metered", upstream.clone()).with_instance(id);
    let settings = TaskSettings {
        lease: Duration::from_secs(3600),
        ..TaskSettings::default()
    };
    let fetcher = ReferenceFetcher::new(FetchPolicy::default()).unwrap();
    let tasks = Arc::new(Tasks::new(Arc::new(service), fetcher, settings).unwrap());
    tasks.join().await.unwrap();
    tasks
}

/// A queued task of `key` (one image of the 1-credit model), taken by instance `owner`.
async fn running_task(ctx: &Ctx, key: &ApiKey, owner: &str) -> TaskRecord {
    let task = ctx
        .accounts
        .create_task(NewTask {
            tenant: key.id.clone(),
            key_id: Some(key.id.clone()),
            kind: "generation".into(),
            model: "metered".into(),
            request: serde_json::to_value(ImageRequest::new("metered", "a lighthouse")).unwrap(),
            callback_url: None,
            request_id: None,
            callback_format: None,
        })
        .await
        .unwrap();
    let claimed = ctx.accounts.claim_task(owner).await.unwrap().unwrap();
    assert_eq!(claimed.id, task.id);
    claimed
}

/// What a run of `task` does on instance `owner` up to its answer: the metered serve, charged
/// under `request_id` (resuming `resume`), which settles and records the result together.
async fn serve_as_a_run(
    ctx: &Ctx,
    tasks: &Tasks,
    key: &ApiKey,
    task: &TaskRecord,
    request_id: &str,
    resume: Option<&BTreeMap<u32, String>>,
) {
    let call = Call {
        tenant: &key.id,
        meter: Some(Meter {
            db: &ctx.accounts,
            key,
            request_id,
            surface: None,
            owner: tasks.service().instance_id(),
            delivered: None,
            task: Some(&task.id),
        }),
        cache: if resume.is_some() {
            CacheMode::Refresh
        } else {
            CacheMode::Use
        },
        resume,
        ..Call::default()
    };
    let served = tasks
        .service()
        .serve(call, ImageRequest::new("metered", "a lighthouse"))
        .await
        .unwrap();
    assert_eq!(served.credits_used, Some(1));
}

/// Runs `runner`'s recovery, which must take over `instances` dead instances and `tasks` tasks.
async fn assert_recovers(runner: &Arc<Tasks>, instances: u64, tasks: u64) {
    let recovered = runner.recover().await.unwrap();
    assert_eq!(
        (recovered.instances, recovered.tasks),
        (instances, tasks),
        "{recovered:?}"
    );
}

async fn wait_ended(ctx: &Ctx, id: &str) -> TaskRecord {
    let mut task = ctx.accounts.task_by_id(id).await.unwrap().unwrap();
    for _ in 0..200 {
        if task.status.is_terminal() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
        task = ctx.accounts.task_by_id(id).await.unwrap().unwrap();
    }
    assert!(task.status.is_terminal(), "task {id} did not end: {task:?}");
    task
}

/// `(kind, amount)` of the ledger rows of `request_id`, oldest first.
async fn ledger_of(ctx: &Ctx, key: &str, request_id: &str) -> Vec<(String, i64)> {
    let mut rows: Vec<_> = ctx
        .accounts
        .recent_charges(key, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.request_id.as_deref() == Some(request_id))
        .map(|e| (e.kind, e.amount))
        .collect();
    rows.reverse();
    rows
}

fn rows(expected: &[(&str, i64)]) -> Vec<(String, i64)> {
    expected
        .iter()
        .map(|(k, a)| ((*k).to_owned(), *a))
        .collect()
}

async fn resumed_then_killed_charged_once(ctx: &Ctx) {
    let dir = tempfile::tempdir().unwrap();
    // The resumed run's settle records the result (this version), or does not (a torn run, as
    // an earlier version could leave): either way a third run may not charge again.
    for records_result in [true, false] {
        let upstream = upstream();
        let key = ctx.accounts.get_key(&ctx.key(100).await).await.unwrap();
        let a = instance(ctx, dir.path(), &format!("a-{records_result}"), &upstream).await;
        let b = instance(ctx, dir.path(), &format!("b-{records_result}"), &upstream).await;

        // Run 1 on A: reserved, its upstream job started; then A dies.
        let task = running_task(ctx, &key, a.service().instance_id()).await;
        let first = ctx
            .accounts
            .reserve(&key.id, &task.id, 1, charge(a.service().instance_id()))
            .await
            .unwrap();
        ctx.accounts
            .record_task_job(&task.id, a.service().instance_id(), 0, "j1")
            .await
            .unwrap();
        a.leave().await.unwrap();

        // Run 2 on B: takes the task over, refunds run 1's hold, waits for the job and settles
        // under a charge id of its own; then B dies before recording the task's end.
        let adopted = ctx
            .accounts
            .adopt_orphaned_tasks(b.service().instance_id(), 60_000)
            .await
            .unwrap();
        assert_eq!(adopted.len(), 1);
        assert_eq!(
            ctx.accounts
                .release_task_holds(&key.id, &task.id)
                .await
                .unwrap(),
            1
        );
        let second = format!("{}.r1", task.id);
        if records_result {
            serve_as_a_run(
                ctx,
                &b,
                &key,
                &task,
                &second,
                Some(&adopted[0].upstream_jobs),
            )
            .await;
        } else {
            let hold = ctx
                .accounts
                .reserve(&key.id, &second, 1, charge(b.service().instance_id()))
                .await
                .unwrap();
            ctx.accounts.settle(&hold, 1).await.unwrap();
        }
        b.leave().await.unwrap();
        assert_eq!(ctx.accounts.balance(&key.id).await.unwrap(), 99);

        // C recovers both dead instances: the task succeeds, charged once in all.
        let c = instance(ctx, dir.path(), &format!("c-{records_result}"), &upstream).await;
        assert_recovers(&c, 2, 1).await;
        let done = wait_ended(ctx, &task.id).await;
        assert_eq!(done.status, TaskStatus::Succeeded, "{done:?}");
        assert_eq!(done.credits_used, Some(1), "what the task cost in all");
        assert!(done.result.is_some());
        assert_eq!(ctx.accounts.balance(&key.id).await.unwrap(), 99);
        assert_eq!(ctx.assert_ledger_adds_up(&key.id).await, 99);
        assert_eq!(
            ledger_of(ctx, &key.id, &first.request_id).await,
            rows(&[("reserve", -1), ("refund", 1)])
        );
        assert_eq!(
            ledger_of(ctx, &key.id, &second).await,
            rows(&[("reserve", -1), ("settle", 0)])
        );
        // No third charge was even reserved.
        let charges = ctx.accounts.recent_charges(&key.id, 100).await.unwrap();
        assert_eq!(
            charges.len(),
            5,
            "credit, two reserves, a refund, a settle: {charges:?}"
        );
        // The job was waited for once: by B when it recorded its result, else by C.
        assert_eq!(upstream.resumed(), 1);
        assert_eq!(upstream.calls(), 0);
        // Recovering again finds nothing.
        assert_eq!(c.recover().await.unwrap(), Recovered::default());
    }
}

async fn killed_between_settle_and_finish(ctx: &Ctx) {
    let dir = tempfile::tempdir().unwrap();
    let upstream = upstream();
    let key = ctx.accounts.get_key(&ctx.key(100).await).await.unwrap();

    // A synchronous upstream (no job to resume). A's run generates, stores the image, and
    // settles (which records the result on the task); A dies before it records the end.
    let a = instance(ctx, dir.path(), "a", &upstream).await;
    let kept = running_task(ctx, &key, "a").await;
    serve_as_a_run(ctx, &a, &key, &kept, &kept.id, None).await;
    // While the task runs, its result is not shown, but what it cost is on record.
    let running = ctx.accounts.task_by_id(&kept.id).await.unwrap().unwrap();
    assert_eq!(
        (running.status, running.credits_used),
        (TaskStatus::Processing, Some(1))
    );
    assert!(a.object(&running).await.unwrap().result.is_none());

    // A torn run of the same kind (an earlier version settled without recording the result).
    let torn = running_task(ctx, &key, "a").await;
    let hold = ctx
        .accounts
        .reserve(&key.id, &torn.id, 1, charge("a"))
        .await
        .unwrap();
    ctx.accounts.settle(&hold, 1).await.unwrap();
    a.leave().await.unwrap();
    assert_eq!(ctx.accounts.balance(&key.id).await.unwrap(), 98);

    let b = instance(ctx, dir.path(), "b", &upstream).await;
    assert_recovers(&b, 1, 2).await;

    // Kept as charged, with its result: the images were stored.
    let done = wait_ended(ctx, &kept.id).await;
    assert_eq!(
        (done.status, done.credits_used),
        (TaskStatus::Succeeded, Some(1)),
        "{done:?}"
    );
    let object = b.object(&done).await.unwrap();
    let response = object.result.unwrap();
    assert_eq!(response.credits_used, Some(1));
    let stored = done.result.unwrap();
    let image_key = stored["images"]["images"][0]["key"].as_str().unwrap();
    let (bytes, _) = b.service().store().get(image_key).await.unwrap().unwrap();
    assert_eq!(bytes, Bytes::from_static(b"generated-0"));
    assert_eq!(
        ledger_of(ctx, &key.id, &kept.id).await,
        rows(&[("reserve", -1), ("settle", 0)])
    );

    // Without a result it cannot be kept: refunded, and the record says so.
    let done = wait_ended(ctx, &torn.id).await;
    assert_eq!(
        (done.status, done.credits_used),
        (TaskStatus::Failed, Some(0)),
        "{done:?}"
    );
    let error = done.error.unwrap();
    assert_eq!(error.code.as_deref(), Some("interrupted"));
    assert!(error.message.contains("refunded"), "{}", error.message);
    assert_eq!(
        ledger_of(ctx, &key.id, &torn.id).await,
        rows(&[("reserve", -1), ("settle", 0), ("refund", 1)])
    );
    assert_eq!(
        ctx.accounts.task_charges(&key.id, &torn.id).await.unwrap(),
        None
    );

    assert_eq!(upstream.calls(), 1, "nothing ran twice");
    assert_eq!(ctx.accounts.balance(&key.id).await.unwrap(), 99);
    assert_eq!(ctx.assert_ledger_adds_up(&key.id).await, 99);
    assert_eq!(b.recover().await.unwrap(), Recovered::default());
}
