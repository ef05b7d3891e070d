//! The versioned migrations of `sql/`, embedded at compile time, and the
//! runner that applies them.
//!
//! Modelled on refinery and sqlx: forward-only files `NNNN_name.sql`, each
//! applied in its own transaction together with its row in the history
//! table, under a PostgreSQL advisory lock so concurrent runs (several pods
//! starting at once) are safe. An applied file whose content changed is
//! refused. After the migrations, the application roles are created or
//! updated and `sql/grants.sql` is applied, with role names from
//! configuration.
//!
//! A file whose first line is `-- migrator: no-transaction` runs outside a
//! transaction (for `CREATE INDEX CONCURRENTLY`); it must hold a single
//! statement and should be idempotent (`IF NOT EXISTS`), because its history
//! row is written after it.

use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use tokio_postgres::Client;

use crate::config::RoleSettings;
use crate::db::DbError;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/migrations.rs"));
}

/// The table that records applied migrations.
pub const HISTORY_TABLE: &str = "schema_migrations";

/// The schema version this build of the binaries needs: the newest embedded migration.
pub const REQUIRED_VERSION: i32 = required_version();

/// Advisory lock key held while migrating ("boutique" in ASCII).
pub const LOCK_KEY: i64 = 0x626f_7574_6971_7565;

/// Marker on a migration's first line to run it outside a transaction.
const NO_TRANSACTION: &str = "-- migrator: no-transaction";

const fn required_version() -> i32 {
    let mut i = 0;
    let mut max = 0;
    while i < embedded::MIGRATIONS.len() {
        if embedded::MIGRATIONS[i].0 > max {
            max = embedded::MIGRATIONS[i].0;
        }
        i += 1;
    }
    max
}

/// Why migrating failed.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The database could not be reached or a statement failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// An applied migration's file differs from what was applied.
    #[error(
        "{file} was applied with checksum {applied} but the file now has checksum {current}; applied migrations must not change (add a new migration instead)"
    )]
    ChecksumMismatch {
        /// The migration's file name.
        file: String,
        /// Checksum recorded when it was applied.
        applied: String,
        /// Checksum of the file now.
        current: String,
    },
    /// A migration failed; its transaction was rolled back.
    #[error("{file} failed, nothing of it was applied: {reason}")]
    Failed {
        /// The migration's file name.
        file: String,
        /// The server's error.
        reason: String,
    },
    /// Another migrator held the lock for too long.
    #[error(
        "another migrator has held the migration lock for {0:?} (migrator.lock_timeout); is one stuck?"
    )]
    LockTimeout(Duration),
    /// The role settings are unusable.
    #[error("roles: {0}")]
    Roles(String),
}

impl From<tokio_postgres::Error> for SchemaError {
    fn from(error: tokio_postgres::Error) -> Self {
        SchemaError::Db(DbError::Query(error))
    }
}

/// One migration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    /// Version, from the file name's `NNNN`.
    pub version: i32,
    /// File name, e.g. `0001_orders.sql`.
    pub file: String,
    /// The SQL, line endings normalised to `\n`.
    pub sql: String,
}

impl Migration {
    /// A migration from a file name and its content.
    pub fn new(version: i32, file: impl Into<String>, sql: &str) -> Self {
        Self {
            version,
            file: file.into(),
            // A CRLF checkout must not change the checksum.
            sql: sql.replace("\r\n", "\n"),
        }
    }

    /// SHA-256 of the normalised content, hex.
    pub fn checksum(&self) -> String {
        hex::encode(Sha256::digest(self.sql.as_bytes()))
    }

    /// Whether the file opted out of running in a transaction.
    pub fn transactional(&self) -> bool {
        self.sql.lines().next().map(str::trim) != Some(NO_TRANSACTION)
    }
}

/// The migrations embedded from `sql/`, in version order.
pub fn embedded() -> Vec<Migration> {
    embedded::MIGRATIONS
        .iter()
        .map(|(version, file, sql)| Migration::new(*version, *file, sql))
        .collect()
}

/// A migration recorded in the history table.
#[derive(Debug, Clone)]
pub struct Applied {
    /// Version.
    pub version: i32,
    /// File name when applied.
    pub file: String,
    /// Checksum when applied.
    pub checksum: String,
    /// When it was applied.
    pub applied_at: time::OffsetDateTime,
}

/// Where one migration stands in a database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Applied with the current content.
    Applied,
    /// Not applied yet.
    Pending,
    /// Applied, but the file has changed since.
    Changed,
    /// Applied, but unknown to this binary (a newer migrator ran).
    Unknown,
}

/// Status of every migration this binary knows or the database has.
#[derive(Debug, Clone)]
pub struct Status {
    /// `(version, file, state)` in version order.
    pub migrations: Vec<(i32, String, State)>,
}

