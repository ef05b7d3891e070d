//! In-process stand-ins for the six services checkout calls.
//!
//! Each stand-in is a tonic server speaking the real `hipstershop` protocol
//! and behaving in the spirit of the upstream service (CONTRACT.md, "The real
//! peers"): the catalog knows `OLJCESPC7Z` (19.99 USD) and `66VCHSJNUP`
//! (34.99 USD), currency converts through EUR with a fixed rate table and
//! answers unsupported currencies with zero, shipping quotes 8.99 USD,
//! payment takes only valid, unexpired Visa and MasterCard cards and refuses
//! others with the non-standard status 400, email only records.
//!
//! Tests start them with [`Downstream::start`], hand [`Downstream::addrs`] to
//! checkout, then steer them (fail, slow down, decline, send invalid money)
//! and read what each was asked:
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use orders::testkit::standins::{Downstream, Rpc, Service};
//!
//! let downstream = Downstream::start().await?;
//! let env = downstream.addrs(); // {"CART_SERVICE_ADDR": "127.0.0.1:41234", ...}
//! downstream.fail(Rpc::ShipOrder, tonic::Code::Unavailable);
//! downstream.set_latency(Service::Currency, std::time::Duration::from_millis(50));
//! downstream.payment.decline_all(true);
//! // ... place an order ...
//! assert!(downstream.payment.charges().is_empty());
//! # Ok(()) }
//! ```
//!
//! [`Downstream::start_on`] serves them on fixed addresses instead, for a
//! demo that runs them as a process of their own.

mod cart;
mod catalog;
mod control;
mod currency;
mod email;
mod payment;
mod shipping;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::Code;
use tonic::transport::Server;
use tonic::transport::server::{Router, TcpIncoming};

pub use cart::CartStandIn;
pub use catalog::CatalogStandIn;
pub use currency::{CurrencyStandIn, EUR_RATES};
pub use email::EmailStandIn;
pub use payment::{Charge, PaymentStandIn, REFUSAL_CODE, Refusal};
pub use shipping::{Shipment, ShippingStandIn};

use control::Control;

/// One of the six downstream services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Service {
    /// `hipstershop.CartService`.
    Cart,
    /// `hipstershop.ProductCatalogService`.
    ProductCatalog,
    /// `hipstershop.CurrencyService`.
    Currency,
    /// `hipstershop.ShippingService`.
    Shipping,
    /// `hipstershop.PaymentService`.
    Payment,
    /// `hipstershop.EmailService`.
    Email,
}

impl Service {
    /// All six, in a fixed order.
    pub const ALL: [Service; 6] = [
        Service::Cart,
        Service::ProductCatalog,
        Service::Currency,
        Service::Shipping,
        Service::Payment,
        Service::Email,
    ];

    /// The Online Boutique variable that holds this service's `host:port`.
    pub fn env_var(self) -> &'static str {
        match self {
            Service::Cart => "CART_SERVICE_ADDR",
            Service::ProductCatalog => "PRODUCT_CATALOG_SERVICE_ADDR",
            Service::Currency => "CURRENCY_SERVICE_ADDR",
            Service::Shipping => "SHIPPING_SERVICE_ADDR",
            Service::Payment => "PAYMENT_SERVICE_ADDR",
            Service::Email => "EMAIL_SERVICE_ADDR",
        }
    }

    /// The fully qualified gRPC service name, e.g. `hipstershop.CartService`.
    pub fn grpc_name(self) -> &'static str {
        match self {
            Service::Cart => "hipstershop.CartService",
            Service::ProductCatalog => "hipstershop.ProductCatalogService",
            Service::Currency => "hipstershop.CurrencyService",
            Service::Shipping => "hipstershop.ShippingService",
            Service::Payment => "hipstershop.PaymentService",
            Service::Email => "hipstershop.EmailService",
        }
    }

    /// The methods of this service.
    pub fn rpcs(self) -> &'static [Rpc] {
        match self {
            Service::Cart => &[Rpc::AddItem, Rpc::GetCart, Rpc::EmptyCart],
            Service::ProductCatalog => &[Rpc::ListProducts, Rpc::GetProduct, Rpc::SearchProducts],
            Service::Currency => &[Rpc::GetSupportedCurrencies, Rpc::Convert],
            Service::Shipping => &[Rpc::GetQuote, Rpc::ShipOrder],
            Service::Payment => &[Rpc::Charge],
            Service::Email => &[Rpc::SendOrderConfirmation],
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.grpc_name())
    }
}

