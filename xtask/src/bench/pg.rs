//! The bench's PostgreSQL: a throwaway TLS-only cluster configured like a
//! production server (fsync on) plus `pg_stat_statements`, the bench
//! databases and roles, configuration files as the Helm chart mounts them,
//! and the server-side counters the scenarios read.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, bail};
use orders::db::Database;
use orders::testkit::{CERT_HOST, PgCluster, find_bin_dir};
use serde_json::{Value, json};
use tokio_postgres::Client;

use super::procstat::{self, Stat};

/// Database of `place_order`, `store_write` and `startup`.
pub const ORDERS_DB: &str = "bench_orders";
/// Database with the bulk history of `history_read` and `backup`.
pub const HISTORY_DB: &str = "bench_history";

/// Server settings on top of the testkit's (which turn fsync off for tests).
/// Production-like durability; autovacuum off so the per-order counters of
/// `pg_stat_database` hold only what the measured clients did (the bench
/// runs VACUUM ANALYZE itself after loading data).
pub const SERVER_SETTINGS: &str = "\
# cargo xtask bench
fsync = on
full_page_writes = on
synchronous_commit = on
shared_buffers = '256MB'
max_wal_size = '4GB'
checkpoint_timeout = '30min'
autovacuum = off
shared_preload_libraries = 'pg_stat_statements'
pg_stat_statements.track = top
pg_stat_statements.max = 1000
";

/// The roles of the bench databases (cluster-wide, like in production).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Owns the schema; runs the migrator and restores.
    Owner,
    /// What checkout logs in as.
    Checkout,
    /// What backup logs in as.
    Backup,
}

impl Role {
    /// The role's name.
    pub fn name(self) -> &'static str {
        match self {
            Role::Owner => "bench_owner",
            Role::Checkout => "bench_checkout",
            Role::Backup => "bench_backup",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Checkout => "checkout",
            Role::Backup => "backup",
        }
    }
}

/// The cluster, its configuration files and a superuser session on the
/// `postgres` database (outside every measured database, so reading the
/// counters never counts in them).
pub struct BenchPg {
    /// The cluster.
    pub cluster: PgCluster,
    /// Where the server's binaries are (maybe symlinks, as in `/usr/local/bin`).
    bin_dir: PathBuf,
    /// The release `migrator`.
    migrator: PathBuf,
    /// Config and secret files.
    files: tempfile::TempDir,
    admin: Client,
}

/// Server-side counters of one database, read at one instant.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counters {
    /// `pg_stat_database.xact_commit`.
    pub commits: i64,
    /// `pg_stat_database.xact_rollback`.
    pub rollbacks: i64,
    /// `pg_stat_database.sessions`: each new session runs one transaction
    /// of its own while it starts, which is not a round trip of the client.
    pub sessions: i64,
    /// `pg_stat_statements.calls` of one role in the database.
    pub statements: i64,
    /// The next transaction id: the difference counts transactions that
    /// wrote (read-only ones are given no id).
    pub next_xid: i64,
    /// CPU seconds of the whole server so far.
    pub server_cpu_s: f64,
}

impl std::ops::Sub for Counters {
    type Output = Counters;
    fn sub(self, other: Counters) -> Counters {
        Counters {
            commits: self.commits - other.commits,
            rollbacks: self.rollbacks - other.rollbacks,
            sessions: self.sessions - other.sessions,
            statements: self.statements - other.statements,
            next_xid: self.next_xid - other.next_xid,
            server_cpu_s: self.server_cpu_s - other.server_cpu_s,
        }
    }
}

impl std::ops::Add for Counters {
    type Output = Counters;
    fn add(self, other: Counters) -> Counters {
        Counters {
            commits: self.commits + other.commits,
            rollbacks: self.rollbacks + other.rollbacks,
            sessions: self.sessions + other.sessions,
            statements: self.statements + other.statements,
            next_xid: self.next_xid + other.next_xid,
            server_cpu_s: self.server_cpu_s + other.server_cpu_s,
        }
    }
}

