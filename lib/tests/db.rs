//! Connections against a real, TLS-only PostgreSQL: every `sslmode`, SCRAM
//! with channel binding, the pool, and waiting for a late server.

use std::time::Duration;

use orders::config::{DatabaseSettings, SslMode};
use orders::db::{self, Database, DbError};
use orders::testkit::{PgCluster, SUPERUSER};
use secrecy::SecretString;

fn settings(sslmode: SslMode) -> DatabaseSettings {
    let mut settings = PgCluster::shared().superuser_settings("postgres");
    settings.sslmode = sslmode;
    settings
}

async fn connect(settings: &DatabaseSettings) -> Result<tokio_postgres::Client, DbError> {
    Database::new(settings, "db-test")?.connect().await
}

async fn assert_connects(settings: &DatabaseSettings) {
    let client = connect(settings).await.unwrap();
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0), "the session is not encrypted");
}

#[tokio::test]
async fn verify_full_connects_with_the_right_ca_and_host_name() {
    assert_connects(&settings(SslMode::VerifyFull)).await;
}

#[tokio::test]
async fn verify_full_fails_with_another_ca() {
    let mut settings = settings(SslMode::VerifyFull);
    settings.sslrootcert = Some(PgCluster::shared().other_ca_cert());
    let error = connect(&settings).await.unwrap_err().to_string();
    assert!(error.contains("UnknownIssuer"), "{error}");
}

#[tokio::test]
async fn verify_full_fails_when_the_host_name_is_not_in_the_certificate() {
    let mut settings = settings(SslMode::VerifyFull);
    settings.host = "127.0.0.1".into();
    let error = connect(&settings).await.unwrap_err().to_string();
    assert!(
        error.contains("not valid for name \"127.0.0.1\""),
        "{error}"
    );
}

#[tokio::test]
async fn verify_ca_checks_the_chain_but_not_the_host_name() {
    let mut settings = settings(SslMode::VerifyCa);
    settings.host = "127.0.0.1".into();
    assert_connects(&settings).await;

    settings.sslrootcert = Some(PgCluster::shared().other_ca_cert());
    let error = connect(&settings).await.unwrap_err().to_string();
    assert!(error.contains("UnknownIssuer"), "{error}");
}

#[tokio::test]
async fn verify_modes_need_a_root_certificate() {
    let mut settings = settings(SslMode::VerifyFull);
    settings.sslrootcert = None;
    let error = Database::new(&settings, "db-test").unwrap_err().to_string();
    assert!(error.contains("database.sslrootcert"), "{error}");
}

#[tokio::test]
async fn require_connects_without_a_ca_and_checks_the_chain_when_given_one() {
    let mut settings = settings(SslMode::Require);
    settings.sslrootcert = None;
    settings.host = "127.0.0.1".into();
    assert_connects(&settings).await;

    // Like libpq: `require` with a root certificate verifies the chain.
    settings.sslrootcert = Some(PgCluster::shared().other_ca_cert());
    let error = connect(&settings).await.unwrap_err().to_string();
    assert!(error.contains("UnknownIssuer"), "{error}");
}

#[tokio::test]
async fn prefer_uses_tls_when_the_server_offers_it() {
    let mut settings = settings(SslMode::Prefer);
    settings.sslrootcert = None;
    assert_connects(&settings).await;
}

#[tokio::test]
async fn disable_against_a_tls_only_server_says_the_server_requires_tls() {
    let error = connect(&settings(SslMode::Disable)).await.unwrap_err();
    assert!(matches!(error, DbError::TlsRequired(_)), "{error:?}");
    assert!(error.to_string().contains("requires TLS"), "{error}");
}

