//! Prometheus metrics: one registry per service (not a global one, so the five services can run
//! in one process, as `aloft up` and the end-to-end tests do, and still expose their own series),
//! the `/metrics` HTTP endpoint, and the gRPC request metrics of [`crate::grpc::serve_with`].
//!
//! Naming follows the Prometheus rules: every name starts with `aloft_`, carries its base unit
//! (`_seconds`), and counters are registered without `_total` (the encoder appends it). Labels are
//! bounded: project, domain, launch plan, phase, gRPC method, stream and consumer names; never an
//! execution id, a user or an error text.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use serde::{Deserialize, Serialize};

use crate::Shutdown;
use crate::grpc::ServeError;

/// Prefix of every Aloft metric.
pub const PREFIX: &str = "aloft";

/// The Prometheus text exposition content type (version 0.0.4 is what every scraper accepts;
/// prometheus-client writes the OpenMetrics text, which is a superset Prometheus reads too).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Where a service serves `/metrics` (`[metrics]` in its configuration).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// host:port of the HTTP listener serving `/metrics` (port 0 picks a free port; deployments
    /// set a fixed one, see docker-compose.yml and deploy/k8s).
    pub listen: String,
}

impl Default for MetricsConfig {
    /// Any free loopback port: several services (and parallel tests) share a host, and a fixed
    /// default would make the second one fail to start.
    fn default() -> Self {
        MetricsConfig { listen: "127.0.0.1:0".into() }
    }
}

impl MetricsConfig {
    /// Checks the address form, naming `metrics.listen`.
    pub fn validate(&self) -> Result<(), crate::ConfigError> {
        crate::grpc::validate_listen(&self.listen, "metrics.listen")
    }
}

/// A new registry whose metrics are all named `aloft_*`, with `aloft_build_info{service,version}`
/// registered (value 1), so every scrape tells which build answered.
pub fn registry(service: &str) -> Registry {
    let mut registry = Registry::with_prefix(PREFIX);
    let info: Family<BuildLabels, Gauge> = Family::default();
    info.get_or_create(&BuildLabels { service: service.to_string(), version: env!("CARGO_PKG_VERSION").to_string() })
        .set(1);
    registry.register("build_info", "Which Aloft service and version serves these metrics (always 1)", info);
    registry
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BuildLabels {
    service: String,
    version: String,
}

/// The registry in the text format, as `/metrics` answers.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail; an error here would be a bug in a metric's encoder.
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, registry) {
        tracing::error!(error = %e, "cannot encode metrics");
    }
    out
}

/// `GET /metrics` over `registry`, to merge into a service's own router (metadata) or to serve
/// alone ([`serve`]).
pub fn router(registry: Arc<Registry>) -> Router {
    Router::new().route("/metrics", get(move || metrics_response(registry.clone())))
}

async fn metrics_response(registry: Arc<Registry>) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, CONTENT_TYPE)], encode(&registry)).into_response()
}

/// A bound metrics listener; [`MetricsServer::serve`] answers `/metrics` until shutdown.
pub struct MetricsServer {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
}

impl MetricsServer {
    /// Binds `config.listen` (errors name `metrics.listen`).
    pub async fn bind(config: &MetricsConfig) -> Result<MetricsServer, ServeError> {
        let listener = crate::grpc::bind(&config.listen, "metrics.listen").await?;
        let addr = listener.local_addr().map_err(|source| ServeError::Bind {
            addr: config.listen.clone(),
            key: "metrics.listen".into(),
            source,
        })?;
        Ok(MetricsServer { listener, addr })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves `/metrics` (and `/healthz`) until `shutdown` is cancelled. A scrape in flight at
    /// shutdown is finished.
    pub async fn serve(self, registry: Arc<Registry>, shutdown: Shutdown) -> Result<(), ServeError> {
        let app = router(registry).route("/healthz", get(|| async { "ok" }));
        let addr = self.addr;
        axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .map_err(|source| ServeError::Http { addr, source })
    }

    /// Spawns [`MetricsServer::serve`]; a failure is logged (losing metrics must not stop the
    /// service).
    pub fn spawn(self, registry: Arc<Registry>, shutdown: Shutdown) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            if let Err(e) = self.serve(registry, shutdown).await {
                tracing::error!(error = %e, "metrics server failed");
            }
        })
    }
}

/// Buckets for durations of whole executions and queue waits: 100 ms to 12 h.
pub const LONG_BUCKETS: &[f64] =
    &[0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 43200.0];

/// Buckets for request latencies: 1 ms to 10 s.
pub const SHORT_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// A histogram family whose histograms all have `buckets`.
pub fn histogram_family<L>(buckets: &'static [f64]) -> Family<L, Histogram, HistogramMaker>
where
    L: Clone + std::hash::Hash + Eq,
{
    Family::new_with_constructor(HistogramMaker(buckets))
}

/// Builds each histogram of a family with the same buckets.
#[derive(Debug, Clone, Copy)]
pub struct HistogramMaker(&'static [f64]);

impl prometheus_client::metrics::family::MetricConstructor<Histogram> for HistogramMaker {
    fn new_metric(&self) -> Histogram {
        Histogram::new(self.0.iter().copied())
    }
}

/// Labels of the gRPC request counter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct GrpcLabels {
    /// Fully qualified service, e.g. `flyteidl.service.AdminService` (`unknown` for paths no
    /// service answers, so a client cannot mint label values).
    pub service: String,
    /// Method, e.g. `CreateExecution`.
    pub method: String,
    /// gRPC status code name, e.g. `OK`, `NOT_FOUND`.
    pub code: String,
}

/// Labels of the gRPC latency histogram.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct GrpcMethodLabels {
    /// Fully qualified service.
    pub service: String,
    /// Method.
    pub method: String,
}