/// One method of a downstream service, for faults aimed at a single call
/// (e.g. ShipOrder fails while GetQuote still works).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rpc {
    /// `CartService/AddItem`.
    AddItem,
    /// `CartService/GetCart`.
    GetCart,
    /// `CartService/EmptyCart`.
    EmptyCart,
    /// `ProductCatalogService/ListProducts`.
    ListProducts,
    /// `ProductCatalogService/GetProduct`.
    GetProduct,
    /// `ProductCatalogService/SearchProducts`.
    SearchProducts,
    /// `CurrencyService/GetSupportedCurrencies`.
    GetSupportedCurrencies,
    /// `CurrencyService/Convert`.
    Convert,
    /// `ShippingService/GetQuote`.
    GetQuote,
    /// `ShippingService/ShipOrder`.
    ShipOrder,
    /// `PaymentService/Charge`.
    Charge,
    /// `EmailService/SendOrderConfirmation`.
    SendOrderConfirmation,
}

impl Rpc {
    /// The service this method belongs to.
    pub fn service(self) -> Service {
        match self {
            Rpc::AddItem | Rpc::GetCart | Rpc::EmptyCart => Service::Cart,
            Rpc::ListProducts | Rpc::GetProduct | Rpc::SearchProducts => Service::ProductCatalog,
            Rpc::GetSupportedCurrencies | Rpc::Convert => Service::Currency,
            Rpc::GetQuote | Rpc::ShipOrder => Service::Shipping,
            Rpc::Charge => Service::Payment,
            Rpc::SendOrderConfirmation => Service::Email,
        }
    }
}

/// What a fault applies to: every method of a service, or one method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// All methods of the service.
    Service(Service),
    /// One method.
    Rpc(Rpc),
}

impl Target {
    fn rpcs(&self) -> &[Rpc] {
        match self {
            Target::Service(service) => service.rpcs(),
            Target::Rpc(rpc) => std::slice::from_ref(rpc),
        }
    }
}

impl From<Service> for Target {
    fn from(service: Service) -> Target {
        Target::Service(service)
    }
}

impl From<Rpc> for Target {
    fn from(rpc: Rpc) -> Target {
        Target::Rpc(rpc)
    }
}

/// Why the stand-ins could not start.
#[derive(Debug, thiserror::Error)]
pub enum StandinError {
    /// The listening socket could not be opened.
    #[error("cannot listen on {addr} for the {service} stand-in: {source}")]
    Bind {
        /// The service that was to listen there.
        service: Service,
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's reason.
        source: std::io::Error,
    },
}

/// The six stand-ins, each serving on its own port until this is dropped
/// (or [`Downstream::shutdown`]).
///
/// The per-service fields read and steer what only that service does; the
/// methods here (failures, latency, call counts) work on any service.
#[derive(Debug)]
pub struct Downstream {
    /// `hipstershop.CartService`.
    pub cart: CartStandIn,
    /// `hipstershop.ProductCatalogService`.
    pub catalog: CatalogStandIn,
    /// `hipstershop.CurrencyService`.
    pub currency: CurrencyStandIn,
    /// `hipstershop.ShippingService`.
    pub shipping: ShippingStandIn,
    /// `hipstershop.PaymentService`.
    pub payment: PaymentStandIn,
    /// `hipstershop.EmailService`.
    pub email: EmailStandIn,
    control: Arc<Control>,
    addrs: BTreeMap<Service, SocketAddr>,
    /// Dropping the sender (with `self`) stops every server too.
    shutdown: watch::Sender<bool>,
    servers: Vec<JoinHandle<()>>,
}

impl Downstream {
    /// Starts all six on free ports of 127.0.0.1.
    pub async fn start() -> Result<Downstream, StandinError> {
        Downstream::start_on([]).await
    }