impl Status {
    /// True when nothing is pending or changed.
    pub fn is_current(&self) -> bool {
        self.migrations
            .iter()
            .all(|(_, _, state)| matches!(state, State::Applied | State::Unknown))
    }
}

/// What `up` did.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Files applied by this run, in order.
    pub applied: Vec<String>,
    /// Schema version after the run.
    pub version: i32,
}

/// Applies migrations and role grants to one database.
pub struct Migrator {
    migrations: Vec<Migration>,
    grants: String,
    lock_timeout: Duration,
}

impl Migrator {
    /// A migrator for the embedded migrations.
    pub fn new(lock_timeout: Duration) -> Self {
        Self::with_migrations(embedded(), lock_timeout)
    }

    /// A migrator for other migrations (tests, tools).
    pub fn with_migrations(mut migrations: Vec<Migration>, lock_timeout: Duration) -> Self {
        migrations.sort_by_key(|m| m.version);
        Self {
            migrations,
            grants: embedded::GRANTS.replace("\r\n", "\n"),
            lock_timeout,
        }
    }

    /// Applies every pending migration, then creates or updates the roles
    /// and applies the grants. `client` must be a direct session (the
    /// advisory lock is session-level: not through PgBouncer's transaction
    /// pooling).
    pub async fn up(
        &self,
        client: &mut Client,
        roles: &RoleSettings,
    ) -> Result<Report, SchemaError> {
        // An inherited statement_timeout would kill a long migration.
        client.batch_execute("SET statement_timeout = 0").await?;
        self.lock(client).await?;
        let result = self.up_locked(client, roles).await;
        // Released on disconnect anyway; unlock early so waiters go on.
        let unlocked = client
            .execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY])
            .await;
        let report = result?;
        unlocked?;
        Ok(report)
    }

    async fn up_locked(
        &self,
        client: &mut Client,
        roles: &RoleSettings,
    ) -> Result<Report, SchemaError> {
        client
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {HISTORY_TABLE} (
                    version      integer PRIMARY KEY,
                    file         text NOT NULL,
                    checksum     text NOT NULL,
                    applied_at   timestamptz NOT NULL DEFAULT now(),
                    execution_ms bigint NOT NULL
                )"
            ))
            .await?;
        let applied = applied(client).await?;
        self.check_unchanged(&applied)?;
        let mut report = Report::default();
        for migration in &self.migrations {
            if applied.iter().any(|a| a.version == migration.version) {
                continue;
            }
            self.apply(client, migration).await?;
            report.applied.push(migration.file.clone());
        }
        ensure_roles(client, roles).await?;
        let grants = self
            .grants
            .replace("${checkout_role}", &quote_ident(&roles.checkout))
            .replace("${backup_role}", &quote_ident(&roles.backup));
        client
            .batch_execute(&grants)
            .await
            .map_err(|e| SchemaError::Failed {
                file: "grants.sql".into(),
                reason: crate::db::error_chain(&e),
            })?;
        report.version = current_version(client).await?.unwrap_or(0);
        Ok(report)
    }

    async fn apply(&self, client: &mut Client, migration: &Migration) -> Result<(), SchemaError> {
        let started = Instant::now();
        let failed = |e: tokio_postgres::Error| SchemaError::Failed {
            file: migration.file.clone(),
            reason: crate::db::error_chain(&e),
        };
        let record = format!(
            "INSERT INTO {HISTORY_TABLE} (version, file, checksum, execution_ms) VALUES ($1, $2, $3, $4)"
        );
        tracing::info!(file = %migration.file, "applying migration");
        if migration.transactional() {
            let tx = client.transaction().await?;
            tx.batch_execute(&migration.sql).await.map_err(failed)?;
            let ms = elapsed_ms(started);
            tx.execute(
                &record,
                &[
                    &migration.version,
                    &migration.file,
                    &migration.checksum(),
                    &ms,
                ],
            )
            .await?;
            tx.commit().await?;
        } else {
            client.simple_query(&migration.sql).await.map_err(failed)?;
            let ms = elapsed_ms(started);
            client
                .execute(
                    &record,
                    &[
                        &migration.version,
                        &migration.file,
                        &migration.checksum(),
                        &ms,
                    ],
                )
                .await?;
        }
        tracing::info!(file = %migration.file, ms = elapsed_ms(started), "applied migration");
        Ok(())
    }

    /// Where every migration stands, without changing anything.
    pub async fn status(&self, client: &Client) -> Result<Status, SchemaError> {
        let applied = if history_exists(client).await? {
            applied(client).await?
        } else {
            Vec::new()
        };
        let mut migrations: Vec<(i32, String, State)> = self
            .migrations
            .iter()
            .map(|m| {
                let state = match applied.iter().find(|a| a.version == m.version) {
                    None => State::Pending,
                    Some(a) if a.checksum == m.checksum() => State::Applied,
                    Some(_) => State::Changed,
                };
                (m.version, m.file.clone(), state)
            })
            .collect();
        for a in &applied {
            if !self.migrations.iter().any(|m| m.version == a.version) {
                migrations.push((a.version, a.file.clone(), State::Unknown));
            }
        }
        migrations.sort_by_key(|(version, _, _)| *version);
        Ok(Status { migrations })
    }

    /// Fails unless every known migration is applied unchanged.
    pub async fn verify(&self, client: &Client) -> Result<Status, SchemaError> {
        let status = self.status(client).await?;
        if history_exists(client).await? {
            self.check_unchanged(&applied(client).await?)?;
        }
        Ok(status)
    }

    fn check_unchanged(&self, applied: &[Applied]) -> Result<(), SchemaError> {
        for a in applied {
            if let Some(m) = self.migrations.iter().find(|m| m.version == a.version) {
                let current = m.checksum();
                if current != a.checksum {
                    return Err(SchemaError::ChecksumMismatch {
                        file: m.file.clone(),
                        applied: a.checksum.clone(),
                        current,
                    });
                }
            }
        }
        Ok(())
    }

    /// Polls `pg_try_advisory_lock` with backoff: a blocking lock without a
    /// bound would hang every pod behind one stuck holder.
    async fn lock(&self, client: &Client) -> Result<(), SchemaError> {
        let started = Instant::now();
        let mut delay = Duration::from_millis(50);
        loop {
            let row = client
                .query_one("SELECT pg_try_advisory_lock($1)", &[&LOCK_KEY])
                .await?;
            if row.get::<_, bool>(0) {
                return Ok(());
            }
            if started.elapsed() + delay > self.lock_timeout {
                return Err(SchemaError::LockTimeout(started.elapsed()));
            }
            tracing::info!(retry_in = ?delay, "another migrator holds the lock; waiting");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }
}

