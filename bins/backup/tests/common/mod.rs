//! What the backup tests share: databases with orders in them, the binary
//! run as an operator (or a CronJob) runs it, and table-by-table comparison.

#![allow(dead_code)] // each test binary uses its own part

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use orders::config::DatabaseSettings;
use orders::db::Database;
use orders::schema::Migrator;
use orders::testkit::{PgCluster, TestDb};
use secrecy::ExposeSecret as _;

/// The order tables and the history, with an order that makes dumps comparable.
pub const TABLES: &[(&str, &str)] = &[
    ("schema_migrations", "version"),
    ("orders", "order_id"),
    ("order_items", "order_id, line_no"),
    ("order_events", "event_id"),
];

/// Text that COPY and SQL quoting must carry unchanged.
pub const NASTY: &[&str] = &[
    "it's \"quoted\"",
    "back\\slash \\N \\. \\\\",
    "tab\there",
    "new\nline\r\ncarriage",
    "non-ASCII: Grüße, 注文, 🛒, ﬁ",
    "\\.",
    "",
    "trailing space ",
];

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A connection with `settings`.
pub async fn connect(settings: &DatabaseSettings) -> tokio_postgres::Client {
    Database::new(settings, "backup-test")
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// A fresh database, migrated by the migrator (roles and grants included).
pub async fn migrated_db() -> TestDb {
    let db = PgCluster::shared().create_database().await.unwrap();
    migrate(&db).await;
    db
}

/// An empty database: not even the history table.
pub async fn empty_db() -> TestDb {
    PgCluster::shared().create_database().await.unwrap()
}

pub async fn migrate(db: &TestDb) {
    let settings = db.settings();
    let mut client = connect(&settings.database).await;
    Migrator::new(Duration::from_secs(30))
        .up(&mut client, &settings.roles)
        .await
        .unwrap();
}

/// Settings of the backup role (`SELECT` only).
pub fn backup_role(db: &TestDb) -> DatabaseSettings {
    let roles = db.settings().roles;
    db.settings_as(&roles.backup, &db.role_password("backup"))
}

/// Orders whose text holds everything COPY must escape, with NULLs, items
/// and events; `first` numbers them so several calls do not collide.
pub async fn seed_nasty(client: &tokio_postgres::Client, first: u32, count: u32) {
    for n in first..first + count {
        let nasty = NASTY[n as usize % NASTY.len()];
        let other = NASTY[(n as usize + 3) % NASTY.len()];
        let id = format!("00000000-0000-7000-8000-{n:012}");
        let status = ["pending", "paid", "shipped", "completed", "failed"][n as usize % 5];
        let transaction =
            (status != "pending" && status != "failed").then(|| format!("tx-{other}"));
        let tracking = matches!(status, "shipped" | "completed").then(|| format!("track\t{n}"));
        let failure = (status == "failed").then_some(nasty);
        let card = (n % 2 == 0).then_some("4242");
        let key = (n % 3 == 0).then(|| format!("key-{n}-{nasty}"));
        client
            .execute(
                "INSERT INTO orders (order_id, user_id, user_email, user_currency, status, failure_reason, \
                 payment_transaction_id, card_last4, shipping_tracking_id, shipping_cost, shipping_cost_currency, \
                 shipping_street_address, shipping_city, shipping_state, shipping_country, shipping_zip_code, \
                 total, total_currency, idempotency_key, created_at) \
                 VALUES ($1::text::uuid, $2, $3, 'EUR', $4, $5, $6, $7, $8, $9::text::numeric, 'EUR', \
                 $10, $11, $12, $13, $14, $15::text::numeric, 'EUR', $16, \
                 '2026-11-25 05:19:00.123456+00'::timestamptz + make_interval(secs => $14::int))",
                &[
                    &id,
                    &format!("user {nasty}"),
                    &format!("{other}@example.com"),
                    &status,
                    &failure,
                    &transaction,
                    &card,
                    &tracking,
                    &format!("{n}.000000001"),
                    &nasty,
                    &other,
                    &"",
                    &"Ελλάδα",
                    &(n as i32),
                    &format!("{}.123456789", 1000 + n),
                    &key,
                ],
            )
            .await
            .unwrap();
        for line in 1..=2 {
            client
                .execute(
                    "INSERT INTO order_items (order_id, line_no, product_id, quantity, cost, cost_currency) \
                     VALUES ($1::text::uuid, $2, $3, $4, $5::text::numeric, 'USD')",
                    &[&id, &line, &format!("product {other}"), &(line * 3), &"0.999999999"],
                )
                .await
                .unwrap();
        }
        let detail = serde_json::json!({ "note": nasty, "other": other, "n": n, "null": null });
        client
            .execute(
                "INSERT INTO order_events (order_id, status, detail) VALUES ($1::text::uuid, $2, $3::text::jsonb)",
                &[&id, &status, &detail.to_string()],
            )
            .await
            .unwrap();
    }
}

/// `count` plain orders with two items and an event each, made by the
/// server (fast), numbered from `first`.
pub async fn seed_bulk(client: &tokio_postgres::Client, first: i64, count: i64) {
    client
        .batch_execute(&format!(
            "INSERT INTO orders (order_id, user_id, user_email, user_currency, status, shipping_cost, \
             shipping_cost_currency, shipping_street_address, shipping_city, shipping_state, shipping_country, \
             shipping_zip_code, total, total_currency) \
             SELECT ('00000000-0000-7000-9000-' || lpad(n::text, 12, '0'))::uuid, 'user-' || n, \
             'u' || n || '@example.com', 'USD', 'pending', 1.5, 'USD', n || ' Main Street', 'City', 'ST', 'Country', \
             10000 + n % 1000, 42.25, 'USD' FROM generate_series({first}, {last}) AS n;
             INSERT INTO order_items (order_id, line_no, product_id, quantity, cost, cost_currency) \
             SELECT ('00000000-0000-7000-9000-' || lpad(n::text, 12, '0'))::uuid, line, 'P' || line, line, 20.375, 'USD' \
             FROM generate_series({first}, {last}) AS n, generate_series(1, 2) AS line;
             INSERT INTO order_events (order_id, status, detail) \
             SELECT ('00000000-0000-7000-9000-' || lpad(n::text, 12, '0'))::uuid, 'pending', '{{\"bulk\": true}}' \
             FROM generate_series({first}, {last}) AS n;",
            last = first + count - 1
        ))
        .await
        .unwrap();
}

/// Every table as COPY text, in a fixed order, plus where the identity
/// sequence stands: two databases with equal dumps hold the same data.
pub async fn dump(settings: &DatabaseSettings) -> BTreeMap<String, String> {
    let client = connect(settings).await;
    let mut tables = BTreeMap::new();
    for (table, order) in TABLES {
        // Every column: for the history, applied_at too is the source's.
        let stream = client
            .copy_out(&format!(
                "COPY (SELECT * FROM {table} ORDER BY {order}) TO STDOUT"
            ))
            .await
            .unwrap();
        let mut stream = pin!(stream);
        let mut data = Vec::new();
        while let Some(chunk) = stream.next().await {
            data.extend_from_slice(&chunk.unwrap());
        }
        tables.insert(table.to_string(), String::from_utf8(data).unwrap());
    }
    let next: i64 = client
        .query_one(
            "SELECT last_value + CASE WHEN is_called THEN 1 ELSE 0 END FROM order_events_event_id_seq",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    tables.insert("next event_id".into(), next.to_string());
    tables
}

/// Rows per table.
pub async fn counts(settings: &DatabaseSettings) -> BTreeMap<String, i64> {
    let client = connect(settings).await;
    let mut counts = BTreeMap::new();
    for (table, _) in TABLES.iter().skip(1) {
        let n: i64 = client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap()
            .get(0);
        counts.insert(table.to_string(), n);
    }
    counts
}

/// Whether `table` exists in the database.
pub async fn has_table(settings: &DatabaseSettings, table: &str) -> bool {
    connect(settings)
        .await
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
        .await
        .unwrap()
        .get(0)
}

/// A directory for one test: configuration, secret files, backups.
pub struct Workspace {
    pub dir: tempfile::TempDir,
}

impl Workspace {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The volume destination's directory and URL.
    pub fn volume(&self) -> (PathBuf, String) {
        let dir = self.path("backups");
        let url = format!("file://{}", dir.display());
        (dir, url)
    }

    /// A TOML configuration as the chart would mount it: the database
    /// password in a secret file; `extra` is appended (more sections).
    pub fn config(&self, name: &str, database: &DatabaseSettings, extra: &str) -> PathBuf {
        let password = self.path(&format!("{name}-password"));
        fs::write(
            &password,
            database.password.as_ref().unwrap().expose_secret(),
        )
        .unwrap();
        let config = format!(
            r#"
[database]
host = "{host}"
port = {port}
name = "{db}"
user = "{user}"
password_file = "{password}"
sslmode = "verify-full"
sslrootcert = "{ca}"
wait_timeout = "{wait}ms"

{extra}
"#,
            host = database.host,
            port = database.port,
            db = database.name,
            user = database.user,
            password = password.display(),
            ca = database.sslrootcert.as_ref().unwrap().display(),
            wait = database.wait_timeout.as_millis(),
        );
        let path = self.path(&format!("{name}.toml"));
        fs::write(&path, config).unwrap();
        path
    }
}

/// The backup binary with `config`, logging JSON, with no ambient AWS or
/// database variables.
pub fn backup(config: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_backup"));
    command
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("DATABASE_URL")
        .env("BOUTIQUE__TELEMETRY__LOG_FORMAT", "json");
    for (name, _) in std::env::vars() {
        if name.starts_with("AWS_")
            || (name.starts_with("BOUTIQUE__") && name != "BOUTIQUE__TELEMETRY__LOG_FORMAT")
        {
            command.env_remove(name);
        }
    }
    command
}

pub fn run(config: &Path, args: &[&str]) -> Output {
    backup(config, args).output().unwrap()
}

/// Runs and insists on success, showing the output otherwise.
pub fn run_ok(config: &Path, args: &[&str]) -> Output {
    let output = run(config, args);
    assert!(
        output.status.success(),
        "backup {args:?} failed ({:?}):\nstderr: {}\nstdout: {}",
        output.status.code(),
        text(&output.stderr),
        text(&output.stdout)
    );
    output
}

/// Asserts a failure with `code` and exactly one line on stderr, which it returns.
pub fn assert_fails(output: &Output, code: i32) -> String {
    let stderr = text(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(code),
        "stderr: {stderr}\nstdout: {}",
        text(&output.stdout)
    );
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "one line expected: {stderr}"
    );
    assert!(stderr.starts_with("backup: "), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    if std::env::var_os("SHOW_ERRORS").is_some() {
        eprintln!("exit {code}: {stderr}");
    }
    stderr
}

/// The backup names `list` shows, in its order.
pub fn listed(config: &Path, destination: &str) -> Vec<String> {
    let output = run_ok(config, &["--destination", destination, "list"]);
    text(&output.stdout)
        .lines()
        .filter(|line| line.starts_with("orders-"))
        .map(|line| line.split_whitespace().next().unwrap().to_owned())
        .collect()
}

/// The name `run` reports.
pub fn backup_name(output: &Output) -> String {
    let stdout = text(&output.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("backup orders-"))
        .unwrap_or_else(|| panic!("no backup line in: {stdout}"));
    line.split_whitespace().nth(1).unwrap().to_owned()
}

/// psql, from the server binaries' directory or PATH; a missing psql is a
/// failure, not a skip: restoring with psql alone is a promise.
pub fn psql() -> PathBuf {
    let dir = orders::testkit::find_bin_dir().unwrap();
    let mut candidates = vec![dir.join("psql")];
    if let Ok(real) = fs::canonicalize(dir.join("initdb")) {
        candidates.push(real.with_file_name("psql"));
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join("psql")));
    }
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .expect("psql not found next to the PostgreSQL server binaries nor on PATH (install postgresql-client)")
}

