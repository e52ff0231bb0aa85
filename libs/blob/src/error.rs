//! The one error type of the crate.

/// Everything a blob-store operation can fail with.
///
/// Each message names the uri (or config key) involved, so a caller can log it as-is. Causes are
/// rendered into the message rather than chained: callers map these to gRPC statuses and log lines
/// where only `to_string()` survives.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The object does not exist. Distinct so callers can treat "not written yet" as a state.
    #[error("blob not found: {uri}")]
    NotFound {
        /// The uri that was asked for.
        uri: String,
    },

    /// The uri is malformed or has the wrong form for this store (e.g. `s3://` given to a local
    /// store, a `..` segment, a trailing `/` where an object is expected).
    #[error("invalid blob uri {uri:?}: {reason}")]
    InvalidUri {
        /// The offending uri, verbatim.
        uri: String,
        /// Why it was rejected.
        reason: String,
    },

    /// A local path that is syntactically fine but lies outside the store root.
    #[error("blob uri {uri} is outside the store root {root}")]
    OutsideRoot {
        /// The offending uri.
        uri: String,
        /// The root of the local store.
        root: String,
    },

    /// A configuration value is invalid; `key` is the config key (e.g. `blob.root`).
    #[error("invalid blob config {key}: {reason}")]
    Config {
        /// The config key at fault.
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },

    /// A local filesystem operation failed.
    #[error("{op} {path}: {error}")]
    Io {
        /// What was being done ("write blob", "read local file", ...).
        op: &'static str,
        /// The uri or local path involved.
        path: String,
        /// The underlying error.
        error: std::io::Error,
    },

    /// The S3 service (or the transport to it) returned an error other than "not found".
    #[error("s3 {op} {uri}: {message}")]
    S3 {
        /// The S3 operation (`PutObject`, `ListObjectsV2`, ...).
        op: &'static str,
        /// The uri (or prefix) involved.
        uri: String,
        /// The service error code and message, or the transport error, with its causes.
        message: String,
    },
}

impl BlobError {
    /// True for [`BlobError::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, BlobError::NotFound { .. })
    }

    pub(crate) fn invalid_uri(uri: &str, reason: impl Into<String>) -> Self {
        BlobError::InvalidUri { uri: uri.to_string(), reason: reason.into() }
    }

    pub(crate) fn io(op: &'static str, path: impl std::fmt::Display, error: std::io::Error) -> Self {
        BlobError::Io { op, path: path.to_string(), error }
    }

    pub(crate) fn config(key: &'static str, reason: impl Into<String>) -> Self {
        BlobError::Config { key, reason: reason.into() }
    }
}

/// Result alias used throughout the crate.
pub type Result<T, E = BlobError> = std::result::Result<T, E>;
