//! Bulk order history for `history_read` and `backup`: N orders for U users
//! written straight in SQL by the owner (`INSERT ... SELECT generate_series`),
//! in the shape checkout's store writes: each order with its items and its
//! audit events (`pending`, `paid`, `shipped`, `completed`; one in twenty
//! declined: `pending`, `failed`).
//!
//! Users are skewed like a real shop's: user `user-k` gets about
//! `N (sqrt((k+1)/U) - sqrt(k/U))` orders, so `user-0` has thousands (deep
//! pages) while most have a handful. Order ids are UUIDv7-like (time
//! ordered), `created_at` spreads over a year. The generator is seeded, so
//! every run writes the same data.

use std::time::Instant;

use anyhow::Context as _;
use serde_json::{Value, json};

use super::pg::{HISTORY_DB, Role};
use super::procstat::round3;
use super::{Bench, say};

/// Orders per statement (one transaction each).
const CHUNK: u64 = 100_000;

/// The loaded history.
#[derive(Debug, Clone)]
pub struct History {
    /// Orders in the table.
    pub orders: u64,
    /// Users they belong to (at most).
    pub users: u64,
    /// Rows of `orders`, `order_items`, `order_events`.
    pub rows: [i64; 3],
    /// Heap (with TOAST) bytes of the three tables, indexes excluded.
    pub table_bytes: i64,
    /// Bytes of the three tables with their indexes.
    pub total_bytes: i64,
    /// How long loading took (insert, VACUUM ANALYZE, CHECKPOINT).
    pub load_s: f64,
}

impl History {
    /// For the JSON's `config`.
    pub fn to_json(&self) -> Value {
        json!({
            "database": HISTORY_DB,
            "orders": self.orders,
            "users": self.users,
            "rows": {"orders": self.rows[0], "order_items": self.rows[1], "order_events": self.rows[2]},
            "table_mb": round3(self.table_bytes as f64 / 1e6),
            "table_and_index_mb": round3(self.total_bytes as f64 / 1e6),
            "load_s": round3(self.load_s),
            "generator": "INSERT ... SELECT generate_series as the owner, seeded; skewed users; UUIDv7-like ids; 95% completed (4 events), 5% declined (2 events); 1-3 lines per order",
        })
    }
}

/// Creates and fills [`HISTORY_DB`] with the plan's orders and users.
pub async fn prepare_history(bench: &Bench) -> anyhow::Result<History> {
    let orders = bench.plan.history_orders;
    let users = bench.plan.history_users;
    say(&format!(
        "loading {orders} orders for {users} users into {HISTORY_DB}"
    ));
    let started = Instant::now();
    bench.pg.create_database(HISTORY_DB).await?;
    let client = bench.pg.connect(HISTORY_DB, Role::Owner).await?;
    client
        .batch_execute("SET synchronous_commit = off; SELECT setseed(0.42);")
        .await?;
    let sql = chunk_sql(orders, users);
    let mut first = 1;
    while first <= orders {
        let last = (first + CHUNK - 1).min(orders);
        client
            .execute(&sql, &[&(first as i64), &(last as i64)])
            .await
            .with_context(|| format!("cannot insert orders {first}..={last}"))?;
        first = last + 1;
        if orders >= 10 * CHUNK {
            say(&format!(
                "{last} orders after {:.0} s",
                started.elapsed().as_secs_f64()
            ));
        }
    }
    client
        .batch_execute("VACUUM (ANALYZE) orders, order_items, order_events")
        .await
        .context("VACUUM ANALYZE failed")?;
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM orders), (SELECT count(*) FROM order_items),
                    (SELECT count(*) FROM order_events),
                    pg_table_size('orders') + pg_table_size('order_items') + pg_table_size('order_events'),
                    pg_total_relation_size('orders') + pg_total_relation_size('order_items')
                      + pg_total_relation_size('order_events')",
            &[],
        )
        .await?;
    drop(client);
    bench.pg.admin_query("CHECKPOINT", &[]).await?;
    // Let the kernel write the dirty pages now rather than during the
    // measurements that follow.
    let _ = tokio::task::spawn_blocking(|| std::process::Command::new("sync").status()).await;
    let history = History {
        orders,
        users,
        rows: [row.get(0), row.get(1), row.get(2)],
        table_bytes: row.get(3),
        total_bytes: row.get(4),
        load_s: started.elapsed().as_secs_f64(),
    };
    say(&format!(
        "loaded in {:.1} s: {} orders, {} items, {} events, {:.0} MB of tables ({:.0} MB with indexes)",
        history.load_s,
        history.rows[0],
        history.rows[1],
        history.rows[2],
        history.table_bytes as f64 / 1e6,
        history.total_bytes as f64 / 1e6
    ));
    Ok(history)
}

