//! `backup`: `backup run` against `pg_dump --data-only` of the same tables
//! through the same compressor (gzip, level 6 like backup's default), and
//! `backup restore` against `psql` restoring the same artifact, on the bulk
//! history. Seconds, MB/s (of table data, the same input for both) and peak
//! RSS of each process.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use super::bulk::History;
use super::pg::{HISTORY_DB, Role};
use super::procstat::{Finished, Watched, round3};
use super::report::{Report, Table, Target, fmt};
use super::{Bench, perf, say};

/// What the scenario prints when the binary does not exist.
pub const NOT_BUILT: &str = "backup binary not built: scenario skipped";

/// One timed operation: one process or a pipeline of two.
struct Timed {
    tool: &'static str,
    operation: &'static str,
    round: usize,
    seconds: f64,
    processes: Vec<Finished>,
    output_bytes: Option<u64>,
}

impl Timed {
    fn peak_mib(&self) -> f64 {
        // A pipeline's processes run at the same time.
        self.processes.iter().map(|p| p.usage.peak_mib()).sum()
    }

    fn cpu_s(&self) -> f64 {
        self.processes.iter().map(|p| p.usage.cpu_s).sum()
    }
}

/// The report when `target/release/backup` cannot be built because the
/// workspace has no `backup` package.
pub fn skipped() -> Report {
    println!("{NOT_BUILT}");
    Report::skipped("backup", NOT_BUILT)
}

/// Runs the scenario.
pub async fn run(bench: &Bench, history: &History) -> anyhow::Result<Report> {
    if !bench.backup_built {
        return Ok(skipped());
    }
    let work = tempfile::Builder::new()
        .prefix("orders-bench-backup-")
        .tempdir()
        .context("cannot create a work directory")?;
    let mut timed = Vec::new();
    let mut artifact = None;
    for round in 0..bench.plan.backup_rounds.max(1) {
        let mut order = ["backup", "pg_dump"];
        if round % 2 == 1 {
            order.reverse();
        }
        for tool in order {
            let run = if tool == "backup" {
                let (run, path) =
                    tokio::task::block_in_place(|| backup_run(bench, work.path(), round))?;
                artifact.get_or_insert(path);
                run
            } else {
                tokio::task::block_in_place(|| pg_dump(bench, work.path(), round))?
            };
            say(&format!(
                "{:<8} {:<7} {:>7.2} s  peak RSS {:>6.1} MiB",
                run.tool,
                run.operation,
                run.seconds,
                run.peak_mib()
            ));
            timed.push(run);
        }
    }
    let artifact = artifact.context("no backup was taken")?;

    // Restores of the same artifact into empty databases.
    for (tool, db) in [
        ("backup", "bench_restore_backup"),
        ("psql", "bench_restore_psql"),
    ] {
        bench.pg.create_empty_database(db).await?;
        let run = tokio::task::block_in_place(|| {
            if tool == "backup" {
                backup_restore(bench, &artifact, db)
            } else {
                psql_restore(bench, &artifact, db)
            }
        })?;
        let client = bench.pg.connect(db, Role::Owner).await?;
        let restored: i64 = client
            .query_one("SELECT count(*) FROM orders", &[])
            .await?
            .get(0);
        drop(client);
        if restored != history.rows[0] {
            bail!("{tool} restored {restored} orders of {}", history.rows[0]);
        }
        say(&format!(
            "{:<8} {:<7} {:>7.2} s  peak RSS {:>6.1} MiB",
            run.tool,
            run.operation,
            run.seconds,
            run.peak_mib()
        ));
        timed.push(run);
        bench.pg.wait_idle(db).await?;
        bench.pg.drop_database(db).await?;
    }
    Ok(report(history, &timed))
}

