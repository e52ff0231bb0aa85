//! S3 backend (AWS S3 or any S3-compatible server) through aws-sdk-s3.
//!
//! Every write carries `Content-MD5`, so the server rejects corrupted bodies and single-part
//! objects get their md5 as ETag. Multipart uploads (files above [`MULTIPART_THRESHOLD`]) store the
//! whole-object md5 as user metadata [`MD5_METADATA`], because their ETag is not an md5.

use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::meta::region::RegionProviderChain;
use aws_credential_types::Credentials;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::{Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use md5::{Digest, Md5};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::ObjectMeta;
use crate::config::BlobConfig;
use crate::error::{BlobError, Result};
use crate::local;
use crate::uri;

/// Files larger than this go up as multipart uploads.
pub const MULTIPART_THRESHOLD: u64 = 16 * 1024 * 1024;
/// Part size of multipart uploads (grown for files that would need more than 10 000 parts).
const PART_SIZE: u64 = 16 * 1024 * 1024;
/// S3's limit on parts per upload.
const MAX_PARTS: u64 = 10_000;
/// Parts in flight at once: enough to fill a link, bounded memory (parts are buffered to hash them).
const PART_CONCURRENCY: usize = 4;
/// User-metadata key (sent as `x-amz-meta-aloft-md5`) holding the hex md5 of multipart objects.
pub const MD5_METADATA: &str = "aloft-md5";
/// Fallback region: S3-compatible servers accept any, and AWS resolves buckets from us-east-1.
const FALLBACK_REGION: &str = "us-east-1";

#[derive(Debug)]
pub(crate) struct S3Store {
    client: Client,
    /// `s3://bucket` or `s3://bucket/prefix`, without a trailing `/`.
    root: String,
}

impl S3Store {
    /// Builds the client; contacts nothing (the first request does).
    pub(crate) async fn new(config: &BlobConfig) -> Result<Self> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        loader = match &config.region {
            Some(region) => loader.region(Region::new(region.clone())),
            None => {
                loader.region(RegionProviderChain::default_provider().or_else(Region::from_static(FALLBACK_REGION)))
            }
        };
        if let (Some(access_key), Some(secret_key)) = (&config.access_key, &config.secret_key) {
            loader = loader.credentials_provider(Credentials::new(
                access_key.clone(),
                secret_key.clone(),
                None,
                None,
                "aloft-blob-config",
            ));
        }
        if let Some(endpoint) = &config.endpoint {
            loader = loader.endpoint_url(endpoint.clone());
        }
        let shared = loader.load().await;
        let s3_config = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(config.force_path_style)
            // The SDK's default (a CRC32 on every request) breaks presigned PUTs (it signs the
            // checksum of an empty body) and some S3-compatible servers; we send Content-MD5.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .build();
        Ok(Self { client: Client::from_conf(s3_config), root: config.root.trim_end_matches('/').to_string() })
    }

    pub(crate) fn root(&self) -> &str {
        &self.root
    }

    pub(crate) async fn put(&self, uri: &str, data: Bytes) -> Result<()> {
        let (bucket, key) = object(uri)?;
        self.client
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_md5(BASE64.encode(Md5::digest(&data)))
            .body(ByteStream::from(data))
            .send()
            .await
            .map_err(|e| sdk_error("PutObject", uri, e))?;
        Ok(())
    }

    pub(crate) async fn get(&self, uri: &str) -> Result<Bytes> {
        let (bucket, key) = object(uri)?;
        let out = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| sdk_error("GetObject", uri, e))?;
        let body = out.body.collect().await.map_err(|e| BlobError::S3 {
            op: "GetObject",
            uri: uri.to_string(),
            message: format!("reading body: {}", DisplayErrorContext(&e)),
        })?;
        Ok(body.into_bytes())
    }

    pub(crate) async fn head(&self, uri: &str) -> Result<Option<ObjectMeta>> {
        let (bucket, key) = object(uri)?;
        let out = match self.client.head_object().bucket(bucket).key(key).send().await {
            Ok(out) => out,
            Err(e) => {
                return match sdk_error("HeadObject", uri, e) {
                    BlobError::NotFound { .. } => Ok(None),
                    other => Err(other),
                };
            }
        };
        let md5 = out
            .e_tag()
            .and_then(etag_md5)
            .or_else(|| out.metadata().and_then(|m| m.get(MD5_METADATA)).filter(|v| is_md5_hex(v)).cloned());
        let size = u64::try_from(out.content_length().unwrap_or(0)).unwrap_or(0);
        Ok(Some(ObjectMeta { size, md5 }))
    }

    /// From head when known, else by streaming the object through a hasher.
    pub(crate) async fn md5(&self, uri: &str) -> Result<Option<String>> {
        match self.head(uri).await? {
            None => Ok(None),
            Some(ObjectMeta { md5: Some(md5), .. }) => Ok(Some(md5)),
            Some(_) => {
                let (bucket, key) = object(uri)?;
                let out = self
                    .client
                    .get_object()
                    .bucket(bucket)
                    .key(key)
                    .send()
                    .await
                    .map_err(|e| sdk_error("GetObject", uri, e))?;
                let mut body = out.body;
                let mut hasher = Md5::new();
                while let Some(chunk) = body.try_next().await.map_err(|e| BlobError::S3 {
                    op: "GetObject",
                    uri: uri.to_string(),
                    message: format!("reading body: {}", DisplayErrorContext(&e)),
                })? {
                    hasher.update(&chunk);
                }
                Ok(Some(hex::encode(hasher.finalize())))
            }
        }
    }

    pub(crate) async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let (bucket, key_prefix) = uri::split_s3(prefix).map_err(|reason| BlobError::invalid_uri(prefix, reason))?;
        uri::check_bucket(bucket).map_err(|reason| BlobError::invalid_uri(prefix, reason))?;
        uri::check_key_segments(key_prefix, true).map_err(|reason| BlobError::invalid_uri(prefix, reason))?;
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(bucket)
            .set_prefix((!key_prefix.is_empty()).then(|| key_prefix.to_string()))
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| sdk_error("ListObjectsV2", prefix, e))?;
            out.extend(page.contents().iter().filter_map(|o| o.key()).map(|key| format!("s3://{bucket}/{key}")));
        }
        // S3 already returns key order; sorting makes it independent of the server.
        out.sort();
        Ok(out)
    }

    pub(crate) async fn delete(&self, uri: &str) -> Result<()> {
        let (bucket, key) = object(uri)?;
        match self.client.delete_object().bucket(bucket).key(key).send().await {
            Ok(_) => Ok(()),
            Err(e) => match sdk_error("DeleteObject", uri, e) {
                BlobError::NotFound { .. } => Ok(()),
                other => Err(other),
            },
        }
    }

    /// Server-side copy; S3 limits a single CopyObject to 5 GiB.
    pub(crate) async fn copy(&self, src: &str, dst: &str) -> Result<()> {
        let (src_bucket, src_key) = object(src)?;
        let (dst_bucket, dst_key) = object(dst)?;
        self.client
            .copy_object()
            .copy_source(uri::encode_copy_source(src_bucket, src_key))
            .bucket(dst_bucket)
            .key(dst_key)
            .send()
            .await
            .map_err(|e| match sdk_error("CopyObject", dst, e) {
                // the only object that can be missing is the source
                BlobError::NotFound { .. } => BlobError::NotFound { uri: src.to_string() },
                other => other,
            })?;
        Ok(())
    }

    pub(crate) async fn put_file(&self, uri: &str, local_path: &Path) -> Result<()> {
        let (bucket, key) = object(uri)?;
        let path = local_path.to_path_buf();
        let local_display = local_path.display().to_string();
        let size =
            tokio::fs::metadata(&path).await.map_err(|e| BlobError::io("read local file", &local_display, e))?.len();
        // Hashing first costs one extra sequential read but lets every object carry its md5.
        let md5_hex = {
            let (path, display) = (path.clone(), local_display.clone());
            local::blocking("hash local file", &local_display, move || {
                local::md5_file(&path).map_err(|e| BlobError::io("read local file", &display, e))
            })
            .await?
        };
        if size <= MULTIPART_THRESHOLD {
            let md5_bytes = hex::decode(&md5_hex).expect("md5_file returns hex");
            let body = ByteStream::from_path(&path).await.map_err(|e| BlobError::S3 {
                op: "PutObject",
                uri: uri.to_string(),
                message: format!("opening {local_display}: {}", DisplayErrorContext(&e)),
            })?;
            self.client
                .put_object()
                .bucket(bucket)
                .key(key)
                .content_length(size as i64)
                .content_md5(BASE64.encode(md5_bytes))
                .body(body)
                .send()
                .await
                .map_err(|e| sdk_error("PutObject", uri, e))?;
            return Ok(());
        }

        let created = self
            .client
            .create_multipart_upload()
            .bucket(bucket)
            .key(key)
            .metadata(MD5_METADATA, &md5_hex)
            .send()
            .await
            .map_err(|e| sdk_error("CreateMultipartUpload", uri, e))?;
        let upload_id = created.upload_id().ok_or_else(|| BlobError::S3 {
            op: "CreateMultipartUpload",
            uri: uri.to_string(),
            message: "response has no upload id".to_string(),
        })?;
        let result = self.upload_parts(uri, bucket, key, upload_id, &path, size).await;
        if result.is_err() {
            // Otherwise the uploaded parts are kept (and billed) until a lifecycle rule reaps them.
            if let Err(e) =
                self.client.abort_multipart_upload().bucket(bucket).key(key).upload_id(upload_id).send().await
            {
                tracing::warn!(uri, error = %DisplayErrorContext(&e), "could not abort multipart upload");
            }
        }
        result
    }

    async fn upload_parts(
        &self,
        uri: &str,
        bucket: &str,
        key: &str,
        upload_id: &str,
        path: &Path,
        size: u64,
    ) -> Result<()> {
        let part_size = PART_SIZE.max(size.div_ceil(MAX_PARTS));
        let parts = size.div_ceil(part_size);
        let completed: Vec<CompletedPart> = futures::stream::iter(0..parts)
            .map(|index| async move {
                let offset = index * part_size;
                let len = part_size.min(size - offset);
                let data = read_range(path, offset, len).await?;
                let part_number = i32::try_from(index + 1).expect("at most 10 000 parts");
                let out = self
                    .client
                    .upload_part()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(upload_id)
                    .part_number(part_number)
                    .content_length(len as i64)
                    .content_md5(BASE64.encode(Md5::digest(&data)))
                    .body(ByteStream::from(data))
                    .send()
                    .await
                    .map_err(|e| sdk_error("UploadPart", uri, e))?;
                Ok::<_, BlobError>(
                    CompletedPart::builder()
                        .part_number(part_number)
                        .set_e_tag(out.e_tag().map(str::to_string))
                        .build(),
                )
            })
            .buffered(PART_CONCURRENCY)
            .try_collect()
            .await?;
        self.client
            .complete_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(completed)).build())
            .send()
            .await
            .map_err(|e| sdk_error("CompleteMultipartUpload", uri, e))?;
        Ok(())
    }

    /// Streams the object into a temp file next to `local_path`, then renames it into place.
    pub(crate) async fn get_to_file(&self, uri: &str, local_path: &Path) -> Result<()> {
        let (bucket, key) = object(uri)?;
        let out = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| sdk_error("GetObject", uri, e))?;
        let local_display = local_path.display().to_string();
        let dir = local_path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        tokio::fs::create_dir_all(&dir).await.map_err(|e| BlobError::io("write local file", &local_display, e))?;
        let temp = local::temp_path(&dir);
        let result = async {
            let mut file = tokio::fs::File::create_new(&temp)
                .await
                .map_err(|e| BlobError::io("write local file", &local_display, e))?;
            let mut body = out.body;
            while let Some(chunk) = body.try_next().await.map_err(|e| BlobError::S3 {
                op: "GetObject",
                uri: uri.to_string(),
                message: format!("reading body: {}", DisplayErrorContext(&e)),
            })? {
                file.write_all(&chunk).await.map_err(|e| BlobError::io("write local file", &local_display, e))?;
            }
            file.flush().await.map_err(|e| BlobError::io("write local file", &local_display, e))?;
            drop(file);
            tokio::fs::rename(&temp, local_path).await.map_err(|e| BlobError::io("write local file", &local_display, e))
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&temp).await;
        }
        result
    }

    /// A URL accepting one `PUT` of the object. With `content_md5` the header is signed, so the
    /// uploader must send exactly `Content-MD5: base64(md5)` and S3 verifies the body against it.
    pub(crate) async fn presign_put(
        &self,
        uri: &str,
        content_md5: Option<[u8; 16]>,
        expires: Duration,
    ) -> Result<String> {
        let (bucket, key) = object(uri)?;
        let presigning = presigning_config("PutObject", uri, expires)?;
        let request = self
            .client
            .put_object()
            .bucket(bucket)
            .key(key)
            .set_content_md5(content_md5.map(|md5| BASE64.encode(md5)))
            .presigned(presigning)
            .await
            .map_err(|e| sdk_error("PutObject", uri, e))?;
        Ok(request.uri().to_string())
    }

    pub(crate) async fn presign_get(&self, uri: &str, expires: Duration) -> Result<String> {
        let (bucket, key) = object(uri)?;
        let presigning = presigning_config("GetObject", uri, expires)?;
        let request = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .presigned(presigning)
            .await
            .map_err(|e| sdk_error("GetObject", uri, e))?;
        Ok(request.uri().to_string())
    }
}

