//! Clients for the six Online Boutique services checkout calls.
//!
//! Every call gets its own client span, carries the caller's trace context,
//! and is bounded by the caller's deadline (or `checkout.downstream_timeout`
//! when that is sooner): the upstream service ignored the deadline on one
//! currency call.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use orders::config::CheckoutSettings;
use orders::proto::hipstershop::{
    Address, Cart, CartItem, ChargeRequest, CreditCardInfo, CurrencyConversionRequest, Empty,
    EmptyCartRequest, GetCartRequest, GetProductRequest, GetQuoteRequest, Money, OrderResult,
    Product, SendOrderConfirmationRequest, ShipOrderRequest,
    cart_service_client::CartServiceClient, currency_service_client::CurrencyServiceClient,
    email_service_client::EmailServiceClient, payment_service_client::PaymentServiceClient,
    product_catalog_service_client::ProductCatalogServiceClient,
    shipping_service_client::ShippingServiceClient,
};
use tokio::sync::Mutex;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

use crate::propagation;

/// A failed downstream call, naming the service.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{service}: {}: {}", .status.code(), .status.message())]
pub struct CallError {
    /// The service's gRPC name, e.g. `hipstershop.CartService`.
    pub service: &'static str,
    /// What it answered.
    pub status: Status,
}

/// An address in the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("checkout.{key} = {value:?} is not a host:port address: {reason}")]
pub struct AddressError {
    key: &'static str,
    value: String,
    reason: String,
}

/// Clients of the six services, sharing one deadline policy.
pub struct Downstream {
    cart: CartServiceClient<Channel>,
    catalog: ProductCatalogServiceClient<Channel>,
    currency: CurrencyServiceClient<Channel>,
    shipping: ShippingServiceClient<Channel>,
    payment: PaymentServiceClient<Channel>,
    email: EmailServiceClient<Channel>,
    timeout: Duration,
    currency_cache_ttl: Duration,
    supported_currencies: Mutex<Option<(Instant, Arc<HashSet<String>>)>>,
}

const CART: &str = "hipstershop.CartService";
const CATALOG: &str = "hipstershop.ProductCatalogService";
const CURRENCY: &str = "hipstershop.CurrencyService";
const SHIPPING: &str = "hipstershop.ShippingService";
const PAYMENT: &str = "hipstershop.PaymentService";
const EMAIL: &str = "hipstershop.EmailService";