/// `backup run` as the backup role into `<work>/backup-<round>`.
fn backup_run(bench: &Bench, work: &Path, round: usize) -> anyhow::Result<(Timed, PathBuf)> {
    let destination = work.join(format!("backup-{round}"));
    let config = bench.pg.config_file(
        HISTORY_DB,
        Role::Backup,
        &format!(
            "\n[backup]\ndestination = \"file://{}\"\n",
            destination.display()
        ),
    )?;
    let log = log_file(bench, &format!("backup-run-{round}"))?;
    let started = Instant::now();
    let child = Command::new(bench.bin.join("backup"))
        .arg("--config")
        .arg(&config)
        .arg("run")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("cannot start backup")?;
    let profile = if round == 0 {
        perf::attach(bench, "backup-run", child.id())
    } else {
        None
    };
    let finished = Watched::new("backup run", child).wait_success()?;
    if let Some(profile) = profile {
        profile.finish()?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let artifact = std::fs::read_dir(&destination)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(".sql.gz"))
        .with_context(|| format!("no artifact in {}", destination.display()))?;
    let bytes = std::fs::metadata(&artifact)?.len();
    Ok((
        Timed {
            tool: "backup",
            operation: "run",
            round,
            seconds,
            processes: vec![finished],
            output_bytes: Some(bytes),
        },
        artifact,
    ))
}

/// `pg_dump --data-only -t orders -t order_items -t order_events | gzip -6`
/// as the backup role.
fn pg_dump(bench: &Bench, work: &Path, round: usize) -> anyhow::Result<Timed> {
    let (conninfo, password) = bench.pg.libpq(HISTORY_DB, Role::Backup)?;
    let output = work.join(format!("pg_dump-{round}.sql.gz"));
    let started = Instant::now();
    let mut dump = Command::new(bench.pg.tool("pg_dump"))
        .args([
            "--data-only",
            "-t",
            "orders",
            "-t",
            "order_items",
            "-t",
            "order_events",
            "-d",
        ])
        .arg(&conninfo)
        .env("PGPASSWORD", password)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file(bench, &format!("pg_dump-{round}"))?)
        .spawn()
        .context("cannot start pg_dump")?;
    let pipe = dump.stdout.take().context("pg_dump has no stdout")?;
    let gzip = Command::new("gzip")
        .arg("-6")
        .stdin(pipe)
        .stdout(File::create(&output)?)
        .spawn()
        .context("cannot start gzip")?;
    let (dump, gzip) = (Watched::new("pg_dump", dump), Watched::new("gzip", gzip));
    let dump = dump.wait_success()?;
    let gzip = gzip.wait_success()?;
    Ok(Timed {
        tool: "pg_dump",
        operation: "run",
        round,
        seconds: started.elapsed().as_secs_f64(),
        processes: vec![dump, gzip],
        output_bytes: Some(std::fs::metadata(&output)?.len()),
    })
}

/// `backup restore NAME` as the owner into the empty `db`.
fn backup_restore(bench: &Bench, artifact: &Path, db: &str) -> anyhow::Result<Timed> {
    let destination = artifact.parent().context("artifact without a directory")?;
    let name = artifact
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".sql.gz"))
        .context("unexpected artifact name")?;
    let config = bench.pg.config_file(
        db,
        Role::Owner,
        &format!(
            "\n[backup]\ndestination = \"file://{}\"\n",
            destination.display()
        ),
    )?;
    let log = log_file(bench, "backup-restore")?;
    let started = Instant::now();
    let child = Command::new(bench.bin.join("backup"))
        .arg("--config")
        .arg(&config)
        .args(["restore", name])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("cannot start backup restore")?;
    let finished = Watched::new("backup restore", child).wait_success()?;
    Ok(Timed {
        tool: "backup",
        operation: "restore",
        round: 0,
        seconds: started.elapsed().as_secs_f64(),
        processes: vec![finished],
        output_bytes: None,
    })
}

/// `gzip -dc ARTIFACT | psql -v ON_ERROR_STOP=1` as the owner into the empty `db`.
fn psql_restore(bench: &Bench, artifact: &Path, db: &str) -> anyhow::Result<Timed> {
    let (conninfo, password) = bench.pg.libpq(db, Role::Owner)?;
    let started = Instant::now();
    let mut gunzip = Command::new("gzip")
        .arg("-dc")
        .arg(artifact)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start gzip -d")?;
    let pipe = gunzip.stdout.take().context("gzip has no stdout")?;
    let log = log_file(bench, "psql-restore")?;
    let psql = Command::new(bench.pg.tool("psql"))
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d"])
        .arg(&conninfo)
        .env("PGPASSWORD", password)
        .stdin(pipe)
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("cannot start psql")?;
    let (gunzip, psql) = (Watched::new("gzip -d", gunzip), Watched::new("psql", psql));
    let gunzip = gunzip.wait_success()?;
    let psql = psql.wait_success()?;
    Ok(Timed {
        tool: "psql",
        operation: "restore",
        round: 0,
        seconds: started.elapsed().as_secs_f64(),
        processes: vec![gunzip, psql],
        output_bytes: None,
    })
}

