//! `store_write`: the library's order write path alone
//! ([`Store::create_pending`] then [`Store::finish`], as checkout does for
//! a successful order) against `pgbench` running the very same two
//! statements, read from the library, with the same transaction shape (two
//! autocommit statements per order), protocol (each statement prepared
//! once per connection, then bound and executed: `pgbench -M prepared`),
//! TLS, role and concurrency. pgbench's rate is the limit this machine's
//! PostgreSQL sets for that SQL.
//!
//! A third contender, for context, is pgbench sending the statements
//! unprepared (`-M extended`, parsed and planned every time): what the
//! library's statement cache saves.

use anyhow::{Context as _, bail};
use orders::db::Database;
use orders::money::Money;
use orders::store::{self, Address, LineItem, NewOrder, Outcome, Store};
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Command, Stdio};
use uuid::Uuid;

use super::load::{self, Shape};
use super::pg::{Counters, ORDERS_DB, Role};
use super::procstat::{self, Watched, round3};
use super::report::{Report, Table, Target, fmt};
use super::{Bench, perf, say};

/// The contenders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tool {
    /// `orders::store::Store` over the library's pool.
    Library,
    /// pgbench with the same statements, prepared once per connection
    /// (`-M prepared`), as the library does: the reference.
    Pgbench,
    /// pgbench with the same statements unprepared (`-M extended`): what
    /// parsing and planning every statement costs. Context only.
    PgbenchUnprepared,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Library => "library",
            Tool::Pgbench => "pgbench",
            Tool::PgbenchUnprepared => "pgbench_unprepared",
        }
    }
}

/// Fixed values of every order, the same for both sides (only the order
/// id, the user and the card's last four differ per order).
const EMAIL: &str = "bench@example.com";
const TRANSACTION_ID: &str = "0b7c6a5e-2f4d-4b8e-9a61-3d2c1b0a9f8e";
const TRACKING_ID: &str = "KJ-48213-902831";

/// One run of one tool.
struct Run {
    tool: Tool,
    concurrency: usize,
    orders_per_s: f64,
    orders: u64,
    /// Orders written, warm-up included (what the database counters saw).
    orders_total: u64,
    errors: u64,
    latency: Value,
    db: Counters,
    /// CPU seconds of the client (pgbench, or this process for the library).
    client_cpu_s: f64,
    first_errors: Vec<String>,
}

/// Runs the scenario.
pub async fn run(bench: &Bench) -> anyhow::Result<Report> {
    let script = bench.out.join("logs").join("store_write.pgbench");
    std::fs::write(&script, pgbench_script())
        .with_context(|| format!("cannot write {}", script.display()))?;
    let mut runs = Vec::new();
    for &concurrency in &bench.plan.concurrency {
        for round in 0..bench.plan.rounds.max(1) {
            let mut tools = [Tool::Library, Tool::Pgbench, Tool::PgbenchUnprepared];
            if round % 2 == 1 {
                tools.reverse();
            }
            for tool in tools {
                bench
                    .pg
                    .owner_execute(ORDERS_DB, "TRUNCATE orders, order_items, order_events")
                    .await?;
                let before = bench.pg.settled_counters(ORDERS_DB, Role::Checkout).await?;
                let mut run = match tool {
                    Tool::Pgbench | Tool::PgbenchUnprepared => {
                        pgbench(bench, tool, &script, concurrency).await?
                    }
                    Tool::Library => library(bench, tool, concurrency, round).await?,
                };
                run.db = bench.pg.settled_counters(ORDERS_DB, Role::Checkout).await? - before;
                say(&format!(
                    "{:<16} c={concurrency:<3} {:>9.1} orders/s  ({} orders, {} errors)",
                    tool.name(),
                    run.orders_per_s,
                    run.orders,
                    run.errors
                ));
                runs.push(run);
            }
        }
    }
    Ok(report(bench, &runs, &script))
}

