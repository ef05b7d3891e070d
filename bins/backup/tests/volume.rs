//! The `backup` binary against a real TLS PostgreSQL, with a directory
//! (a PersistentVolumeClaim) as the destination.

mod common;

use std::fs;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use orders::testkit::{PgCluster, TestDb};

/// A migrated database with orders, a workspace, and a configuration that
/// logs in as the backup role.
struct Source {
    db: TestDb,
    ws: Workspace,
    config: PathBuf,
    dir: PathBuf,
    url: String,
}

async fn source(orders: u32) -> Source {
    let db = migrated_db().await;
    let client = connect(&db.settings().database).await;
    seed_nasty(&client, 0, orders).await;
    let ws = Workspace::new();
    let (dir, url) = ws.volume();
    // The volume is mounted: the directory exists.
    fs::create_dir_all(&dir).unwrap();
    let config = ws.config("backup", &backup_role(&db), "");
    Source {
        db,
        ws,
        config,
        dir,
        url,
    }
}

impl Source {
    fn run(&self, args: &[&str]) -> std::process::Output {
        let mut all = vec!["--destination", &self.url];
        all.extend_from_slice(args);
        run(&self.config, &all)
    }

    fn backup(&self) -> String {
        backup_name(&run_ok(&self.config, &["--destination", &self.url, "run"]))
    }

    /// A configuration that logs into `target` as its owner (restore's role).
    fn target_config(&self, target: &TestDb) -> PathBuf {
        self.ws.config(
            &format!("target-{}", target.name),
            &target.settings().database,
            "",
        )
    }

    fn artifact(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.sql.gz"))
    }

