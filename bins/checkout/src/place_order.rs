//! `hipstershop.CheckoutService/PlaceOrder`, with durable order records.
//!
//! The steps, as in Online Boutique's checkout, with one addition:
//!
//! 1. validate the request (INVALID_ARGUMENT naming the field);
//! 2. prepare: cart, products and prices (concurrently, bounded), currency
//!    conversion, shipping quote, exact total;
//! 3. **write the order as `pending` with its items, durably, before any
//!    money moves** (persistence `required`: no database, no charge);
//! 4. charge the card; a refusal marks the order `failed`;
//! 5. ship; then, together, empty the cart and record `completed` with the
//!    transaction and tracking ids; then send the confirmation e-mail (a
//!    failure there is only a warning).
//!
//! An `idempotency-key` in the request metadata makes a repeat return the
//! first order instead of charging again, also when the two calls race: the
//! key is unique in the database, so only one call gets past step 3.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{StreamExt as _, TryStreamExt as _, stream};
use orders::config::{CheckoutSettings, Persistence};
use orders::money::Money;
use orders::proto::hipstershop::{
    self, CartItem, CreditCardInfo, PlaceOrderRequest, PlaceOrderResponse,
    checkout_service_server::CheckoutService,
};
use orders::store::{self, Created, LineItem, NewOrder, OrderStatus, Outcome, Store, StoreError};
use tokio::time::Instant;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};
use tracing::Instrument as _;
use uuid::Uuid;

use crate::downstream::{CallError, Downstream};
use crate::health::HealthHandle;
use crate::{propagation, wire};

/// Request metadata that makes PlaceOrder idempotent.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Longest idempotency key accepted.
const MAX_IDEMPOTENCY_KEY: usize = 200;
/// How many times the final write is tried after the money moved.
const FINISH_ATTEMPTS: u32 = 3;

/// The PlaceOrder service.
pub struct PlaceOrder {
    downstream: Arc<Downstream>,
    store: Option<Store>,
    persistence: Persistence,
    lookup_concurrency: usize,
    idempotency_wait: Duration,
    health: HealthHandle,
}

/// A request that passed validation.
struct Checkout {
    user_id: String,
    user_currency: String,
    email: String,
    address: hipstershop::Address,
    card: CreditCardInfo,
    card_last4: String,
}

/// Everything priced, before anything is written or charged.
struct Prepared {
    cart: Vec<CartItem>,
    items: Vec<LineItem>,
    shipping_cost: Money,
    total: Money,
}

impl PlaceOrder {
    /// The service; `store` is `None` when persistence is off.
    pub fn new(
        settings: &CheckoutSettings,
        downstream: Arc<Downstream>,
        store: Option<Store>,
        health: HealthHandle,
    ) -> Self {
        Self {
            downstream,
            store,
            persistence: settings.persistence,
            lookup_concurrency: settings.lookup_concurrency.max(1),
            idempotency_wait: settings.idempotency_wait,
            health,
        }
    }

