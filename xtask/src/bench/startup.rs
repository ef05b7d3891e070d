//! `startup`: time from process start to the first health SERVING answer
//! of checkout with the database up, and its RSS once idle.

use std::time::Duration;

use serde_json::json;

use super::checkout::CheckoutProcess;
use super::load::Latencies;
use super::pg::ORDERS_DB;
use super::procstat::{Usage, round3};
use super::report::{Report, Table, Target, fmt};
use super::{Bench, say};

/// How often health is asked while waiting: the resolution of the figure.
const POLL: Duration = Duration::from_millis(5);
/// How long checkout idles before its RSS is read.
const IDLE: Duration = Duration::from_secs(2);

/// Runs the scenario.
pub async fn run(bench: &Bench) -> anyhow::Result<Report> {
    let mut report = Report::new("startup");
    let mut table = Table::new(&[
        "persistence",
        "starts",
        "SERVING p50 ms",
        "SERVING max ms",
        "idle RSS MiB",
        "idle peak RSS MiB",
    ]);
    let mut rows = Vec::new();
    let mut required = None;
    for persistence in ["required", "off"] {
        let mut times = Latencies::default();
        let mut idle = Usage::default();
        for i in 0..bench.plan.startup_runs.max(1) {
            let mut process = CheckoutProcess::spawn(
                bench,
                ORDERS_DB,
                persistence,
                &format!("startup-{persistence}-{i}"),
            )?;
            let (_channel, serving) = process.wait_serving(POLL).await?;
            times.push(serving);
            tokio::time::sleep(IDLE).await;
            let usage = process.usage()?;
            idle.rss_kib = idle.rss_kib.max(usage.rss_kib);
            idle.peak_rss_kib = idle.peak_rss_kib.max(usage.peak_rss_kib);
            process.stop()?;
        }
        say(&format!(
            "{persistence:<8} SERVING after p50 {:.1} ms, max {:.1} ms; idle RSS {:.1} MiB",
            times.quantile_ms(0.5),
            times.quantile_ms(1.0),
            idle.rss_mib()
        ));
        table.row(vec![
            persistence.into(),
            times.count().to_string(),
            fmt(times.quantile_ms(0.5), 1),
            fmt(times.quantile_ms(1.0), 1),
            fmt(idle.rss_mib(), 1),
            fmt(idle.peak_mib(), 1),
        ]);
        rows.push(json!({
            "persistence": persistence,
            "starts": times.count(),
            "to_serving": times.to_json(),
            "idle_rss_mib": round3(idle.rss_mib()),
            "idle_peak_rss_mib": round3(idle.peak_mib()),
        }));
        if persistence == "required" {
            required = Some((times, idle));
        }
    }
    report.config = json!({
        "checkout": "target/release/checkout as a process, database up and migrated, stand-ins up",
        "measured": "from spawn to the first grpc.health.v1 Check answer SERVING (service \"\"), asked every 5 ms (new connection each try until one is accepted)",
        "idle_rss": format!("VmRSS {} s after SERVING, the largest of all starts", IDLE.as_secs()),
    });
    report.results = json!({ "starts": rows });
    report
        .tables
        .push(("checkout start-up (database up)".into(), table));
    if let Some((times, idle)) = required {
        report.targets.push(Target::new(
            "serving_within_200ms",
            "SERVING within 200 ms of start (database up), every start",
            format!(
                "p50 {:.1} ms, max {:.1} ms over {} starts",
                times.quantile_ms(0.5),
                times.quantile_ms(1.0),
                times.count()
            ),
            Some(times.quantile_ms(1.0) < 200.0),
        ));
        report.targets.push(Target::new(
            "idle_rss",
            "checkout idle RSS < 20 MiB",
            format!(
                "{:.1} MiB (peak so far {:.1} MiB)",
                idle.rss_mib(),
                idle.peak_mib()
            ),
            Some(idle.rss_mib() < 20.0),
        ));
    }
    Ok(report)
}
