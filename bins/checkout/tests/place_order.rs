//! PlaceOrder end to end: the in-process server, a real TLS PostgreSQL and
//! the six stand-ins speaking the real protocol.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{CARD, Logs, Shop, request};
use orders::config::Persistence;
use orders::money::Money;
use orders::proto::hipstershop::{self, PlaceOrderRequest, PlaceOrderResponse};
use orders::store::OrderStatus;
use orders::testkit::standins::{Rpc, Service};
use tonic::{Code, Status};
use uuid::Uuid;

async fn place(shop: &Shop, request: PlaceOrderRequest) -> Result<PlaceOrderResponse, Status> {
    shop.checkout()
        .await
        .place_order(request)
        .await
        .map(tonic::Response::into_inner)
}

fn money(m: &Option<hipstershop::Money>) -> Money {
    Money::try_from(m.as_ref().unwrap()).unwrap()
}

#[tokio::test]
async fn totals_are_exact_in_usd_eur_and_jpy() {
    let shop = Shop::start(Persistence::Required).await;
    // A price with nanos that do not survive a float.
    shop.downstream.catalog.set_price(
        "1YMWWN1N4O",
        hipstershop::Money {
            currency_code: "USD".into(),
            units: 109,
            nanos: 990_000_001,
        },
    );
    for (user, currency) in [
        ("usd-user", "USD"),
        ("eur-user", "EUR"),
        ("jpy-user", "JPY"),
    ] {
        shop.fill_cart(
            user,
            &[("OLJCESPC7Z", 3), ("66VCHSJNUP", 2), ("1YMWWN1N4O", 7)],
        );
        let response = place(&shop, request(user, currency)).await.unwrap();
        let order = response.order.unwrap();

        let shipping = money(&order.shipping_cost);
        assert_eq!(shipping.currency_code, currency);
        let mut expected = shipping.clone();
        for item in &order.items {
            let cost = money(&item.cost);
            assert_eq!(cost.currency_code, currency);
            let quantity = u32::try_from(item.item.as_ref().unwrap().quantity).unwrap();
            expected = expected
                .checked_add(&cost.checked_mul(quantity).unwrap())
                .unwrap();
        }
        if currency == "USD" {
            // Identity conversions are skipped, so prices are the catalog's.
            assert_eq!(
                money(&order.items[0].cost),
                Money::new("USD", 19, 990_000_000).unwrap()
            );
            assert_eq!(
                money(&order.items[2].cost),
                Money::new("USD", 109, 990_000_001).unwrap()
            );
            assert_eq!(shipping, Money::new("USD", 8, 990_000_000).unwrap());
        }

        let charged = shop.downstream.payment.charges().last().unwrap().clone();
        assert_eq!(
            Money::try_from(&charged.amount).unwrap(),
            expected,
            "{currency}"
        );
        let stored = shop
            .store
            .get(Uuid::parse_str(&order.order_id).unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.total, expected, "{currency}");
        assert_eq!(stored.shipping_cost, shipping);
        assert_eq!(stored.status, OrderStatus::Completed);
        assert_eq!(
            stored.payment_transaction_id.as_deref(),
            Some(charged.transaction_id.as_str())
        );
        assert_eq!(
            stored.shipping_tracking_id.as_deref(),
            Some(order.shipping_tracking_id.as_str())
        );
        assert_eq!(stored.card_last4.as_deref(), Some("1111"));
        assert_eq!(stored.items.len(), 3);
    }
}

#[tokio::test]
async fn a_declined_card_ships_nothing_keeps_the_cart_and_records_why() {
    let shop = Shop::start(Persistence::Required).await;
    shop.fill_cart("declined", &[("OLJCESPC7Z", 1)]);
    shop.downstream.payment.decline_all(true);

    let status = place(&shop, request("declined", "USD")).await.unwrap_err();
    assert_eq!(status.code(), Code::Internal);
    assert!(
        status.message().starts_with("failed to charge card: "),
        "{}",
        status.message()
    );
    assert!(shop.downstream.shipping.shipments().is_empty());
    assert!(shop.downstream.cart.emptied().is_empty());
    assert_eq!(shop.downstream.cart.items("declined").len(), 1);
    assert!(shop.downstream.payment.charges().is_empty());

    let rows = shop
        .sql("SELECT status || '|' || failure_reason FROM orders")
        .await;
    assert_eq!(rows.len(), 1);
    assert!(
        rows[0].starts_with("failed|Your credit card (ending 1111)"),
        "{rows:?}"
    );
}

