//! `cargo xtask demo`: the whole system on this machine, configured the way
//! the Helm chart configures it (a config file, secret files, environment).
//!
//! A throwaway TLS PostgreSQL, `migrator up`, the six Online Boutique
//! stand-ins and `checkout` as processes of their own; orders for a few users
//! in several currencies (one card declined), read back through OrderHistory
//! and straight from SQL; a backup taken, listed and verified; then everything
//! shuts down.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use orders::db::Database;
use orders::money::Money;
use orders::proto::boutique::orders::v1::ListOrdersRequest;
use orders::proto::boutique::orders::v1::order_history_client::OrderHistoryClient;
use orders::proto::hipstershop::cart_service_client::CartServiceClient;
use orders::proto::hipstershop::checkout_service_client::CheckoutServiceClient;
use orders::proto::hipstershop::{
    AddItemRequest, Address, CartItem, CreditCardInfo, PlaceOrderRequest,
};
use orders::testkit::PgCluster;
use orders::testkit::standins::Downstream;
use tonic::transport::Channel;

/// Hidden subcommand: the stand-ins as a process of their own.
pub const SERVE_STANDINS: &str = "serve-standins";

/// One order of the demo: user, currency, cart, card.
struct DemoOrder {
    user: &'static str,
    currency: &'static str,
    cart: &'static [(&'static str, i32)],
    card: &'static str,
    expires: (i32, i32),
}

const ORDERS: &[DemoOrder] = &[
    DemoOrder {
        user: "alice",
        currency: "USD",
        cart: &[("OLJCESPC7Z", 2), ("66VCHSJNUP", 1)],
        card: "4111-1111-1111-1111",
        expires: (2030, 1),
    },
    DemoOrder {
        user: "bob",
        currency: "EUR",
        cart: &[("1YMWWN1N4O", 1)],
        card: "5555-5555-5555-4444",
        expires: (2031, 6),
    },
    DemoOrder {
        user: "chiyo",
        currency: "JPY",
        cart: &[("66VCHSJNUP", 3), ("OLJCESPC7Z", 1)],
        card: "4111-1111-1111-1111",
        expires: (2029, 12),
    },
    DemoOrder {
        user: "alice",
        currency: "GBP",
        cart: &[("L9ECAV7KIM", 1)],
        card: "4111-1111-1111-1111",
        expires: (2030, 1),
    },
    // Expired: the payment service refuses it, nothing ships.
    DemoOrder {
        user: "dave",
        currency: "USD",
        cart: &[("OLJCESPC7Z", 1)],
        card: "4432-8015-6152-0454",
        expires: (2020, 1),
    },
];

pub fn run(root: &Path, cargo: impl Fn(&[&str]) -> anyhow::Result<()>) -> anyhow::Result<()> {
    step("Building checkout, migrator and backup");
    cargo(&[
        "build",
        "--package",
        "checkout",
        "--package",
        "migrator",
        "--package",
        "backup",
    ])?;
    let bin = root.join("target").join("debug");
    tokio::runtime::Runtime::new()?.block_on(demo(&bin))
}