/// The library's two statements for pgbench: `$n` parameters become pgbench
/// variables (sent as parameters of the extended protocol), NULLs become
/// `NULL`, and the order id, which pgbench cannot generate as a UUID, is
/// built on the server from two random integers.
fn pgbench_script() -> String {
    // Shaped like a UUIDv7 and, like one, increasing: a per-client counter
    // (pgbench keeps variables from one transaction to the next) where the
    // time goes, the client, random bits.
    const ORDER_ID: &str = "(lpad(to_hex(:seq::int8), 12, '0') || '7' \
        || lpad(to_hex(:client_id::int8), 3, '0') || '8' || lpad(to_hex(:oid_lo::int8), 15, '0'))::uuid";
    let insert = substitute(store::INSERT_PENDING.text, |n| match n {
        1 => ORDER_ID,
        2 => ":user",
        3 => ":email",
        4 => ":currency",
        5 => ":last4",
        6 => ":shipping",
        7 => ":street",
        8 => ":city",
        9 => ":state",
        10 => ":country",
        11 => ":zip",
        12 => ":total",
        13 => "NULL",
        14 => ":products",
        15 => ":quantities",
        _ => ":costs",
    });
    let finish = substitute(store::FINISH.text, |n| match n {
        1 => ORDER_ID,
        2 => ":status",
        3 => "NULL",
        4 => ":transaction",
        5 => ":tracking",
        6 => ":event_statuses",
        _ => ":event_details",
    });
    format!(
        "-- Generated by cargo xtask bench from orders::store::INSERT_PENDING and FINISH.\n\
         \\set seq :seq + 1\n\
         \\set oid_lo random(1, 1152921504606846975)\n\
         \\set user random(1, 100000)\n\
         \\set last4 random(1000, 9999)\n\
         {};\n{};\n",
        insert.trim(),
        finish.trim()
    )
}

/// `sql` with every `$n` replaced by `with(n)`.
fn substitute(sql: &str, with: impl Fn(u32) -> &'static str) -> String {
    let mut out = String::with_capacity(sql.len() * 2);
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            let mut number = 0u32;
            while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
                number = number * 10 + d;
                chars.next();
            }
            out.push_str(with(number));
        } else {
            out.push(c);
        }
    }
    out
}

/// The pgbench variables of the fixed values.
fn pgbench_defines() -> Vec<String> {
    let details = [
        json!({ "transaction_id": TRANSACTION_ID }),
        json!({ "tracking_id": TRACKING_ID }),
        json!({}),
    ];
    let details_array = format!(
        "{{{}}}",
        details
            .iter()
            .map(|d| format!(
                "\"{}\"",
                d.to_string().replace('\\', "\\\\").replace('"', "\\\"")
            ))
            .collect::<Vec<_>>()
            .join(",")
    );
    [
        ("seq", "0".to_owned()),
        ("email", EMAIL.to_owned()),
        ("currency", "USD".into()),
        ("shipping", "8.99".into()),
        ("street", "1600 Amphitheatre Parkway".into()),
        ("city", "Mountain View".into()),
        ("state", "CA".into()),
        ("country", "United States".into()),
        ("zip", "94043".into()),
        ("total", "83.96".into()),
        ("products", "{OLJCESPC7Z,66VCHSJNUP}".into()),
        ("quantities", "{2,1}".into()),
        ("costs", "{19.99,34.99}".into()),
        ("status", "completed".into()),
        ("transaction", TRANSACTION_ID.into()),
        ("tracking", TRACKING_ID.into()),
        ("event_statuses", "{paid,shipped,completed}".into()),
        ("event_details", details_array),
    ]
    .into_iter()
    .map(|(k, v)| format!("{k}={v}"))
    .collect()
}

/// The same order the pgbench script writes, for the library.
fn new_order(seq: u64) -> anyhow::Result<NewOrder> {
    let usd = |units, nanos| Money::new("USD", units, nanos);
    Ok(NewOrder {
        order_id: Uuid::now_v7(),
        user_id: (seq % 100_000 + 1).to_string(),
        user_email: EMAIL.into(),
        user_currency: "USD".into(),
        card_last4: Some(format!("{}", 1000 + seq % 9000)),
        shipping_cost: usd(8, 990_000_000)?,
        shipping_address: Address {
            street_address: "1600 Amphitheatre Parkway".into(),
            city: "Mountain View".into(),
            state: "CA".into(),
            country: "United States".into(),
            zip_code: 94043,
        },
        items: vec![
            LineItem {
                product_id: "OLJCESPC7Z".into(),
                quantity: 2,
                unit_cost: usd(19, 990_000_000)?,
            },
            LineItem {
                product_id: "66VCHSJNUP".into(),
                quantity: 1,
                unit_cost: usd(34, 990_000_000)?,
            },
        ],
        total: usd(83, 960_000_000)?,
        idempotency_key: None,
    })
}

