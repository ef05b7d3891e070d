//! Bounds on waiting: for PostgreSQL (a lock, the next rows of a COPY,
//! which `statement_timeout` does not bound on the client side) and for the
//! destination, and a way to stop on SIGTERM.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Why a bounded wait ended without a result.
#[derive(Debug, thiserror::Error)]
pub enum Stalled {
    /// Nothing happened for the whole bound.
    #[error("no progress for {seconds}s while {what} (backup.stall_timeout)")]
    TimedOut {
        /// What we were waiting for.
        what: String,
        /// The bound, in seconds.
        seconds: f64,
    },
    /// SIGTERM or Ctrl-C.
    #[error("interrupted while {what}")]
    Interrupted {
        /// What we were doing.
        what: String,
    },
}

/// Awaits `future` for at most `bound`, or until `stop` is cancelled.
pub async fn bounded<F: Future>(
    what: impl FnOnce() -> String,
    bound: Duration,
    stop: &CancellationToken,
    future: F,
) -> Result<F::Output, Stalled> {
    tokio::select! {
        biased;
        () = stop.cancelled() => Err(Stalled::Interrupted { what: what() }),
        result = tokio::time::timeout(bound, future) => result.map_err(|_| Stalled::TimedOut {
            what: what(),
            seconds: bound.as_secs_f64(),
        }),
    }
}
