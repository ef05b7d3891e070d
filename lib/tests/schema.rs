//! The migration runner and the role model against a real PostgreSQL.

use std::time::Duration;

use orders::config::Settings;
use orders::db::{Database, DbError};
use orders::schema::{self, Migration, Migrator, SchemaError, State};
use orders::testkit::{PgCluster, TestDb};

const LOCK_TIMEOUT: Duration = Duration::from_secs(30);

async fn fresh() -> (TestDb, Settings, tokio_postgres::Client) {
    let db = PgCluster::shared().create_database().await.unwrap();
    let settings = db.settings();
    let client = Database::new(&settings.database, "schema-test")
        .unwrap()
        .connect()
        .await
        .unwrap();
    (db, settings, client)
}

async fn connect_as(db: &TestDb, kind: &str) -> tokio_postgres::Client {
    let settings = db.settings();
    let role = if kind == "checkout" {
        settings.roles.checkout
    } else {
        settings.roles.backup
    };
    Database::new(
        &db.settings_as(&role, &db.role_password(kind)),
        "schema-test",
    )
    .unwrap()
    .connect()
    .await
    .unwrap()
}

const INSERT_ORDER: &str =
    "INSERT INTO orders (order_id, user_id, user_email, user_currency, status,
        shipping_cost, shipping_cost_currency, shipping_street_address, shipping_city,
        shipping_state, shipping_country, shipping_zip_code, total, total_currency)
    VALUES (gen_random_uuid(), 'u1', 'u1@example.com', 'USD', 'pending', 8.99, 'USD',
        '1 Main St', 'Springfield', 'IL', 'US', 62701, 28.98, 'USD')";

#[tokio::test]
async fn a_fresh_database_gets_every_migration_and_a_second_run_changes_nothing() {
    let (_db, settings, mut client) = fresh().await;
    let migrator = Migrator::new(LOCK_TIMEOUT);

    let first = migrator.up(&mut client, &settings.roles).await.unwrap();
    let expected: Vec<String> = schema::embedded().into_iter().map(|m| m.file).collect();
    assert_eq!(first.applied, expected);
    assert_eq!(first.version, schema::REQUIRED_VERSION);
    for table in [
        "orders",
        "order_items",
        "order_events",
        schema::HISTORY_TABLE,
    ] {
        let row = client
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
            .await
            .unwrap();
        assert!(row.get::<_, bool>(0), "{table} missing");
    }

    let second = migrator.up(&mut client, &settings.roles).await.unwrap();
    assert!(second.applied.is_empty(), "{:?}", second.applied);
    assert_eq!(second.version, schema::REQUIRED_VERSION);
    let status = migrator.verify(&client).await.unwrap();
    assert!(status.is_current());
}

#[tokio::test]
async fn an_applied_file_whose_content_changed_is_refused_naming_it() {
    let (_db, settings, mut client) = fresh().await;
    Migrator::new(LOCK_TIMEOUT)
        .up(&mut client, &settings.roles)
        .await
        .unwrap();

    let mut changed = schema::embedded();
    changed[0].sql.push_str("\nCREATE TABLE sneaky (id int);\n");
    let migrator = Migrator::with_migrations(changed.clone(), LOCK_TIMEOUT);
    let error = migrator.up(&mut client, &settings.roles).await.unwrap_err();
    assert!(
        matches!(error, SchemaError::ChecksumMismatch { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains(&changed[0].file), "{error}");
    assert!(migrator.verify(&client).await.is_err());
    let status = migrator.status(&client).await.unwrap();
    assert_eq!(status.migrations[0].2, State::Changed);
    let sneaky = client
        .query_one("SELECT to_regclass('sneaky') IS NULL", &[])
        .await
        .unwrap();
    assert!(sneaky.get::<_, bool>(0));
}

#[tokio::test]
async fn crlf_line_endings_do_not_change_the_checksum() {
    let original = &schema::embedded()[0];
    let crlf = Migration::new(
        original.version,
        &original.file,
        &original.sql.replace('\n', "\r\n"),
    );
    assert_eq!(crlf.checksum(), original.checksum());
}

#[tokio::test]
async fn a_failing_migration_leaves_nothing_of_itself_behind() {
    let (_db, settings, mut client) = fresh().await;
    let mut migrations = schema::embedded();
    migrations.push(Migration::new(
        9001,
        "9001_half.sql",
        "CREATE TABLE half_done (id int);\nSELECT * FROM no_such_table;\n",
    ));
    let error = Migrator::with_migrations(migrations, LOCK_TIMEOUT)
        .up(&mut client, &settings.roles)
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(message.contains("9001_half.sql"), "{message}");
    assert!(message.contains("no_such_table"), "{message}");
    let row = client
        .query_one(
            "SELECT to_regclass('half_done') IS NULL,
                    (SELECT count(*) FROM schema_migrations WHERE version = 9001)",
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0), "half_done was left behind");
    assert_eq!(row.get::<_, i64>(1), 0);
    // The earlier migrations stay applied.
    assert_eq!(
        schema::current_version(&client).await.unwrap(),
        Some(schema::REQUIRED_VERSION)
    );
}

#[tokio::test]
async fn a_no_transaction_migration_can_create_an_index_concurrently() {
    let (_db, settings, mut client) = fresh().await;
    let mut migrations = schema::embedded();
    migrations.push(Migration::new(
        9002,
        "9002_index.sql",
        "-- migrator: no-transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS orders_email ON orders (user_email);\n",
    ));
    assert!(!migrations.last().unwrap().transactional());
    let report = Migrator::with_migrations(migrations, LOCK_TIMEOUT)
        .up(&mut client, &settings.roles)
        .await
        .unwrap();
    assert_eq!(report.version, 9002);
    let row = client
        .query_one("SELECT to_regclass('orders_email') IS NOT NULL", &[])
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0));
}

