//! One trace per PlaceOrder, continuing the caller's `traceparent`, with a
//! child span for each downstream call and database statement, exported over
//! OTLP; and the trace context passed on to the downstream services.
//! (A test binary of its own: it installs the global telemetry.)

mod common;

use std::time::Duration;

use common::{Shop, request};
use orders::config::{Persistence, TelemetrySettings};
use orders::testkit::otlp::OtlpReceiver;
use orders::testkit::standins::Rpc;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn place_order_continues_the_callers_trace_with_a_span_per_call_and_statement() {
    let receiver = OtlpReceiver::start().await.unwrap();
    let telemetry = orders::telemetry::init(
        &TelemetrySettings {
            tracing_enabled: true,
            collector_addr: receiver.addr().to_string(),
            ..TelemetrySettings::default()
        },
        "checkoutservice",
    )
    .unwrap();
    let shop = Shop::start(Persistence::Required).await;
    shop.fill_cart("traced", &[("OLJCESPC7Z", 1), ("66VCHSJNUP", 1)]);

    let mut request = tonic::Request::new(request("traced", "EUR"));
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{TRACE_ID}-{CALLER_SPAN}-01").parse().unwrap(),
    );
    shop.checkout().await.place_order(request).await.unwrap();
    telemetry.shutdown().unwrap();

    let spans: Vec<_> = receiver
        .wait_for_spans(1, Duration::from_secs(10))
        .await
        .into_iter()
        .filter(|s| s.trace_id == TRACE_ID)
        .collect();
    let servers: Vec<_> = spans
        .iter()
        .filter(|s| s.name == "hipstershop.CheckoutService/PlaceOrder")
        .collect();
    assert_eq!(
        servers.len(),
        1,
        "one PlaceOrder span in the trace: {spans:#?}"
    );
    let server = servers[0];
    assert_eq!(server.parent_span_id.as_deref(), Some(CALLER_SPAN));
    assert_eq!(server.service_name.as_deref(), Some("checkoutservice"));
    assert_eq!(server.kind, "SPAN_KIND_SERVER");

    for name in [
        "hipstershop.CartService/GetCart",
        "hipstershop.ProductCatalogService/GetProduct",
        "hipstershop.CurrencyService/Convert",
        "hipstershop.ShippingService/GetQuote",
        "hipstershop.PaymentService/Charge",
        "hipstershop.ShippingService/ShipOrder",
        "hipstershop.CartService/EmptyCart",
        "hipstershop.EmailService/SendOrderConfirmation",
        "db.create_pending",
        "db.finish",
    ] {
        let span = spans
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no {name} span in {spans:#?}"));
        assert_eq!(
            span.parent_span_id.as_deref(),
            Some(server.span_id.as_str()),
            "{name}"
        );
    }

    // Every downstream call carried the trace on.
    for rpc in [
        Rpc::GetCart,
        Rpc::GetProduct,
        Rpc::Charge,
        Rpc::ShipOrder,
        Rpc::SendOrderConfirmation,
    ] {
        let parents = shop.downstream.traceparents(rpc);
        assert!(!parents.is_empty(), "{rpc:?} was not called");
        for parent in parents {
            let parent = parent.unwrap_or_else(|| panic!("{rpc:?} got no traceparent"));
            assert!(parent.contains(TRACE_ID), "{rpc:?}: {parent}");
        }
    }
}
