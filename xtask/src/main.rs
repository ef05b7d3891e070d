//! Project tasks, run as `cargo xtask <task>`:
//!
//! - `test`: formatting, clippy with `-D warnings`, every test of the
//!   workspace, then the chart suite, then `bench --quick`;
//! - `chart`: the chart suite alone (`ci/test_chart.py`: the Helm chart
//!   rendered by Helm's engine, linted, validated against the Kubernetes and
//!   CRD schemas, its configuration loaded by the binaries; the Dockerfile
//!   checked by hadolint), in the pinned Python environment of
//!   `ci/python-venv.sh`;
//! - `demo`: the whole system on this machine (see `demo.rs`);
//! - `bench`: speed and memory next to PostgreSQL's own tools (see `bench/mod.rs`).
//!
//! Each step prints what it runs, so a failure in CI shows the exact command
//! to repeat locally.

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use anyhow::{Context as _, bail};

mod bench;
mod demo;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(&args[1..]),
        Some("chart") => chart(),
        Some("demo") => demo::run(&workspace_root(), cargo),
        Some("bench") => bench::run(&workspace_root(), &args[1..]),
        Some(demo::SERVE_STANDINS) => demo::serve_standins(),
        _ => {
            eprintln!(
                "usage: cargo xtask test [<cargo test args>] | cargo xtask chart | cargo xtask demo | cargo xtask bench [--quick]"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The project's test command: what `.ci/run` calls and the README shows.
fn test(extra: &[String]) -> anyhow::Result<()> {
    cargo(&["fmt", "--all", "--", "--check"])?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--all-features",
        "--",
        "-D",
        "warnings",
    ])?;
    let mut args = vec!["test", "--workspace", "--all-features"];
    args.extend(extra.iter().map(String::as_str));
    cargo(&args)?;
    chart()?;
    // Every benchmark scenario, briefly: proves the harness still works
    // (no timing is asserted).
    eprintln!("xtask: cargo xtask bench --quick");
    bench::run(&workspace_root(), &["--quick".to_owned()])
}

/// The chart suite: pytest on `ci/test_chart.py` with the pinned tools.
/// A missing tool fails (the venv script says what to install); so does a
/// run that collected no test (pytest's exit code 5).
fn chart() -> anyhow::Result<()> {
    let root = workspace_root();
    // The suite runs the binaries on every rendered configuration.
    cargo(&["build", "--workspace", "--bins", "--all-features"])?;
    eprintln!("xtask: bash ci/python-venv.sh");
    let venv = Command::new("bash")
        .arg(root.join("ci/python-venv.sh"))
        .current_dir(&root)
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("cannot run bash ci/python-venv.sh")?;
    if !venv.status.success() {
        bail!(
            "ci/python-venv.sh failed ({}): the chart suite needs Python 3 with venv and pip (Debian: apt-get install python3-venv)",
            venv.status
        );
    }
    let python = PathBuf::from(String::from_utf8(venv.stdout)?.trim()).join("bin/python");
    let args = [
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "ci/test_chart.py",
    ];
    eprintln!("xtask: {} {}", python.display(), args.join(" "));
    let status = Command::new(&python)
        .args(args)
        .current_dir(&root)
        .status()
        .with_context(|| format!("cannot run {}", python.display()))?;
    match status.code() {
        Some(0) => Ok(()),
        Some(5) => bail!("the chart suite collected no tests"),
        _ => bail!("the chart suite failed ({status})"),
    }
}

fn cargo(args: &[&str]) -> anyhow::Result<()> {
    eprintln!("xtask: cargo {}", args.join(" "));
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(args)
        .current_dir(workspace_root())
        .status()
        .with_context(|| format!("cannot run cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

fn workspace_root() -> PathBuf {
    // xtask/ sits directly below the workspace root.
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}
