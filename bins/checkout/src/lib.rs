//! The checkout service: Online Boutique's `hipstershop.CheckoutService`
//! with durable order records, plus `boutique.orders.v1.OrderHistory`,
//! `grpc.health.v1.Health` and server reflection, all on one port.
//!
//! - [`place_order`]: PlaceOrder, step by step;
//! - [`history`]: GetOrder and ListOrders;
//! - [`health`]: honest serving status;
//! - [`downstream`]: the six services checkout calls;
//! - [`server`]: wiring and graceful shutdown.

pub mod downstream;
pub mod health;
pub mod history;
pub mod place_order;
mod propagation;
pub mod server;
mod wire;
