//! The `backup` binary against a real S3-compatible server on loopback
//! (moto in server mode) and a real TLS PostgreSQL.
//!
//! moto comes from the pinned virtual environment of `ci/python-venv.sh`
//! (under target/), created on first use; `MOTO_SERVER` may name another
//! `moto_server` executable. Without Python the tests fail, saying so.

mod common;

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::*;
use object_store::ObjectStoreExt as _;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;

const ACCESS_KEY: &str = "AKIDBACKUPTEST000001";
const SECRET_KEY: &str = "s3-secret-key-for-moto-5e1f";
const REGION: &str = "us-east-1";

/// One moto server for this test binary, stopped when the process exits.
struct Moto {
    child: Child,
    port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn moto_server() -> PathBuf {
    if let Some(path) = std::env::var_os("MOTO_SERVER") {
        return PathBuf::from(path);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let output = Command::new("bash")
        .arg(root.join("ci/python-venv.sh"))
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run ci/python-venv.sh (bash needed): {e}"));
    assert!(
        output.status.success(),
        "ci/python-venv.sh failed: the S3 tests need Python 3 with venv and pip to install moto (see ci/requirements.txt)"
    );
    let venv = String::from_utf8(output.stdout).unwrap();
    PathBuf::from(venv.trim()).join("bin/moto_server")
}

fn moto() -> &'static Moto {
    static MOTO: OnceLock<Moto> = OnceLock::new();
    MOTO.get_or_init(|| {
        let server = moto_server();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(&server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", server.display()));
        let moto = Moto { child, port };
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "moto did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        moto
    })
}

impl Moto {
    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates a bucket (moto accepts an unsigned request).
    fn create_bucket(&self, bucket: &str) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            stream,
            "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    }

    /// ListMultipartUploads of `bucket`, as XML.
    fn multipart_uploads(&self, bucket: &str) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            stream,
            "GET /{bucket}?uploads HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
            self.port
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        response
    }

    fn store(&self, bucket: &str) -> object_store::aws::AmazonS3 {
        AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_endpoint(self.endpoint())
            .with_allow_http(true)
            .with_region(REGION)
            .with_access_key_id(ACCESS_KEY)
            .with_secret_access_key(SECRET_KEY)
            .build()
            .unwrap()
    }
}

static NEXT_BUCKET: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

fn new_bucket() -> String {
    let n = NEXT_BUCKET.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let bucket = format!("backups-{}-{n}", std::process::id());
    moto().create_bucket(&bucket);
    bucket
}

/// Credentials in secret files, the endpoint from the standard variables.
fn s3_config(ws: &Workspace, name: &str, database: &orders::config::DatabaseSettings) -> PathBuf {
    let key = ws.path("s3-access-key");
    let secret = ws.path("s3-secret-key");
    std::fs::write(&key, ACCESS_KEY).unwrap();
    std::fs::write(&secret, SECRET_KEY).unwrap();
    ws.config(
        name,
        database,
        &format!(
            "[backup]\ns3_access_key_id_file = \"{}\"\ns3_secret_access_key_file = \"{}\"\n",
            key.display(),
            secret.display()
        ),
    )
}

fn s3(config: &Path, args: &[&str]) -> Command {
    let mut command = backup(config, args);
    command
        .env("AWS_ENDPOINT_URL", moto().endpoint())
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_REGION", REGION);
    command
}

fn s3_ok(config: &Path, args: &[&str]) -> std::process::Output {
    let output = s3(config, args).output().unwrap();
    assert!(
        output.status.success(),
        "backup {args:?}: {}\n{}",
        text(&output.stderr),
        text(&output.stdout)
    );
    output
}

fn names(output: &std::process::Output) -> Vec<String> {
    text(&output.stdout)
        .lines()
        .filter(|l| l.starts_with("orders-"))
        .map(|l| l.split_whitespace().next().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_list_verify_restore_and_prune_work_on_s3_as_on_a_volume() {
    let bucket = new_bucket();
    let url = format!("s3://{bucket}/orders/prod");
    let db = migrated_db().await;
    let owner = db.settings().database;
    seed_nasty(&connect(&owner).await, 0, 25).await;
    // Over one 8 MiB part once compressed (random text does not shrink):
    // a real multipart upload.
    let client = connect(&owner).await;
    seed_bulk(&client, 1, 150_000).await;
    client
        .batch_execute(
            "UPDATE orders SET shipping_street_address = \
             md5(random()::text) || md5(random()::text) || md5(random()::text) || md5(random()::text)",
        )
        .await
        .unwrap();
    let ws = Workspace::new();
    let config = s3_config(&ws, "backup", &backup_role(&db));

    let first = s3_ok(&config, &["--destination", &url, "run"]);
    let first = backup_name(&first);
    std::thread::sleep(Duration::from_millis(1100));
    // Debug logs too (object_store, reqwest, hyper) keep the credentials out.
    let output = s3_ok(
        &config,
        &[
            "--destination",
            &url,
            "--set",
            "telemetry.log_level=trace",
            "run",
        ],
    );
    let second = backup_name(&output);
    for stream in [text(&output.stdout), text(&output.stderr)] {
        assert!(
            !stream.contains(SECRET_KEY) && !stream.contains(ACCESS_KEY),
            "{stream}"
        );
    }

    let store = moto().store(&bucket);
    let manifest = store
        .get(&ObjectPath::from(format!(
            "orders/prod/{second}.manifest.json"
        )))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let manifest_text = String::from_utf8(manifest.to_vec()).unwrap();
    assert!(!manifest_text.contains(SECRET_KEY) && !manifest_text.contains(ACCESS_KEY));
    let manifest: serde_json::Value = serde_json::from_str(&manifest_text).unwrap();
    assert_eq!(manifest_counts(&manifest), counts(&owner).await);
    assert!(
        manifest["artifact_bytes"].as_u64().unwrap() > 8 * 1024 * 1024,
        "{manifest}"
    );

    let listing = s3_ok(&config, &["--destination", &url, "list"]);
    assert_eq!(names(&listing), [second.clone(), first.clone()]);
    s3_ok(&config, &["--destination", &url, "verify", "latest"]);

    let target = empty_db().await;
    let target_config = s3_config(&ws, "target", &target.settings().database);
    s3_ok(&target_config, &["--destination", &url, "restore", &second]);
    assert_eq!(dump(&target.settings().database).await, dump(&owner).await);

    let pruned = s3_ok(
        &config,
        &[
            "--destination",
            &url,
            "--set",
            "backup.retention_count=1",
            "prune",
        ],
    );
    assert!(
        text(&pruned.stdout).contains(&format!("{first}  removed")),
        "{}",
        text(&pruned.stdout)
    );
    let listing = s3_ok(&config, &["--destination", &url, "list"]);
    assert_eq!(names(&listing), [second]);
}

#[tokio::test]
async fn s3_damage_a_missing_bucket_and_a_killed_backup() {
    let bucket = new_bucket();
    let url = format!("s3://{bucket}/b");
    let db = migrated_db().await;
    let owner = db.settings().database;
    seed_nasty(&connect(&owner).await, 0, 10).await;
    let ws = Workspace::new();
    let config = s3_config(&ws, "backup", &backup_role(&db));

    // No such bucket: one line, exit 1.
    let missing = s3(
        &config,
        &["--destination", "s3://no-such-bucket-here/x", "run"],
    )
    .output()
    .unwrap();
    let stderr = assert_fails(&missing, 1);
    assert!(stderr.contains("no-such-bucket-here"), "{stderr}");

    // A truncated artifact: verify and restore fail naming it, nothing changes.
    let name = backup_name(&s3_ok(&config, &["--destination", &url, "run"]));
    let store = moto().store(&bucket);
    let artifact = ObjectPath::from(format!("b/{name}.sql.gz"));
    let bytes = store.get(&artifact).await.unwrap().bytes().await.unwrap();
    store
        .put(&artifact, bytes.slice(..bytes.len() / 2).into())
        .await
        .unwrap();
    let stderr = assert_fails(
        &s3(&config, &["--destination", &url, "verify", &name])
            .output()
            .unwrap(),
        3,
    );
    assert!(stderr.contains("truncated"), "{stderr}");
    let target = empty_db().await;
    let target_config = s3_config(&ws, "target", &target.settings().database);
    let stderr = assert_fails(
        &s3(
            &target_config,
            &["--destination", &url, "restore", "latest"],
        )
        .output()
        .unwrap(),
        3,
    );
    assert!(stderr.contains("truncated"), "{stderr}");
    assert!(!has_table(&target.settings().database, "orders").await);

    // A missing manifest: invisible to list, named as incomplete.
    store
        .delete(&ObjectPath::from(format!("b/{name}.manifest.json")))
        .await
        .unwrap();
    assert!(names(&s3_ok(&config, &["--destination", &url, "list"])).is_empty());
    let stderr = assert_fails(
        &s3(&config, &["--destination", &url, "verify", &name])
            .output()
            .unwrap(),
        3,
    );
    assert!(stderr.contains("no manifest"), "{stderr}");

    // Killed while copying: the multipart upload is never completed.
    std::thread::sleep(Duration::from_millis(1100)); // names have whole seconds
    let locker = lock(&db, "order_items").await;
    let mut child = s3(&config, &["--destination", &url, "run"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_blocked_backup(&db).await;
    child.kill().unwrap();
    child.wait().unwrap();
    drop(locker);
    assert!(names(&s3_ok(&config, &["--destination", &url, "list"])).is_empty());
    let stderr = assert_fails(
        &s3(
            &target_config,
            &["--destination", &url, "restore", "latest"],
        )
        .output()
        .unwrap(),
        4,
    );
    assert!(stderr.contains("no complete backups"), "{stderr}");
}

#[tokio::test]
async fn sigterm_aborts_the_multipart_upload() {
    let bucket = new_bucket();
    let url = format!("s3://{bucket}/b");
    let db = migrated_db().await;
    seed_nasty(&connect(&db.settings().database).await, 0, 10).await;
    let ws = Workspace::new();
    let config = s3_config(&ws, "backup", &backup_role(&db));
    let locker = lock(&db, "order_items").await;
    let child = s3(&config, &["--destination", &url, "run"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_blocked_backup(&db).await;
    assert!(
        moto().multipart_uploads(&bucket).contains("<Upload>"),
        "the upload is under way"
    );
    terminate(&child);
    let output = child.wait_with_output().unwrap();
    drop(locker);
    let stderr = assert_fails(&output, 1);
    assert!(stderr.contains("interrupted"), "{stderr}");
    let uploads = moto().multipart_uploads(&bucket);
    assert!(
        !uploads.contains("<Upload>"),
        "no parts left behind: {uploads}"
    );
}
