//! PostgreSQL connections: single clients and a `bb8` pool, over rustls.
//!
//! [`Database`] turns [`DatabaseSettings`] into a tokio-postgres
//! configuration plus a TLS connector once; every connection after that is
//! cheap to make. Errors are classified so callers can tell "not up yet, try
//! again" from "wrong password, give up", and never carry the password.

use std::collections::HashMap;
use std::fmt;
use std::ops::Deref;
use std::pin::pin;
use std::time::Duration;

use bb8_postgres::PostgresConnectionManager;
use futures_util::TryStreamExt as _;
use secrecy::ExposeSecret;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Row, RowStream, Statement};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::{DatabaseSettings, SslMode};
use crate::tls::{self, TlsError};

/// The TLS connector type of every connection.
pub type Tls = MakeRustlsConnect;
/// A pool of connections.
pub type Pool = bb8::Pool<Manager>;
/// A connection borrowed from a [`Pool`].
pub type PooledConnection<'a> = bb8::PooledConnection<'a, Manager>;

/// bb8-postgres's connection manager with a check-out test that costs no
/// round trip, handing out [`Connection`]s. bb8-postgres sends an empty
/// query every time a connection is borrowed, which doubles the round trips
/// of a one-statement write. A connection whose server went away is noticed
/// by its driver task (the socket closes), so `is_closed` catches killed
/// backends and restarts.
pub struct Manager(PostgresConnectionManager<Tls>);

impl Manager {
    /// A manager for `config` over `tls`.
    pub fn new(config: tokio_postgres::Config, tls: Tls) -> Self {
        Self(PostgresConnectionManager::new(config, tls))
    }
}

impl bb8::ManageConnection for Manager {
    type Connection = Connection;
    type Error = tokio_postgres::Error;

    async fn connect(&self) -> Result<Self::Connection, Self::Error> {
        Ok(Connection {
            client: self.0.connect().await?,
            prepared: HashMap::new(),
        })
    }

    async fn is_valid(&self, conn: &mut Self::Connection) -> Result<(), Self::Error> {
        if conn.is_closed() {
            // Fails at once without touching the network, with the error
            // bb8 expects.
            conn.simple_query("").await.map(|_| ())
        } else {
            Ok(())
        }
    }

    fn has_broken(&self, conn: &mut Self::Connection) -> bool {
        conn.is_closed()
    }
}

/// A statement the application runs over and over: its SQL and the types
/// of its parameters, in one place.
#[derive(Debug, Clone, Copy)]
pub struct Sql {
    /// The statement text.
    pub text: &'static str,
    /// The type of each `$n` parameter, in order.
    pub types: &'static [Type],
}

/// A pooled session plus the statements it has prepared.
///
/// PostgreSQL parses and plans an unnamed statement every time it is sent;
/// for the order writes (CTEs over three tables) planning is about half of
/// the server's CPU per order. [`Connection::query_prepared`] prepares each
/// [`Sql`] once per session and then only binds and executes it, still one
/// round trip per statement. Everything else of [`tokio_postgres::Client`]
/// is reachable through `Deref`.
pub struct Connection {
    client: tokio_postgres::Client,
    prepared: HashMap<&'static str, Statement>,
}

impl Connection {
    /// Runs `sql` with `params` (in the order of `sql.types`) and returns its
    /// rows. The first use on this session prepares the statement (one extra
    /// round trip, once).
    pub async fn query_prepared(
        &mut self,
        sql: &Sql,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        self.send(sql, params).await?.try_collect().await
    }

