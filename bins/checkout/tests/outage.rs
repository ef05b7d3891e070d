//! The database goes away and comes back: `required` refuses orders without
//! charging and reports NOT_SERVING; `best_effort` places them anyway.

mod common;

use std::time::{Duration, Instant};

use common::{Logs, Shop, request};
use orders::config::Persistence;
use orders::testkit::PgCluster;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

async fn health(shop: &Shop) -> ServingStatus {
    let response = HealthClient::new(shop.channel().await)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    ServingStatus::try_from(response.status).unwrap()
}

async fn wait_for_health(shop: &Shop, wanted: ServingStatus) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while health(shop).await != wanted {
        assert!(Instant::now() < deadline, "health never became {wanted:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn own_cluster() -> &'static PgCluster {
    Box::leak(Box::new(PgCluster::start().unwrap()))
}

#[tokio::test]
async fn required_mode_refuses_orders_while_the_database_is_down_and_recovers_without_a_restart() {
    let cluster = own_cluster();
    let shop = Shop::start_in(cluster, Persistence::Required).await;
    wait_for_health(&shop, ServingStatus::Serving).await;
    shop.fill_cart("outage", &[("OLJCESPC7Z", 1)]);

    cluster.stop_server().unwrap();
    let status = shop
        .checkout()
        .await
        .place_order(request("outage", "USD"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{}", status.message());
    assert!(
        status.message().contains("nothing was charged"),
        "{}",
        status.message()
    );
    assert!(shop.downstream.payment.charges().is_empty());
    assert!(shop.downstream.payment.refusals().is_empty());
    wait_for_health(&shop, ServingStatus::NotServing).await;

    cluster.start_server().unwrap();
    wait_for_health(&shop, ServingStatus::Serving).await;
    let order = shop
        .checkout()
        .await
        .place_order(request("outage", "USD"))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    let rows = shop
        .sql(&format!(
            "SELECT status FROM orders WHERE order_id = '{}'",
            order.order_id
        ))
        .await;
    assert_eq!(rows, ["completed"]);
    assert_eq!(shop.downstream.payment.charges().len(), 1);
}

#[tokio::test]
async fn best_effort_mode_places_the_order_and_logs_the_failure() {
    let logs = Logs::capture();
    let cluster = own_cluster();
    let shop = Shop::start_in(cluster, Persistence::BestEffort).await;
    shop.fill_cart("effort", &[("OLJCESPC7Z", 1)]);
    cluster.stop_server().unwrap();

    // With an idempotency key too: it cannot be honoured, but the order goes through.
    let mut keyed = tonic::Request::new(request("effort", "USD"));
    keyed
        .metadata_mut()
        .insert("idempotency-key", "effort-1".parse().unwrap());
    shop.checkout().await.place_order(keyed).await.unwrap();
    assert_eq!(shop.downstream.payment.charges().len(), 1);
    assert_eq!(health(&shop).await, ServingStatus::Serving);
    let text = logs.text();
    assert!(text.contains("failed to save order to database"), "{text}");
}

#[tokio::test]
async fn a_schema_older_than_required_is_not_serving() {
    let shop = Shop::start(Persistence::Required).await;
    wait_for_health(&shop, ServingStatus::Serving).await;
    shop.sql("DELETE FROM schema_migrations").await;
    wait_for_health(&shop, ServingStatus::NotServing).await;
}
