//! Asynchronous tasks and their webhooks: the environment variables over the `[tasks]` table
//! (declared in `config`) and the bounds its values are held to. The task runner and its
//! defaults live in `imgproxy_core::tasks`.

use std::time::Duration;

use imgproxy_core::service::tasks::TaskSettings;

use super::{Env, TasksConfig};

/// Tasks one instance runs at once.
pub const ENV_TASK_WORKERS: &str = "IMGPROXY_TASK_WORKERS";
/// Seconds after which a running task whose instance went silent is failed.
pub const ENV_TASK_ABANDONED_SECS: &str = "IMGPROXY_TASK_ABANDONED_SECS";
/// Seconds after a task's end during which its webhook is retried.
pub const ENV_WEBHOOK_WINDOW_SECS: &str = "IMGPROXY_WEBHOOK_WINDOW_SECS";

impl TasksConfig {
    /// The task runner's settings: environment over file over the runner's defaults.
    pub(super) fn settings(self, env: &dyn Env) -> anyhow::Result<TaskSettings> {
        let mut tasks = TaskSettings::default();
        if let Some(workers) = env.over(ENV_TASK_WORKERS, self.workers)? {
            tasks.workers = workers.max(1);
        }
        if let Some(after) = env.over(ENV_TASK_ABANDONED_SECS, self.abandoned_after_secs)? {
            tasks.abandoned_after = Duration::from_secs(after).max(Duration::from_secs(2));
            // Beat well within the silence that counts as death.
            tasks.heartbeat = tasks.heartbeat.min(tasks.abandoned_after / 4);
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
