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
//! overrides the URL's host. Within one source, a key set explicitly wins
//! over the same part of a URL.
//!
//! The [`config`] crate reads the files and the environment, merges the
//! layers and deserializes them. This module adds the sources `config` has
//! no notion of (secret files, Online Boutique variables, URLs, `--set`) and
//! rewords `config`'s errors so that they name the key, where its value came
//! from and what is accepted.
//!
//! Values from the environment and `--set` are strings, parsed as the field's
//! type asks (booleans also accept `1`/`0`, as `ENABLE_TRACING=1`, and
//! `yes`/`no`, `on`/`off`); values in TOML files must have the field's type
//! already, even where a later layer overrides them. An environment variable
//! set to the empty string counts as unset.
//!
//! Secrets become [`SecretString`]s as the settings are built (the loader's
//! intermediate copies are not zeroized); they never appear in `Debug`
//! output, errors or [`Settings::to_redacted_toml`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::LazyLock;
use std::time::Duration;
use std::{fs, io};

use config::{Config, Environment, File, FileFormat, Source, Value, ValueKind};
use percent_encoding::percent_decode_str;
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
    /// The checkout service.
    pub checkout: CheckoutSettings,
    /// Backups: destination, retention, S3 credentials.
    pub backup: BackupSettings,
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

/// What checkout does when it cannot write an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Persistence {
    /// Never charge a card without a durable order record: a database outage
    /// makes PlaceOrder fail with UNAVAILABLE (and health NOT_SERVING).
    #[default]
    Required,
    /// Place the order anyway and log the failure (the upstream behaviour).
    BestEffort,
    /// Do not use a database at all.
    Off,
}

/// The checkout service.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CheckoutSettings {
    /// Address to listen on.
    pub listen_addr: std::net::IpAddr,
    /// gRPC port (`PORT`).
    pub port: u16,
    /// Whether orders must, may or cannot be stored.
    pub persistence: Persistence,
    /// How long in-flight orders may run on after SIGTERM.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// How often health re-checks the database and its schema.
    #[serde(with = "humantime_serde")]
    pub health_check_interval: Duration,
    /// Deadline of each downstream call when the caller set none (or a longer one).
    #[serde(with = "humantime_serde")]
    pub downstream_timeout: Duration,
    /// Most product and currency lookups in flight per order.
    pub lookup_concurrency: usize,
    /// How long the list of supported currencies is cached.
    #[serde(with = "humantime_serde")]
    pub currency_cache_ttl: Duration,
    /// How long a repeated request with the same idempotency key waits for
    /// the first one to finish.
    #[serde(with = "humantime_serde")]
    pub idempotency_wait: Duration,
    /// `ListOrders` page size when the caller asks for none.
    pub history_page_size: u32,
    /// Largest `ListOrders` page.
    pub history_max_page_size: u32,
    /// Cart service, `host:port` (`CART_SERVICE_ADDR`).
    pub cart_addr: String,
    /// Product catalog (`PRODUCT_CATALOG_SERVICE_ADDR`).
    pub product_catalog_addr: String,
    /// Currency conversion (`CURRENCY_SERVICE_ADDR`).
    pub currency_addr: String,
    /// Shipping (`SHIPPING_SERVICE_ADDR`).
    pub shipping_addr: String,
    /// Payment (`PAYMENT_SERVICE_ADDR`).
    pub payment_addr: String,
    /// E-mail confirmations (`EMAIL_SERVICE_ADDR`).
    pub email_addr: String,
}

impl Default for CheckoutSettings {
    fn default() -> Self {
        Self {
            listen_addr: std::net::IpAddr::from([0, 0, 0, 0]),
            port: 5050,
            persistence: Persistence::default(),
            shutdown_grace: Duration::from_secs(20),
            health_check_interval: Duration::from_secs(5),
            downstream_timeout: Duration::from_secs(10),
            lookup_concurrency: 8,
            currency_cache_ttl: Duration::from_secs(300),
            idempotency_wait: Duration::from_secs(30),
            history_page_size: 20,
            history_max_page_size: 100,
            // The upstream manifests' Service names and ports.
            cart_addr: "cartservice:7070".into(),
            product_catalog_addr: "productcatalogservice:3550".into(),
            currency_addr: "currencyservice:7000".into(),
            shipping_addr: "shippingservice:50051".into(),
            payment_addr: "paymentservice:50051".into(),
            email_addr: "emailservice:5000".into(),
        }
    }
}