async fn demo(bin: &Path) -> anyhow::Result<()> {
    step(
        "Starting a throwaway PostgreSQL: TLS only (hostssl), SCRAM passwords, a CA made just now",
    );
    let cluster = PgCluster::start().context("cannot start PostgreSQL (is it installed?)")?;
    let owner_password = secret();
    cluster
        .superuser_execute(
            "postgres",
            &format!("CREATE ROLE orders_owner LOGIN CREATEROLE PASSWORD '{owner_password}'"),
        )
        .await?;
    cluster
        .superuser_execute("postgres", "CREATE DATABASE ordersdb OWNER orders_owner")
        .await?;
    say(&format!(
        "listening on localhost:{}, database ordersdb owned by orders_owner",
        cluster.port()
    ));

    // Laid out as the chart mounts it: a ConfigMap file and Secret files.
    let mounts = tempfile::tempdir()?;
    let files = Mounts::write(mounts.path(), &cluster, &owner_password)?;
    say(&format!("config file {}", files.config.display()));

    step("migrator up (as the schema owner; creates the checkout and backup roles)");
    let output = Command::new(bin.join("migrator"))
        .arg("--config")
        .arg(&files.config)
        .arg("up")
        .env("BOUTIQUE__DATABASE__USER", "orders_owner")
        .env("BOUTIQUE__DATABASE__PASSWORD_FILE", &files.owner_password)
        .output()
        .context("cannot run migrator")?;
    echo("migrator", &String::from_utf8_lossy(&output.stdout));
    echo("migrator", &String::from_utf8_lossy(&output.stderr));
    if !output.status.success() {
        bail!("migrator failed ({})", output.status);
    }

    step("Starting the six Online Boutique stand-ins as their own process");
    let (mut standins, addrs) = spawn_standins()?;
    for (name, addr) in &addrs {
        say(&format!("{name}={addr}"));
    }

    step("Starting checkout (as orderservice, environment as in the upstream manifests)");
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut checkout = Command::new(bin.join("checkout"))
        .arg("--config")
        .arg(&files.config)
        .env(
            "BOUTIQUE__DATABASE__PASSWORD_FILE",
            &files.checkout_password,
        )
        .env("BOUTIQUE__CHECKOUT__LISTEN_ADDR", "127.0.0.1")
        .env("PORT", port.to_string())
        .envs(&addrs)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start checkout")?;
    forward("checkout", checkout.stdout.take());
    forward("checkout", checkout.stderr.take());
    let mut result = shop(port, &addrs["CART_SERVICE_ADDR"], &cluster, &owner_password).await;
    if result.is_ok() {
        result = backup(bin, &files, mounts.path());
    }

    step("Shutting down: SIGTERM to checkout, then the stand-ins, then PostgreSQL");
    let status = stop(&mut checkout)?;
    say(&format!("checkout exited: {status}"));
    stop(&mut standins)?;
    drop(cluster);
    result?;
    say("done");
    Ok(())
}

