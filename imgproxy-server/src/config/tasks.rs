//! Asynchronous tasks and their webhooks: the environment variables over the `[tasks]` table
//! (declared in `config`) and the bounds its values are held to. The task runner and its
//! defaults live in `imgproxy_core::tasks`.

use std::time::Duration;

use imgproxy_core::service::tasks::TaskSettings;

use super::{Env, TasksConfig};

/// Tasks one instance runs at once.
pub const ENV_TASK_WORKERS: &str = "IMGPROXY_TASK_WORKERS";
/// Seconds an instance's lease lasts (after which, not renewed, the instance counts as dead).
pub const ENV_INSTANCE_LEASE_SECS: &str = "IMGPROXY_INSTANCE_LEASE_SECS";
/// Seconds between renewals of an instance's lease.
pub const ENV_INSTANCE_RENEW_SECS: &str = "IMGPROXY_INSTANCE_RENEW_SECS";
/// Seconds after a task's end during which its webhook is retried.
pub const ENV_WEBHOOK_WINDOW_SECS: &str = "IMGPROXY_WEBHOOK_WINDOW_SECS";

impl TasksConfig {
    /// The task runner's settings: environment over file over the runner's defaults.
    pub(super) fn settings(self, env: &dyn Env) -> anyhow::Result<TaskSettings> {
        let mut tasks = TaskSettings::default();
        if let Some(workers) = env.over(ENV_TASK_WORKERS, self.workers)? {
            tasks.workers = workers.max(1);
        }
        if let Some(lease) = env.over(ENV_INSTANCE_LEASE_SECS, self.instance_lease_secs)? {
            tasks.lease = Duration::from_secs(lease.max(1));
            // Renew well within the silence that counts as death.
            tasks.renew = tasks.renew.min(tasks.lease / 3);
        }
        if let Some(renew) = env.over(ENV_INSTANCE_RENEW_SECS, self.instance_renew_secs)? {
            tasks.renew = Duration::from_secs(renew.max(1));
            anyhow::ensure!(
                tasks.renew < tasks.lease,
                "the instance's lease must be renewed within it: {ENV_INSTANCE_RENEW_SECS} \
                 ({renew}) must be less than {ENV_INSTANCE_LEASE_SECS} ({})",
                tasks.lease.as_secs()
            );
        }
        if let Some(timeout) = self.webhook_timeout_secs {
            tasks.webhook_timeout = Duration::from_secs(timeout.max(1));
        }
        if let Some(window) = env.over(ENV_WEBHOOK_WINDOW_SECS, self.webhook_window_secs)? {
            tasks.webhook_window = Duration::from_secs(window);
        }
        Ok(tasks)
    }
}
