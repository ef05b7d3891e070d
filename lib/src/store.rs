//! The order repository: every statement checkout and the history API run.
//!
//! The write path of a successful order is two statements, each one round
//! trip and one commit: [`Store::create_pending`] before any money moves,
//! and [`Store::finish`] once the card is charged and the order shipped.
//! Every statement is a [`Sql`] constant, prepared once per pooled session
//! ([`db::Connection::query_prepared`]), so PostgreSQL plans it once rather
//! than on every order. Each write statement writes the order, its items
//! and its audit events together, so no reader ever sees an order without
//! its items or a status change without its event.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use tokio_postgres::Row;
use tokio_postgres::types::{Json, ToSql, Type};
use uuid::Uuid;

use crate::db::{self, DbError, Pool, Sql};
use crate::money::{Money, MoneyError};

/// Where an order is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OrderStatus {
    /// Written, nothing charged yet (or the process stopped mid-way).
    Pending,
    /// Charged.
    Paid,
    /// Handed to shipping.
    Shipped,
    /// Charged, shipped, confirmed.
    Completed,
    /// Refused or broken; `failure_reason` says why.
    Failed,
}

impl OrderStatus {
    /// The value stored in the `status` columns.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Pending => "pending",
            OrderStatus::Paid => "paid",
            OrderStatus::Shipped => "shipped",
            OrderStatus::Completed => "completed",
            OrderStatus::Failed => "failed",
        }
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OrderStatus {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self, StoreError> {
        Ok(match s {
            "pending" => OrderStatus::Pending,
            "paid" => OrderStatus::Paid,
            "shipped" => OrderStatus::Shipped,
            "completed" => OrderStatus::Completed,
            "failed" => OrderStatus::Failed,
            other => {
                return Err(StoreError::Corrupt(format!(
                    "unknown order status {other:?}"
                )));
            }
        })
    }
}

/// A shipping address.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Address {
    /// Street and number.
    pub street_address: String,
    /// City.
    pub city: String,
    /// State or region.
    pub state: String,
    /// Country.
    pub country: String,
    /// Postal code.
    pub zip_code: i32,
}

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineItem {
    /// Catalog product id.
    pub product_id: String,
    /// How many; always positive.
    pub quantity: u32,
    /// Price of one, in the user's currency.
    pub unit_cost: Money,
}

/// An order as checkout first writes it.
#[derive(Clone, PartialEq, Eq)]
pub struct NewOrder {
    /// UUIDv7 id.
    pub order_id: Uuid,
    /// The buyer.
    pub user_id: String,
    /// Where the confirmation goes.
    pub user_email: String,
    /// Currency of every amount of the order.
    pub user_currency: String,
    /// The card's last four digits, never more.
    pub card_last4: Option<String>,
    /// Shipping cost.
    pub shipping_cost: Money,
    /// Where it goes.
    pub shipping_address: Address,
    /// What was bought.
    pub items: Vec<LineItem>,
    /// Shipping plus every item times its quantity.
    pub total: Money,
    /// The caller's `idempotency-key`, when given.
    pub idempotency_key: Option<String>,
}

impl fmt::Debug for NewOrder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Addresses and e-mails are personal data: keep them out of logs.
        f.debug_struct("NewOrder")
            .field("order_id", &self.order_id)
            .field("user_id", &self.user_id)
            .field("items", &self.items.len())
            .field("total", &self.total)
            .finish_non_exhaustive()
    }
}

/// An order as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    /// UUIDv7 id.
    pub order_id: Uuid,
    /// The buyer.
    pub user_id: String,
    /// Where the confirmation went.
    pub user_email: String,
    /// Currency of every amount.
    pub user_currency: String,
    /// Where it is in its life.
    pub status: OrderStatus,
    /// Why it failed.
    pub failure_reason: Option<String>,
    /// The payment service's transaction id, once charged.
    pub payment_transaction_id: Option<String>,
    /// The card's last four digits.
    pub card_last4: Option<String>,
    /// The shipping service's tracking id, once shipped.
    pub shipping_tracking_id: Option<String>,
    /// Shipping cost.
    pub shipping_cost: Money,
    /// Where it goes.
    pub shipping_address: Address,
    /// What was bought, in line order.
    pub items: Vec<LineItem>,
    /// The amount charged.
    pub total: Money,
    /// The caller's `idempotency-key`.
    pub idempotency_key: Option<String>,
    /// When it was written.
    pub created_at: time::OffsetDateTime,
    /// When it last changed.
    pub updated_at: time::OffsetDateTime,
}

