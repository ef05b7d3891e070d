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
//! Values from the environment and `--set` are strings, parsed as the field's
//! type asks (booleans also accept `1` and `0`, as `ENABLE_TRACING=1`); values
//! in TOML files must have the field's type already. An environment variable
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

use percent_encoding::percent_decode_str;
use secrecy::SecretString;
use serde::de::{self, Visitor};
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
        let value = if KEYS.is_secret(&self.key) {
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
            let Ok(name) = name.into_string() else {
                // None of our variables has a non-UTF-8 name.
                continue;
            };
            if !is_our_variable(&name) {
                continue;
            }
            let value = value
                .into_string()
                .map_err(|_| ConfigError::EnvNotUnicode { name: name.clone() })?;
            env.insert(name, value);
        }
        Self::load_from(args, &env)
    }

    /// Loads the settings from `args` and the environment variables `env`.
    pub fn load_from(
        args: &ConfigArgs,
        env: &HashMap<String, String>,
    ) -> Result<Settings, ConfigError> {
        let mut files = args
            .config
            .iter()
            .map(|path| file_layer(path))
            .collect::<Result<Vec<_>, _>>()?;
        let mut above = [
            environment_layer(env),
            online_boutique_layer(env),
            flag_layer(&args.set),
        ];
        for layer in files.iter_mut().chain(above.iter_mut()) {
            expand_url(layer)?;
            KEYS.check(layer)?;
        }
        let secrets = secret_file_layer(files.iter().chain(above.iter()))?;
        let merged = merge(files.into_iter().chain([secrets]).chain(above));
        deserialize(merged)
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

fn is_our_variable(name: &str) -> bool {
    name.starts_with(ENV_PREFIX)
        || ONLINE_BOUTIQUE_VARIABLES
            .iter()
            .any(|(var, _)| *var == name)
}

// ---------------------------------------------------------------------------
// Layers

/// One value and where it came from.
#[derive(Debug)]
struct Entry {
    value: toml::Value,
    origin: Origin,
}

/// The keys (dotted) one source sets.
type Layer = BTreeMap<String, Entry>;

fn file_layer(path: &Path) -> Result<Layer, ConfigError> {
    let text = fs::read_to_string(path).map_err(|error| ConfigError::ReadFile {
        path: path.to_owned(),
        error,
    })?;
    let table = text.parse::<toml::Table>().map_err(|error| {
        let (line, column) = line_column(&text, error.span().map_or(0, |span| span.start));
        ConfigError::ParseFile {
            path: path.to_owned(),
            line,
            column,
            message: error.message().trim_end().to_owned(),
        }
    })?;
    let mut layer = Layer::new();
    flatten(&mut layer, "", table, &Origin::File(path.to_owned()));
    Ok(layer)
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

/// Turns nested tables into dotted keys, so that every source looks alike.
fn flatten(layer: &mut Layer, prefix: &str, table: toml::Table, origin: &Origin) {
    for (name, value) in table {
        let key = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}.{name}")
        };
        match value {
            toml::Value::Table(table) => flatten(layer, &key, table, origin),
            value => {
                let origin = origin.clone();
                layer.insert(key, Entry { value, origin });
            }
        }
    }
}

fn environment_layer(env: &HashMap<String, String>) -> Layer {
    let mut vars = env
        .iter()
        .filter(|(_, value)| !value.is_empty())
        .filter_map(|(name, value)| Some((name, name.strip_prefix(ENV_PREFIX)?, value)))
        .collect::<Vec<_>>();
    // Sorted so that two spellings of one key resolve the same way every time.
    vars.sort();
    vars.into_iter()
        .map(|(name, rest, value)| {
            let key = rest
                .split(ENV_SEPARATOR)
                .map(str::to_ascii_lowercase)
                .collect::<Vec<_>>()
                .join(".");
            (key, text_entry(value, Origin::Env(name.clone())))
        })
        .collect()
}

