//! Why the executor could not start, or stopped.

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
    /// The blob store could not be set up (bad settings, unreadable local root).
    #[error("storage: {0}")]
    Storage(#[from] aloft_blob::BlobError),
    /// The abort subject could not be subscribed to.
    #[error("cannot subscribe to {subject}: {source}")]
    Subscribe {
        /// `<subject_prefix>.ctl.abort`.
        subject: String,
        /// What NATS said.
        source: async_nats::SubscribeError,
    },
    /// A host resource the config names is unusable (the venv, the scratch directory).
    #[error("{key}: {message}")]
    Host {
        /// The config key.
        key: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The service task panicked or was aborted.
    #[error("executor task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}