#[tokio::test]
async fn a_held_lock_makes_the_migrator_give_up_after_its_bound() {
    let (_db, settings, mut client) = fresh().await;
    let holder = Database::new(&settings.database, "holder")
        .unwrap()
        .connect()
        .await
        .unwrap();
    holder
        .query_one("SELECT pg_try_advisory_lock($1)", &[&schema::LOCK_KEY])
        .await
        .unwrap();
    let error = Migrator::new(Duration::from_millis(600))
        .up(&mut client, &settings.roles)
        .await
        .unwrap_err();
    assert!(matches!(error, SchemaError::LockTimeout(_)), "{error:?}");
    drop(holder);
}

#[tokio::test]
async fn the_checkout_role_reads_and_writes_orders_but_cannot_change_or_delete_anything() {
    let (db, settings, mut client) = fresh().await;
    Migrator::new(LOCK_TIMEOUT)
        .up(&mut client, &settings.roles)
        .await
        .unwrap();
    let checkout = connect_as(&db, "checkout").await;

    checkout.execute(INSERT_ORDER, &[]).await.unwrap();
    checkout
        .execute(
            "UPDATE orders SET status = 'failed', failure_reason = 'test'",
            &[],
        )
        .await
        .unwrap();
    checkout
        .execute(
            "INSERT INTO order_events (order_id, status) SELECT order_id, 'failed' FROM orders",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        schema::current_version(&checkout).await.unwrap(),
        Some(schema::REQUIRED_VERSION)
    );

    for statement in [
        "CREATE TABLE mine (id int)",
        "CREATE SCHEMA mine",
        "ALTER TABLE orders ADD COLUMN extra text",
        "DROP TABLE order_items",
        "TRUNCATE orders CASCADE",
        "DELETE FROM orders",
        "DELETE FROM order_items",
        "UPDATE order_events SET status = 'paid'",
        "DELETE FROM order_events",
        "CREATE INDEX mine ON orders (user_email)",
        "INSERT INTO schema_migrations VALUES (99, 'x', 'x', now(), 0)",
    ] {
        let error = checkout.batch_execute(statement).await.unwrap_err();
        let text = orders::db::error_chain(&error);
        assert!(
            text.contains("permission denied") || text.contains("must be owner"),
            "{statement}: {text}"
        );
    }
    let count: i64 = checkout
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 1);
}

#[tokio::test]
async fn the_backup_role_reads_everything_and_writes_nothing() {
    let (db, settings, mut client) = fresh().await;
    Migrator::new(LOCK_TIMEOUT)
        .up(&mut client, &settings.roles)
        .await
        .unwrap();
    client.execute(INSERT_ORDER, &[]).await.unwrap();
    let backup = connect_as(&db, "backup").await;

    for table in [
        "orders",
        "order_items",
        "order_events",
        schema::HISTORY_TABLE,
    ] {
        backup
            .query(&format!("SELECT * FROM {table}"), &[])
            .await
            .unwrap();
    }
    for statement in [
        INSERT_ORDER,
        "UPDATE orders SET user_email = 'x'",
        "DELETE FROM orders",
        "INSERT INTO order_events (order_id, status) SELECT order_id, 'paid' FROM orders",
        "CREATE TABLE mine (id int)",
        "DROP TABLE orders",
    ] {
        let error = backup.batch_execute(statement).await.unwrap_err();
        let text = orders::db::error_chain(&error);
        assert!(
            text.contains("permission denied") || text.contains("must be owner"),
            "{statement}: {text}"
        );
    }
}

#[tokio::test]
async fn a_second_run_with_a_new_password_rotates_it() {
    let (db, mut settings, mut client) = fresh().await;
    let migrator = Migrator::new(LOCK_TIMEOUT);
    migrator.up(&mut client, &settings.roles).await.unwrap();
    connect_as(&db, "checkout").await;

    let new_password = "rotated-password-5d1e";
    settings.roles.checkout_password = Some(new_password.into());
    migrator.up(&mut client, &settings.roles).await.unwrap();

    let old = db.settings_as(&settings.roles.checkout, &db.role_password("checkout"));
    let error = Database::new(&old, "t")
        .unwrap()
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(error, DbError::Rejected { .. }), "{error:?}");
    let new = db.settings_as(&settings.roles.checkout, new_password);
    Database::new(&new, "t").unwrap().connect().await.unwrap();
    // The clear-text password never reached the server's log.
    assert!(!PgCluster::shared().server_log().contains(new_password));
}

#[tokio::test]
async fn equal_role_names_are_refused() {
    let (_db, mut settings, mut client) = fresh().await;
    settings.roles.backup = settings.roles.checkout.clone();
    let error = Migrator::new(LOCK_TIMEOUT)
        .up(&mut client, &settings.roles)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("must differ"), "{error}");
}
