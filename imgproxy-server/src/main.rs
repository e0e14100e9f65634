//! The `imgproxy` binary: parse the command line, set up logging, run the command.

use std::process::ExitCode;

use clap::Parser as _;
use imgproxy_server::{
    cli::{Cli, Command},
    config::ProcessEnv,
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
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}
