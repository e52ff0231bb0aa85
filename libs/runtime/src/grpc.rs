//! gRPC bootstrap: bind with an error that names the address and the key it came from, and the
//! standard `grpc.health.v1.Health` service every deployment probes.

use std::collections::HashMap;
use std::net::SocketAddr;

use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic::transport::Server;

use crate::Shutdown;
use crate::metrics::{GRPC_CODES, GrpcLabels, GrpcMethodLabels, GrpcMetrics};

/// Where a service serves the standard gRPC health service (`[health]` in every bus-driven
/// service's configuration).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// host:port serving `grpc.health.v1.Health` (port 0 picks a free port).
    pub listen: String,
}

impl HealthConfig {
    /// Health on `listen`; each service picks its own default port so all five can share a host.
    pub fn at(listen: &str) -> HealthConfig {
        HealthConfig { listen: listen.to_string() }
    }

    /// Checks the address form, naming `health.listen`.
    pub fn validate(&self) -> Result<(), crate::ConfigError> {
        validate_listen(&self.listen, "health.listen")
    }
}

impl Default for HealthConfig {
    /// Any free port on loopback; services override this with their own well-known port.
    fn default() -> Self {
        HealthConfig::at("127.0.0.1:0")
    }
}

/// A listen address must be `host:port`; whether the host resolves is left to binding, which
/// reports it with the same key.
pub fn validate_listen(listen: &str, key: &str) -> Result<(), crate::ConfigError> {
    match listen.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
        _ => Err(crate::ConfigError::invalid(key, format!("`{listen}` is not host:port"))),
    }
}

/// Binding or serving failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address is taken or not bindable.
    #[error("cannot listen on {addr} (config key `{key}`): {source}")]
    Bind {
        /// Address asked for.
        addr: String,
        /// Config key it came from.
        key: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The address does not parse.
    #[error("invalid address `{addr}` for config key `{key}`: expected host:port")]
    Address {
        /// The text.
        addr: String,
        /// Config key it came from.
        key: String,
    },
    /// The HTTP (metrics) server stopped with an error.
    #[error("http server on {addr} failed: {source}")]
    Http {
        /// Address served.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The server stopped with an error.
    #[error("grpc server on {addr} failed: {source}")]
    Transport {
        /// Address served.
        addr: SocketAddr,
        /// The transport error.
        source: tonic::transport::Error,
    },
}

/// Binds `addr` (port 0 picks a free port; read it back with `local_addr`).
pub async fn bind(addr: &str, key: &str) -> Result<TcpListener, ServeError> {
    let parsed: SocketAddr = tokio::net::lookup_host(addr)
        .await
        .ok()
        .and_then(|mut it| it.next())
        .ok_or_else(|| ServeError::Address { addr: addr.to_string(), key: key.to_string() })?;
    TcpListener::bind(parsed).await.map_err(|source| ServeError::Bind {
        addr: addr.to_string(),
        key: key.to_string(),
        source,
    })
}

/// The health service, with every registered service name reported as serving.
pub fn health(services: &[&str]) -> (tonic_health::server::HealthReporter, Routes) {
    let (reporter, service) = tonic_health::server::health_reporter();
    let routes = Routes::new(service);
    let r = reporter.clone();
    let names: Vec<String> = services.iter().map(|s| s.to_string()).collect();
    tokio::spawn(async move {
        for name in names {
            r.set_service_status(name, tonic_health::ServingStatus::Serving).await;
        }
    });
    (reporter, routes)
}

/// Serves `routes` on `listener` until `shutdown` is cancelled, then drains in-flight calls.
/// Every call continues the W3C trace context of its metadata; no metrics are recorded.
pub async fn serve(routes: Routes, listener: TcpListener, shutdown: Shutdown) -> Result<(), ServeError> {
    serve_with(routes, listener, shutdown, None).await
}

/// [`serve`], recording every call in `metrics` when given.
///
/// Keepalive: flytekit pings every 30 s even when idle; tonic accepts those by default, so no
/// ping policy is set here (a stricter one would answer with GOAWAY `too_many_pings`).
pub async fn serve_with(
    routes: Routes,
    listener: TcpListener,
    shutdown: Shutdown,
    metrics: Option<GrpcMetrics>,
) -> Result<(), ServeError> {
    let addr = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: "<bound listener>".into(),
        key: "grpc".into(),
        source,
    })?;
    Server::builder()
        .accept_http1(false)
        .layer(GrpcLayer { metrics })
        .add_routes(routes)
        // Without TCP_NODELAY, Nagle's algorithm holds small responses until the client's delayed
        // ACK: ~40 ms per unary call, which flytekit's polling multiplies by every node.
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown.cancelled_owned(),
        )
        .await
        .map_err(|source| ServeError::Transport { addr, source })
}

/// Tower layer of every Aloft gRPC server: a `grpc` span per call that continues the caller's
/// trace (`traceparent` metadata), and the request metrics.
#[derive(Clone, Default)]
pub struct GrpcLayer {
    metrics: Option<GrpcMetrics>,
}