/// Server-side gRPC metrics: `aloft_grpc_server_requests_total{service,method,code}` and
/// `aloft_grpc_server_request_duration_seconds{service,method}`. Cheap to clone.
#[derive(Clone)]
pub struct GrpcMetrics {
    pub(crate) requests: Family<GrpcLabels, Counter>,
    pub(crate) duration: Family<GrpcMethodLabels, Histogram, HistogramMaker>,
}

impl GrpcMetrics {
    /// Registers both families.
    pub fn register(registry: &mut Registry) -> GrpcMetrics {
        let requests = Family::<GrpcLabels, Counter>::default();
        let duration = histogram_family::<GrpcMethodLabels>(SHORT_BUCKETS);
        registry.register(
            "grpc_server_requests",
            "gRPC requests handled, by service, method and status code (errors: code != OK)",
            requests.clone(),
        );
        registry.register_with_unit(
            "grpc_server_request_duration",
            "Time from a gRPC request's arrival to its response headers",
            Unit::Seconds,
            duration.clone(),
        );
        GrpcMetrics { requests, duration }
    }
}

/// gRPC status code names, indexed by code.
pub(crate) const GRPC_CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_get_total_and_units_suffixes() {
        let mut registry = registry("test");
        let grpc = GrpcMetrics::register(&mut registry);
        grpc.requests
            .get_or_create(&GrpcLabels { service: "s".into(), method: "M".into(), code: "OK".into() })
            .inc_by(2);
        grpc.duration.get_or_create(&GrpcMethodLabels { service: "s".into(), method: "M".into() }).observe(0.003);
        let text = encode(&registry);
        assert!(text.contains(r#"aloft_build_info{service="test",version="0.1.0"} 1"#), "{text}");
        assert!(text.contains(r#"aloft_grpc_server_requests_total{service="s",method="M",code="OK"} 2"#), "{text}");
        assert!(
            text.contains(r#"aloft_grpc_server_request_duration_seconds_bucket{le="0.005",service="s",method="M"} 1"#),
            "{text}"
        );
    }

    #[tokio::test]
    async fn serves_metrics_over_http() {
        let server = MetricsServer::bind(&MetricsConfig::default()).await.unwrap();
        let addr = server.local_addr();
        let shutdown = Shutdown::new();
        let task = server.spawn(Arc::new(registry("http-test")), shutdown.clone());
        let body = reqwest::get(format!("http://{addr}/metrics")).await.unwrap();
        assert_eq!(body.status(), 200);
        assert!(body.text().await.unwrap().contains(r#"service="http-test""#));
        shutdown.cancel();
        task.await.unwrap();
    }
}

/// Buckets for the steps on one task's path: 50 µs to 1 s.
pub const STAGE_BUCKETS: &[f64] =
    &[0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];

/// Label of [`Stages`]: which step (a fixed name chosen by the code, never data).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct StageLabels {
    /// e.g. `spawn`, `state_put`, `event_hop`.
    pub stage: &'static str,
}

/// Time spent in each step of a service's hot path (`aloft_<service>_stage_seconds{stage}`): where
/// one task's time goes, between bus hops, database writes, store I/O, process start and user
/// code. The workload benchmark (bench/workloads.py) reads its `_sum` and `_count`; operators
/// see which step grows under load. Cheap to clone; a clone observes into the same histograms.
#[derive(Clone, Debug)]
pub struct Stages(Family<StageLabels, Histogram, HistogramMaker>);

impl Default for Stages {
    fn default() -> Self {
        Stages(histogram_family(STAGE_BUCKETS))
    }
}

impl Stages {
    /// Registers the histograms as `<prefix>_stage_seconds` in `registry`.
    pub fn register(&self, registry: &mut Registry, prefix: &str) {
        registry.register_with_unit(
            format!("{prefix}_stage"),
            "Time spent in each step of the service's hot path",
            Unit::Seconds,
            self.0.clone(),
        );
    }

    /// Records `elapsed` for `stage`.
    pub fn observe(&self, stage: &'static str, elapsed: std::time::Duration) {
        self.0.get_or_create(&StageLabels { stage }).observe(elapsed.as_secs_f64());
    }

    /// Records the time since `start` for `stage` and returns now, so consecutive steps chain:
    /// `t = stages.lap("decode", t);`.
    pub fn lap(&self, stage: &'static str, start: std::time::Instant) -> std::time::Instant {
        let now = std::time::Instant::now();
        self.observe(stage, now - start);
        now
    }

    /// Records the time from a message's `created_at` (stamped by its publisher, on the same
    /// clock when services share a host) until now: the bus hop. Nothing for a missing, invalid or
    /// future stamp.
    pub fn since_stamp(&self, stage: &'static str, created_at: Option<prost_types::Timestamp>) {
        let stamped = created_at.and_then(|t| std::time::SystemTime::try_from(t).ok());
        if let Some(elapsed) = stamped.and_then(|t| std::time::SystemTime::now().duration_since(t).ok()) {
            self.observe(stage, elapsed);
        }
    }
}