/// `(bucket, key)` of an object uri: `s3://bucket/key`, key non-empty, not ending in `/`, no
/// `.`/`..`/empty segments (see [`uri::check_key_segments`] for why).
fn object(uri: &str) -> Result<(&str, &str)> {
    let (bucket, key) = uri::split_s3(uri).map_err(|reason| BlobError::invalid_uri(uri, reason))?;
    uri::check_bucket(bucket).map_err(|reason| BlobError::invalid_uri(uri, reason))?;
    if key.is_empty() {
        return Err(BlobError::invalid_uri(uri, "names a bucket, not an object"));
    }
    if key.ends_with('/') {
        return Err(BlobError::invalid_uri(uri, "ends with '/', which names a prefix, not an object"));
    }
    uri::check_key_segments(key, false).map_err(|reason| BlobError::invalid_uri(uri, reason))?;
    Ok((bucket, key))
}

fn presigning_config(op: &'static str, uri: &str, expires: Duration) -> Result<PresigningConfig> {
    PresigningConfig::expires_in(expires).map_err(|e| BlobError::S3 {
        op,
        uri: uri.to_string(),
        message: format!("presigning: {}", DisplayErrorContext(&e)),
    })
}

/// Maps an SDK error: a missing key becomes [`BlobError::NotFound`], anything else keeps the
/// service code and message (or the transport error) in [`BlobError::S3`].
fn sdk_error<E>(op: &'static str, uri: &str, error: SdkError<E, HttpResponse>) -> BlobError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = error.raw_response().map(|r| r.status().as_u16());
    let code = error.code();
    // HEAD responses have no body, hence no code: a bare 404 is a missing key. A 404 with a code
    // (NoSuchBucket, NoSuchUpload) is a real error and must not pass as "not written yet".
    if code == Some("NoSuchKey") || (status == Some(404) && matches!(code, None | Some("NotFound"))) {
        return BlobError::NotFound { uri: uri.to_string() };
    }
    BlobError::S3 { op, uri: uri.to_string(), message: DisplayErrorContext(&error).to_string() }
}