impl Counters {
    /// Client round trips: transactions less the sessions' start-up ones.
    /// Each message flight that ends in Sync is one round trip and one
    /// transaction: a statement (Bind, Execute, Sync once prepared), the
    /// preparation itself (Parse, Describe, Sync: once per statement and
    /// pooled connection), an empty query.
    pub fn round_trips(&self) -> i64 {
        self.commits + self.rollbacks - self.sessions
    }

    /// Figures per operation, `ops` operations.
    pub fn per_op(&self, ops: u64) -> Value {
        let per = |n: i64| {
            if ops == 0 {
                Value::Null
            } else {
                json!(super::procstat::round3(n as f64 / ops as f64))
            }
        };
        json!({
            "round_trips_per_order": per(self.round_trips()),
            "statements_per_order": per(self.statements),
            "write_commits_per_order": per(self.next_xid),
            "server_cpu_s_per_1000_orders": if ops == 0 {
                Value::Null
            } else {
                json!(super::procstat::round3(self.server_cpu_s * 1000.0 / ops as f64))
            },
            "raw": {
                "xact_commit": self.commits,
                "xact_rollback": self.rollbacks,
                "sessions": self.sessions,
                "pg_stat_statements_calls": self.statements,
                "xids_assigned": self.next_xid,
                "server_cpu_s": super::procstat::round3(self.server_cpu_s),
                "orders": ops,
            }
        })
    }
}

impl BenchPg {
    /// Starts the cluster, creates the roles and installs `pg_stat_statements`.
    pub async fn start(release: &Path) -> anyhow::Result<BenchPg> {
        let cluster = PgCluster::start_with_settings(SERVER_SETTINGS)
            .context("cannot start PostgreSQL (is it installed?)")?;
        let files = tempfile::Builder::new()
            .prefix("orders-bench-")
            .tempdir()
            .context("cannot create a temporary directory")?;
        fs::create_dir_all(files.path().join("secrets"))?;
        fs::copy(cluster.ca_cert(), files.path().join("ca.crt"))?;
        for role in [Role::Owner, Role::Checkout, Role::Backup] {
            fs::write(password_file(files.path(), role), secret())?;
        }
        let admin = Database::new(&cluster.superuser_settings("postgres"), "bench")?
            .connect()
            .await
            .context("cannot connect to the bench PostgreSQL")?;
        let owner_password = fs::read_to_string(password_file(files.path(), Role::Owner))?;
        admin
            .batch_execute(&format!(
                "CREATE ROLE {} LOGIN CREATEROLE PASSWORD '{owner_password}';
                 CREATE EXTENSION IF NOT EXISTS pg_stat_statements;",
                Role::Owner.name()
            ))
            .await
            .context("cannot create the owner role or pg_stat_statements")?;
        Ok(BenchPg {
            cluster,
            bin_dir: find_bin_dir()?,
            migrator: release.join("migrator"),
            files,
            admin,
        })
    }

