//! The stand-ins, driven through the generated clients over real sockets.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tonic::Code;
use tonic::codegen::{BoxFuture, Context, Poll, Service as TowerService, http};
use tonic::transport::Channel;

use super::*;
use crate::money::{Money as Amount, MoneyError};
use crate::proto::hipstershop::cart_service_client::CartServiceClient;
use crate::proto::hipstershop::currency_service_client::CurrencyServiceClient;
use crate::proto::hipstershop::email_service_client::EmailServiceClient;
use crate::proto::hipstershop::payment_service_client::PaymentServiceClient;
use crate::proto::hipstershop::product_catalog_service_client::ProductCatalogServiceClient;
use crate::proto::hipstershop::shipping_service_client::ShippingServiceClient;
use crate::proto::hipstershop::{
    AddItemRequest, Address, CartItem, ChargeRequest, CreditCardInfo, CurrencyConversionRequest,
    Empty, EmptyCartRequest, GetCartRequest, GetProductRequest, GetQuoteRequest, Money,
    OrderResult, SearchProductsRequest, SendOrderConfirmationRequest, ShipOrderRequest,
};

fn money(code: &str, units: i64, nanos: i32) -> Money {
    Money {
        currency_code: code.to_owned(),
        units,
        nanos,
    }
}

fn items(pairs: &[(&str, i32)]) -> Vec<CartItem> {
    pairs
        .iter()
        .map(|&(product_id, quantity)| CartItem {
            product_id: product_id.to_owned(),
            quantity,
        })
        .collect()
}

fn address() -> Address {
    Address {
        street_address: "1600 Amphitheatre Parkway".to_owned(),
        city: "Mountain View".to_owned(),
        state: "CA".to_owned(),
        country: "United States".to_owned(),
        zip_code: 94043,
    }
}

/// The frontend's default card, valid until 2099.
fn good_card() -> CreditCardInfo {
    CreditCardInfo {
        credit_card_number: "4432-8015-6152-0454".to_owned(),
        credit_card_cvv: 672,
        credit_card_expiration_year: 2099,
        credit_card_expiration_month: 1,
    }
}

fn charge(card: CreditCardInfo) -> ChargeRequest {
    ChargeRequest {
        amount: Some(money("EUR", 42, 500_000_000)),
        credit_card: Some(card),
    }
}

