//! The start-up and shutdown plumbing shared by every Aloft service, so each service's `main.rs`
//! stays a few lines and every service behaves the same way on bad configuration and on SIGTERM.
//!
//! Owns: layered configuration (defaults < TOML file < `ALOFT_*` environment), logging and trace
//! context (OpenTelemetry), the shutdown signal, binding a listener with a clear error, the gRPC
//! health service, and the Prometheus registry and `/metrics` endpoint.
//! Must not: know any service's domain.

pub mod cli;
pub mod config;
pub mod grpc;
pub mod metrics;
pub mod shutdown;
pub mod telemetry;

pub use config::{ConfigError, Validate, load};
pub use shutdown::{Shutdown, shutdown_signal};
