//! A stand-in for the OpenTelemetry Collector: an OTLP/gRPC trace receiver on
//! loopback that records the spans exported to it, so tests can assert on
//! them.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use std::time::Duration;
//! use orders::testkit::otlp::OtlpReceiver;
//!
//! let receiver = OtlpReceiver::start().await?;
//! // Point `telemetry.collector_addr` at `receiver.endpoint()`, run the code
//! // under test, shut telemetry down (which flushes), then:
//! let spans = receiver.wait_for_spans(2, Duration::from_secs(10)).await;
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// One span as the receiver got it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedSpan {
    /// Span name.
    pub name: String,
    /// Trace id, 32 lower-case hex digits.
    pub trace_id: String,
    /// Span id, 16 lower-case hex digits.
    pub span_id: String,
    /// Id of the parent span (hex); `None` for a root span.
    pub parent_span_id: Option<String>,
    /// `service.name` of the resource the span was exported with.
    pub service_name: Option<String>,
    /// Span kind as the protocol names it, e.g. `SPAN_KIND_SERVER`.
    pub kind: String,
    /// The span's attributes, values rendered as text.
    pub attributes: BTreeMap<String, String>,
}

/// A running receiver; stops serving when dropped.
#[derive(Debug)]
pub struct OtlpReceiver {
    addr: SocketAddr,
    spans: watch::Receiver<Vec<ReceivedSpan>>,
    server: JoinHandle<()>,
}

impl OtlpReceiver {
    /// Starts serving `TraceService/Export` on `127.0.0.1` on a free port.
    /// Must be called inside a Tokio runtime.
    pub async fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let (sender, spans) = watch::channel(Vec::new());
        let service = TraceServiceServer::new(Collector { spans: sender });
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let server = tokio::spawn(async move {
            // Errors end the task; the test then sees no spans and says so.
            let _ = tonic::transport::Server::builder()
                .serve_with_incoming(service, incoming)
                .await;
        });
        Ok(Self {
            addr,
            spans,
            server,
        })
    }

    /// The socket address the receiver listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, for `telemetry.collector_addr`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The spans received so far, in arrival order.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.borrow().clone()
    }

    /// Waits until at least `count` spans arrived or `timeout` passed, and
    /// returns the spans received by then (fewer than `count` on timeout).
    pub async fn wait_for_spans(&self, count: usize, timeout: Duration) -> Vec<ReceivedSpan> {
        let mut spans = self.spans.clone();
        // The sender lives as long as the server task; if that ended, what
        // arrived is all there will be.
        let _ = tokio::time::timeout(timeout, spans.wait_for(|spans| spans.len() >= count)).await;
        self.spans()
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        // Not a graceful shutdown: that would wait for the exporter, which
        // keeps its connection open, to hang up.
        self.server.abort();
    }
}

/// The `TraceService` implementation behind [`OtlpReceiver`].
struct Collector {
    spans: watch::Sender<Vec<ReceivedSpan>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let received = flatten(request.into_inner());
        self.spans.send_modify(|spans| spans.extend(received));
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// One [`ReceivedSpan`] per span of every resource and scope in `request`.
fn flatten(request: ExportTraceServiceRequest) -> Vec<ReceivedSpan> {
    let mut received = Vec::new();
    for resource_spans in request.resource_spans {
        let service_name = resource_spans.resource.and_then(|resource| {
            resource
                .attributes
                .into_iter()
                .find(|attribute| attribute.key == "service.name")
                .and_then(|attribute| attribute.value)
                .map(|value| render(&value))
        });
        for scope_spans in resource_spans.scope_spans {
            for span in scope_spans.spans {
                received.push(ReceivedSpan {
                    kind: span.kind().as_str_name().to_owned(),
                    name: span.name,
                    trace_id: hex::encode(&span.trace_id),
                    span_id: hex::encode(&span.span_id),
                    parent_span_id: (!span.parent_span_id.is_empty())
                        .then(|| hex::encode(&span.parent_span_id)),
                    service_name: service_name.clone(),
                    attributes: attributes(span.attributes),
                });
            }
        }
    }
    received
}

fn attributes(attributes: Vec<KeyValue>) -> BTreeMap<String, String> {
    attributes
        .into_iter()
        .map(|attribute| {
            let value = attribute.value.as_ref().map(render).unwrap_or_default();
            (attribute.key, value)
        })
        .collect()
}

/// An attribute value as text: strings as they are, the rest as literals.
fn render(value: &AnyValue) -> String {
    match &value.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BytesValue(bytes)) => hex::encode(bytes),
        Some(any_value::Value::ArrayValue(array)) => {
            let items: Vec<String> = array.values.iter().map(render).collect();
            format!("[{}]", items.join(", "))
        }
        Some(any_value::Value::KvlistValue(list)) => {
            let items: Vec<String> = list
                .values
                .iter()
                .map(|kv| {
                    let value = kv.value.as_ref().map(render).unwrap_or_default();
                    format!("{}={value}", kv.key)
                })
                .collect();
            format!("{{{}}}", items.join(", "))
        }
        // Profiling's string-table references and unset values.
        _ => String::new(),
    }
}