async fn shop(
    port: u16,
    cart_addr: &str,
    cluster: &PgCluster,
    owner_password: &str,
) -> anyhow::Result<()> {
    let channel = wait_until_serving(port).await?;
    let mut checkout = CheckoutServiceClient::new(channel.clone());
    let mut cart = CartServiceClient::new(
        Channel::from_shared(format!("http://{cart_addr}"))?
            .connect()
            .await?,
    );

    step("Placing orders");
    for order in ORDERS {
        for (product, quantity) in order.cart {
            cart.add_item(AddItemRequest {
                user_id: order.user.into(),
                item: Some(CartItem {
                    product_id: (*product).into(),
                    quantity: *quantity,
                }),
            })
            .await?;
        }
        let request = PlaceOrderRequest {
            user_id: order.user.into(),
            user_currency: order.currency.into(),
            address: Some(Address {
                street_address: "1600 Amphitheatre Parkway".into(),
                city: "Mountain View".into(),
                state: "CA".into(),
                country: "United States".into(),
                zip_code: 94043,
            }),
            email: format!("{}@example.com", order.user),
            credit_card: Some(CreditCardInfo {
                credit_card_number: order.card.into(),
                credit_card_cvv: 123,
                credit_card_expiration_year: order.expires.0,
                credit_card_expiration_month: order.expires.1,
            }),
        };
        match checkout.place_order(request).await {
            Ok(response) => {
                let result = response.into_inner().order.context("empty response")?;
                let mut total =
                    Money::try_from(result.shipping_cost.as_ref().context("no shipping cost")?)?;
                for item in &result.items {
                    let cost = Money::try_from(item.cost.as_ref().context("no cost")?)?;
                    let quantity = item.item.as_ref().map_or(0, |i| i.quantity);
                    total = total.checked_add(&cost.checked_mul(u32::try_from(quantity)?)?)?;
                }
                say(&format!(
                    "{:<6} {} order {}  total {total}  tracking {}",
                    order.user, order.currency, result.order_id, result.shipping_tracking_id
                ));
            }
            Err(status) => say(&format!(
                "{:<6} {} refused: {:?}: {}",
                order.user,
                order.currency,
                status.code(),
                status.message()
            )),
        }
    }

    step("Reading them back through boutique.orders.v1.OrderHistory/ListOrders");
    let mut history = OrderHistoryClient::new(channel);
    for user in ["alice", "bob", "chiyo", "dave"] {
        let page = history
            .list_orders(ListOrdersRequest {
                user_id: user.into(),
                page_size: 10,
                page_token: String::new(),
            })
            .await?
            .into_inner();
        for order in page.orders {
            let total = order.total.as_ref().map(Money::try_from).transpose()?;
            say(&format!(
                "{user:<6} {}  {:<9}  {:>14}  {} item(s){}",
                order.order_id,
                status_name(order.status),
                total.map(|t| t.to_string()).unwrap_or_default(),
                order.items.len(),
                if order.failure_reason.is_empty() {
                    String::new()
                } else {
                    format!("  ({})", order.failure_reason)
                },
            ));
        }
    }

    step("And straight from SQL (what `psql -U orderservice -d ordersdb` shows)");
    let mut settings = cluster.superuser_settings("ordersdb");
    settings.user = "orders_owner".into();
    settings.password = Some(owner_password.to_owned().into());
    let client = Database::new(&settings, "demo")?.connect().await?;
    let sql = "SELECT order_id::text, user_id, status, total::text || ' ' || total_currency, \
               coalesce(card_last4, ''), to_char(created_at, 'HH24:MI:SS.MS') \
               FROM orders ORDER BY created_at";
    say(&format!("{sql};"));
    for row in client.query(sql, &[]).await? {
        say(&format!(
            "{} | {:<6} | {:<9} | {:>22} | {} | {}",
            row.get::<_, String>(0),
            row.get::<_, String>(1),
            row.get::<_, String>(2),
            row.get::<_, String>(3),
            row.get::<_, String>(4),
            row.get::<_, String>(5),
        ));
    }
    let events: i64 = client
        .query_one("SELECT count(*) FROM order_events", &[])
        .await?
        .get(0);
    say(&format!("{events} rows in the order_events audit trail"));
    Ok(())
}

/// A backup as the CronJob takes it (the backup role, SELECT only), then
/// `list` and `verify latest`.
fn backup(bin: &Path, files: &Mounts, dir: &Path) -> anyhow::Result<()> {
    step("backup run, list, verify latest (as orders_backup, to a directory)");
    let destination = format!("file://{}", dir.join("backups").display());
    for args in [&["run"][..], &["list"], &["verify", "latest"]] {
        let output = Command::new(bin.join("backup"))
            .arg("--config")
            .arg(&files.config)
            .args(["--destination", &destination])
            .args(args)
            .env("BOUTIQUE__DATABASE__USER", "orders_backup")
            .env("BOUTIQUE__DATABASE__PASSWORD_FILE", &files.backup_password)
            .output()
            .context("cannot run backup")?;
        say(&format!("$ backup {}", args.join(" ")));
        echo("backup", &String::from_utf8_lossy(&output.stdout));
        echo("backup", &String::from_utf8_lossy(&output.stderr));
        if !output.status.success() {
            bail!("backup {} failed ({})", args.join(" "), output.status);
        }
    }
    Ok(())
}

fn status_name(status: i32) -> &'static str {
    use orders::proto::boutique::orders::v1::OrderStatus;
    match OrderStatus::try_from(status) {
        Ok(OrderStatus::Pending) => "pending",
        Ok(OrderStatus::Paid) => "paid",
        Ok(OrderStatus::Shipped) => "shipped",
        Ok(OrderStatus::Completed) => "completed",
        Ok(OrderStatus::Failed) => "failed",
        _ => "unknown",
    }
}