impl GrpcLayer {
    /// A layer recording into `metrics` (or only tracing, with `None`).
    pub fn new(metrics: Option<GrpcMetrics>) -> GrpcLayer {
        GrpcLayer { metrics }
    }
}

impl<S> tower_layer::Layer<S> for GrpcLayer {
    type Service = GrpcService<S>;

    fn layer(&self, inner: S) -> GrpcService<S> {
        GrpcService { inner, metrics: self.metrics.clone() }
    }
}

/// The service [`GrpcLayer`] wraps around the routes.
#[derive(Clone)]
pub struct GrpcService<S> {
    inner: S,
    metrics: Option<GrpcMetrics>,
}

/// `/pkg.Service/Method` as (service, method); anything else as `unknown`.
fn split_path(path: &str) -> (String, String) {
    match path.strip_prefix('/').and_then(|p| p.split_once('/')) {
        Some((service, method)) if !service.is_empty() && !method.is_empty() && !method.contains('/') => {
            (service.to_string(), method.to_string())
        }
        _ => ("unknown".into(), "unknown".into()),
    }
}

/// The gRPC status of a response whose headers are all we see: errors of unary calls come as
/// "trailers-only" responses with `grpc-status` in the headers; a response without one is a
/// success whose status follows in the trailers (or an HTTP-level failure).
fn status_of(status: http::StatusCode, headers: &http::HeaderMap) -> &'static str {
    match headers.get("grpc-status").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok()) {
        Some(code) => GRPC_CODES.get(code).copied().unwrap_or("UNKNOWN"),
        None if status.is_success() => "OK",
        None => "UNAVAILABLE",
    }
}

impl<S, B, R> tower_service::Service<http::Request<B>> for GrpcService<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<R>> + Send,
    S::Future: Send + 'static,
    S::Error: 'static,
    R: 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        use tracing::Instrument as _;
        let started = std::time::Instant::now();
        let (service, method) = split_path(request.uri().path());
        // Probes arrive every few seconds: counted, but not traced.
        let span = if service == "grpc.health.v1.Health" {
            tracing::Span::none()
        } else {
            let span = tracing::info_span!(
                "grpc",
                otel.name = %format!("{service}/{method}"),
                otel.kind = "server",
                rpc.system = "grpc",
                rpc.service = %service,
                rpc.method = %method,
                trace_id = tracing::field::Empty,
            );
            let headers: HashMap<String, String> = request
                .headers()
                .iter()
                .filter(|(k, _)| matches!(k.as_str(), "traceparent" | "tracestate"))
                .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str().to_string(), v.to_string())))
                .collect();
            crate::telemetry::continue_trace(&span, &headers);
            span
        };
        let future = self.inner.call(request).instrument(span);
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let result = future.await;
            if let Some(m) = metrics {
                let code = match &result {
                    Ok(response) => status_of(response.status(), response.headers()),
                    Err(_) => "UNAVAILABLE",
                };
                // An unknown path gets UNIMPLEMENTED: label it `unknown` so no client can mint
                // label values (and series) by calling made-up methods.
                let (service, method) = if code == "UNIMPLEMENTED" {
                    ("unknown".to_string(), "unknown".to_string())
                } else {
                    (service, method)
                };
                m.duration
                    .get_or_create(&GrpcMethodLabels { service: service.clone(), method: method.clone() })
                    .observe(started.elapsed().as_secs_f64());
                m.requests.get_or_create(&GrpcLabels { service, method, code: code.to_string() }).inc();
            }
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_statuses() {
        assert_eq!(
            split_path("/flyteidl.service.AdminService/CreateExecution"),
            ("flyteidl.service.AdminService".to_string(), "CreateExecution".to_string())
        );
        for bad in ["", "/", "/x", "//M", "/a/b/c"] {
            assert_eq!(split_path(bad), ("unknown".to_string(), "unknown".to_string()), "{bad}");
        }
        let mut headers = http::HeaderMap::new();
        assert_eq!(status_of(http::StatusCode::OK, &headers), "OK");
        assert_eq!(status_of(http::StatusCode::BAD_GATEWAY, &headers), "UNAVAILABLE");
        headers.insert("grpc-status", http::HeaderValue::from_static("5"));
        assert_eq!(status_of(http::StatusCode::OK, &headers), "NOT_FOUND");
        headers.insert("grpc-status", http::HeaderValue::from_static("99"));
        assert_eq!(status_of(http::StatusCode::OK, &headers), "UNKNOWN");
    }

    #[tokio::test]
    async fn port_in_use_names_key_and_address() {
        let first = bind("127.0.0.1:0", "grpc.listen").await.unwrap();
        let addr = first.local_addr().unwrap().to_string();
        let err = bind(&addr, "grpc.listen").await.unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with(&format!("cannot listen on {addr} (config key `grpc.listen`)")), "{msg}");
    }

    #[tokio::test]
    async fn bad_address_is_named() {
        let err = bind("not an address", "grpc.listen").await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid address `not an address` for config key `grpc.listen`: expected host:port"
        );
    }
}
