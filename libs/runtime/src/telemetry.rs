//! Logging and tracing set-up. Human-readable lines by default, JSON lines for log shippers; the
//! level comes from `ALOFT_LOG` (falling back to `RUST_LOG`, then `info`).
//!
//! Traces: every service continues the W3C trace context it receives (gRPC metadata, NATS
//! headers) and passes it on, so one execution is one trace from `CreateExecution` through the
//! scheduler and executors back to metadata's event sink. Spans are exported over OTLP/gRPC when
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT` is set, and nowhere
//! otherwise; trace ids are kept either way, so log lines can carry them (`trace_id` on the
//! spans opened at message and request boundaries).

use std::collections::HashMap;

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde::{Deserialize, Serialize};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Environment variables naming the OTLP endpoint, most specific first (OpenTelemetry's own).
pub const OTLP_ENDPOINT_VARS: [&str; 2] = ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"];

/// Log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One readable line per event.
    #[default]
    Text,
    /// One JSON object per event.
    Json,
}

/// Tracing could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The OTLP exporter rejected its configuration (for example a malformed endpoint).
    #[error("otlp exporter for {endpoint}: {source}")]
    Exporter {
        /// The endpoint configured.
        endpoint: String,
        /// Why it was refused.
        source: opentelemetry_otlp::ExporterBuildError,
    },
}

/// What [`init`] set up; [`Telemetry::shutdown`] flushes spans not exported yet.
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Exports what is buffered and stops the exporter. Call it last, after the service stopped,
    /// from outside the async runtime's workers (the exporter runs on them).
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::debug!(error = %e, "tracer provider shutdown");
        }
    }
}

/// The OTLP endpoint from the environment, if any.
pub fn otlp_endpoint_from_env() -> Option<String> {
    OTLP_ENDPOINT_VARS.iter().find_map(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()))
}

/// Installs the global subscriber (logs + trace context) once; later calls (tests, embedded mode)
/// keep the first one. Must run inside a Tokio runtime when an OTLP endpoint is configured: the
/// exporter runs on it.
pub fn init(service: &str, format: LogFormat) -> Result<Telemetry, TelemetryError> {
    let filter = std::env::var("ALOFT_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "info".to_string());
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let provider = tracer_provider(service, otlp_endpoint_from_env().as_deref())?;
    install_propagator();
    let otel = layer(&provider);
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    let _ = match format {
        LogFormat::Text => registry.with(tracing_subscriber::fmt::layer().with_target(true)).try_init(),
        LogFormat::Json => registry.with(tracing_subscriber::fmt::layer().json().with_target(true)).try_init(),
    };
    Ok(Telemetry { provider })
}

/// W3C trace context (`traceparent`/`tracestate`) as the global propagator; OpenTelemetry's
/// default is a no-op that would silently drop every context.
pub fn install_propagator() {
    opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());
}

/// A tracer provider naming `service`; exporting over OTLP/gRPC to `endpoint` in batches on the
/// current Tokio runtime, or not exporting at all without one.
pub fn tracer_provider(service: &str, endpoint: Option<&str>) -> Result<SdkTracerProvider, TelemetryError> {
    let resource = opentelemetry_sdk::Resource::builder().with_service_name(service.to_string()).build();
    let builder = SdkTracerProvider::builder().with_resource(resource);
    let Some(endpoint) = endpoint else { return Ok(builder.build()) };
    use opentelemetry_otlp::WithExportConfig as _;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint.to_string())
        .build()
        .map_err(|source| TelemetryError::Exporter { endpoint: endpoint.to_string(), source })?;
    // The thread-based batch processor polls the exporter without a Tokio reactor, which the
    // tonic exporter needs (it would fail every export); this one runs on the runtime.
    let processor = opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
        exporter,
        opentelemetry_sdk::runtime::Tokio,
    )
    .build();
    Ok(builder.with_span_processor(processor).build())
}

/// The `tracing` layer turning spans into OpenTelemetry spans of `provider`.
pub fn layer<S>(
    provider: &SdkTracerProvider,
) -> tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::SdkTracer>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_opentelemetry::layer().with_tracer(provider.tracer("aloft"))
}

/// The W3C headers (`traceparent`, and `tracestate` when there is one) of the current span; empty
/// when no tracing layer is installed or the span is not sampled.
pub fn current_headers() -> HashMap<String, String> {
    let cx = tracing::Span::current().context();
    let mut headers = HashMap::new();
    if cx.span().span_context().is_valid() {
        opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut MapInjector(&mut headers)));
    }
    headers
}

/// Makes `span` a child of the W3C context in `headers` (names compared case-insensitively), and
/// records its `trace_id` field when it declares one. Call it right after creating the span,
/// before entering it. Headers without a valid context leave the span a root.
pub fn continue_trace(span: &tracing::Span, headers: &HashMap<String, String>) {
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&MapExtractor(headers)));
    if parent.span().span_context().is_valid() {
        // Only fails when the span was already entered; then it keeps the parent it has.
        let _ = span.set_parent(parent);
    }
    record_trace_id(span);
}

/// Fills the `trace_id` field of `span` (declared as `trace_id = tracing::field::Empty`) with the
/// span's OpenTelemetry trace id, so its log lines carry it.
pub fn record_trace_id(span: &tracing::Span) {
    if let Some(id) = trace_id(span) {
        span.record("trace_id", id.as_str());
    }
}

/// The trace id of `span` as 32 hex digits, if it has a valid one.
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

struct MapInjector<'a>(&'a mut HashMap<String, String>);

impl Injector for MapInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_string(), value);
    }
}

struct MapExtractor<'a>(&'a HashMap<String, String>);

impl Extractor for MapExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    /// A subscriber with the OpenTelemetry layer for the closure only.
    fn with_tracing<T>(f: impl FnOnce() -> T) -> T {
        install_propagator();
        let provider = tracer_provider("test", None).unwrap();
        let subscriber = tracing_subscriber::registry().with(layer(&provider));
        tracing::subscriber::with_default(subscriber, f)
    }

    #[test]
    fn continues_and_passes_on_a_remote_trace() {
        with_tracing(|| {
            let span = tracing::info_span!("consume", trace_id = tracing::field::Empty);
            continue_trace(&span, &HashMap::from([("Traceparent".to_string(), PARENT.to_string())]));
            assert_eq!(trace_id(&span).as_deref(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
            let headers = span.in_scope(current_headers);
            let out = headers.get("traceparent").expect("traceparent injected");
            assert!(out.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"), "{out}");
            // a new span id: this span is the parent of what it publishes
            assert!(!out.contains("00f067aa0ba902b7"), "{out}");
        });
    }

    #[test]
    fn a_span_without_context_starts_a_trace() {
        with_tracing(|| {
            let span = tracing::info_span!("root", trace_id = tracing::field::Empty);
            continue_trace(&span, &HashMap::from([("traceparent".to_string(), "garbage".to_string())]));
            let id = trace_id(&span).expect("root spans get a trace id");
            assert_eq!(id.len(), 32);
            assert_ne!(id, "4bf92f3577b34da6a3ce929d0e0e4736");
        });
    }

    #[test]
    fn nothing_to_pass_on_without_a_tracing_layer() {
        let span = tracing::info_span!("plain");
        assert!(span.in_scope(current_headers).is_empty());
    }
}
