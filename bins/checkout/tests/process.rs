//! The checkout binary as Kubernetes runs it: a config file, a password
//! file, the Online Boutique environment variables; then SIGTERM and SIGKILL.

mod common;

use std::collections::HashMap;
use std::fs;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{CARD, Shop, request};
use orders::config::Persistence;
use orders::money::Money;
use orders::proto::hipstershop::checkout_service_client::CheckoutServiceClient;
use orders::testkit::standins::Rpc;
use secrecy::ExposeSecret;
use tokio::io::AsyncReadExt as _;
use tokio::process::{Child, Command};
use tonic::transport::Channel;

/// The binary, configured from `shop`'s settings through files and env.
struct Process {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Process {
    fn spawn(shop: &Shop) -> Process {
        let dir = tempfile::tempdir().unwrap();
        let db = &shop.settings.database;
        let password = dir.path().join("password");
        fs::write(&password, db.password().unwrap().expose_secret()).unwrap();
        let config = dir.path().join("checkout.toml");
        fs::write(
            &config,
            format!(
                r#"[database]
host = "{host}"
port = {port}
name = "{name}"
user = "{user}"
password_file = "{password}"
sslmode = "verify-full"
sslrootcert = "{ca}"

[checkout]
health_check_interval = "200ms"
shutdown_grace = "10s"
"#,
                host = db.host,
                port = db.port,
                name = db.name,
                user = db.user,
                password = password.display(),
                ca = db.sslrootcert.as_ref().unwrap().display(),
            ),
        )
        .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_checkout"));
        command
            .arg("--config")
            .arg(&config)
            .env("PORT", port.to_string())
            .env("BOUTIQUE__CHECKOUT__LISTEN_ADDR", "127.0.0.1")
            .envs(shop.downstream.addrs())
            .env_remove("DATABASE_URL")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        Process {
            child: command.spawn().unwrap(),
            port,
            _dir: dir,
        }
    }

    async fn client(&self) -> CheckoutServiceClient<Channel> {
        let endpoint = format!("http://127.0.0.1:{}", self.port);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match Channel::from_shared(endpoint.clone())
                .unwrap()
                .connect()
                .await
            {
                Ok(channel) => return CheckoutServiceClient::new(channel),
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(error) => panic!("checkout never listened: {error}"),
            }
        }
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.id().unwrap().to_string();
        let status = std::process::Command::new("kill")
            .args(["-s", signal, &pid])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for exit; returns the exit code and everything printed.
    async fn finish(mut self) -> (Option<i32>, String) {
        let mut stdout = self.child.stdout.take().unwrap();
        let mut stderr = self.child.stderr.take().unwrap();
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("checkout did not exit")
            .unwrap();
        let mut output = String::new();
        stdout.read_to_string(&mut output).await.unwrap();
        stderr.read_to_string(&mut output).await.unwrap();
        (status.code(), output)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_in_flight_order_finish_and_exits_cleanly() {
    let shop = Shop::start(Persistence::Required).await;
    shop.fill_cart("patient", &[("OLJCESPC7Z", 1)]);
    shop.downstream
        .set_latency(Rpc::Charge, Duration::from_millis(1500));
    let process = Process::spawn(&shop);
    let mut client = process.client().await;

    let in_flight =
        tokio::spawn(async move { client.place_order(request("patient", "USD")).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    process.signal("TERM");
    let order = in_flight
        .await
        .unwrap()
        .expect("the in-flight order was cut off")
        .into_inner()
        .order
        .unwrap();

    let (code, output) = process.finish().await;
    assert_eq!(code, Some(0), "{output}");
    assert_eq!(
        shop.sql(&format!(
            "SELECT status FROM orders WHERE order_id = '{}'",
            order.order_id
        ))
        .await,
        ["completed"]
    );
    // The deployment guide's operator lines, in JSON.
    for line in [
        "Database URL provided, initializing database connection",
        "Successfully connected to PostgreSQL database",
        "Database connection established successfully",
        &format!("order {} saved to database successfully", order.order_id),
    ] {
        assert!(output.contains(line), "missing {line:?} in:\n{output}");
    }
    assert!(
        output.lines().all(|l| l.starts_with('{')),
        "non-JSON log line in:\n{output}"
    );
    // Neither the database password nor the card number.
    let password = shop
        .settings
        .database
        .password()
        .unwrap()
        .expose_secret()
        .to_owned();
    assert!(!output.contains(&password));
    assert!(!output.contains(CARD) && !output.contains(&CARD.replace('-', "")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_sigkill_under_load_every_charge_has_its_order() {
    let shop = Shop::start(Persistence::Required).await;
    // Distinct totals per user let a charge be matched to its user.
    let users: Vec<String> = (0..40).map(|i| format!("kill-{i}")).collect();
    for (i, user) in users.iter().enumerate() {
        shop.fill_cart(user, &[("OLJCESPC7Z", i32::try_from(i).unwrap() + 1)]);
    }
    shop.downstream
        .set_latency(Rpc::ShipOrder, Duration::from_millis(40));
    shop.downstream
        .set_latency(Rpc::Charge, Duration::from_millis(20));
    let process = Process::spawn(&shop);
    let client = process.client().await;

    let orders: Vec<_> = users
        .iter()
        .map(|user| {
            let mut client = client.clone();
            let request = request(user, "USD");
            tokio::spawn(async move { client.place_order(request).await })
        })
        .collect();
    // Kill it in the middle of the work.
    let deadline = Instant::now() + Duration::from_secs(20);
    while shop.downstream.payment.charges().len() < 10 {
        assert!(Instant::now() < deadline, "no charges happened");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    process.signal("KILL");
    let _ = process.finish().await;
    for order in orders {
        let _ = order.await;
    }

    let charges = shop.downstream.payment.charges();
    assert!(!charges.is_empty());
    let rows = shop
        .sql("SELECT user_id || '|' || total::text || '|' || status || '|' || coalesce(payment_transaction_id, '') || '|' || coalesce(shipping_tracking_id, '') FROM orders")
        .await;
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.split('|').map(str::to_owned).collect())
        .collect();
    let by_user: HashMap<&str, &Vec<String>> = rows.iter().map(|r| (r[0].as_str(), r)).collect();
    for charge in &charges {
        let amount = Money::try_from(&charge.amount).unwrap();
        let user = users
            .iter()
            .find(|u| {
                let i: u32 = u.trim_start_matches("kill-").parse().unwrap();
                let expected = Money::new("USD", 19, 990_000_000)
                    .unwrap()
                    .checked_mul(i + 1)
                    .unwrap()
                    .checked_add(&Money::new("USD", 8, 990_000_000).unwrap())
                    .unwrap();
                expected == amount
            })
            .expect("a charge matches no user's cart");
        let row = by_user
            .get(user.as_str())
            .unwrap_or_else(|| panic!("charge of {amount} for {user} has no order row"));
        let stored: rust_decimal::Decimal = row[1].parse().unwrap();
        assert_eq!(Money::from_decimal("USD", stored).unwrap(), amount);
    }
    for row in &rows {
        if row[2] == "completed" {
            assert!(
                !row[3].is_empty() && !row[4].is_empty(),
                "completed without ids: {row:?}"
            );
        }
    }
}