impl Downstream {
    /// Clients for the configured addresses; connections are made on first use.
    pub fn new(settings: &CheckoutSettings) -> Result<Self, AddressError> {
        let channel = |key: &'static str, addr: &str| -> Result<Channel, AddressError> {
            let error = |reason: String| AddressError {
                key,
                value: addr.to_owned(),
                reason,
            };
            if addr.is_empty() || addr.contains("://") {
                return Err(error("give host:port without a scheme".into()));
            }
            Ok(Endpoint::from_shared(format!("http://{addr}"))
                .map_err(|e| error(e.to_string()))?
                .connect_timeout(settings.downstream_timeout)
                .tcp_nodelay(true)
                .connect_lazy())
        };
        Ok(Self {
            cart: CartServiceClient::new(channel("cart_addr", &settings.cart_addr)?),
            catalog: ProductCatalogServiceClient::new(channel(
                "product_catalog_addr",
                &settings.product_catalog_addr,
            )?),
            currency: CurrencyServiceClient::new(channel(
                "currency_addr",
                &settings.currency_addr,
            )?),
            shipping: ShippingServiceClient::new(channel(
                "shipping_addr",
                &settings.shipping_addr,
            )?),
            payment: PaymentServiceClient::new(channel("payment_addr", &settings.payment_addr)?),
            email: EmailServiceClient::new(channel("email_addr", &settings.email_addr)?),
            timeout: settings.downstream_timeout,
            currency_cache_ttl: settings.currency_cache_ttl,
            supported_currencies: Mutex::new(None),
        })
    }

    /// Wraps `message` with the deadline and the current trace context.
    fn request<T>(
        &self,
        service: &'static str,
        message: T,
        deadline: Option<Instant>,
    ) -> Result<Request<T>, CallError> {
        let mut timeout = self.timeout;
        if let Some(deadline) = deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(CallError {
                    service,
                    status: Status::deadline_exceeded("the caller's deadline has passed"),
                });
            }
            timeout = timeout.min(left);
        }
        let mut request = Request::new(message);
        request.set_timeout(timeout);
        propagation::inject_current(request.metadata_mut());
        Ok(request)
    }

    /// `CartService/GetCart`.
    #[tracing::instrument(name = "hipstershop.CartService/GetCart", skip_all, fields(otel.kind = "client", rpc.system = "grpc"))]
    pub async fn get_cart(
        &self,
        user_id: &str,
        deadline: Option<Instant>,
    ) -> Result<Cart, CallError> {
        let request = self.request(
            CART,
            GetCartRequest {
                user_id: user_id.into(),
            },
            deadline,
        )?;
        answer(CART, self.cart.clone().get_cart(request).await)
    }

    /// `CartService/EmptyCart`.
    #[tracing::instrument(name = "hipstershop.CartService/EmptyCart", skip_all, fields(otel.kind = "client", rpc.system = "grpc"))]
    pub async fn empty_cart(
        &self,
        user_id: &str,
        deadline: Option<Instant>,
    ) -> Result<(), CallError> {
        let request = self.request(
            CART,
            EmptyCartRequest {
                user_id: user_id.into(),
            },
            deadline,
        )?;
        answer(CART, self.cart.clone().empty_cart(request).await).map(|_| ())
    }

    /// `ProductCatalogService/GetProduct`.
    #[tracing::instrument(name = "hipstershop.ProductCatalogService/GetProduct", skip_all, fields(otel.kind = "client", rpc.system = "grpc"))]
    pub async fn get_product(
        &self,
        id: &str,
        deadline: Option<Instant>,
    ) -> Result<Product, CallError> {
        let request = self.request(CATALOG, GetProductRequest { id: id.into() }, deadline)?;
        answer(CATALOG, self.catalog.clone().get_product(request).await)
    }

    /// `CurrencyService/Convert`.
    #[tracing::instrument(name = "hipstershop.CurrencyService/Convert", skip_all, fields(otel.kind = "client", rpc.system = "grpc"))]
    pub async fn convert(
        &self,
        from: Money,
        to_code: &str,
        deadline: Option<Instant>,
    ) -> Result<Money, CallError> {
        let message = CurrencyConversionRequest {
            from: Some(from),
            to_code: to_code.into(),
        };
        let request = self.request(CURRENCY, message, deadline)?;
        answer(CURRENCY, self.currency.clone().convert(request).await)
    }

    /// The currencies the currency service supports, cached for
    /// `checkout.currency_cache_ttl` (it answers unsupported ones with zero
    /// instead of an error, so checkout must know the list).
    pub async fn supported_currencies(
        &self,
        deadline: Option<Instant>,
    ) -> Result<Arc<HashSet<String>>, CallError> {
        let mut cache = self.supported_currencies.lock().await;
        if let Some((fetched, codes)) = cache.as_ref()
            && fetched.elapsed() < self.currency_cache_ttl
        {
            return Ok(codes.clone());
        }
        let codes = Arc::new(self.fetch_supported_currencies(deadline).await?);
        *cache = Some((Instant::now(), codes.clone()));
        Ok(codes)
    }

    #[tracing::instrument(name = "hipstershop.CurrencyService/GetSupportedCurrencies", skip_all, fields(otel.kind = "client", rpc.system = "grpc"))]
    async fn fetch_supported_currencies(
        &self,
        deadline: Option<Instant>,
    ) -> Result<HashSet<String>, CallError> {
        let request = self.request(CURRENCY, Empty {}, deadline)?;
        let response = answer(
            CURRENCY,
            self.currency
                .clone()
                .get_supported_currencies(request)
                .await,
        )?;
        Ok(response.currency_codes.into_iter().collect())
    }

    /// `ShippingService/GetQuote`.
    #[tracing::instrument(name = "hipstershop.ShippingService/GetQuote", skip_all, fields(otel.kind = "client", rpc.system = "grpc"))]
    pub async fn get_quote(
        &self,
        address: &Address,
        items: &[CartItem],
        deadline: Option<Instant>,
    ) -> Result<Money, CallError> {
        let message = GetQuoteRequest {
            address: Some(address.clone()),
            items: items.to_vec(),
        };
        let request = self.request(SHIPPING, message, deadline)?;
        let response = answer(SHIPPING, self.shipping.clone().get_quote(request).await)?;
        response.cost_usd.ok_or_else(|| CallError {
            service: SHIPPING,
            status: Status::internal("quote without cost_usd"),
        })
    }

    /// `ShippingService/ShipOrder`: the tracking id.
    #[tracing::instrument(name = "hipstershop.ShippingService/ShipOrder", skip_all, fields(otel.kind = "client", rpc.system = "grpc"))]
    pub async fn ship_order(
        &self,
        address: &Address,
        items: &[CartItem],
        deadline: Option<Instant>,
    ) -> Result<String, CallError> {
        let message = ShipOrderRequest {
            address: Some(address.clone()),
            items: items.to_vec(),
        };
        let request = self.request(SHIPPING, message, deadline)?;
        Ok(answer(SHIPPING, self.shipping.clone().ship_order(request).await)?.tracking_id)
    }

    /// `PaymentService/Charge`: the transaction id.
    #[tracing::instrument(name = "hipstershop.PaymentService/Charge", skip_all, fields(otel.kind = "client", rpc.system = "grpc"))]
    pub async fn charge(
        &self,
        amount: Money,
        card: CreditCardInfo,
        deadline: Option<Instant>,
    ) -> Result<String, CallError> {
        let message = ChargeRequest {
            amount: Some(amount),
            credit_card: Some(card),
        };
        let request = self.request(PAYMENT, message, deadline)?;
        Ok(answer(PAYMENT, self.payment.clone().charge(request).await)?.transaction_id)
    }

    /// `EmailService/SendOrderConfirmation`.
    #[tracing::instrument(name = "hipstershop.EmailService/SendOrderConfirmation", skip_all, fields(otel.kind = "client", rpc.system = "grpc"))]
    pub async fn send_confirmation(
        &self,
        email: &str,
        order: OrderResult,
        deadline: Option<Instant>,
    ) -> Result<(), CallError> {
        let message = SendOrderConfirmationRequest {
            email: email.into(),
            order: Some(order),
        };
        let request = self.request(EMAIL, message, deadline)?;
        answer(
            EMAIL,
            self.email.clone().send_order_confirmation(request).await,
        )
        .map(|_| ())
    }
}

fn answer<T>(
    service: &'static str,
    result: Result<tonic::Response<T>, Status>,
) -> Result<T, CallError> {
    result
        .map(tonic::Response::into_inner)
        .map_err(|status| CallError { service, status })
}

impl CallError {
    /// True when the service said the thing asked for does not exist.
    pub fn is_not_found(&self) -> bool {
        self.status.code() == Code::NotFound
    }
}
