//! `history_read`: `ListOrders` (first pages, and a deep page reached with
//! keyset page tokens) and `GetOrder` through the release checkout, with the
//! bulk history in the table (1 million orders for 100 thousand users in the
//! full run). Latencies from the client, one request at a time.
//!
//! The reference, measured in the same run and interleaved with it in
//! chunks: the same statement straight through `orders::store::Store`
//! (what checkout runs for that request, without gRPC and checkout).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use orders::db::Database;
use orders::proto::boutique::orders::v1::order_history_client::OrderHistoryClient;
use orders::proto::boutique::orders::v1::{GetOrderRequest, ListOrdersRequest};
use orders::store::{Cursor, Store};
use serde_json::json;
use tonic::transport::Channel;
use uuid::Uuid;

use super::bulk::History;
use super::checkout::CheckoutProcess;
use super::load::{self, Latencies, Shape};
use super::pg::{HISTORY_DB, Role};
use super::procstat::round3;
use super::report::{Report, Table, Target, fmt};
use super::{Bench, say};

/// Orders per page asked for (checkout's default page size).
const PAGE: i32 = 20;
/// Each measurement alternates between checkout and SQL this many times.
const CHUNKS: u64 = 4;

/// The requests measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// ListOrders, first page, random users (most have a handful of orders).
    FirstPageRandomUser,
    /// ListOrders, first page, the heaviest users (full pages).
    FirstPageHeavyUser,
    /// ListOrders, a page deep into the heaviest users' histories.
    DeepPageHeavyUser,
    /// GetOrder, random orders.
    GetOrder,
}

impl Kind {
    const ALL: [Kind; 4] = [
        Kind::FirstPageRandomUser,
        Kind::FirstPageHeavyUser,
        Kind::DeepPageHeavyUser,
        Kind::GetOrder,
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::FirstPageRandomUser => "list_first_page_random_user",
            Kind::FirstPageHeavyUser => "list_first_page_heavy_user",
            Kind::DeepPageHeavyUser => "list_deep_page_heavy_user",
            Kind::GetOrder => "get_order",
        }
    }

    fn is_list(self) -> bool {
        self != Kind::GetOrder
    }
}

/// What the requests ask for.
struct Samples {
    ids: Vec<Uuid>,
    users: Vec<String>,
    heavy: Vec<String>,
    /// Page tokens `depth` orders deep, one per heavy user.
    tokens: Vec<String>,
    /// The same positions as store cursors.
    cursors: Vec<Cursor>,
}

/// Through checkout, or the same statement straight from the store.
#[derive(Clone)]
enum Path {
    Checkout(OrderHistoryClient<Channel>),
    Sql(Store),
}

/// One kind of request, both paths.
struct Measurement {
    kind: Kind,
    checkout: Latencies,
    sql: Latencies,
    errors: u64,
    first_errors: Vec<String>,
}

/// Runs the scenario.
pub async fn run(bench: &Bench, history: &History) -> anyhow::Result<Report> {
    let (samples, depth, max_count) = sample(bench).await?;
    let mut process = CheckoutProcess::spawn(bench, HISTORY_DB, "required", "history_read")?;
    let (channel, _) = process.wait_serving(Duration::from_millis(20)).await?;
    let mut client = OrderHistoryClient::new(channel);
    let store = Store::new(
        Database::new(
            &bench.pg.settings(HISTORY_DB, Role::Checkout)?,
            "bench-history",
        )?
        .pool(),
    );
    let mut samples = samples;
    for user in &samples.heavy {
        samples
            .tokens
            .push(token_at(&mut client, user, depth).await?);
        samples.cursors.push(cursor_at(&store, user, depth).await?);
    }
    say(&format!(
        "deep pages: {depth} orders deep into the histories of {} users (heaviest has {max_count} orders)",
        samples.heavy.len()
    ));
    let samples = Arc::new(samples);

    let per_chunk = bench.plan.history_requests.div_ceil(CHUNKS);
    let mut measurements = Vec::new();
    for kind in Kind::ALL {
        let mut m = Measurement {
            kind,
            checkout: Latencies::default(),
            sql: Latencies::default(),
            errors: 0,
            first_errors: Vec::new(),
        };
        for chunk in 0..CHUNKS {
            let mut paths = [Path::Checkout(client.clone()), Path::Sql(store.clone())];
            if chunk % 2 == 1 {
                paths.reverse();
            }
            for path in paths {
                let is_checkout = matches!(path, Path::Checkout(_));
                let shape = Shape::Count {
                    warmup: if chunk == 0 { per_chunk.div_ceil(4) } else { 0 },
                    measure: per_chunk,
                };
                let samples = samples.clone();
                let measured = load::drive(
                    1,
                    shape,
                    move |seq| request(path.clone(), kind, samples.clone(), seq),
                    || {},
                )
                .await?;
                m.errors += measured.errors;
                m.first_errors.extend(measured.first_errors);
                if is_checkout {
                    m.checkout.extend(&measured.latencies);
                } else {
                    m.sql.extend(&measured.latencies);
                }
            }
        }
        m.first_errors.truncate(5);
        measurements.push(m);
    }
    let usage = process.usage()?;
    process.stop()?;
    Ok(report(
        history,
        &measurements,
        depth,
        max_count,
        samples.heavy.len(),
        usage.peak_mib(),
    ))
}