/// How a pending order ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Charged and shipped: `paid`, `shipped`, `completed` in one step.
    Completed {
        /// From the payment service.
        transaction_id: String,
        /// From the shipping service.
        tracking_id: String,
    },
    /// The charge was refused; nothing was taken.
    Declined {
        /// The payment service's message (never holds the card number).
        reason: String,
    },
    /// Charged, but shipping failed: the transaction id is kept for a refund.
    ShippingFailed {
        /// From the payment service.
        transaction_id: String,
        /// What went wrong.
        reason: String,
    },
}

/// Result of [`Store::create_pending`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// The order was written.
    New,
    /// An order with the same idempotency key already exists; nothing was written.
    Duplicate,
}

/// A position in a user's history, newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// `created_at` of the last order seen.
    pub created_at: time::OffsetDateTime,
    /// `order_id` of the last order seen.
    pub order_id: Uuid,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed or could not be reached.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The order was not pending any more when we tried to finish it.
    #[error("order {0} is not pending")]
    NotPending(Uuid),
    /// A stored value cannot be read back (a bug or manual edits).
    #[error("stored order data is invalid: {0}")]
    Corrupt(String),
    /// An amount does not fit the order's currency or range.
    #[error("invalid amount: {0}")]
    Money(#[from] MoneyError),
}

impl StoreError {
    /// True when the database itself is unavailable (not a data problem).
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Db(DbError::Query(e)) => match e.code() {
                // Not an SQL error: the connection broke or timed out.
                None => true,
                // Connection exceptions, insufficient resources, operator intervention (shutdown).
                Some(code) => ["08", "53", "57"]
                    .iter()
                    .any(|class| code.code().starts_with(class)),
            },
            StoreError::Db(e) => e.is_transient(),
            _ => false,
        }
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(error: tokio_postgres::Error) -> Self {
        StoreError::Db(DbError::Query(error))
    }
}

/// The statement of [`Store::create_pending`] (public so benchmarks run the
/// very same SQL). Parameters: `$1` order id, `$2` user id, `$3` e-mail,
/// `$4` currency, `$5` card last four, `$6` shipping cost, `$7`..`$11`
/// street, city, state, country, zip code, `$12` total, `$13` idempotency
/// key, `$14` product ids, `$15` quantities, `$16` unit costs.
pub const INSERT_PENDING: Sql = Sql {
    text: "
WITH new_order AS (
    INSERT INTO orders (order_id, user_id, user_email, user_currency, status, card_last4,
        shipping_cost, shipping_cost_currency, shipping_street_address, shipping_city,
        shipping_state, shipping_country, shipping_zip_code, total, total_currency,
        idempotency_key)
    VALUES ($1, $2, $3, $4, 'pending', $5, $6, $4, $7, $8, $9, $10, $11, $12, $4, $13)
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING order_id
), items AS (
    INSERT INTO order_items (order_id, line_no, product_id, quantity, cost, cost_currency)
    SELECT new_order.order_id, item.line_no, item.product_id, item.quantity, item.cost, $4
    FROM new_order,
         unnest($14::text[], $15::int4[], $16::numeric[])
             WITH ORDINALITY AS item(product_id, quantity, cost, line_no)
), event AS (
    INSERT INTO order_events (order_id, status) SELECT order_id, 'pending' FROM new_order
)
SELECT order_id FROM new_order",
    types: &[
        Type::UUID,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::NUMERIC,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::INT4,
        Type::NUMERIC,
        Type::TEXT,
        Type::TEXT_ARRAY,
        Type::INT4_ARRAY,
        Type::NUMERIC_ARRAY,
    ],
};

