//! Local directory backend: uris are plain absolute paths under the store root.
//!
//! Blocking `std::fs` calls run on tokio's blocking pool, one hop per operation (rather than one
//! per `tokio::fs` call). Writes go to a temp file in the destination directory and are renamed
//! into place, so readers see the old or the new object, never a partial one. Empty directories
//! are left behind by `delete`: pruning them would race with concurrent writers creating files in
//! them, and they cost nothing.

use std::fs::{self, File};
use std::io::{self, ErrorKind, Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use md5::{Digest, Md5};

use crate::ObjectMeta;
use crate::error::{BlobError, Result};
use crate::uri;

/// Temp files start with this; `list` skips them, so a crash mid-write never exposes one.
pub(crate) const TEMP_PREFIX: &str = ".aloft-tmp-";

#[derive(Debug)]
pub(crate) struct LocalStore {
    /// Lexically normalised root without a trailing `/` (`""` stands for `/`). Not canonicalised:
    /// callers build uris from the configured root, and a symlinked root must keep matching.
    root: String,
    fsync: bool,
}

impl LocalStore {
    /// Creates the root directory if it is missing.
    pub(crate) async fn new(root: &str, fsync: bool) -> Result<Self> {
        uri::check_local_path(root).map_err(|reason| BlobError::config("blob.root", reason))?;
        let root = root.trim_end_matches('/').to_string();
        let dir = if root.is_empty() { "/".to_string() } else { root.clone() };
        blocking("create store root", &dir.clone(), move || {
            fs::create_dir_all(&dir).map_err(|e| BlobError::io("create store root", &dir, e))
        })
        .await?;
        Ok(Self { root, fsync })
    }

    pub(crate) fn root(&self) -> &str {
        if self.root.is_empty() { "/" } else { &self.root }
    }

    /// The path of an object uri: absolute, no scheme, no `.`/`..`/empty segments, under the root.
    pub(crate) fn object_path(&self, uri: &str) -> Result<PathBuf> {
        self.check(uri, false)?;
        if uri.len() <= self.root.len() + 1 {
            return Err(BlobError::invalid_uri(uri, "names the store root, not an object"));
        }
        Ok(PathBuf::from(uri))
    }

    fn check(&self, uri: &str, prefix: bool) -> Result<()> {
        if uri.contains("://") {
            return Err(BlobError::invalid_uri(
                uri,
                format!("local blob uris are plain absolute paths (store root {}), not scheme uris", self.root()),
            ));
        }
        if !uri.starts_with('/') {
            return Err(BlobError::invalid_uri(uri, "is not an absolute path"));
        }
        if !prefix && uri.ends_with('/') {
            return Err(BlobError::invalid_uri(uri, "ends with '/', which names a directory, not an object"));
        }
        uri::check_key_segments(&uri[1..], prefix).map_err(|reason| BlobError::invalid_uri(uri, reason))?;
        let inside = uri == self.root || uri.strip_prefix(self.root.as_str()).is_some_and(|rest| rest.starts_with('/'));
        if !inside {
            return Err(BlobError::OutsideRoot { uri: uri.to_string(), root: self.root().to_string() });
        }
        Ok(())
    }

    pub(crate) async fn put(&self, uri: &str, data: Bytes) -> Result<()> {
        let path = self.object_path(uri)?;
        let fsync = self.fsync;
        let owned = uri.to_string();
        blocking("write blob", uri, move || {
            write_atomic(&path, fsync, |file| file.write_all(&data)).map_err(|e| BlobError::io("write blob", &owned, e))
        })
        .await
    }

    pub(crate) async fn get(&self, uri: &str) -> Result<Bytes> {
        let path = self.object_path(uri)?;
        let owned = uri.to_string();
        blocking("read blob", uri, move || {
            fs::read(&path).map(Bytes::from).map_err(|e| read_error("read blob", &owned, e))
        })
        .await
    }

    pub(crate) async fn head(&self, uri: &str) -> Result<Option<ObjectMeta>> {
        let path = self.object_path(uri)?;
        let owned = uri.to_string();
        blocking("stat blob", uri, move || match fs::metadata(&path) {
            // md5 is not stored: computing it on every head would read whole code bundles just to
            // answer "does it exist"; callers that need it ask `md5`.
            Ok(meta) if meta.is_file() => Ok(Some(ObjectMeta { size: meta.len(), md5: None })),
            Ok(_) => Ok(None),
            Err(e) => match read_error("stat blob", &owned, e) {
                BlobError::NotFound { .. } => Ok(None),
                other => Err(other),
            },
        })
        .await
    }

    pub(crate) async fn md5(&self, uri: &str) -> Result<Option<String>> {
        let path = self.object_path(uri)?;
        let owned = uri.to_string();
        blocking("hash blob", uri, move || match md5_file(&path) {
            Ok(hex) => Ok(Some(hex)),
            Err(e) => match read_error("hash blob", &owned, e) {
                BlobError::NotFound { .. } => Ok(None),
                other => Err(other),
            },
        })
        .await
    }

    /// Every object whose uri starts with `prefix` (plain string prefix, as on S3), sorted.
    pub(crate) async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        self.check(prefix, true)?;
        // Only the directory holding the last (partial) segment can contain matches.
        let start = if prefix == self.root || prefix.ends_with('/') {
            prefix.trim_end_matches('/').to_string()
        } else {
            prefix.rsplit_once('/').map(|(dir, _)| dir.to_string()).unwrap_or_default()
        };
        let prefix = prefix.to_string();
        blocking("list blobs", &prefix.clone(), move || {
            let mut out = Vec::new();
            let start = if start.is_empty() { "/".to_string() } else { start };
            walk(Path::new(&start), &prefix, &mut out).map_err(|e| BlobError::io("list blobs", &prefix, e))?;
            out.sort();
            Ok(out)
        })
        .await
    }

    /// Deleting a missing object succeeds, as on S3.
    pub(crate) async fn delete(&self, uri: &str) -> Result<()> {
        let path = self.object_path(uri)?;
        let owned = uri.to_string();
        blocking("delete blob", uri, move || match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) => match read_error("delete blob", &owned, e) {
                BlobError::NotFound { .. } => Ok(()),
                other => Err(other),
            },
        })
        .await
    }

    pub(crate) async fn copy(&self, src: &str, dst: &str) -> Result<()> {
        let src_path = self.object_path(src)?;
        let dst_path = self.object_path(dst)?;
        let (src, dst) = (src.to_string(), dst.to_string());
        let fsync = self.fsync;
        blocking("copy blob", &dst.clone(), move || {
            let mut source = open_file(&src_path).map_err(|e| read_error("read blob", &src, e))?;
            write_atomic(&dst_path, fsync, |file| io::copy(&mut source, file).map(drop))
                .map_err(|e| BlobError::io("write blob", &dst, e))
        })
        .await
    }

    pub(crate) async fn put_file(&self, uri: &str, local: &Path) -> Result<()> {
        let dst_path = self.object_path(uri)?;
        let local = local.to_path_buf();
        let dst = uri.to_string();
        let fsync = self.fsync;
        blocking("write blob", uri, move || {
            let mut source = open_file(&local).map_err(|e| BlobError::io("read local file", local.display(), e))?;
            write_atomic(&dst_path, fsync, |file| io::copy(&mut source, file).map(drop))
                .map_err(|e| BlobError::io("write blob", &dst, e))
        })
        .await
    }

    pub(crate) async fn get_to_file(&self, uri: &str, local: &Path) -> Result<()> {
        let src_path = self.object_path(uri)?;
        let local = local.to_path_buf();
        let src = uri.to_string();
        let fsync = self.fsync;
        blocking("read blob", uri, move || {
            let mut source = open_file(&src_path).map_err(|e| read_error("read blob", &src, e))?;
            write_atomic(&local, fsync, |file| io::copy(&mut source, file).map(drop))
                .map_err(|e| BlobError::io("write local file", local.display(), e))
        })
        .await
    }
}