/// `gunzip -c artifact | psql -v ON_ERROR_STOP=1` into `database`.
pub fn psql_restore(artifact: &Path, database: &DatabaseSettings) -> Output {
    let mut gunzip = Command::new("gunzip")
        .arg("-c")
        .arg(artifact)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("gunzip must be installed");
    let sql = gunzip.stdout.take().unwrap();
    let conninfo = format!(
        "host={} port={} dbname={} user={} sslmode=verify-full sslrootcert={}",
        database.host,
        database.port,
        database.name,
        database.user,
        database.sslrootcert.as_ref().unwrap().display()
    );
    let output = Command::new(psql())
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", &conninfo])
        .env(
            "PGPASSWORD",
            database.password.as_ref().unwrap().expose_secret(),
        )
        .stdin(sql)
        .output()
        .unwrap();
    assert!(gunzip.wait().unwrap().success(), "gunzip failed");
    output
}

/// The manifest of `name` in the volume `dir`.
pub fn manifest(dir: &Path, name: &str) -> serde_json::Value {
    serde_json::from_slice(&fs::read(dir.join(format!("{name}.manifest.json"))).unwrap()).unwrap()
}

/// Rows per data table, as a manifest records them.
pub fn manifest_counts(manifest: &serde_json::Value) -> BTreeMap<String, i64> {
    manifest["tables"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["name"] != "schema_migrations")
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_owned(),
                t["rows"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// Holds an exclusive lock on `table` until dropped (rolled back).
pub async fn lock(db: &TestDb, table: &str) -> tokio_postgres::Client {
    let client = connect(&db.settings().database).await;
    client
        .batch_execute(&format!(
            "BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"
        ))
        .await
        .unwrap();
    client
}

/// Waits until a `backup` session waits for a lock.
pub async fn wait_for_blocked_backup(db: &TestDb) {
    let superuser = Database::new(&db.cluster.superuser_settings(&db.name), "t")
        .unwrap()
        .connect()
        .await
        .unwrap();
    let started = Instant::now();
    loop {
        let blocked: i64 = superuser
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                 AND application_name = 'backup' AND wait_event_type = 'Lock'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if blocked > 0 {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "backup never blocked"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends SIGTERM to a child of ours, as Kubernetes does to a pod's process.
pub fn terminate(child: &std::process::Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}
