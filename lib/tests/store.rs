//! The order repository against a real PostgreSQL, logged in as the
//! checkout role (so the grants are exercised too).

use std::time::Duration;

use orders::db::Database;
use orders::money::Money;
use orders::schema::Migrator;
use orders::store::{
    Address, Created, Cursor, LineItem, NewOrder, OrderStatus, Outcome, Store, StoreError,
};
use orders::testkit::{PgCluster, TestDb};
use uuid::Uuid;

async fn store() -> (TestDb, Store) {
    let db = PgCluster::shared().create_database().await.unwrap();
    let settings = db.settings();
    let mut owner = Database::new(&settings.database, "t")
        .unwrap()
        .connect()
        .await
        .unwrap();
    Migrator::new(Duration::from_secs(30))
        .up(&mut owner, &settings.roles)
        .await
        .unwrap();
    let checkout = db.settings_as(&settings.roles.checkout, &db.role_password("checkout"));
    let pool = Database::new(&checkout, "t").unwrap().pool();
    (db, Store::new(pool))
}

fn money(units: i64, nanos: i32) -> Money {
    Money::new("EUR", units, nanos).unwrap()
}

fn order(user: &str) -> NewOrder {
    let items = vec![
        LineItem {
            product_id: "OLJCESPC7Z".into(),
            quantity: 3,
            unit_cost: money(17, 390_000_000),
        },
        LineItem {
            product_id: "66VCHSJNUP \"quoted\" \\ ünïcode".into(),
            quantity: 1,
            unit_cost: money(30, 430_000_001),
        },
    ];
    NewOrder {
        order_id: Uuid::now_v7(),
        user_id: user.into(),
        user_email: format!("{user}@example.com"),
        user_currency: "EUR".into(),
        card_last4: Some("0454".into()),
        shipping_cost: money(7, 820_000_000),
        shipping_address: Address {
            street_address: "1600 Amphitheatre Pkwy\nBuilding 4".into(),
            city: "Mountain View".into(),
            state: "CA".into(),
            country: "United States".into(),
            zip_code: 94043,
        },
        // 3 × 17.39 + 30.430000001 + 7.82 = 90.420000001
        total: money(90, 420_000_001),
        items,
        idempotency_key: None,
    }
}

#[tokio::test]
async fn a_pending_order_reads_back_exactly() {
    let (_db, store) = store().await;
    let new = order("alice");
    assert_eq!(store.create_pending(&new).await.unwrap(), Created::New);
    let stored = store.get(new.order_id).await.unwrap().unwrap();
    assert_eq!(stored.status, OrderStatus::Pending);
    assert_eq!(stored.user_id, new.user_id);
    assert_eq!(stored.user_email, new.user_email);
    assert_eq!(stored.user_currency, "EUR");
    assert_eq!(stored.card_last4.as_deref(), Some("0454"));
    assert_eq!(stored.shipping_cost, new.shipping_cost);
    assert_eq!(stored.shipping_address, new.shipping_address);
    assert_eq!(stored.items, new.items);
    assert_eq!(stored.total, new.total);
    assert_eq!(stored.payment_transaction_id, None);
    assert!(store.get(Uuid::now_v7()).await.unwrap().is_none());
}

