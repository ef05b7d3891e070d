//! Progress of a long copy: a line rewritten in place on a terminal, a
//! JSON log line now and then otherwise (a Kubernetes Job's log).

use std::io::{IsTerminal as _, Write as _};
use std::time::{Duration, Instant};

/// How often the terminal line is redrawn.
const TERMINAL_EVERY: Duration = Duration::from_millis(200);
/// How often a progress log line is written when not on a terminal.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Rows and bytes of one operation (`backup`, `restore`, `verify`).
pub struct Progress {
    verb: &'static str,
    terminal: bool,
    table: String,
    rows: u64,
    table_rows: u64,
    bytes: u64,
    last: Instant,
    drawn: bool,
}

impl Progress {
    /// Progress of `verb`, on the terminal when standard error is one.
    pub fn new(verb: &'static str) -> Self {
        Self {
            verb,
            terminal: std::io::stderr().is_terminal(),
            table: String::new(),
            rows: 0,
            table_rows: 0,
            bytes: 0,
            last: Instant::now(),
            drawn: false,
        }
    }

    /// The table now being copied.
    pub fn table(&mut self, name: &str) {
        self.table = name.to_owned();
        self.table_rows = 0;
        self.tick(true);
    }

    /// `rows` more rows; `bytes` is the running total of the artifact's
    /// compressed bytes.
    pub fn advance(&mut self, rows: u64, bytes: u64) {
        self.rows += rows;
        self.table_rows += rows;
        self.bytes = bytes;
        self.tick(false);
    }

    fn tick(&mut self, force: bool) {
        let every = if self.terminal {
            TERMINAL_EVERY
        } else {
            LOG_EVERY
        };
        if !force && self.last.elapsed() < every {
            return;
        }
        self.last = Instant::now();
        if self.terminal {
            let mut stderr = std::io::stderr().lock();
            // A progress line that cannot be drawn is not worth failing for.
            let _ = write!(
                stderr,
                "\r\x1b[2K{} {}: {} rows ({} in all), {}",
                self.verb,
                self.table,
                self.table_rows,
                self.rows,
                human_bytes(self.bytes)
            );
            let _ = stderr.flush();
            self.drawn = true;
        } else if !force {
            tracing::info!(
                table = %self.table,
                table_rows = self.table_rows,
                rows = self.rows,
                bytes = self.bytes,
                "{} in progress", self.verb
            );
        }
    }

    /// Erases the terminal line, so that a log or error line does not
    /// land in the middle of it; the next update draws it again.
    pub fn clear(&mut self) {
        if self.drawn {
            let mut stderr = std::io::stderr().lock();
            let _ = write!(stderr, "\r\x1b[2K");
            let _ = stderr.flush();
            self.drawn = false;
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        // An error message must start on a line of its own.
        self.clear();
    }
}

/// `1536` as `1.5 KiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_naturally() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 * 1024 * 1024 * 1024), "5.0 GiB");
    }
}
