//! Asynchronous tasks: submitting a generation or an edit to run later, a bounded pool of
//! workers per instance (the database hands each task to exactly one worker of one instance),
//! cancelling, and the signed webhook (Standard Webhooks) sent on the terminal state: attempts
//! after 1 s, 2 s and 4 s, 10 s each, then in the background with a growing delay until a 2xx
//! or the end of the delivery window (30 minutes by default).
//!
//! The runner also keeps its instance alive and recovers dead ones: it holds the instance's
//! lease in the database (renewed in the background), and recovers what instances whose lease
//! expired left behind — their open reservations, generation claims and running tasks — at
//! start and then every renewal. A live instance's work is never touched, whoever shares its
//! data dir or database.

use std::{collections::HashMap, sync::Arc, time::Duration};

use base64::Engine as _;
use hmac::{Hmac, Mac as _};
use serde::Serialize;
use serde_json::Value;
use sha2::Sha256;
use tokio::sync::Notify;
use tracing::Instrument as _;

use super::{
    cache::CacheMode,
    db::{
        ApiKey, CachedResult, Database, DeliveryRecord, NewTask, TaskOutcome, TaskRecord,
        TaskStatus,
    },
    metering::Meter,
    Call, Service,
};
use crate::{
    clock::now_secs, fetch::ReferenceFetcher, Error, ErrorBody, ImageRequest, ImageResponse,
    ResponseFormat, Result,
};

/// How tasks run and webhooks are delivered.
#[derive(Debug, Clone)]
pub struct TaskSettings {
    /// Tasks one instance runs at once.
    pub workers: usize,
    /// How often idle workers look for tasks other instances queued.
    pub poll: Duration,
    /// How often a running task's worker says it runs it (and learns of a cancel).
    pub heartbeat: Duration,
    /// The instance's lease: once it has not been renewed for this long, the instance counts
    /// as dead, and any other recovers its reservations, generation claims and tasks.
    pub lease: Duration,
    /// How often the lease is renewed (well within [`TaskSettings::lease`]), and how often dead
    /// instances are looked for.
    pub renew: Duration,
    /// The timeout of one webhook attempt.
    pub webhook_timeout: Duration,
    /// How long after the terminal state a webhook is still retried.
    pub webhook_window: Duration,
}

impl Default for TaskSettings {
    fn default() -> Self {
        Self {
            workers: 4,
            poll: Duration::from_millis(500),
            heartbeat: Duration::from_secs(2),
            lease: Duration::from_secs(15),
            renew: Duration::from_secs(5),
            webhook_timeout: Duration::from_secs(10),
            webhook_window: Duration::from_secs(30 * 60),
        }
    }
}

/// The first retries of a webhook, after the first attempt; later ones double, up to
/// [`MAX_RETRY_DELAY`].
const FIRST_RETRIES: [Duration; 3] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
];
const MAX_RETRY_DELAY: Duration = Duration::from_secs(5 * 60);
/// How often the delivery loop looks for due webhooks (the first retry is 1 s away).
const DELIVERY_POLL: Duration = Duration::from_millis(200);

/// What a task is: which endpoint it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskKind {
    /// `POST /v1/images/generations`.
    Generation,
    /// `POST /v1/images/edits`.
    Edit,
}

impl TaskKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Generation => "generation",
            Self::Edit => "edit",
        }
    }
}

/// Builds a webhook body of its own shape from a task in its terminal state and the task as
/// `GET /v1/tasks/{id}` shows it: a drop-in route's callbacks answer in its service's shape.
pub type CallbackBody = fn(&TaskRecord, TaskObject) -> Value;

/// Who submits a task: its tenant, and the key that pays (none for the operator).
#[derive(Debug, Clone, Copy)]
pub struct Submitter<'a> {
    /// The tenant.
    pub tenant: &'a str,
    /// The paying key.
    pub key: Option<&'a ApiKey>,
    /// The id of the HTTP request that submits the task.
    pub request_id: Option<&'a str>,
}

/// What one recovery pass found of dead instances.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Dead instances.
    pub instances: u64,
    /// Their open reservations, refunded.
    pub reservations: u64,
    /// Their generation claims, dropped.
    pub claims: u64,
    /// Their running tasks, taken over: finished, resumed or failed.
    pub tasks: u64,
}

