//! JSON logs and OpenTelemetry tracing.
//!
//! [`init`] installs, for a binary's whole life:
//!
//! - an [`EnvFilter`] built from `telemetry.log_level`;
//! - a log layer on standard output: Online Boutique's JSON lines
//!   ([`json_layer`]) or tracing-subscriber's human format;
//! - a `tracing-opentelemetry` layer, always, so every span has an OpenTelemetry
//!   context: log lines carry `trace_id`/`span_id` and a `traceparent` received
//!   from a caller is continued downstream. Spans leave the process (OTLP/gRPC,
//!   batched) only when `telemetry.tracing_enabled` is set;
//! - the W3C TraceContext (and Baggage) propagator, globally.
//!
//! [`build_subscriber`] builds the same stack without installing anything
//! global, for tests.

use std::collections::HashMap;
use std::fmt;
use std::io::{IsTerminal as _, Write as _};
use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::propagation::TextMapCompositePropagator;
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkError;
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde::Serializer as _;
use serde::ser::SerializeMap as _;
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tracing::dispatcher::WeakDispatch;
use tracing::field::{Field, Visit};
use tracing::{Dispatch, Event, Level, Subscriber};
use tracing_subscriber::filter::{Directive, EnvFilter, filter_fn};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{Layer, Registry};

use crate::config::{LogFormat, TelemetrySettings};

/// How long [`Telemetry::shutdown`] waits for the last spans to be exported.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Instrumentation scope of the spans this process creates.
const TRACER_NAME: &str = env!("CARGO_PKG_NAME");

/// Why telemetry could not be set up or shut down.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// `telemetry.log_level` is not a list of `EnvFilter` directives.
    #[error("invalid telemetry.log_level: bad directive `{directive}`: {source}")]
    InvalidLogLevel {
        /// The directive that does not parse (the whole value when each
        /// directive parses alone but the list does not).
        directive: String,
        /// What is wrong with it.
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    /// `telemetry.log_level` holds no directive at all.
    #[error("invalid telemetry.log_level: no directive given (try `info`)")]
    EmptyLogLevel,
    /// The OTLP exporter rejects `telemetry.collector_addr`.
    #[error("invalid telemetry.collector_addr `{addr}`: {source}")]
    InvalidCollectorAddr {
        /// The address as configured.
        addr: String,
        /// The exporter's complaint.
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
    /// The OTLP/gRPC client spawns its connection on the current Tokio runtime.
    #[error("telemetry.tracing_enabled needs a Tokio runtime: call telemetry::init inside one")]
    NoRuntime,
    /// Some other code installed a global subscriber or `log` logger first.
    #[error("a global tracing subscriber is already installed")]
    AlreadyInitialized(#[source] tracing_subscriber::util::TryInitError),
    /// Flushing or shutting down the span exporter failed (or timed out).
    #[error("shutting down the OpenTelemetry span exporter: {0}")]
    Shutdown(#[source] OTelSdkError),
}

/// Keeps the span pipeline alive; shuts it down (exporting what is buffered)
/// on [`Telemetry::shutdown`] or drop.
#[derive(Debug)]
#[must_use = "dropping the guard shuts the span exporter down"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports buffered spans and stops the exporter, waiting at most
    /// [`SHUTDOWN_TIMEOUT`].
    ///
    /// Call it from a multi-threaded Tokio runtime or from outside any
    /// runtime: on a current-thread runtime the export cannot make progress
    /// while this blocks, so it gives up after the timeout.
    pub fn shutdown(mut self) -> Result<(), TelemetryError> {
        self.shutdown_provider()
    }

    /// The tracer provider behind the `tracing` layer, for code that wants
    /// OpenTelemetry's API directly (it is also installed as the global one
    /// by [`init`]). `Some` until the guard is shut down.
    pub fn tracer_provider(&self) -> Option<&SdkTracerProvider> {
        self.provider.as_ref()
    }

    fn shutdown_provider(&mut self) -> Result<(), TelemetryError> {
        let Some(provider) = self.provider.take() else {
            return Ok(());
        };
        blocking(|| provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT))
            .map_err(TelemetryError::Shutdown)
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        // Errors were already reported by the SDK's internal logs; a guard
        // dropped while unwinding must not panic or hang.
        let _ = self.shutdown_provider();
    }
}

/// Installs the global subscriber, `log` bridge and propagator for a binary.
///
/// `default_service_name` (the binary's name) is the `service.name` of
/// exported spans unless `telemetry.service_name` is set. With
/// `tracing_enabled`, call this inside a Tokio runtime (the gRPC channel lives
/// on it) and keep the returned guard until the end of `main`.
pub fn init(
    settings: &TelemetrySettings,
    default_service_name: &str,
) -> Result<Telemetry, TelemetryError> {
    let ansi = std::io::stdout().is_terminal();
    let (dispatch, telemetry) = build(settings, default_service_name, std::io::stdout, ansi)?;
    dispatch
        .try_init()
        .map_err(TelemetryError::AlreadyInitialized)?;
    if let Some(provider) = telemetry.tracer_provider() {
        opentelemetry::global::set_tracer_provider(provider.clone());
    }
    install_propagator();
    Ok(telemetry)
}

/// Installs the W3C TraceContext and Baggage propagators globally (as Online
/// Boutique's Go services do), so `traceparent` is read from and written to
/// requests whether or not spans are exported. [`init`] calls it.
pub fn install_propagator() {
    opentelemetry::global::set_text_map_propagator(TextMapCompositePropagator::new(vec![
        Box::new(TraceContextPropagator::new()),
        Box::new(BaggagePropagator::new()),
    ]));
}

/// Builds the subscriber [`init`] would install, writing log lines to
/// `make_writer` without colours, and installs nothing global: use it with
/// [`tracing::dispatcher::with_default`] in tests.
pub fn build_subscriber<W>(
    settings: &TelemetrySettings,
    default_service_name: &str,
    make_writer: W,
) -> Result<(Dispatch, Telemetry), TelemetryError>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    build(settings, default_service_name, make_writer, false)
}

