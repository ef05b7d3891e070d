//! `backup`: consistent, verified, restorable backups of the order tables to
//! a volume or S3-compatible object storage.

mod archive;
mod command;
mod destination;
mod manifest;
mod outcome;
mod progress;
mod prune;
mod restore;
mod snapshot;
mod stall;
mod verify;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use orders::config::ConfigArgs;

/// Backs up, lists, verifies, restores and prunes backups of the orders database.
#[derive(Debug, Parser)]
#[command(
    version,
    about,
    after_help = "Destinations: file:///path (a mounted volume) or s3://bucket/prefix \
(credentials from backup.s3_*_file or the standard AWS_* variables).\n\n\
Exit codes: 0 done; 1 failed (database, destination or I/O; trying again may help); \
2 bad usage or configuration; 3 a backup is damaged, truncated or incomplete; \
4 refused or not found (target database not empty without --replace, incompatible schema, no such backup)."
)]
struct Cli {
    #[command(flatten)]
    config: ConfigArgs,
    /// Where backups are kept (overrides backup.destination): file:///path or s3://bucket/prefix.
    #[arg(long, global = true, value_name = "URL")]
    destination: Option<String>,
    #[command(subcommand)]
    command: Command,
}

/// What to do.
#[derive(Debug, Clone, Subcommand)]
enum Command {
    /// Take a backup now: one consistent snapshot, then its manifest.
    Run,
    /// List the complete backups, newest first, with size, time and row counts.
    List {
        /// One JSON object per backup (its manifest and size) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Check a backup against its manifest (sizes, checksums, row counts), without a database.
    Verify {
        /// A backup name (orders-YYYYMMDDTHHMMSSZ) or `latest`.
        name: String,
    },
    /// Restore a backup into the configured database, in one transaction.
    Restore {
        /// A backup name (orders-YYYYMMDDTHHMMSSZ) or `latest`.
        name: String,
        /// Replace the rows of a database whose order tables are not empty.
        #[arg(long)]
        replace: bool,
    },
    /// Remove backups beyond backup.retention_count or older than backup.retention_age,
    /// never the newest one that verifies; clean up after interrupted backups.
    Prune {
        /// Say what would be removed, remove nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Print the effective configuration, secrets redacted.
    Config,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    command::run(&cli.config, cli.destination.as_deref(), &cli.command)
}