/// The task service of one instance.
#[derive(Debug)]
pub struct Tasks {
    service: Arc<Service>,
    settings: TaskSettings,
    fetcher: ReferenceFetcher,
    webhooks: reqwest::Client,
    queued: Notify,
    finished: Notify,
    /// Whether the lease is held (renewals stop once it is left); locked across each renewal,
    /// so that leaving cannot be overtaken by a renewal in flight.
    leased: tokio::sync::Mutex<bool>,
    /// The webhook body shapes tasks may name, besides the task event.
    callback_formats: HashMap<&'static str, CallbackBody>,
}

impl Tasks {
    fn db(&self) -> &Database {
        self.service.db()
    }

    /// The service its tasks run on.
    pub fn service(&self) -> &Arc<Service> {
        &self.service
    }

    /// This instance's id: owner of the tasks it runs and of their reservations.
    fn owner(&self) -> &str {
        self.service.instance_id()
    }

    /// The task runner of `service`, as its instance ([`Service::instance_id`]). `fetcher`
    /// guards callback URLs as it guards reference URLs.
    pub fn new(
        service: Arc<Service>,
        fetcher: ReferenceFetcher,
        settings: TaskSettings,
    ) -> Result<Self> {
        let webhooks = fetcher.callback_client(settings.webhook_timeout)?;
        Ok(Self {
            service,
            settings,
            fetcher,
            webhooks,
            queued: Notify::new(),
            finished: Notify::new(),
            leased: tokio::sync::Mutex::new(false),
            callback_formats: HashMap::new(),
        })
    }

    /// Lets tasks submitted with [`Tasks::submit_with_callback_format`] under `name` send
    /// their webhook body as `body` builds it (still signed the Standard Webhooks way).
    #[must_use]
    pub fn with_callback_format(mut self, name: &'static str, body: CallbackBody) -> Self {
        self.callback_formats.insert(name, body);
        self
    }

    /// Checks `request` as a synchronous one would be checked (so a bad one is a 400 now,
    /// not a failed task later) and queues it.
    pub async fn submit(
        &self,
        submitter: Submitter<'_>,
        kind: TaskKind,
        request: ImageRequest,
    ) -> Result<TaskRecord> {
        self.queue(submitter, kind, request, None).await
    }

    /// [`Tasks::submit`], its webhook body in the shape registered as `format` (see
    /// [`Tasks::with_callback_format`]).
    pub async fn submit_with_callback_format(
        &self,
        submitter: Submitter<'_>,
        kind: TaskKind,
        request: ImageRequest,
        format: &'static str,
    ) -> Result<TaskRecord> {
        if !self.callback_formats.contains_key(format) {
            return Err(Error::Internal(format!(
                "no webhook body shape `{format}` is registered"
            )));
        }
        self.queue(submitter, kind, request, Some(format)).await
    }

    async fn queue(
        &self,
        submitter: Submitter<'_>,
        kind: TaskKind,
        mut request: ImageRequest,
        callback_format: Option<&str>,
    ) -> Result<TaskRecord> {
        if request.stream == Some(true) {
            return Err(Error::invalid_param(
                "stream",
                "a task is answered by polling or a webhook, not a stream",
            ));
        }
        let callback_url = request.callback_url.take();
        if let Some(url) = &callback_url {
            self.fetcher.check_callback(url).await?;
        }
        request.run_async = None;
        let validated = self.service.gateway().validate(request.clone())?;
        let task = NewTask {
            tenant: submitter.tenant.to_owned(),
            key_id: submitter.key.map(|k| k.id.clone()),
            kind: kind.as_str().to_owned(),
            model: validated.model.id.clone(),
            request: serde_json::to_value(&request)
                .map_err(|e| Error::Internal(format!("storing a task: {e}")))?,
            callback_url,
            request_id: submitter.request_id.map(str::to_owned),
            callback_format: callback_format.map(str::to_owned),
        };
        let task = self.db().create_task(task).await?;
        crate::telemetry::task("queued");
        self.queued.notify_one();
        Ok(task)
    }

    /// Cancels a task of `tenant` (at once if queued; a running one is stopped by its worker
    /// within a heartbeat). `None` if unknown.
    pub async fn cancel(&self, tenant: &str, id: &str) -> Result<Option<TaskRecord>> {
        let task = self.db().cancel_task(tenant, id).await?;
        self.finished.notify_one();
        Ok(task)
    }

