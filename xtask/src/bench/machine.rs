//! Facts about the machine and the code measured, recorded in every result
//! file so figures from different runs can be told apart.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

/// Cores, CPU model, memory, kernel, load, date, git commit, toolchain.
pub fn facts(root: &Path) -> Value {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        });
    let memory_mb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| meminfo_kib(&text, "MemTotal:"))
        .map(|kib| kib / 1024);
    let dirty = output(root, "git", &["status", "--porcelain"]).map(|s| !s.trim().is_empty());
    json!({
        "cores": cores,
        "cpu_model": cpu_model,
        "memory_mb": memory_mb,
        "kernel": output(root, "uname", &["-sr"]),
        "date": now_rfc3339(),
        "load_average": load_average(),
        "git_commit": output(root, "git", &["rev-parse", "HEAD"]),
        "git_dirty": dirty,
        "rustc": output(root, "rustc", &["--version"]),
    })
}

/// The 1, 5 and 15-minute load averages (empty when unknown).
pub fn load_average() -> Vec<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .filter_map(|v| v.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Now, as RFC 3339 in UTC.
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn meminfo_kib(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// A command's trimmed stdout, `None` when it cannot run or fails.
fn output(dir: &Path, program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