fn online_boutique_layer(env: &HashMap<String, String>) -> Layer {
    ONLINE_BOUTIQUE_VARIABLES
        .iter()
        .filter_map(|(name, key)| {
            let value = env.get(*name).filter(|value| !value.is_empty())?;
            Some((
                key.to_string(),
                text_entry(value, Origin::Env(name.to_string())),
            ))
        })
        .collect()
}

fn flag_layer(flags: &[Override]) -> Layer {
    flags
        .iter()
        .map(|flag| (flag.key.clone(), text_entry(&flag.value, Origin::Flag)))
        .collect()
}

fn text_entry(value: &str, origin: Origin) -> Entry {
    Entry {
        value: toml::Value::String(value.to_owned()),
        origin,
    }
}

/// Reads the file named by every `*_file` key, as set by the highest layer,
/// into the sibling key.
fn secret_file_layer<'a>(layers: impl Iterator<Item = &'a Layer>) -> Result<Layer, ConfigError> {
    let mut named = BTreeMap::new();
    for layer in layers {
        for (key, entry) in layer {
            if key.ends_with(FILE_SUFFIX) {
                named.insert(key, entry);
            }
        }
    }
    let mut secrets = Layer::new();
    for (key, entry) in named {
        let Some(target) = key.strip_suffix(FILE_SUFFIX) else {
            continue;
        };
        let toml::Value::String(path) = &entry.value else {
            return Err(invalid_value(key, entry, "a file path"));
        };
        let path = PathBuf::from(path);
        let mut content =
            fs::read_to_string(&path).map_err(|error| ConfigError::ReadSecretFile {
                key: key.clone(),
                path: path.clone(),
                error,
            })?;
        // Editors and `echo` end files with a newline that is not part of the secret.
        if content.ends_with("\r\n") {
            content.truncate(content.len() - 2);
        } else if content.ends_with('\n') {
            content.truncate(content.len() - 1);
        }
        let origin = Origin::SecretFile {
            key: key.clone(),
            path,
        };
        let value = toml::Value::String(content);
        secrets.insert(target.to_owned(), Entry { value, origin });
    }
    Ok(secrets)
}

/// Later layers win.
fn merge(layers: impl IntoIterator<Item = Layer>) -> Layer {
    layers.into_iter().flatten().collect()
}

/// The keys [`Settings`] has, derived from the type so that they are listed
/// nowhere else.
struct Keys(BTreeSet<String>);

static KEYS: LazyLock<Keys> = LazyLock::new(Keys::new);

impl Keys {
    fn new() -> Self {
        // `Settings` serializes every field, `None` as null; nothing input
        // can influence makes this fail.
        let defaults =
            serde_json::to_value(Settings::default()).expect("default settings serialize to JSON");
        let mut keys = BTreeSet::from([URL_KEY.to_owned()]);
        if let serde_json::Value::Object(sections) = defaults {
            for (section, fields) in sections {
                if let serde_json::Value::Object(fields) = fields {
                    keys.extend(fields.keys().map(|field| format!("{section}.{field}")));
                }
            }
        }
        Self(keys)
    }

    fn check(&self, layer: &Layer) -> Result<(), ConfigError> {
        match layer.iter().find(|(key, _)| !self.0.contains(*key)) {
            None => Ok(()),
            Some((key, entry)) => Err(ConfigError::UnknownKey {
                key: key.clone(),
                origin: entry.origin.clone(),
                expected: self.expected(key),
            }),
        }
    }

    /// The keys a misspelt `key` may have meant.
    fn expected(&self, key: &str) -> String {
        let section = key.split('.').next().unwrap_or_default();
        let siblings = self
            .0
            .iter()
            .filter(|known| known.split('.').next() == Some(section))
            .map(String::as_str)
            .collect::<Vec<_>>();
        if siblings.is_empty() {
            let mut sections = self
                .0
                .iter()
                .filter_map(|known| known.split('.').next())
                .collect::<Vec<_>>();
            sections.dedup();
            format!("a key in one of the sections {}", sections.join(", "))
        } else {
            format!("one of {}", siblings.join(", "))
        }
    }

