//! `place_order`: the release checkout as a process, the six stand-ins with
//! zero latency, PostgreSQL over TLS with fsync on; persistence `required`
//! against `off` at each concurrency, interleaved in the same run.
//!
//! Each configuration runs in a fresh checkout process against emptied
//! tables, so that when the process has exited (and its sessions have
//! published their statistics) the database counters hold exactly what it
//! did. What any checkout does without orders (the first health check) is
//! measured once and subtracted.

use std::time::Duration;

use orders::proto::hipstershop::checkout_service_client::CheckoutServiceClient;
use orders::proto::hipstershop::{Address, CreditCardInfo, PlaceOrderRequest};
use serde_json::{Value, json};

use super::checkout::CheckoutProcess;
use super::load::{self, Latencies, Measured};
use super::pg::{Counters, ORDERS_DB, Role};
use super::procstat::{self, round3};
use super::report::{Report, Table, Target, fmt};
use super::{Bench, perf, say};

/// The cart of every order: 2 x 19.99 + 1 x 34.99 USD, as in the demo.
const CART: [(&str, i32); 2] = [("OLJCESPC7Z", 2), ("66VCHSJNUP", 1)];

/// One measured configuration.
struct Run {
    persistence: &'static str,
    concurrency: usize,
    measured: Measured,
    /// CPU seconds of checkout during the measured phase.
    cpu_s: f64,
    /// CPU seconds of the bench process (client and stand-ins) then.
    harness_cpu_s: f64,
    peak_rss_kib: u64,
    /// Database counters of the whole process life, less the baseline.
    db: Counters,
}

/// Runs the scenario.
pub async fn run(bench: &Bench) -> anyhow::Result<Report> {
    let plan = &bench.plan;
    let baseline = baseline(bench).await?;
    say(&format!(
        "baseline (checkout started and stopped, no orders): {} round trips, {} statements, {} sessions",
        baseline.round_trips(),
        baseline.statements,
        baseline.sessions
    ));
    let mut runs = Vec::new();
    for &concurrency in &plan.concurrency {
        let labels = labels(bench);
        for (i, persistence) in interleaved(&labels, plan.rounds).into_iter().enumerate() {
            let round = i / labels.len();
            let run = one_run(bench, persistence, concurrency, round, baseline).await?;
            say(&format!(
                "{persistence:<8} c={concurrency:<3} {:>6} orders  {:>8.1} orders/s  p50 {:>7.2} ms  p99 {:>7.2} ms  errors {}",
                run.measured.latencies.count(),
                run.measured.per_second(),
                run.measured.latencies.quantile_ms(0.5),
                run.measured.latencies.quantile_ms(0.99),
                run.measured.errors,
            ));
            runs.push(run);
        }
    }
    Ok(report(bench, &runs, baseline))
}

/// The configurations measured: `off`, `required`, and `required_b`
/// (the `--checkout-b` binary) when given.
fn labels(bench: &Bench) -> Vec<&'static str> {
    let mut labels = vec!["off", "required"];
    if bench.checkout_b.is_some() {
        labels.push("required_b");
    }
    labels
}