/// The statement of [`Store::finish`] (public so benchmarks run the very
/// same SQL). Parameters: `$1` order id, `$2` final status, `$3` failure
/// reason, `$4` transaction id, `$5` tracking id, `$6` event statuses,
/// `$7` event details (jsonb).
pub const FINISH: Sql = Sql {
    text: "
WITH updated AS (
    UPDATE orders
    SET status = $2,
        failure_reason = $3,
        payment_transaction_id = $4,
        shipping_tracking_id = $5,
        updated_at = now()
    WHERE order_id = $1 AND status = 'pending'
    RETURNING order_id
)
INSERT INTO order_events (order_id, status, detail)
SELECT updated.order_id, event.status, event.detail
FROM updated, unnest($6::text[], $7::jsonb[]) WITH ORDINALITY AS event(status, detail, n)
ORDER BY event.n",
    types: &[
        Type::UUID,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT_ARRAY,
        Type::JSONB_ARRAY,
    ],
};

/// The read statements: `WITH page AS (<the orders wanted>)` followed by the
/// columns every read returns, items aggregated in line order. A macro so
/// each read is one `&'static str` (prepared once, not formatted per call).
macro_rules! select_orders {
    ($page:literal) => {
        concat!(
            "WITH page AS (",
            $page,
            ")
SELECT o.order_id, o.user_id, o.user_email, o.user_currency, o.status, o.failure_reason,
       o.payment_transaction_id, o.card_last4, o.shipping_tracking_id, o.shipping_cost,
       o.shipping_street_address, o.shipping_city, o.shipping_state, o.shipping_country,
       o.shipping_zip_code, o.total, o.idempotency_key, o.created_at, o.updated_at,
       items.product_ids, items.quantities, items.costs, items.currencies
FROM page AS o
CROSS JOIN LATERAL (
    SELECT coalesce(array_agg(i.product_id ORDER BY i.line_no), '{}') AS product_ids,
           coalesce(array_agg(i.quantity ORDER BY i.line_no), '{}') AS quantities,
           coalesce(array_agg(i.cost ORDER BY i.line_no), '{}') AS costs,
           coalesce(array_agg(i.cost_currency::text ORDER BY i.line_no), '{}') AS currencies
    FROM order_items i WHERE i.order_id = o.order_id
) AS items
ORDER BY o.created_at DESC, o.order_id DESC"
        )
    };
}

/// [`Store::get`]: `$1` order id.
const GET: Sql = Sql {
    text: select_orders!("SELECT * FROM orders WHERE order_id = $1"),
    types: &[Type::UUID],
};

/// [`Store::get_by_idempotency_key`]: `$1` key.
const GET_BY_IDEMPOTENCY_KEY: Sql = Sql {
    text: select_orders!("SELECT * FROM orders WHERE idempotency_key = $1"),
    types: &[Type::TEXT],
};

/// [`Store::list_for_user`], first page: `$1` user id, `$2` limit.
const LIST_FIRST_PAGE: Sql = Sql {
    text: select_orders!(
        "SELECT * FROM orders WHERE user_id = $1
        ORDER BY created_at DESC, order_id DESC LIMIT $2"
    ),
    types: &[Type::TEXT, Type::INT8],
};

/// [`Store::list_for_user`], a later page: `$1` user id, `$2` limit, `$3`
/// and `$4` the cursor (created_at, order_id of the last order seen).
const LIST_AFTER_CURSOR: Sql = Sql {
    text: select_orders!(
        "SELECT * FROM orders WHERE user_id = $1
        AND (created_at, order_id) < ($3, $4)
        ORDER BY created_at DESC, order_id DESC LIMIT $2"
    ),
    types: &[Type::TEXT, Type::INT8, Type::TIMESTAMPTZ, Type::UUID],
};

/// The order repository, over a connection pool.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
}