fn build<W>(
    settings: &TelemetrySettings,
    default_service_name: &str,
    make_writer: W,
    ansi: bool,
) -> Result<(Dispatch, Telemetry), TelemetryError>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = env_filter(&settings.log_level)?;
    let provider = tracer_provider(settings, default_service_name)?;
    let tracer = provider.tracer(TRACER_NAME);
    // This layer sees every span of every request, so it does only what we
    // use: span ids for logs and propagation, and the exported attributes.
    // No OpenTelemetry context attached on each poll (propagation reads the
    // span's own context), no busy/idle timings, and location and thread
    // attributes only when spans are exported. Measured with `cargo xtask
    // bench place_order`: README, "Performance".
    let otel_layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_context_activation(false)
        .with_tracked_inactivity(false)
        .with_location(settings.tracing_enabled)
        .with_threads(settings.tracing_enabled)
        .with_filter(filter_fn(|metadata| {
            !is_exporter_transport(metadata.target())
        }));
    let log_layer = match settings.log_format {
        LogFormat::Json => json_layer(make_writer).boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(make_writer)
            .with_ansi(ansi)
            .boxed(),
    };
    let subscriber = Registry::default()
        .with(filter)
        .with(otel_layer)
        .with(log_layer);
    Ok((
        Dispatch::new(subscriber),
        Telemetry {
            provider: Some(provider),
        },
    ))
}

/// Parses `telemetry.log_level`, naming the first directive that is wrong.
fn env_filter(log_level: &str) -> Result<EnvFilter, TelemetryError> {
    let mut directives = log_level
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .peekable();
    if directives.peek().is_none() {
        return Err(TelemetryError::EmptyLogLevel);
    }
    // EnvFilter's own error does not say which directive failed; parse them
    // one by one first so the message can.
    for directive in directives {
        if let Err(source) = directive.parse::<Directive>() {
            return Err(TelemetryError::InvalidLogLevel {
                directive: directive.to_owned(),
                source,
            });
        }
    }
    // The OpenTelemetry SDK announces its own set-up at info level in every
    // process; keep that out of operators' logs unless they ask for it.
    let quiet_sdk = if log_level.contains("opentelemetry") {
        log_level.to_owned()
    } else {
        format!("{log_level},opentelemetry_sdk=warn,opentelemetry=warn")
    };
    EnvFilter::builder()
        .parse(&quiet_sdk)
        .map_err(|source| TelemetryError::InvalidLogLevel {
            directive: log_level.to_owned(),
            source,
        })
}

