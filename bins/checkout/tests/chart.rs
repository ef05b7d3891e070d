//! The Helm chart drives the real binaries.
//!
//! `ci/podtree.py` renders the chart with Helm's engine and lays out every
//! container as the kubelet would: its ConfigMap and Secret files (modes,
//! fsGroup ownership), its command line and environment. Then:
//!
//! 1. PostgreSQL starts as the chart's `postgres` container does in the
//!    official image: `initdb` with POSTGRES_USER, POSTGRES_PASSWORD_FILE and
//!    POSTGRES_INITDB_ARGS, POSTGRES_DB created, the init scripts of
//!    /docker-entrypoint-initdb.d run, then the server with the rendered
//!    arguments (so the chart's postgresql.conf, pg_hba.conf, certificate and
//!    key file as mounted);
//! 2. the migrator, checkout (against the downstream stand-ins), the backup
//!    and prune containers and the helm test run with exactly the rendered
//!    command lines, environment and files; an order is placed and backed up.
//!
//! What is substituted is the network only: the database is reached at
//! `localhost:<free port>` (`BOUTIQUE__DATABASE__HOST`/`_PORT`; the generated
//! certificate names `localhost` too), checkout listens on a free loopback
//! port (`PORT`) and calls the stand-ins (the `*_SERVICE_ADDR` variables), and
//! the server listens on loopback with its socket in the test directory.
//! Mount paths are moved under the test directory (podtree.py says how).

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::request;
use orders::proto::hipstershop::checkout_service_client::CheckoutServiceClient;
use orders::testkit::find_bin_dir;
use orders::testkit::standins::Downstream;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A container as rendered: argv, environment, its directory.
struct Container {
    argv: Vec<String>,
    env: BTreeMap<String, String>,
    dir: PathBuf,
}

impl Container {
    fn load(tree: &Path, name: &str) -> Container {
        let dir = tree.join(name);
        let split = |file: &str| -> Vec<String> {
            let bytes = fs::read(dir.join(file)).unwrap_or_else(|e| panic!("{name}/{file}: {e}"));
            bytes
                .split(|b| *b == 0)
                .filter(|part| !part.is_empty())
                .map(|part| String::from_utf8(part.to_vec()).unwrap())
                .collect()
        };
        let env = split("env")
            .into_iter()
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap();
                (k.to_owned(), v.to_owned())
            })
            .collect();
        Container {
            argv: split("argv"),
            env,
            dir,
        }
    }

    /// The binary of ours that argv[0] names (`/usr/local/bin/migrator`).
    fn command(&self, extra_env: &[(&str, String)]) -> Option<Command> {
        self.command_with(&self.argv[1..], extra_env)
    }

    /// Its binary, environment and files with other arguments.
    fn command_with(&self, args: &[String], extra_env: &[(&str, String)]) -> Option<Command> {
        let name = Path::new(&self.argv[0]).file_name()?.to_str()?.to_owned();
        let binary = our_binary(&name)?;
        let mut command = Command::new(binary);
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(&self.env)
            .envs(extra_env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null());
        Some(command)
    }
}

/// A binary of this workspace, next to the checkout binary cargo built.
fn our_binary(name: &str) -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_BIN_EXE_checkout")).parent().unwrap();
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} missing: build every binary first (cargo build --workspace --bins; cargo xtask test does)",
        path.display()
    );
    Some(path)
}

fn run(command: &mut Command, what: &str) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// (uid, gid) of the `postgres` user when we are root: PostgreSQL refuses root.
fn postgres_user() -> Option<(u32, u32)> {
    if fs::metadata("/proc/self").unwrap().uid() != 0 {
        return None;
    }
    // `postgres`, as in the image: pg_hba.conf lets that OS user in by peer.
    let passwd = fs::read_to_string("/etc/passwd").unwrap();
    let user = passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() > 3 && f[0] == "postgres").then(|| (f[2].parse().unwrap(), f[3].parse().unwrap()))
    });
    Some(user.expect("running as root needs a postgres user (apt-get install postgresql)"))
}

fn as_postgres(command: &mut Command, user: Option<(u32, u32)>) -> &mut Command {
    if let Some((uid, gid)) = user {
        command.uid(uid).gid(gid);
    }
    command.env("LC_ALL", "C")
}

