//! Command-line arguments. Only definitions live here; `main.rs` acts on them.

use std::{net::SocketAddr, path::PathBuf};

use clap::{Parser, Subcommand};

/// imgproxy: one OpenAI-compatible front door for every image model.
#[derive(Debug, Parser)]
#[command(name = "imgproxy", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server.
    Serve(ServeArgs),
}

/// Arguments of `imgproxy serve`. Each overrides the config file.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = crate::config::ENV_LISTEN)]
    pub listen: Option<SocketAddr>,
    /// TOML config file.
    #[arg(long, env = crate::config::ENV_CONFIG)]
    pub config: Option<PathBuf>,
    /// Folder for the database and images [default: ./data].
    #[arg(long, env = crate::config::ENV_DATA_DIR)]
    pub data_dir: Option<PathBuf>,
}