    /// A secret is a key that can be read from a file (`password` has
    /// `password_file`), or the URL, which may hold the password.
    fn is_secret(&self, key: &str) -> bool {
        key == URL_KEY || self.0.contains(&format!("{key}{FILE_SUFFIX}"))
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
fn describe(key: &str, value: &toml::Value) -> String {
    if KEYS.is_secret(key) {
        return REDACTED.to_owned();
    }
    match value {
        toml::Value::String(text) => format!("{text:?}"),
        toml::Value::Integer(number) => number.to_string(),
        toml::Value::Float(number) => number.to_string(),
        toml::Value::Boolean(flag) => flag.to_string(),
        toml::Value::Datetime(datetime) => datetime.to_string(),
        toml::Value::Array(_) => "an array".to_owned(),
        toml::Value::Table(_) => "a table".to_owned(),
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
    let Some(entry) = layer.remove(URL_KEY) else {
        return Ok(());
    };
    let toml::Value::String(url) = &entry.value else {
        return Err(invalid_value(URL_KEY, &entry, URL_FORM));
    };
    // Collected first so that later parts of the URL win among themselves.
    let parts = parse_url(url, &entry.origin)?
        .into_iter()
        .map(|(key, value, part)| (key, (value, part)))
        .collect::<BTreeMap<_, _>>();
    for (key, (value, part)) in parts {
        let origin = Origin::Url {
            part,
            within: Box::new(entry.origin.clone()),
        };
        layer.entry(key.to_owned()).or_insert(Entry {
            value: toml::Value::String(value),
            origin,
        });
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

// ---------------------------------------------------------------------------
// Deserialization
//
// Our own deserializer rather than the `config` crate's: that one coerces
// silently (`port = 1.7` becomes 2, `port = true` becomes 1), loses the origin
// of most errors and names neither the variants of an enum nor the range of
// an integer. Here every leaf knows its key and origin, and what the field's
// type asked for becomes the "expected" of the message.

/// Deserializes the merged keys into `Settings`.
fn deserialize(merged: Layer) -> Result<Settings, ConfigError> {
    let mut sections = BTreeMap::<String, Layer>::new();
    for (key, entry) in merged {
        let section = key.split('.').next().unwrap_or_default().to_owned();
        sections.entry(section).or_default().insert(key, entry);
    }
    Settings::deserialize(Sections(sections)).map_err(|error| match error {
        DeError::Config(error) => error,
        DeError::Custom(message) => ConfigError::Internal(message),
    })
}

#[derive(Debug, thiserror::Error)]
enum DeError {
    /// Already names the key and origin.
    #[error(transparent)]
    Config(ConfigError),
    #[error("{0}")]
    Custom(String),
}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(message: T) -> Self {
        Self::Custom(message.to_string())
    }
}

/// What a leaf's type accepts; the caller adds key, origin and value.
#[derive(Debug, thiserror::Error)]
#[error("expected {0}")]
struct Expected(String);

impl de::Error for Expected {
    fn custom<T: fmt::Display>(message: T) -> Self {
        Self(message.to_string())
    }
}

/// The top level: sections by name, each with its entries by dotted key.
struct Sections(BTreeMap<String, Layer>);

impl<'de> de::Deserializer<'de> for Sections {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_map(SectionsAccess {
            sections: self.0.into_iter(),
            next: None,
        })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

struct SectionsAccess {
    sections: std::collections::btree_map::IntoIter<String, Layer>,
    next: Option<Layer>,
}

impl<'de> de::MapAccess<'de> for SectionsAccess {
    type Error = DeError;

    fn next_key_seed<K: de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let Some((name, entries)) = self.sections.next() else {
            return Ok(None);
        };
        let name = seed
            .deserialize(de::value::StringDeserializer::<DeError>::new(name))
            .map_err(|error| match entries.iter().next() {
                Some((key, entry)) => unknown_key(key, entry),
                None => error,
            })?;
        self.next = Some(entries);
        Ok(Some(name))
    }

    fn next_value_seed<V: de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, DeError> {
        let entries = self
            .next
            .take()
            .ok_or_else(|| DeError::Custom("a section was asked for before its name".into()))?;
        seed.deserialize(Section(entries))
    }
}

fn unknown_key(key: &str, entry: &Entry) -> DeError {
    DeError::Config(ConfigError::UnknownKey {
        key: key.to_owned(),
        origin: entry.origin.clone(),
        expected: KEYS.expected(key),
    })
}

/// One section: its entries by dotted key.
struct Section(Layer);

impl<'de> de::Deserializer<'de> for Section {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_map(SectionAccess {
            entries: self.0.into_iter(),
            next: None,
        })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

struct SectionAccess {
    entries: std::collections::btree_map::IntoIter<String, Entry>,
    next: Option<(String, Entry)>,
}

impl<'de> de::MapAccess<'de> for SectionAccess {
    type Error = DeError;

    fn next_key_seed<K: de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let Some((key, entry)) = self.entries.next() else {
            return Ok(None);
        };
        let field = key.split_once('.').map_or(key.as_str(), |(_, field)| field);
        let field = seed
            .deserialize(de::value::StrDeserializer::<DeError>::new(field))
            .map_err(|_| unknown_key(&key, &entry))?;
        self.next = Some((key, entry));
        Ok(Some(field))
    }

    fn next_value_seed<V: de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, DeError> {
        let (key, entry) = self
            .next
            .take()
            .ok_or_else(|| DeError::Custom("a value was asked for before its key".into()))?;
        let found = describe(&key, &entry.value);
        let origin = entry.origin;
        seed.deserialize(Leaf(entry.value))
            .map_err(|Expected(expected)| {
                DeError::Config(ConfigError::InvalidValue {
                    key,
                    origin,
                    found,
                    expected,
                })
            })
    }
}

/// One value. Strings (all that environment variables and flags can hold)
/// are parsed into what the field asks for; TOML's own types must match.
struct Leaf(toml::Value);

/// What a visitor says it expects, reworded where serde's words are unclear.
fn expecting<'de, V: Visitor<'de>>(visitor: &V) -> String {
    let text = format!("{}", visitor as &dyn de::Expected);
    match text.as_str() {
        "a duration" => "a duration such as 10s or 500ms".to_owned(),
        "path string" => "a file path".to_owned(),
        _ => text,
    }
}

/// Replaces a visitor's own error, which may quote the value, by ours.
fn or_expected<T>(result: Result<T, Expected>, expected: String) -> Result<T, Expected> {
    result.map_err(|_| Expected(expected))
}

macro_rules! deserialize_integers {
    ($($method:ident $visit:ident $type:ty;)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Expected> {
            let expected = format!("an integer {}..={}", <$type>::MIN, <$type>::MAX);
            let number = match &self.0 {
                toml::Value::Integer(number) => <$type>::try_from(*number).ok(),
                toml::Value::String(text) => text.parse::<$type>().ok(),
                _ => None,
            };
            match number {
                Some(number) => or_expected(visitor.$visit(number), expected),
                None => Err(Expected(expected)),
            }
        }
    )*};
}

impl<'de> de::Deserializer<'de> for Leaf {
    type Error = Expected;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Expected> {
        let expected = expecting(&visitor);
        let result = match self.0 {
            toml::Value::String(text) => visitor.visit_string(text),
            toml::Value::Integer(number) => visitor.visit_i64(number),
            toml::Value::Float(number) => visitor.visit_f64(number),
            toml::Value::Boolean(flag) => visitor.visit_bool(flag),
            toml::Value::Datetime(datetime) => visitor.visit_string(datetime.to_string()),
            toml::Value::Array(_) | toml::Value::Table(_) => return Err(Expected(expected)),
        };
        or_expected(result, expected)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Expected> {
        // Online Boutique's manifests say ENABLE_TRACING=1.
        let expected = || "true or false (or 1 or 0)".to_owned();
        let flag = match &self.0 {
            toml::Value::Boolean(flag) => Some(*flag),
            toml::Value::String(text) => match text.to_ascii_lowercase().as_str() {
                "true" | "1" => Some(true),
                "false" | "0" => Some(false),
                _ => None,
            },
            _ => None,
        };
        match flag {
            Some(flag) => or_expected(visitor.visit_bool(flag), expected()),
            None => Err(Expected(expected())),
        }
    }

    deserialize_integers! {
        deserialize_i8 visit_i8 i8;
        deserialize_i16 visit_i16 i16;
        deserialize_i32 visit_i32 i32;
        deserialize_i64 visit_i64 i64;
        deserialize_u8 visit_u8 u8;
        deserialize_u16 visit_u16 u16;
        deserialize_u32 visit_u32 u32;
        deserialize_u64 visit_u64 u64;
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Expected> {
        let expected = || "a number".to_owned();
        let number = match &self.0 {
            toml::Value::Float(number) => Some(*number),
            toml::Value::Integer(number) => Some(*number as f64),
            toml::Value::String(text) => text.parse().ok(),
            _ => None,
        };
        match number {
            Some(number) => or_expected(visitor.visit_f64(number), expected()),
            None => Err(Expected(expected())),
        }
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Expected> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Expected> {
        let expected = expecting(&visitor);
        match self.0 {
            toml::Value::String(text) => or_expected(visitor.visit_string(text), expected),
            _ => Err(Expected(expected)),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Expected> {
        self.deserialize_string(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Expected> {
        self.deserialize_string(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Expected> {
        // A key that is set is `Some`; leaving it out is how to say `None`.
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Expected> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Expected> {
        let expected = format!("one of {}", variants.join(", "));
        match self.0 {
            toml::Value::String(text) if variants.contains(&text.as_str()) => or_expected(
                visitor.visit_enum(de::value::StringDeserializer::new(text)),
                expected,
            ),
            _ => Err(Expected(expected)),
        }
    }

    serde::forward_to_deserialize_any! {
        i128 u128 char bytes byte_buf unit unit_struct seq tuple tuple_struct
        map struct ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_name_keys_that_exist() {
        let targets = ONLINE_BOUTIQUE_VARIABLES.iter().chain(URL_PARAMETERS);
        for (name, key) in targets {
            assert!(KEYS.0.contains(*key), "{name} sets unknown key {key}");
        }
        assert!(KEYS.0.contains("database.password_file"));
    }

    /// `is_secret` follows a naming convention; check it against the type:
    /// every optional field set, the secrets are what serializes as redacted.
    #[test]
    fn secret_keys_are_the_fields_serialized_as_redacted() {
        let defaults = serde_json::to_value(Settings::default()).unwrap();
        let set = KEYS
            .0
            .iter()
            .filter(|key| !key.ends_with(FILE_SUFFIX) && *key != URL_KEY)
            .filter(|key| {
                let (section, field) = key.split_once('.').unwrap();
                defaults[section][field].is_null()
            })
            .map(|key| Override::new(key, "x"))
            .collect::<Vec<_>>();
        let args = ConfigArgs {
            config: Vec::new(),
            set,
        };
        let settings = Settings::load_from(&args, &HashMap::new()).unwrap();
        let serialized = serde_json::to_value(&settings).unwrap();
        let redacted = KEYS
            .0
            .iter()
            .filter(|key| {
                let (section, field) = key.split_once('.').unwrap();
                serialized[section][field] == REDACTED
            })
            .collect::<BTreeSet<_>>();
        let secret = KEYS
            .0
            .iter()
            .filter(|key| KEYS.is_secret(key) && *key != URL_KEY)
            .collect::<BTreeSet<_>>();
        assert_eq!(redacted, secret);
        assert_eq!(redacted.len(), 5);
    }
}
