//! The one error type of the bus. Every message names the stream, subject, consumer, bucket or
//! key involved, so a log line alone says where things went wrong.

use std::time::Duration;

/// Boxed source of errors coming from the NATS client, whose error types differ per operation.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong on the bus.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is unusable (checked before any connection is made).
    #[error("invalid bus config: {0}")]
    Config(String),

    /// The server refused the connection, or the handshake failed.
    #[error("cannot connect to nats at {url}: {source}")]
    Connect {
        /// The configured server URL.
        url: String,
        /// Cause reported by the client.
        #[source]
        source: BoxError,
    },

    /// The server did not answer within the connect timeout.
    #[error("cannot connect to nats at {url}: no answer within {timeout:?}")]
    ConnectTimeout {
        /// The configured server URL.
        url: String,
        /// The configured `connect_timeout`.
        timeout: Duration,
    },

    /// A stream could not be created or updated to match the topology.
    #[error("cannot create or update stream {stream}: {source}")]
    Stream {
        /// Stream name.
        stream: String,
        /// Cause reported by the server.
        #[source]
        source: BoxError,
    },

    /// The envelope cannot be put on the bus: no id, no body, or its body lacks the fields its
    /// subject is built from.
    #[error("envelope {id:?} cannot be published: {reason}")]
    InvalidEnvelope {
        /// The envelope id (may be empty, which is one of the reasons).
        id: String,
        /// What is missing or malformed.
        reason: String,
    },

    /// Sending the message or waiting for its PubAck failed.
    #[error("cannot publish envelope {id} to {subject}: {source}")]
    Publish {
        /// The envelope id.
        id: String,
        /// The subject it was sent to.
        subject: String,
        /// Cause reported by the client or server.
        #[source]
        source: BoxError,
    },

    /// A consumer filter subject lies outside the stream it is created on.
    #[error("filter subject {filter} is outside stream {stream} (subjects: {subjects})")]
    FilterOutsideStream {
        /// The offending filter.
        filter: String,
        /// Stream name.
        stream: String,
        /// The stream's subjects, comma separated.
        subjects: String,
    },

    /// A durable consumer could not be created or updated.
    #[error("cannot create or update consumer {consumer} on stream {stream}: {source}")]
    Consumer {
        /// Durable name.
        consumer: String,
        /// Stream name.
        stream: String,
        /// Cause reported by the server.
        #[source]
        source: BoxError,
    },

    /// Pulling messages from a consumer failed.
    #[error("cannot pull from consumer {consumer} on stream {stream}: {source}")]
    Pull {
        /// Durable name.
        consumer: String,
        /// Stream name.
        stream: String,
        /// Cause reported by the client or server.
        #[source]
        source: BoxError,
    },

    /// An ack, nak, term or progress signal was not confirmed by the server.
    #[error("cannot {action} message {stream_sequence} on {subject}: {source}")]
    Ack {
        /// `ack`, `nak`, `term` or `in_progress`.
        action: &'static str,
        /// Subject of the message.
        subject: String,
        /// Its sequence in the stream.
        stream_sequence: u64,
        /// Cause reported by the client.
        #[source]
        source: BoxError,
    },

    /// A key-value bucket could not be created, or an operation on it failed for a reason other
    /// than a revision conflict.
    #[error("kv bucket {bucket}{}: {source}", key.as_deref().map(|k| format!(" key {k}")).unwrap_or_default())]
    Kv {
        /// Bucket name.
        bucket: String,
        /// The key, when the operation had one.
        key: Option<String>,
        /// Cause reported by the client or server.
        #[source]
        source: BoxError,
    },

    /// Compare-and-set lost: the key changed (or, for `create`, already exists) since it was read.
    /// Re-read the entry and retry the decision.
    #[error("kv bucket {bucket} key {key}: revision conflict (expected {})", expected.map(|r| format!("revision {r}")).unwrap_or_else(|| "no entry".into()))]
    Conflict {
        /// Bucket name.
        bucket: String,
        /// The key.
        key: String,
        /// The revision the caller expected; `None` for `create` (expected the key to be absent).
        expected: Option<u64>,
    },
}

impl Error {
    /// True for a lost compare-and-set on a key-value bucket (retry after re-reading).
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Conflict { .. })
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