#[tokio::test]
async fn scram_with_channel_binding_required_works_over_our_tls() {
    let settings = settings(SslMode::VerifyFull);
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(
        orders::tls::client_config(&settings).unwrap(),
    );
    let mut config = tokio_postgres::Config::new();
    config
        .host(&settings.host)
        .port(settings.port)
        .user(SUPERUSER)
        .dbname("postgres")
        .password(secrecy::ExposeSecret::expose_secret(
            settings.password.as_ref().unwrap(),
        ))
        .ssl_mode(tokio_postgres::config::SslMode::Require)
        .channel_binding(tokio_postgres::config::ChannelBinding::Require);
    let (client, connection) = config.connect(tls).await.unwrap();
    tokio::spawn(connection);
    client.simple_query("SELECT 1").await.unwrap();
}

#[tokio::test]
async fn a_wrong_password_is_rejected_without_echoing_it() {
    let mut settings = settings(SslMode::VerifyFull);
    let wrong = "not-the-password-7f3a";
    settings.password = Some(SecretString::from(wrong));
    let error = connect(&settings).await.unwrap_err();
    assert!(!error.is_transient(), "{error:?}");
    let text = format!("{error} {error:?}");
    assert!(text.contains("password authentication failed"), "{text}");
    assert!(!text.contains(wrong), "{text}");
}

#[tokio::test]
async fn statement_timeout_is_applied_to_every_session() {
    let mut settings = settings(SslMode::VerifyFull);
    settings.statement_timeout = Duration::from_millis(1500);
    let client = connect(&settings).await.unwrap();
    let row = client
        .query_one("SHOW statement_timeout", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "1500ms");
    let error = client.simple_query("SELECT pg_sleep(3)").await.unwrap_err();
    let error = db::error_chain(&error);
    assert!(error.contains("statement timeout"), "{error}");
}

#[tokio::test]
async fn the_pool_replaces_a_broken_connection() {
    let mut settings = settings(SslMode::VerifyFull);
    settings.pool_max_size = 1;
    let database = Database::new(&settings, "db-test").unwrap();
    let pool = database.pool();
    let first_pid: i32 = {
        let conn = db::checkout(&pool).await.unwrap();
        conn.query_one("SELECT pg_backend_pid()", &[])
            .await
            .unwrap()
            .get(0)
    };
    // Kill the pooled connection's backend from outside.
    let admin = database.connect().await.unwrap();
    admin
        .execute("SELECT pg_terminate_backend($1)", &[&first_pid])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let conn = db::checkout(&pool).await.unwrap();
    let second_pid: i32 = conn
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    assert_ne!(first_pid, second_pid);
}

#[tokio::test]
async fn a_statement_is_prepared_once_per_pooled_session() {
    const DOUBLE: db::Sql = db::Sql {
        text: "SELECT $1::int8 * 2",
        types: &[tokio_postgres::types::Type::INT8],
    };
    let mut settings = settings(SslMode::VerifyFull);
    settings.pool_max_size = 1;
    let pool = Database::new(&settings, "db-test").unwrap().pool();
    for n in 1..=3_i64 {
        let mut conn = db::checkout(&pool).await.unwrap();
        let rows = conn.query_prepared(&DOUBLE, &[&n]).await.unwrap();
        assert_eq!(rows[0].get::<_, i64>(0), n * 2);
    }
    let conn = db::checkout(&pool).await.unwrap();
    let prepared: Vec<String> = conn
        // Unnamed (query_typed), so this query is not listed itself.
        .query_typed("SELECT statement FROM pg_prepared_statements", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(prepared, vec![DOUBLE.text.to_owned()]);
}

#[tokio::test]
async fn a_prepared_statement_outlives_a_change_of_its_table() {
    const ALL: db::Sql = db::Sql {
        text: "SELECT * FROM prepared_then_altered",
        types: &[],
    };
    let mut settings = settings(SslMode::VerifyFull);
    settings.pool_max_size = 1;
    let database = Database::new(&settings, "db-test").unwrap();
    let admin = database.connect().await.unwrap();
    admin
        .batch_execute(
            "DROP TABLE IF EXISTS prepared_then_altered;
             CREATE TABLE prepared_then_altered (a int);
             INSERT INTO prepared_then_altered VALUES (1)",
        )
        .await
        .unwrap();
    let pool = database.pool();
    let mut conn = db::checkout(&pool).await.unwrap();
    assert_eq!(conn.query_prepared(&ALL, &[]).await.unwrap()[0].len(), 1);
    // The prepared plan's result type is now wrong: PostgreSQL refuses it
    // ("cached plan must not change result type"); the connection prepares
    // the statement again.
    admin
        .batch_execute("ALTER TABLE prepared_then_altered ADD COLUMN b text DEFAULT 'x'")
        .await
        .unwrap();
    let rows = conn.query_prepared(&ALL, &[]).await.unwrap();
    assert_eq!(rows[0].len(), 2);
    assert_eq!(rows[0].get::<_, &str>("b"), "x");
}

#[tokio::test]
async fn a_server_that_comes_up_late_is_waited_for() {
    let cluster = PgCluster::init().unwrap();
    let mut settings = cluster.superuser_settings("postgres");
    settings.wait_timeout = Duration::from_secs(30);
    let database = Database::new(&settings, "db-test").unwrap();
    let starter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        cluster.start_server().unwrap();
        cluster
    });
    let started = std::time::Instant::now();
    let client = database.connect_with_retry().await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(1500));
    client.simple_query("SELECT 1").await.unwrap();
    drop(client);
    drop(starter.join().unwrap());
}

