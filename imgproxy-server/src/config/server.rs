//! The HTTP server's own settings, the config file's top-level keys about serving: the listen
//! address, the public URL, the master key and the body limit. Where state lives is
//! `storage`; what is served is `catalog` and `providers`.

use std::net::SocketAddr;

use anyhow::Context as _;

use super::Env;

/// Listen address.
pub const ENV_LISTEN: &str = "IMGPROXY_LISTEN";
/// Master key: when set, every API request must carry it as a Bearer token.
pub const ENV_MASTER_KEY: &str = "IMGPROXY_MASTER_KEY";
/// Base URL under which clients reach this server (for image URLs).
pub const ENV_PUBLIC_URL: &str = "IMGPROXY_PUBLIC_URL";
/// Largest request body in bytes.
pub const ENV_MAX_BODY_BYTES: &str = "IMGPROXY_MAX_BODY_BYTES";

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
