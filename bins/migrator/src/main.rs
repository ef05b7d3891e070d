//! `migrator`: applies the versioned migrations of `sql/` to the orders
//! database, creates the application roles and grants their privileges.
//!
//! Exit codes: 0 done (migrations applied, or nothing to do), 1 failed,
//! 2 bad usage or configuration, 3 `status` found pending or changed migrations.

mod command;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use orders::config::ConfigArgs;

/// Applies the orders schema to PostgreSQL, safely from several pods at once.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

/// What to do; `up` when none is given.
#[derive(Debug, Clone, Copy, Subcommand)]
enum Command {
    /// Apply pending migrations, create or update roles, apply grants (default).
    Up,
    /// Show every migration and whether it is applied; exit 3 when any is pending.
    Status,
    /// Check that every applied migration still matches its file; exit 1 when not.
    Verify,
    /// Print the effective configuration, secrets redacted.
    Config,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    command::run(&cli.config, cli.command.unwrap_or(Command::Up))
}
