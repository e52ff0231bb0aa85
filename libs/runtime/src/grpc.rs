//! gRPC bootstrap: bind with an error that names the address and the key it came from, and the
//! standard `grpc.health.v1.Health` service every deployment probes.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic::transport::Server;

use crate::Shutdown;

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
///
/// Keepalive: flytekit pings every 30 s even when idle; tonic accepts those by default, so no
/// ping policy is set here (a stricter one would answer with GOAWAY `too_many_pings`).
pub async fn serve(routes: Routes, listener: TcpListener, shutdown: Shutdown) -> Result<(), ServeError> {
    let addr = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: "<bound listener>".into(),
        key: "grpc".into(),
        source,
    })?;
    Server::builder()
        .accept_http1(false)
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

#[cfg(test)]
mod tests {
    use super::*;

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