    async fn place(
        &self,
        request: PlaceOrderRequest,
        key: Option<String>,
        deadline: Option<Instant>,
    ) -> Result<PlaceOrderResponse, Status> {
        let checkout = validate(request)?;
        tracing::Span::current().record("user_id", checkout.user_id.as_str());

        // A repeat of a known key answers from the database straight away.
        if let Some(key) = &key
            && let Some(existing) = self.find_by_key(key).await?
        {
            return self.replay(existing, &checkout.user_id, key).await;
        }

        let prepared = self.prepare(&checkout, deadline).await?;
        let order_id = Uuid::now_v7();
        tracing::Span::current().record("order_id", tracing::field::display(order_id));
        let order = NewOrder {
            order_id,
            user_id: checkout.user_id.clone(),
            user_email: checkout.email.clone(),
            user_currency: checkout.user_currency.clone(),
            card_last4: Some(checkout.card_last4.clone()),
            shipping_cost: prepared.shipping_cost.clone(),
            shipping_address: wire::address_from_wire(&checkout.address),
            items: prepared.items.clone(),
            total: prepared.total.clone(),
            idempotency_key: key.clone(),
        };

        let persisted = match self.save_pending(&order).await? {
            Saved::Yes => true,
            Saved::No => false,
            Saved::Duplicate => {
                let (Some(key), Some(store)) = (&key, &self.store) else {
                    return Err(Status::internal(
                        "duplicate order without an idempotency key",
                    ));
                };
                let existing = store
                    .get_by_idempotency_key(key)
                    .await
                    .map_err(|e| self.store_failed(e))?
                    .ok_or_else(|| Status::internal("idempotent order vanished"))?;
                return self.replay(existing, &checkout.user_id, key).await;
            }
        };

        let transaction_id = match self
            .downstream
            .charge((&prepared.total).into(), checkout.card.clone(), deadline)
            .await
        {
            Ok(id) => id,
            Err(error) => {
                // Any charge error is a refusal; its message never holds the number.
                let reason = error.status.message().to_owned();
                tracing::warn!(%order_id, %reason, "payment refused");
                if persisted {
                    self.record(
                        order_id,
                        Outcome::Declined {
                            reason: reason.clone(),
                        },
                    )
                    .await;
                }
                return Err(charge_failed(&reason));
            }
        };

        let tracking_id = match self
            .downstream
            .ship_order(&checkout.address, &prepared.cart, deadline)
            .await
        {
            Ok(id) => id,
            Err(error) => {
                let reason = error.to_string();
                tracing::error!(%order_id, %transaction_id, %reason, "charged but not shipped");
                if persisted {
                    self.record(
                        order_id,
                        Outcome::ShippingFailed {
                            transaction_id,
                            reason: reason.clone(),
                        },
                    )
                    .await;
                }
                return Err(shipping_failed(&reason));
            }
        };

        let completed = Outcome::Completed {
            transaction_id: transaction_id.clone(),
            tracking_id: tracking_id.clone(),
        };
        let (emptied, recorded) = tokio::join!(
            self.downstream.empty_cart(&checkout.user_id, deadline),
            async {
                if persisted {
                    self.finish_with_retry(order_id, &completed).await.map(Some)
                } else {
                    Ok(None)
                }
            }
        );
        if let Err(error) = emptied {
            tracing::warn!(%order_id, %error, "failed to empty user cart during checkout");
        }
        match recorded {
            Ok(Some(())) => tracing::info!("order {order_id} saved to database successfully"),
            Ok(None) => {}
            Err(error) if self.persistence == Persistence::Required => {
                // The money moved: say so instead of claiming success
                // without a durable record.
                tracing::error!(%order_id, %transaction_id, %tracking_id, %error,
                    "order charged and shipped but its completion could not be recorded");
                return Err(Status::unavailable(format!(
                    "order {order_id} was charged (transaction {transaction_id}) and shipped \
                     (tracking {tracking_id}) but could not be recorded: {error}"
                )));
            }
            Err(error) => {
                tracing::error!(%order_id, %transaction_id, %tracking_id, %error,
                    "failed to record the completed order (persistence best_effort)");
            }
        }

        let result = wire::order_result(
            order_id,
            &tracking_id,
            &prepared.shipping_cost,
            &order.shipping_address,
            &prepared.items,
        );
        if let Err(error) = self
            .downstream
            .send_confirmation(&checkout.email, result.clone(), deadline)
            .await
        {
            tracing::warn!(%order_id, %error, "failed to send order confirmation");
        }
        tracing::info!(%order_id, total = %prepared.total, "order placed");
        Ok(PlaceOrderResponse {
            order: Some(result),
        })
    }

