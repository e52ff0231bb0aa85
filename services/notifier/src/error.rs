//! Why the notifier could not start, or stopped.

/// A start-up or serving failure. Each message names what failed (the NATS URL, the database,
/// the listen address and its config key), so the one line the binary prints is enough.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// NATS is unreachable, or the streams or the durable consumer could not be set up.
    #[error(transparent)]
    Bus(#[from] aloft_bus::Error),
    /// The listener could not be bound, or the gRPC server failed.
    #[error(transparent)]
    Serve(#[from] aloft_runtime::grpc::ServeError),
    /// The bound listener has no local address (the OS refused to say).
    #[error("health.listen: cannot read the bound address: {0}")]
    LocalAddr(std::io::Error),
    /// The delivery database is unreachable or its migrations failed.
    #[error(transparent)]
    Database(#[from] crate::adapters::store::StoreError),
    /// `metadata.endpoint` is not a usable URI.
    #[error("{0}")]
    Metadata(String),
    /// The Slack HTTP client could not be built.
    #[error(transparent)]
    Slack(#[from] crate::adapters::slack::ClientError),
    /// The service task panicked or was aborted.
    #[error("notifier task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}