/// `labels` A B B A ..., so a drift in load hits each alike.
fn interleaved(labels: &[&'static str], rounds: usize) -> Vec<&'static str> {
    (0..rounds.max(1))
        .flat_map(|round| {
            let mut these = labels.to_vec();
            if round % 2 == 1 {
                these.reverse();
            }
            these
        })
        .collect()
}

/// Database counters of a `required` checkout that starts, becomes
/// SERVING and stops without taking an order.
async fn baseline(bench: &Bench) -> anyhow::Result<Counters> {
    let before = bench.pg.settled_counters(ORDERS_DB, Role::Checkout).await?;
    let mut process = CheckoutProcess::spawn(bench, ORDERS_DB, "required", "place_order-baseline")?;
    process.wait_serving(Duration::from_millis(20)).await?;
    process.stop()?;
    let after = bench.pg.settled_counters(ORDERS_DB, Role::Checkout).await?;
    Ok(after - before)
}

async fn one_run(
    bench: &Bench,
    persistence: &'static str,
    concurrency: usize,
    round: usize,
    baseline: Counters,
) -> anyhow::Result<Run> {
    bench
        .pg
        .owner_execute(ORDERS_DB, "TRUNCATE orders, order_items, order_events")
        .await?;
    let before = bench.pg.settled_counters(ORDERS_DB, Role::Checkout).await?;
    let log = format!("place_order-{persistence}-c{concurrency}-{round}");
    let mut process = match (&bench.checkout_b, persistence) {
        (Some(binary), "required_b") => {
            CheckoutProcess::spawn_binary(bench, binary, ORDERS_DB, "required", &log)?
        }
        _ => CheckoutProcess::spawn(bench, ORDERS_DB, persistence, &log)?,
    };
    let (channel, _) = process.wait_serving(Duration::from_millis(20)).await?;
    let client = CheckoutServiceClient::new(channel);
    let cart = bench.downstream.cart.clone();
    let prefix = format!("{persistence}-c{concurrency}-{round}");
    let pid = process.pid();
    let mut cpu_at_start = None;
    let mut harness_at_start = 0.0;
    let profiled = persistence == "required"
        && round == 0
        && Some(&concurrency) == bench.plan.concurrency.iter().max();
    let mut profile = None;
    let measured = load::drive(
        concurrency,
        bench.plan.place_order,
        move |seq| {
            let mut client = client.clone();
            let cart = cart.clone();
            let user = format!("{prefix}-{seq}");
            async move {
                for (product, quantity) in CART {
                    cart.add(&user, product, quantity);
                }
                let mut request = tonic::Request::new(order_request(&user));
                request.set_timeout(Duration::from_secs(30));
                client
                    .place_order(request)
                    .await
                    .map(|_| ())
                    .map_err(|status| format!("{:?}: {}", status.code(), status.message()))
            }
        },
        || {
            cpu_at_start = procstat::read(pid).ok();
            harness_at_start = procstat::own_cpu_s();
            if profiled {
                profile = perf::attach(bench, &format!("checkout-c{concurrency}"), pid);
            }
        },
    )
    .await?;
    if let Some(profile) = profile {
        profile.finish()?;
    }
    let end = process.usage()?;
    let harness_cpu_s = procstat::own_cpu_s() - harness_at_start;
    process.stop()?;
    let after = bench.pg.settled_counters(ORDERS_DB, Role::Checkout).await?;
    let mut db = after - before;
    if persistence != "off" {
        db = db - baseline;
    }
    Ok(Run {
        persistence,
        concurrency,
        cpu_s: end.cpu_s - cpu_at_start.map_or(0.0, |u| u.cpu_s),
        harness_cpu_s,
        peak_rss_kib: end.peak_rss_kib,
        measured,
        db,
    })
}

/// A valid order for `user`, paid in USD with a Visa test number.
fn order_request(user: &str) -> PlaceOrderRequest {
    PlaceOrderRequest {
        user_id: user.into(),
        user_currency: "USD".into(),
        address: Some(Address {
            street_address: "1600 Amphitheatre Parkway".into(),
            city: "Mountain View".into(),
            state: "CA".into(),
            country: "United States".into(),
            zip_code: 94043,
        }),
        email: format!("{user}@example.com"),
        credit_card: Some(CreditCardInfo {
            credit_card_number: "4111-1111-1111-1111".into(),
            credit_card_cvv: 672,
            credit_card_expiration_year: 2039,
            credit_card_expiration_month: 1,
        }),
    }
}

/// `±x%`: half the range of the rounds' rates, relative to their mean.
pub fn spread(rates: &[f64]) -> String {
    if rates.len() < 2 {
        return "-".into();
    }
    let mean = rates.iter().sum::<f64>() / rates.len() as f64;
    let (min, max) = rates
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), r| {
            (lo.min(*r), hi.max(*r))
        });
    format!("±{:.0}%", (max - min) / 2.0 / mean * 100.0)
}