/// A channel to `service`, the way checkout dials its `*_ADDR` variable.
async fn channel(downstream: &Downstream, service: Service) -> Channel {
    let addr = &downstream.addrs()[service.env_var()];
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

async fn catalog(d: &Downstream) -> ProductCatalogServiceClient<Channel> {
    ProductCatalogServiceClient::new(channel(d, Service::ProductCatalog).await)
}

async fn currency(d: &Downstream) -> CurrencyServiceClient<Channel> {
    CurrencyServiceClient::new(channel(d, Service::Currency).await)
}

async fn shipping(d: &Downstream) -> ShippingServiceClient<Channel> {
    ShippingServiceClient::new(channel(d, Service::Shipping).await)
}

async fn payment(d: &Downstream) -> PaymentServiceClient<Channel> {
    PaymentServiceClient::new(channel(d, Service::Payment).await)
}

async fn convert(client: &mut CurrencyServiceClient<Channel>, from: Money, to_code: &str) -> Money {
    client
        .convert(CurrencyConversionRequest {
            from: Some(from),
            to_code: to_code.to_owned(),
        })
        .await
        .unwrap()
        .into_inner()
}

#[test]
fn every_rpc_belongs_to_the_service_that_lists_it() {
    let mut listed = 0;
    for service in Service::ALL {
        for rpc in service.rpcs() {
            assert_eq!(rpc.service(), service, "{rpc:?}");
            listed += 1;
        }
    }
    assert_eq!(listed, 12);
}

#[tokio::test]
async fn addrs_are_keyed_by_online_boutique_variables() {
    let downstream = Downstream::start().await.unwrap();
    let addrs = downstream.addrs();
    let keys: Vec<&str> = addrs.keys().copied().collect();
    assert_eq!(
        keys,
        [
            "CART_SERVICE_ADDR",
            "CURRENCY_SERVICE_ADDR",
            "EMAIL_SERVICE_ADDR",
            "PAYMENT_SERVICE_ADDR",
            "PRODUCT_CATALOG_SERVICE_ADDR",
            "SHIPPING_SERVICE_ADDR",
        ]
    );
    for (var, addr) in &addrs {
        // host:port without a scheme, as the upstream manifests give them.
        let addr: std::net::SocketAddr = addr.parse().unwrap();
        assert!(addr.ip().is_loopback() && addr.port() != 0, "{var}={addr}");
    }
}

#[tokio::test]
async fn catalog_serves_the_contract_products() {
    let downstream = Downstream::start().await.unwrap();
    let mut client = catalog(&downstream).await;
    for (id, units) in [("OLJCESPC7Z", 19), ("66VCHSJNUP", 34)] {
        let product = client
            .get_product(GetProductRequest { id: id.to_owned() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(product.id, id);
        assert_eq!(product.price_usd, Some(money("USD", units, 990_000_000)));
    }

    let missing = client
        .get_product(GetProductRequest {
            id: "NOPE".to_owned(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(missing.message(), "no product with ID NOPE");

    let all = client.list_products(Empty {}).await.unwrap().into_inner();
    assert!(all.products.len() >= 5);
    // Every catalog price is valid money.
    for product in &all.products {
        Amount::try_from(product.price_usd.as_ref().unwrap()).unwrap();
    }

    let found = client
        .search_products(SearchProductsRequest {
            query: "MUG".to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.results.len(), 1);
    assert_eq!(found.results[0].id, "6E92ZMYYFZ");
    assert_eq!(downstream.calls(Rpc::GetProduct), 3);
}

#[tokio::test]
async fn currency_converts_through_eur_by_the_rate_table() {
    let downstream = Downstream::start().await.unwrap();
    let mut client = currency(&downstream).await;

    let supported = client
        .get_supported_currencies(Empty {})
        .await
        .unwrap()
        .into_inner()
        .currency_codes;
    for code in ["USD", "EUR", "JPY", "GBP", "CAD"] {
        assert!(
            supported.iter().any(|c| c == code),
            "{code} in {supported:?}"
        );
    }

    // 19.99 / 1.1305 = 17.6824413976..., rounded to nanos.
    let eur = convert(&mut client, money("USD", 19, 990_000_000), "EUR").await;
    assert_eq!(eur, money("EUR", 17, 682_441_398));
    // 17.682441398 * 126.40 = 2235.0605927072, floored to nanos.
    let jpy = convert(&mut client, eur, "JPY").await;
    assert_eq!(jpy, money("JPY", 2235, 60_592_707));
    // Going straight to JPY takes the same way through EUR.
    let direct = convert(&mut client, money("USD", 19, 990_000_000), "JPY").await;
    assert_eq!(direct, jpy);

    // Upstream's quirk, kept so checkout's skipping of identity conversions
    // can be tested: 1 USD -> USD comes back one nano short.
    let same = convert(&mut client, money("USD", 1, 0), "USD").await;
    assert_eq!(same, money("USD", 0, 999_999_999));
}

#[tokio::test]
async fn unsupported_currency_converts_to_zero() {
    let downstream = Downstream::start().await.unwrap();
    let mut client = currency(&downstream).await;
    let to_unknown = convert(&mut client, money("USD", 19, 990_000_000), "XYZ").await;
    assert_eq!(to_unknown, money("XYZ", 0, 0));
    let from_unknown = convert(&mut client, money("XYZ", 5, 0), "EUR").await;
    assert_eq!(from_unknown, money("EUR", 0, 0));
}

#[tokio::test]
async fn shipping_quotes_flat_rate_and_ships() {
    let downstream = Downstream::start().await.unwrap();
    let mut client = shipping(&downstream).await;
    let quote = |items| GetQuoteRequest {
        address: Some(address()),
        items,
    };
    let full = client
        .get_quote(quote(items(&[("OLJCESPC7Z", 3), ("66VCHSJNUP", 1)])))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(full.cost_usd, Some(money("USD", 8, 990_000_000)));
    let empty = client.get_quote(quote(vec![])).await.unwrap().into_inner();
    assert_eq!(empty.cost_usd, Some(money("USD", 0, 0)));

    let shipped = client
        .ship_order(ShipOrderRequest {
            address: Some(address()),
            items: items(&[("OLJCESPC7Z", 3)]),
        })
        .await
        .unwrap()
        .into_inner();
    let shipments = downstream.shipping.shipments();
    assert_eq!(shipments.len(), 1);
    assert_eq!(shipments[0].tracking_id, shipped.tracking_id);
    assert_eq!(shipments[0].address, Some(address()));
    assert_eq!(shipments[0].items, items(&[("OLJCESPC7Z", 3)]));
}

#[tokio::test]
async fn cart_keeps_one_cart_per_user() {
    let downstream = Downstream::start().await.unwrap();
    let mut client = CartServiceClient::new(channel(&downstream, Service::Cart).await);
    for quantity in [1, 2] {
        client
            .add_item(AddItemRequest {
                user_id: "alice".to_owned(),
                item: Some(CartItem {
                    product_id: "OLJCESPC7Z".to_owned(),
                    quantity,
                }),
            })
            .await
            .unwrap();
    }
    downstream.cart.add("bob", "66VCHSJNUP", 1);

    let cart = |user: &str| GetCartRequest {
        user_id: user.to_owned(),
    };
    let alice = client.get_cart(cart("alice")).await.unwrap().into_inner();
    assert_eq!(alice.user_id, "alice");
    assert_eq!(alice.items, items(&[("OLJCESPC7Z", 3)]));

    client
        .empty_cart(EmptyCartRequest {
            user_id: "alice".to_owned(),
        })
        .await
        .unwrap();
    assert!(
        client
            .get_cart(cart("alice"))
            .await
            .unwrap()
            .into_inner()
            .items
            .is_empty()
    );
    assert_eq!(downstream.cart.items("bob"), items(&[("66VCHSJNUP", 1)]));
    assert_eq!(downstream.cart.emptied(), ["alice"]);
}

#[tokio::test]
async fn payment_charges_valid_cards_and_records_last_four() {
    let downstream = Downstream::start().await.unwrap();
    let mut client = payment(&downstream).await;
    let response = client
        .charge(charge(good_card()))
        .await
        .unwrap()
        .into_inner();
    let id = uuid::Uuid::parse_str(&response.transaction_id).unwrap();
    assert_eq!(id.get_version_num(), 4);

    let charges = downstream.payment.charges();
    assert_eq!(
        charges,
        [Charge {
            amount: money("EUR", 42, 500_000_000),
            card_last4: "0454".to_owned(),
            transaction_id: response.transaction_id,
        }]
    );
    // Nothing kept shows more of the card.
    assert!(!format!("{:?}", downstream.payment).contains("8015"));
}

#[tokio::test]
async fn payment_refuses_like_upstream() {
    let downstream = Downstream::start().await.unwrap();
    let mut client = payment(&downstream).await;
    let cases = [
        ("4432801561520455", 2099, "Credit card info is invalid"),
        (
            "378282246310005",
            2099,
            "Sorry, we cannot process amex credit cards. Only VISA or MasterCard is accepted.",
        ),
        (
            "5555-5555-5555-4444",
            2020,
            "Your credit card (ending 4444) expired on 1/2020",
        ),
    ];
    for (number, year, message) in cases {
        let card = CreditCardInfo {
            credit_card_number: number.to_owned(),
            credit_card_expiration_year: year,
            ..good_card()
        };
        let status = client.charge(charge(card)).await.unwrap_err();
        // 400 is not a code tonic knows: it reads as UNKNOWN.
        assert_eq!(status.code(), Code::Unknown, "{number}");
        assert_eq!(status.message(), message);
    }
    assert!(downstream.payment.charges().is_empty());
    let refusals = downstream.payment.refusals();
    let last4: Vec<&str> = refusals.iter().map(|r| r.card_last4.as_str()).collect();
    assert_eq!(last4, ["0455", "0005", "4444"]);
    assert_eq!(refusals[2].amount, money("EUR", 42, 500_000_000));
}

/// Records the raw `grpc-status` of every response, which tonic's `Status`
/// cannot show for non-standard numbers.
#[derive(Clone)]
struct RawStatusSeen {
    channel: Channel,
    seen: Arc<Mutex<Vec<String>>>,
}

impl TowerService<http::Request<tonic::body::Body>> for RawStatusSeen {
    type Response = http::Response<tonic::body::Body>;
    type Error = tonic::transport::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.channel.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let response = self.channel.call(request);
        let seen = Arc::clone(&self.seen);
        Box::pin(async move {
            let response = response.await?;
            if let Some(status) = response.headers().get("grpc-status") {
                seen.lock()
                    .unwrap()
                    .push(status.to_str().unwrap().to_owned());
            }
            Ok(response)
        })
    }
}

#[tokio::test]
async fn refusals_carry_status_400_on_the_wire() {
    let downstream = Downstream::start().await.unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut client = PaymentServiceClient::new(RawStatusSeen {
        channel: channel(&downstream, Service::Payment).await,
        seen: Arc::clone(&seen),
    });
    let expired = CreditCardInfo {
        credit_card_expiration_year: 2020,
        ..good_card()
    };
    let status = client.charge(charge(expired)).await.unwrap_err();
    assert_eq!(
        status.message(),
        "Your credit card (ending 0454) expired on 1/2020"
    );
    assert_eq!(*seen.lock().unwrap(), ["400"]);
    // The marker that asks for the raw number does not leak to clients.
    assert!(status.metadata().get("x-standin-grpc-status").is_none());

    // Injected failures keep their standard code.
    downstream.fail(Service::Payment, Code::Unavailable);
    let status = client.charge(charge(good_card())).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(seen.lock().unwrap().last().unwrap(), "14");
}

#[tokio::test]
async fn decline_all_refuses_valid_cards() {
    let downstream = Downstream::start().await.unwrap();
    let mut client = payment(&downstream).await;
    downstream.payment.decline_all(true);
    let status = client.charge(charge(good_card())).await.unwrap_err();
    assert_eq!(status.code(), Code::Unknown);
    assert_eq!(
        status.message(),
        "Your credit card (ending 0454) was declined"
    );
    assert!(downstream.payment.charges().is_empty());

    downstream.payment.decline_all(false);
    client.charge(charge(good_card())).await.unwrap();
    assert_eq!(downstream.payment.charges().len(), 1);
}

#[tokio::test]
async fn email_records_confirmations() {
    let downstream = Downstream::start().await.unwrap();
    let mut client = EmailServiceClient::new(channel(&downstream, Service::Email).await);
    let request = SendOrderConfirmationRequest {
        email: "someone@example.com".to_owned(),
        order: Some(OrderResult {
            order_id: "d3f1c7e2-0000-4000-8000-000000000000".to_owned(),
            shipping_tracking_id: "AB-12345-67890123".to_owned(),
            shipping_cost: Some(money("USD", 8, 990_000_000)),
            shipping_address: Some(address()),
            items: vec![],
        }),
    };
    client
        .send_order_confirmation(request.clone())
        .await
        .unwrap();
    assert_eq!(downstream.email.sent(), [request]);
}

#[tokio::test]
async fn failures_hit_a_service_or_one_method() {
    let downstream = Downstream::start().await.unwrap();
    let mut client = shipping(&downstream).await;
    let quote = || GetQuoteRequest {
        address: Some(address()),
        items: items(&[("OLJCESPC7Z", 1)]),
    };
    let ship = || ShipOrderRequest {
        address: Some(address()),
        items: items(&[("OLJCESPC7Z", 1)]),
    };

    downstream.fail(Service::Shipping, Code::Unavailable);
    assert_eq!(
        client.get_quote(quote()).await.unwrap_err().code(),
        Code::Unavailable
    );
    assert_eq!(
        client.ship_order(ship()).await.unwrap_err().code(),
        Code::Unavailable
    );

    downstream.heal(Service::Shipping);
    downstream.fail_with(Rpc::ShipOrder, Code::Internal, "truck on fire");
    client.get_quote(quote()).await.unwrap();
    let status = client.ship_order(ship()).await.unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::Internal, "truck on fire")
    );
    assert!(downstream.shipping.shipments().is_empty());

    downstream.heal_all();
    downstream.fail_times(Rpc::ShipOrder, Code::Unavailable, 1);
    assert!(client.ship_order(ship()).await.is_err());
    client.ship_order(ship()).await.unwrap();
    assert_eq!(downstream.shipping.shipments().len(), 1);

    // Failed calls count as calls.
    assert_eq!(downstream.calls(Rpc::GetQuote), 2);
    assert_eq!(downstream.calls(Rpc::ShipOrder), 4);
}

#[tokio::test]
async fn latency_delays_answers_and_trips_deadlines() {
    let downstream = Downstream::start().await.unwrap();
    let mut client = currency(&downstream).await;

    downstream.set_latency(Service::Currency, Duration::from_millis(200));
    let started = Instant::now();
    client.get_supported_currencies(Empty {}).await.unwrap();
    // A lower bound only: how much longer it took depends on the machine.
    assert!(started.elapsed() >= Duration::from_millis(200));

    downstream.set_latency(Rpc::Convert, Duration::from_secs(30));
    let mut request = tonic::Request::new(CurrencyConversionRequest {
        from: Some(money("USD", 1, 0)),
        to_code: "EUR".to_owned(),
    });
    request.set_timeout(Duration::from_millis(100));
    let status = client.convert(request).await.unwrap_err();
    assert_eq!(status.code(), Code::Cancelled, "{status:?}");
}

#[tokio::test]
async fn invalid_money_can_be_served() {
    let downstream = Downstream::start().await.unwrap();
    let out_of_range = money("USD", 19, 1_000_000_000);
    let wrong_sign = money("EUR", 3, -5);

    assert!(
        downstream
            .catalog
            .set_price("OLJCESPC7Z", out_of_range.clone())
    );
    let product = catalog(&downstream)
        .await
        .get_product(GetProductRequest {
            id: "OLJCESPC7Z".to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    let price = product.price_usd.unwrap();
    assert_eq!(price, out_of_range);
    assert_eq!(
        Amount::try_from(price),
        Err(MoneyError::NanosOutOfRange(1_000_000_000))
    );

    downstream.currency.answer_with(Some(wrong_sign.clone()));
    let converted = convert(&mut currency(&downstream).await, money("USD", 1, 0), "EUR").await;
    assert_eq!(
        Amount::try_from(converted),
        Err(MoneyError::SignMismatch {
            units: 3,
            nanos: -5
        })
    );

    downstream.shipping.quote_with(Some(wrong_sign.clone()));
    let quote = shipping(&downstream)
        .await
        .get_quote(GetQuoteRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(quote.cost_usd, Some(wrong_sign));
}

#[tokio::test]
async fn start_on_serves_fixed_addresses_and_reports_busy_ones() {
    // Find a free port, then ask for it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let fixed = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let downstream = Downstream::start_on([(Service::Payment, fixed)])
        .await
        .unwrap();
    assert_eq!(downstream.addr(Service::Payment), fixed);
    payment(&downstream)
        .await
        .charge(charge(good_card()))
        .await
        .unwrap();

    // The port is taken now, so a second set cannot have it.
    let error = Downstream::start_on([(Service::Payment, fixed)])
        .await
        .unwrap_err();
    let StandinError::Bind { service, addr, .. } = &error;
    assert_eq!((*service, *addr), (Service::Payment, fixed));
    assert!(
        error.to_string().contains("hipstershop.PaymentService"),
        "{error}"
    );

    downstream.shutdown().await;
    // Stopped: nothing listens there any more.
    assert!(tokio::net::TcpStream::connect(fixed).await.is_err());
}
