//! Why the scheduler could not start, or stopped.

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
    /// The blob store failed or is misconfigured.
    #[error("storage: {0}")]
    Blob(#[from] aloft_blob::BlobError),
    /// A stored closure, state or command does not decode.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// A core NATS publish failed.
    #[error("publish failed: {0}")]
    Publish(String),
    /// Metadata's admin API failed (unreachable, or an unexpected answer); the message is retried.
    #[error("metadata: {0}")]
    Metadata(String),
    /// A timer message arrived early: put it back for this long.
    #[error("not due for {0:?}")]
    NotYet(std::time::Duration),
    /// The service task panicked or was aborted.
    #[error("scheduler task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}