/// The rounds of one (persistence, concurrency), added up.
struct Summary {
    persistence: &'static str,
    concurrency: usize,
    latencies: Latencies,
    elapsed: Duration,
    errors: u64,
    first_errors: Vec<String>,
    orders_total: u64,
    cpu_s: f64,
    harness_cpu_s: f64,
    peak_rss_kib: u64,
    db: Counters,
    rounds: usize,
    /// orders/s of each round.
    each_round: Vec<f64>,
}

impl Summary {
    fn per_second(&self) -> f64 {
        self.latencies.count() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn cpu_per_1000(&self) -> f64 {
        self.cpu_s * 1000.0 / (self.latencies.count() as f64).max(1.0)
    }

    fn harness_cpu_per_1000(&self) -> f64 {
        self.harness_cpu_s * 1000.0 / (self.latencies.count() as f64).max(1.0)
    }

    fn server_cpu_per_1000(&self) -> f64 {
        self.db.server_cpu_s * 1000.0 / (self.orders_total as f64).max(1.0)
    }

    fn per_order(&self, n: i64) -> f64 {
        n as f64 / (self.orders_total as f64).max(1.0)
    }

    fn to_json(&self) -> Value {
        json!({
            "persistence": self.persistence,
            "concurrency": self.concurrency,
            "rounds": self.rounds,
            "orders_measured": self.latencies.count(),
            "orders_total": self.orders_total,
            "errors": self.errors,
            "first_errors": self.first_errors,
            "measured_s": round3(self.elapsed.as_secs_f64()),
            "orders_per_s": round3(self.per_second()),
            "orders_per_s_each_round": self.each_round.iter().map(|r| round3(*r)).collect::<Vec<_>>(),
            "latency": self.latencies.to_json(),
            "checkout_peak_rss_mib": round3(self.peak_rss_kib as f64 / 1024.0),
            "checkout_cpu_s_per_1000_orders": round3(self.cpu_per_1000()),
            "harness_cpu_s_per_1000_orders": round3(self.harness_cpu_per_1000()),
            "server_cpu_s_per_1000_orders": round3(self.server_cpu_per_1000()),
            "database": self.db.per_op(self.orders_total),
        })
    }
}

fn summarize(runs: &[Run]) -> Vec<Summary> {
    let mut summaries: Vec<Summary> = Vec::new();
    for run in runs {
        let index = summaries
            .iter()
            .position(|s| s.persistence == run.persistence && s.concurrency == run.concurrency);
        let summary = match index {
            Some(i) => &mut summaries[i],
            None => {
                summaries.push(Summary {
                    persistence: run.persistence,
                    concurrency: run.concurrency,
                    latencies: Latencies::default(),
                    elapsed: Duration::ZERO,
                    errors: 0,
                    first_errors: Vec::new(),
                    orders_total: 0,
                    cpu_s: 0.0,
                    harness_cpu_s: 0.0,
                    peak_rss_kib: 0,
                    db: Counters::default(),
                    rounds: 0,
                    each_round: Vec::new(),
                });
                let last = summaries.len() - 1;
                &mut summaries[last]
            }
        };
        summary.latencies.extend(&run.measured.latencies);
        summary.elapsed += run.measured.elapsed;
        summary.errors += run.measured.errors;
        summary
            .first_errors
            .extend(run.measured.first_errors.iter().cloned());
        summary.first_errors.truncate(5);
        summary.orders_total += run.measured.ok_total;
        summary.cpu_s += run.cpu_s;
        summary.harness_cpu_s += run.harness_cpu_s;
        summary.each_round.push(run.measured.per_second());
        summary.peak_rss_kib = summary.peak_rss_kib.max(run.peak_rss_kib);
        summary.db = summary.db + run.db;
        summary.rounds += 1;
    }
    let rank = |p: &str| match p {
        "off" => 0,
        "required" => 1,
        _ => 2,
    };
    summaries.sort_by_key(|s| (s.concurrency, rank(s.persistence)));
    summaries
}

fn report(bench: &Bench, runs: &[Run], baseline: Counters) -> Report {
    let summaries = summarize(runs);
    let mut report = Report::new("place_order");
    report.config = json!({
        "checkout_b": bench.checkout_b.as_ref().map(|p| p.display().to_string()),
        "checkout": "target/release/checkout as a process, default settings (pool_max_size 16, health check every 5 s)",
        "client": "tonic, one HTTP/2 connection, N workers each placing one order after another",
        "order": "2 lines (OLJCESPC7Z x2, 66VCHSJNUP x1), USD, Visa; a fresh user per order, cart filled before the timer starts",
        "standins": "in the bench process, zero latency",
        "database": "TLS (verify-full), fsync on, synchronous_commit on",
        "baseline_subtracted": baseline.per_op(1)["raw"],
        "round_trips": "transactions less session start-ups: each statement checkout sends and each preparation of a statement (once per statement and pooled connection) is one round trip and one transaction",
    });

    let mut table = Table::new(&[
        "persistence",
        "conc",
        "orders",
        "errors",
        "orders/s",
        "spread",
        "p50 ms",
        "p99 ms",
        "max ms",
        "peak RSS MiB",
        "checkout CPU s/1k",
        "postgres CPU s/1k",
        "bench CPU s/1k",
        "round trips/order",
        "statements/order",
        "write commits/order",
    ]);
    for s in &summaries {
        table.row(vec![
            s.persistence.into(),
            s.concurrency.to_string(),
            s.latencies.count().to_string(),
            s.errors.to_string(),
            fmt(s.per_second(), 1),
            spread(&s.each_round),
            fmt(s.latencies.quantile_ms(0.5), 2),
            fmt(s.latencies.quantile_ms(0.99), 2),
            fmt(s.latencies.quantile_ms(1.0), 2),
            fmt(s.peak_rss_kib as f64 / 1024.0, 1),
            fmt(s.cpu_per_1000(), 2),
            fmt(s.server_cpu_per_1000(), 2),
            fmt(s.harness_cpu_per_1000(), 2),
            fmt(s.per_order(s.db.round_trips()), 2),
            fmt(s.per_order(s.db.statements), 2),
            fmt(s.per_order(s.db.next_xid), 2),
        ]);
    }
    report
        .tables
        .push(("orders placed through checkout".into(), table));

    let mut ratios = Vec::new();
    let mut ratio_table = Table::new(&[
        "conc",
        "required orders/s",
        "off orders/s",
        "required/off",
        "p50 required-off ms",
    ]);
    for &concurrency in &bench.plan.concurrency {
        let find = |p: &str| {
            summaries
                .iter()
                .find(|s| s.persistence == p && s.concurrency == concurrency)
        };
        if let (Some(required), Some(off)) = (find("required"), find("off")) {
            let ratio = required.per_second() / off.per_second();
            let extra_p50 = required.latencies.quantile_ms(0.5) - off.latencies.quantile_ms(0.5);
            ratios.push(json!({
                "concurrency": concurrency,
                "required_over_off_orders_per_s": round3(ratio),
                "p50_added_ms": round3(extra_p50),
            }));
            ratio_table.row(vec![
                concurrency.to_string(),
                fmt(required.per_second(), 1),
                fmt(off.per_second(), 1),
                fmt(ratio, 3),
                fmt(extra_p50, 2),
            ]);
            if let Some(b) = find("required_b") {
                let b_over_required = b.per_second() / required.per_second();
                let b_over_off = b.per_second() / off.per_second();
                ratios.push(json!({
                    "concurrency": concurrency,
                    "required_b_over_required_orders_per_s": round3(b_over_required),
                    "required_b_over_off_orders_per_s": round3(b_over_off),
                    "checkout_cpu_b_over_a": round3(b.cpu_per_1000() / required.cpu_per_1000()),
                }));
                ratio_table.row(vec![
                    format!("{concurrency} (B)"),
                    fmt(b.per_second(), 1),
                    fmt(off.per_second(), 1),
                    fmt(b_over_off, 3),
                    fmt(
                        b.latencies.quantile_ms(0.5) - off.latencies.quantile_ms(0.5),
                        2,
                    ),
                ]);
            }
        }
    }
    report
        .tables
        .push(("persistence overhead (same run)".into(), ratio_table));
    // Everything runs on the same cores: the CPU each order costs, summed
    // over checkout, PostgreSQL and the bench (client and stand-ins), sets
    // a ceiling that explains most of the persistence overhead here.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let mut budget_table = Table::new(&[
        "persistence",
        "conc",
        "checkout ms",
        "postgres ms",
        "bench ms",
        "total CPU ms/order",
        "ceiling orders/s",
        "measured/ceiling",
    ]);
    let mut budgets = Vec::new();
    for s in &summaries {
        let total = s.cpu_per_1000() + s.server_cpu_per_1000() + s.harness_cpu_per_1000();
        let ceiling = cores * 1000.0 / total;
        budget_table.row(vec![
            s.persistence.into(),
            s.concurrency.to_string(),
            fmt(s.cpu_per_1000(), 3),
            fmt(s.server_cpu_per_1000(), 3),
            fmt(s.harness_cpu_per_1000(), 3),
            fmt(total, 3),
            fmt(ceiling, 0),
            fmt(s.per_second() / ceiling, 2),
        ]);
        budgets.push(json!({
            "persistence": s.persistence,
            "concurrency": s.concurrency,
            "cpu_ms_per_order": round3(total),
            "ceiling_orders_per_s": round3(ceiling),
            "measured_over_ceiling": round3(s.per_second() / ceiling),
        }));
    }
    report.tables.push((
        format!(
            "CPU per order on this machine's {cores} shared cores (checkout + PostgreSQL + bench)"
        ),
        budget_table,
    ));
    report.results = json!({
        "runs": summaries.iter().map(Summary::to_json).collect::<Vec<_>>(),
        "ratios": ratios,
        "cpu_budget": budgets,
    });

    // Targets.
    let errors: u64 = summaries.iter().map(|s| s.errors).sum();
    let top = bench.plan.concurrency.iter().copied().max().unwrap_or(1);
    let at_top = |p: &str| {
        summaries
            .iter()
            .find(|s| s.persistence == p && s.concurrency == top)
    };
    if let (Some(required), Some(off)) = (at_top("required"), at_top("off")) {
        let ratio = required.per_second() / off.per_second();
        report.targets.push(Target::new(
            &format!("persistence_overhead_c{top}"),
            "required >= 0.9x the orders/s of off",
            format!(
                "{ratio:.3}x ({:.1} vs {:.1} orders/s)",
                required.per_second(),
                off.per_second()
            ),
            Some(ratio >= 0.9 && errors == 0),
        ));
        report.targets.push(Target::new(
            "checkout_rss_under_load",
            "checkout peak RSS under load < 64 MiB",
            format!(
                "{:.1} MiB (required, c={top})",
                required.peak_rss_kib as f64 / 1024.0
            ),
            Some((required.peak_rss_kib as f64 / 1024.0) < 64.0),
        ));
    }
    let required: Vec<&Summary> = summaries
        .iter()
        .filter(|s| s.persistence == "required")
        .collect();
    let orders: u64 = required.iter().map(|s| s.orders_total).sum();
    if orders > 0 {
        let sum = |f: fn(&Counters) -> i64| required.iter().map(|s| f(&s.db)).sum::<i64>();
        let writes = sum(|c| c.next_xid) as f64 / orders as f64;
        let round_trips = sum(Counters::round_trips) as f64 / orders as f64;
        let statements = sum(|c| c.statements) as f64 / orders as f64;
        report.targets.push(Target::new(
            "commits_per_order",
            "<= 2 commits on the critical path of a successful order",
            format!("{writes:.2} write commits per order"),
            Some(writes <= 2.05),
        ));
        let mut target = Target::new(
            "round_trips_per_order",
            "<= 3 database round trips per order",
            format!("{round_trips:.2} round trips ({statements:.2} statements) per order"),
            Some(round_trips <= 3.05),
        );
        if round_trips - statements > 0.5 {
            target = target.note(format!(
                "{:.2} of them per order are not statements (pool validity checks or statement preparations; orders::db prepares each statement once per connection)",
                round_trips - statements
            ));
        }
        report.targets.push(target);
    }
    if errors > 0 {
        report.notes.push(format!(
            "{errors} orders failed; see first_errors in the JSON and target/bench/logs"
        ));
    }
    report
}
