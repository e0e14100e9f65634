//! The HTTP server's own settings: the config file's top-level keys about serving (the listen
//! address, the public URL, the master key and the body limit) and the `[server]` table (how
//! connections are served and how much work runs at once). Where state lives is `storage`;
//! what is served is `catalog` and `providers`.

use std::{net::SocketAddr, time::Duration};

use anyhow::Context as _;
use imgproxy_core::{gateway::GenerationLimits, ResponseFormat};

use super::{Env, ServerConfig};

/// Listen address.
pub const ENV_LISTEN: &str = "IMGPROXY_LISTEN";
/// Master key: when set, every API request must carry it as a Bearer token.
pub const ENV_MASTER_KEY: &str = "IMGPROXY_MASTER_KEY";
/// Base URL under which clients reach this server (for image URLs).
pub const ENV_PUBLIC_URL: &str = "IMGPROXY_PUBLIC_URL";
/// Largest request body in bytes.
pub const ENV_MAX_BODY_BYTES: &str = "IMGPROXY_MAX_BODY_BYTES";
/// `response_format` of requests that name none (`b64_json` or `url`).
pub const ENV_DEFAULT_RESPONSE_FORMAT: &str = "IMGPROXY_DEFAULT_RESPONSE_FORMAT";

const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
const DEFAULT_MAX_BODY_BYTES: usize = 25 * 1024 * 1024;

/// The flag's (or its environment variable's, read by `clap`) address, else the file's,
/// else loopback.
pub(super) fn listen(
    flag: Option<SocketAddr>,
    file: Option<SocketAddr>,
) -> anyhow::Result<SocketAddr> {
    match flag.or(file) {
        Some(addr) => Ok(addr),
        None => DEFAULT_LISTEN.parse().context("default listen address"),
    }
}

/// The public URL without trailing slashes, so that paths can be appended.
pub(super) fn public_url(env: &dyn Env, file: Option<String>) -> anyhow::Result<Option<String>> {
    Ok(env
        .over(ENV_PUBLIC_URL, file)?
        .map(|u| u.trim_end_matches('/').to_owned()))
}

/// The largest request body in bytes.
pub(super) fn max_body_bytes(env: &dyn Env, file: Option<usize>) -> anyhow::Result<usize> {
    Ok(env
        .over(ENV_MAX_BODY_BYTES, file)?
        .unwrap_or(DEFAULT_MAX_BODY_BYTES))
}

/// How images are answered when a request names no `response_format`: inline unless the
/// operator chose URLs (as clients of services that default to `url` expect).
pub(super) fn default_response_format(
    env: &dyn Env,
    file: Option<String>,
) -> anyhow::Result<ResponseFormat> {
    match env.over(ENV_DEFAULT_RESPONSE_FORMAT, file)?.as_deref() {
        None => Ok(ResponseFormat::B64Json),
        Some(name) => ResponseFormat::from_name(name).ok_or_else(|| {
            anyhow::anyhow!("`default_response_format` = `{name}` is not `b64_json` or `url`")
        }),
    }
}

/// Longest wait for a request's headers, from the connection's accept.
pub const ENV_HEADER_READ_TIMEOUT_SECS: &str = "IMGPROXY_HEADER_READ_TIMEOUT_SECS";
/// Longest wait for a request's whole body, from its headers.
pub const ENV_BODY_READ_TIMEOUT_SECS: &str = "IMGPROXY_BODY_READ_TIMEOUT_SECS";
/// Longest a kept-alive connection waits for (and reads the headers of) its next request.
pub const ENV_IDLE_TIMEOUT_SECS: &str = "IMGPROXY_IDLE_TIMEOUT_SECS";
/// Most client connections open at once.
pub const ENV_MAX_CONNECTIONS: &str = "IMGPROXY_MAX_CONNECTIONS";
/// Image jobs (drawing, encoding, converting) run at once.
pub const ENV_CPU_WORKERS: &str = "IMGPROXY_CPU_WORKERS";
/// Generations of one upstream provider run at once.
pub const ENV_MAX_GENERATIONS: &str = "IMGPROXY_MAX_GENERATIONS";
/// Placeholder generations run at once.
pub const ENV_PLACEHOLDER_MAX_GENERATIONS: &str = "IMGPROXY_PLACEHOLDER_MAX_GENERATIONS";
/// Generations that may wait for a slot, per provider.
pub const ENV_GENERATION_QUEUE: &str = "IMGPROXY_GENERATION_QUEUE";
/// Longest wait for a generation slot.
pub const ENV_GENERATION_QUEUE_TIMEOUT_SECS: &str = "IMGPROXY_GENERATION_QUEUE_TIMEOUT_SECS";
/// Longest a shutdown waits for requests in flight before it abandons them.
pub const ENV_SHUTDOWN_DRAIN_SECS: &str = "IMGPROXY_SHUTDOWN_DRAIN_SECS";