/// One statement that writes orders `$1..=$2` with their items and events.
fn chunk_sql(orders: u64, users: u64) -> String {
    // A year of orders, evenly spaced.
    let step_us = (365 * 24 * 3600 * 1_000_000u64) / orders.max(1);
    let products = "(ARRAY['OLJCESPC7Z', '66VCHSJNUP', '1YMWWN1N4O', 'L9ECAV7KIM', '2ZYFJ3GM2N', \
                    '0PUK6V6EV0', 'LS4PSXUNUM', '9SIQT8TOJO', '6E92ZMYYFZ'])";
    let prices = "(ARRAY[19.99, 34.99, 109.99, 36.45, 8.99, 12.49, 24.99, 67.99, 18.99])";
    format!(
        r#"
WITH src AS MATERIALIZED (
    SELECT g, t.ts,
           'user-' || floor({users} * power(random(), 2))::int8 AS user_id,
           (ARRAY['USD', 'EUR', 'JPY', 'GBP'])[1 + (g % 4)::int] AS currency,
           g % 20 = 0 AS failed,
           (lpad(to_hex((extract(epoch FROM t.ts) * 1000)::int8), 12, '0') || '7'
             || lpad(to_hex(g % 4096), 3, '0') || '8' || lpad(to_hex(g), 15, '0'))::uuid AS order_id,
           1 + (g % 3)::int AS lines,
           md5(g::text)::uuid::text AS transaction_id,
           'TR-' || lpad(g::text, 12, '0') AS tracking_id,
           8.99 + (SELECT sum({prices}[1 + ((g + l) % 9)::int] * (1 + ((g + l) % 3)))
                   FROM generate_series(1, 1 + (g % 3)::int) AS l) AS total
    FROM generate_series($1::int8, $2::int8) AS g,
         LATERAL (SELECT timestamptz '2025-01-01 00:00:00+00'
                         + g * interval '{step_us} microseconds' AS ts) AS t
), lines AS MATERIALIZED (
    SELECT src.order_id, src.currency, l AS line_no,
           {products}[1 + ((src.g + l) % 9)::int] AS product_id,
           1 + ((src.g + l) % 3)::int AS quantity,
           {prices}[1 + ((src.g + l) % 9)::int] AS cost
    FROM src, generate_series(1, src.lines) AS l
), orders_written AS (
    INSERT INTO orders (order_id, user_id, user_email, user_currency, status, failure_reason,
        payment_transaction_id, card_last4, shipping_tracking_id, shipping_cost,
        shipping_cost_currency, shipping_street_address, shipping_city, shipping_state,
        shipping_country, shipping_zip_code, total, total_currency, idempotency_key,
        created_at, updated_at)
    SELECT src.order_id, src.user_id, src.user_id || '@example.com', src.currency,
           CASE WHEN src.failed THEN 'failed' ELSE 'completed' END,
           CASE WHEN src.failed THEN 'Credit card info is invalid' END,
           CASE WHEN src.failed THEN NULL ELSE src.transaction_id END,
           lpad((src.g % 10000)::text, 4, '0'),
           CASE WHEN src.failed THEN NULL ELSE src.tracking_id END,
           8.99, src.currency, '1600 Amphitheatre Parkway', 'Mountain View', 'CA',
           'United States', 94043,
           src.total,
           src.currency, NULL, src.ts, src.ts + interval '2 seconds'
    FROM src
), items_written AS (
    INSERT INTO order_items (order_id, line_no, product_id, quantity, cost, cost_currency)
    SELECT order_id, line_no, product_id, quantity, cost, currency FROM lines
)
INSERT INTO order_events (order_id, status, at, detail)
SELECT src.order_id, e.status, src.ts + e.after, e.detail
FROM src, LATERAL (VALUES
    ('pending', interval '0', '{{}}'::jsonb, true),
    ('paid', interval '1 second',
        jsonb_build_object('transaction_id', src.transaction_id), NOT src.failed),
    ('shipped', interval '1500 milliseconds',
        jsonb_build_object('tracking_id', src.tracking_id), NOT src.failed),
    ('completed', interval '2 seconds', '{{}}'::jsonb, NOT src.failed),
    ('failed', interval '1 second',
        jsonb_build_object('reason', 'Credit card info is invalid', 'stage', 'payment'), src.failed)
) AS e(status, after, detail, present)
WHERE e.present
"#
    )
}
