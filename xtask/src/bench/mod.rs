//! `cargo xtask bench [--quick] [SCENARIO...]`: how fast checkout, the store,
//! the history API and backups are on this machine, next to PostgreSQL's own
//! tools measured in the same run.
//!
//! Scenarios (all by default, in this order):
//!
//! - `place_order`: the release `checkout` as a process, stand-ins with zero
//!   latency, TLS PostgreSQL; persistence `required` against `off`;
//! - `store_write`: the library's write path against `pgbench` running the
//!   same two statements;
//! - `history_read`: `ListOrders` (first and deep pages) and `GetOrder` with
//!   1 million orders for 100 thousand users;
//! - `backup`: `backup run` / `backup restore` against `pg_dump | gzip` and
//!   `gunzip | psql` on the same data;
//! - `startup`: process start to health SERVING, and idle RSS.
//!
//! Every figure that has a target is a ratio against a reference measured in
//! the same run (the machine is shared and noisy), with absolute numbers for
//! context. Each scenario writes `target/bench/<scenario>.json` and prints a
//! table; nothing here asserts a timing. `--quick` runs every scenario with
//! tiny counts so CI proves the harness still works.

mod backup;
mod bulk;
mod checkout;
mod history_read;
mod load;
mod machine;
mod perf;
mod pg;
mod place_order;
mod procstat;
mod report;
mod startup;
mod store_write;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use orders::testkit::standins::Downstream;

use self::pg::{BenchPg, ORDERS_DB};

/// Every scenario, in the order they run.
const SCENARIOS: [&str; 5] = [
    "place_order",
    "store_write",
    "history_read",
    "backup",
    "startup",
];

const USAGE: &str =
    "usage: cargo xtask bench [--quick] [--concurrency N,N,...] [--perf] [SCENARIO]...
  --quick          every scenario with tiny counts (CI: proves the harness works)
  --concurrency    client concurrency levels of place_order and store_write (default 1,16,64)
  --perf           sample checkout, the library loop and backup with `perf record` in one
                   measured run each (target/bench/perf/); those runs are slightly slower
  --checkout-b P   place_order also measures the checkout binary P (persistence required),
                   interleaved with the others: A/B a change in the same run
  SCENARIO         place_order, store_write, history_read, backup, startup (default: all)";

/// How big and how long each scenario is: the full run or `--quick`.
#[derive(Debug, Clone)]
pub struct Plan {
    /// `--quick`: tiny counts, figures not meaningful.
    pub quick: bool,
    /// Client concurrency levels of `place_order` and `store_write`.
    pub concurrency: Vec<usize>,
    /// Repetitions of each measured configuration, interleaved A B B A so
    /// that a drift in machine load hits both sides of a ratio alike.
    pub rounds: usize,
    /// Repetitions of `backup run` and `pg_dump`, interleaved.
    pub backup_rounds: usize,
    /// How long `place_order` runs per configuration.
    pub place_order: load::Shape,
    /// How long `store_write` runs per configuration.
    pub store_write: load::Shape,
    /// Orders in the history table.
    pub history_orders: u64,
    /// Users those orders belong to.
    pub history_users: u64,
    /// Requests per `history_read` measurement.
    pub history_requests: u64,
    /// Checkout starts measured by `startup`.
    pub startup_runs: usize,
}

impl Plan {
    fn full() -> Plan {
        Plan {
            quick: false,
            concurrency: vec![1, 16, 64],
            rounds: 4,
            place_order: load::Shape::Timed {
                warmup: Duration::from_secs(2),
                measure: Duration::from_secs(6),
            },
            store_write: load::Shape::Timed {
                warmup: Duration::from_secs(1),
                measure: Duration::from_secs(5),
            },
            backup_rounds: 2,
            history_orders: 1_000_000,
            history_users: 100_000,
            history_requests: 2_000,
            startup_runs: 10,
        }
    }

    fn quick() -> Plan {
        Plan {
            quick: true,
            concurrency: vec![1, 16, 64],
            rounds: 1,
            backup_rounds: 1,
            place_order: load::Shape::Count {
                warmup: 1,
                measure: 20,
            },
            store_write: load::Shape::Count {
                warmup: 1,
                measure: 20,
            },
            history_orders: 1_000,
            history_users: 100,
            history_requests: 20,
            startup_runs: 2,
        }
    }

    /// The plan as recorded in every JSON file.
    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "quick": self.quick,
            "concurrency": self.concurrency,
            "rounds": self.rounds,
            "backup_rounds": self.backup_rounds,
            "place_order": self.place_order.to_json(),
            "store_write": self.store_write.to_json(),
            "history_orders": self.history_orders,
            "history_users": self.history_users,
            "history_requests": self.history_requests,
            "startup_runs": self.startup_runs,
        })
    }
}

/// Everything the scenarios share: where binaries and results are, the
/// PostgreSQL cluster, the stand-ins, the plan.
pub struct Bench {
    /// `target/release`.
    pub bin: PathBuf,
    /// `target/bench`.
    pub out: PathBuf,
    /// Sizes and durations.
    pub plan: Plan,
    /// The cluster with the bench databases and roles.
    pub pg: BenchPg,
    /// The six downstream services, zero latency, in this process.
    pub downstream: Downstream,
    /// Whether `target/release/backup` was built.
    pub backup_built: bool,
    /// `--perf`: profile the product's processes in one measured run each.
    pub perf: bool,
    /// `--checkout-b PATH`: another checkout build that `place_order` also
    /// measures (persistence required), interleaved with the others.
    pub checkout_b: Option<PathBuf>,
}