/// Backups (the `backup` binary).
///
/// S3 settings left unset fall back to the standard AWS variables
/// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
/// `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`, ...), which the backup binary reads
/// itself.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackupSettings {
    /// Where backups are kept: `file:///path` (a mounted volume) or
    /// `s3://bucket/prefix`; `--destination` overrides it.
    pub destination: Option<String>,
    /// `prune` keeps at most this many backups, newest first; 0: no limit.
    pub retention_count: u32,
    /// `prune` removes backups older than this; `0s`: no limit.
    #[serde(with = "humantime_serde")]
    pub retention_age: Duration,
    /// gzip level, 1 (fastest) to 9 (smallest).
    pub compression_level: u32,
    /// Longest wait for PostgreSQL (a lock, the next rows of a COPY) or the
    /// destination before a backup or restore gives up.
    #[serde(with = "humantime_serde")]
    pub stall_timeout: Duration,
    /// S3 access key id.
    #[serde(serialize_with = "redact")]
    pub s3_access_key_id: Option<SecretString>,
    /// File holding `s3_access_key_id`.
    pub s3_access_key_id_file: Option<PathBuf>,
    /// S3 secret access key.
    #[serde(serialize_with = "redact")]
    pub s3_secret_access_key: Option<SecretString>,
    /// File holding `s3_secret_access_key`.
    pub s3_secret_access_key_file: Option<PathBuf>,
    /// S3 region.
    pub s3_region: Option<String>,
    /// Endpoint of an S3-compatible server (MinIO, Ceph, ...), e.g. `https://minio:9000`.
    pub s3_endpoint: Option<String>,
    /// Allow an `http://` endpoint (test servers only).
    pub s3_allow_http: bool,
}

impl Default for BackupSettings {
    fn default() -> Self {
        Self {
            destination: None,
            retention_count: 7,
            retention_age: Duration::from_secs(30 * 24 * 60 * 60),
            compression_level: 6,
            stall_timeout: Duration::from_secs(60),
            s3_access_key_id: None,
            s3_access_key_id_file: None,
            s3_secret_access_key: None,
            s3_secret_access_key_file: None,
            s3_region: None,
            s3_endpoint: None,
            s3_allow_http: false,
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

/// Prefix of the environment variables that set any key:
/// `BOUTIQUE__SECTION__KEY` sets `section.key`.
pub const ENV_PREFIX: &str = "BOUTIQUE__";

/// Separates the parts of a key in an environment variable's name.
const ENV_SEPARATOR: &str = "__";

/// Online Boutique's own environment variables (name, key), so that upstream
/// manifests work unchanged. They override `BOUTIQUE__` variables.
pub const ONLINE_BOUTIQUE_VARIABLES: &[(&str, &str)] = &[
    ("DATABASE_URL", URL_KEY),
    ("ENABLE_TRACING", "telemetry.tracing_enabled"),
    ("COLLECTOR_SERVICE_ADDR", "telemetry.collector_addr"),
    ("OTEL_SERVICE_NAME", "telemetry.service_name"),
    ("PORT", "checkout.port"),
    ("CART_SERVICE_ADDR", "checkout.cart_addr"),
    (
        "PRODUCT_CATALOG_SERVICE_ADDR",
        "checkout.product_catalog_addr",
    ),
    ("CURRENCY_SERVICE_ADDR", "checkout.currency_addr"),
    ("SHIPPING_SERVICE_ADDR", "checkout.shipping_addr"),
    ("PAYMENT_SERVICE_ADDR", "checkout.payment_addr"),
    ("EMAIL_SERVICE_ADDR", "checkout.email_addr"),
];

/// The one key that is not a field of [`Settings`]: a libpq URL, expanded
/// into the discrete `database.*` keys.
const URL_KEY: &str = "database.url";

/// A key with this suffix names a file holding the value of its sibling key.
const FILE_SUFFIX: &str = "_file";

/// Flags every binary accepts (flattened into each binary's clap parser).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ConfigArgs {
    /// TOML configuration file; repeat to layer several, later files win.
    #[arg(long = "config", value_name = "PATH")]
    pub config: Vec<PathBuf>,
    /// Set one key, overriding every other source (e.g. `--set database.port=5433`); repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<Override>,
}

/// One `--set KEY=VALUE` flag.
///
/// Its `Debug` output hides the value of secret keys, so that logging the
/// parsed command line does not leak a password.
#[derive(Clone, PartialEq, Eq)]
pub struct Override {
    key: String,
    value: String,
}

impl Override {
    /// `--set key=value`.
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
        }
    }
}

impl FromStr for Override {
    type Err = ConfigError;

    fn from_str(flag: &str) -> Result<Self, Self::Err> {
        match flag.split_once('=') {
            Some((key, value)) if !key.is_empty() => Ok(Self::new(key, value)),
            _ => Err(ConfigError::SetSyntax),
        }
    }
}