/// The files the chart would mount.
struct Mounts {
    config: PathBuf,
    owner_password: PathBuf,
    checkout_password: PathBuf,
    backup_password: PathBuf,
}

impl Mounts {
    fn write(dir: &Path, cluster: &PgCluster, owner_password: &str) -> anyhow::Result<Mounts> {
        let secrets = dir.join("secrets");
        let tls = dir.join("tls");
        fs::create_dir_all(&secrets)?;
        fs::create_dir_all(&tls)?;
        let ca = tls.join("ca.crt");
        fs::copy(cluster.ca_cert(), &ca)?;
        let owner = secrets.join("owner-password");
        let checkout = secrets.join("checkout-password");
        let backup = secrets.join("backup-password");
        fs::write(&owner, owner_password)?;
        fs::write(&checkout, secret())?;
        fs::write(&backup, secret())?;
        let config = dir.join("orders.toml");
        fs::write(
            &config,
            format!(
                r#"# As the Helm chart's ConfigMap renders it; secrets are files.
[database]
host = "localhost"
port = {port}
name = "ordersdb"
user = "orderservice"
sslmode = "verify-full"
sslrootcert = "{ca}"

[roles]
checkout = "orderservice"
checkout_password_file = "{checkout}"
backup = "orders_backup"
backup_password_file = "{backup}"
"#,
                port = cluster.port(),
                ca = ca.display(),
                checkout = checkout.display(),
                backup = backup.display(),
            ),
        )?;
        Ok(Mounts {
            config,
            owner_password: owner,
            checkout_password: checkout,
            backup_password: backup,
        })
    }
}

fn spawn_standins() -> anyhow::Result<(Child, BTreeMap<String, String>)> {
    let mut child = Command::new(std::env::current_exe()?)
        .arg(SERVE_STANDINS)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start the stand-ins")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let addrs: BTreeMap<String, String> =
        serde_json::from_str(&line).with_context(|| format!("stand-ins said {line:?}"))?;
    Ok((child, addrs))
}

/// The hidden `serve-standins` subcommand: serves until stdin closes (the
/// demo holds it, so the stand-ins never outlive it).
pub fn serve_standins() -> anyhow::Result<()> {
    tokio::runtime::Runtime::new()?.block_on(async {
        let downstream = Downstream::start().await?;
        println!("{}", serde_json::to_string(&downstream.addrs())?);
        tokio::task::spawn_blocking(|| {
            let mut sink = String::new();
            while std::io::stdin()
                .read_line(&mut sink)
                .map(|n| n > 0)
                .unwrap_or(false)
            {}
        })
        .await?;
        downstream.shutdown().await;
        Ok(())
    })
}

async fn wait_until_serving(port: u16) -> anyhow::Result<Channel> {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(channel) = Channel::from_shared(format!("http://127.0.0.1:{port}"))?
            .connect()
            .await
        {
            let status = HealthClient::new(channel.clone())
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .map(|r| r.into_inner().status);
            if matches!(status, Ok(s) if s == ServingStatus::Serving as i32) {
                say("checkout is SERVING");
                return Ok(channel);
            }
        }
        if Instant::now() > deadline {
            bail!("checkout did not become SERVING within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn stop(child: &mut Child) -> anyhow::Result<std::process::ExitStatus> {
    // SIGTERM, as Kubernetes sends; stdin closing stops the stand-ins too.
    drop(child.stdin.take());
    let _ = Command::new("kill")
        .args(["-s", "TERM", &child.id().to_string()])
        .status();
    Ok(child.wait()?)
}

fn forward(name: &'static str, stream: Option<impl std::io::Read + Send + 'static>) {
    if let Some(stream) = stream {
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                println!("    {name} | {line}");
            }
        });
    }
}

fn echo(name: &str, text: &str) {
    for line in text.lines() {
        println!("    {name} | {line}");
    }
}

fn step(text: &str) {
    println!("\n==> {text}");
}

fn say(text: &str) {
    println!("    {text}");
}

fn secret() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}