/// The library's write path from `concurrency` tasks, each with its own
/// pooled connection at most (pool size = concurrency, like pgbench's clients).
async fn library(
    bench: &Bench,
    tool: Tool,
    concurrency: usize,
    round: usize,
) -> anyhow::Result<Run> {
    let mut settings = bench.pg.settings(ORDERS_DB, Role::Checkout)?;
    settings.pool_max_size = u32::try_from(concurrency)?;
    let store = Store::new(Database::new(&settings, "bench-store-write")?.pool());
    let outcome = Outcome::Completed {
        transaction_id: TRANSACTION_ID.into(),
        tracking_id: TRACKING_ID.into(),
    };
    let cpu_before = procstat::own_cpu_s();
    let profiled = tool == Tool::Library
        && round == 0
        && Some(&concurrency) == bench.plan.concurrency.iter().max();
    let mut profile = None;
    let measured = {
        let store = store.clone();
        load::drive(
            concurrency,
            bench.plan.store_write,
            move |seq| {
                let store = store.clone();
                let outcome = outcome.clone();
                async move {
                    let order = new_order(seq).map_err(|e| e.to_string())?;
                    store
                        .create_pending(&order)
                        .await
                        .map_err(|e| e.to_string())?;
                    store
                        .finish(order.order_id, &outcome)
                        .await
                        .map_err(|e| e.to_string())
                }
            },
            || {
                if profiled {
                    profile = perf::attach(
                        bench,
                        &format!("store-library-c{concurrency}"),
                        std::process::id(),
                    );
                }
            },
        )
        .await?
    };
    if let Some(profile) = profile {
        profile.finish()?;
    }
    drop(store);
    let client_cpu_s = procstat::own_cpu_s() - cpu_before;
    Ok(Run {
        tool,
        concurrency,
        orders_per_s: measured.per_second(),
        orders: measured.latencies.count() as u64,
        orders_total: measured.ok_total,
        errors: measured.errors,
        latency: measured.latencies.to_json(),
        db: Counters::default(),
        client_cpu_s,
        first_errors: measured.first_errors,
    })
}

/// pgbench with the script, same role, TLS, concurrency.
async fn pgbench(
    bench: &Bench,
    tool: Tool,
    script: &Path,
    concurrency: usize,
) -> anyhow::Result<Run> {
    let (_, password) = bench.pg.libpq(ORDERS_DB, Role::Checkout)?;
    let mode = if tool == Tool::PgbenchUnprepared {
        "extended"
    } else {
        "prepared"
    };
    let mut command = Command::new(bench.pg.tool("pgbench"));
    command
        .args(["-n", "-M", mode, "-f"])
        .arg(script)
        .args(["-c", &concurrency.to_string()])
        .args(["-j", &concurrency.min(2).to_string()]);
    match bench.plan.store_write {
        Shape::Timed { measure, .. } => {
            command.args(["-T", &measure.as_secs().max(1).to_string()]);
        }
        Shape::Count { measure, .. } => {
            let per_client = measure.div_ceil(concurrency as u64).max(1);
            command.args(["-t", &per_client.to_string()]);
        }
    }
    for define in pgbench_defines() {
        command.arg("-D").arg(define);
    }
    command
        .env("PGHOST", orders::testkit::CERT_HOST)
        .env("PGPORT", bench.pg.cluster.port().to_string())
        .env("PGUSER", Role::Checkout.name())
        .env("PGDATABASE", ORDERS_DB)
        .env("PGPASSWORD", password)
        .env("PGSSLMODE", "verify-full")
        .env("PGSSLROOTCERT", bench.pg.cluster.ca_cert())
        .env("PGAPPNAME", "bench-pgbench")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = command.spawn().context("cannot run pgbench")?;
    let output =
        tokio::task::spawn_blocking(move || Watched::new("pgbench", child).wait_with_output())
            .await??;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    std::fs::write(
        bench
            .out
            .join("logs")
            .join(format!("store_write-{}-c{concurrency}.log", tool.name())),
        format!("{stdout}\n{stderr}"),
    )?;
    if !output.finished.status.success() {
        bail!("pgbench failed ({}): {stderr}", output.finished.status);
    }
    // "tps = 812.3 (...)", "number of transactions actually processed: 20/20".
    let number = |prefix: &str| -> Option<f64> {
        stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.split('/').next())
            .and_then(|v| v.parse().ok())
    };
    let tps = number("tps = ").context("no tps in pgbench's output")?;
    let processed = number("number of transactions actually processed:").unwrap_or(0.0);
    let failed = number("number of failed transactions:").unwrap_or(0.0);
    Ok(Run {
        tool,
        concurrency,
        orders_per_s: tps,
        orders: processed as u64,
        orders_total: processed as u64,
        errors: failed as u64,
        latency: json!({ "mean_ms": number("latency average =") }),
        db: Counters::default(),
        client_cpu_s: output.finished.usage.cpu_s,
        first_errors: stderr.lines().take(5).map(str::to_owned).collect(),
    })
}

