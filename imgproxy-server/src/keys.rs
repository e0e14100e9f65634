//! `imgproxy keys create|list|revoke|credit`: key management from the shell, against the same
//! database the server uses. Output is JSON on stdout.

use anyhow::Context as _;
use imgproxy_core::service::db::{Database, NewKey};
use serde_json::json;

use crate::{
    cli::{KeysCommand, StateArgs},
    config::{Env, Settings},
};

/// Runs one `keys` subcommand and prints its result.
#[expect(clippy::print_stdout, reason = "the command's output is its result")]
pub async fn run(command: KeysCommand, env: &dyn Env) -> anyhow::Result<()> {
    let output = match command {
        KeysCommand::Create { state, key } => {
            let settings = settings(&state, env)?;
            let mut new = NewKey::from(key);
            // Refused before the database is opened, against the catalog the server would
            // route with (the config's models and remaps included).
            new.check_limits()?;
            new.resolve_models(&settings.catalog()?)?;
            let db = connect_with(&settings).await?;
            let created = db.create_key(new).await?;
            json!({"key": created.key, "secret": created.secret, "note": "the secret is shown once; store it now"})
        }
        KeysCommand::List { state } => json!(connect(&state, env).await?.list_keys().await?),
        KeysCommand::Revoke { state, id } => {
            json!(connect(&state, env).await?.revoke_key(&id).await?)
        }
        KeysCommand::Credit { state, id, amount } => {
            json!(connect(&state, env).await?.credit_key(&id, amount).await?)
        }
    };
    println!("{}", serde_json::to_string_pretty(&output)?);
    Ok(())
}

async fn connect(state: &StateArgs, env: &dyn Env) -> anyhow::Result<Database> {
    connect_with(&settings(state, env)?).await
}

/// The settings the server would run with, for the same flags and environment.
pub fn settings(state: &StateArgs, env: &dyn Env) -> anyhow::Result<Settings> {
    Settings::load(state.flags(None), env)
}

/// The server's database.
pub async fn connect_with(settings: &Settings) -> anyhow::Result<Database> {
    if let Some(dir) = settings
        .database_url
        .strip_prefix("sqlite://")
        .and_then(|p| std::path::Path::new(p).parent())
    {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    Database::connect(&settings.database_url)
        .await
        .with_context(|| "opening the database".to_owned())
}
