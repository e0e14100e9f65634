//! The `imgproxy` binary: parse the command line, set up logging and trace export, run the
//! command, flush the last traces.

use std::process::ExitCode;

use clap::Parser as _;
use imgproxy_server::{
    cli::{Cli, Command, ConfigCommand, StateArgs},
    config::{ProcessEnv, Settings},
    keys, serve, sign_url,
    telemetry::{self, traces::Setup},
};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // Only a server has requests to trace.
    let serving = matches!(cli.command, Command::Serve(_));
    let traces = match serving {
        true => Setup::from_env(),
        false => Ok(Setup::Off("not serving")),
    };
    telemetry::logs::init(
        cli.log_format,
        traces.as_ref().unwrap_or(&Setup::Off("misconfigured")),
    );
    let result = match traces {
        Ok(traces) => {
            if serving {
                traces.report();
            }
            let result = run(cli.command).await;
            traces.shutdown().await;
            result
        }
        Err(error) => Err(error.context("trace export (the OTEL_* variables)")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => serve::run(args, &ProcessEnv).await,
        Command::Keys(command) => keys::run(command, &ProcessEnv).await,
        Command::SignUrl(args) => sign_url::run(args, &ProcessEnv).await,
        Command::Config(ConfigCommand::Check { file, state }) => check_config(file, &state),
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