    /// Starts this instance's lease: while it lives, the instance's reservations, generation
    /// claims and tasks are its own. Call once at start, before serving and before
    /// [`Tasks::recover`]; [`Tasks::start`] keeps it renewed.
    pub async fn join(&self) -> Result<()> {
        let mut leased = self.leased.lock().await;
        self.db()
            .join_instance(self.owner(), self.settings.lease)
            .await?;
        *leased = true;
        Ok(())
    }

    /// Ends this instance's lease at once, on a clean stop: the tasks it was running (and their
    /// reservations) are recovered by the next instance that looks, without waiting for the
    /// lease to expire. It is not renewed any more.
    pub async fn leave(&self) -> Result<()> {
        let mut leased = self.leased.lock().await;
        *leased = false;
        self.db().leave_instance(self.owner()).await
    }

    /// Recovers what dead instances (whose lease expired) left: refunds their open
    /// reservations, drops their generation claims and takes over their running tasks. A task
    /// whose run settled its charge (which records its result in the same transaction)
    /// succeeds with that result; one whose upstream jobs had all started is resumed (waited
    /// for, and charged once across all its runs); the others fail `interrupted`, refunded.
    /// Call at start, after [`Tasks::join`]; [`Tasks::start`] repeats it every renewal.
    pub async fn recover(self: &Arc<Self>) -> Result<Recovered> {
        let db = self.db();
        let dead = db.dead_instances().await?;
        let mut recovered = Recovered {
            instances: u64::try_from(dead.len()).unwrap_or(u64::MAX),
            ..Recovered::default()
        };
        for instance in &dead {
            recovered.reservations += db.release_dead(instance).await?;
            recovered.claims += db.release_dead_claims(instance).await?;
        }
        let silent = i64::try_from(self.settings.lease.as_millis()).unwrap_or(i64::MAX);
        let orphans = db.adopt_orphaned_tasks(self.owner(), silent).await?;
        recovered.tasks = u64::try_from(orphans.len()).unwrap_or(u64::MAX);
        for task in orphans {
            let id = task.id.clone();
            if let Err(error) = self.recover_task(task).await {
                tracing::error!(%error, task = %id, "recovering a task failed; handing it back");
                self.disown(&id).await;
            }
        }
        for instance in &dead {
            db.forget_instance(instance).await?;
        }
        if recovered.reservations + recovered.claims + recovered.tasks > 0 {
            tracing::warn!(
                instances = recovered.instances,
                reservations = recovered.reservations,
                claims = recovered.claims,
                tasks = recovered.tasks,
                "recovered what dead instances left"
            );
            self.finished.notify_one();
        } else if recovered.instances > 0 {
            tracing::info!(
                instances = recovered.instances,
                "forgot stopped instances that left nothing"
            );
        }
        Ok(recovered)
    }

    /// Ends or resumes `task`, taken over from a dead instance.
    async fn recover_task(self: &Arc<Self>, task: TaskRecord) -> Result<()> {
        let db = self.db();
        let key = task.key_id.as_deref();
        // The holds of its runs are a dead instance's: none of them will settle any more.
        if let Some(key) = key {
            db.release_task_holds(key, &task.id).await?;
        }
        if task.result.is_some() {
            // Its run was charged and recorded the result in one transaction, then died before
            // finishing: it succeeded, for what its runs' charges kept.
            let charged = match key {
                Some(key) => Some(db.task_charges(key, &task.id).await?.unwrap_or(0)),
                None => None,
            };
            tracing::info!(task = %task.id, "finishing a task whose run stored its result before it died");
            let outcome = TaskOutcome {
                status: TaskStatus::Succeeded,
                result: task.result.clone(),
                error: None,
                credits_used: charged,
            };
            db.finish_task(&task.id, self.owner(), &outcome).await?;
            return Ok(());
        }
        if !task.upstream_jobs.is_empty() {
            tracing::info!(task = %task.id, jobs = task.upstream_jobs.len(), "resuming an interrupted task");
            let tasks = Arc::clone(self);
            tokio::spawn(async move { tasks.run(task).await });
            return Ok(());
        }
        // Without its result a task is never left charged: a charge settled without one (by a
        // version that did not record both at once) is given back.
        let refunded = match key {
            Some(key) => db.refund_task_charges(key, &task.id).await?,
            None => 0,
        };
        let outcome = TaskOutcome {
            status: TaskStatus::Failed,
            result: None,
            error: Some(interrupted(refunded > 0)),
            credits_used: Some(0),
        };
        db.finish_task(&task.id, self.owner(), &outcome).await?;
        Ok(())
    }