/// Random order ids, random users, the heaviest users and how deep the
/// deep page is.
async fn sample(bench: &Bench) -> anyhow::Result<(Samples, i64, i64)> {
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
    let max_count = heaviest.first().map_or(0, |(_, n)| *n);
    // Half-way down the heaviest history, at most 1000 orders deep.
    let page = i64::from(PAGE);
    let depth = ((max_count / 2 / page) * page).clamp(page, 1000);
    let heavy: Vec<String> = heaviest
        .into_iter()
        .filter(|(_, n)| *n >= depth + page)
        .map(|(u, _)| u)
        .collect();
    anyhow::ensure!(
        !heavy.is_empty() && !ids.is_empty() && !users.is_empty(),
        "the history is too small for history_read"
    );
    Ok((
        Samples {
            ids,
            users,
            heavy,
            tokens: Vec::new(),
            cursors: Vec::new(),
        },
        depth,
        max_count,
    ))
}

/// One request number `seq` of `kind` along `path`.
async fn request(path: Path, kind: Kind, samples: Arc<Samples>, seq: u64) -> Result<(), String> {
    let i = seq as usize;
    let heavy = i % samples.heavy.len();
    let (user, full) = match kind {
        Kind::FirstPageRandomUser => (&samples.users[i % samples.users.len()], false),
        Kind::GetOrder => (&samples.heavy[heavy], false),
        _ => (&samples.heavy[heavy], true),
    };
    let deep = kind == Kind::DeepPageHeavyUser;
    let orders = match path {
        Path::Checkout(mut client) if kind.is_list() => client
            .list_orders(ListOrdersRequest {
                user_id: user.clone(),
                page_size: PAGE,
                page_token: if deep {
                    samples.tokens[heavy].clone()
                } else {
                    String::new()
                },
            })
            .await
            .map_err(|s| format!("ListOrders {user}: {:?}: {}", s.code(), s.message()))?
            .into_inner()
            .orders
            .len(),
        Path::Checkout(mut client) => {
            let id = samples.ids[i % samples.ids.len()];
            client
                .get_order(GetOrderRequest {
                    order_id: id.to_string(),
                })
                .await
                .map_err(|s| format!("GetOrder {id}: {:?}: {}", s.code(), s.message()))?;
            1
        }
        // Checkout asks for one more row than the page, to know whether
        // another page follows.
        Path::Sql(store) if kind.is_list() => store
            .list_for_user(user, PAGE as u32 + 1, deep.then(|| samples.cursors[heavy]))
            .await
            .map_err(|e| format!("list_for_user {user}: {e}"))?
            .len()
            .min(PAGE as usize),
        Path::Sql(store) => {
            let id = samples.ids[i % samples.ids.len()];
            store
                .get(id)
                .await
                .map_err(|e| format!("get {id}: {e}"))?
                .ok_or_else(|| format!("order {id} not found"))?;
            1
        }
    };
    if orders == 0 || (full && orders != PAGE as usize) {
        return Err(format!(
            "{} for {user} returned {orders} orders",
            kind.name()
        ));
    }
    Ok(())
}