#[tokio::test]
async fn a_server_that_never_comes_up_fails_after_the_bound() {
    let cluster = PgCluster::init().unwrap();
    let mut settings = cluster.superuser_settings("postgres");
    settings.wait_timeout = Duration::from_secs(1);
    let database = Database::new(&settings, "db-test").unwrap();
    let started = std::time::Instant::now();
    let error = database.connect_with_retry().await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(matches!(error, DbError::GaveUp { .. }), "{error:?}");
    let line = error.to_string();
    assert!(line.starts_with("gave up after"), "{line}");
    assert!(!line.contains('\n'), "{line}");
}

#[tokio::test]
async fn unusable_certificate_settings_name_the_key() {
    let mut settings = settings(SslMode::VerifyFull);
    settings.sslrootcert = Some("/nonexistent/ca.crt".into());
    let error = Database::new(&settings, "db-test").unwrap_err().to_string();
    assert!(
        error.contains("database.sslrootcert") && error.contains("/nonexistent/ca.crt"),
        "{error}"
    );

    let mut settings = self::settings(SslMode::VerifyFull);
    settings.sslcert = Some(PgCluster::shared().ca_cert());
    let error = Database::new(&settings, "db-test").unwrap_err().to_string();
    assert!(
        error.contains("sslcert and database.sslkey must be given together"),
        "{error}"
    );

    // A key file without a key in it.
    settings.sslkey = Some(PgCluster::shared().ca_cert());
    let error = Database::new(&settings, "db-test").unwrap_err().to_string();
    assert!(error.contains("database.sslkey"), "{error}");
}

#[tokio::test]
async fn a_client_certificate_loads_and_the_handshake_completes_with_it() {
    // The server does not ask for one, so the login still works: this checks
    // that a certificate and key from the test CA load and the handshake
    // completes with them.
    let dir = tempfile::tempdir().unwrap();
    let ca = orders::testkit::TestCa::new("client CA").unwrap();
    let issued = ca.client_cert(SUPERUSER).unwrap();
    let (cert, key) = (dir.path().join("client.crt"), dir.path().join("client.key"));
    std::fs::write(&cert, issued.cert_pem).unwrap();
    std::fs::write(&key, issued.key_pem).unwrap();
    let mut settings = settings(SslMode::VerifyFull);
    settings.sslcert = Some(cert);
    settings.sslkey = Some(key);
    assert_connects(&settings).await;
}
