//! `telemetry::init` with export enabled sends spans over OTLP/gRPC.
//!
//! A single test: `init` installs process-wide state (subscriber, `log`
//! bridge, propagator, tracer provider), so it gets this binary to itself.

use std::time::Duration;

use orders::config::TelemetrySettings;
use orders::telemetry::{self, TelemetryError};
use orders::testkit::otlp;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_exports_nested_spans_with_the_service_name() {
    let receiver = otlp::OtlpReceiver::start().await.unwrap();
    let settings = TelemetrySettings {
        tracing_enabled: true,
        // Bare `host:port`, as Online Boutique's COLLECTOR_SERVICE_ADDR.
        collector_addr: receiver.addr().to_string(),
        ..TelemetrySettings::default()
    };
    let guard = telemetry::init(&settings, "checkoutservice").unwrap();

    {
        let outer = tracing::info_span!("PlaceOrder");
        let _outer = outer.enter();
        let inner = tracing::info_span!("ChargeCard", amount = 42);
        let _inner = inner.enter();
        tracing::info!("charging");
    }
    // Shutdown flushes the batch.
    guard.shutdown().unwrap();

    let spans = receiver.wait_for_spans(2, Duration::from_secs(10)).await;
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let outer = spans.iter().find(|s| s.name == "PlaceOrder").unwrap();
    let inner = spans.iter().find(|s| s.name == "ChargeCard").unwrap();
    for span in [outer, inner] {
        assert_eq!(span.service_name.as_deref(), Some("checkoutservice"));
        assert_eq!(span.trace_id.len(), 32);
        assert_eq!(span.span_id.len(), 16);
    }
    assert_eq!(outer.parent_span_id, None);
    assert_eq!(
        inner.parent_span_id.as_deref(),
        Some(outer.span_id.as_str())
    );
    assert_eq!(inner.trace_id, outer.trace_id);
    assert_eq!(
        inner.attributes.get("amount").map(String::as_str),
        Some("42")
    );

    // The propagator is global.
    let fields: Vec<String> = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.fields().map(str::to_owned).collect()
    });
    assert!(fields.iter().any(|f| f == "traceparent"), "{fields:?}");

    // A second init cannot replace the subscriber, and says so.
    let again = telemetry::init(&TelemetrySettings::default(), "checkoutservice");
    assert!(
        matches!(again, Err(TelemetryError::AlreadyInitialized(_))),
        "{again:?}"
    );
}