impl Store {
    /// A store using `pool`.
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }

    /// The pool, for health checks.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Writes `order` as `pending` with its items and first event, in one
    /// statement (one round trip, one commit). With an idempotency key that
    /// is already stored, writes nothing and says [`Created::Duplicate`].
    #[tracing::instrument(name = "db.create_pending", skip_all, fields(db.system = "postgresql", db.operation = "INSERT orders"))]
    pub async fn create_pending(&self, order: &NewOrder) -> Result<Created, StoreError> {
        let currency = &order.user_currency;
        for money in std::iter::once(&order.shipping_cost)
            .chain(std::iter::once(&order.total))
            .chain(order.items.iter().map(|i| &i.unit_cost))
        {
            money.validate()?;
            if &money.currency_code != currency {
                return Err(MoneyError::CurrencyMismatch {
                    expected: currency.clone(),
                    found: money.currency_code.clone(),
                }
                .into());
            }
        }
        let product_ids: Vec<&str> = order.items.iter().map(|i| i.product_id.as_str()).collect();
        let quantities = order
            .items
            .iter()
            .map(|i| i32::try_from(i.quantity))
            .collect::<Result<Vec<i32>, _>>()
            .map_err(|_| MoneyError::Overflow)?;
        let costs: Vec<Decimal> = order
            .items
            .iter()
            .map(|i| i.unit_cost.to_decimal())
            .collect();
        let address = &order.shipping_address;
        let shipping_cost = order.shipping_cost.to_decimal();
        let total = order.total.to_decimal();
        let params: [&(dyn ToSql + Sync); 16] = [
            &order.order_id,
            &order.user_id,
            &order.user_email,
            currency,
            &order.card_last4,
            &shipping_cost,
            &address.street_address,
            &address.city,
            &address.state,
            &address.country,
            &address.zip_code,
            &total,
            &order.idempotency_key,
            &product_ids,
            &quantities,
            &costs,
        ];
        let mut conn = db::checkout(&self.pool).await?;
        let rows = conn.query_prepared(&INSERT_PENDING, &params).await?;
        Ok(if rows.is_empty() {
            Created::Duplicate
        } else {
            Created::New
        })
    }

    /// Moves a pending order to its final state and records one event per
    /// status change (`paid`, `shipped`, `completed`, or `failed`), in one
    /// statement.
    #[tracing::instrument(name = "db.finish", skip_all, fields(db.system = "postgresql", db.operation = "UPDATE orders"))]
    pub async fn finish(&self, order_id: Uuid, outcome: &Outcome) -> Result<(), StoreError> {
        let (status, reason, transaction_id, tracking_id, events) = match outcome {
            Outcome::Completed {
                transaction_id,
                tracking_id,
            } => (
                OrderStatus::Completed,
                None,
                Some(transaction_id),
                Some(tracking_id),
                vec![
                    (
                        OrderStatus::Paid,
                        serde_json::json!({ "transaction_id": transaction_id }),
                    ),
                    (
                        OrderStatus::Shipped,
                        serde_json::json!({ "tracking_id": tracking_id }),
                    ),
                    (OrderStatus::Completed, serde_json::json!({})),
                ],
            ),
            Outcome::Declined { reason } => (
                OrderStatus::Failed,
                Some(reason),
                None,
                None,
                vec![(
                    OrderStatus::Failed,
                    serde_json::json!({ "reason": reason, "stage": "payment" }),
                )],
            ),
            Outcome::ShippingFailed {
                transaction_id,
                reason,
            } => (
                OrderStatus::Failed,
                Some(reason),
                Some(transaction_id),
                None,
                vec![
                    (
                        OrderStatus::Paid,
                        serde_json::json!({ "transaction_id": transaction_id }),
                    ),
                    (
                        OrderStatus::Failed,
                        serde_json::json!({ "reason": reason, "stage": "shipping" }),
                    ),
                ],
            ),
        };
        let status = status.as_str();
        let event_statuses: Vec<&str> = events.iter().map(|(s, _)| s.as_str()).collect();
        let event_details: Vec<Json<&serde_json::Value>> =
            events.iter().map(|(_, d)| Json(d)).collect();
        let params: [&(dyn ToSql + Sync); 7] = [
            &order_id,
            &status,
            &reason,
            &transaction_id,
            &tracking_id,
            &event_statuses,
            &event_details,
        ];
        let mut conn = db::checkout(&self.pool).await?;
        let inserted = conn.execute_prepared(&FINISH, &params).await?;
        if inserted == 0 {
            return Err(StoreError::NotPending(order_id));
        }
        Ok(())
    }

    /// The order with this id.
    #[tracing::instrument(name = "db.get", skip_all, fields(db.system = "postgresql", db.operation = "SELECT orders"))]
    pub async fn get(&self, order_id: Uuid) -> Result<Option<Order>, StoreError> {
        let mut conn = db::checkout(&self.pool).await?;
        let rows = conn.query_prepared(&GET, &[&order_id]).await?;
        rows.first().map(order_from_row).transpose()
    }

    /// The order written with this idempotency key.
    #[tracing::instrument(name = "db.get_by_idempotency_key", skip_all, fields(db.system = "postgresql", db.operation = "SELECT orders"))]
    pub async fn get_by_idempotency_key(&self, key: &str) -> Result<Option<Order>, StoreError> {
        let mut conn = db::checkout(&self.pool).await?;
        let rows = conn
            .query_prepared(&GET_BY_IDEMPOTENCY_KEY, &[&key])
            .await?;
        rows.first().map(order_from_row).transpose()
    }

    /// Up to `limit` orders of `user_id`, newest first, after `cursor` when given.
    #[tracing::instrument(name = "db.list_for_user", skip_all, fields(db.system = "postgresql", db.operation = "SELECT orders"))]
    pub async fn list_for_user(
        &self,
        user_id: &str,
        limit: u32,
        cursor: Option<Cursor>,
    ) -> Result<Vec<Order>, StoreError> {
        let limit = i64::from(limit);
        let mut conn = db::checkout(&self.pool).await?;
        let rows = match cursor {
            None => {
                conn.query_prepared(&LIST_FIRST_PAGE, &[&user_id, &limit])
                    .await?
            }
            Some(cursor) => {
                let params: [&(dyn ToSql + Sync); 4] =
                    [&user_id, &limit, &cursor.created_at, &cursor.order_id];
                conn.query_prepared(&LIST_AFTER_CURSOR, &params).await?
            }
        };
        rows.iter().map(order_from_row).collect()
    }
}

