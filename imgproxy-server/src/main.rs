//! The `imgproxy` binary: parse the command line, set up logging, run the command.

use std::process::ExitCode;

use clap::Parser as _;
use imgproxy_server::{
    cli::{Cli, Command, ConfigCommand, StateArgs},
    config::{ProcessEnv, Settings},
    keys, serve, sign_url, telemetry,
};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::logs::init(cli.log_format);
    let result = match cli.command {
        Command::Serve(args) => serve::run(args, &ProcessEnv).await,
        Command::Keys(command) => keys::run(command, &ProcessEnv).await,
        Command::SignUrl(args) => sign_url::run(args, &ProcessEnv).await,
        Command::Config(ConfigCommand::Check { file, state }) => check_config(file, &state),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

/// `imgproxy config check`: the settings `serve` would run with, or why it would refuse them.
#[expect(clippy::print_stdout, reason = "the report is the command's output")]
fn check_config(file: Option<std::path::PathBuf>, state: &StateArgs) -> anyhow::Result<()> {
    let mut flags = state.flags(None);
    if file.is_some() {
        flags.config = file;
    }
    let settings = Settings::load(flags, &ProcessEnv)?;
    settings.check_serve()?;
    println!("{:#}", settings.report());
    Ok(())
}