/// Opens a regular file; a directory counts as missing, as a "directory" key does on S3.
fn open_file(path: &Path) -> io::Result<File> {
    let file = File::open(path)?;
    if file.metadata()?.is_dir() {
        return Err(io::Error::from(ErrorKind::IsADirectory));
    }
    Ok(file)
}

/// "Not there" in every form a path can take it maps to `NotFound`; the rest stays an i/o error.
fn read_error(op: &'static str, uri: &str, error: io::Error) -> BlobError {
    match error.kind() {
        ErrorKind::NotFound | ErrorKind::IsADirectory | ErrorKind::NotADirectory => {
            BlobError::NotFound { uri: uri.to_string() }
        }
        _ => BlobError::io(op, uri, error),
    }
}

/// Writes `path` through a temp file in the same directory (so the rename is atomic), creating
/// parent directories; removes the temp file on failure.
pub(crate) fn write_atomic(path: &Path, fsync: bool, fill: impl FnOnce(&mut File) -> io::Result<()>) -> io::Result<()> {
    let dir = path.parent().ok_or_else(|| io::Error::new(ErrorKind::InvalidInput, "path has no parent directory"))?;
    fs::create_dir_all(dir)?;
    let temp = temp_path(dir);
    let result = (|| {
        let mut file = File::create_new(&temp)?;
        fill(&mut file)?;
        if fsync {
            file.sync_all()?;
        }
        drop(file);
        fs::rename(&temp, path)?;
        if fsync {
            // the rename itself is only durable once the directory entry is
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// A fresh temp-file name in `dir`.
pub(crate) fn temp_path(dir: &Path) -> PathBuf {
    dir.join(format!("{TEMP_PREFIX}{}", uuid::Uuid::new_v4().simple()))
}

fn walk(dir: &Path, prefix: &str, out: &mut Vec<String>) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        // Names that are not UTF-8 cannot be expressed as uris; nothing we write has them.
        let Some(name) = name.to_str() else { continue };
        if name.starts_with(TEMP_PREFIX) {
            continue;
        }
        let path = entry.path();
        let Some(path_str) = path.to_str() else {
            continue;
        };
        let file_type = entry.file_type()?;
        let is_dir = file_type.is_dir() || (file_type.is_symlink() && path.is_dir());
        if is_dir {
            // Descend only where matches can be: below the prefix, or on the way to it.
            if path_str.starts_with(prefix) || prefix.starts_with(&format!("{path_str}/")) {
                walk(&path, prefix, out)?;
            }
        } else if path_str.starts_with(prefix) {
            out.push(path_str.to_string());
        }
    }
    Ok(())
}

/// Hex md5 of a file, read in 1 MiB chunks.
pub(crate) fn md5_file(path: &Path) -> io::Result<String> {
    let mut file = open_file(path)?;
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Runs blocking file work off the async threads; a panic inside is re-raised here.
pub(crate) async fn blocking<T: Send + 'static>(
    op: &'static str,
    what: &str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(BlobError::io(op, what, io::Error::other(e))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(root: &str) -> LocalStore {
        LocalStore { root: root.trim_end_matches('/').to_string(), fsync: false }
    }

    #[test]
    fn object_paths_stay_inside_the_root() {
        let s = store("/data/root");
        assert!(s.object_path("/data/root/a/b.pb").is_ok());
        assert!(matches!(s.object_path("/data/root/../x"), Err(BlobError::InvalidUri { .. })));
        assert!(matches!(s.object_path("/data/rootx/a"), Err(BlobError::OutsideRoot { .. })));
        assert!(matches!(s.object_path("/etc/passwd"), Err(BlobError::OutsideRoot { .. })));
        assert!(matches!(s.object_path("/data/root"), Err(BlobError::InvalidUri { .. })));
        assert!(matches!(s.object_path("/data/root/"), Err(BlobError::InvalidUri { .. })));
        assert!(matches!(s.object_path("/data/root/a/"), Err(BlobError::InvalidUri { .. })));
        assert!(matches!(s.object_path("data/root/a"), Err(BlobError::InvalidUri { .. })));
        assert!(matches!(s.object_path("file:///data/root/a"), Err(BlobError::InvalidUri { .. })));
        assert!(matches!(s.object_path("s3://b/k"), Err(BlobError::InvalidUri { .. })));
    }

    #[test]
    fn filesystem_root_as_store_root() {
        let s = store("/");
        assert_eq!(s.root(), "/");
        assert!(s.object_path("/a").is_ok());
        assert!(s.check("/", true).is_ok());
    }

    #[test]
    fn escape_error_names_uri_and_root() {
        let message = store("/data/root").object_path("/etc/passwd").unwrap_err().to_string();
        assert_eq!(message, "blob uri /etc/passwd is outside the store root /data/root");
    }
}
