//! Why the lineage service could not start, or stopped.

/// A start-up or serving failure. Each message names what failed (the NATS URL, the stream or
/// consumer, the listen address and its config key), so the one line the binary prints is enough.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// NATS is unreachable, or the streams or the durable consumer could not be set up.
    #[error(transparent)]
    Bus(#[from] aloft_bus::Error),
    /// The health listener could not be bound, or the gRPC server failed.
    #[error(transparent)]
    Serve(#[from] aloft_runtime::grpc::ServeError),
    /// The bound health listener has no local address (the OS refused to say).
    #[error("health.listen: cannot read the bound address: {0}")]
    LocalAddr(std::io::Error),
    /// The service task panicked or was aborted.
    #[error("lineage task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}
