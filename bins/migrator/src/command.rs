//! The subcommands, and the one place that maps outcomes to exit codes.

use std::process::ExitCode;

use anyhow::Context as _;
use orders::config::{ConfigArgs, Settings};
use orders::db::Database;
use orders::schema::{Migrator, State};

use crate::Command;

/// Exit code when `status` finds work to do.
const EXIT_PENDING: u8 = 3;
/// Exit code for bad configuration (clap uses 2 for bad usage too).
const EXIT_CONFIG: u8 = 2;

/// Loads configuration, runs `command`, and turns the outcome into an exit
/// code with at most one readable error line on stderr.
pub fn run(args: &ConfigArgs, command: Command) -> ExitCode {
    let settings = match Settings::load(args) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("migrator: configuration error: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Command::Config = command {
        print!("{}", settings.to_redacted_toml());
        return ExitCode::SUCCESS;
    }
    let telemetry = match orders::telemetry::init(&settings.telemetry, "migrator") {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("migrator: configuration error: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let outcome = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .and_then(|runtime| runtime.block_on(execute(&settings, command)));
    let code = match outcome {
        Ok(code) => code,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("migrator: {error:#}");
            ExitCode::FAILURE
        }
    };
    if let Err(error) = telemetry.shutdown() {
        eprintln!("migrator: {error}");
    }
    code
}

async fn execute(settings: &Settings, command: Command) -> anyhow::Result<ExitCode> {
    let database = Database::new(&settings.database, "migrator")?;
    tracing::info!(target_db = %database.target(), "connecting to PostgreSQL");
    let mut client = database.connect_with_retry().await?;
    let migrator = Migrator::new(settings.migrator.lock_timeout);
    match command {
        Command::Up => {
            let report = migrator.up(&mut client, &settings.roles).await?;
            if report.applied.is_empty() {
                tracing::info!(
                    version = report.version,
                    "schema is up to date, nothing to do"
                );
            } else {
                tracing::info!(
                    version = report.version,
                    applied = %report.applied.join(", "),
                    "applied {} migration(s)",
                    report.applied.len()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Status => {
            let status = migrator.status(&client).await?;
            for (version, file, state) in &status.migrations {
                let state = match state {
                    State::Applied => "applied",
                    State::Pending => "pending",
                    State::Changed => "CHANGED since applied",
                    State::Unknown => "applied, unknown to this migrator (newer schema)",
                };
                println!("{version:04}  {file:<40} {state}");
            }
            Ok(if status.is_current() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_PENDING)
            })
        }
        Command::Verify => {
            let status = migrator.verify(&client).await?;
            let pending = status
                .migrations
                .iter()
                .filter(|(_, _, state)| *state == State::Pending)
                .count();
            if pending > 0 {
                anyhow::bail!("{pending} migration(s) not applied yet; run `migrator up`");
            }
            println!(
                "all {} migrations applied and unchanged",
                status.migrations.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Config => Ok(ExitCode::SUCCESS),
    }
}
