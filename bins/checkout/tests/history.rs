//! OrderHistory, health and reflection on the same port as PlaceOrder.

mod common;

use std::collections::HashSet;

use common::{Shop, request};
use orders::config::Persistence;
use orders::proto::boutique::orders::v1::{GetOrderRequest, ListOrdersRequest, OrderStatus};
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

#[tokio::test]
async fn a_users_orders_come_back_newest_first_in_pages() {
    let shop = Shop::start(Persistence::Required).await;
    let mut placed = Vec::new();
    for _ in 0..5 {
        shop.fill_cart("reader", &[("OLJCESPC7Z", 2), ("66VCHSJNUP", 1)]);
        let order = shop
            .checkout()
            .await
            .place_order(request("reader", "EUR"))
            .await
            .unwrap()
            .into_inner()
            .order
            .unwrap();
        placed.push(order.order_id);
    }
    shop.fill_cart("someone-else", &[("OLJCESPC7Z", 1)]);
    shop.checkout()
        .await
        .place_order(request("someone-else", "USD"))
        .await
        .unwrap();

    let mut history = shop.history().await;
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = history
            .list_orders(ListOrdersRequest {
                user_id: "reader".into(),
                page_size: 2,
                page_token: token.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        assert!(page.orders.len() <= 2);
        for order in &page.orders {
            assert_eq!(order.user_id, "reader");
            assert_eq!(order.status, OrderStatus::Completed as i32);
            assert_eq!(order.items.len(), 2);
            assert_eq!(order.total.as_ref().unwrap().currency_code, "EUR");
            assert!(!order.payment_transaction_id.is_empty());
            assert_eq!(order.card_last4, "1111");
            seen.push(order.order_id.clone());
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(pages, 3);
    placed.reverse();
    assert_eq!(seen, placed, "newest first, each order once");

    let one = history
        .get_order(GetOrderRequest {
            order_id: placed[0].clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(one.order_id, placed[0]);
    assert!(one.created_at.is_some());
}

#[tokio::test]
async fn history_requests_with_bad_input_are_refused_clearly() {
    let shop = Shop::start(Persistence::Required).await;
    let mut history = shop.history().await;
    let status = history
        .get_order(GetOrderRequest {
            order_id: "not-a-uuid".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = history
        .get_order(GetOrderRequest {
            order_id: uuid::Uuid::now_v7().to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    for (request, needle) in [
        (
            ListOrdersRequest {
                user_id: String::new(),
                ..Default::default()
            },
            "user_id",
        ),
        (
            ListOrdersRequest {
                user_id: "u".into(),
                page_size: -1,
                ..Default::default()
            },
            "page_size",
        ),
        (
            ListOrdersRequest {
                user_id: "u".into(),
                page_token: "garbage".into(),
                ..Default::default()
            },
            "page_token",
        ),
    ] {
        let status = history.list_orders(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains(needle), "{}", status.message());
    }
    // An oversized page is capped, not refused.
    let page = history
        .list_orders(ListOrdersRequest {
            user_id: "u".into(),
            page_size: 1_000_000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(page.orders.is_empty());
}

#[tokio::test]
async fn health_answers_for_the_server_and_each_service() {
    let shop = Shop::start(Persistence::Required).await;
    let mut health = HealthClient::new(shop.channel().await);
    for service in checkout::health::SERVICES {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }
    let mut watch = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);
}

#[tokio::test]
async fn reflection_lists_every_service() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let shop = Shop::start(Persistence::Off).await;
    let mut client = ServerReflectionClient::new(shop.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(futures_util::stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer");
    };
    let names: HashSet<String> = list.service.into_iter().map(|s| s.name).collect();
    for wanted in [
        "hipstershop.CheckoutService",
        "boutique.orders.v1.OrderHistory",
    ] {
        assert!(names.contains(wanted), "{names:?}");
    }
}
