//! The `migrator` binary as an operator (or a Kubernetes Job) runs it:
//! configuration from a file plus secret files, a real TLS PostgreSQL.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use orders::config::Settings;
use orders::schema;
use orders::testkit::{PgCluster, TestDb};
use secrecy::ExposeSecret;

/// Writes `settings` as the chart would mount them: a TOML file whose
/// secrets are `*_file` paths to files of their own.
fn write_config(dir: &Path, settings: &Settings) -> PathBuf {
    let secret = |name: &str, value: &Option<secrecy::SecretString>| -> String {
        let path = dir.join(name);
        fs::write(&path, value.as_ref().unwrap().expose_secret()).unwrap();
        path.display().to_string()
    };
    let db = &settings.database;
    let config = format!(
        r#"
[database]
host = "{host}"
port = {port}
name = "{name}"
user = "{user}"
password_file = "{password}"
sslmode = "verify-full"
sslrootcert = "{ca}"
wait_timeout = "{wait}ms"

[roles]
checkout = "{checkout}"
checkout_password_file = "{checkout_password}"
backup = "{backup}"
backup_password_file = "{backup_password}"
"#,
        host = db.host,
        port = db.port,
        name = db.name,
        user = db.user,
        password = secret("db-password", &db.password),
        ca = db.sslrootcert.as_ref().unwrap().display(),
        wait = db.wait_timeout.as_millis(),
        checkout = settings.roles.checkout,
        checkout_password = secret("checkout-password", &settings.roles.checkout_password),
        backup = settings.roles.backup,
        backup_password = secret("backup-password", &settings.roles.backup_password),
    );
    let path = dir.join("migrator.toml");
    fs::write(&path, config).unwrap();
    path
}

fn migrator(config: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_migrator"));
    command
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("DATABASE_URL")
        .env("BOUTIQUE__TELEMETRY__LOG_FORMAT", "json");
    command
}

fn run(config: &Path, args: &[&str]) -> Output {
    migrator(config, args).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

struct Fixture {
    _dir: tempfile::TempDir,
    config: PathBuf,
    db: TestDb,
}

async fn fixture() -> Fixture {
    let db = PgCluster::shared().create_database().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &db.settings());
    Fixture {
        _dir: dir,
        config,
        db,
    }
}

