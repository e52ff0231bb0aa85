//! The metadata service's error, and its one mapping to gRPC status codes.
//!
//! flytekit treats UNKNOWN and UNAUTHENTICATED as "log in" (it starts a browser flow), so no
//! variant maps to either: unexpected failures are INTERNAL.

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed or conflicts with what is stored.
    #[error("{0}")]
    InvalidArgument(String),
    /// The entity does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Exactly this entity exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// The request is valid but the state does not allow it.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The blob store failed.
    #[error("storage error: {0}")]
    Storage(#[from] aloft_blob::BlobError),
    /// Anything else that is our fault.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Shorthand.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Shorthand for an INVALID_ARGUMENT error.
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidArgument(msg.into())
    }
    /// Shorthand for a NOT_FOUND error.
    pub fn not_found(msg: impl Into<String>) -> Self {
        Error::NotFound(msg.into())
    }
}

impl From<aloft_compiler::CompileError> for Error {
    fn from(e: aloft_compiler::CompileError) -> Self {
        Error::InvalidArgument(e.to_string())
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        match &e {
            Error::InvalidArgument(m) => tonic::Status::invalid_argument(m),
            Error::NotFound(m) => tonic::Status::not_found(m),
            Error::AlreadyExists(m) => tonic::Status::already_exists(m),
            Error::FailedPrecondition(m) => tonic::Status::failed_precondition(m),
            Error::Database(_) | Error::Storage(_) | Error::Internal(_) => {
                tracing::error!(error = %e, "request failed");
                tonic::Status::internal(e.to_string())
            }
        }
    }
}
