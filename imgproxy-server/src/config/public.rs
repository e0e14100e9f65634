//! Public mode (unauthenticated URL-API requests, billed to one key): the environment
//! variable over the `[public]` table (declared in `config`). That a key is named is checked
//! in `validate`; that it exists, at start by `serve`.

use super::{Env, PublicConfig};

/// Key id that public (unauthenticated) URL-API requests are billed to; enables public mode.
pub const ENV_PUBLIC_KEY_ID: &str = "IMGPROXY_PUBLIC_KEY_ID";

/// The file's `[public]` table with the environment's key id over it; the variable alone
/// turns public mode on.
pub(super) fn overlay(
    file: Option<PublicConfig>,
    env: &dyn Env,
) -> anyhow::Result<Option<PublicConfig>> {
    let mut public = file;
    if let Some(key_id) = env.over(ENV_PUBLIC_KEY_ID, None)? {
        public.get_or_insert_with(PublicConfig::default).key_id = key_id;
    }
    Ok(public)
}