    /// Starts the workers, the lease's renewal with the recovery of dead instances, and the
    /// webhook delivery loop; they run until the runtime stops.
    pub fn start(self: &Arc<Self>) {
        for _ in 0..self.settings.workers.max(1) {
            let tasks = Arc::clone(self);
            tokio::spawn(async move { tasks.work().await });
        }
        let tasks = Arc::clone(self);
        tokio::spawn(async move { tasks.keep_alive().await });
        let tasks = Arc::clone(self);
        tokio::spawn(async move { tasks.deliver().await });
    }

    async fn work(&self) {
        loop {
            match self.db().claim_task(self.owner()).await {
                Ok(Some(task)) => self.run(task).await,
                Ok(None) => {
                    tokio::select! {
                        () = self.queued.notified() => {}
                        () = tokio::time::sleep(self.settings.poll) => {}
                    }
                }
                Err(error) => {
                    tracing::error!(%error, "claiming a task failed");
                    tokio::time::sleep(self.settings.poll).await;
                }
            }
        }
    }

    /// Runs a claimed task to its end, beating while it runs; a cancel drops the generation
    /// (the upstream job is cancelled where it can be, the reservation refunded) unless it was
    /// paid for already.
    async fn run(&self, task: TaskRecord) {
        // The span roots a task's trace: it runs apart from the request that submitted it.
        let span = tracing::info_span!("task", imgproxy.task_id = task.id.as_str());
        let outcome = match self.execute(&task).instrument(span).await {
            Ok(Some(outcome)) => outcome,
            Ok(None) => self.canceled(&task.id).await,
            Err(error) => failure(&error),
        };
        match self
            .db()
            .finish_task(&task.id, self.owner(), &outcome)
            .await
        {
            Ok(true) => {
                crate::telemetry::task(outcome.status.as_str());
                self.finished.notify_one();
            }
            Ok(false) => {
                tracing::warn!(task = %task.id, "a task ended elsewhere while it ran here")
            }
            Err(error) => {
                tracing::error!(%error, task = %task.id, "recording a task's end failed; handing it back");
                self.disown(&task.id).await;
            }
        }
    }

    /// The outcome of a run stopped by a cancel: canceled, unless the cancel came after its
    /// charge was settled (with its result, in one transaction): then it is done, as paid.
    async fn canceled(&self, id: &str) -> TaskOutcome {
        match self.db().task_by_id(id).await {
            Ok(Some(task)) if task.result.is_some() => TaskOutcome {
                status: TaskStatus::Succeeded,
                result: task.result,
                error: None,
                credits_used: task.credits_used,
            },
            _ => TaskOutcome {
                status: TaskStatus::Canceled,
                result: None,
                error: None,
                credits_used: Some(0),
            },
        }
    }

    /// Gives back a task this instance cannot end, for the next recovery (of any instance):
    /// while this instance lives, nobody else would touch it.
    async fn disown(&self, id: &str) {
        if let Err(error) = self.db().disown_task(id, self.owner()).await {
            tracing::error!(%error, task = %id, "handing a task back failed: it is recovered when this instance stops");
        }
    }

