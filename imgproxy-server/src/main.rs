//! The `imgproxy` binary: parse the command line, set up logging and trace export, run the
//! command, flush the last traces.

use std::process::ExitCode;

use clap::Parser as _;
use imgproxy_server::{
    cli::{Cli, Command},
    config::ProcessEnv,
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
    }
}