async fn applied_versions(db: &TestDb) -> Vec<i32> {
    let client = orders::db::Database::new(&db.settings().database, "t")
        .unwrap()
        .connect()
        .await
        .unwrap();
    client
        .query(
            "SELECT version FROM schema_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test]
async fn up_applies_everything_then_says_there_is_nothing_to_do() {
    let f = fixture().await;
    let first = run(&f.config, &[]);
    assert!(first.status.success(), "{}", text(&first.stderr));
    assert!(
        text(&first.stdout).contains("applied 1 migration"),
        "{}",
        text(&first.stdout)
    );

    let second = run(&f.config, &["up"]);
    assert_eq!(second.status.code(), Some(0), "{}", text(&second.stderr));
    assert!(
        text(&second.stdout).contains("nothing to do"),
        "{}",
        text(&second.stdout)
    );
    let expected: Vec<i32> = schema::embedded().iter().map(|m| m.version).collect();
    assert_eq!(applied_versions(&f.db).await, expected);
}

#[tokio::test]
async fn status_and_verify_report_pending_work_with_their_exit_codes() {
    let f = fixture().await;
    let status = run(&f.config, &["status"]);
    assert_eq!(status.status.code(), Some(3), "{}", text(&status.stderr));
    assert!(text(&status.stdout).contains("0001_orders.sql"));
    assert!(text(&status.stdout).contains("pending"));
    let verify = run(&f.config, &["verify"]);
    assert_eq!(verify.status.code(), Some(1));

    assert!(run(&f.config, &["up"]).status.success());
    let status = run(&f.config, &["status"]);
    assert_eq!(status.status.code(), Some(0), "{}", text(&status.stderr));
    assert!(text(&status.stdout).contains("applied"));
    let verify = run(&f.config, &["verify"]);
    assert_eq!(verify.status.code(), Some(0), "{}", text(&verify.stderr));
}

#[test]
fn six_concurrent_runs_apply_each_migration_once_without_server_errors() {
    // A cluster of its own, so its server log holds only these runs.
    let cluster: &'static PgCluster = Box::leak(Box::new(PgCluster::start().unwrap()));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let db = runtime.block_on(cluster.create_database()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &db.settings());

    let children: Vec<_> = (0..6)
        .map(|_| {
            migrator(&config, &["up"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs: Vec<Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    for output in &outputs {
        assert!(output.status.success(), "{}", text(&output.stderr));
    }
    let appliers = outputs
        .iter()
        .filter(|o| text(&o.stdout).contains("applied 1 migration"))
        .count();
    assert_eq!(appliers, 1, "exactly one run applies the migration");

    let expected: Vec<i32> = schema::embedded().iter().map(|m| m.version).collect();
    assert_eq!(runtime.block_on(applied_versions(&db)), expected);
    let log = cluster.server_log();
    assert!(!log.contains("ERROR"), "server log has errors:\n{log}");
}

#[test]
fn a_database_that_comes_up_late_is_waited_for() {
    let cluster: &'static PgCluster = Box::leak(Box::new(PgCluster::start().unwrap()));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let db = runtime.block_on(cluster.create_database()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut settings = db.settings();
    settings.database.wait_timeout = Duration::from_secs(60);
    let config = write_config(dir.path(), &settings);
    cluster.stop_server().unwrap();

    let child = migrator(&config, &["up"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    cluster.start_server().unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        text(&output.stdout).contains("retrying"),
        "{}",
        text(&output.stdout)
    );
}

#[test]
fn a_database_that_never_comes_up_fails_after_the_bound_with_one_line() {
    let cluster = PgCluster::init().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings {
        database: cluster.superuser_settings("postgres"),
        ..Settings::default()
    };
    settings.database.wait_timeout = Duration::from_secs(2);
    settings.roles.checkout_password = Some("x".into());
    settings.roles.backup_password = Some("y".into());
    let config = write_config(dir.path(), &settings);

    let output = run(&config, &["up"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("migrator: gave up after"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test]
async fn a_wrong_password_fails_at_once_without_echoing_it() {
    let f = fixture().await;
    let wrong = "wrong-password-b41c9";
    let password_file = f.config.with_file_name("wrong-password");
    fs::write(&password_file, wrong).unwrap();
    let output = migrator(&f.config, &["up"])
        .env("BOUTIQUE__DATABASE__PASSWORD_FILE", &password_file)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    let stdout = text(&output.stdout);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("password authentication failed"),
        "{stderr}"
    );
    assert!(!stderr.contains(wrong) && !stdout.contains(wrong));
    assert!(
        !stdout.contains("retrying"),
        "credentials errors are not retried"
    );
}

#[tokio::test]
async fn bad_configuration_exits_2_naming_the_key() {
    let f = fixture().await;
    let output = migrator(&f.config, &["up"])
        .env("BOUTIQUE__DATABASE__PORTT", "5432")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("portt"), "{stderr}");
}

#[tokio::test]
async fn config_prints_the_effective_configuration_without_secrets() {
    let f = fixture().await;
    let output = run(&f.config, &["config"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let printed = text(&output.stdout);
    assert!(printed.contains(&f.db.name), "{printed}");
    assert!(printed.contains("[redacted]"), "{printed}");
    let settings = f.db.settings();
    for secret in [
        settings.database.password.as_ref().unwrap(),
        settings.roles.checkout_password.as_ref().unwrap(),
    ] {
        assert!(!printed.contains(secret.expose_secret()));
    }
}

#[test]
fn help_and_version_work_without_a_database() {
    let help = Command::new(env!("CARGO_BIN_EXE_migrator"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(help.status.success());
    for word in ["up", "status", "verify", "--config", "--set"] {
        assert!(text(&help.stdout).contains(word), "{word}");
    }
    let version = Command::new(env!("CARGO_BIN_EXE_migrator"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(text(&version.stdout).contains(env!("CARGO_PKG_VERSION")));
}
