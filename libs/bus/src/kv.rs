//! A JetStream key-value bucket with compare-and-set, for state any replica may update (the
//! scheduler's per-execution state).
//!
//! The pattern: `get` → decide → `update(key, new, entry.revision)`; on [`Error::Conflict`]
//! another replica won the race, so re-read and decide again. Revisions are stream sequences:
//! unique per bucket, increasing, but not contiguous per key.

use async_nats::jetstream::kv::{CreateErrorKind, Operation, Store, UpdateErrorKind};
use bytes::Bytes;

use crate::error::{Error, Result};

/// A key-value bucket.
#[derive(Clone)]
pub struct KvBucket {
    name: String,
    store: Store,
}

impl std::fmt::Debug for KvBucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvBucket").field("name", &self.name).finish()
    }
}

/// The current value of a key and the revision to pass to [`KvBucket::update`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvEntry {
    /// The stored bytes.
    pub value: Bytes,
    /// Revision of this value.
    pub revision: u64,
}

impl KvBucket {
    pub(crate) fn new(name: String, store: Store) -> KvBucket {
        KvBucket { name, store }
    }

    /// The full bucket name (`<stream_prefix>_<name>`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The current entry, or `None` when the key was never written or was deleted.
    pub async fn get(&self, key: &str) -> Result<Option<KvEntry>> {
        let entry = self.store.entry(key).await.map_err(|e| self.error(key, Box::new(e)))?;
        Ok(entry.and_then(|e| match e.operation {
            Operation::Put => Some(KvEntry { value: e.value, revision: e.revision }),
            Operation::Delete | Operation::Purge => None,
        }))
    }

    /// Writes a key that must not exist yet (or was deleted); returns its revision.
    /// [`Error::Conflict`] when it exists.
    pub async fn create(&self, key: &str, value: Bytes) -> Result<u64> {
        self.store.create(key, value).await.map_err(|e| match e.kind() {
            CreateErrorKind::AlreadyExists => self.conflict(key, None),
            _ => self.error(key, Box::new(e)),
        })
    }

    /// Replaces the value only if the key is still at `expected_revision`; returns the new
    /// revision. [`Error::Conflict`] when someone else wrote it since.
    pub async fn update(&self, key: &str, value: Bytes, expected_revision: u64) -> Result<u64> {
        self.store.update(key, value, expected_revision).await.map_err(|e| match e.kind() {
            UpdateErrorKind::WrongLastRevision => self.conflict(key, Some(expected_revision)),
            _ => self.error(key, Box::new(e)),
        })
    }

    /// Deletes the key only if it is still at `expected_revision`. [`Error::Conflict`] when
    /// someone else wrote it since.
    pub async fn delete(&self, key: &str, expected_revision: u64) -> Result<()> {
        self.store.delete_expect_revision(key, Some(expected_revision)).await.map_err(|e| match e.kind() {
            UpdateErrorKind::WrongLastRevision => self.conflict(key, Some(expected_revision)),
            _ => self.error(key, Box::new(e)),
        })
    }

    fn conflict(&self, key: &str, expected: Option<u64>) -> Error {
        Error::Conflict { bucket: self.name.clone(), key: key.to_string(), expected }
    }

    fn error(&self, key: &str, source: Box<dyn std::error::Error + Send + Sync>) -> Error {
        Error::Kv { bucket: self.name.clone(), key: Some(key.to_string()), source }
    }
}