    /// Starts all six, each listed service on the given address (e.g.
    /// `0.0.0.0:7070` for a demo process); the others on a free port of
    /// 127.0.0.1.
    pub async fn start_on(
        binds: impl IntoIterator<Item = (Service, SocketAddr)>,
    ) -> Result<Downstream, StandinError> {
        let binds: BTreeMap<Service, SocketAddr> = binds.into_iter().collect();
        let control = Arc::new(Control::default());
        let (shutdown, _) = watch::channel(false);
        let mut downstream = Downstream {
            cart: CartStandIn::default(),
            catalog: CatalogStandIn::default(),
            currency: CurrencyStandIn::default(),
            shipping: ShippingStandIn::default(),
            payment: PaymentStandIn::default(),
            email: EmailStandIn::default(),
            control,
            addrs: BTreeMap::new(),
            shutdown,
            servers: Vec::new(),
        };
        for service in Service::ALL {
            let addr = binds
                .get(&service)
                .copied()
                .unwrap_or(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
            // On an error `downstream` is dropped, which stops the servers
            // already started.
            downstream.serve(service, addr).await?;
        }
        Ok(downstream)
    }

    /// Binds `addr` and serves `service` there in a background task.
    async fn serve(&mut self, service: Service, addr: SocketAddr) -> Result<(), StandinError> {
        let control = Arc::clone(&self.control);
        let mut server = Server::builder();
        let router: Router = match service {
            Service::Cart => server.add_service(self.cart.server(control)),
            Service::ProductCatalog => server.add_service(self.catalog.server(control)),
            Service::Currency => server.add_service(self.currency.server(control)),
            Service::Shipping => server.add_service(self.shipping.server(control)),
            Service::Payment => server.add_service(self.payment.server(control)),
            Service::Email => server.add_service(self.email.server(control)),
        };
        let bind_error = |source| StandinError::Bind {
            service,
            addr,
            source,
        };
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(bind_error)?;
        let local = listener.local_addr().map_err(bind_error)?;
        let mut stop = self.shutdown.subscribe();
        let task = tokio::spawn(async move {
            let stopped = async move {
                // Err: the sender is gone, i.e. `Downstream` was dropped.
                let _ = stop.wait_for(|stop| *stop).await;
            };
            if let Err(error) = router
                .serve_with_incoming_shutdown(
                    TcpIncoming::from(listener).with_nodelay(Some(true)),
                    stopped,
                )
                .await
            {
                tracing::warn!(%service, %error, "stand-in server stopped");
            }
        });
        self.addrs.insert(service, local);
        self.servers.push(task);
        Ok(())
    }

    /// The socket `service` listens on.
    pub fn addr(&self, service: Service) -> SocketAddr {
        // Every service is inserted by `start_on` before `self` escapes.
        self.addrs
            .get(&service)
            .copied()
            .unwrap_or(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))
    }

    /// `host:port` of every service, keyed by its Online Boutique variable
    /// (`CART_SERVICE_ADDR`, ...), ready to hand to checkout. A wildcard
    /// listen address is given as the loopback address, which reaches it.
    pub fn addrs(&self) -> BTreeMap<&'static str, String> {
        Service::ALL
            .into_iter()
            .map(|service| {
                let mut addr = self.addr(service);
                if addr.ip().is_unspecified() {
                    addr.set_ip(match addr.ip() {
                        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
                    });
                }
                (service.env_var(), addr.to_string())
            })
            .collect()
    }

    /// Makes every call to `target` fail with `code` until [`heal`](Self::heal)ed.
    pub fn fail(&self, target: impl Into<Target>, code: Code) {
        let target = target.into();
        let message = format!("stand-in told to fail with {code:?}");
        self.control.fail(target.rpcs(), code, &message, None);
    }

    /// Makes every call to `target` fail with `code` and `message`.
    pub fn fail_with(&self, target: impl Into<Target>, code: Code, message: &str) {
        self.control.fail(target.into().rpcs(), code, message, None);
    }

    /// Makes the next `times` calls to each method of `target` fail with
    /// `code`; later calls succeed again (a transient outage).
    pub fn fail_times(&self, target: impl Into<Target>, code: Code, times: u32) {
        let target = target.into();
        let message = format!("stand-in told to fail with {code:?}");
        self.control
            .fail(target.rpcs(), code, &message, Some(times));
    }

    /// Delays every call to `target` by `latency` before it is answered
    /// (or failed); `Duration::ZERO` removes the delay.
    pub fn set_latency(&self, target: impl Into<Target>, latency: Duration) {
        self.control.set_latency(target.into().rpcs(), latency);
    }

    /// Removes failures and latency from `target`.
    pub fn heal(&self, target: impl Into<Target>) {
        self.control.heal(target.into().rpcs());
    }

    /// Removes every injected failure and latency.
    pub fn heal_all(&self) {
        for service in Service::ALL {
            self.heal(service);
        }
    }

    /// How many calls `rpc` has received, failed ones included.
    pub fn calls(&self, rpc: Rpc) -> usize {
        self.control.calls(rpc)
    }

    /// The W3C `traceparent` each call of `rpc` carried (`None`: no header).
    pub fn traceparents(&self, rpc: Rpc) -> Vec<Option<String>> {
        self.control.traceparents(rpc)
    }

    /// Stops accepting, lets calls in flight finish, and waits for the
    /// servers to exit. Dropping `Downstream` stops them without waiting.
    pub async fn shutdown(mut self) {
        // Err only when no server is left to tell.
        let _ = self.shutdown.send(true);
        for task in self.servers.drain(..) {
            if let Err(error) = task.await {
                tracing::warn!(%error, "stand-in server task failed");
            }
        }
    }
}