    /// Runs `sql` with `params` and returns the number of rows it affected.
    pub async fn execute_prepared(
        &mut self,
        sql: &Sql,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, tokio_postgres::Error> {
        let rows = self.send(sql, params).await?;
        let mut rows = pin!(rows);
        while rows.try_next().await?.is_some() {}
        Ok(rows.rows_affected().unwrap_or(0))
    }

    /// Binds and executes `sql`, preparing it first if this session has not.
    /// PostgreSQL checks a prepared plan at Bind, so a stale one fails here,
    /// before any row is read.
    async fn send(
        &mut self,
        sql: &Sql,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<RowStream, tokio_postgres::Error> {
        let statement = self.statement(sql).await?;
        match self
            .client
            .query_raw(&statement, params.iter().copied())
            .await
        {
            Err(error) if is_stale_plan(&error) => {
                self.prepared.remove(sql.text);
                let statement = self.statement(sql).await?;
                self.client
                    .query_raw(&statement, params.iter().copied())
                    .await
            }
            result => result,
        }
    }

    async fn statement(&mut self, sql: &Sql) -> Result<Statement, tokio_postgres::Error> {
        if let Some(statement) = self.prepared.get(sql.text) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare_typed(sql.text, sql.types).await?;
        self.prepared.insert(sql.text, statement.clone());
        Ok(statement)
    }
}

/// A migration that changed a table's row type invalidates a prepared
/// statement that returns it ("cached plan must not change result type").
/// The statement did nothing, so it is safe to prepare it again and retry.
fn is_stale_plan(error: &tokio_postgres::Error) -> bool {
    error.code() == Some(&SqlState::FEATURE_NOT_SUPPORTED)
}

impl Deref for Connection {
    type Target = tokio_postgres::Client;

    fn deref(&self) -> &Self::Target {
        &self.client
    }
}

/// Why a connection could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The TLS settings are unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The server refused a connection without TLS.
    #[error(
        "the server requires TLS but database.sslmode is disable; use sslmode=require or stronger ({0})"
    )]
    TlsRequired(String),
    /// The server is not reachable or not ready (yet).
    #[error("cannot reach PostgreSQL at {target}: {reason}")]
    Unreachable {
        /// `host:port`.
        target: String,
        /// What went wrong.
        reason: String,
    },
    /// The server refused our credentials or the database.
    #[error("PostgreSQL at {target} refused the login: {reason}")]
    Rejected {
        /// `host:port`.
        target: String,
        /// What the server said.
        reason: String,
    },
    /// TLS negotiation failed: wrong CA, wrong host name, or no TLS offered.
    #[error("TLS with PostgreSQL at {target} failed: {reason}")]
    Handshake {
        /// `host:port`.
        target: String,
        /// What went wrong.
        reason: String,
    },
    /// Still unreachable when the wait bound ran out.
    #[error("gave up after {waited:?} waiting for PostgreSQL: {last}")]
    GaveUp {
        /// How long we waited.
        waited: Duration,
        /// The last error seen.
        last: Box<DbError>,
    },
    /// Borrowing a pooled connection failed.
    #[error("no database connection available: {0}")]
    Pool(String),
    /// A statement failed.
    #[error("database error: {}", error_chain(.0))]
    Query(#[from] tokio_postgres::Error),
}

impl DbError {
    /// True for errors that may go away by themselves: the server is down,
    /// starting up or out of connections.
    pub fn is_transient(&self) -> bool {
        matches!(self, DbError::Unreachable { .. } | DbError::Pool(_))
    }
}

/// How to reach one database: a connection configuration plus TLS, built once.
#[derive(Clone)]
pub struct Database {
    config: tokio_postgres::Config,
    tls: Tls,
    sslmode: SslMode,
    target: String,
    pool_max_size: u32,
    connect_timeout: Duration,
    wait_timeout: Duration,
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // tokio_postgres::Config's own Debug redacts the password too; we
        // print only what an operator needs.
        f.debug_struct("Database")
            .field("target", &self.target)
            .field("sslmode", &self.sslmode)
            .finish_non_exhaustive()
    }
}