fn order_from_row(row: &Row) -> Result<Order, StoreError> {
    let currency: String = row.try_get("user_currency")?;
    let money = |column: &str| -> Result<Money, StoreError> {
        let amount: Decimal = row.try_get(column)?;
        Ok(Money::from_decimal(currency.trim(), amount)?)
    };
    let product_ids: Vec<String> = row.try_get("product_ids")?;
    let quantities: Vec<i32> = row.try_get("quantities")?;
    let costs: Vec<Decimal> = row.try_get("costs")?;
    let currencies: Vec<String> = row.try_get("currencies")?;
    let items = product_ids
        .into_iter()
        .zip(quantities)
        .zip(costs.into_iter().zip(currencies))
        .map(|((product_id, quantity), (cost, cost_currency))| {
            Ok(LineItem {
                product_id,
                quantity: u32::try_from(quantity)
                    .map_err(|_| StoreError::Corrupt(format!("quantity {quantity}")))?,
                unit_cost: Money::from_decimal(cost_currency.trim(), cost)?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let status: String = row.try_get("status")?;
    Ok(Order {
        order_id: row.try_get("order_id")?,
        user_id: row.try_get("user_id")?,
        user_email: row.try_get("user_email")?,
        status: status.parse()?,
        failure_reason: row.try_get("failure_reason")?,
        payment_transaction_id: row.try_get("payment_transaction_id")?,
        card_last4: row.try_get("card_last4")?,
        shipping_tracking_id: row.try_get("shipping_tracking_id")?,
        shipping_cost: money("shipping_cost")?,
        shipping_address: Address {
            street_address: row.try_get("shipping_street_address")?,
            city: row.try_get("shipping_city")?,
            state: row.try_get("shipping_state")?,
            country: row.try_get("shipping_country")?,
            zip_code: row.try_get("shipping_zip_code")?,
        },
        items,
        total: money("total")?,
        idempotency_key: row.try_get("idempotency_key")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        user_currency: currency.trim().to_owned(),
    })
}