    /// Creates `name` (dropping it first) owned by the owner role, and
    /// migrates it with the release `migrator`, which also creates the
    /// checkout and backup roles and their grants.
    pub async fn create_database(&self, name: &str) -> anyhow::Result<()> {
        self.create_empty_database(name).await?;
        let config = self.config_file(name, Role::Owner, "")?;
        let output = Command::new(&self.migrator)
            .arg("--config")
            .arg(&config)
            .arg("up")
            .output()
            .context("cannot run migrator")?;
        if !output.status.success() {
            bail!(
                "migrator up failed ({}): {}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }

    /// Creates `name` without any schema (a restore target).
    pub async fn create_empty_database(&self, name: &str) -> anyhow::Result<()> {
        self.admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await?;
        self.admin
            .batch_execute(&format!(
                "CREATE DATABASE {name} OWNER {}",
                Role::Owner.name()
            ))
            .await
            .with_context(|| format!("cannot create database {name}"))?;
        Ok(())
    }

    /// Drops `name`.
    pub async fn drop_database(&self, name: &str) -> anyhow::Result<()> {
        self.admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await?;
        Ok(())
    }

    /// A PostgreSQL client tool (`pgbench`, `pg_dump`, `psql`) of the
    /// server's version: next to the server binaries, next to what they
    /// link to, or on `PATH`.
    pub fn tool(&self, name: &str) -> PathBuf {
        let next_to_server = self.bin_dir.join(name);
        if next_to_server.is_file() {
            return next_to_server;
        }
        if let Ok(initdb) = fs::canonicalize(self.bin_dir.join("initdb"))
            && let Some(dir) = initdb.parent()
            && dir.join(name).is_file()
        {
            return dir.join(name);
        }
        PathBuf::from(name)
    }

    /// Writes a TOML configuration for `db` as `role`, the way the chart's
    /// ConfigMap and Secrets give it (password in a file, `verify-full`),
    /// followed by `extra` TOML.
    pub fn config_file(&self, db: &str, role: Role, extra: &str) -> anyhow::Result<PathBuf> {
        let dir = self.files.path();
        let path = dir.join(format!("{db}-{}.toml", role.key()));
        let text = format!(
            r#"[database]
host = "{CERT_HOST}"
port = {port}
name = "{db}"
user = "{user}"
password_file = "{password}"
sslmode = "verify-full"
sslrootcert = "{ca}"

[roles]
checkout = "{checkout}"
checkout_password_file = "{checkout_password}"
backup = "{backup}"
backup_password_file = "{backup_password}"
{extra}"#,
            port = self.cluster.port(),
            user = role.name(),
            password = password_file(dir, role).display(),
            ca = dir.join("ca.crt").display(),
            checkout = Role::Checkout.name(),
            checkout_password = password_file(dir, Role::Checkout).display(),
            backup = Role::Backup.name(),
            backup_password = password_file(dir, Role::Backup).display(),
        );
        fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
    }

    /// A libpq connection string for `db` as `role` (password separately,
    /// for `PGPASSWORD`), `verify-full` like the binaries.
    pub fn libpq(&self, db: &str, role: Role) -> anyhow::Result<(String, String)> {
        let conninfo = format!(
            "host={CERT_HOST} port={} dbname={db} user={} sslmode=verify-full sslrootcert={}",
            self.cluster.port(),
            role.name(),
            self.files.path().join("ca.crt").display()
        );
        Ok((conninfo, self.password(role)?))
    }

    /// The password of `role`.
    pub fn password(&self, role: Role) -> anyhow::Result<String> {
        Ok(fs::read_to_string(password_file(self.files.path(), role))?)
    }

    /// Library settings for `db` as `role`.
    pub fn settings(
        &self,
        db: &str,
        role: Role,
    ) -> anyhow::Result<orders::config::DatabaseSettings> {
        let mut settings = self.cluster.superuser_settings(db);
        settings.user = role.name().into();
        settings.password = Some(self.password(role)?.into());
        Ok(settings)
    }

    /// A session in `db` as `role` (close it before reading [`Counters`]).
    pub async fn connect(&self, db: &str, role: Role) -> anyhow::Result<Client> {
        Database::new(&self.settings(db, role)?, "bench")?
            .connect()
            .await
            .with_context(|| format!("cannot connect to {db} as {}", role.name()))
    }

    /// Runs SQL in `db` as the owner, then closes the session.
    pub async fn owner_execute(&self, db: &str, sql: &str) -> anyhow::Result<()> {
        let client = self.connect(db, Role::Owner).await?;
        client
            .batch_execute(sql)
            .await
            .with_context(|| format!("{sql} failed"))?;
        Ok(())
    }

    /// Runs a query on the superuser's `postgres` session.
    pub async fn admin_query(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> anyhow::Result<Vec<tokio_postgres::Row>> {
        self.admin
            .query(sql, params)
            .await
            .with_context(|| format!("{sql} failed"))
    }

    /// Waits until no session is connected to `db`. A backend publishes its
    /// statistics as it exits, before it leaves `pg_stat_activity`, so after
    /// this the counters of `db` are complete.
    pub async fn wait_idle(&self, db: &str) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let row = self
                .admin
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = $1",
                    &[&db],
                )
                .await?;
            if row.get::<_, i64>(0) == 0 {
                return self.wait_sessions_reaped(db).await;
            }
            if tokio::time::Instant::now() > deadline {
                bail!("sessions on {db} did not end within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The postmaster's process id.
    fn postmaster(&self) -> anyhow::Result<u32> {
        let path = self.cluster.dir().join("data").join("postmaster.pid");
        let text =
            fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        Ok(text
            .lines()
            .next()
            .context("empty postmaster.pid")?
            .trim()
            .parse()?)
    }

    /// CPU seconds the server has used so far: its live processes plus the
    /// children (sessions) it has reaped. Read at settled points (no session
    /// of the measured database left), the difference is what the server
    /// spent on the measured clients, plus its background processes.
    pub fn server_cpu_s(&self) -> anyhow::Result<f64> {
        let postmaster = self.postmaster()?;
        let own = Stat::read(postmaster)?;
        let children: f64 = procstat::children(postmaster)
            .into_iter()
            .filter_map(|pid| Stat::read(pid).ok())
            .map(|s| s.cpu_s)
            .sum();
        Ok(own.cpu_s + own.children_cpu_s + children)
    }

    /// Waits until no server process serves `db` any more (its sessions
    /// have exited and been reaped, so their CPU time is counted).
    async fn wait_sessions_reaped(&self, db: &str) -> anyhow::Result<()> {
        let postmaster = self.postmaster()?;
        let needle = format!(" {db} ");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let busy = procstat::children(postmaster).into_iter().any(|pid| {
                fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&needle))
            });
            if !busy {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("server processes for {db} did not exit within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The counters of `db`, statements counted for `role` only. Call
    /// [`BenchPg::wait_idle`] first.
    pub async fn counters(&self, db: &str, role: Role) -> anyhow::Result<Counters> {
        let row = self
            .admin
            .query_one(
                "SELECT d.xact_commit, d.xact_rollback, d.sessions,
                        (SELECT coalesce(sum(s.calls), 0)::int8 FROM pg_stat_statements s
                          WHERE s.dbid = d.datid
                            AND s.userid = (SELECT oid FROM pg_roles WHERE rolname = $2)),
                        pg_snapshot_xmax(pg_current_snapshot())::text::int8
                   FROM pg_stat_database d WHERE d.datname = $1",
                &[&db, &role.name()],
            )
            .await
            .with_context(|| format!("cannot read the counters of {db}"))?;
        Ok(Counters {
            commits: row.get(0),
            rollbacks: row.get(1),
            sessions: row.get(2),
            statements: row.get(3),
            next_xid: row.get(4),
            server_cpu_s: self.server_cpu_s()?,
        })
    }

    /// Waits until `db` is idle, then reads its counters.
    pub async fn settled_counters(&self, db: &str, role: Role) -> anyhow::Result<Counters> {
        self.wait_idle(db).await?;
        self.counters(db, role).await
    }

    /// `SELECT version()` and the settings that matter for the figures.
    pub async fn describe(&self) -> Value {
        let mut settings = serde_json::Map::new();
        for name in [
            "server_version",
            "fsync",
            "synchronous_commit",
            "full_page_writes",
            "shared_buffers",
            "max_connections",
            "autovacuum",
            "ssl",
            "wal_sync_method",
        ] {
            if let Ok(row) = self
                .admin
                .query_one("SELECT current_setting($1)", &[&name])
                .await
            {
                settings.insert(name.into(), json!(row.get::<_, String>(0)));
            }
        }
        Value::Object(settings)
    }
}

fn password_file(dir: &Path, role: Role) -> PathBuf {
    dir.join("secrets").join(format!("{}-password", role.key()))
}

fn secret() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}