/// The provider always exists, so spans get ids that logs and propagation
/// use; it exports only when tracing is enabled.
fn tracer_provider(
    settings: &TelemetrySettings,
    default_service_name: &str,
) -> Result<SdkTracerProvider, TelemetryError> {
    let resource = Resource::builder()
        .with_service_name(service_name(settings, default_service_name))
        .build();
    let builder = SdkTracerProvider::builder().with_resource(resource);
    if !settings.tracing_enabled {
        return Ok(builder.build());
    }
    // `connect_lazy` spawns the channel's worker on the current runtime and
    // panics without one.
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(TelemetryError::NoRuntime);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(collector_endpoint(&settings.collector_addr))
        .build()
        .map_err(|source| TelemetryError::InvalidCollectorAddr {
            addr: settings.collector_addr.clone(),
            source,
        })?;
    // The batch processor exports from its own thread; the connection is
    // lazy, so a collector that is down costs failed exports (logged by the
    // SDK), never a failed start or a blocked request.
    Ok(builder.with_batch_exporter(exporter).build())
}

/// `telemetry.service_name` unless it is blank, else the binary's default.
fn service_name(settings: &TelemetrySettings, default_service_name: &str) -> String {
    settings
        .service_name
        .as_deref()
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .unwrap_or(default_service_name)
        .to_owned()
}

/// Online Boutique passes `COLLECTOR_SERVICE_ADDR` as a bare `host:port`,
/// which the exporter would otherwise take as `https://`.
pub fn collector_endpoint(addr: &str) -> String {
    let addr = addr.trim();
    if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    }
}

/// Spans of the exporter's own transport: tracing them would make every
/// export produce more spans to export. Called for every span a request
/// makes, so it looks for the first `:` rather than splitting on `"::"`
/// (which builds a substring searcher each call).
fn is_exporter_transport(target: &str) -> bool {
    const CRATES: [&str; 8] = [
        "h2",
        "hyper",
        "hyper_util",
        "tower",
        "tonic",
        "opentelemetry",
        "opentelemetry_sdk",
        "opentelemetry_otlp",
    ];
    let krate = target.find(':').map_or(target, |end| &target[..end]);
    CRATES.contains(&krate)
}

/// Runs a blocking call without starving the Tokio runtime it may be called
/// from (the exporter's connection is driven by that runtime).
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// A layer writing one JSON object per event, in Online Boutique's format:
///
/// ```json
/// {"timestamp":"2024-05-01T12:00:00.123456789Z","severity":"info","message":"order placed","order_id":"…","trace_id":"…","span_id":"…"}
/// ```
///
/// `timestamp` is RFC 3339 in UTC; `severity` is `debug` (also for `TRACE`,
/// which Cloud Logging lacks), `info`, `warning` or `error`; the event's
/// fields follow, then the OpenTelemetry `trace_id` and `span_id` (hex) of
/// the event's span when it has one. A field whose name collides with one of
/// these keys is written as `fields.<name>`.
pub fn json_layer<W>(make_writer: W) -> JsonLayer<W>
where
    W: for<'w> MakeWriter<'w> + 'static,
{
    JsonLayer {
        make_writer,
        dispatch: OnceLock::new(),
    }
}

/// See [`json_layer`].
pub struct JsonLayer<W> {
    make_writer: W,
    /// The subscriber this layer is part of, to look up span contexts.
    /// `dispatcher::get_default` cannot be used: inside event dispatch it
    /// yields the no-op dispatcher whenever a scoped default is set.
    dispatch: OnceLock<WeakDispatch>,
}

impl<W> fmt::Debug for JsonLayer<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonLayer").finish_non_exhaustive()
    }
}

/// Keys the layer writes itself.
const RESERVED_KEYS: [&str; 5] = ["timestamp", "severity", "message", "trace_id", "span_id"];

