//! Outcomes that are not plain failures, and the exit code of each.

use std::process::ExitCode;

/// Exit codes, as `--help` and the README document them.
pub mod code {
    /// Done.
    pub const OK: u8 = 0;
    /// Failed: database, destination or I/O trouble; trying again may help.
    pub const FAILED: u8 = 1;
    /// Bad command line or configuration.
    pub const USAGE: u8 = 2;
    /// A backup does not match its manifest, or has none.
    pub const DAMAGED: u8 = 3;
    /// Nothing was done on purpose: the target database is not empty (no
    /// `--replace`) or has an incompatible schema, or there is no such backup.
    pub const REFUSED: u8 = 4;
}

/// A failure whose kind decides the exit code. Its message is complete:
/// it names the backup, the table or the setting concerned.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// Bad configuration or command line (exit 2).
    #[error("{0}")]
    Usage(String),
    /// A damaged, truncated or incomplete backup (exit 3).
    #[error("{0}")]
    Damaged(String),
    /// Refused to act, or nothing to act on (exit 4).
    #[error("{0}")]
    Refused(String),
}

/// The exit code for an error: the first [`Failure`] in its chain decides.
pub fn exit_code(error: &anyhow::Error) -> ExitCode {
    let failure = error.chain().find_map(|e| e.downcast_ref::<Failure>());
    ExitCode::from(match failure {
        Some(Failure::Usage(_)) => code::USAGE,
        Some(Failure::Damaged(_)) => code::DAMAGED,
        Some(Failure::Refused(_)) => code::REFUSED,
        None => code::FAILED,
    })
}