impl fmt::Debug for Override {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = if is_secret(&self.key) {
            REDACTED
        } else {
            &self.value
        };
        f.debug_struct("Override")
            .field("key", &self.key)
            .field("value", &value)
            .finish()
    }
}

/// Where a configuration value came from, as error messages name it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Origin {
    /// A `--config` file.
    File(PathBuf),
    /// The file named by the `*_file` key `key`.
    SecretFile {
        /// The `*_file` key.
        key: String,
        /// The file it names.
        path: PathBuf,
    },
    /// An environment variable.
    Env(String),
    /// A `--set` flag.
    Flag,
    /// One part of a database URL.
    Url {
        /// Which part, e.g. ``query parameter `sslmode` ``.
        part: String,
        /// Where the URL came from.
        within: Box<Origin>,
    },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => write!(f, "file {}", path.display()),
            Self::SecretFile { key, path } => {
                write!(f, "file {} (named by {key})", path.display())
            }
            Self::Env(name) => write!(f, "environment variable {name}"),
            Self::Flag => f.write_str("--set"),
            Self::Url { part, within } => write!(f, "{part} of the database URL from {within}"),
        }
    }
}

/// Why the configuration could not be loaded.
///
/// Messages name the key, where its value came from and what is accepted.
/// They never contain a secret: not the value of a secret key, not a
/// database URL (it may hold a password), not a secret file's content.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A `--config` file could not be read.
    #[error("cannot read configuration file {}: {error}", path.display())]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        error: io::Error,
    },
    /// A `--config` file is not TOML.
    #[error("configuration file {} is not valid TOML (line {line}, column {column}): {message}", path.display())]
    ParseFile {
        /// The file.
        path: PathBuf,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column (in characters) of the error.
        column: usize,
        /// What the TOML parser said, without the offending line: it may hold a secret.
        message: String,
    },
    /// The file named by a `*_file` key could not be read.
    #[error("cannot read the file named by {key}, {}: {error}", path.display())]
    ReadSecretFile {
        /// The `*_file` key.
        key: String,
        /// The file it names.
        path: PathBuf,
        /// What the operating system said.
        error: io::Error,
    },
    /// A key that no setting has.
    #[error("unknown key `{key}` from {origin}; expected {expected}")]
    UnknownKey {
        /// The key, dotted (`database.port`).
        key: String,
        /// Where it was set.
        origin: Origin,
        /// The keys that would have been accepted.
        expected: String,
    },
    /// A value of the wrong type or out of range.
    #[error("invalid value {found} for `{key}` from {origin}; expected {expected}")]
    InvalidValue {
        /// The key, dotted (`database.port`).
        key: String,
        /// Where the value came from.
        origin: Origin,
        /// The value, or `[redacted]` for a secret key.
        found: String,
        /// What would have been accepted.
        expected: String,
    },
    /// A database URL that is not a libpq URL we understand.
    #[error("invalid database URL from {origin}: {problem}; expected {expected}")]
    InvalidUrl {
        /// Where the URL came from.
        origin: Origin,
        /// What is wrong, naming the part but never quoting the URL.
        problem: String,
        /// What would have been accepted.
        expected: String,
    },
    /// A relevant environment variable holds bytes that are not UTF-8.
    #[error("environment variable {name} is not valid UTF-8")]
    EnvNotUnicode {
        /// The variable.
        name: String,
    },
    /// A `--set` flag without `=`.
    #[error("--set expects KEY=VALUE, for example --set database.port=5433")]
    SetSyntax,
    /// Deserialization failed in a way that names no key: a bug in the
    /// settings types rather than in the input.
    #[error("the settings types reject the configuration: {0}")]
    Internal(String),
}

impl Settings {
    /// Loads the settings from `args` and the process environment.
    ///
    /// Only the variables this module reads must be UTF-8.
    pub fn load(args: &ConfigArgs) -> Result<Settings, ConfigError> {
        let mut env = HashMap::new();
        for (name, value) in std::env::vars_os() {
            // None of our variables has a non-UTF-8 name.
            let Some(name) = name.to_str().filter(|name| is_our_variable(name)) else {
                continue;
            };
            // Checked here: the `config` crate would print the value.
            let value = value
                .into_string()
                .map_err(|_| ConfigError::EnvNotUnicode {
                    name: name.to_owned(),
                })?;
            env.insert(name.to_owned(), value);
        }
        Self::load_from(args, &env)
    }