/// Fields `tracing-log` adds to records bridged from the `log` crate.
const LOG_BRIDGE_FIELDS: [&str; 4] = ["log.target", "log.module_path", "log.file", "log.line"];

impl<S, W> Layer<S> for JsonLayer<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn on_register_dispatch(&self, subscriber: &Dispatch) {
        let _ = self.dispatch.set(subscriber.downgrade());
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = FieldCollector::default();
        event.record(&mut fields);
        let ids = ctx
            .event_span(event)
            .and_then(|span| self.trace_ids(&span.id()));
        let line = LogLine {
            timestamp: OffsetDateTime::now_utc(),
            severity: severity(*event.metadata().level()),
            fields,
            ids,
        };
        let Some(buf) = line.to_json() else {
            return;
        };
        // A closed or full stdout must not take the service down.
        let _ = self
            .make_writer
            .make_writer_for(event.metadata())
            .write_all(&buf);
    }
}

impl<W> JsonLayer<W> {
    /// Hex trace and span ids of a span's OpenTelemetry context, if valid.
    fn trace_ids(&self, id: &tracing::span::Id) -> Option<(String, String)> {
        let dispatch = self.dispatch.get()?.upgrade()?;
        let cx = tracing_opentelemetry::get_otel_context(id, &dispatch)?;
        let span = cx.span();
        let span_context = span.span_context();
        span_context.is_valid().then(|| {
            (
                span_context.trace_id().to_string(),
                span_context.span_id().to_string(),
            )
        })
    }
}

/// Online Boutique's (logrus's) level names.
fn severity(level: Level) -> &'static str {
    match level {
        Level::ERROR => "error",
        Level::WARN => "warning",
        Level::INFO => "info",
        Level::DEBUG | Level::TRACE => "debug",
    }
}

struct LogLine {
    timestamp: OffsetDateTime,
    severity: &'static str,
    fields: FieldCollector,
    ids: Option<(String, String)>,
}

impl LogLine {
    /// The line with its trailing newline; `None` only if serialization
    /// fails, which plain strings and numbers do not.
    fn to_json(&self) -> Option<Vec<u8>> {
        let timestamp = self
            .timestamp
            .format(&Rfc3339)
            .unwrap_or_else(|_| self.timestamp.unix_timestamp().to_string());
        let mut buf = Vec::with_capacity(256);
        let mut serializer = serde_json::Serializer::new(&mut buf);
        let mut map = serializer.serialize_map(None).ok()?;
        map.serialize_entry("timestamp", &timestamp).ok()?;
        map.serialize_entry("severity", self.severity).ok()?;
        map.serialize_entry("message", self.fields.message.as_deref().unwrap_or(""))
            .ok()?;
        for (name, value) in &self.fields.fields {
            if RESERVED_KEYS.contains(&name.as_str()) {
                map.serialize_entry(&format!("fields.{name}"), value).ok()?;
            } else {
                map.serialize_entry(name, value).ok()?;
            }
        }
        if let Some((trace_id, span_id)) = &self.ids {
            map.serialize_entry("trace_id", trace_id).ok()?;
            map.serialize_entry("span_id", span_id).ok()?;
        }
        map.end().ok()?;
        buf.push(b'\n');
        Some(buf)
    }
}

/// An event's `message` and other fields, in the order they were recorded.
#[derive(Default)]
struct FieldCollector {
    message: Option<String>,
    fields: Vec<(String, Value)>,
    /// Index into `fields` by name, so a repeated name keeps its first place.
    seen: HashMap<&'static str, usize>,
}

impl FieldCollector {
    fn put(&mut self, field: &Field, value: Value) {
        let name = field.name();
        if name == "message" {
            self.message = Some(match value {
                Value::String(s) => s,
                other => other.to_string(),
            });
        } else if LOG_BRIDGE_FIELDS.contains(&name) {
            // Bridged `log` records: where the call was is not part of
            // Online Boutique's format.
        } else if let Some(&index) = self.seen.get(name) {
            self.fields[index].1 = value;
        } else {
            self.seen.insert(name, self.fields.len());
            self.fields.push((name.to_owned(), value));
        }
    }
}

