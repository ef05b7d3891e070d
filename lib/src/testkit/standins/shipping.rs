//! Shipping: a flat 8.99 USD quote for any non-empty cart, 0 for an empty
//! one, and a random tracking id per shipment, as upstream.

use std::sync::{Arc, Mutex};

use tonic::{Request, Response, Status};

use super::Rpc;
use super::control::{Control, lock};
use crate::proto::hipstershop::shipping_service_server::{ShippingService, ShippingServiceServer};
use crate::proto::hipstershop::{
    Address, CartItem, GetQuoteRequest, GetQuoteResponse, Money, ShipOrderRequest,
    ShipOrderResponse,
};

/// One ShipOrder call that succeeded.
#[derive(Debug, Clone, PartialEq)]
pub struct Shipment {
    /// The address asked for.
    pub address: Option<Address>,
    /// The items asked for.
    pub items: Vec<CartItem>,
    /// The tracking id answered.
    pub tracking_id: String,
}

/// The shipping stand-in: read the shipments, override the quote.
#[derive(Debug, Clone, Default)]
pub struct ShippingStandIn {
    state: Arc<State>,
}

#[derive(Debug, Default)]
struct State {
    /// When set, every GetQuote answers this cost.
    quote: Mutex<Option<Money>>,
    shipments: Mutex<Vec<Shipment>>,
}

impl ShippingStandIn {
    /// Every successful ShipOrder, in order.
    pub fn shipments(&self) -> Vec<Shipment> {
        lock(&self.state.shipments).clone()
    }

    /// Makes every GetQuote answer `cost_usd` (any value, invalid ones
    /// included); `None` goes back to the flat rate.
    pub fn quote_with(&self, cost_usd: Option<Money>) {
        *lock(&self.state.quote) = cost_usd;
    }

    pub(super) fn server(&self, control: Arc<Control>) -> ShippingServiceServer<ShippingServer> {
        ShippingServiceServer::new(ShippingServer {
            state: Arc::clone(&self.state),
            control,
        })
    }
}

/// Upstream's quote: it depends only on how many items there are.
fn quote(items: &[CartItem]) -> Money {
    let count: i64 = items.iter().map(|item| i64::from(item.quantity)).sum();
    let (units, nanos) = if count > 0 { (8, 990_000_000) } else { (0, 0) };
    Money {
        currency_code: "USD".to_owned(),
        units,
        nanos,
    }
}

/// A tracking id shaped like upstream's, e.g. `AB-12345-67890123`.
fn tracking_id() -> String {
    // A v4 UUID carries 122 random bits, plenty for 2 letters and 13 digits.
    let mut random = uuid::Uuid::new_v4().as_u128();
    let mut letter = || {
        // `random % 26` is below 26, so the addition stays in 'A'..='Z'.
        let c = char::from(b'A' + (random % 26) as u8);
        random /= 26;
        c
    };
    let (first, second) = (letter(), letter());
    let short = random % 100_000;
    let long = (random / 100_000) % 100_000_000;
    format!("{first}{second}-{short:05}-{long:08}")
}

/// The gRPC face of [`ShippingStandIn`].
#[derive(Debug)]
pub(super) struct ShippingServer {
    state: Arc<State>,
    control: Arc<Control>,
}

#[tonic::async_trait]
impl ShippingService for ShippingServer {
    async fn get_quote(
        &self,
        request: Request<GetQuoteRequest>,
    ) -> Result<Response<GetQuoteResponse>, Status> {
        self.control
            .enter(Rpc::GetQuote, request.metadata())
            .await?;
        let cost_usd = lock(&self.state.quote)
            .clone()
            .unwrap_or_else(|| quote(&request.into_inner().items));
        Ok(Response::new(GetQuoteResponse {
            cost_usd: Some(cost_usd),
        }))
    }

    async fn ship_order(
        &self,
        request: Request<ShipOrderRequest>,
    ) -> Result<Response<ShipOrderResponse>, Status> {
        self.control
            .enter(Rpc::ShipOrder, request.metadata())
            .await?;
        let request = request.into_inner();
        let tracking_id = tracking_id();
        lock(&self.state.shipments).push(Shipment {
            address: request.address,
            items: request.items,
            tracking_id: tracking_id.clone(),
        });
        Ok(Response::new(ShipOrderResponse { tracking_id }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracking_ids_look_like_upstream() {
        for _ in 0..100 {
            let id = tracking_id();
            let parts: Vec<&str> = id.split('-').collect();
            assert_eq!(parts.len(), 3, "{id}");
            assert!(parts[0].len() == 2 && parts[0].chars().all(|c| c.is_ascii_uppercase()));
            assert!(parts[1].len() == 5 && parts[1].chars().all(|c| c.is_ascii_digit()));
            assert!(parts[2].len() == 8 && parts[2].chars().all(|c| c.is_ascii_digit()));
        }
    }
}
