//! `checkout`: the Online Boutique checkout service that keeps every order.
//! See `checkout --help`.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use orders::config::{ConfigArgs, Settings};

/// Online Boutique's checkout service, storing every order in PostgreSQL.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Clone, Copy, Subcommand)]
enum Command {
    /// Serve gRPC until SIGTERM or SIGINT (default).
    Serve,
    /// Print the effective configuration, secrets redacted.
    Config,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(&cli.config) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("checkout: configuration error: {error}");
            return ExitCode::from(2);
        }
    };
    if let Some(Command::Config) = cli.command {
        print!("{}", settings.to_redacted_toml());
        return ExitCode::SUCCESS;
    }
    let result = tokio::runtime::Runtime::new()
        .context("cannot start the async runtime")
        .and_then(|runtime| runtime.block_on(serve(settings)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("checkout: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let telemetry = orders::telemetry::init(&settings.telemetry, "checkoutservice")?;
    let listener = checkout::server::bind(&settings).await?;
    let running = checkout::server::start(&settings, listener).await?;
    let stopper = running.stopper();
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stopper.send(true);
    });
    let result = running.wait().await;
    telemetry.shutdown()?;
    result
}

/// SIGTERM (Kubernetes) or SIGINT (a terminal).
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGTERM; only SIGINT stops checkout");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