    /// Loads the settings from `args` and the environment variables `env`.
    pub fn load_from(
        args: &ConfigArgs,
        env: &HashMap<String, String>,
    ) -> Result<Settings, ConfigError> {
        // One layer per source, lowest precedence first. The defaults need
        // none: every section is `#[serde(default)]`.
        let mut layers = args
            .config
            .iter()
            .map(|path| file_layer(path))
            .collect::<Result<Vec<_>, _>>()?;
        let files = layers.len();
        layers.push(environment_layer(env)?);
        layers.push(online_boutique_layer(env));
        layers.push(flag_layer(&args.set));
        // Expanded within its own layer, a URL's parts keep its precedence.
        for layer in &mut layers {
            expand_url(layer)?;
        }
        // Whichever layer names a secret file, its content ranks just above
        // the files: a password in the environment still beats it.
        let secrets = secret_file_layer(&layers)?;
        layers.insert(files, secrets);

        let merged = layers
            .iter()
            .fold(Config::builder(), |builder, layer| {
                builder.add_source(layer.clone())
            })
            .build()
            .map_err(|error| explain(error, &layers))?;
        merged
            .try_deserialize()
            .map_err(|error| explain(error, &layers))
    }

    /// The settings as TOML, secrets shown as `[redacted]`, for printing.
    pub fn to_redacted_toml(&self) -> String {
        match toml::to_string(self) {
            Ok(text) => text,
            // Only a non-UTF-8 path fails, and the loader reads only UTF-8:
            // such settings were built in code.
            Err(error) => format!("# the settings cannot be printed as TOML: {error}\n"),
        }
    }
}

impl DatabaseSettings {
    /// Password of `user`, from `password`, `password_file` or the URL.
    pub fn password(&self) -> Option<&SecretString> {
        self.password.as_ref()
    }
}

/// Whether the `config` crate's environment source (which ignores the case
/// of the prefix) or the Online Boutique layer reads the variable `name`.
fn is_our_variable(name: &str) -> bool {
    let prefix = name.get(..ENV_PREFIX.len());
    prefix.is_some_and(|prefix| prefix.eq_ignore_ascii_case(ENV_PREFIX))
        || ONLINE_BOUTIQUE_VARIABLES
            .iter()
            .any(|(var, _)| *var == name)
}

// ---------------------------------------------------------------------------
// Layers

/// One value and where it came from.
#[derive(Clone)]
struct Entry {
    value: Value,
    origin: Origin,
}

/// The values one source sets, by dotted key (`database.port`), so that
/// URL expansion, secret files and error messages treat every source alike.
#[derive(Clone, Default)]
struct Layer(BTreeMap<String, Entry>);

impl Layer {
    fn insert(&mut self, key: String, value: impl Into<ValueKind>, origin: Origin) {
        let value = Value::new(None, value);
        self.0.insert(key, Entry { value, origin });
    }
}

/// `config::Source` requires `Debug`: show the keys only, never a secret.
impl fmt::Debug for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

impl Source for Layer {
    fn clone_into_box(&self) -> Box<dyn Source + Send + Sync> {
        Box::new(self.clone())
    }

    /// The builder nests the dotted keys into tables as it merges.
    fn collect(&self) -> Result<config::Map<String, Value>, config::ConfigError> {
        let values = self
            .0
            .iter()
            .map(|(key, entry)| (key.clone(), entry.value.clone()));
        Ok(values.collect())
    }
}

fn file_layer(path: &Path) -> Result<Layer, ConfigError> {
    // Read here rather than by `config::File::from(path)`, which would also
    // try `PATH.toml`, replace bytes that are not UTF-8, and say "not found"
    // whatever the operating system said.
    let text = fs::read_to_string(path).map_err(|error| ConfigError::ReadFile {
        path: path.to_owned(),
        error,
    })?;
    let table = File::from_str(&text, FileFormat::Toml)
        .collect()
        .map_err(|_| parse_error(path, &text))?;
    let mut layer = Layer::default();
    for (key, value) in flatten("", table) {
        layer.insert(key, value, Origin::File(path.to_owned()));
    }
    check_types(&layer)?;
    Ok(layer)
}

/// A TOML value has a type: hold it to the field's. The `config` crate
/// would convert it (`port = 1.7` to 2, `host = 5` to `"5"`); serde_json
/// converts nothing, so it judges each value alone.
fn check_types(layer: &Layer) -> Result<(), ConfigError> {
    let known = layer
        .0
        .iter()
        .filter(|(key, _)| KEYS.contains(key.as_str()));
    for (key, entry) in known {
        // Cannot fail: any `config` value is a JSON value.
        let Ok(value) = serde_json::Value::deserialize(entry.value.clone()) else {
            continue;
        };
        if let Err(error) = serde_json::from_value::<Settings>(nest(key, value)) {
            let expected = accepted(key, &error.to_string());
            return Err(invalid_value(key, entry, &expected));
        }
    }
    Ok(())
}

