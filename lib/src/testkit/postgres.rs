//! A throwaway PostgreSQL cluster: real server binaries, TLS only, SCRAM.
//!
//! `initdb` and `postgres` refuse to run as root, and CI runs as root, so the
//! cluster's processes run as the `postgres` user (or `nobody`) when we are
//! root. A watchdog process holds the read end of a pipe whose write end only
//! this process holds: however the test process ends (normally, by a panic,
//! or SIGKILL), the kernel closes the pipe and the watchdog stops the server
//! and removes its directory.

use std::fs;
use std::io::{self, Write};
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use secrecy::SecretString;

use super::pki::TestCa;
use crate::config::{DatabaseSettings, RoleSettings, Settings, SslMode};
use crate::db::{Database, DbError};

/// The host name the server certificate is issued for. Connecting to
/// `127.0.0.1` instead exercises host-name verification failures.
pub const CERT_HOST: &str = "localhost";
/// The cluster's superuser.
pub const SUPERUSER: &str = "postgres";

/// A PostgreSQL cluster in a temporary directory, listening on loopback.
pub struct PgCluster {
    dir: PathBuf,
    bin_dir: PathBuf,
    port: u16,
    superuser_password: String,
    run_as: Option<(u32, u32)>,
    running: Mutex<bool>,
    watchdog: Mutex<Option<(Child, ChildStdin)>>,
}

/// A fresh database of the shared cluster with its own roles.
pub struct TestDb {
    /// The cluster it lives in.
    pub cluster: &'static PgCluster,
    /// Database name; also the prefix of its role names.
    pub name: String,
    owner_password: String,
}