    /// The task's outcome, or `None` when it was cancelled.
    async fn execute(&self, task: &TaskRecord) -> Result<Option<TaskOutcome>> {
        let key = match &task.key_id {
            Some(id) => {
                let key = self.db().get_key(id).await?;
                if key.revoked {
                    return Err(Error::Forbidden {
                        message: "the key that submitted this task was revoked".into(),
                    });
                }
                Some(key)
            }
            None => None,
        };
        let request: ImageRequest = serde_json::from_value(task.request.clone())
            .map_err(|e| Error::Internal(format!("a stored task is unreadable: {e}")))?;
        // A resumed task waits for the jobs it started, without the cache. If any earlier run
        // already settled a charge, it is not charged again; otherwise this run's charge has an
        // id of its own (the interrupted runs' reservations were refunded when it was taken
        // over).
        let resume = (!task.upstream_jobs.is_empty()).then_some(&task.upstream_jobs);
        let cache = if request.reroll == Some(true) || resume.is_some() {
            CacheMode::Refresh
        } else {
            CacheMode::Use
        };
        let mut paid = None;
        let request_id = match resume {
            Some(_) => {
                if let Some(key) = &key {
                    paid = self.db().task_charges(&key.id, &task.id).await?;
                }
                format!("{}.r{}", task.id, crate::clock::now_ms())
            }
            None => task.id.clone(),
        };
        let key = key.filter(|_| paid.is_none());
        let (jobs, mut started) = tokio::sync::mpsc::unbounded_channel();
        let call = Call {
            tenant: &task.tenant,
            meter: key.as_ref().map(|key| Meter {
                db: self.db(),
                key,
                // Idempotent by task: a task's charge can never be taken twice.
                request_id: &request_id,
                surface: None,
                owner: self.owner(),
                delivered: None,
                task: Some(&task.id),
            }),
            cache,
            name: None,
            partials: None,
            jobs: Some(&jobs),
            resume,
        };
        let serve = self.service.serve(call, request);
        tokio::pin!(serve);
        let mut beat = tokio::time::interval(self.settings.heartbeat);
        beat.reset();
        loop {
            tokio::select! {
                served = &mut serve => {
                    let served = served?;
                    let credits = served.credits_used.and_then(|c| i64::try_from(c).ok());
                    return Ok(Some(TaskOutcome {
                        status: TaskStatus::Succeeded,
                        result: Some(served.task_result()),
                        error: None,
                        credits_used: paid.or(credits),
                    }));
                }
                Some((first_index, token)) = started.recv() => {
                    if let Err(error) = self.db().record_task_job(&task.id, self.owner(), first_index, &token).await {
                        tracing::warn!(%error, task = %task.id, "recording an upstream job failed; the task cannot be resumed");
                    }
                }
                _ = beat.tick() => {
                    match self.db().task_heartbeat(&task.id, self.owner()).await {
                        Ok(Some(false)) => {}
                        // Cancelled, or ended elsewhere: stop, dropping the generation.
                        Ok(Some(true) | None) => return Ok(None),
                        Err(error) => tracing::warn!(%error, "a task heartbeat failed"),
                    }
                }
            }
        }
    }

    /// Renews this instance's lease and recovers dead instances, every renewal interval.
    async fn keep_alive(self: Arc<Self>) {
        let mut every = tokio::time::interval(self.settings.renew);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        loop {
            every.tick().await;
            let leased = self.leased.lock().await;
            if !*leased {
                return;
            }
            match self
                .db()
                .renew_instance(self.owner(), self.settings.lease)
                .await
            {
                Ok(true) => {}
                Ok(false) => tracing::error!(
                    "this instance's lease had expired (the database was out of reach, or the \
                     process stalled): other instances may have recovered its work"
                ),
                Err(error) => tracing::warn!(%error, "renewing the instance's lease failed"),
            }
            drop(leased);
            if let Err(error) = self.recover().await {
                tracing::error!(%error, "recovering dead instances failed");
            }
        }
    }

    async fn deliver(&self) {
        let lease = self.settings.webhook_timeout + Duration::from_secs(5);
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        loop {
            match self.db().claim_delivery(lease_ms).await {
                Ok(Some(delivery)) => self.attempt(delivery).await,
                Ok(None) => {
                    tokio::select! {
                        () = self.finished.notified() => {}
                        () = tokio::time::sleep(DELIVERY_POLL) => {}
                    }
                }
                Err(error) => {
                    tracing::error!(%error, "claiming a webhook delivery failed");
                    tokio::time::sleep(DELIVERY_POLL).await;
                }
            }
        }
    }

    /// One attempt of a delivery, and what comes next: done, a retry, or giving up.
    async fn attempt(&self, delivery: DeliveryRecord) {
        let outcome = self.post(&delivery).await;
        let retry_at = match &outcome {
            Ok(()) => None,
            Err(_) => {
                let delay = retry_delay(delivery.attempts);
                let at = crate::clock::now_ms()
                    .saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
                let window =
                    i64::try_from(self.settings.webhook_window.as_millis()).unwrap_or(i64::MAX);
                (at <= delivery.created_at_ms.saturating_add(window)).then_some(at)
            }
        };
        crate::telemetry::webhook(match (&outcome, retry_at) {
            (Ok(()), _) => "delivered",
            (Err(_), Some(_)) => "failed",
            (Err(_), None) => "gave_up",
        });
        let error = outcome.as_ref().err().map(String::as_str);
        if let Some(error) = error {
            tracing::warn!(task = %delivery.task_id, attempts = delivery.attempts, error, "webhook attempt failed");
        }
        if let Err(failure) = self
            .db()
            .record_delivery(&delivery.task_id, outcome.is_ok(), error, retry_at)
            .await
        {
            tracing::error!(error = %failure, "recording a webhook attempt failed");
        }
    }