/// `config`'s parse error quotes the offending line, which may hold a
/// secret: ask `toml` (the same parser) for the position and message alone.
fn parse_error(path: &Path, text: &str) -> ConfigError {
    let (offset, message) = match text.parse::<toml::Table>() {
        Err(error) => (
            error.span().map_or(0, |span| span.start),
            error.message().trim_end().to_owned(),
        ),
        // `config` parses with a newer `toml`; should the two ever disagree.
        Ok(_) => (0, "the config crate rejects it".to_owned()),
    };
    let (line, column) = line_column(text, offset);
    ConfigError::ParseFile {
        path: path.to_owned(),
        line,
        column,
        message,
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
    (
        before.matches('\n').count() + 1,
        before[line_start..].chars().count() + 1,
    )
}

/// Nested tables as dotted keys: `{database: {port: 1}}` as `database.port`.
fn flatten(prefix: &str, table: config::Map<String, Value>) -> Vec<(String, ValueKind)> {
    let mut flat = Vec::new();
    for (name, value) in table {
        let key = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}.{name}")
        };
        match value.kind {
            ValueKind::Table(table) => flat.extend(flatten(&key, table)),
            kind => flat.push((key, kind)),
        }
    }
    flat
}

fn environment_layer(env: &HashMap<String, String>) -> Result<Layer, ConfigError> {
    let values = Environment::with_prefix(ENV_PREFIX.trim_end_matches(ENV_SEPARATOR))
        .separator(ENV_SEPARATOR)
        .ignore_empty(true)
        .source(Some(env.clone().into_iter().collect()))
        .collect()
        // It fails only on a value that is not UTF-8, which a `String` is.
        .map_err(|_| ConfigError::Internal("the environment cannot be read".into()))?;
    let mut layer = Layer::default();
    for (key, value) in values {
        // `config` says only "the environment"; the key tells the variable.
        let name = key.replace('.', ENV_SEPARATOR).to_ascii_uppercase();
        layer.insert(key, value.kind, Origin::Env(format!("{ENV_PREFIX}{name}")));
    }
    Ok(layer)
}

fn online_boutique_layer(env: &HashMap<String, String>) -> Layer {
    let mut layer = Layer::default();
    for (name, key) in ONLINE_BOUTIQUE_VARIABLES {
        if let Some(value) = env.get(*name).filter(|value| !value.is_empty()) {
            layer.insert(
                key.to_string(),
                value.as_str(),
                Origin::Env(name.to_string()),
            );
        }
    }
    layer
}

fn flag_layer(flags: &[Override]) -> Layer {
    let mut layer = Layer::default();
    for flag in flags {
        layer.insert(flag.key.clone(), flag.value.as_str(), Origin::Flag);
    }
    layer
}

/// Reads the file named by every `*_file` key whose sibling is a setting,
/// as the highest layer names it, into the sibling key.
fn secret_file_layer(layers: &[Layer]) -> Result<Layer, ConfigError> {
    let mut named = BTreeMap::new();
    for (key, entry) in layers.iter().flat_map(|layer| &layer.0) {
        if let Some(target) = key.strip_suffix(FILE_SUFFIX)
            && KEYS.contains(target)
        {
            named.insert(target, (key, entry));
        }
    }
    let mut secrets = Layer::default();
    for (target, (key, entry)) in named {
        let path = entry.value.clone().into_string();
        let path = PathBuf::from(path.map_err(|_| invalid_value(key, entry, "a file path"))?);
        let mut content =
            fs::read_to_string(&path).map_err(|error| ConfigError::ReadSecretFile {
                key: key.clone(),
                path: path.clone(),
                error,
            })?;
        // Editors and `echo` end files with a newline that is not part of the secret.
        if content.ends_with('\n') {
            content.pop();
            if content.ends_with('\r') {
                content.pop();
            }
        }
        let origin = Origin::SecretFile {
            key: key.clone(),
            path,
        };
        secrets.insert(target.to_owned(), content, origin);
    }
    Ok(secrets)
}

/// Every key of [`Settings`], from its serialized defaults, so that the
/// keys are listed nowhere else.
static KEYS: LazyLock<BTreeSet<String>> = LazyLock::new(|| {
    let defaults = Config::try_from(&Settings::default()).and_then(|config| config.collect());
    // Nothing input can reach makes serializing the defaults fail.
    let defaults = defaults.expect("the default settings serialize");
    flatten("", defaults)
        .into_iter()
        .map(|(key, _)| key)
        .collect()
});

/// A secret is a key that can be read from a file (`password` has
/// `password_file`), or the URL, which may hold the password.
fn is_secret(key: &str) -> bool {
    key == URL_KEY || KEYS.contains(format!("{key}{FILE_SUFFIX}").as_str())
}

