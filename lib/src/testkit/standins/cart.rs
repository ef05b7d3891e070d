//! Cart: one cart per user in memory, like upstream's cart service with its
//! in-memory store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tonic::{Request, Response, Status};

use super::Rpc;
use super::control::{Control, lock};
use crate::proto::hipstershop::cart_service_server::{CartService, CartServiceServer};
use crate::proto::hipstershop::{
    AddItemRequest, Cart, CartItem, Empty, EmptyCartRequest, GetCartRequest,
};

/// The cart stand-in: fill carts directly for tests, see which were emptied.
#[derive(Debug, Clone, Default)]
pub struct CartStandIn {
    state: Arc<State>,
}

#[derive(Debug, Default)]
struct State {
    carts: Mutex<HashMap<String, Vec<CartItem>>>,
    /// User ids of EmptyCart calls, in order.
    emptied: Mutex<Vec<String>>,
}

impl CartStandIn {
    /// Adds `quantity` of `product_id` to `user_id`'s cart, as AddItem does.
    ///
    /// Like upstream, nothing is validated: a quantity of 0 or an unknown
    /// product lands in the cart, so tests can hand checkout such carts.
    pub fn add(&self, user_id: &str, product_id: &str, quantity: i32) {
        self.state.add(user_id, product_id, quantity);
    }

    /// The items in `user_id`'s cart (empty for an unknown user).
    pub fn items(&self, user_id: &str) -> Vec<CartItem> {
        lock(&self.state.carts)
            .get(user_id)
            .cloned()
            .unwrap_or_default()
    }

    /// The user ids EmptyCart was called for, in call order.
    pub fn emptied(&self) -> Vec<String> {
        lock(&self.state.emptied).clone()
    }

    pub(super) fn server(&self, control: Arc<Control>) -> CartServiceServer<CartServer> {
        CartServiceServer::new(CartServer {
            state: Arc::clone(&self.state),
            control,
        })
    }
}

impl State {
    fn add(&self, user_id: &str, product_id: &str, quantity: i32) {
        let mut carts = lock(&self.carts);
        let items = carts.entry(user_id.to_owned()).or_default();
        // Upstream adds to the line of the same product rather than adding a second line.
        match items.iter_mut().find(|item| item.product_id == product_id) {
            Some(item) => item.quantity = item.quantity.saturating_add(quantity),
            None => items.push(CartItem {
                product_id: product_id.to_owned(),
                quantity,
            }),
        }
    }
}

/// The gRPC face of [`CartStandIn`].
#[derive(Debug)]
pub(super) struct CartServer {
    state: Arc<State>,
    control: Arc<Control>,
}

#[tonic::async_trait]
impl CartService for CartServer {
    async fn add_item(&self, request: Request<AddItemRequest>) -> Result<Response<Empty>, Status> {
        self.control.enter(Rpc::AddItem, request.metadata()).await?;
        let request = request.into_inner();
        let item = request.item.unwrap_or_default();
        self.state
            .add(&request.user_id, &item.product_id, item.quantity);
        Ok(Response::new(Empty {}))
    }

    async fn get_cart(&self, request: Request<GetCartRequest>) -> Result<Response<Cart>, Status> {
        self.control.enter(Rpc::GetCart, request.metadata()).await?;
        let user_id = request.into_inner().user_id;
        let items = lock(&self.state.carts)
            .get(&user_id)
            .cloned()
            .unwrap_or_default();
        Ok(Response::new(Cart { user_id, items }))
    }

    async fn empty_cart(
        &self,
        request: Request<EmptyCartRequest>,
    ) -> Result<Response<Empty>, Status> {
        self.control
            .enter(Rpc::EmptyCart, request.metadata())
            .await?;
        let user_id = request.into_inner().user_id;
        lock(&self.state.carts).remove(&user_id);
        lock(&self.state.emptied).push(user_id);
        Ok(Response::new(Empty {}))
    }
}
