//! `--perf`: samples a measured process with Linux `perf` while it works
//! (call graphs at 499 Hz), for the questions the figures raise. Writes
//! `target/bench/perf/<name>.data` (open with `perf report -i`, or turn it
//! into a flame graph) and `<name>.txt`, the hottest symbols.
//!
//! Sampling costs a little CPU, so a profiled run's figures are marked.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;

use super::{Bench, say};

/// A `perf record` attached to one process.
pub struct Profile {
    child: Child,
    data: PathBuf,
    name: String,
}

/// Starts sampling `pid` as `name` when `--perf` was given; `None`
/// otherwise or when perf cannot start (said on stdout).
pub fn attach(bench: &Bench, name: &str, pid: u32) -> Option<Profile> {
    if !bench.perf {
        return None;
    }
    let dir = bench.out.join("perf");
    if let Err(error) = std::fs::create_dir_all(&dir) {
        say(&format!("perf: cannot create {}: {error}", dir.display()));
        return None;
    }
    let data = dir.join(format!("{name}.data"));
    let started = Command::new("perf")
        .args(["record", "-F", "499", "-g", "-p", &pid.to_string(), "-o"])
        .arg(&data)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    match started {
        Ok(child) => {
            // perf needs a moment before it samples.
            std::thread::sleep(Duration::from_millis(200));
            Some(Profile {
                child,
                data,
                name: name.into(),
            })
        }
        Err(error) => {
            say(&format!("perf: cannot start perf record: {error}"));
            None
        }
    }
}

impl Profile {
    /// Stops sampling (SIGINT, unless the process already ended) and
    /// writes the report next to the data.
    pub fn finish(mut self) -> anyhow::Result<PathBuf> {
        if self.child.try_wait()?.is_none() {
            let _ = Command::new("kill")
                .args(["-s", "INT", &self.child.id().to_string()])
                .status();
        }
        self.child.wait().context("perf record failed")?;
        let text = self.data.with_extension("txt");
        let report = Command::new("perf")
            .args([
                "report",
                "--stdio",
                "--no-children",
                "-g",
                "none",
                "--percent-limit",
                "0.5",
                "--sort",
                "dso,symbol",
                "-i",
            ])
            .arg(&self.data)
            .stderr(Stdio::null())
            .output()
            .context("cannot run perf report")?;
        std::fs::write(&text, &report.stdout)
            .with_context(|| format!("cannot write {}", text.display()))?;
        say(&format!(
            "perf: {} profiled, see {}",
            self.name,
            text.display()
        ));
        Ok(text)
    }
}
