//! `aloft-blob`: one blob-store interface over two backends, used by every Aloft service to read
//! and write execution inputs, outputs, errors, decks and code bundles in Flyte's layout
//! (`<prefix>/<project>/<domain>/<exec>/<node>/data/inputs.pb`, ...).
//!
//! * `s3://bucket/key` through aws-sdk-s3 (AWS S3 or any S3-compatible server);
//! * a local directory whose uris are plain absolute paths (`/var/lib/aloft/data/...`). Never
//!   `file://`: these uris end up inside Flyte literals and flytekit reads `file://` values as
//!   missing files.
//!
//! A [`BlobStore`] is built once from a [`BlobConfig`] and cloned freely (it is an `Arc`). Uris are
//! plain strings so they can be stored in protos and databases as-is; [`join`] builds them.
//!
//! This crate owns storage access only: it knows nothing about executions, protos or the layout
//! beyond joining paths, and it never logs object contents or secrets.

mod config;
mod error;
mod local;
mod s3;
mod uri;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

pub use config::{BlobConfig, BlobKind, DEFAULT_LOCAL_ROOT};
pub use error::{BlobError, Result};
pub use s3::{MD5_METADATA, MULTIPART_THRESHOLD};
pub use uri::join;

/// What `head` knows about an object without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Size in bytes.
    pub size: u64,
    /// Lowercase hex md5 when known for free: S3 single-part objects (the ETag) and objects
    /// written by [`BlobStore::put_file`] as multipart (metadata [`MD5_METADATA`]). Always `None`
    /// for the local backend, which stores no checksums; use [`BlobStore::md5`] when it matters.
    pub md5: Option<String>,
}

/// A blob store over one backend. Cheap to clone; safe to share across tasks.
#[derive(Clone)]
pub struct BlobStore {
    backend: Arc<Backend>,
}

// An enum rather than a trait object: two backends, known at compile time, and callers get a
// concrete type without `dyn` or `async_trait` in their signatures.
#[derive(Debug)]
enum Backend {
    Local(local::LocalStore),
    S3(s3::S3Store),
}

impl std::fmt::Debug for BlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobStore").field("kind", &self.kind()).field("root", &self.root()).finish()
    }
}

macro_rules! dispatch {
    ($self:ident, $store:ident => $call:expr) => {
        match &*$self.backend {
            Backend::Local($store) => $call,
            Backend::S3($store) => $call,
        }
    };
}

impl BlobStore {
    /// Validates `config` and builds the store. Local: creates the root directory. S3: loads
    /// region and credentials (static keys or the default AWS chain) without contacting the server.
    pub async fn from_config(config: &BlobConfig) -> Result<Self> {
        config.validate()?;
        let backend = match config.kind {
            BlobKind::Local => Backend::Local(local::LocalStore::new(&config.root, config.fsync).await?),
            BlobKind::S3 => Backend::S3(s3::S3Store::new(config).await?),
        };
        Ok(Self { backend: Arc::new(backend) })
    }

    /// Shorthand for a local store rooted at `root` (an absolute directory).
    pub async fn local(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref();
        let root =
            root.to_str().ok_or_else(|| BlobError::config("blob.root", format!("{} is not UTF-8", root.display())))?;
        Self::from_config(&BlobConfig::local(root)).await
    }

    /// The backend in use.
    pub fn kind(&self) -> BlobKind {
        match &*self.backend {
            Backend::Local(_) => BlobKind::Local,
            Backend::S3(_) => BlobKind::S3,
        }
    }

    /// The configured root without a trailing `/`: `/var/lib/aloft/data` or `s3://bucket/prefix`.
    /// Build object uris with `join(store.root(), "...")`.
    pub fn root(&self) -> &str {
        dispatch!(self, s => s.root())
    }

    /// [`join`] as a method, for call sites that already hold a store.
    pub fn join(&self, base: &str, relative: &str) -> String {
        join(base, relative)
    }