    /// POSTs the task to its receiver, signed; `Err` with the reason unless it answered 2xx.
    async fn post(&self, delivery: &DeliveryRecord) -> std::result::Result<(), String> {
        let task = match self.db().task_by_id(&delivery.task_id).await {
            Ok(Some(task)) => task,
            Ok(None) => return Err("the task is gone".into()),
            Err(error) => return Err(error.to_string()),
        };
        let object = self.object(&task).await.map_err(|e| e.to_string())?;
        let shaped = task
            .callback_format
            .as_deref()
            .and_then(|name| self.callback_formats.get(name));
        let body = match shaped {
            Some(shape) => serde_json::to_string(&shape(&task, object)),
            None => serde_json::to_string(&WebhookEvent {
                kind: format!("image.task.{}", task.status.as_str()),
                timestamp: now_secs(),
                data: object,
            }),
        }
        .map_err(|e| e.to_string())?;
        let secret = self
            .db()
            .webhook_secret(&delivery.tenant)
            .await
            .map_err(|e| e.to_string())?;
        // The same id on every attempt, so receivers can tell a retry from a new event.
        let id = format!("msg_{}", task.id);
        let timestamp = now_secs();
        let signature = sign_webhook(&secret, &id, timestamp, &body).map_err(|e| e.to_string())?;
        let url = self
            .fetcher
            .check_callback(&delivery.url)
            .await
            .map_err(|e| e.to_string())?;
        let response = self
            .webhooks
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await
            // reqwest's message names the URL, which may hold a token: keep only the kind.
            .map_err(|e| {
                if e.is_timeout() {
                    "timed out".to_owned()
                } else if e.is_connect() {
                    "could not connect".to_owned()
                } else {
                    "the request failed".to_owned()
                }
            })?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("answered HTTP {}", status.as_u16()))
        }
    }

    /// The task as clients see it (`GET /v1/tasks/{id}`, webhook payloads): status, times,
    /// credits, the result in the request's `response_format` (URLs by default, freshly
    /// signed), the error, and the webhook's delivery.
    pub async fn object(&self, task: &TaskRecord) -> Result<TaskObject> {
        // A running task may hold its result already (recorded with its charge): it shows once
        // the task has succeeded.
        let stored = task
            .result
            .as_ref()
            .filter(|_| task.status == TaskStatus::Succeeded);
        let result = match stored {
            Some(stored) => {
                let images: CachedResult = serde_json::from_value(stored["images"].clone())
                    .map_err(|e| {
                        Error::Internal(format!("a stored task result is unreadable: {e}"))
                    })?;
                let usage = serde_json::from_value(stored["usage"].clone()).ok();
                let format = match task.request.get("response_format").and_then(Value::as_str) {
                    Some("b64_json") => ResponseFormat::B64Json,
                    _ => ResponseFormat::Url,
                };
                let mut response = self.service.stored_response(&images, format, usage).await?;
                // When the images were made, not when they are read (the URLs are signed anew).
                response.created = task.finished_at_ms.map_or(response.created, |ms| ms / 1000);
                response.credits_used = task.credits_used.and_then(|c| u64::try_from(c).ok());
                Some(response)
            }
            None => None,
        };
        let webhook = match &task.callback_url {
            Some(_) => self.db().delivery(&task.id).await?.map(|d| WebhookState {
                status: d.status,
                attempts: d.attempts,
                last_error: d.last_error,
                finished_at: d.finished_at_ms.map(|ms| ms / 1000),
            }),
            None => None,
        };
        Ok(TaskObject {
            id: task.id.clone(),
            object: "image.task",
            kind: task.kind.clone(),
            status: task.status,
            model: task.model.clone(),
            created_at: task.created_at_ms / 1000,
            started_at: task.started_at_ms.map(|ms| ms / 1000),
            finished_at: task.finished_at_ms.map(|ms| ms / 1000),
            credits_used: task.credits_used,
            result,
            error: task.error.clone(),
            callback_url: task.callback_url.clone(),
            webhook,
            request_id: task.request_id.clone(),
        })
    }
}