    /// Step 2: everything priced in the user's currency.
    async fn prepare(
        &self,
        checkout: &Checkout,
        deadline: Option<Instant>,
    ) -> Result<Prepared, Status> {
        let currency = checkout.user_currency.as_str();
        let (supported, cart) = tokio::try_join!(
            self.downstream.supported_currencies(deadline),
            self.downstream.get_cart(&checkout.user_id, deadline),
        )
        .map_err(prepare_failed)?;
        // The currency service answers an unsupported currency with zero,
        // which would charge nothing: refuse it here.
        if !supported.contains(currency) {
            return Err(Status::invalid_argument(format!(
                "user_currency {currency} is not supported by the currency service"
            )));
        }
        if cart.items.is_empty() {
            return Err(Status::failed_precondition(format!(
                "the cart of user {} is empty",
                checkout.user_id
            )));
        }
        if let Some(bad) = cart.items.iter().find(|item| item.quantity <= 0) {
            return Err(Status::failed_precondition(format!(
                "cart item {} has quantity {}; quantities must be positive",
                bad.product_id, bad.quantity
            )));
        }

        let items = stream::iter(cart.items.clone())
            .map(|item| async move { self.price_item(&item, currency, deadline).await })
            .buffered(self.lookup_concurrency)
            .try_collect::<Vec<LineItem>>();
        let shipping = async {
            let quote = self
                .downstream
                .get_quote(&checkout.address, &cart.items, deadline)
                .await
                .map_err(prepare_failed)?;
            self.to_user_currency(quote, currency, "the shipping quote", deadline)
                .await
        };
        let (items, shipping_cost) = tokio::try_join!(items, shipping)?;

        let mut total = shipping_cost.clone();
        for item in &items {
            total = item
                .unit_cost
                .checked_mul(item.quantity)
                .and_then(|line| total.checked_add(&line))
                .map_err(|e| {
                    Status::out_of_range(format!("the order total cannot be computed: {e}"))
                })?;
        }
        Ok(Prepared {
            cart: cart.items,
            items,
            shipping_cost,
            total,
        })
    }

    async fn price_item(
        &self,
        item: &CartItem,
        currency: &str,
        deadline: Option<Instant>,
    ) -> Result<LineItem, Status> {
        let product = self
            .downstream
            .get_product(&item.product_id, deadline)
            .await
            .map_err(|e| {
                if e.is_not_found() {
                    Status::failed_precondition(format!(
                        "product {} in the cart is not in the catalog",
                        item.product_id
                    ))
                } else {
                    prepare_failed(e)
                }
            })?;
        let price = product.price_usd.ok_or_else(|| {
            Status::internal(format!(
                "the catalog has no price for product {}",
                item.product_id
            ))
        })?;
        let what = format!("the price of product {}", item.product_id);
        Ok(LineItem {
            product_id: item.product_id.clone(),
            // Checked positive in `prepare`.
            quantity: u32::try_from(item.quantity).unwrap_or(0),
            unit_cost: self
                .to_user_currency(price, currency, &what, deadline)
                .await?,
        })
    }

    /// Validates money from a peer and converts it (identity conversions are
    /// skipped: the currency service returns them one nano short).
    async fn to_user_currency(
        &self,
        amount: hipstershop::Money,
        currency: &str,
        what: &str,
        deadline: Option<Instant>,
    ) -> Result<Money, Status> {
        let amount = Money::try_from(&amount)
            .map_err(|e| Status::internal(format!("{what} is not valid money: {e}")))?;
        if amount.currency_code == currency {
            return Ok(amount);
        }
        let converted = self
            .downstream
            .convert((&amount).into(), currency, deadline)
            .await
            .map_err(prepare_failed)?;
        let converted = Money::try_from(&converted).map_err(|e| {
            Status::internal(format!(
                "the currency service converted {what} to invalid money: {e}"
            ))
        })?;
        if converted.currency_code != currency {
            return Err(Status::internal(format!(
                "the currency service converted {what} to {} instead of {currency}",
                converted.currency_code
            )));
        }
        Ok(converted)
    }

    /// The order an idempotency key already names, if any. In `best_effort`
    /// mode a database failure only means the key cannot be honoured.
    async fn find_by_key(&self, key: &str) -> Result<Option<store::Order>, Status> {
        let Some(store) = &self.store else {
            return Ok(None);
        };
        match store.get_by_idempotency_key(key).await {
            Ok(found) => Ok(found),
            Err(error) if self.persistence == Persistence::BestEffort => {
                tracing::warn!(%error, "cannot look up the idempotency key (persistence best_effort)");
                Ok(None)
            }
            Err(error) => Err(self.store_failed(error)),
        }
    }