#[tokio::test]
async fn finishing_records_ids_and_one_event_per_change() {
    let (db, store) = store().await;
    let completed = order("bob");
    let declined = order("bob");
    let unshipped = order("bob");
    for o in [&completed, &declined, &unshipped] {
        store.create_pending(o).await.unwrap();
    }
    store
        .finish(
            completed.order_id,
            &Outcome::Completed {
                transaction_id: "tx-1".into(),
                tracking_id: "AB-12345-67890123".into(),
            },
        )
        .await
        .unwrap();
    store
        .finish(
            declined.order_id,
            &Outcome::Declined {
                reason: "Credit card info is invalid".into(),
            },
        )
        .await
        .unwrap();
    store
        .finish(
            unshipped.order_id,
            &Outcome::ShippingFailed {
                transaction_id: "tx-3".into(),
                reason: "shipping error".into(),
            },
        )
        .await
        .unwrap();

    let c = store.get(completed.order_id).await.unwrap().unwrap();
    assert_eq!(c.status, OrderStatus::Completed);
    assert_eq!(c.payment_transaction_id.as_deref(), Some("tx-1"));
    assert_eq!(c.shipping_tracking_id.as_deref(), Some("AB-12345-67890123"));
    let d = store.get(declined.order_id).await.unwrap().unwrap();
    assert_eq!(d.status, OrderStatus::Failed);
    assert_eq!(
        d.failure_reason.as_deref(),
        Some("Credit card info is invalid")
    );
    assert_eq!(d.payment_transaction_id, None);
    let u = store.get(unshipped.order_id).await.unwrap().unwrap();
    assert_eq!(u.status, OrderStatus::Failed);
    assert_eq!(u.payment_transaction_id.as_deref(), Some("tx-3"));

    let owner = Database::new(&db.settings().database, "t")
        .unwrap()
        .connect()
        .await
        .unwrap();
    let events = |id: Uuid| {
        let owner = &owner;
        async move {
            owner
                .query(
                    "SELECT status FROM order_events WHERE order_id = $1 ORDER BY event_id",
                    &[&id],
                )
                .await
                .unwrap()
                .iter()
                .map(|r| r.get::<_, String>(0))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        events(completed.order_id).await,
        ["pending", "paid", "shipped", "completed"]
    );
    assert_eq!(events(declined.order_id).await, ["pending", "failed"]);
    assert_eq!(
        events(unshipped.order_id).await,
        ["pending", "paid", "failed"]
    );

    // A finished order cannot be finished again.
    let again = store
        .finish(
            completed.order_id,
            &Outcome::Declined {
                reason: "late".into(),
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(again, StoreError::NotPending(_)), "{again:?}");
}

#[tokio::test]
async fn a_repeated_idempotency_key_writes_nothing() {
    let (_db, store) = store().await;
    let mut first = order("carol");
    first.idempotency_key = Some("key-1".into());
    let mut second = order("carol");
    second.idempotency_key = Some("key-1".into());
    assert_eq!(store.create_pending(&first).await.unwrap(), Created::New);
    assert_eq!(
        store.create_pending(&second).await.unwrap(),
        Created::Duplicate
    );
    assert!(store.get(second.order_id).await.unwrap().is_none());
    let found = store
        .get_by_idempotency_key("key-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.order_id, first.order_id);
    assert_eq!(
        store.list_for_user("carol", 10, None).await.unwrap().len(),
        1
    );
}

#[tokio::test]
async fn history_pages_newest_first_without_gaps_or_repeats() {
    let (_db, store) = store().await;
    let mut ids = Vec::new();
    for _ in 0..7 {
        let o = order("dave");
        store.create_pending(&o).await.unwrap();
        ids.push(o.order_id);
    }
    store.create_pending(&order("erin")).await.unwrap();

    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store.list_for_user("dave", 3, cursor).await.unwrap();
        assert!(page.len() <= 3);
        let Some(last) = page.last() else { break };
        cursor = Some(Cursor {
            created_at: last.created_at,
            order_id: last.order_id,
        });
        seen.extend(page.iter().map(|o| o.order_id));
    }
    ids.reverse();
    assert_eq!(seen, ids, "newest first, every order once");
}

#[tokio::test]
async fn an_amount_in_another_currency_is_refused_before_writing() {
    let (_db, store) = store().await;
    let mut bad = order("frank");
    bad.items[0].unit_cost = Money::new("USD", 1, 0).unwrap();
    let error = store.create_pending(&bad).await.unwrap_err();
    assert!(error.to_string().contains("USD"), "{error}");
    assert!(store.get(bad.order_id).await.unwrap().is_none());
}