fn report(
    history: &History,
    measurements: &[Measurement],
    depth: i64,
    max_count: i64,
    heavy_users: usize,
    peak_rss_mib: f64,
) -> Report {
    let mut report = Report::new("history_read");
    report.config = json!({
        "history": history.to_json(),
        "page_size": PAGE,
        "deep_page_orders_deep": depth,
        "heavy_users": heavy_users,
        "heaviest_user_orders": max_count,
        "concurrency": 1,
        "checkout": "target/release/checkout as a process, persistence required, default pool; gRPC client over one HTTP/2 connection",
        "sql_reference": "the same statement through orders::store::Store from the bench (Store::list_for_user with page size + 1, Store::get), as the checkout role, TLS",
        "interleaving": format!("each request kind alternates checkout and SQL in {CHUNKS} chunks (A B B A ...)"),
    });
    let mut table = Table::new(&[
        "request",
        "path",
        "requests",
        "p50 ms",
        "p99 ms",
        "max ms",
        "checkout/sql p50",
    ]);
    let mut rows = Vec::new();
    for m in measurements {
        let overhead = m.checkout.quantile_ms(0.5) / m.sql.quantile_ms(0.5);
        for (path, latencies) in [("checkout", &m.checkout), ("sql", &m.sql)] {
            table.row(vec![
                m.kind.name().into(),
                path.into(),
                latencies.count().to_string(),
                fmt(latencies.quantile_ms(0.5), 2),
                fmt(latencies.quantile_ms(0.99), 2),
                fmt(latencies.quantile_ms(1.0), 2),
                if path == "checkout" {
                    fmt(overhead, 2)
                } else {
                    String::new()
                },
            ]);
        }
        rows.push(json!({
            "request": m.kind.name(),
            "checkout": m.checkout.to_json(),
            "sql": m.sql.to_json(),
            "checkout_over_sql_p50": round3(overhead),
            "checkout_over_sql_p99": round3(m.checkout.quantile_ms(0.99) / m.sql.quantile_ms(0.99)),
            "errors": m.errors,
            "first_errors": m.first_errors,
        }));
    }
    report.tables.push((
        format!(
            "order history, {} orders, one request at a time",
            history.rows[0]
        ),
        table,
    ));
    let p99 = |kind: Kind| {
        measurements
            .iter()
            .find(|m| m.kind == kind)
            .map_or(f64::NAN, |m| m.checkout.quantile_ms(0.99))
    };
    let p50 = |kind: Kind| {
        measurements
            .iter()
            .find(|m| m.kind == kind)
            .map_or(f64::NAN, |m| m.checkout.quantile_ms(0.5))
    };
    let errors: u64 = measurements.iter().map(|m| m.errors).sum();
    let deep_over_first = p50(Kind::DeepPageHeavyUser) / p50(Kind::FirstPageHeavyUser);
    report.results = json!({
        "requests": rows,
        "deep_over_first_page_p50": round3(deep_over_first),
        "checkout_peak_rss_mib": round3(peak_rss_mib),
    });
    let worst = [
        Kind::FirstPageRandomUser,
        Kind::FirstPageHeavyUser,
        Kind::DeepPageHeavyUser,
    ]
    .into_iter()
    .map(p99)
    .fold(f64::NEG_INFINITY, f64::max);
    let mut target = Target::new(
        "list_orders_p99",
        "ListOrders p99 < 5 ms at 1M orders, first and deep pages",
        format!(
            "first {} / {} ms, deep {} ms (p99 through checkout)",
            fmt(p99(Kind::FirstPageRandomUser), 2),
            fmt(p99(Kind::FirstPageHeavyUser), 2),
            fmt(p99(Kind::DeepPageHeavyUser), 2),
        ),
        Some(worst < 5.0 && errors == 0),
    );
    if worst >= 5.0 {
        let sql_worst = measurements
            .iter()
            .filter(|m| m.kind.is_list())
            .map(|m| m.sql.quantile_ms(0.99))
            .fold(f64::NEG_INFINITY, f64::max);
        target = target.note(format!(
            "the same statement straight from the store had p99 up to {sql_worst:.2} ms in the same run"
        ));
    }
    report.targets.push(target);
    if errors > 0 {
        report.notes.push(format!(
            "{errors} requests failed; see first_errors in the JSON"
        ));
    }
    report.notes.push(format!(
        "deep page p50 is {deep_over_first:.2}x the first page's for the same users"
    ));
    report
}

/// The page token `depth` orders into `user`'s history.
async fn token_at(
    client: &mut OrderHistoryClient<Channel>,
    user: &str,
    depth: i64,
) -> anyhow::Result<String> {
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

/// The store cursor `depth` orders into `user`'s history.
async fn cursor_at(store: &Store, user: &str, depth: i64) -> anyhow::Result<Cursor> {
    let mut cursor = None;
    for _ in 0..depth / i64::from(PAGE) {
        let page = store
            .list_for_user(user, PAGE as u32, cursor)
            .await
            .with_context(|| format!("list_for_user {user} while walking to the deep page"))?;
        let last = page.last().context("history ended early")?;
        cursor = Some(Cursor {
            created_at: last.created_at,
            order_id: last.order_id,
        });
    }
    cursor.context("no cursor")
}
