//! `imgproxy config check`: the effective configuration, as the server would run with it,
//! printed for an operator with every secret replaced by whether it is set.

use serde_json::{json, Value};

use super::Settings;

/// What stands for a secret in the report.
fn secret<T>(value: Option<&T>) -> &'static str {
    if value.is_some() {
        "(set)"
    } else {
        "(not set)"
    }
}

/// A database URL without its password (`postgres://user:***@host/db`).
fn without_password(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            // Only fails for URLs that cannot have a password, which this one has.
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

impl Settings {
    /// The effective configuration, secrets redacted, durations in seconds.
    pub fn report(&self) -> Value {
        let secs = |d: std::time::Duration| d.as_secs_f64();
        let providers: Vec<Value> = self
            .providers
            .iter()
            .map(|p| {
                let mut provider = json!({
                    "name": p.name,
                    "base_url": p.base_url.as_deref().unwrap_or("(default)"),
                    "api_key": "(set)",
                    "api_keys": 1 + p.more_keys.len(),
                    "timeout_secs": secs(p.timeout),
                    "max_response_bytes": p.max_response_bytes,
                    "max_concurrent": p.max_concurrent,
                });
                // Azure's own settings, shown only where set.
                if p.api_version.is_some() || !p.deployments.is_empty() {
                    provider["api_version"] = json!(p.api_version);
                    provider["deployments"] = json!(p.deployments);
                }
                provider
            })
            .collect();
        let (retention, sweep_every) = &self.retention;
        let server = &self.server;
        let tasks = &self.tasks;
        json!({
            "config_file": self.config_path.as_ref().map(|p| p.display().to_string()),
            "listen": self.listen.to_string(),
            "public_url": self.public_url,
            "master_key": secret(self.master_key.as_ref()),
            "data_dir": self.data_dir.display().to_string(),
            "database_url": without_password(&self.database_url),
            "max_body_bytes": self.max_body_bytes,
            "default_model": self.default_model,
            "responses_image_model": self.responses_image_model,
            "default_response_format": self.default_response_format.name(),
            "providers": providers,
            "models_added": self.models.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
            "routing": self.routing,
            "remap": self.remap,
            "deadlines_secs": self.deadlines,
            "fetch": {
                "allow_hosts": self.fetch.allow_hosts,
                "max_bytes": self.fetch.max_bytes,
                "timeout_secs": self.fetch.timeout_secs,
            },
            "storage": match &self.s3 {
                Some(s3) => json!({"kind": "s3", "bucket": s3.bucket, "endpoint": s3.endpoint, "region": s3.region}),
                None => json!({"kind": "fs", "dir": self.data_dir.display().to_string()}),
            },
            "memory_cache_bytes": self.memory_cache_bytes,
            "retention": {
                "max_age_secs": retention.max_age.map(secs),
                "max_bytes": retention.max_bytes,
                "sweep_every_secs": secs(*sweep_every),
            },
            "idempotency_window_secs": secs(self.idempotency_window),
            "urls": {"secret": secret(self.url_secret.as_ref()), "ttl_secs": secs(self.url_ttl)},
            "cache_enabled": self.cache_enabled,
            "url_api": {
                "default_model": self.url_api_default_model,
                "path_form": self.path_form,
                "path_form_host": self.path_form_host,
            },
            "public": self.public.as_ref().map(|p| json!({
                "key_id": p.key_id, "rpm": p.rpm, "images_per_minute": p.images_per_minute,
                "max_concurrent": p.max_concurrent,
            })),
            "tasks": {
                "workers": tasks.workers,
                "instance_lease_secs": secs(tasks.lease),
                "instance_renew_secs": secs(tasks.renew),
                "webhook_timeout_secs": secs(tasks.webhook_timeout),
                "webhook_window_secs": secs(tasks.webhook_window),
            },
            "cors": {
                "allowed_origins": self.cors.allowed_origins,
                "max_age_secs": secs(self.cors.max_age),
            },
            "server": {
                "header_read_timeout_secs": secs(server.header_read_timeout),
                "body_read_timeout_secs": secs(server.body_read_timeout),
                "idle_timeout_secs": secs(server.idle_timeout),
                "max_connections": server.max_connections,
                "cpu_workers": server.cpu_workers,
                "max_generations": server.generations.max_running,
                "generations_per_provider": server.generations.per_provider,
                "generation_queue": server.generations.max_waiting,
                "generation_queue_timeout_secs": secs(server.generations.max_wait),
                "shutdown_drain_secs": secs(server.shutdown_drain),
            },
            "metrics": {
                "enabled": self.metrics.enabled,
                "listen": self.metrics.listen.map(|a| a.to_string()),
                "token": secret(self.metrics.token.as_ref()),
                "key_labels": self.metrics.key_labels,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_password_is_masked_and_other_urls_kept() {
        assert_eq!(
            without_password("postgres://app:hunter2@db.internal:5432/imgproxy"),
            "postgres://app:***@db.internal:5432/imgproxy"
        );
        assert_eq!(
            without_password("sqlite://./data/imgproxy.db"),
            "sqlite://./data/imgproxy.db"
        );
    }
}