    /// Writes (or overwrites) the object atomically: readers see the old or the new content.
    #[tracing::instrument(level = "debug", skip_all, fields(uri, size))]
    pub async fn put(&self, uri: &str, data: impl Into<Bytes>) -> Result<()> {
        let data = data.into();
        tracing::Span::current().record("uri", uri).record("size", data.len());
        dispatch!(self, s => s.put(uri, data).await)
    }

    /// Reads the whole object; [`BlobError::NotFound`] when it does not exist.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn get(&self, uri: &str) -> Result<Bytes> {
        dispatch!(self, s => s.get(uri).await)
    }

    /// Size (and md5 when known for free) of the object, or `None` when it does not exist.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn head(&self, uri: &str) -> Result<Option<ObjectMeta>> {
        dispatch!(self, s => s.head(uri).await)
    }

    /// Whether the object exists.
    pub async fn exists(&self, uri: &str) -> Result<bool> {
        Ok(self.head(uri).await?.is_some())
    }

    /// Lowercase hex md5 of the object, or `None` when it does not exist. Free when `head`
    /// knows it; otherwise reads the object (local file or S3 download) to compute it.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn md5(&self, uri: &str) -> Result<Option<String>> {
        dispatch!(self, s => s.md5(uri).await)
    }

    /// Uris of all objects whose uri starts with `prefix` (a plain string prefix, as on S3:
    /// `.../a` matches `.../a/x` and `.../ab`), sorted. Paginates under the hood.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        dispatch!(self, s => s.list(prefix).await)
    }

    /// Deletes the object; deleting a missing object succeeds.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn delete(&self, uri: &str) -> Result<()> {
        dispatch!(self, s => s.delete(uri).await)
    }

    /// Copies `src` to `dst` inside the store (server-side on S3, up to 5 GiB);
    /// [`BlobError::NotFound`] names `src` when it does not exist.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn copy(&self, src: &str, dst: &str) -> Result<()> {
        dispatch!(self, s => s.copy(src, dst).await)
    }

    /// Uploads a local file without loading it into memory (S3: multipart above
    /// [`MULTIPART_THRESHOLD`]). Meant for code bundles and raw data.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn put_file(&self, uri: &str, local_path: &Path) -> Result<()> {
        dispatch!(self, s => s.put_file(uri, local_path).await)
    }

    /// Downloads the object to `local_path` without loading it into memory, creating parent
    /// directories; the file appears complete or not at all.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn get_to_file(&self, uri: &str, local_path: &Path) -> Result<()> {
        dispatch!(self, s => s.get_to_file(uri, local_path).await)
    }

    /// A URL accepting one HTTP `PUT` of the object until `expires` (at most 7 days), for clients
    /// without storage credentials (flytekit's `CreateUploadLocation`). With `content_md5` the
    /// `Content-MD5` header is part of the signature: the uploader must send
    /// `Content-MD5: base64(md5)` and the server rejects a body that does not match.
    ///
    /// `None` for the local backend, where the metadata service serves its own upload endpoint.
    pub async fn presign_put(
        &self,
        uri: &str,
        content_md5: Option<[u8; 16]>,
        expires: Duration,
    ) -> Result<Option<String>> {
        match &*self.backend {
            Backend::Local(s) => s.object_path(uri).map(|_| None),
            Backend::S3(s) => s.presign_put(uri, content_md5, expires).await.map(Some),
        }
    }

    /// A URL serving one HTTP `GET` of the object until `expires` (at most 7 days); `None` for
    /// the local backend.
    pub async fn presign_get(&self, uri: &str, expires: Duration) -> Result<Option<String>> {
        match &*self.backend {
            Backend::Local(s) => s.object_path(uri).map(|_| None),
            Backend::S3(s) => s.presign_get(uri, expires).await.map(Some),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync_clone<T: Send + Sync + Clone + 'static>() {}

    #[test]
    fn store_is_shareable() {
        assert_send_sync_clone::<BlobStore>();
    }
}
