//! `history_read`: `ListOrders` (first pages, and a deep page reached with
//! keyset page tokens) and `GetOrder` through the release checkout, with the
//! bulk history in the table (1 million orders for 100 thousand users in the
//! full run). Latencies from the client, one request at a time.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use orders::proto::boutique::orders::v1::order_history_client::OrderHistoryClient;
use orders::proto::boutique::orders::v1::{GetOrderRequest, ListOrdersRequest};
use serde_json::json;
use tonic::transport::Channel;
use uuid::Uuid;

use super::bulk::History;
use super::checkout::CheckoutProcess;
use super::load::{self, Measured, Shape};
use super::pg::{HISTORY_DB, Role};
use super::procstat::round3;
use super::report::{Report, Table, Target, fmt};
use super::{Bench, say};

/// Orders per page asked for (checkout's default page size).
const PAGE: i32 = 20;

/// One kind of request, measured.
struct Measurement {
    name: &'static str,
    what: String,
    measured: Measured,
}

/// Runs the scenario.
pub async fn run(bench: &Bench, history: &History) -> anyhow::Result<Report> {
    let samples = (bench.plan.history_requests * 2).clamp(100, 10_000) as i64;
    let owner = bench.pg.connect(HISTORY_DB, Role::Owner).await?;
    let ids: Vec<Uuid> = owner
        .query(
            "SELECT order_id FROM orders ORDER BY random() LIMIT $1",
            &[&samples],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let users: Vec<String> = owner
        .query(
            "SELECT user_id FROM (SELECT DISTINCT user_id FROM orders) AS u ORDER BY random() LIMIT $1",
            &[&samples],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let heaviest: Vec<(String, i64)> = owner
        .query(
            "SELECT user_id, count(*) FROM orders GROUP BY user_id ORDER BY count(*) DESC LIMIT 10",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    drop(owner);
    let max_count = heaviest.first().map_or(0, |(_, n)| *n);
    // Half-way down the heaviest history, at most 1000 orders deep.
    let depth = ((max_count / 2 / i64::from(PAGE)) * i64::from(PAGE)).clamp(i64::from(PAGE), 1000);
    let deep_users: Vec<String> = heaviest
        .iter()
        .filter(|(_, n)| *n >= depth + i64::from(PAGE))
        .map(|(u, _)| u.clone())
        .collect();
    anyhow::ensure!(
        !deep_users.is_empty() && !ids.is_empty() && !users.is_empty(),
        "the history is too small for history_read"
    );

    let mut process = CheckoutProcess::spawn(bench, HISTORY_DB, "required", "history_read")?;
    let (channel, _) = process.wait_serving(Duration::from_millis(20)).await?;
    let mut tokens = Vec::new();
    for user in &deep_users {
        tokens.push((user.clone(), token_at(&channel, user, depth).await?));
    }
    say(&format!(
        "deep pages: {} orders deep into the histories of {} users (heaviest has {max_count} orders)",
        depth,
        deep_users.len()
    ));

    let shape = Shape::Count {
        warmup: (bench.plan.history_requests / 10).max(5), // one worker
        measure: bench.plan.history_requests,
    };
    let client = OrderHistoryClient::new(channel);
    let ids = Arc::new(ids);
    let users = Arc::new(users);
    let deep_users = Arc::new(deep_users);
    let tokens = Arc::new(tokens);
    let mut measurements = Vec::new();

    let list = {
        let client = client.clone();
        move |user: String, token: String, full: bool| {
            let mut client = client.clone();
            async move {
                let page = client
                    .list_orders(ListOrdersRequest {
                        user_id: user.clone(),
                        page_size: PAGE,
                        page_token: token,
                    })
                    .await
                    .map_err(|s| format!("ListOrders {user}: {:?}: {}", s.code(), s.message()))?
                    .into_inner();
                if page.orders.is_empty() || (full && page.orders.len() != PAGE as usize) {
                    return Err(format!(
                        "ListOrders {user} returned {} orders",
                        page.orders.len()
                    ));
                }
                Ok(())
            }
        }
    };

    let measured = {
        let users = users.clone();
        let list = list.clone();
        load::drive(
            1,
            shape,
            move |seq| {
                list(
                    users[seq as usize % users.len()].clone(),
                    String::new(),
                    false,
                )
            },
            || {},
        )
        .await?
    };
    measurements.push(Measurement {
        name: "list_first_page_random_user",
        what: format!("ListOrders, first page, {} random users", users.len()),
        measured,
    });
    let measured = {
        let deep_users = deep_users.clone();
        let list = list.clone();
        load::drive(
            1,
            shape,
            move |seq| {
                list(
                    deep_users[seq as usize % deep_users.len()].clone(),
                    String::new(),
                    true,
                )
            },
            || {},
        )
        .await?
    };
    measurements.push(Measurement {
        name: "list_first_page_heavy_user",
        what: format!(
            "ListOrders, first page, the {} heaviest users",
            deep_users.len()
        ),
        measured,
    });
    let measured = {
        let tokens = tokens.clone();
        let list = list.clone();
        load::drive(
            1,
            shape,
            move |seq| {
                let (user, token) = tokens[seq as usize % tokens.len()].clone();
                list(user, token, true)
            },
            || {},
        )
        .await?
    };
    measurements.push(Measurement {
        name: "list_deep_page_heavy_user",
        what: format!("ListOrders, the page {depth} orders deep, the same users"),
        measured,
    });
    let measured = {
        let ids = ids.clone();
        let client = client.clone();
        load::drive(
            1,
            shape,
            move |seq| {
                let mut client = client.clone();
                let id = ids[seq as usize % ids.len()];
                async move {
                    client
                        .get_order(GetOrderRequest {
                            order_id: id.to_string(),
                        })
                        .await
                        .map(|_| ())
                        .map_err(|s| format!("GetOrder {id}: {:?}: {}", s.code(), s.message()))
                }
            },
            || {},
        )
        .await?
    };
    measurements.push(Measurement {
        name: "get_order",
        what: format!("GetOrder, {} random orders", ids.len()),
        measured,
    });
    let usage = process.usage()?;
    process.stop()?;

    let mut report = Report::new("history_read");
    report.config = json!({
        "history": history.to_json(),
        "page_size": PAGE,
        "deep_page_orders_deep": depth,
        "deep_users": deep_users.len(),
        "heaviest_user_orders": max_count,
        "concurrency": 1,
        "checkout": "target/release/checkout as a process, persistence required, default pool",
        "requests": shape.to_json(),
    });
    let mut table = Table::new(&[
        "request", "requests", "errors", "p50 ms", "p99 ms", "max ms", "req/s",
    ]);
    let mut rows = Vec::new();
    for m in &measurements {
        table.row(vec![
            m.name.into(),
            m.measured.latencies.count().to_string(),
            m.measured.errors.to_string(),
            fmt(m.measured.latencies.quantile_ms(0.5), 2),
            fmt(m.measured.latencies.quantile_ms(0.99), 2),
            fmt(m.measured.latencies.quantile_ms(1.0), 2),
            fmt(m.measured.per_second(), 0),
        ]);
        rows.push(json!({
            "request": m.name,
            "what": m.what,
            "errors": m.measured.errors,
            "first_errors": m.measured.first_errors,
            "latency": m.measured.latencies.to_json(),
            "requests_per_s": round3(m.measured.per_second()),
        }));
    }
    report.tables.push((
        format!(
            "order history, {} orders, one request at a time",
            history.rows[0]
        ),
        table,
    ));
    let p = |name: &str, q: f64| {
        measurements
            .iter()
            .find(|m| m.name == name)
            .map_or(f64::NAN, |m| m.measured.latencies.quantile_ms(q))
    };
    let errors: u64 = measurements.iter().map(|m| m.measured.errors).sum();
    let deep_over_first =
        p("list_deep_page_heavy_user", 0.5) / p("list_first_page_heavy_user", 0.5);
    report.results = json!({
        "requests": rows,
        "deep_over_first_page_p50": round3(deep_over_first),
        "checkout_peak_rss_mib": round3(usage.peak_mib()),
    });
    let worst = [
        "list_first_page_random_user",
        "list_first_page_heavy_user",
        "list_deep_page_heavy_user",
    ]
    .iter()
    .map(|name| (*name, p(name, 0.99)))
    .fold(
        ("", f64::NEG_INFINITY),
        |a, b| if b.1 > a.1 { b } else { a },
    );
    report.targets.push(Target::new(
        "list_orders_p99",
        "ListOrders p99 < 5 ms at 1M orders, first and deep pages",
        format!(
            "first {} / {} ms, deep {} ms (p99; worst: {})",
            fmt(p("list_first_page_random_user", 0.99), 2),
            fmt(p("list_first_page_heavy_user", 0.99), 2),
            fmt(p("list_deep_page_heavy_user", 0.99), 2),
            worst.0
        ),
        Some(worst.1 < 5.0 && errors == 0),
    ));
    if errors > 0 {
        report.notes.push(format!(
            "{errors} requests failed; see first_errors in the JSON"
        ));
    }
    report.notes.push(format!(
        "deep page p50 is {deep_over_first:.2}x the first page's for the same users"
    ));
    Ok(report)
}

/// The page token `depth` orders into `user`'s history.
async fn token_at(channel: &Channel, user: &str, depth: i64) -> anyhow::Result<String> {
    let mut client = OrderHistoryClient::new(channel.clone());
    let mut token = String::new();
    for _ in 0..depth / i64::from(PAGE) {
        token = client
            .list_orders(ListOrdersRequest {
                user_id: user.into(),
                page_size: PAGE,
                page_token: token,
            })
            .await
            .with_context(|| format!("ListOrders {user} while walking to the deep page"))?
            .into_inner()
            .next_page_token;
        anyhow::ensure!(!token.is_empty(), "{user}'s history ended early");
    }
    Ok(token)
}