/// The schema version of the database: the highest applied migration, or
/// `None` when no migration was ever applied.
pub async fn current_version(client: &Client) -> Result<Option<i32>, SchemaError> {
    if !history_exists(client).await? {
        return Ok(None);
    }
    let row = client
        .query_one(&format!("SELECT max(version) FROM {HISTORY_TABLE}"), &[])
        .await?;
    Ok(row.get(0))
}

async fn history_exists(client: &Client) -> Result<bool, SchemaError> {
    let row = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&HISTORY_TABLE])
        .await?;
    Ok(row.get(0))
}

async fn applied(client: &Client) -> Result<Vec<Applied>, SchemaError> {
    let rows = client
        .query(
            &format!(
                "SELECT version, file, checksum, applied_at FROM {HISTORY_TABLE} ORDER BY version"
            ),
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| Applied {
            version: row.get(0),
            file: row.get(1),
            checksum: row.get(2),
            applied_at: row.get(3),
        })
        .collect())
}

/// Creates the checkout and backup login roles when missing and sets their
/// passwords when configured. Passwords are sent as SCRAM verifiers computed
/// here, so the clear text never reaches the server (nor its log, should the
/// statement fail).
async fn ensure_roles(client: &Client, roles: &RoleSettings) -> Result<(), SchemaError> {
    if roles.checkout.is_empty() || roles.backup.is_empty() {
        return Err(SchemaError::Roles(
            "roles.checkout and roles.backup must not be empty".into(),
        ));
    }
    if roles.checkout == roles.backup {
        return Err(SchemaError::Roles(format!(
            "roles.checkout and roles.backup must differ (both are {:?}): backup must not be able to write",
            roles.checkout
        )));
    }
    for (name, password) in [
        (&roles.checkout, &roles.checkout_password),
        (&roles.backup, &roles.backup_password),
    ] {
        let exists = client
            .query_one(
                "SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = $1)",
                &[name],
            )
            .await?
            .get::<_, bool>(0);
        let ident = quote_ident(name);
        if !exists {
            tracing::info!(role = %name, "creating role");
            client
                .batch_execute(&format!(
                    "CREATE ROLE {ident} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE"
                ))
                .await
                .map_err(|e| role_error(name, e))?;
        }
        if let Some(password) = password {
            client
                .batch_execute(&format!(
                    "ALTER ROLE {ident} LOGIN PASSWORD {}",
                    quote_literal(&scram_verifier(password))
                ))
                .await
                .map_err(|e| role_error(name, e))?;
        }
    }
    Ok(())
}

fn role_error(name: &str, error: tokio_postgres::Error) -> SchemaError {
    SchemaError::Roles(format!(
        "cannot create or alter role {name:?} (the migrator's user needs CREATEROLE): {}",
        crate::db::error_chain(&error)
    ))
}

fn scram_verifier(password: &SecretString) -> String {
    postgres_protocol::password::scram_sha_256(password.expose_secret().as_bytes())
}

fn elapsed_ms(started: Instant) -> i64 {
    i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX)
}

/// Quotes an SQL identifier: `a"b` becomes `"a""b"`.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes an SQL string literal: `it's` becomes `'it''s'`.
fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}
