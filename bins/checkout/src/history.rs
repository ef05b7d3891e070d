//! `boutique.orders.v1.OrderHistory`: one order by id, or a user's orders
//! newest first in pages. Page tokens are opaque keyset cursors (the last
//! order's `created_at` and id), so deep pages cost what the first does.

use orders::config::CheckoutSettings;
use orders::proto::boutique::orders::v1::{
    GetOrderRequest, ListOrdersRequest, ListOrdersResponse, Order,
    order_history_server::OrderHistory,
};
use orders::store::{Cursor, Store, StoreError};
use tonic::{Request, Response, Status};
use tracing::Instrument as _;
use uuid::Uuid;

use crate::{propagation, wire};

/// The order-history service; `store` is `None` when persistence is off.
pub struct History {
    store: Option<Store>,
    default_page_size: u32,
    max_page_size: u32,
}

impl History {
    /// The service over `store`.
    pub fn new(settings: &CheckoutSettings, store: Option<Store>) -> Self {
        let max_page_size = settings.history_max_page_size.max(1);
        Self {
            store,
            default_page_size: settings.history_page_size.clamp(1, max_page_size),
            max_page_size,
        }
    }

    fn store(&self) -> Result<&Store, Status> {
        self.store.as_ref().ok_or_else(|| {
            Status::failed_precondition("order history is off (checkout.persistence = off)")
        })
    }
}

#[tonic::async_trait]
impl OrderHistory for History {
    async fn get_order(
        &self,
        request: Request<GetOrderRequest>,
    ) -> Result<Response<Order>, Status> {
        let span = tracing::info_span!(
            "boutique.orders.v1.OrderHistory/GetOrder",
            otel.kind = "server",
            rpc.system = "grpc"
        );
        propagation::adopt_remote_parent(&span, request.metadata());
        async {
            let id = &request.get_ref().order_id;
            let order_id = Uuid::parse_str(id)
                .map_err(|_| Status::invalid_argument(format!("order_id {id:?} is not a UUID")))?;
            let order = self
                .store()?
                .get(order_id)
                .await
                .map_err(store_failed)?
                .ok_or_else(|| Status::not_found(format!("order {order_id} not found")))?;
            Ok(Response::new(wire::order_to_wire(&order)))
        }
        .instrument(span)
        .await
    }

    async fn list_orders(
        &self,
        request: Request<ListOrdersRequest>,
    ) -> Result<Response<ListOrdersResponse>, Status> {
        let span = tracing::info_span!(
            "boutique.orders.v1.OrderHistory/ListOrders",
            otel.kind = "server",
            rpc.system = "grpc"
        );
        propagation::adopt_remote_parent(&span, request.metadata());
        async {
            let request = request.into_inner();
            if request.user_id.is_empty() {
                return Err(Status::invalid_argument("user_id is empty"));
            }
            let page_size = match request.page_size {
                0 => self.default_page_size,
                n if n < 0 => {
                    return Err(Status::invalid_argument("page_size must not be negative"));
                }
                n => u32::try_from(n).unwrap_or(u32::MAX).min(self.max_page_size),
            };
            let cursor = match request.page_token.as_str() {
                "" => None,
                token => Some(
                    decode_token(token)
                        .ok_or_else(|| Status::invalid_argument("page_token is not valid"))?,
                ),
            };
            // One extra row tells whether another page follows.
            let mut orders = self
                .store()?
                .list_for_user(&request.user_id, page_size + 1, cursor)
                .await
                .map_err(store_failed)?;
            let more = orders.len() > page_size as usize;
            orders.truncate(page_size as usize);
            let next_page_token = match orders.last() {
                Some(last) if more => encode_token(&Cursor {
                    created_at: last.created_at,
                    order_id: last.order_id,
                }),
                _ => String::new(),
            };
            Ok(Response::new(ListOrdersResponse {
                orders: orders.iter().map(wire::order_to_wire).collect(),
                next_page_token,
            }))
        }
        .instrument(span)
        .await
    }
}

fn store_failed(error: StoreError) -> Status {
    if error.is_unavailable() {
        Status::unavailable(format!("order database unavailable: {error}"))
    } else {
        Status::internal(format!("order database error: {error}"))
    }
}

/// Token format version; bump when the layout changes.
const TOKEN_VERSION: u8 = 1;

/// `version ‖ created_at (µs since the epoch, big-endian) ‖ order id`, hex.
fn encode_token(cursor: &Cursor) -> String {
    let micros = i64::try_from(cursor.created_at.unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX);
    let mut bytes = Vec::with_capacity(25);
    bytes.push(TOKEN_VERSION);
    bytes.extend_from_slice(&micros.to_be_bytes());
    bytes.extend_from_slice(cursor.order_id.as_bytes());
    hex::encode(bytes)
}

fn decode_token(token: &str) -> Option<Cursor> {
    let bytes = hex::decode(token).ok()?;
    let (&version, rest) = bytes.split_first()?;
    if version != TOKEN_VERSION || rest.len() != 24 {
        return None;
    }
    let micros = i64::from_be_bytes(rest[..8].try_into().ok()?);
    let created_at =
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000).ok()?;
    let order_id = Uuid::from_slice(&rest[8..]).ok()?;
    Some(Cursor {
        created_at,
        order_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_reject_garbage() {
        let cursor = Cursor {
            created_at: time::OffsetDateTime::from_unix_timestamp_nanos(1_764_000_000_123_456_000)
                .unwrap(),
            order_id: Uuid::now_v7(),
        };
        assert_eq!(decode_token(&encode_token(&cursor)), Some(cursor));
        for bad in [
            "",
            "zz",
            "00",
            &encode_token(&cursor)[2..],
            &format!("02{}", &encode_token(&cursor)[2..]),
        ] {
            assert_eq!(decode_token(bad), None, "{bad}");
        }
    }
}
