//! Memory and CPU of a process, from `/proc/<pid>/status` (VmRSS, VmHWM)
//! and `/proc/<pid>/stat` (utime + stime).

use std::io::Read as _;
use std::process::{Child, Command, ExitStatus};
use std::sync::OnceLock;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

/// One reading of a process.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// Resident set size now, KiB.
    pub rss_kib: u64,
    /// Peak resident set size so far (VmHWM), KiB.
    pub peak_rss_kib: u64,
    /// User + system CPU time so far, seconds.
    pub cpu_s: f64,
}

impl Usage {
    /// Peak RSS in MiB.
    pub fn peak_mib(&self) -> f64 {
        self.peak_rss_kib as f64 / 1024.0
    }

    /// RSS in MiB.
    pub fn rss_mib(&self) -> f64 {
        self.rss_kib as f64 / 1024.0
    }
}

/// Reads `pid` now. Fails when the process is gone; a zombie (exited, not
/// yet reaped) still has its CPU times but no memory.
pub fn read(pid: u32) -> anyhow::Result<Usage> {
    let (state, cpu_s) = read_stat(pid)?;
    let mut usage = Usage {
        cpu_s,
        ..Usage::default()
    };
    if state != 'Z' {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("cannot read /proc/{pid}/status"))?;
        usage.rss_kib = status_kib(&status, "VmRSS:").unwrap_or(0);
        usage.peak_rss_kib = status_kib(&status, "VmHWM:").unwrap_or(0);
    }
    Ok(usage)
}

/// The state letter and utime + stime (seconds) of `pid`.
fn read_stat(pid: u32) -> anyhow::Result<(char, f64)> {
    let stat = Stat::read(pid)?;
    Ok((stat.state, stat.cpu_s))
}

/// The fields of `/proc/<pid>/stat` the bench uses.
#[derive(Debug, Clone, Copy)]
pub struct Stat {
    /// R, S, D, Z, ...
    pub state: char,
    /// Parent process id.
    pub ppid: u32,
    /// utime + stime, seconds.
    pub cpu_s: f64,
    /// cutime + cstime: CPU of the children it has reaped, seconds.
    pub children_cpu_s: f64,
}

impl Stat {
    /// Reads `/proc/<pid>/stat`.
    pub fn read(pid: u32) -> anyhow::Result<Stat> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
        // The command name (field 2) may hold spaces and parentheses: the
        // fields we want follow its last ')'.
        let rest = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest)
            .context("unexpected /proc/<pid>/stat format")?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let state = fields
            .first()
            .and_then(|s| s.chars().next())
            .context("no state in /proc/<pid>/stat")?;
        // Fields 4 and 14 to 17 of proc(5), counted from the state (field 3).
        let number = |i: usize| -> anyhow::Result<u64> {
            Ok(fields
                .get(i)
                .context("short /proc/<pid>/stat")?
                .parse::<u64>()?)
        };
        let ticks = clock_ticks();
        Ok(Stat {
            state,
            ppid: u32::try_from(number(1)?)?,
            cpu_s: (number(11)? + number(12)?) as f64 / ticks,
            children_cpu_s: (number(13)? + number(14)?) as f64 / ticks,
        })
    }
}

/// CPU seconds of this process so far (the bench's client and stand-ins).
pub fn own_cpu_s() -> f64 {
    Stat::read(std::process::id()).map_or(0.0, |s| s.cpu_s)
}

/// Every process whose parent is `parent`.
pub fn children(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| Stat::read(*pid).is_ok_and(|s| s.ppid == parent))
        .collect()
}

fn status_kib(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Clock ticks per second (`getconf CLK_TCK`, 100 on Linux when unknown).
fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// Watches a child process until it exits: its peak RSS (sampled every
/// 10 ms, as /proc forgets it once the process is gone) and exact CPU time
/// (read from the zombie before it is reaped).
pub struct Watched {
    child: Child,
    sampler: JoinHandle<Usage>,
    started: Instant,
    name: String,
}

/// What a watched process used.
#[derive(Debug, Clone)]
pub struct Finished {
    /// The program, for messages.
    pub name: String,
    /// How it ended.
    pub status: ExitStatus,
    /// Wall time from spawn to exit.
    pub elapsed: Duration,
    /// Peak RSS and CPU time.
    pub usage: Usage,
}

/// What a watched process used and wrote.
#[derive(Debug, Clone)]
pub struct FinishedOutput {
    /// What it used.
    pub finished: Finished,
    /// Its standard output.
    pub stdout: Vec<u8>,
    /// Its standard error.
    pub stderr: Vec<u8>,
}

impl Finished {
    /// `{seconds, peak_rss_mib, cpu_s}`.
    pub fn to_json(&self) -> Value {
        json!({
            "seconds": round3(self.elapsed.as_secs_f64()),
            "peak_rss_mib": round3(self.usage.peak_mib()),
            "cpu_s": round3(self.usage.cpu_s),
        })
    }
}

impl Watched {
    /// Starts watching `child` (just spawned).
    pub fn new(name: &str, child: Child) -> Watched {
        let pid = child.id();
        let sampler = {
            std::thread::spawn(move || {
                let mut last = Usage::default();
                loop {
                    match read(pid) {
                        Ok(now) => {
                            last.cpu_s = now.cpu_s;
                            last.peak_rss_kib = last.peak_rss_kib.max(now.peak_rss_kib);
                            last.rss_kib = now.rss_kib.max(last.rss_kib);
                            if matches!(read_stat(pid), Ok(('Z', _))) {
                                break;
                            }
                        }
                        Err(_) => break,
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                last
            })
        };
        Watched {
            child,
            sampler,
            started: Instant::now(),
            name: name.to_owned(),
        }
    }

    /// Waits for the process to exit and returns what it used.
    pub fn wait(mut self) -> anyhow::Result<Finished> {
        // Let the sampler see the zombie (exact CPU) before reaping it.
        let usage = self
            .sampler
            .join()
            .map_err(|_| anyhow::anyhow!("the sampler of {} panicked", self.name))?;
        let elapsed = self.started.elapsed();
        let status = self
            .child
            .wait()
            .with_context(|| format!("cannot wait for {}", self.name))?;
        Ok(Finished {
            name: self.name,
            status,
            elapsed,
            usage,
        })
    }

    /// Like [`Watched::wait`], also collecting what the process wrote to
    /// its piped stdout and stderr.
    pub fn wait_with_output(mut self) -> anyhow::Result<FinishedOutput> {
        let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                if let Some(mut pipe) = pipe {
                    let _ = pipe.read_to_end(&mut bytes);
                }
                bytes
            })
        };
        let stdout = drain(
            self.child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        );
        let stderr = drain(
            self.child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        );
        let finished = self.wait()?;
        Ok(FinishedOutput {
            finished,
            stdout: stdout.join().unwrap_or_default(),
            stderr: stderr.join().unwrap_or_default(),
        })
    }

    /// Like [`Watched::wait`], but fails unless the process exited 0.
    pub fn wait_success(self) -> anyhow::Result<Finished> {
        let finished = self.wait()?;
        if !finished.status.success() {
            bail!("{} failed ({})", finished.name, finished.status);
        }
        Ok(finished)
    }
}

/// `x` rounded to 3 decimals, for JSON.
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
