//! Project tasks, run as `cargo xtask <task>`:
//!
//! - `test`: formatting, clippy with `-D warnings`, every test of the workspace;
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
        Some("demo") => demo::run(&workspace_root(), cargo),
        Some("bench") => bench::run(&workspace_root(), &args[1..]),
        Some(demo::SERVE_STANDINS) => demo::serve_standins(),
        _ => {
            eprintln!(
                "usage: cargo xtask test [<cargo test args>] | cargo xtask demo | cargo xtask bench [--quick]"
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
    cargo(&args)
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
