//! Semantic checks: the rules a well-typed, fully layered configuration can still break, in
//! one place. Parsing and defaults live with each section; checks against the database (does
//! the public key exist?) happen in `serve`.

use super::{Settings, ENV_MASTER_KEY};

impl Settings {
    /// The rules every command's settings keep.
    pub(super) fn check(&self) -> anyhow::Result<()> {
        if self
            .public
            .as_ref()
            .is_some_and(|p| p.key_id.trim().is_empty())
        {
            anyhow::bail!("[public] needs the `key_id` of the key that pays for public requests");
        }
        Ok(())
    }

    /// What `imgproxy serve` also needs: an API without a master key is open, so it listens
    /// on loopback only.
    pub fn check_serve(&self) -> anyhow::Result<()> {
        if self.master_key.is_none() && !self.listen.ip().is_loopback() {
            anyhow::bail!(
                "refusing to listen on {} without {ENV_MASTER_KEY}: set a master key, or listen on 127.0.0.1",
                self.listen
            );
        }
        Ok(())
    }
}
