//! Command-line arguments. Only definitions live here, with the [`Flags`] they give the config and
//! the [`NewKey`] `keys create` issues; `main.rs` acts on them.

use std::{net::SocketAddr, path::PathBuf};

use clap::{Parser, Subcommand};
use imgproxy_core::{service::db::NewKey, ResponseFormat};

use crate::telemetry::logs::LogFormat;

use crate::config::{Flags, ENV_CONFIG, ENV_DATABASE_URL, ENV_DATA_DIR, ENV_LISTEN};

/// imgproxy: one OpenAI-compatible front door for every image model.
#[derive(Debug, Parser)]
#[command(name = "imgproxy", version, about)]
pub struct Cli {
    /// How log lines are written (to stderr): `text`, coloured only on a terminal, or `json`,
    /// one object per line.
    #[arg(long, global = true, value_enum, env = ENV_LOG_FORMAT, default_value = "text")]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The log format's environment variable.
pub const ENV_LOG_FORMAT: &str = "IMGPROXY_LOG_FORMAT";

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server.
    Serve(ServeArgs),
    /// Manage API keys (the same database the server uses).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Print a signed URL-API URL (no API key in it) for public HTML.
    SignUrl(SignUrlArgs),
    /// Check a configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
}

/// `imgproxy config ...`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the effective configuration (file, environment and flags layered, defaults
    /// applied; secrets shown only as set or not), or its mistakes with their file and key.
    Check {
        /// The config file [default: --config / IMGPROXY_CONFIG, else none].
        file: Option<PathBuf>,
        /// Config file, data dir and database.
        #[command(flatten)]
        state: StateArgs,
    },
}

/// Arguments of `imgproxy sign-url`.
#[derive(Debug, clap::Args)]
pub struct SignUrlArgs {
    /// Config file, data dir and database (for the URL secret and the key).
    #[command(flatten)]
    pub state: StateArgs,
    /// The key the URL acts for and bills; without it the URL is the operator's (unmetered).
    #[arg(long)]
    pub key_id: Option<String>,
    /// Seconds until the URL expires [default: the server's URL lifetime].
    #[arg(long)]
    pub expires_in: Option<u64>,
    /// Base URL of the server [default: the public URL, else http://<listen>].
    #[arg(long)]
    pub base_url: Option<String>,
    /// The URL-API query, e.g. `prompt=a+red+fox&model=placeholder&filename=fox`
    /// (a leading `/api/generate?` is accepted).
    pub query: String,
}

/// Where the configuration and state live. Each overrides the config file.
#[derive(Debug, Clone, clap::Args)]
pub struct StateArgs {
    /// TOML config file.
    #[arg(long, env = ENV_CONFIG)]
    pub config: Option<PathBuf>,
    /// Folder for the database and images [default: ./data].
    #[arg(long, env = ENV_DATA_DIR)]
    pub data_dir: Option<PathBuf>,
    /// Database: `sqlite://PATH` or `postgres://...` [default: sqlite in the data dir].
    #[arg(long, env = ENV_DATABASE_URL)]
    pub database_url: Option<String>,
}

impl StateArgs {
    /// The flags the config layers over the environment and the file, with `serve`'s
    /// `--listen` where there is one.
    pub fn flags(&self, listen: Option<SocketAddr>) -> Flags {
        Flags {
            config: self.config.clone(),
            listen,
            data_dir: self.data_dir.clone(),
            database_url: self.database_url.clone(),
        }
    }
}

/// Arguments of `imgproxy serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = ENV_LISTEN)]
    pub listen: Option<SocketAddr>,
    /// Config file, data dir and database.
    #[command(flatten)]
    pub state: StateArgs,
}

/// `imgproxy keys ...`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Issue a key; its secret is printed once and stored only as a hash.
    Create {
        /// Config file, data dir and database.
        #[command(flatten)]
        state: StateArgs,
        /// The key.
        #[command(flatten)]
        key: KeyArgs,
    },
    /// List keys (never their secrets).
    List {
        /// Config file, data dir and database.
        #[command(flatten)]
        state: StateArgs,
    },
    /// Revoke a key at once.
    Revoke {
        /// Config file, data dir and database.
        #[command(flatten)]
        state: StateArgs,
        /// Key id.
        id: String,
    },
    /// Add (or, negative, remove) credits.
    Credit {
        /// Config file, data dir and database.
        #[command(flatten)]
        state: StateArgs,
        /// Key id.
        id: String,
        /// Credits to add.
        #[arg(allow_negative_numbers = true)]
        amount: i64,
    },
}

/// The key `keys create` issues.
#[derive(Debug, clap::Args)]
pub struct KeyArgs {
    /// A name for the key.
    #[arg(long)]
    name: String,
    /// Starting balance in credits.
    #[arg(long, default_value_t = 0)]
    credits: i64,
    /// Requests per minute.
    #[arg(long)]
    rpm: Option<u32>,
    /// Images per minute.
    #[arg(long)]
    images_per_minute: Option<u32>,
    /// Requests in flight at once.
    #[arg(long)]
    max_concurrent: Option<u32>,
    /// Models the key may use, comma-separated [default: all].
    #[arg(long, value_delimiter = ',')]
    models: Option<Vec<String>>,
    /// `response_format` of the key's requests that name none, `b64_json` or `url`
    /// [default: the server's].
    #[arg(long, value_parser = response_format)]
    default_response_format: Option<ResponseFormat>,
}

/// A `--default-response-format` value.
fn response_format(name: &str) -> Result<ResponseFormat, String> {
    ResponseFormat::from_name(name).ok_or_else(|| format!("`{name}` is not `b64_json` or `url`"))
}

impl From<KeyArgs> for NewKey {
    fn from(key: KeyArgs) -> Self {
        Self {
            name: key.name,
            credits: key.credits,
            rpm: key.rpm,
            images_per_minute: key.images_per_minute,
            max_concurrent: key.max_concurrent,
            models: key.models,
            default_response_format: key.default_response_format,
        }
    }
}