    /// Step 3, per persistence mode.
    async fn save_pending(&self, order: &NewOrder) -> Result<Saved, Status> {
        let Some(store) = &self.store else {
            return Ok(Saved::No);
        };
        match store.create_pending(order).await {
            Ok(Created::New) => Ok(Saved::Yes),
            Ok(Created::Duplicate) => Ok(Saved::Duplicate),
            Err(error) if self.persistence == Persistence::BestEffort => {
                tracing::error!(order_id = %order.order_id, %error,
                    "failed to save order to database; placing it anyway (persistence best_effort)");
                self.health.database_failed();
                Ok(Saved::No)
            }
            Err(error) => Err(self.store_failed(error)),
        }
    }

    /// Records how a pending order ended; failures are logged (the caller
    /// already has its answer, and the row stays `pending` for reconciliation).
    async fn record(&self, order_id: Uuid, outcome: Outcome) {
        if let Err(error) = self.finish_with_retry(order_id, &outcome).await {
            tracing::error!(%order_id, ?outcome, %error, "failed to record the order's outcome");
        }
    }

    async fn finish_with_retry(&self, order_id: Uuid, outcome: &Outcome) -> Result<(), StoreError> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        let mut attempt = 1;
        loop {
            match store.finish(order_id, outcome).await {
                Err(error) if error.is_unavailable() && attempt < FINISH_ATTEMPTS => {
                    tracing::warn!(%order_id, %error, attempt, "retrying the order's final write");
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Answers a repeated request from the first one's record.
    async fn replay(
        &self,
        mut order: store::Order,
        user_id: &str,
        key: &str,
    ) -> Result<PlaceOrderResponse, Status> {
        if order.user_id != user_id {
            return Err(Status::failed_precondition(
                "this idempotency-key was already used for another user's order",
            ));
        }
        let Some(store) = &self.store else {
            return Err(Status::internal("replay without a store"));
        };
        let waited = Instant::now();
        while matches!(
            order.status,
            OrderStatus::Pending | OrderStatus::Paid | OrderStatus::Shipped
        ) {
            if waited.elapsed() >= self.idempotency_wait {
                return Err(Status::aborted(format!(
                    "order {} with this idempotency-key is still in progress; retry later",
                    order.order_id
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            order = store
                .get_by_idempotency_key(key)
                .await
                .map_err(|e| self.store_failed(e))?
                .ok_or_else(|| Status::internal("idempotent order vanished"))?;
        }
        tracing::info!(order_id = %order.order_id, status = %order.status, "answered a repeated request from its record");
        if order.status == OrderStatus::Failed {
            let reason = order.failure_reason.as_deref().unwrap_or("unknown");
            return Err(if order.payment_transaction_id.is_some() {
                shipping_failed(reason)
            } else {
                charge_failed(reason)
            });
        }
        Ok(PlaceOrderResponse {
            order: Some(wire::order_result(
                order.order_id,
                order.shipping_tracking_id.as_deref().unwrap_or_default(),
                &order.shipping_cost,
                &order.shipping_address,
                &order.items,
            )),
        })
    }

    fn store_failed(&self, error: StoreError) -> Status {
        if error.is_unavailable() {
            self.health.database_failed();
            tracing::error!(%error, "order database unavailable; refusing the order, nothing was charged");
            Status::unavailable(format!(
                "order database unavailable, nothing was charged: {error}"
            ))
        } else {
            tracing::error!(%error, "order database error; nothing was charged");
            Status::internal(format!(
                "order database error, nothing was charged: {error}"
            ))
        }
    }
}

enum Saved {
    Yes,
    No,
    Duplicate,
}

#[tonic::async_trait]
impl CheckoutService for PlaceOrder {
    async fn place_order(
        &self,
        request: Request<PlaceOrderRequest>,
    ) -> Result<Response<PlaceOrderResponse>, Status> {
        let span = tracing::info_span!(
            "hipstershop.CheckoutService/PlaceOrder",
            otel.kind = "server",
            rpc.system = "grpc",
            order_id = tracing::field::Empty,
            user_id = tracing::field::Empty,
        );
        propagation::adopt_remote_parent(&span, request.metadata());
        let deadline = propagation::deadline(request.metadata());
        let key = idempotency_key(request.metadata())?;
        let result = self
            .place(request.into_inner(), key, deadline)
            .instrument(span.clone())
            .await;
        if let Err(status) = &result {
            span.in_scope(|| tracing::warn!(code = ?status.code(), message = status.message(), "PlaceOrder failed"));
        }
        result.map(Response::new)
    }
}

fn idempotency_key(metadata: &MetadataMap) -> Result<Option<String>, Status> {
    let Some(value) = metadata.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .map_err(|_| Status::invalid_argument("idempotency-key must be printable ASCII"))?;
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY {
        return Err(Status::invalid_argument(format!(
            "idempotency-key must be 1 to {MAX_IDEMPOTENCY_KEY} characters"
        )));
    }
    Ok(Some(key.to_owned()))
}

/// Step 1: every field the order needs, or INVALID_ARGUMENT naming the first
/// one that is wrong. Never echoes card data.
fn validate(request: PlaceOrderRequest) -> Result<Checkout, Status> {
    let invalid = |message: String| Err(Status::invalid_argument(message));
    if request.user_id.trim().is_empty() {
        return invalid("user_id is empty".into());
    }
    let currency = &request.user_currency;
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return invalid(format!(
            "user_currency must be a three-letter ISO 4217 code such as USD, got {currency:?}"
        ));
    }
    if !is_plausible_email(&request.email) {
        return invalid("email is not a valid e-mail address".into());
    }
    let Some(address) = request.address else {
        return invalid("address is missing".into());
    };
    for (field, value) in [
        ("address.street_address", &address.street_address),
        ("address.city", &address.city),
        ("address.country", &address.country),
    ] {
        if value.trim().is_empty() {
            return invalid(format!("{field} is empty"));
        }
    }
    if address.zip_code <= 0 {
        return invalid("address.zip_code must be a positive number".into());
    }
    let Some(card) = request.credit_card else {
        return invalid("credit_card is missing".into());
    };
    let digits: String = card
        .credit_card_number
        .chars()
        .filter(|c| !matches!(c, ' ' | '-'))
        .collect();
    if !(12..=19).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return invalid("credit_card.credit_card_number must be 12 to 19 digits".into());
    }
    if !(1..=12).contains(&card.credit_card_expiration_month) {
        return invalid("credit_card.credit_card_expiration_month must be 1 to 12".into());
    }
    if card.credit_card_expiration_year <= 0 {
        return invalid("credit_card.credit_card_expiration_year is missing".into());
    }
    if card.credit_card_cvv <= 0 {
        return invalid("credit_card.credit_card_cvv is missing".into());
    }
    let card_last4 = digits[digits.len() - 4..].to_owned();
    Ok(Checkout {
        user_id: request.user_id,
        user_currency: request.user_currency,
        email: request.email,
        address,
        card,
        card_last4,
    })
}

fn is_plausible_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    email.len() <= 254
        && !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains('@')
        && !email.chars().any(char::is_whitespace)
}

/// Upstream's status for a failure while preparing the order.
fn prepare_failed(error: CallError) -> Status {
    Status::internal(format!("failed to prepare order: {error}"))
}

/// Upstream's status for a refused charge.
fn charge_failed(reason: &str) -> Status {
    Status::internal(format!("failed to charge card: {reason}"))
}

/// Upstream's status for a failed shipment.
fn shipping_failed(reason: &str) -> Status {
    Status::unavailable(format!("shipping error: {reason}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plausible_emails() {
        for good in ["someone@example.com", "a.b+c@shop.example.co.uk"] {
            assert!(is_plausible_email(good), "{good}");
        }
        for bad in [
            "",
            "someone",
            "@example.com",
            "a@b",
            "a@.com",
            "a@com.",
            "a b@c.d",
            "a@b@c.d",
        ] {
            assert!(!is_plausible_email(bad), "{bad}");
        }
    }
}