impl Database {
    /// Prepares connections for `settings`; `application_name` is used when
    /// the settings name none. Reads the certificate files now, so a bad
    /// path fails at start-up, naming the key.
    pub fn new(settings: &DatabaseSettings, application_name: &str) -> Result<Self, DbError> {
        let mut config = tokio_postgres::Config::new();
        config
            .host(&settings.host)
            .port(settings.port)
            .dbname(&settings.name)
            .user(&settings.user)
            .application_name(
                settings
                    .application_name
                    .as_deref()
                    .unwrap_or(application_name),
            )
            .connect_timeout(settings.connect_timeout)
            .ssl_mode(match settings.sslmode {
                SslMode::Disable => tokio_postgres::config::SslMode::Disable,
                SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
                _ => tokio_postgres::config::SslMode::Require,
            });
        if let Some(password) = settings.password() {
            config.password(password.expose_secret());
        }
        if !settings.statement_timeout.is_zero() {
            config.options(format!(
                "-c statement_timeout={}",
                settings.statement_timeout.as_millis()
            ));
        }
        let tls = MakeRustlsConnect::new(tls::client_config(settings)?);
        Ok(Self {
            config,
            tls,
            sslmode: settings.sslmode,
            target: format!("{}:{}", settings.host, settings.port),
            pool_max_size: settings.pool_max_size.max(1),
            connect_timeout: settings.connect_timeout,
            wait_timeout: settings.wait_timeout,
        })
    }

    /// `host:port` of the server, for messages.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Opens one connection; its driver task runs on the current runtime.
    pub async fn connect(&self) -> Result<tokio_postgres::Client, DbError> {
        let (client, connection) = self
            .config
            .connect(self.tls.clone())
            .await
            .map_err(|e| self.classify(e))?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "database connection closed");
            }
        });
        Ok(client)
    }

    /// Opens one connection, retrying with exponential backoff (100 ms
    /// doubling to 5 s) while the server is unreachable or starting, for at
    /// most `database.wait_timeout`. Credentials and TLS errors fail at once.
    pub async fn connect_with_retry(&self) -> Result<tokio_postgres::Client, DbError> {
        let started = tokio::time::Instant::now();
        let mut delay = Duration::from_millis(100);
        loop {
            match self.connect().await {
                Ok(client) => return Ok(client),
                Err(error) if error.is_transient() => {
                    let waited = started.elapsed();
                    if waited + delay > self.wait_timeout {
                        return Err(DbError::GaveUp {
                            waited,
                            last: Box::new(error),
                        });
                    }
                    tracing::info!(%error, retry_in = ?delay, "database not ready, retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// A pool that opens connections lazily, so it can be created while the
    /// database is still down. A connection found closed when borrowed or
    /// returned is dropped and replaced, never handed out.
    pub fn pool(&self) -> Pool {
        bb8::Pool::builder()
            .max_size(self.pool_max_size)
            .connection_timeout(self.connect_timeout)
            .test_on_check_out(true)
            // Surface a refused connection at once instead of retrying
            // until the timeout: callers decide (checkout answers UNAVAILABLE).
            .retry_connection(false)
            .build_unchecked(Manager::new(self.config.clone(), self.tls.clone()))
    }

    /// Turns a connect error into one that says what to do about it.
    fn classify(&self, error: tokio_postgres::Error) -> DbError {
        let target = self.target.clone();
        if let Some(db) = error.as_db_error() {
            let reason = db.message().to_owned();
            let code = db.code();
            if *code == SqlState::CANNOT_CONNECT_NOW || *code == SqlState::TOO_MANY_CONNECTIONS {
                return DbError::Unreachable { target, reason };
            }
            if self.sslmode == SslMode::Disable
                && *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
                && reason.contains("no encryption")
            {
                return DbError::TlsRequired(reason);
            }
            return DbError::Rejected { target, reason };
        }
        let reason = error_chain(&error);
        // TLS failures are configuration problems; retrying will not help.
        if reason.contains("TLS") || reason.contains("certificate") {
            return DbError::Handshake { target, reason };
        }
        DbError::Unreachable { target, reason }
    }
}

/// An error and its causes as one line: "a: b: c".
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line
}

/// Borrows a connection from `pool`, mapping pool errors to [`DbError`].
pub async fn checkout(pool: &Pool) -> Result<PooledConnection<'_>, DbError> {
    pool.get().await.map_err(|e| match e {
        bb8::RunError::User(e) => DbError::Pool(error_chain(&e)),
        bb8::RunError::TimedOut => DbError::Pool("timed out waiting for a connection".into()),
    })
}