const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Long enough for a typical synchronous generation to finish; a longer one is abandoned (its
/// reservation is recovered by the next instance, see `Tasks::recover`).
const DEFAULT_SHUTDOWN_DRAIN: Duration = Duration::from_secs(30);

/// How connections are served and how much work runs at once, resolved from `[server]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    /// Longest wait for a request's headers, from the connection's accept.
    pub header_read_timeout: Duration,
    /// Longest wait for a request's whole body, from its headers.
    pub body_read_timeout: Duration,
    /// Longest a kept-alive connection waits for its next request.
    pub idle_timeout: Duration,
    /// Most client connections open at once.
    pub max_connections: usize,
    /// Image jobs run at once across the process.
    pub cpu_workers: usize,
    /// Bounds on concurrent generations per provider, and their queue.
    pub generations: GenerationLimits,
    /// Longest a shutdown waits for requests in flight.
    pub shutdown_drain: Duration,
}

impl ServerConfig {
    /// The server's settings: environment over file over the defaults. A zero timeout or
    /// count would refuse everything, so it is an error; a zero queue means no waiting.
    pub(super) fn settings(self, env: &dyn Env) -> anyhow::Result<ServerSettings> {
        let secs = |name: &str, file: Option<u64>, default: Duration| -> anyhow::Result<Duration> {
            match env.over(name, file)? {
                Some(0) => anyhow::bail!("{name} (or its `[server]` key) must be at least 1"),
                Some(secs) => Ok(Duration::from_secs(secs)),
                None => Ok(default),
            }
        };
        let count = |name: &str, file: Option<usize>| -> anyhow::Result<Option<usize>> {
            match env.over(name, file)? {
                Some(0) => anyhow::bail!("{name} (or its `[server]` key) must be at least 1"),
                other => Ok(other),
            }
        };
        let mut generations = GenerationLimits::default();
        let cpu_workers = count(ENV_CPU_WORKERS, self.cpu_workers)?
            .unwrap_or_else(imgproxy_core::blocking::default_workers);
        // The placeholder draws on the CPU pool: by default as many at once as it has workers.
        let placeholder = count(
            ENV_PLACEHOLDER_MAX_GENERATIONS,
            self.placeholder_max_generations,
        )?
        .unwrap_or(cpu_workers);
        generations
            .per_provider
            .insert(GenerationLimits::LOCAL_PROVIDER.to_owned(), placeholder);
        if let Some(max) = count(ENV_MAX_GENERATIONS, self.max_generations)? {
            generations.max_running = max;
        }
        if let Some(queue) = env.over(ENV_GENERATION_QUEUE, self.generation_queue)? {
            generations.max_waiting = queue;
        }
        generations.max_wait = secs(
            ENV_GENERATION_QUEUE_TIMEOUT_SECS,
            self.generation_queue_timeout_secs,
            GenerationLimits::DEFAULT_MAX_WAIT,
        )?;
        Ok(ServerSettings {
            header_read_timeout: secs(
                ENV_HEADER_READ_TIMEOUT_SECS,
                self.header_read_timeout_secs,
                DEFAULT_HEADER_READ_TIMEOUT,
            )?,
            body_read_timeout: secs(
                ENV_BODY_READ_TIMEOUT_SECS,
                self.body_read_timeout_secs,
                DEFAULT_BODY_READ_TIMEOUT,
            )?,
            idle_timeout: secs(
                ENV_IDLE_TIMEOUT_SECS,
                self.idle_timeout_secs,
                DEFAULT_IDLE_TIMEOUT,
            )?,
            max_connections: count(ENV_MAX_CONNECTIONS, self.max_connections)?
                .unwrap_or(DEFAULT_MAX_CONNECTIONS),
            cpu_workers,
            generations,
            shutdown_drain: secs(
                ENV_SHUTDOWN_DRAIN_SECS,
                self.shutdown_drain_secs,
                DEFAULT_SHUTDOWN_DRAIN,
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::config::Config;

    struct Vars(HashMap<&'static str, &'static str>);

    impl Env for Vars {
        fn var(&self, name: &str) -> Option<String> {
            self.0.get(name).map(|v| (*v).to_owned())
        }
    }

    fn settings(
        toml: &str,
        vars: &[(&'static str, &'static str)],
    ) -> anyhow::Result<ServerSettings> {
        Config::from_toml(toml)?
            .server
            .settings(&Vars(vars.iter().copied().collect()))
    }

    #[test]
    fn defaults_bound_every_connection_and_generation() {
        let server = settings("", &[]).unwrap();
        assert_eq!(server.header_read_timeout, DEFAULT_HEADER_READ_TIMEOUT);
        assert_eq!(server.body_read_timeout, DEFAULT_BODY_READ_TIMEOUT);
        assert_eq!(server.idle_timeout, DEFAULT_IDLE_TIMEOUT);
        assert_eq!(server.max_connections, DEFAULT_MAX_CONNECTIONS);
        assert_eq!(
            server.cpu_workers,
            imgproxy_core::blocking::default_workers()
        );
        let limits = &server.generations;
        assert_eq!(limits.max_running, GenerationLimits::DEFAULT_MAX_RUNNING);
        assert_eq!(
            limits.per_provider.get(GenerationLimits::LOCAL_PROVIDER),
            Some(&server.cpu_workers)
        );
        assert_eq!(limits.max_waiting, GenerationLimits::DEFAULT_MAX_WAITING);
        assert_eq!(limits.max_wait, GenerationLimits::DEFAULT_MAX_WAIT);
    }

    #[test]
    fn the_default_response_format_is_inline_unless_set_and_a_wrong_one_is_refused() {
        let format = |file: &str, vars: &[(&'static str, &'static str)]| {
            let file = Config::from_toml(file).unwrap().default_response_format;
            default_response_format(&Vars(vars.iter().copied().collect()), file)
        };
        assert_eq!(format("", &[]).unwrap(), ResponseFormat::B64Json);
        let url_file = "default_response_format = \"url\"";
        assert_eq!(format(url_file, &[]).unwrap(), ResponseFormat::Url);
        let inline_env = [(ENV_DEFAULT_RESPONSE_FORMAT, "b64_json")];
        assert_eq!(
            format(url_file, &inline_env).unwrap(),
            ResponseFormat::B64Json
        );
        let refused = format("default_response_format = \"png\"", &[]).unwrap_err();
        assert!(refused.to_string().contains("`png`"), "{refused}");
    }

    #[test]
    fn the_file_sets_them_and_the_environment_wins() {
        let file = "[server]\nheader_read_timeout_secs = 3\nmax_connections = 100\n\
                    cpu_workers = 3\ngeneration_queue = 0\nmax_generations = 5\n";
        let server = settings(
            file,
            &[(ENV_MAX_CONNECTIONS, "7"), (ENV_IDLE_TIMEOUT_SECS, "9")],
        )
        .unwrap();
        assert_eq!(server.header_read_timeout, Duration::from_secs(3));
        assert_eq!(server.idle_timeout, Duration::from_secs(9));
        assert_eq!(server.max_connections, 7);
        assert_eq!(server.cpu_workers, 3);
        // The placeholder follows the CPU pool unless told otherwise.
        assert_eq!(server.generations.per_provider["placeholder"], 3);
        assert_eq!(server.generations.max_running, 5);
        assert_eq!(server.generations.max_waiting, 0);
    }

    #[test]
    fn zero_limits_and_unknown_keys_are_refused_by_name() {
        let error = settings("[server]\nmax_connections = 0\n", &[]).unwrap_err();
        assert!(error.to_string().contains(ENV_MAX_CONNECTIONS), "{error:#}");
        let error = settings("", &[(ENV_BODY_READ_TIMEOUT_SECS, "0")]).unwrap_err();
        assert!(
            error.to_string().contains(ENV_BODY_READ_TIMEOUT_SECS),
            "{error:#}"
        );
        let error = settings("", &[(ENV_CPU_WORKERS, "many")]).unwrap_err();
        assert!(error.to_string().contains(ENV_CPU_WORKERS), "{error:#}");
        let error = settings("[server]\nmax_conections = 5\n", &[]).unwrap_err();
        assert!(format!("{error:#}").contains("max_conections"), "{error:#}");
    }
}