impl PgCluster {
    /// The cluster shared by every test of this test binary, started on first use.
    pub fn shared() -> &'static PgCluster {
        static SHARED: OnceLock<PgCluster> = OnceLock::new();
        SHARED.get_or_init(|| match PgCluster::start() {
            Ok(cluster) => cluster,
            Err(e) => panic!("cannot start the test PostgreSQL cluster: {e}"),
        })
    }

    /// Creates and starts a new cluster.
    pub fn start() -> io::Result<PgCluster> {
        let cluster = PgCluster::init()?;
        cluster.start_server()?;
        Ok(cluster)
    }

    /// Creates and starts a new cluster whose `postgresql.conf` ends with
    /// `extra_postgresql_conf` (later lines win), e.g. `fsync = on` or
    /// `shared_preload_libraries = 'pg_stat_statements'` for benchmarks.
    pub fn start_with_settings(extra_postgresql_conf: &str) -> io::Result<PgCluster> {
        let cluster = PgCluster::init_with(extra_postgresql_conf)?;
        cluster.start_server()?;
        Ok(cluster)
    }

    /// Creates a cluster (initdb, TLS material, configuration) without
    /// starting it; [`PgCluster::start_server`] starts it. Its port is fixed
    /// now, so a client can be pointed at it before it is up.
    pub fn init() -> io::Result<PgCluster> {
        PgCluster::init_with("")
    }

    fn init_with(extra_postgresql_conf: &str) -> io::Result<PgCluster> {
        let bin_dir = find_bin_dir()?;
        let run_as = run_as_user()?;
        let dir = tempfile::Builder::new()
            .prefix("orders-pg-")
            .tempdir()?
            .keep();
        let superuser_password = random_secret();
        let pwfile = dir.join("pwfile");
        fs::write(&pwfile, &superuser_password)?;

        // TLS: a CA, and a server certificate for `localhost` only.
        let ca = TestCa::new("boutique-orders test CA")?;
        ca.write_cert(&dir.join("ca.crt"))?;
        let server = ca.server_cert(&[CERT_HOST])?;
        fs::write(dir.join("server.crt"), &server.cert_pem)?;
        fs::write(dir.join("server.key"), &server.key_pem)?;
        fs::set_permissions(dir.join("server.key"), fs::Permissions::from_mode(0o600))?;
        // A second, unrelated CA for "wrong CA" tests.
        TestCa::new("some other CA")?.write_cert(&dir.join("other-ca.crt"))?;
        chown_tree(&dir, run_as)?;

        let mut cluster = PgCluster {
            dir,
            bin_dir,
            port: 0,
            superuser_password,
            run_as,
            running: Mutex::new(false),
            watchdog: Mutex::new(None),
        };
        cluster.run_checked(
            Command::new(cluster.bin("initdb"))
                .arg("-D")
                .arg(cluster.data_dir())
                .args(["-U", SUPERUSER, "--auth=scram-sha-256", "-E", "UTF8"])
                .args(["--locale=C", "--no-sync"])
                .arg(format!("--pwfile={}", pwfile.display())),
        )?;
        fs::remove_file(&pwfile)?;
        cluster.port = free_port()?;
        cluster.write_config(extra_postgresql_conf)?;
        cluster.spawn_watchdog()?;
        Ok(cluster)
    }

    fn write_config(&self, extra_postgresql_conf: &str) -> io::Result<()> {
        let dir = self.dir.display();
        let conf = format!(
            "\n# boutique-orders testkit\n\
             listen_addresses = '127.0.0.1'\n\
             port = {port}\n\
             unix_socket_directories = ''\n\
             ssl = on\n\
             ssl_cert_file = '{dir}/server.crt'\n\
             ssl_key_file = '{dir}/server.key'\n\
             password_encryption = 'scram-sha-256'\n\
             max_connections = 300\n\
             shared_buffers = '32MB'\n\
             fsync = off\n\
             full_page_writes = off\n\
             log_min_messages = warning\n\
             log_min_error_statement = error\n\
             log_line_prefix = '%m [%p] %q%u@%d '\n\
             {extra_postgresql_conf}\n",
            port = self.port
        );
        let data = self.data_dir();
        let mut file = fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))?;
        file.write_all(conf.as_bytes())?;
        // TLS or nothing: there is no `host` (plain) or `local` line at all.
        fs::write(
            data.join("pg_hba.conf"),
            "hostssl all all 127.0.0.1/32 scram-sha-256\nhostssl all all ::1/128 scram-sha-256\n",
        )
    }

    /// Starts (or restarts) the server and waits until it accepts connections.
    pub fn start_server(&self) -> io::Result<()> {
        let mut running = lock(&self.running);
        if *running {
            return Ok(());
        }
        self.run_checked(
            Command::new(self.bin("pg_ctl"))
                .arg("-D")
                .arg(self.data_dir())
                .arg("-l")
                .arg(self.log_path())
                .args(["-w", "-t", "60", "start"]),
        )?;
        *running = true;
        Ok(())
    }

    /// Stops the server (fast shutdown: clients are disconnected).
    pub fn stop_server(&self) -> io::Result<()> {
        let mut running = lock(&self.running);
        if !*running {
            return Ok(());
        }
        self.run_checked(
            Command::new(self.bin("pg_ctl"))
                .arg("-D")
                .arg(self.data_dir())
                .args(["-w", "-m", "fast", "stop"]),
        )?;
        *running = false;
        Ok(())
    }

    /// The loopback port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The CA certificate that signed the server's certificate.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// A CA certificate that did not sign the server's certificate.
    pub fn other_ca_cert(&self) -> PathBuf {
        self.dir.join("other-ca.crt")
    }

    /// The directory holding the cluster (data, certificates, log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Everything the server has logged so far.
    pub fn server_log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Superuser connection settings for `dbname`, `verify-full` against
    /// [`CERT_HOST`] with the cluster's CA.
    pub fn superuser_settings(&self, dbname: &str) -> DatabaseSettings {
        DatabaseSettings {
            host: CERT_HOST.into(),
            port: self.port,
            name: dbname.into(),
            user: SUPERUSER.into(),
            password: Some(SecretString::from(self.superuser_password.clone())),
            sslmode: SslMode::VerifyFull,
            sslrootcert: Some(self.ca_cert()),
            connect_timeout: Duration::from_secs(10),
            wait_timeout: Duration::from_secs(10),
            ..DatabaseSettings::default()
        }
    }

    /// Runs SQL as the superuser in `dbname` (simple query protocol).
    pub async fn superuser_execute(&self, dbname: &str, sql: &str) -> Result<(), DbError> {
        let client = Database::new(&self.superuser_settings(dbname), "testkit")?
            .connect()
            .await?;
        client.batch_execute(sql).await?;
        Ok(())
    }

    /// A fresh database with an owner role (`<name>_owner`, LOGIN CREATEROLE)
    /// in the shared cluster; role names are unique to it, so tests may run
    /// in parallel.
    pub async fn create_database(&'static self) -> Result<TestDb, DbError> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "t{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let owner_password = random_secret();
        // Two round trips: CREATE DATABASE refuses to run in the implicit
        // transaction of a multi-statement query.
        let client = Database::new(&self.superuser_settings("postgres"), "testkit")?
            .connect()
            .await?;
        client
            .batch_execute(&format!(
                "CREATE ROLE {name}_owner LOGIN CREATEROLE PASSWORD '{owner_password}'"
            ))
            .await?;
        client
            .batch_execute(&format!("CREATE DATABASE {name} OWNER {name}_owner"))
            .await?;
        Ok(TestDb {
            cluster: self,
            name,
            owner_password,
        })
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    fn bin(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    /// Runs a PostgreSQL tool as the cluster's user; fails with its output.
    fn run_checked(&self, command: &mut Command) -> io::Result<()> {
        command.env("LC_ALL", "C").stdin(Stdio::null());
        if let Some((uid, gid)) = self.run_as {
            command.uid(uid).gid(gid);
        }
        let output = command.output()?;
        if output.status.success() {
            return Ok(());
        }
        Err(io::Error::other(format!(
            "{:?} failed ({}): {}{}",
            command.get_program(),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )))
    }

    fn spawn_watchdog(&self) -> io::Result<()> {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(r#"read _ignored; "$0" -D "$1" -m immediate stop >/dev/null 2>&1; rm -rf "$2""#)
            .arg(self.bin("pg_ctl"))
            .arg(self.data_dir())
            .arg(&self.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some((uid, gid)) = self.run_as {
            command.uid(uid).gid(gid);
        }
        let mut child = command.spawn()?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| io::Error::other("watchdog has no stdin"))?;
        *lock(&self.watchdog) = Some((child, stdin));
        Ok(())
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        // Closing the pipe makes the watchdog stop the server and clean up.
        if let Some((mut child, stdin)) = lock(&self.watchdog).take() {
            drop(stdin);
            let _ = child.wait();
        }
    }
}

impl TestDb {
    /// The owner role's name (the role the migrator connects as).
    pub fn owner(&self) -> String {
        format!("{}_owner", self.name)
    }

    /// Settings that connect as the owner, `verify-full`, with role names
    /// unique to this database and passwords for both application roles.
    pub fn settings(&self) -> Settings {
        let mut database = self.cluster.superuser_settings(&self.name);
        database.user = self.owner();
        database.password = Some(SecretString::from(self.owner_password.clone()));
        Settings {
            database,
            roles: RoleSettings {
                checkout: format!("{}_checkout", self.name),
                checkout_password: Some(SecretString::from(self.role_password("checkout"))),
                backup: format!("{}_backup", self.name),
                backup_password: Some(SecretString::from(self.role_password("backup"))),
                ..RoleSettings::default()
            },
            ..Settings::default()
        }
    }

    /// Settings that connect as `role` (a name from [`TestDb::settings`]'s roles).
    pub fn settings_as(&self, role: &str, password: &str) -> DatabaseSettings {
        let mut database = self.cluster.superuser_settings(&self.name);
        database.user = role.into();
        database.password = Some(SecretString::from(password.to_owned()));
        database
    }

    /// The password [`TestDb::settings`] gives the role `kind` (`checkout` or `backup`).
    pub fn role_password(&self, kind: &str) -> String {
        format!("{}-{kind}-{}", self.name, self.owner_password)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A test that panicked while holding the lock leaves valid data behind.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A random-enough secret for a throwaway cluster (UUIDv7 carries 74 random bits).
fn random_secret() -> String {
    format!("pw{}", uuid::Uuid::now_v7().simple())
}

fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The PostgreSQL server binaries: `$PG_BINDIR`, `initdb` on PATH,
/// `pg_config --bindir`, or the newest `/usr/lib/postgresql/*/bin`.
pub fn find_bin_dir() -> io::Result<PathBuf> {
    let has_initdb = |dir: &Path| dir.join("initdb").is_file();
    if let Some(dir) = std::env::var_os("PG_BINDIR").map(PathBuf::from)
        && has_initdb(&dir)
    {
        return Ok(dir);
    }
    if let Some(path) = std::env::var_os("PATH")
        && let Some(dir) = std::env::split_paths(&path).find(|d| has_initdb(d))
    {
        return Ok(dir);
    }
    if let Ok(output) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if has_initdb(&dir) {
            return Ok(dir);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_string_lossy().parse().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, dir)| has_initdb(dir))
        .collect();
    versions.sort();
    versions.pop().map(|(_, dir)| dir).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            "no PostgreSQL server binaries (initdb): install postgresql or set PG_BINDIR",
        )
    })
}

/// When we are root, the uid/gid to run PostgreSQL as: `postgres`, else `nobody`.
fn run_as_user() -> io::Result<Option<(u32, u32)>> {
    if fs::metadata("/proc/self")?.uid() != 0 {
        return Ok(None);
    }
    let passwd = fs::read_to_string("/etc/passwd")?;
    let find = |user: &str| {
        passwd.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            match fields.as_slice() {
                [name, _, uid, gid, ..] if *name == user => {
                    Some((uid.parse().ok()?, gid.parse().ok()?))
                }
                _ => None,
            }
        })
    };
    Ok(Some(
        find("postgres").or_else(|| find("nobody")).ok_or_else(|| {
            io::Error::other("running as root and neither a postgres nor a nobody user exists")
        })?,
    ))
}

fn chown_tree(path: &Path, run_as: Option<(u32, u32)>) -> io::Result<()> {
    let Some((uid, gid)) = run_as else {
        return Ok(());
    };
    std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
    if path.is_dir() {
        for entry in fs::read_dir(path)? {
            chown_tree(&entry?.path(), run_as)?;
        }
    }
    Ok(())
}
