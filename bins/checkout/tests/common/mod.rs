//! A checkout server in-process against a real TLS PostgreSQL and the
//! downstream stand-ins, plus a log capture.

#![allow(dead_code)] // each test binary uses a different part

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use checkout::server::Running;
use orders::config::{Persistence, Settings, TelemetrySettings};
use orders::db::Database;
use orders::proto::boutique::orders::v1::order_history_client::OrderHistoryClient;
use orders::proto::hipstershop::checkout_service_client::CheckoutServiceClient;
use orders::proto::hipstershop::{Address, CreditCardInfo, PlaceOrderRequest};
use orders::schema::Migrator;
use orders::store::Store;
use orders::testkit::standins::Downstream;
use orders::testkit::{PgCluster, TestDb};
use tonic::transport::Channel;

/// A Visa number that passes the Luhn check.
pub const CARD: &str = "4111-1111-1111-1111";

/// A running checkout with everything it talks to.
pub struct Shop {
    pub db: TestDb,
    pub downstream: Downstream,
    pub server: Option<Running>,
    pub settings: Settings,
    pub store: Store,
}

impl Shop {
    /// A shop on the shared cluster.
    pub async fn start(persistence: Persistence) -> Shop {
        Self::start_in(PgCluster::shared(), persistence).await
    }

    /// A shop on `cluster` (tests that stop the database use their own).
    pub async fn start_in(cluster: &'static PgCluster, persistence: Persistence) -> Shop {
        let db = cluster.create_database().await.unwrap();
        let owner = db.settings();
        let mut client = Database::new(&owner.database, "test")
            .unwrap()
            .connect()
            .await
            .unwrap();
        Migrator::new(Duration::from_secs(30))
            .up(&mut client, &owner.roles)
            .await
            .unwrap();
        let downstream = Downstream::start().await.unwrap();
        let mut settings = Settings {
            database: db.settings_as(&owner.roles.checkout, &db.role_password("checkout")),
            ..Settings::default()
        };
        settings.database.connect_timeout = Duration::from_secs(2);
        settings.database.pool_max_size = 32;
        let checkout = &mut settings.checkout;
        checkout.persistence = persistence;
        checkout.health_check_interval = Duration::from_millis(200);
        checkout.shutdown_grace = Duration::from_secs(5);
        let addrs = downstream.addrs();
        checkout.cart_addr = addrs["CART_SERVICE_ADDR"].clone();
        checkout.product_catalog_addr = addrs["PRODUCT_CATALOG_SERVICE_ADDR"].clone();
        checkout.currency_addr = addrs["CURRENCY_SERVICE_ADDR"].clone();
        checkout.shipping_addr = addrs["SHIPPING_SERVICE_ADDR"].clone();
        checkout.payment_addr = addrs["PAYMENT_SERVICE_ADDR"].clone();
        checkout.email_addr = addrs["EMAIL_SERVICE_ADDR"].clone();
        // The owner sees everything, for assertions.
        let store = Store::new(Database::new(&owner.database, "test").unwrap().pool());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = checkout::server::start(&settings, listener).await.unwrap();
        Shop {
            db,
            downstream,
            server: Some(server),
            settings,
            store,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.server.as_ref().unwrap().addr)
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.endpoint())
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    pub async fn checkout(&self) -> CheckoutServiceClient<Channel> {
        CheckoutServiceClient::new(self.channel().await)
    }

    pub async fn history(&self) -> OrderHistoryClient<Channel> {
        OrderHistoryClient::new(self.channel().await)
    }

    /// Puts `items` (product id, quantity) in `user`'s cart.
    pub fn fill_cart(&self, user: &str, items: &[(&str, i32)]) {
        for (product, quantity) in items {
            self.downstream.cart.add(user, product, *quantity);
        }
    }

    /// Runs SQL as the owner and returns the first column of every row as text.
    pub async fn sql(&self, query: &str) -> Vec<String> {
        let client = Database::new(&self.db.settings().database, "test")
            .unwrap()
            .connect()
            .await
            .unwrap();
        client
            .simple_query(query)
            .await
            .unwrap()
            .into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(row) => {
                    Some(row.get(0).unwrap_or("NULL").to_owned())
                }
                _ => None,
            })
            .collect()
    }
}

/// A well-formed request for `user` paying in `currency`.
pub fn request(user: &str, currency: &str) -> PlaceOrderRequest {
    PlaceOrderRequest {
        user_id: user.into(),
        user_currency: currency.into(),
        address: Some(Address {
            street_address: "1600 Amphitheatre Parkway".into(),
            city: "Mountain View".into(),
            state: "CA".into(),
            country: "United States".into(),
            zip_code: 94043,
        }),
        email: format!("{user}@example.com"),
        credit_card: Some(CreditCardInfo {
            credit_card_number: CARD.into(),
            credit_card_cvv: 672,
            credit_card_expiration_year: 2039,
            credit_card_expiration_month: 1,
        }),
    }
}

/// Log lines written while the guard lives (on this thread: tests use the
/// current-thread runtime, so the server's tasks log here too).
pub struct Logs {
    buffer: Arc<Mutex<Vec<u8>>>,
    _guard: tracing::dispatcher::DefaultGuard,
    _telemetry: orders::telemetry::Telemetry,
}

impl Logs {
    pub fn capture() -> Logs {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = {
            let buffer = buffer.clone();
            move || SharedWriter(buffer.clone())
        };
        let settings = TelemetrySettings {
            log_level: "info".into(),
            ..TelemetrySettings::default()
        };
        let (dispatch, telemetry) =
            orders::telemetry::build_subscriber(&settings, "checkoutservice", writer).unwrap();
        Logs {
            buffer,
            _guard: tracing::dispatcher::set_default(&dispatch),
            _telemetry: telemetry,
        }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.buffer.lock().unwrap()).into_owned()
    }
}

struct SharedWriter(Arc<Mutex<Vec<u8>>>);

impl Write for SharedWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