    fn visible_files(&self) -> Vec<String> {
        let mut files: Vec<String> = fs::read_dir(&self.dir)
            .map(|entries| {
                entries
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .filter(|f| !f.contains('#'))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
    }
}

#[tokio::test]
async fn round_trip_through_restore_and_through_psql_alone_is_identical() {
    let s = source(40).await;
    let owner = s.db.settings().database;
    let name = s.backup();
    let original = dump(&owner).await;
    assert!(original["orders"].contains("Grüße"), "the data is there");
    let manifest = manifest(&s.dir, &name);
    assert_eq!(
        manifest_counts(&manifest),
        counts(&owner).await.into_iter().collect(),
        "{manifest}"
    );
    assert_eq!(manifest["schema_version"], 1);
    assert_eq!(manifest["format"], 1);

    let verified = s.run(&["verify", &name]);
    assert!(verified.status.success(), "{}", text(&verified.stderr));
    assert!(text(&verified.stdout).contains("verifies"));

    // `backup restore` into an empty database: the schema comes from the backup.
    let target = empty_db().await;
    let restored = run_ok(
        &s.target_config(&target),
        &["--destination", &s.url, "restore", "latest"],
    );
    assert!(text(&restored.stdout).contains(&format!("restored backup {name}")));
    assert_eq!(dump(&target.settings().database).await, original);

    // psql alone, after gunzip, into another empty database.
    let plain = empty_db().await;
    let output = psql_restore(&s.artifact(&name), &plain.settings().database);
    assert!(
        output.status.success(),
        "psql: {}{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    assert_eq!(dump(&plain.settings().database).await, original);
}

#[tokio::test]
async fn restore_into_a_migrated_database_keeps_its_roles_and_grants() {
    let s = source(12).await;
    let name = s.backup();
    let original = dump(&s.db.settings().database).await;

    let target = migrated_db().await;
    run_ok(
        &s.target_config(&target),
        &["--destination", &s.url, "restore", &name],
    );
    assert_eq!(dump(&target.settings().database).await, original);

    // Checkout can still write, and new events continue the sequence.
    let roles = target.settings().roles;
    let checkout =
        connect(&target.settings_as(&roles.checkout, &target.role_password("checkout"))).await;
    let row = checkout
        .query_one(
            "INSERT INTO order_events (order_id, status) SELECT order_id, 'paid' FROM orders LIMIT 1 RETURNING event_id",
            &[],
        )
        .await
        .unwrap();
    let event_id: i64 = row.get(0);
    assert_eq!(event_id.to_string(), original["next event_id"]);
}

#[tokio::test]
async fn restore_refuses_a_database_with_orders_unless_told_to_replace() {
    let s = source(8).await;
    s.backup();
    let original = dump(&s.db.settings().database).await;

    let target = migrated_db().await;
    let target_settings = target.settings().database;
    seed_bulk(&connect(&target_settings).await, 1, 5).await;
    let before = dump(&target_settings).await;
    let config = s.target_config(&target);

    let refused = run(&config, &["--destination", &s.url, "restore", "latest"]);
    let stderr = assert_fails(&refused, 4);
    assert!(
        stderr.contains("not empty") && stderr.contains("--replace"),
        "{stderr}"
    );
    assert_eq!(dump(&target_settings).await, before, "nothing changed");

    run_ok(
        &config,
        &["--destination", &s.url, "restore", "latest", "--replace"],
    );
    assert_eq!(dump(&target_settings).await, original);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_orders_keep_coming_is_consistent() {
    let s = source(0).await;
    let owner = s.db.settings().database;
    seed_bulk(&connect(&owner).await, 1, 30_000).await;

    // Writers: each order arrives with its two items and its event, in one transaction.
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for writer in 0..2_i64 {
        let stop = Arc::clone(&stop);
        let owner = owner.clone();
        writers.push(tokio::spawn(async move {
            let mut client = connect(&owner).await;
            let mut n = 1_000_000 * (writer + 1);
            let mut written = 0;
            while !stop.load(Ordering::Relaxed) {
                let tx = client.transaction().await.unwrap();
                tx.batch_execute(&format!(
                    "INSERT INTO orders (order_id, user_id, user_email, user_currency, status, shipping_cost, \
                     shipping_cost_currency, shipping_street_address, shipping_city, shipping_state, \
                     shipping_country, shipping_zip_code, total, total_currency) VALUES \
                     ('00000000-0000-7000-a000-{n:012}', 'w', 'w@example.com', 'USD', 'pending', 1, 'USD', \
                     's', 'c', 'st', 'co', 1, 2, 'USD');
                     INSERT INTO order_items (order_id, line_no, product_id, quantity, cost, cost_currency) VALUES \
                     ('00000000-0000-7000-a000-{n:012}', 1, 'P', 1, 1, 'USD'), \
                     ('00000000-0000-7000-a000-{n:012}', 2, 'Q', 1, 1, 'USD');
                     INSERT INTO order_events (order_id, status) VALUES ('00000000-0000-7000-a000-{n:012}', 'pending');"
                ))
                .await
                .unwrap();
                tx.commit().await.unwrap();
                n += 1;
                written += 1;
            }
            written
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let config = s.config.clone();
    let url = s.url.clone();
    let output = tokio::task::spawn_blocking(move || run(&config, &["--destination", &url, "run"]))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut during = 0;
    for writer in writers {
        during += writer.await.unwrap();
    }
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(during > 0, "the writers wrote while the backup ran");
    let name = backup_name(&output);
    let manifest = manifest(&s.dir, &name);

    let target = empty_db().await;
    run_ok(
        &s.target_config(&target),
        &["--destination", &s.url, "restore", &name],
    );
    let restored = target.settings().database;
    let counts = counts(&restored).await;
    assert_eq!(manifest_counts(&manifest), counts, "{manifest}");
    let orders = counts["orders"];
    assert!(
        orders >= 30_000 && orders < 30_000 + during,
        "{orders} orders"
    );
    assert_eq!(counts["order_items"], 2 * orders);
    assert_eq!(counts["order_events"], orders);
    let client = connect(&restored).await;
    let incomplete: i64 = client
        .query_one(
            "SELECT count(*) FROM orders o WHERE (SELECT count(*) FROM order_items i WHERE i.order_id = o.order_id) <> 2",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(incomplete, 0, "every order has both its items");
}

#[tokio::test]
async fn list_shows_complete_backups_newest_first_with_size_time_and_rows() {
    let s = source(5).await;
    let empty = s.run(&["list"]);
    assert!(empty.status.success(), "{}", text(&empty.stderr));
    assert!(
        text(&empty.stdout).contains("no backups"),
        "{}",
        text(&empty.stdout)
    );

    let first = s.backup();
    std::thread::sleep(Duration::from_millis(1100));
    let second = s.backup();
    assert_eq!(listed(&s.config, &s.url), [second.clone(), first.clone()]);

    let output = run_ok(&s.config, &["--destination", &s.url, "list"]);
    let stdout = text(&output.stdout);
    let line = stdout.lines().find(|l| l.starts_with(&second)).unwrap();
    assert!(
        line.contains("orders=5 order_events=5 order_items=10"),
        "{line}"
    );
    assert!(line.contains(" B") || line.contains("KiB"), "size: {line}");
    assert!(
        line.contains(&format!(
            "{} ",
            &manifest(&s.dir, &second)["finished_at"].as_str().unwrap()[..10]
        )),
        "{line}"
    );

    let json = run_ok(&s.config, &["--destination", &s.url, "list", "--json"]);
    let rows: Vec<serde_json::Value> = text(&json.stdout)
        .lines()
        .filter(|l| l.starts_with("{\"manifest\"") || l.contains("\"name\":\"orders-"))
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| v.get("manifest").is_some())
        .collect();
    assert_eq!(rows.len(), 2, "{}", text(&json.stdout));
    assert_eq!(rows[0]["name"], second.as_str());
    let size = fs::metadata(s.artifact(&second)).unwrap().len();
    assert_eq!(rows[0]["size"], size);
    assert_eq!(rows[0]["manifest"]["artifact_bytes"], size);

    run_ok(&s.config, &["--destination", &s.url, "verify", "latest"]);
}

#[tokio::test]
async fn damaged_backups_fail_verify_and_restore_naming_the_problem_and_change_nothing() {
    let s = source(30).await;
    let target = migrated_db().await;
    let target_settings = target.settings().database;
    seed_bulk(&connect(&target_settings).await, 1, 3).await;
    let before = dump(&target_settings).await;
    let empty = empty_db().await;
    let restore_into = |db: &TestDb, name: &str| {
        run(
            &s.target_config(db),
            &["--destination", &s.url, "restore", name, "--replace"],
        )
    };

    // A flipped byte in the middle.
    let flipped = s.backup();
    let path = s.artifact(&flipped);
    let mut bytes = fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    fs::write(&path, &bytes).unwrap();
    let stderr = assert_fails(&s.run(&["verify", &flipped]), 3);
    assert!(
        stderr.contains("damaged") && stderr.contains(&flipped),
        "{stderr}"
    );
    assert!(stderr.contains("SHA-256"), "{stderr}");
    let stderr = assert_fails(&restore_into(&target, &flipped), 3);
    assert!(stderr.contains("SHA-256"), "{stderr}");
    assert_eq!(dump(&target_settings).await, before);
    assert_fails(&restore_into(&empty, &flipped), 3);
    assert!(
        !has_table(&empty.settings().database, "orders").await,
        "an empty database stays empty"
    );

    // A truncated artifact.
    std::thread::sleep(Duration::from_millis(1100));
    let truncated = s.backup();
    let path = s.artifact(&truncated);
    let bytes = fs::read(&path).unwrap();
    fs::write(&path, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let stderr = assert_fails(&s.run(&["verify", &truncated]), 3);
    assert!(stderr.contains("truncated"), "{stderr}");
    let stderr = assert_fails(&restore_into(&target, &truncated), 3);
    assert!(stderr.contains("truncated"), "{stderr}");
    assert_eq!(dump(&target_settings).await, before);

    // A manifest whose counts disagree with the artifact.
    std::thread::sleep(Duration::from_millis(1100));
    let miscounted = s.backup();
    let manifest_path = s.dir.join(format!("{miscounted}.manifest.json"));
    let text_before = fs::read_to_string(&manifest_path).unwrap();
    let mut manifest: serde_json::Value = serde_json::from_str(&text_before).unwrap();
    manifest["tables"][1]["rows"] = serde_json::json!(29);
    fs::write(
        &manifest_path,
        serde_json::to_vec_pretty(&manifest).unwrap(),
    )
    .unwrap();
    let stderr = assert_fails(&s.run(&["verify", &miscounted]), 3);
    assert!(
        stderr.contains("table orders has 30 rows in the artifact, the manifest says 29"),
        "{stderr}"
    );
    assert_fails(&restore_into(&target, &miscounted), 3);
    assert_eq!(dump(&target_settings).await, before);

    // A missing manifest: the backup is invisible, and named it is incomplete.
    std::thread::sleep(Duration::from_millis(1100));
    let orphan = s.backup();
    fs::remove_file(s.dir.join(format!("{orphan}.manifest.json"))).unwrap();
    assert!(!listed(&s.config, &s.url).contains(&orphan));
    let stderr = assert_fails(&s.run(&["verify", &orphan]), 3);
    assert!(stderr.contains("no manifest"), "{stderr}");
    let stderr = assert_fails(&restore_into(&target, &orphan), 3);
    assert!(stderr.contains("no manifest"), "{stderr}");
    assert_eq!(dump(&target_settings).await, before);
    // `latest` is the newest complete backup: the miscounted one.
    let stderr = assert_fails(&s.run(&["verify", "latest"]), 3);
    assert!(stderr.contains(&miscounted), "{stderr}");
}

#[tokio::test]
async fn an_unreachable_database_fails_after_the_bound_with_one_line_and_no_backup() {
    let cluster = PgCluster::init().unwrap(); // never started
    let ws = Workspace::new();
    let (_, url) = ws.volume();
    let mut database = cluster.superuser_settings("postgres");
    database.wait_timeout = Duration::from_secs(1);
    let config = ws.config("backup", &database, "");
    let stderr = assert_fails(&run(&config, &["--destination", &url, "run"]), 1);
    assert!(stderr.contains("gave up after"), "{stderr}");
    assert!(listed(&config, &url).is_empty());
}

#[tokio::test]
async fn wrong_credentials_fail_at_once_without_echoing_them() {
    let s = source(1).await;
    let mut wrong = backup_role(&s.db);
    let secret = "wrong-password-7f3a1";
    wrong.password = Some(secret.into());
    let config = s.ws.config("wrong", &wrong, "");
    let output = run(&config, &["--destination", &s.url, "run"]);
    let stderr = assert_fails(&output, 1);
    assert!(
        stderr.contains("password authentication failed"),
        "{stderr}"
    );
    assert!(!stderr.contains(secret) && !text(&output.stdout).contains(secret));
    assert!(s.visible_files().is_empty(), "{:?}", s.visible_files());
}

#[tokio::test]
async fn a_destination_that_cannot_be_written_fails_with_one_line() {
    let s = source(1).await;
    let file = s.ws.path("a-file");
    fs::write(&file, "not a directory").unwrap();
    let url = format!("file://{}/backups", file.display());
    let stderr = assert_fails(&run(&s.config, &["--destination", &url, "run"]), 1);
    assert!(stderr.contains("a-file/backups"), "{stderr}");
}

#[tokio::test]
async fn a_backup_killed_midway_leaves_nothing_that_list_or_restore_sees() {
    let s = source(20).await;
    let locker = lock(&s.db, "order_items").await;
    let mut child = backup(&s.config, &["--destination", &s.url, "run"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_blocked_backup(&s.db).await;
    // Midway: orders and order_events are copied, order_items is not.
    child.kill().unwrap();
    child.wait().unwrap();
    drop(locker);

    assert!(listed(&s.config, &s.url).is_empty());
    assert!(s.visible_files().is_empty(), "{:?}", s.visible_files());
    let target = empty_db().await;
    let stderr = assert_fails(
        &run(
            &s.target_config(&target),
            &["--destination", &s.url, "restore", "latest"],
        ),
        4,
    );
    assert!(stderr.contains("no complete backups"), "{stderr}");
    // The next backup works.
    s.backup();
    assert_eq!(listed(&s.config, &s.url).len(), 1);
}

#[tokio::test]
async fn sigterm_stops_a_backup_and_removes_what_it_wrote() {
    let s = source(20).await;
    let locker = lock(&s.db, "order_items").await;
    let child = backup(&s.config, &["--destination", &s.url, "run"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_blocked_backup(&s.db).await;
    terminate(&child);
    let output = child.wait_with_output().unwrap();
    drop(locker);
    let stderr = assert_fails(&output, 1);
    assert!(stderr.contains("interrupted"), "{stderr}");
    let all: Vec<_> = fs::read_dir(&s.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(all.is_empty(), "not even a temporary file: {all:?}");
}

#[tokio::test]
async fn a_stalled_copy_gives_up_after_the_stall_timeout() {
    let s = source(3).await;
    let config = s.ws.config(
        "stall",
        &backup_role(&s.db),
        "[backup]\nstall_timeout = \"2s\"\n",
    );
    let _locker = lock(&s.db, "order_items").await;
    let started = Instant::now();
    let stderr = assert_fails(&run(&config, &["--destination", &s.url, "run"]), 1);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert!(
        stderr.contains("lock timeout") || stderr.contains("no progress for 2s"),
        "{stderr}"
    );
    assert!(s.visible_files().is_empty(), "{:?}", s.visible_files());
}

#[tokio::test]
async fn a_restore_that_waits_for_a_lock_gives_up_and_changes_nothing() {
    let s = source(5).await;
    s.backup();
    let target = migrated_db().await;
    let config = s.ws.config(
        "target-stall",
        &target.settings().database,
        "[backup]\nstall_timeout = \"2s\"\n",
    );
    let locker = lock(&target, "order_items").await;
    let started = Instant::now();
    let stderr = assert_fails(
        &run(&config, &["--destination", &s.url, "restore", "latest"]),
        1,
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert!(
        stderr.contains("lock timeout") || stderr.contains("no progress for 2s"),
        "{stderr}"
    );
    drop(locker);
    assert_eq!(counts(&target.settings().database).await["orders"], 0);
}

#[tokio::test]
async fn prune_applies_count_and_age_but_keeps_the_newest_backup_that_verifies() {
    let s = source(4).await;
    let a = s.backup();
    std::thread::sleep(Duration::from_millis(1100));
    let b = s.backup();
    std::thread::sleep(Duration::from_millis(1100));
    let c = s.backup();
    // The newest is damaged: b is the newest that verifies.
    let path = s.artifact(&c);
    let mut bytes = fs::read(&path).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0xff;
    fs::write(&path, bytes).unwrap();

    let prune = |sets: &[&str], extra: &[&str]| {
        let mut args = vec!["--destination", s.url.as_str()];
        for set in sets {
            args.extend_from_slice(&["--set", set]);
        }
        args.push("prune");
        args.extend_from_slice(extra);
        run(&s.config, &args)
    };
    let dry = prune(
        &["backup.retention_count=1", "backup.retention_age=0s"],
        &["--dry-run"],
    );
    assert!(dry.status.success(), "{}", text(&dry.stderr));
    assert!(
        text(&dry.stdout).contains(&format!("{a}  would remove")),
        "{}",
        text(&dry.stdout)
    );
    assert_eq!(listed(&s.config, &s.url), [c.clone(), b.clone(), a.clone()]);

    let by_count = prune(
        &["backup.retention_count=1", "backup.retention_age=0s"],
        &[],
    );
    assert!(by_count.status.success(), "{}", text(&by_count.stderr));
    let stdout = text(&by_count.stdout);
    assert!(
        stdout.contains(&format!("{b}  keep (newest that verifies)")),
        "{stdout}"
    );
    assert_eq!(listed(&s.config, &s.url), [c.clone(), b.clone()]);

    std::thread::sleep(Duration::from_millis(1100));
    let by_age = prune(
        &["backup.retention_count=0", "backup.retention_age=1s"],
        &[],
    );
    assert!(by_age.status.success(), "{}", text(&by_age.stderr));
    assert_eq!(listed(&s.config, &s.url), std::slice::from_ref(&b));

    // When nothing verifies, nothing is removed.
    let path = s.artifact(&b);
    let bytes = fs::read(&path).unwrap();
    fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
    let stderr = assert_fails(
        &prune(
            &["backup.retention_count=1", "backup.retention_age=1s"],
            &[],
        ),
        3,
    );
    assert!(stderr.contains("does not verify"), "{stderr}");
    assert_eq!(listed(&s.config, &s.url), [b]);
}

#[tokio::test]
async fn the_backup_role_only_reads_and_no_secret_reaches_logs_or_the_manifest() {
    let s = source(3).await;
    let roles = s.db.settings().roles;
    let owner = connect(&s.db.settings().database).await;
    for (table, _) in TABLES {
        for privilege in [
            "INSERT",
            "UPDATE",
            "DELETE",
            "TRUNCATE",
            "REFERENCES",
            "TRIGGER",
        ] {
            let granted: bool = owner
                .query_one(
                    "SELECT has_table_privilege($1, $2, $3)",
                    &[&roles.backup, table, &privilege],
                )
                .await
                .unwrap()
                .get(0);
            assert!(!granted, "{} has {privilege} on {table}", roles.backup);
        }
        let select: bool = owner
            .query_one(
                "SELECT has_table_privilege($1, $2, 'SELECT')",
                &[&roles.backup, table],
            )
            .await
            .unwrap()
            .get(0);
        assert!(select, "{} can read {table}", roles.backup);
    }

    let s3_secret = "s3-secret-9d2e7b";
    let secret_file = s.ws.path("s3-secret");
    fs::write(&secret_file, s3_secret).unwrap();
    let config = s.ws.config(
        "secrets",
        &backup_role(&s.db),
        &format!(
            "[backup]\ns3_secret_access_key_file = \"{}\"\n",
            secret_file.display()
        ),
    );
    let output = run_ok(
        &config,
        &[
            "--destination",
            &s.url,
            "--set",
            "telemetry.log_level=debug",
            "run",
        ],
    );
    let name = backup_name(&output);
    let manifest = fs::read_to_string(s.dir.join(format!("{name}.manifest.json"))).unwrap();
    let printed = run_ok(&config, &["config"]);
    let secrets = [s.db.role_password("backup"), s3_secret.to_owned()];
    for secret in &secrets {
        for (what, haystack) in [
            ("stdout", text(&output.stdout)),
            ("stderr", text(&output.stderr)),
            ("manifest", manifest.clone()),
            ("config", text(&printed.stdout)),
        ] {
            assert!(
                !haystack.contains(secret.as_str()),
                "a secret in the {what}: {haystack}"
            );
        }
    }
    assert!(
        text(&printed.stdout).contains("s3_secret_access_key = \"[redacted]\""),
        "{}",
        text(&printed.stdout)
    );
    let manifest: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    for key in ["user", "host", "password", "port"] {
        assert!(manifest.get(key).is_none(), "manifest has {key}");
    }
}

#[test]
fn help_documents_the_subcommands_and_exit_codes() {
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_backup"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(help.status.success());
    let help = text(&help.stdout);
    for word in [
        "run",
        "list",
        "verify",
        "restore",
        "prune",
        "--destination",
        "--config",
        "Exit codes",
        "3 a backup is damaged",
    ] {
        assert!(help.contains(word), "{word}: {help}");
    }
}

#[tokio::test]
async fn bad_configuration_exits_2_naming_the_problem() {
    let s = source(0).await;
    let output = backup(&s.config, &["--destination", &s.url, "list"])
        .env("BOUTIQUE__BACKUP__RETENTION_COUNTT", "3")
        .output()
        .unwrap();
    let stderr = assert_fails(&output, 2);
    assert!(stderr.contains("backup.retention_countt"), "{stderr}");

    let stderr = assert_fails(&run(&s.config, &["list"]), 2);
    assert!(stderr.contains("no backup destination"), "{stderr}");

    let level = [
        "--destination",
        &s.url,
        "--set",
        "backup.compression_level=11",
        "run",
    ];
    let stderr = assert_fails(&run(&s.config, &level), 2);
    assert!(stderr.contains("backup.compression_level"), "{stderr}");

    let stderr = assert_fails(
        &run(&s.config, &["--destination", "ftp://host/x", "list"]),
        2,
    );
    assert!(stderr.contains("ftp"), "{stderr}");

    let stderr = assert_fails(
        &run(&s.config, &["--destination", &s.url, "verify", "yesterday"]),
        2,
    );
    assert!(stderr.contains("not a backup name"), "{stderr}");
}