#[tokio::test]
async fn a_shipping_failure_after_the_charge_keeps_the_transaction_id() {
    let shop = Shop::start(Persistence::Required).await;
    shop.fill_cart("unshipped", &[("66VCHSJNUP", 1)]);
    shop.downstream.fail(Rpc::ShipOrder, Code::Unavailable);

    let status = place(&shop, request("unshipped", "EUR")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        status.message().starts_with("shipping error"),
        "{}",
        status.message()
    );
    let charge = shop.downstream.payment.charges().pop().unwrap();
    let rows = shop
        .sql("SELECT status || '|' || payment_transaction_id FROM orders")
        .await;
    assert_eq!(rows, [format!("failed|{}", charge.transaction_id)]);
}

#[tokio::test]
async fn a_failed_confirmation_email_is_a_warning_and_the_order_succeeds() {
    let logs = Logs::capture();
    let shop = Shop::start(Persistence::Required).await;
    shop.fill_cart("mailless", &[("OLJCESPC7Z", 1)]);
    shop.downstream.fail(Service::Email, Code::Unavailable);

    let order = place(&shop, request("mailless", "USD"))
        .await
        .unwrap()
        .order
        .unwrap();
    let rows = shop
        .sql(&format!(
            "SELECT status FROM orders WHERE order_id = '{}'",
            order.order_id
        ))
        .await;
    assert_eq!(rows, ["completed"]);
    let text = logs.text();
    let warning = text
        .lines()
        .find(|l| l.contains("failed to send order confirmation"))
        .unwrap_or_else(|| panic!("no warning in:\n{text}"));
    assert!(warning.contains(r#""severity":"warning""#), "{warning}");
    assert!(text.contains(&format!(
        "order {} saved to database successfully",
        order.order_id
    )));
}

#[tokio::test]
async fn bad_input_gets_a_clear_status_and_charges_nothing() {
    let shop = Shop::start(Persistence::Required).await;
    let cases: Vec<(&str, PlaceOrderRequest, Code, &str)> = vec![
        (
            "empty user",
            PlaceOrderRequest {
                user_id: String::new(),
                ..request("u", "USD")
            },
            Code::InvalidArgument,
            "user_id",
        ),
        (
            "no address",
            PlaceOrderRequest {
                address: None,
                ..request("u", "USD")
            },
            Code::InvalidArgument,
            "address is missing",
        ),
        (
            "no city",
            {
                let mut r = request("u", "USD");
                r.address.as_mut().unwrap().city = String::new();
                r
            },
            Code::InvalidArgument,
            "address.city",
        ),
        (
            "no zip",
            {
                let mut r = request("u", "USD");
                r.address.as_mut().unwrap().zip_code = 0;
                r
            },
            Code::InvalidArgument,
            "address.zip_code",
        ),
        (
            "lower-case currency",
            request("u", "usd"),
            Code::InvalidArgument,
            "user_currency",
        ),
        (
            "unsupported currency",
            request("u", "XYZ"),
            Code::InvalidArgument,
            "XYZ is not supported",
        ),
        (
            "bad email",
            PlaceOrderRequest {
                email: "not-an-email".into(),
                ..request("u", "USD")
            },
            Code::InvalidArgument,
            "email",
        ),
        (
            "no card",
            PlaceOrderRequest {
                credit_card: None,
                ..request("u", "USD")
            },
            Code::InvalidArgument,
            "credit_card is missing",
        ),
        (
            "short card",
            {
                let mut r = request("u", "USD");
                r.credit_card.as_mut().unwrap().credit_card_number = "4111".into();
                r
            },
            Code::InvalidArgument,
            "credit_card_number",
        ),
        (
            "bad month",
            {
                let mut r = request("u", "USD");
                r.credit_card.as_mut().unwrap().credit_card_expiration_month = 13;
                r
            },
            Code::InvalidArgument,
            "expiration_month",
        ),
        (
            "empty cart",
            request("nobody-has-a-cart", "USD"),
            Code::FailedPrecondition,
            "is empty",
        ),
    ];
    for (name, request, code, needle) in cases {
        let status = place(&shop, request).await.unwrap_err();
        assert_eq!(status.code(), code, "{name}: {}", status.message());
        assert!(
            status.message().contains(needle),
            "{name}: {}",
            status.message()
        );
        assert!(!status.message().contains("4111"), "{name} echoed the card");
    }

    // Carts and peers that cannot be priced.
    shop.fill_cart("zero", &[("OLJCESPC7Z", 0)]);
    shop.fill_cart("negative", &[("OLJCESPC7Z", -2)]);
    shop.fill_cart("unknown", &[("NOSUCHTHING", 1)]);
    for (user, code, needle) in [
        ("zero", Code::FailedPrecondition, "quantity 0"),
        ("negative", Code::FailedPrecondition, "quantity -2"),
        (
            "unknown",
            Code::FailedPrecondition,
            "NOSUCHTHING in the cart is not in the catalog",
        ),
    ] {
        let status = place(&shop, request(user, "USD")).await.unwrap_err();
        assert_eq!(status.code(), code, "{user}: {}", status.message());
        assert!(
            status.message().contains(needle),
            "{user}: {}",
            status.message()
        );
    }

    shop.fill_cart("peer", &[("OLJCESPC7Z", 1)]);
    shop.downstream.catalog.set_price(
        "OLJCESPC7Z",
        hipstershop::Money {
            currency_code: "USD".into(),
            units: 1,
            nanos: 2_000_000_000,
        },
    );
    let status = place(&shop, request("peer", "USD")).await.unwrap_err();
    assert_eq!(status.code(), Code::Internal);
    assert!(
        status
            .message()
            .contains("price of product OLJCESPC7Z is not valid money"),
        "{}",
        status.message()
    );
    shop.downstream.catalog.set_price(
        "OLJCESPC7Z",
        hipstershop::Money {
            currency_code: "USD".into(),
            units: 19,
            nanos: 990_000_000,
        },
    );
    shop.downstream
        .currency
        .answer_with(Some(hipstershop::Money {
            currency_code: "EUR".into(),
            units: 3,
            nanos: -5,
        }));
    let status = place(&shop, request("peer", "EUR")).await.unwrap_err();
    assert_eq!(status.code(), Code::Internal);
    assert!(
        status.message().contains("converted"),
        "{}",
        status.message()
    );
    shop.downstream.currency.answer_with(None);

    shop.fill_cart("huge", &[("1YMWWN1N4O", i32::MAX)]);
    shop.downstream.catalog.set_price(
        "1YMWWN1N4O",
        hipstershop::Money {
            currency_code: "USD".into(),
            units: i64::MAX / 4,
            nanos: 0,
        },
    );
    let status = place(&shop, request("huge", "USD")).await.unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{}", status.message());
    assert!(status.message().contains("total"), "{}", status.message());

    assert!(shop.downstream.payment.charges().is_empty());
    assert!(shop.downstream.payment.refusals().is_empty());
    assert_eq!(shop.sql("SELECT count(*) FROM orders").await, ["0"]);

    // Still up: a good order goes through.
    place(&shop, request("peer", "EUR")).await.unwrap();
}

#[tokio::test]
async fn a_repeated_idempotency_key_returns_the_first_order_and_charges_once() {
    let shop = Shop::start(Persistence::Required).await;
    shop.fill_cart("repeat", &[("OLJCESPC7Z", 2)]);
    let keyed = |key: &str| {
        let mut request = tonic::Request::new(request("repeat", "EUR"));
        request
            .metadata_mut()
            .insert("idempotency-key", key.parse().unwrap());
        request
    };
    let mut client = shop.checkout().await;
    let first = client
        .place_order(keyed("k-1"))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    let again = client
        .place_order(keyed("k-1"))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(first, again);
    assert_eq!(shop.downstream.payment.charges().len(), 1);

    // Racing repeats: exactly one charge, one answer for all.
    shop.fill_cart("repeat", &[("OLJCESPC7Z", 1)]);
    shop.downstream
        .set_latency(Rpc::Charge, Duration::from_millis(300));
    let racers = (0..5).map(|_| {
        let mut client = client.clone();
        let request = keyed("k-2");
        async move {
            client
                .place_order(request)
                .await
                .map(|r| r.into_inner().order.unwrap().order_id)
        }
    });
    let ids: Vec<String> = futures_util::future::join_all(racers)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 1, "{ids:?}");
    assert_eq!(shop.downstream.payment.charges().len(), 2);
    assert_eq!(shop.sql("SELECT count(*) FROM orders").await, ["2"]);

    // The same key for another user is refused.
    let mut other = tonic::Request::new(request("someone-else", "EUR"));
    other
        .metadata_mut()
        .insert("idempotency-key", "k-1".parse().unwrap());
    let status = client.place_order(other).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_orders_for_fifty_users_all_land() {
    let shop = Shop::start(Persistence::Required).await;
    for user in 0..50 {
        shop.fill_cart(
            &format!("load-{user}"),
            &[("OLJCESPC7Z", 1), ("66VCHSJNUP", 2)],
        );
    }
    // Four orders per user share one cart: keep carts filled (an emptied
    // cart is only a warning), or whichever order finishes first would
    // empty the cart under the others.
    shop.downstream.fail(Rpc::EmptyCart, Code::Unavailable);
    let client = shop.checkout().await;
    let orders = (0..200).map(|i| {
        let mut client = client.clone();
        let currency = ["USD", "EUR", "JPY", "GBP"][i % 4];
        async move {
            client
                .place_order(request(&format!("load-{}", i % 50), currency))
                .await
        }
    });
    let results = futures_util::future::join_all(orders).await;
    let failures: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(failures.is_empty(), "{failures:?}");

    assert_eq!(
        shop.sql("SELECT count(DISTINCT order_id) FROM orders WHERE status = 'completed'")
            .await,
        ["200"]
    );
    // Per currency: the stored totals add up to what the payment service charged.
    for currency in ["USD", "EUR", "JPY", "GBP"] {
        let charged = shop
            .downstream
            .payment
            .charges()
            .iter()
            .filter(|c| c.amount.currency_code == currency)
            .map(|c| Money::try_from(&c.amount).unwrap())
            .try_fold(Money::zero(currency).unwrap(), |sum, m| sum.checked_add(&m))
            .unwrap();
        let stored = shop
            .sql(&format!(
                "SELECT sum(total)::text FROM orders WHERE user_currency = '{currency}'"
            ))
            .await;
        let stored: rust_decimal::Decimal = stored[0].parse().unwrap();
        assert_eq!(
            Money::from_decimal(currency, stored).unwrap(),
            charged,
            "{currency}"
        );
    }
}

#[tokio::test]
async fn nothing_stored_or_logged_holds_the_card_number() {
    let logs = Logs::capture();
    let shop = Shop::start(Persistence::Required).await;
    shop.fill_cart("careful", &[("OLJCESPC7Z", 1)]);
    place(&shop, request("careful", "USD")).await.unwrap();
    shop.downstream.payment.decline_all(true);
    shop.fill_cart("careful", &[("OLJCESPC7Z", 1)]);
    place(&shop, request("careful", "USD")).await.unwrap_err();

    let digits = CARD.replace('-', "");
    let dump = shop
        .sql("SELECT string_agg(t::text, ' ') FROM (SELECT o::text AS t FROM orders o UNION ALL SELECT e::text FROM order_events e UNION ALL SELECT i::text FROM order_items i) x")
        .await
        .join(" ");
    assert!(
        dump.contains("1111"),
        "the dump should hold the orders: {dump}"
    );
    for secret in [CARD, digits.as_str()] {
        assert!(!dump.contains(secret), "database holds {secret}");
    }
    let text = logs.text();
    assert!(text.contains("payment refused"), "{text}");
    for secret in [CARD, digits.as_str()] {
        assert!(!text.contains(secret), "logs hold the card number");
    }
    let password = shop.db.role_password("checkout");
    assert!(!text.contains(&password), "logs hold the database password");
}