// ---------------------------------------------------------------------------
// Errors
//
// The `config` crate names the key of a bad value but not its source (for
// the environment, just "the environment"; for an integer out of range,
// nothing), its words for what is accepted are the type's (`enum SslMode
// does not have variant constructor verify_full`), and it quotes values,
// secret or not. So only its key and kind of error are kept: the source
// comes from the layers, the value is shown (or redacted) here, and what is
// accepted comes from serde.

/// Rewords an error of the `config` crate.
fn explain(error: config::ConfigError, layers: &[Layer]) -> ConfigError {
    let (key, message) = match &error {
        config::ConfigError::Type { key, expected, .. } => {
            (key.clone(), format!("expected {expected}"))
        }
        config::ConfigError::At { key, error, .. } => (key.clone(), error.to_string()),
        config::ConfigError::Message(message) => (None, message.clone()),
        // The others hold no value, and name no key to explain.
        _ => return ConfigError::Internal(error.to_string()),
    };
    // serde's `deny_unknown_fields`: "unknown field `prot`, expected one of
    // `host`, ...", where `key` is the section (or none, for a section).
    if let Some(rest) = message.strip_prefix("unknown field `")
        && let Some((field, rest)) = rest.split_once('`')
    {
        let key = key.map_or_else(|| field.to_owned(), |section| format!("{section}.{field}"));
        let expected = rest.strip_prefix(", expected ").unwrap_or("no key here");
        return match set_by(layers, &key) {
            Some((key, entry)) => ConfigError::UnknownKey {
                key: key.clone(),
                origin: entry.origin.clone(),
                expected: plain(expected),
            },
            None => ConfigError::Internal(format!("unknown key `{key}`")),
        };
    }
    let found = key.as_deref().and_then(|key| set_by(layers, key));
    let (Some(key), Some((set, entry))) = (key.clone(), found) else {
        // Every value comes from a layer, so this is a bug; `message` may
        // quote the value, and the value may be a secret.
        return ConfigError::Internal(format!("expected {}", expected_in(&message)));
    };
    ConfigError::InvalidValue {
        found: if *set == key {
            describe(&key, &entry.value)
        } else {
            "a table".to_owned()
        },
        origin: entry.origin.clone(),
        expected: accepted(&key, &message),
        key,
    }
}

/// The entry that set `key`, or a key within it, in the highest layer that
/// sets one: that value won the merge.
fn set_by<'a>(layers: &'a [Layer], key: &str) -> Option<(&'a String, &'a Entry)> {
    let within = format!("{key}.");
    layers.iter().rev().find_map(|layer| {
        layer
            .0
            .iter()
            .find(|(set, _)| *set == key || set.starts_with(&within))
    })
}

/// What `key` accepts, in plain words; `message`, serde's error about the
/// value, says it for the types that take an empty string.
fn accepted(key: &str, message: &str) -> String {
    type_expects(key).unwrap_or_else(|| plain(expected_in(message)))
}

/// What `key` accepts. serde knows: deserializing an empty string into the
/// field fails with a message that names what its type wants (`expected
/// u16`, `expected one of `disable`, ...`). A string field takes it: `None`.
fn type_expects(key: &str) -> Option<String> {
    let error = serde_json::from_value::<Settings>(nest(key, "".into())).err()?;
    Some(plain(expected_in(&error.to_string())))
}

/// `value` at `key` in JSON: `database.port` as `{"database": {"port": value}}`.
fn nest(key: &str, value: serde_json::Value) -> serde_json::Value {
    key.rsplit('.').fold(value, |value, name| {
        serde_json::Value::Object(serde_json::Map::from_iter([(name.to_owned(), value)]))
    })
}

/// What a serde message says is expected; serde puts it last, after the
/// value (which may be a secret).
fn expected_in(message: &str) -> &str {
    message
        .rsplit_once("expected ")
        .map_or("another value", |(_, expected)| expected)
}

/// serde's words for what is accepted, made plainer.
fn plain(expected: &str) -> String {
    const PLAIN: &[(&str, &str)] = &[
        ("u16", "an integer 0..=65535"),
        ("u32", "an integer 0..=4294967295"),
        ("u64", "an integer 0..=18446744073709551615"),
        ("a boolean", "true or false (or 1 or 0)"),
        ("a duration", "a duration such as 10s or 500ms"),
        ("path string", "a file path"),
    ];
    match PLAIN.iter().find(|(serde, _)| *serde == expected) {
        Some((_, plain)) => (*plain).to_owned(),
        // A section, e.g. `struct DatabaseSettings`.
        None if expected.starts_with("struct ") => "a table".to_owned(),
        None => expected.replace('`', ""),
    }
}