impl Visit for FieldCollector {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Value::String(format!("{value:?}")));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::String(value.to_owned()));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        // JSON numbers beyond 64 bits lose precision in most readers.
        let value =
            i64::try_from(value).map_or_else(|_| Value::String(value.to_string()), Value::from);
        self.put(field, value);
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        let value =
            u64::try_from(value).map_or_else(|_| Value::String(value.to_string()), Value::from);
        self.put(field, value);
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // NaN and infinities are not JSON numbers.
        let value = serde_json::Number::from_f64(value)
            .map_or_else(|| Value::String(value.to_string()), Value::Number);
        self.put(field, value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::Bool(value));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        // The whole chain: the outer error alone rarely says what went wrong.
        let mut text = value.to_string();
        let mut source = value.source();
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        self.put(field, Value::String(text));
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    use opentelemetry::propagation::TextMapPropagator as _;
    use opentelemetry::trace::TraceContextExt as _;
    use tracing::{debug, error, info, info_span, trace, warn};
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    /// An in-memory log sink.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Buf {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }

        fn lines(&self) -> Vec<String> {
            self.text().lines().map(str::to_owned).collect()
        }

        fn json_lines(&self) -> Vec<serde_json::Map<String, Value>> {
            self.lines()
                .iter()
                .map(|line| match serde_json::from_str(line).unwrap() {
                    Value::Object(map) => map,
                    other => panic!("not an object: {other}"),
                })
                .collect()
        }
    }

    impl io::Write for Buf {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buf {
        type Writer = Buf;

        fn make_writer(&'a self) -> Buf {
            self.clone()
        }
    }

    /// Runs `f` under a bare JSON layer (every level enabled).
    fn json_logs(f: impl FnOnce()) -> Buf {
        let buf = Buf::default();
        let subscriber = Registry::default().with(json_layer(buf.clone()));
        tracing::subscriber::with_default(subscriber, f);
        buf
    }

    fn settings(format: LogFormat) -> TelemetrySettings {
        TelemetrySettings {
            log_level: "trace".into(),
            log_format: format,
            ..TelemetrySettings::default()
        }
    }

    /// Splits a line into its RFC 3339 UTC timestamp and the rest.
    fn split_timestamp(line: &str) -> (&str, &str) {
        let rest = line
            .strip_prefix(r#"{"timestamp":""#)
            .unwrap_or_else(|| panic!("line does not start with the timestamp: {line}"));
        let end = rest.find('"').unwrap();
        (&rest[..end], &rest[end..])
    }

    fn assert_rfc3339_utc(timestamp: &str) {
        let bytes = timestamp.as_bytes();
        let digits = |range: std::ops::Range<usize>| bytes[range].iter().all(u8::is_ascii_digit);
        assert!(
            bytes.len() >= 20
                && digits(0..4)
                && bytes[4] == b'-'
                && digits(5..7)
                && bytes[7] == b'-'
                && digits(8..10)
                && bytes[10] == b'T'
                && digits(11..13)
                && bytes[13] == b':'
                && digits(14..16)
                && bytes[16] == b':'
                && digits(17..19)
                && timestamp.ends_with('Z'),
            "not RFC 3339 UTC: {timestamp}"
        );
        if bytes.len() > 20 {
            assert_eq!(bytes[19], b'.', "{timestamp}");
            assert!(digits(20..bytes.len() - 1), "{timestamp}");
        }
    }

    #[test]
    fn json_line_has_online_boutique_shape() {
        let buf = json_logs(|| {
            info!(order_id = "o-1", items = 3, paid = true, "order placed");
        });
        let text = buf.text();
        assert!(text.ends_with('\n'));
        let lines = buf.lines();
        assert_eq!(lines.len(), 1);
        let (timestamp, rest) = split_timestamp(&lines[0]);
        assert_rfc3339_utc(timestamp);
        assert_eq!(
            rest,
            r#"","severity":"info","message":"order placed","order_id":"o-1","items":3,"paid":true}"#
        );
    }

    #[test]
    fn severities_are_logrus_names() {
        let buf = json_logs(|| {
            trace!("t");
            debug!("d");
            info!("i");
            warn!("w");
            error!("e");
        });
        let severities: Vec<_> = buf
            .json_lines()
            .iter()
            .map(|line| line["severity"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(severities, ["debug", "debug", "info", "warning", "error"]);
    }

    #[test]
    fn quotes_newlines_and_control_characters_are_escaped() {
        let buf = json_logs(|| {
            info!(note = "tab\there", "say \"hi\"\nthen \\ leave\u{1}");
        });
        let lines = buf.lines();
        assert_eq!(lines.len(), 1, "a message with a newline stays on one line");
        let (_, rest) = split_timestamp(&lines[0]);
        assert_eq!(
            rest,
            r#"","severity":"info","message":"say \"hi\"\nthen \\ leave\u0001","note":"tab\there"}"#
        );
        assert_eq!(
            buf.json_lines()[0]["message"],
            "say \"hi\"\nthen \\ leave\u{1}"
        );
    }

    #[derive(Debug, thiserror::Error)]
    #[error("charging the card")]
    struct Outer(#[source] io::Error);

    #[test]
    fn field_values_keep_their_json_types() {
        let buf = json_logs(|| {
            let err = Outer(io::Error::other("connection reset"));
            warn!(
                small = -7i64,
                big = u128::MAX,
                ratio = 0.5,
                nan = f64::NAN,
                debugged = ?Some(1),
                displayed = %"shown",
                error = &err as &(dyn std::error::Error + 'static),
                "values"
            );
        });
        let line = &buf.json_lines()[0];
        assert_eq!(line["small"], -7);
        assert_eq!(line["big"], u128::MAX.to_string());
        assert_eq!(line["ratio"], 0.5);
        assert_eq!(line["nan"], "NaN");
        assert_eq!(line["debugged"], "Some(1)");
        assert_eq!(line["displayed"], "shown");
        assert_eq!(line["error"], "charging the card: connection reset");
    }

    #[test]
    fn fields_named_like_our_keys_do_not_duplicate_them() {
        let buf = json_logs(|| {
            info!(severity = "high", timestamp = 5, trace_id = "mine", "clash");
        });
        let lines = buf.lines();
        let (_, rest) = split_timestamp(&lines[0]);
        assert_eq!(
            rest,
            r#"","severity":"info","message":"clash","fields.severity":"high","fields.timestamp":5,"fields.trace_id":"mine"}"#
        );
    }

    #[test]
    fn event_without_message_has_an_empty_one() {
        let buf = json_logs(|| info!(k = 1));
        let lines = buf.lines();
        let (_, rest) = split_timestamp(&lines[0]);
        assert_eq!(rest, r#"","severity":"info","message":"","k":1}"#);
    }

    #[test]
    fn lines_join_the_span_context() {
        let buf = Buf::default();
        let (dispatch, telemetry) =
            build_subscriber(&settings(LogFormat::Json), "checkout", buf.clone()).unwrap();
        let (outer_ids, inner_ids) = tracing::dispatcher::with_default(&dispatch, || {
            info!("outside");
            let outer = info_span!("outer");
            let _outer = outer.enter();
            info!("in outer");
            let inner = info_span!("inner");
            let _inner = inner.enter();
            info!("in inner");
            (ids_of(&outer), ids_of(&inner))
        });
        telemetry.shutdown().unwrap();

        let lines = buf.json_lines();
        assert_eq!(lines.len(), 3);
        assert!(!lines[0].contains_key("trace_id") && !lines[0].contains_key("span_id"));
        assert_eq!(ids_in(&lines[1]), outer_ids);
        assert_eq!(ids_in(&lines[2]), inner_ids);
        assert_eq!(outer_ids.0, inner_ids.0, "one trace");
        assert_ne!(outer_ids.1, inner_ids.1);
        assert_eq!(outer_ids.0.len(), 32);
        assert_eq!(outer_ids.1.len(), 16);
        // The ids are the last keys.
        let raw = buf.lines();
        assert!(
            raw[2].ends_with(&format!(
                r#""trace_id":"{}","span_id":"{}"}}"#,
                inner_ids.0, inner_ids.1
            )),
            "{}",
            raw[2]
        );
    }

    /// Hex trace and span id of a `tracing` span's OpenTelemetry context.
    fn ids_of(span: &tracing::Span) -> (String, String) {
        let cx = span.context();
        let otel_span = cx.span();
        let span_context = otel_span.span_context();
        (
            span_context.trace_id().to_string(),
            span_context.span_id().to_string(),
        )
    }

    fn ids_in(line: &serde_json::Map<String, Value>) -> (String, String) {
        (
            line["trace_id"].as_str().unwrap().to_owned(),
            line["span_id"].as_str().unwrap().to_owned(),
        )
    }

    #[test]
    fn incoming_traceparent_is_continued_with_export_disabled() {
        let buf = Buf::default();
        let (dispatch, _telemetry) =
            build_subscriber(&settings(LogFormat::Json), "checkout", buf.clone()).unwrap();
        let carrier = HashMap::from([(
            "traceparent".to_owned(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned(),
        )]);
        let parent = TraceContextPropagator::new().extract(&carrier);
        let injected = tracing::dispatcher::with_default(&dispatch, || {
            let span = info_span!("PlaceOrder");
            span.set_parent(parent).unwrap();
            let _entered = span.enter();
            info!("placing");
            let mut outgoing = HashMap::new();
            TraceContextPropagator::new().inject_context(&span.context(), &mut outgoing);
            outgoing
        });
        let line = &buf.json_lines()[0];
        assert_eq!(line["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(line["span_id"], "00f067aa0ba902b7");
        let span_id = line["span_id"].as_str().unwrap();
        assert_eq!(
            injected["traceparent"],
            format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{span_id}-01")
        );
    }

    #[test]
    fn install_propagator_reads_traceparent() {
        install_propagator();
        let fields: Vec<String> = opentelemetry::global::get_text_map_propagator(|p| {
            p.fields().map(str::to_owned).collect()
        });
        assert!(fields.iter().any(|f| f == "traceparent"), "{fields:?}");
        assert!(fields.iter().any(|f| f == "baggage"), "{fields:?}");
    }

    #[test]
    fn log_level_filters() {
        let buf = Buf::default();
        let settings = TelemetrySettings {
            log_level: "warn,orders::telemetry=debug".into(),
            ..settings(LogFormat::Json)
        };
        let (dispatch, _telemetry) = build_subscriber(&settings, "checkout", buf.clone()).unwrap();
        tracing::dispatcher::with_default(&dispatch, || {
            trace!("dropped: trace here");
            debug!("kept: debug here");
            info!(target: "elsewhere", "dropped: info elsewhere");
            warn!(target: "elsewhere", "kept: warn elsewhere");
        });
        let messages: Vec<_> = buf
            .json_lines()
            .iter()
            .map(|line| line["message"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(messages, ["kept: debug here", "kept: warn elsewhere"]);
    }

    #[test]
    fn invalid_log_level_names_key_and_directive() {
        let settings = TelemetrySettings {
            log_level: "info, orders=loud ,tokio=warn".into(),
            ..settings(LogFormat::Json)
        };
        let err = build_subscriber(&settings, "checkout", Buf::default()).unwrap_err();
        assert!(
            matches!(&err, TelemetryError::InvalidLogLevel { directive, .. } if directive == "orders=loud"),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(message.contains("telemetry.log_level"), "{message}");
        assert!(message.contains("`orders=loud`"), "{message}");
    }

    #[test]
    fn blank_log_level_is_rejected() {
        for blank in ["", " ", " , "] {
            let settings = TelemetrySettings {
                log_level: blank.into(),
                ..settings(LogFormat::Json)
            };
            let err = build_subscriber(&settings, "checkout", Buf::default()).unwrap_err();
            assert!(matches!(err, TelemetryError::EmptyLogLevel), "{err:?}");
            assert!(err.to_string().contains("telemetry.log_level"));
        }
    }

    #[test]
    fn text_format_is_human() {
        let buf = Buf::default();
        let (dispatch, _telemetry) =
            build_subscriber(&settings(LogFormat::Text), "checkout", buf.clone()).unwrap();
        tracing::dispatcher::with_default(&dispatch, || info!(order_id = "o-1", "order placed"));
        let text = buf.text();
        assert!(!text.starts_with('{'), "{text}");
        assert!(text.contains(" INFO "), "{text}");
        assert!(text.contains("order placed order_id=\"o-1\""), "{text}");
        assert!(!text.contains('\u{1b}'), "no colours: {text}");
    }

    #[test]
    fn service_name_defaults_to_the_binary() {
        let mut settings = TelemetrySettings::default();
        assert_eq!(
            service_name(&settings, "checkoutservice"),
            "checkoutservice"
        );
        settings.service_name = Some("  ".into());
        assert_eq!(
            service_name(&settings, "checkoutservice"),
            "checkoutservice"
        );
        settings.service_name = Some("checkout-rs".into());
        assert_eq!(service_name(&settings, "checkoutservice"), "checkout-rs");
    }

    #[test]
    fn collector_address_gets_a_scheme() {
        assert_eq!(
            collector_endpoint("opentelemetrycollector:4317"),
            "http://opentelemetrycollector:4317"
        );
        assert_eq!(
            collector_endpoint(" 10.0.0.1:4317 "),
            "http://10.0.0.1:4317"
        );
        assert_eq!(collector_endpoint("http://otel:4317"), "http://otel:4317");
        assert_eq!(collector_endpoint("https://otel:4317"), "https://otel:4317");
    }

    #[test]
    fn exporter_transport_spans_are_not_traced() {
        assert!(is_exporter_transport("h2::proto::connection"));
        assert!(is_exporter_transport("hyper_util::client::legacy"));
        assert!(is_exporter_transport("opentelemetry_sdk"));
        assert!(is_exporter_transport("tower"));
        assert!(!is_exporter_transport("orders::db"));
        assert!(!is_exporter_transport("tower_http::trace::on_request"));
        assert!(!is_exporter_transport(""));
        assert!(!is_exporter_transport("h2o"));
    }

    fn tracing_to(addr: &str) -> TelemetrySettings {
        TelemetrySettings {
            tracing_enabled: true,
            collector_addr: addr.into(),
            ..settings(LogFormat::Json)
        }
    }

    #[test]
    fn export_needs_a_runtime() {
        let err = build_subscriber(&tracing_to("127.0.0.1:4317"), "checkout", Buf::default())
            .unwrap_err();
        assert!(matches!(err, TelemetryError::NoRuntime), "{err:?}");
    }

    #[tokio::test]
    async fn bad_collector_address_is_a_config_error() {
        for addr in ["http://bad host:4317", "https://tls-needs-a-feature:4317"] {
            let err = build_subscriber(&tracing_to(addr), "checkout", Buf::default()).unwrap_err();
            assert!(
                matches!(&err, TelemetryError::InvalidCollectorAddr { addr: a, .. } if a == addr),
                "{err:?}"
            );
            assert!(err.to_string().contains("telemetry.collector_addr"));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn collector_down_neither_fails_nor_hangs() {
        // Port 1 on loopback: connection refused.
        let buf = Buf::default();
        let (dispatch, telemetry) =
            build_subscriber(&tracing_to("127.0.0.1:1"), "checkout", buf.clone()).unwrap();
        tracing::dispatcher::with_default(&dispatch, || {
            let span = info_span!("PlaceOrder");
            let _entered = span.enter();
            info!("still logging");
        });
        let started = Instant::now();
        // The batch processor reports the failed export through the SDK's
        // internal logs, not through shutdown's result: only bound the wait.
        let _ = telemetry.shutdown();
        let waited = started.elapsed();
        assert!(
            waited < SHUTDOWN_TIMEOUT + Duration::from_secs(2),
            "{waited:?}"
        );
        assert_eq!(buf.json_lines()[0]["message"], "still logging");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropping_the_guard_with_collector_down_returns() {
        let (dispatch, telemetry) =
            build_subscriber(&tracing_to("127.0.0.1:1"), "checkout", Buf::default()).unwrap();
        tracing::dispatcher::with_default(&dispatch, || {
            let _span = info_span!("PlaceOrder").entered();
        });
        let started = Instant::now();
        drop(telemetry);
        assert!(started.elapsed() < SHUTDOWN_TIMEOUT + Duration::from_secs(2));
    }
}