fn report(bench: &Bench, runs: &[Run], script: &Path) -> Report {
    let mut report = Report::new("store_write");
    report.config = json!({
        "statements": "orders::store::INSERT_PENDING then orders::store::FINISH (Completed: paid, shipped, completed events), each its own autocommit transaction",
        "order": "2 lines, USD, no idempotency key; the same fixed values on both sides",
        "library": "orders::store::Store over orders::db pool (size = concurrency), N tokio tasks, each statement prepared once per pooled connection (orders::db::Connection), then 1 round trip each",
        "pgbench_unprepared": "context only: pgbench -M extended (unnamed statements, each parsed and planned every time)",
        "pgbench": "pgbench -n -M prepared -c N -j min(2,N), the same statements from a generated script (target/bench/logs/store_write.pgbench); pgbench cannot make a UUID, so the order id is built on the server from a per-client counter, the client id and random bits: increasing like UUIDv7",
        "pgbench_script": script.display().to_string(),
        "role": Role::Checkout.name(),
        "tls": "verify-full for both",
    });
    let mut rows = Vec::new();
    let mut table = Table::new(&[
        "contender",
        "conc",
        "orders/s",
        "vs pgbench",
        "orders",
        "errors",
        "round trips/order",
        "statements/order",
        "postgres CPU s/1k",
        "client CPU s/1k",
    ]);
    let mut ratios = Vec::new();
    for &concurrency in &bench.plan.concurrency {
        let mean = |tool: Tool| -> Option<f64> {
            let rates: Vec<f64> = runs
                .iter()
                .filter(|r| r.tool == tool && r.concurrency == concurrency)
                .map(|r| r.orders_per_s)
                .collect();
            (!rates.is_empty()).then(|| rates.iter().sum::<f64>() / rates.len() as f64)
        };
        let reference = mean(Tool::Pgbench);
        for tool in [Tool::Pgbench, Tool::Library, Tool::PgbenchUnprepared] {
            let these: Vec<&Run> = runs
                .iter()
                .filter(|r| r.tool == tool && r.concurrency == concurrency)
                .collect();
            let Some(rate) = mean(tool) else { continue };
            let orders: u64 = these.iter().map(|r| r.orders).sum();
            let errors: u64 = these.iter().map(|r| r.errors).sum();
            let db = these.iter().fold(Counters::default(), |a, r| a + r.db);
            let db_orders: u64 = these.iter().map(|r| r.orders_total).sum();
            let client_cpu: f64 = these.iter().map(|r| r.client_cpu_s).sum();
            let client_cpu_per_1000 = client_cpu * 1000.0 / (db_orders as f64).max(1.0);
            let ratio = reference.map(|r| rate / r);
            if tool != Tool::Pgbench
                && let Some(ratio) = ratio
            {
                ratios.push(json!({
                    "contender": tool.name(), "concurrency": concurrency,
                    "over_pgbench": round3(ratio),
                }));
            }
            let per_order = db.per_op(db_orders);
            table.row(vec![
                tool.name().into(),
                concurrency.to_string(),
                fmt(rate, 1),
                ratio.map_or("-".into(), |r| fmt(r, 3)),
                orders.to_string(),
                errors.to_string(),
                fmt(
                    per_order["round_trips_per_order"]
                        .as_f64()
                        .unwrap_or(f64::NAN),
                    2,
                ),
                fmt(
                    per_order["statements_per_order"]
                        .as_f64()
                        .unwrap_or(f64::NAN),
                    2,
                ),
                fmt(
                    per_order["server_cpu_s_per_1000_orders"]
                        .as_f64()
                        .unwrap_or(f64::NAN),
                    2,
                ),
                fmt(client_cpu_per_1000, 2),
            ]);
            rows.push(json!({
                "contender": tool.name(),
                "concurrency": concurrency,
                "rounds": these.len(),
                "orders_per_s": round3(rate),
                "orders_per_s_each_round": these.iter().map(|r| round3(r.orders_per_s)).collect::<Vec<_>>(),
                "orders": orders,
                "errors": errors,
                "first_errors": these.iter().flat_map(|r| r.first_errors.iter().take(2)).collect::<Vec<_>>(),
                "latency": these.last().map(|r| r.latency.clone()),
                "database": per_order,
                "client_cpu_s_per_1000_orders": round3(client_cpu_per_1000),
            }));
        }
    }
    report
        .tables
        .push(("order write path, library vs pgbench".into(), table));
    let worst = ratios
        .iter()
        .filter(|r| r["contender"] == "library")
        .filter_map(|r| Some((r["concurrency"].as_u64()?, r["over_pgbench"].as_f64()?)))
        .min_by(|a, b| a.1.total_cmp(&b.1));
    if let Some((concurrency, ratio)) = worst {
        let errors: u64 = runs.iter().map(|r| r.errors).sum();
        let target = Target::new(
            "store_write_vs_pgbench",
            "library >= 0.9x pgbench with the same SQL (every concurrency)",
            format!("worst {ratio:.3}x (c={concurrency})"),
            Some(ratio >= 0.9 && errors == 0),
        );
        report.targets.push(target);
    }
    report.results = json!({ "runs": rows, "ratios": ratios });
    report
}