fn invalid_value(key: &str, entry: &Entry, expected: &str) -> ConfigError {
    ConfigError::InvalidValue {
        key: key.to_owned(),
        origin: entry.origin.clone(),
        found: describe(key, &entry.value),
        expected: expected.to_owned(),
    }
}

/// The value as an error message shows it.
fn describe(key: &str, value: &Value) -> String {
    if is_secret(key) {
        return REDACTED.to_owned();
    }
    match &value.kind {
        ValueKind::String(text) => format!("{text:?}"),
        ValueKind::Table(_) => "a table".to_owned(),
        ValueKind::Array(_) => "an array".to_owned(),
        ValueKind::Nil => "nothing".to_owned(),
        kind => kind.to_string(),
    }
}

// ---------------------------------------------------------------------------
// Database URL

/// The beginnings libpq accepts.
const URL_SCHEMES: &[&str] = &["postgres://", "postgresql://"];

/// libpq's `connect_timeout`: whole seconds, where our key takes a duration.
const CONNECT_TIMEOUT_PARAMETER: &str = "connect_timeout";

/// The URL's parts, by libpq's query parameter name, and the key each sets.
/// The authority and path use the same names (`user`, `password`, `host`,
/// `port`, `dbname`).
const URL_PARAMETERS: &[(&str, &str)] = &[
    ("host", "database.host"),
    ("port", "database.port"),
    ("dbname", "database.name"),
    ("user", "database.user"),
    ("password", "database.password"),
    ("sslmode", "database.sslmode"),
    ("sslrootcert", "database.sslrootcert"),
    ("sslcert", "database.sslcert"),
    ("sslkey", "database.sslkey"),
    (CONNECT_TIMEOUT_PARAMETER, "database.connect_timeout"),
    ("application_name", "database.application_name"),
];

const URL_FORM: &str = "postgres://[user[:password]@][host][:port][/dbname][?parameter=value&...]";

/// Replaces `database.url` by the keys its parts set. Keys the same layer
/// sets explicitly win over the URL's parts: they are more specific.
fn expand_url(layer: &mut Layer) -> Result<(), ConfigError> {
    let Some(entry) = layer.0.remove(URL_KEY) else {
        return Ok(());
    };
    let url = entry.value.clone().into_string();
    let url = url.map_err(|_| invalid_value(URL_KEY, &entry, URL_FORM))?;
    // Collected first so that later parts of the URL win among themselves.
    let parts = parse_url(&url, &entry.origin)?
        .into_iter()
        .map(|(key, value, part)| (key, (value, part)))
        .collect::<BTreeMap<_, _>>();
    for (key, (value, part)) in parts {
        if !layer.0.contains_key(key) {
            let within = Box::new(entry.origin.clone());
            layer.insert(key.to_owned(), value, Origin::Url { part, within });
        }
    }
    Ok(())
}