/// The md5 in a single-part ETag (`"<32 hex>"`); multipart ETags (`"<hex>-<parts>"`) have none.
fn etag_md5(etag: &str) -> Option<String> {
    let inner = etag.trim_matches('"');
    is_md5_hex(inner).then(|| inner.to_ascii_lowercase())
}

fn is_md5_hex(value: &str) -> bool {
    value.len() == 32 && value.bytes().all(|b| b.is_ascii_hexdigit())
}

async fn read_range(path: &Path, offset: u64, len: u64) -> Result<Bytes> {
    let display = path.display().to_string();
    let io = |e| BlobError::io("read local file", &display, e);
    let mut file = tokio::fs::File::open(path).await.map_err(io)?;
    file.seek(std::io::SeekFrom::Start(offset)).await.map_err(io)?;
    let mut buf = vec![0u8; usize::try_from(len).expect("part fits in memory")];
    file.read_exact(&mut buf).await.map_err(io)?;
    Ok(Bytes::from(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etag_md5_only_for_single_part() {
        assert_eq!(
            etag_md5("\"9E107D9D372BB6826BD81D3542A419D6\"").as_deref(),
            Some("9e107d9d372bb6826bd81d3542a419d6")
        );
        assert_eq!(etag_md5("9e107d9d372bb6826bd81d3542a419d6").as_deref(), Some("9e107d9d372bb6826bd81d3542a419d6"));
        assert_eq!(etag_md5("\"9e107d9d372bb6826bd81d3542a419d6-2\""), None);
        assert_eq!(etag_md5("\"\""), None);
    }

    #[test]
    fn object_uris() {
        assert_eq!(object("s3://b/k/x.pb").unwrap(), ("b", "k/x.pb"));
        for bad in ["s3://b", "s3://b/", "s3://b/k/", "s3://b/k/../x", "/local/path", "s3:///k", "s3://b//k"] {
            assert!(matches!(object(bad), Err(BlobError::InvalidUri { .. })), "{bad}");
        }
    }
}