/// A task as clients see it: `GET /v1/tasks/{id}` and the `data` of a webhook.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct TaskObject {
    /// `task_...`.
    pub id: String,
    /// Always `image.task`.
    pub object: &'static str,
    /// `generation` or `edit`.
    pub kind: String,
    /// Where it is.
    pub status: TaskStatus,
    /// The model asked for.
    pub model: String,
    /// Unix seconds.
    pub created_at: i64,
    /// When a worker took it.
    pub started_at: Option<i64>,
    /// When it ended.
    pub finished_at: Option<i64>,
    /// Credits charged.
    pub credits_used: Option<i64>,
    /// The images, on success.
    pub result: Option<ImageResponse>,
    /// OpenAI's error object, on failure.
    pub error: Option<ErrorBody>,
    /// Where the terminal state is POSTed.
    pub callback_url: Option<String>,
    /// How that delivery went.
    pub webhook: Option<WebhookState>,
    /// The id of the HTTP request that submitted it (its `x-request-id`).
    pub request_id: Option<String>,
}

/// The state of a task's webhook delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct WebhookState {
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    /// Attempts so far.
    pub attempts: i64,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When it was delivered or given up, Unix seconds.
    pub finished_at: Option<i64>,
}

/// The body of a webhook: the task in its terminal state.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct WebhookEvent {
    /// `image.task.succeeded`, `image.task.failed` or `image.task.canceled`.
    #[serde(rename = "type")]
    kind: String,
    /// Unix seconds.
    timestamp: i64,
    /// The task.
    data: TaskObject,
}

/// A failed task's outcome: the error as OpenAI's error object, nothing charged.
fn failure(error: &Error) -> TaskOutcome {
    TaskOutcome {
        status: TaskStatus::Failed,
        result: None,
        error: Some(ErrorBody::from(error)),
        credits_used: Some(0),
    }
}

/// The error of a task cut off by a stopped server, which is never left charged: it says
/// whether a charge was given back or none was taken.
fn interrupted(refunded: bool) -> ErrorBody {
    let charge = if refunded {
        "its charge was refunded"
    } else {
        "it was not charged"
    };
    ErrorBody::new(
        format!("the server running the task stopped; {charge}"),
        "server_error",
        None,
        Some("interrupted"),
    )
}

/// The wait after attempt `attempts` (1-based): 1 s, 2 s, 4 s, then doubling to 5 minutes.
fn retry_delay(attempts: i64) -> Duration {
    let index = usize::try_from(attempts.max(1) - 1).unwrap_or(usize::MAX);
    FIRST_RETRIES.get(index).copied().unwrap_or_else(|| {
        let doublings = u32::try_from(index - FIRST_RETRIES.len() + 1).unwrap_or(u32::MAX);
        FIRST_RETRIES[FIRST_RETRIES.len() - 1]
            .saturating_mul(2_u32.saturating_pow(doublings.min(16)))
            .min(MAX_RETRY_DELAY)
    })
}

/// The Standard Webhooks signature header: `v1,` and the base64 HMAC-SHA256, keyed with the
/// secret's bytes (after `whsec_`), of `{id}.{timestamp}.{body}`.
pub fn sign_webhook(secret: &str, id: &str, timestamp: i64, body: &str) -> Result<String> {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .map_err(|_| Error::Internal("a webhook secret is not base64".into()))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key)
        .map_err(|_| Error::Internal("a webhook secret is unusable".into()))?;
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    Ok(format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_follow_one_two_four_then_double_to_five_minutes() {
        let delays: Vec<u64> = (1..=9).map(|a| retry_delay(a).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256]);
        assert_eq!(retry_delay(30), MAX_RETRY_DELAY);
    }

    #[test]
    fn signatures_follow_standard_webhooks() {
        // The example of the Standard Webhooks specification.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
        let body = r#"{"test": 2432232314}"#;
        let signature = sign_webhook(secret, id, 1_614_265_330, body).unwrap();
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }
}