/// Splits a libpq URL into (key, value, part) triples, later parts winning
/// as in libpq (query parameters after the authority).
fn parse_url(
    text: &str,
    origin: &Origin,
) -> Result<Vec<(&'static str, String, String)>, ConfigError> {
    let fail = |problem: String, expected: &str| ConfigError::InvalidUrl {
        origin: origin.clone(),
        problem,
        expected: expected.to_owned(),
    };
    if !URL_SCHEMES.iter().any(|scheme| text.starts_with(scheme)) {
        return Err(fail(
            "the scheme is not supported".into(),
            &URL_SCHEMES.join(" or "),
        ));
    }
    // `url::ParseError` messages are fixed strings: they never quote the input.
    let url = url::Url::parse(text).map_err(|error| match error {
        url::ParseError::InvalidPort => fail(
            "the port is not valid".into(),
            "an integer 0..=65535 after the host (one host only)",
        ),
        error => fail(format!("it cannot be parsed ({error})"), URL_FORM),
    })?;
    if url.fragment().is_some() {
        return Err(fail("it has a fragment (#...)".into(), URL_FORM));
    }
    let decode = |encoded: &str, part: &str| -> Result<String, ConfigError> {
        match percent_decode_str(encoded).decode_utf8() {
            Ok(text) if !text.contains('\0') => Ok(text.into_owned()),
            _ => Err(fail(
                format!("{part} is not valid once percent-decoded"),
                "percent-encoded UTF-8 without %00",
            )),
        }
    };

    // (libpq parameter, value, part) in libpq's order: query parameters last.
    let mut parts = Vec::new();
    if !url.username().is_empty() {
        let user = decode(url.username(), "the user name")?;
        parts.push(("user".to_owned(), user, "the user name".to_owned()));
    }
    if let Some(password) = url.password().filter(|password| !password.is_empty()) {
        let password = decode(password, "the password")?;
        parts.push(("password".to_owned(), password, "the password".to_owned()));
    }
    let host = match url.host() {
        Some(url::Host::Domain(host)) => decode(host, "the host")?,
        Some(url::Host::Ipv4(address)) => address.to_string(),
        // libpq takes IPv6 addresses without their brackets.
        Some(url::Host::Ipv6(address)) => address.to_string(),
        None => String::new(),
    };
    if !host.is_empty() {
        parts.push(("host".to_owned(), host, "the host".to_owned()));
    }
    if let Some(port) = url.port() {
        parts.push(("port".to_owned(), port.to_string(), "the port".to_owned()));
    }
    let name = decode(url.path().trim_start_matches('/'), "the database name")?;
    if !name.is_empty() {
        parts.push(("dbname".to_owned(), name, "the database name".to_owned()));
    }
    for pair in url.query().unwrap_or_default().split('&') {
        if pair.is_empty() {
            continue;
        }
        let Some((name, value)) = pair.split_once('=') else {
            return Err(fail(
                "a query parameter has no `=`".into(),
                "parameter=value",
            ));
        };
        let name = decode(name, "a query parameter's name")?;
        let part = format!("query parameter `{name}`");
        let value = decode(value, &part)?;
        parts.push((name, value, part));
    }

    parts
        .into_iter()
        .map(|(parameter, value, part)| {
            let Some(key) = url_key(&parameter) else {
                let known = URL_PARAMETERS.iter().map(|(known, _)| *known);
                return Err(fail(
                    format!("{part} is not supported"),
                    &format!("one of {}", known.collect::<Vec<_>>().join(", ")),
                ));
            };
            let value = if parameter == CONNECT_TIMEOUT_PARAMETER {
                let seconds = value.parse::<u64>().map_err(|_| {
                    fail(
                        format!("{part} is not valid"),
                        "whole seconds, as libpq's connect_timeout",
                    )
                })?;
                format!("{seconds}s")
            } else {
                value
            };
            Ok((key, value, part))
        })
        .collect()
}

/// The key a libpq parameter sets.
fn url_key(parameter: &str) -> Option<&'static str> {
    URL_PARAMETERS
        .iter()
        .find(|(known, _)| *known == parameter)
        .map(|(_, key)| *key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_name_keys_that_exist() {
        let targets = ONLINE_BOUTIQUE_VARIABLES.iter().chain(URL_PARAMETERS);
        for (name, key) in targets {
            assert!(
                KEYS.contains(*key) || *key == URL_KEY,
                "{name} sets unknown key {key}"
            );
        }
        assert!(KEYS.contains("database.password_file"));
    }

    /// `is_secret` follows a naming convention; check it against the type:
    /// every optional field set, the secrets are what serializes as redacted.
    #[test]
    fn secret_keys_are_the_fields_serialized_as_redacted() {
        let field = |value: &serde_json::Value, key: &str| {
            let (section, field) = key.split_once('.').unwrap();
            value[section][field].clone()
        };
        let defaults = serde_json::to_value(Settings::default()).unwrap();
        let set = KEYS
            .iter()
            .filter(|key| !key.ends_with(FILE_SUFFIX) && field(&defaults, key).is_null())
            .map(|key| Override::new(key, "x"))
            .collect::<Vec<_>>();
        let args = ConfigArgs {
            config: Vec::new(),
            set,
        };
        let settings = Settings::load_from(&args, &HashMap::new()).unwrap();
        let serialized = serde_json::to_value(&settings).unwrap();
        let redacted = KEYS
            .iter()
            .filter(|key| field(&serialized, key) == REDACTED)
            .collect::<BTreeSet<_>>();
        let secret = KEYS.iter().filter(|key| is_secret(key)).collect();
        assert_eq!(redacted, secret);
        assert_eq!(redacted.len(), 5);
    }

    #[test]
    fn what_a_key_accepts_comes_from_its_type() {
        let cases = [
            ("database.port", Some("an integer 0..=65535")),
            ("database.pool_max_size", Some("an integer 0..=4294967295")),
            (
                "telemetry.tracing_enabled",
                Some("true or false (or 1 or 0)"),
            ),
            (
                "migrator.lock_timeout",
                Some("a duration such as 10s or 500ms"),
            ),
            ("telemetry.log_format", Some("json or text")),
            ("database.host", None),
            ("database.password", None),
        ];
        for (key, expected) in cases {
            assert_eq!(type_expects(key).as_deref(), expected, "{key}");
        }
    }
}
