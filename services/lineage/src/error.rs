//! Why the lineage service could not start, stopped, or refused a request; and the one mapping of
//! these to gRPC status codes.

/// A start-up, serving or request failure. Each message names what failed (the NATS URL, the
/// database, the config key, the node or field), so one line is enough.
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
    /// The service task panicked or was aborted.
    #[error("lineage task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    /// The database failed or is unreachable.
    #[error("database: {0}")]
    Database(String),
    /// A setting is unusable.
    #[error("config: {0}")]
    Config(String),
    /// The blob store failed (or is misconfigured).
    #[error("storage: {0}")]
    Storage(String),
    /// A dependency (metadata) is down; try again later.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The request is malformed, or declarations are invalid.
    #[error("{0}")]
    InvalidArgument(String),
    /// The node, run, model or declarations asked for do not exist.
    #[error("{0}")]
    NotFound(String),
    /// Someone else changed the same thing meanwhile.
    #[error("{0}")]
    Conflict(String),
    /// Stored or published data cannot be decoded.
    #[error("corrupt data: {0}")]
    Corrupt(String),
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::Database(e.to_string())
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        // never UNKNOWN: flytekit-style clients treat it as an authentication problem
        let code = match &e {
            Error::InvalidArgument(_) => tonic::Code::InvalidArgument,
            Error::NotFound(_) => tonic::Code::NotFound,
            Error::Conflict(_) => tonic::Code::Aborted,
            Error::Unavailable(_) | Error::Database(_) | Error::Bus(_) => tonic::Code::Unavailable,
            _ => tonic::Code::Internal,
        };
        tonic::Status::new(code, e.to_string())
    }
}