fn log_file(bench: &Bench, name: &str) -> anyhow::Result<File> {
    let path = bench.out.join("logs").join(format!("{name}.log"));
    File::create(&path).with_context(|| format!("cannot create {}", path.display()))
}

fn report(history: &History, timed: &[Timed]) -> Report {
    let mb = history.table_bytes as f64 / 1e6;
    let mut report = Report::new("backup");
    report.config = json!({
        "history": history.to_json(),
        "backup_run": "target/release/backup --config (backup role, file:// destination) run; gzip level 6 (default)",
        "pg_dump": "pg_dump --data-only -t orders -t order_items -t order_events (backup role, TLS) | gzip -6 > file",
        "backup_restore": "target/release/backup --config (owner) restore NAME into an empty database",
        "psql_restore": "gzip -dc ARTIFACT | psql -X -q -v ON_ERROR_STOP=1 (owner) into an empty database",
        "mb_per_s": "table data (heap + TOAST of the three tables, 1 MB = 10^6 bytes) per second, the same input for every tool",
        "peak_rss": "VmHWM sampled every 10 ms; a pipeline's is the sum of its processes'",
    });
    let mut table = Table::new(&[
        "tool",
        "operation",
        "round",
        "seconds",
        "MB/s",
        "peak RSS MiB",
        "CPU s",
        "output MB",
    ]);
    let mut rows = Vec::new();
    for t in timed {
        table.row(vec![
            t.tool.into(),
            t.operation.into(),
            t.round.to_string(),
            fmt(t.seconds, 2),
            fmt(mb / t.seconds, 1),
            fmt(t.peak_mib(), 1),
            fmt(t.cpu_s(), 2),
            t.output_bytes
                .map_or("-".into(), |b| fmt(b as f64 / 1e6, 1)),
        ]);
        rows.push(json!({
            "tool": t.tool,
            "operation": t.operation,
            "round": t.round,
            "seconds": round3(t.seconds),
            "mb_per_s": round3(mb / t.seconds),
            "peak_rss_mib": round3(t.peak_mib()),
            "cpu_s": round3(t.cpu_s()),
            "output_bytes": t.output_bytes,
            "processes": t.processes.iter().map(|p| {
                let mut v = p.to_json();
                v["name"] = Value::from(p.name.clone());
                v
            }).collect::<Vec<_>>(),
        }));
    }
    report.tables.push((
        format!(
            "backup of {} orders ({mb:.0} MB of table data)",
            history.rows[0]
        ),
        table,
    ));
    let mean = |tool: &str, operation: &str| {
        let s: Vec<f64> = timed
            .iter()
            .filter(|t| t.tool == tool && t.operation == operation)
            .map(|t| t.seconds)
            .collect();
        s.iter().sum::<f64>() / s.len().max(1) as f64
    };
    let peak = |tool: &str, operation: &str| {
        timed
            .iter()
            .filter(|t| t.tool == tool && t.operation == operation)
            .map(Timed::peak_mib)
            .fold(0.0, f64::max)
    };
    let run_ratio = mean("backup", "run") / mean("pg_dump", "run");
    let restore_ratio = mean("backup", "restore") / mean("psql", "restore");
    report.results = json!({
        "operations": rows,
        "backup_run_over_pg_dump_seconds": round3(run_ratio),
        "backup_restore_over_psql_seconds": round3(restore_ratio),
    });
    report.targets.push(Target::new(
        "backup_run_vs_pg_dump",
        "backup run faster than pg_dump --data-only | gzip -6",
        format!(
            "{run_ratio:.3}x the time ({:.2} s vs {:.2} s)",
            mean("backup", "run"),
            mean("pg_dump", "run")
        ),
        Some(run_ratio < 1.0),
    ));
    report.targets.push(Target::new(
        "backup_run_peak_rss",
        "backup run peak RSS < 64 MiB",
        format!("{:.1} MiB", peak("backup", "run")),
        Some(peak("backup", "run") < 64.0),
    ));
    report.notes.push(format!(
        "backup restore takes {restore_ratio:.3}x the time of gzip -dc | psql on the same artifact ({:.2} s vs {:.2} s); it also checks every table's count and checksum before committing",
        mean("backup", "restore"),
        mean("psql", "restore")
    ));
    report
}
