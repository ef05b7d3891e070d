//! Layered configuration shared by every binary.
//!
//! Layers, lowest to highest precedence:
//!
//! 1. built-in defaults ([`Settings::default`]);
//! 2. TOML files given with `--config PATH` (repeatable, later files win);
//! 3. secret files: every `*_file` key (for example `database.password_file`)
//!    is read and its content becomes the sibling key (`database.password`);
//! 4. environment variables `BOUTIQUE__SECTION__KEY`;
//! 5. the Online Boutique variables ([`ONLINE_BOUTIQUE_VARIABLES`],
//!    `DATABASE_URL`), so upstream manifests work unchanged;
//! 6. command-line flags (`--set section.key=value`).
//!
//! A `database.url` (or `DATABASE_URL`) is shorthand: it is expanded into the
//! discrete `database.*` keys *at the layer where it appears*, so a URL in the
//! environment overrides a host from a file, and a `--set database.host=...`
//! overrides the URL's host.
//!
//! Secrets are [`SecretString`]s from the moment they are read: they never
//! appear in `Debug` output, errors or [`Settings::to_redacted_toml`].

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// Everything the three binaries can be configured with.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// How to reach PostgreSQL.
    pub database: DatabaseSettings,
    /// Names and passwords of the roles the migrator creates.
    pub roles: RoleSettings,
    /// Logs and OpenTelemetry tracing.
    pub telemetry: TelemetrySettings,
    /// Schema migrations.
    pub migrator: MigratorSettings,
}

/// libpq's `sslmode`, with libpq's meaning for every value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    /// Never use TLS.
    Disable,
    /// Use TLS when the server offers it; do not verify the certificate.
    Prefer,
    /// Always use TLS. Verify the chain only when `sslrootcert` is given
    /// (as libpq does); never check the host name.
    #[default]
    Require,
    /// Always use TLS and verify the certificate chain against `sslrootcert`.
    VerifyCa,
    /// As `verify-ca`, and the certificate must name the host connected to.
    VerifyFull,
}

/// Connection settings for PostgreSQL.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// Host name or IP address of the server.
    pub host: String,
    /// TCP port of the server.
    pub port: u16,
    /// Database name (libpq's `dbname`).
    pub name: String,
    /// Role to log in as.
    pub user: String,
    /// Password of `user`.
    #[serde(serialize_with = "redact")]
    pub password: Option<SecretString>,
    /// File holding the password (a mounted Kubernetes Secret).
    pub password_file: Option<PathBuf>,
    /// TLS mode, as libpq's `sslmode`.
    pub sslmode: SslMode,
    /// PEM file with the certificate authorities that sign the server's certificate.
    pub sslrootcert: Option<PathBuf>,
    /// PEM file with a client certificate (chain) to present.
    pub sslcert: Option<PathBuf>,
    /// PEM file with the private key of `sslcert`.
    pub sslkey: Option<PathBuf>,
    /// `application_name` reported to the server; defaults to the binary's name.
    pub application_name: Option<String>,
    /// How long one connection attempt may take.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Server-side limit for one statement; `0s` means no limit.
    #[serde(with = "humantime_serde")]
    pub statement_timeout: Duration,
    /// Most connections the pool keeps open.
    pub pool_max_size: u32,
    /// How long to keep retrying, with backoff, while the server does not
    /// accept connections yet (it may still be starting).
    #[serde(with = "humantime_serde")]
    pub wait_timeout: Duration,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            host: "postgres".into(),
            port: 5432,
            name: "ordersdb".into(),
            user: "orderservice".into(),
            password: None,
            password_file: None,
            sslmode: SslMode::default(),
            sslrootcert: None,
            sslcert: None,
            sslkey: None,
            application_name: None,
            connect_timeout: Duration::from_secs(10),
            statement_timeout: Duration::from_secs(30),
            pool_max_size: 16,
            wait_timeout: Duration::from_secs(60),
        }
    }
}

/// The roles of DESIGN.md section 3. The migrator connects as the schema
/// owner (`database.user`) and creates or updates these two.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoleSettings {
    /// Role checkout logs in as: `SELECT, INSERT, UPDATE` on the order tables.
    pub checkout: String,
    /// Password to set for `checkout`; the role is left without a login
    /// password when neither this nor `checkout_password_file` is given.
    #[serde(serialize_with = "redact")]
    pub checkout_password: Option<SecretString>,
    /// File holding `checkout_password`.
    pub checkout_password_file: Option<PathBuf>,
    /// Role backup logs in as: `SELECT` only.
    pub backup: String,
    /// Password to set for `backup`.
    #[serde(serialize_with = "redact")]
    pub backup_password: Option<SecretString>,
    /// File holding `backup_password`.
    pub backup_password_file: Option<PathBuf>,
}

impl Default for RoleSettings {
    fn default() -> Self {
        Self {
            checkout: "orderservice".into(),
            checkout_password: None,
            checkout_password_file: None,
            backup: "orders_backup".into(),
            backup_password: None,
            backup_password_file: None,
        }
    }
}

/// Log format on standard output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// One JSON object per line: `timestamp`, `severity`, `message`, fields.
    #[default]
    Json,
    /// Human-readable lines, for a terminal.
    Text,
}

/// Logs and tracing.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetrySettings {
    /// `tracing` filter directives, e.g. `info` or `info,orders=debug`.
    pub log_level: String,
    /// Log line format.
    pub log_format: LogFormat,
    /// Export spans over OTLP/gRPC (`ENABLE_TRACING=1`).
    pub tracing_enabled: bool,
    /// OTLP/gRPC collector address, `host:port` or a URL (`COLLECTOR_SERVICE_ADDR`).
    pub collector_addr: String,
    /// `service.name` of exported spans (`OTEL_SERVICE_NAME`); defaults to the binary's name.
    pub service_name: Option<String>,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            log_level: "info".into(),
            log_format: LogFormat::default(),
            tracing_enabled: false,
            collector_addr: "opentelemetrycollector:4317".into(),
            service_name: None,
        }
    }
}

/// Schema migrations.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MigratorSettings {
    /// How long to wait for another migrator holding the migration lock.
    #[serde(with = "humantime_serde")]
    pub lock_timeout: Duration,
}

impl Default for MigratorSettings {
    fn default() -> Self {
        Self {
            lock_timeout: Duration::from_secs(300),
        }
    }
}

/// Serializes a secret as `[redacted]` (or nothing when unset).
fn redact<S: serde::Serializer>(
    value: &Option<SecretString>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(_) => serializer.serialize_some(REDACTED),
        None => serializer.serialize_none(),
    }
}

/// What printed configuration shows in place of a secret.
pub const REDACTED: &str = "[redacted]";
