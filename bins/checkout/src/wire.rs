//! Stored orders to wire messages and back.

use orders::money::Money;
use orders::proto::boutique::orders::v1 as history;
use orders::proto::hipstershop;
use orders::store::{self, LineItem, OrderStatus};
use uuid::Uuid;

/// A wire address as stored.
pub fn address_from_wire(address: &hipstershop::Address) -> store::Address {
    store::Address {
        street_address: address.street_address.clone(),
        city: address.city.clone(),
        state: address.state.clone(),
        country: address.country.clone(),
        zip_code: address.zip_code,
    }
}

/// A stored address on the wire.
pub fn address_to_wire(address: &store::Address) -> hipstershop::Address {
    hipstershop::Address {
        street_address: address.street_address.clone(),
        city: address.city.clone(),
        state: address.state.clone(),
        country: address.country.clone(),
        zip_code: address.zip_code,
    }
}

/// Order lines as `OrderItem`s (cart item plus unit cost).
pub fn items_to_wire(items: &[LineItem]) -> Vec<hipstershop::OrderItem> {
    items
        .iter()
        .map(|item| hipstershop::OrderItem {
            item: Some(hipstershop::CartItem {
                product_id: item.product_id.clone(),
                // Quantities come from positive int32 cart quantities.
                quantity: i32::try_from(item.quantity).unwrap_or(i32::MAX),
            }),
            cost: Some(hipstershop::Money::from(&item.unit_cost)),
        })
        .collect()
}

/// The `OrderResult` PlaceOrder answers with.
pub fn order_result(
    order_id: Uuid,
    tracking_id: &str,
    shipping_cost: &Money,
    address: &store::Address,
    items: &[LineItem],
) -> hipstershop::OrderResult {
    hipstershop::OrderResult {
        order_id: order_id.to_string(),
        shipping_tracking_id: tracking_id.to_owned(),
        shipping_cost: Some(shipping_cost.into()),
        shipping_address: Some(address_to_wire(address)),
        items: items_to_wire(items),
    }
}

/// A stored order as the history API shows it.
pub fn order_to_wire(order: &store::Order) -> history::Order {
    let status = match order.status {
        OrderStatus::Pending => history::OrderStatus::Pending,
        OrderStatus::Paid => history::OrderStatus::Paid,
        OrderStatus::Shipped => history::OrderStatus::Shipped,
        OrderStatus::Completed => history::OrderStatus::Completed,
        OrderStatus::Failed => history::OrderStatus::Failed,
    };
    history::Order {
        order_id: order.order_id.to_string(),
        user_id: order.user_id.clone(),
        user_email: order.user_email.clone(),
        user_currency: order.user_currency.clone(),
        status: status as i32,
        failure_reason: order.failure_reason.clone().unwrap_or_default(),
        payment_transaction_id: order.payment_transaction_id.clone().unwrap_or_default(),
        card_last4: order.card_last4.clone().unwrap_or_default(),
        shipping_tracking_id: order.shipping_tracking_id.clone().unwrap_or_default(),
        shipping_cost: Some((&order.shipping_cost).into()),
        shipping_address: Some(address_to_wire(&order.shipping_address)),
        items: items_to_wire(&order.items),
        total: Some((&order.total).into()),
        created_at: Some(timestamp(order.created_at)),
        updated_at: Some(timestamp(order.updated_at)),
    }
}

fn timestamp(at: time::OffsetDateTime) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.unix_timestamp(),
        // Always 0..1e9, so the conversion cannot fail.
        nanos: i32::try_from(at.nanosecond()).unwrap_or(0),
    }
}