fn chown_r(path: &Path, user: Option<(u32, u32)>) {
    if let Some((uid, gid)) = user {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
        if path.is_dir() {
            for entry in fs::read_dir(path).unwrap() {
                chown_r(&entry.unwrap().path(), Some((uid, gid)));
            }
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Stops the server however the test ends.
struct Server {
    pg_ctl: PathBuf,
    data: PathBuf,
    user: Option<(u32, u32)>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = as_postgres(
            Command::new(&self.pg_ctl)
                .arg("-D")
                .arg(&self.data)
                .args(["-m", "immediate", "stop"]),
            self.user,
        )
        .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rendered_chart_runs_postgres_migrator_checkout_backup_and_helm_test() {
    let user = postgres_user();
    let tmp = tempfile::Builder::new()
        .prefix("orders-chart-")
        .tempdir()
        .unwrap();
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let tree = tmp.path().join("tree");

    // Render and lay out. The kubelet's fsGroup becomes a local group: 999
    // (the image's postgres) the local postgres user's, ours root's.
    let venv = run(
        Command::new("bash").arg(root().join("ci/python-venv.sh")),
        "ci/python-venv.sh (Python 3 with venv and pip is needed)",
    );
    let python = PathBuf::from(String::from_utf8(venv.stdout).unwrap().trim()).join("bin/python");
    let pg_gid = user.map_or(0, |(_, gid)| gid);
    run(
        Command::new(&python)
            .arg(root().join("ci/podtree.py"))
            .arg(&tree)
            .args(["--gid-map", &format!("999={pg_gid},65532=0")]),
        "ci/podtree.py",
    );

    // 1. PostgreSQL, as the official image's entrypoint starts it.
    let pg = Container::load(&tree, "postgres-postgres");
    assert_eq!(pg.argv[0], "postgres");
    let bin = find_bin_dir().unwrap();
    let data = PathBuf::from(&pg.env["PGDATA"]);
    let volume = data.parent().unwrap();
    chown_r(volume, user); // the PVC, writable by fsGroup
    let key = pg.dir.join("root/etc/postgresql/tls/tls.key");
    if user.is_none() {
        // Not root: the file cannot belong to root as the kubelet makes it.
        fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    }
    let initdb_args: Vec<&str> = pg.env["POSTGRES_INITDB_ARGS"].split_whitespace().collect();
    run(
        as_postgres(
            Command::new(bin.join("initdb"))
                .arg("-D")
                .arg(&data)
                .arg(format!("--username={}", pg.env["POSTGRES_USER"]))
                .arg(format!("--pwfile={}", pg.env["POSTGRES_PASSWORD_FILE"]))
                .args(&initdb_args)
                .arg("--no-sync"),
            user,
        ),
        "initdb",
    );
    let port = free_port();
    let socket = tmp.path().join("socket");
    fs::create_dir(&socket).unwrap();
    chown_r(&socket, user);
    let mut options: Vec<String> = pg.argv[1..].to_vec();
    options.extend(
        [
            format!("port={port}"),
            "listen_addresses=127.0.0.1".to_owned(),
            format!("unix_socket_directories={}", socket.display()),
            "fsync=off".to_owned(),
        ]
        .into_iter()
        .flat_map(|setting| ["-c".to_owned(), setting]),
    );
    let log = tmp.path().join("server.log");
    fs::write(&log, "").unwrap();
    chown_r(&log, user);
    let server = Server {
        pg_ctl: bin.join("pg_ctl"),
        data: data.clone(),
        user,
    };
    let started = as_postgres(
        Command::new(&server.pg_ctl)
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(&log)
            .arg("-o")
            .arg(options.join(" "))
            .args(["-w", "-t", "60", "start"]),
        user,
    )
    .output()
    .unwrap();
    assert!(
        started.status.success(),
        "the chart's PostgreSQL did not start:\n{}",
        fs::read_to_string(&log).unwrap_or_default()
    );
    // psql: beside initdb, or on PATH (initdb may be a symlink elsewhere).
    let psql_bin = Some(bin.join("psql"))
        .filter(|p| p.exists())
        .or_else(|| {
            let target = fs::canonicalize(bin.join("initdb")).ok()?;
            Some(target.parent()?.join("psql")).filter(|p| p.exists())
        })
        .unwrap_or_else(|| PathBuf::from("psql"));
    let psql = |database: &str, extra: &[&str]| -> String {
        let output = run(
            as_postgres(
                Command::new(&psql_bin)
                    .args(["-v", "ON_ERROR_STOP=1", "--no-psqlrc", "-At"])
                    .arg("-h")
                    .arg(&socket)
                    .args(["-p", &port.to_string()])
                    .args(["-U", &pg.env["POSTGRES_USER"], "-d", database])
                    .args(extra),
                user,
            ),
            &format!("psql {extra:?}"),
        );
        String::from_utf8(output.stdout).unwrap()
    };
    psql(
        "postgres",
        &[
            "-c",
            &format!("CREATE DATABASE \"{}\"", pg.env["POSTGRES_DB"]),
        ],
    );
    let initdb_dir = pg.dir.join("root/docker-entrypoint-initdb.d");
    let mut scripts: Vec<PathBuf> = fs::read_dir(&initdb_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    scripts.sort();
    assert!(!scripts.is_empty());
    for script in &scripts {
        psql(&pg.env["POSTGRES_DB"], &["-f", script.to_str().unwrap()]);
    }

    // The network: the database on loopback (the certificate names localhost).
    let db_env = [
        ("BOUTIQUE__DATABASE__HOST", "localhost".to_owned()),
        ("BOUTIQUE__DATABASE__PORT", port.to_string()),
    ];

    // 2. The migrator, as the install Job runs it.
    let migrator = Container::load(&tree, "migrator-migrator");
    run(
        &mut migrator.command(&db_env).unwrap(),
        "the rendered migrator",
    );
    assert_eq!(
        psql(
            &pg.env["POSTGRES_DB"],
            &[
                "-c",
                "SELECT rolname FROM pg_roles WHERE rolname IN ('orderservice', 'orders_backup', 'orders_owner') ORDER BY 1"
            ]
        ),
        "orders_backup\norders_owner\norderservice\n"
    );

    // 3. checkout with the stand-ins; an order.
    let downstream = Downstream::start().await.unwrap();
    let checkout = Container::load(&tree, "checkout-checkout");
    let checkout_port = free_port();
    let mut env: Vec<(&str, String)> = db_env.to_vec();
    env.push(("PORT", checkout_port.to_string()));
    env.push(("BOUTIQUE__CHECKOUT__LISTEN_ADDR", "127.0.0.1".to_owned()));
    env.extend(downstream.addrs());
    let mut process = tokio::process::Command::from(checkout.command(&env).unwrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let endpoint = format!("http://127.0.0.1:{checkout_port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let channel = loop {
        let serving = async {
            let channel = tonic::transport::Channel::from_shared(endpoint.clone())
                .unwrap()
                .connect()
                .await
                .ok()?;
            let status = HealthClient::new(channel.clone())
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .ok()?
                .into_inner()
                .status;
            (status == ServingStatus::Serving as i32).then_some(channel)
        };
        if let Some(channel) = serving.await {
            break channel;
        }
        if let Ok(Some(status)) = process.try_wait() {
            panic!("the rendered checkout exited ({status})");
        }
        assert!(
            Instant::now() < deadline,
            "the rendered checkout never became SERVING"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    downstream.cart.add("chart-user", "OLJCESPC7Z", 2);
    let order = CheckoutServiceClient::new(channel)
        .place_order(request("chart-user", "USD"))
        .await
        .expect("PlaceOrder through the rendered checkout")
        .into_inner()
        .order
        .unwrap();
    assert_eq!(
        psql(
            &pg.env["POSTGRES_DB"],
            &[
                "-c",
                &format!(
                    "SELECT status FROM orders WHERE order_id = '{}'",
                    order.order_id
                )
            ]
        ),
        "completed\n"
    );

    // 4. The helm test: migrator verify with checkout's configuration.
    let test = Container::load(&tree, "test-schema");
    run(&mut test.command(&db_env).unwrap(), "the helm test");

    // 5. The backup CronJob's pod: `backup run`, then `backup prune`.
    let backup = Container::load(&tree, "backup-backup");
    let mut command = backup.command(&db_env).unwrap();
    run(&mut command, "the rendered backup run");
    let prune = Container::load(&tree, "backup-prune");
    run(
        &mut prune.command(&db_env).unwrap(),
        "the rendered backup prune",
    );
    // The same flags, `verify latest`: the artifact matches its manifest.
    let mut args = backup.argv[1..backup.argv.len() - 1].to_vec();
    args.extend(["verify".to_owned(), "latest".to_owned()]);
    let out = run(
        &mut backup.command_with(&args, &db_env).unwrap(),
        "backup verify latest",
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("orders=1"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let backups = tree.join("volumes/shop-boutique-orders-backups");
    assert!(
        fs::read_dir(&backups).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("orders-")),
        "no backup in {}",
        backups.display()
    );

    let _ = process.start_kill();
    drop(server);
}