/// The `bench` task: `args` are what follows `cargo xtask bench`.
pub fn run(root: &Path, args: &[String]) -> anyhow::Result<()> {
    let mut plan = Plan::full();
    let mut selected: Vec<&'static str> = Vec::new();
    let mut concurrency = None;
    let mut perf = false;
    let mut checkout_b = None;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => plan = Plan::quick(),
            "--perf" => perf = true,
            "--checkout-b" => {
                let path = args.next().context("--checkout-b needs a path")?;
                let path = std::fs::canonicalize(path)
                    .with_context(|| format!("--checkout-b {path}: no such file"))?;
                checkout_b = Some(path);
            }
            "--concurrency" => {
                let list = args
                    .next()
                    .context("--concurrency needs a list, e.g. 1,16")?;
                let levels = list
                    .split(',')
                    .map(|n| n.trim().parse::<usize>())
                    .collect::<Result<Vec<_>, _>>()
                    .with_context(|| format!("--concurrency {list}: not a list of numbers"))?;
                concurrency = Some(levels);
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            name => match SCENARIOS.iter().find(|s| **s == name) {
                Some(scenario) => selected.push(scenario),
                None => bail!("unknown bench argument {name:?}\n{USAGE}"),
            },
        }
    }
    if selected.is_empty() {
        selected = SCENARIOS.to_vec();
    }
    if let Some(concurrency) = concurrency {
        plan.concurrency = concurrency;
    }
    let started = Instant::now();

    step("Building release binaries (checkout, migrator)");
    cargo_build(root, &["checkout", "migrator"])?;
    let backup_built = if selected.contains(&"backup") {
        step("Building the release backup binary");
        build_backup(root)?
    } else {
        false
    };

    let out = root.join("target").join("bench");
    std::fs::create_dir_all(out.join("logs"))
        .with_context(|| format!("cannot create {}", out.display()))?;
    let machine = machine::facts(root);
    say(&format!(
        "{} cores, load average {}, git {}",
        machine["cores"], machine["load_average"], machine["git_commit"]
    ));
    if let Some(load) = machine::load_average().first()
        && *load > 0.5
    {
        say(&format!(
            "note: the machine is busy (1-minute load average {load:.2}); absolute figures will be noisy, ratios less so"
        ));
    }

    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let reports = runtime.block_on(async {
        step("Starting PostgreSQL (TLS only, fsync on, pg_stat_statements) and the stand-ins");
        let pg = BenchPg::start(&root.join("target").join("release")).await?;
        let server = pg.describe().await;
        let downstream = Downstream::start()
            .await
            .context("cannot start the stand-ins")?;
        let bench = Bench {
            bin: root.join("target").join("release"),
            out: out.clone(),
            plan,
            pg,
            downstream,
            backup_built,
            perf,
            checkout_b,
        };
        bench.pg.create_database(ORDERS_DB).await?;
        let mut history = None;
        let mut reports = Vec::new();
        for scenario in &selected {
            step(&format!("Scenario {scenario}"));
            let needs_history = match *scenario {
                "history_read" => true,
                "backup" => bench.backup_built,
                _ => false,
            };
            if needs_history && history.is_none() {
                history = Some(bulk::prepare_history(&bench).await?);
            }
            let load_before = machine::load_average();
            let scenario_started = Instant::now();
            let mut report = match (*scenario, &history) {
                ("place_order", _) => place_order::run(&bench).await?,
                ("store_write", _) => store_write::run(&bench).await?,
                ("history_read", Some(history)) => history_read::run(&bench, history).await?,
                ("backup", None) => backup::skipped(),
                ("backup", Some(history)) => backup::run(&bench, history).await?,
                ("startup", _) => startup::run(&bench).await?,
                (other, _) => bail!("no such scenario {other}"),
            };
            report.finish(
                &machine,
                &bench.plan,
                &server,
                load_before,
                scenario_started.elapsed(),
                bench.perf,
            );
            let path = report.write(&bench.out)?;
            report.print();
            say(&format!("written to {}", path.display()));
            reports.push(report);
        }
        bench.downstream.shutdown().await;
        Ok::<_, anyhow::Error>(reports)
    })?;

    step("Targets");
    report::print_targets(&reports);
    say(&format!(
        "bench finished in {:.0} s",
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// `cargo build --release -p ...`, output shown.
fn cargo_build(root: &Path, packages: &[&str]) -> anyhow::Result<()> {
    let mut args = vec!["build", "--release"];
    for package in packages {
        args.extend(["--package", package]);
    }
    say(&format!("cargo {}", args.join(" ")));
    let status = Command::new(cargo_program())
        .args(&args)
        .current_dir(root)
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Builds `backup`; `Ok(false)` only when the workspace has no such package.
fn build_backup(root: &Path) -> anyhow::Result<bool> {
    let args = ["build", "--release", "--package", "backup"];
    say(&format!("cargo {}", args.join(" ")));
    let output = Command::new(cargo_program())
        .args(args)
        .current_dir(root)
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        .output()
        .context("cannot run cargo")?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.success() {
        return Ok(true);
    }
    if stderr.contains("did not match any packages") {
        return Ok(false);
    }
    eprint!("{stderr}");
    bail!("cargo {} failed ({})", args.join(" "), output.status)
}

fn cargo_program() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// A heading on stdout.
pub fn step(text: &str) {
    println!("\n==> {text}");
}

/// A line of progress on stdout.
pub fn say(text: &str) {
    println!("    {text}");
}
