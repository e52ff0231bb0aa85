//! One behavioural suite for `BlobStore`, run against every backend: a local directory in a temp
//! dir and the real S3-compatible server from `scripts/dev-deps.sh`. Each test gets its own
//! unique prefix, so tests run in parallel against one bucket.

use std::path::Path;
use std::time::Duration;

use aloft_blob::{BlobConfig, BlobError, BlobKind, BlobStore, join};
use anyhow::{Context, Result, ensure};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use md5::{Digest, Md5};

/// What every case gets: a store, a fresh prefix inside it and a scratch directory for local files.
struct Fixture {
    store: BlobStore,
    /// Unique to this test; everything the test writes is below it.
    base: String,
    /// Local files for put_file/get_to_file; for the local backend also holds the store root.
    scratch: tempfile::TempDir,
}

impl Fixture {
    fn uri(&self, relative: &str) -> String {
        join(&self.base, relative)
    }

    /// Removes what the test wrote (local data goes with the temp dir).
    async fn cleanup(self) -> Result<()> {
        if self.store.kind() == BlobKind::S3 {
            let store = &self.store;
            futures::stream::iter(store.list(&self.base).await?)
                .map(|uri| async move { store.delete(&uri).await })
                .buffer_unordered(32)
                .try_collect::<()>()
                .await?;
        }
        Ok(())
    }
}

async fn local_fixture() -> Fixture {
    let scratch = tempfile::tempdir().expect("temp dir");
    let store = BlobStore::local(scratch.path().join("store")).await.expect("local store");
    let base = join(store.root(), &aloft_testkit::unique_name("blob"));
    Fixture { store, base, scratch }
}

fn s3_config(root: String) -> BlobConfig {
    let deps = aloft_testkit::deps();
    BlobConfig {
        endpoint: Some(deps.s3_endpoint.clone()),
        region: Some(deps.s3_region.clone()),
        access_key: Some(deps.s3_access_key.clone()),
        secret_key: Some(deps.s3_secret_key.clone()),
        force_path_style: true,
        ..BlobConfig::s3(root)
    }
}

async fn s3_fixture() -> Fixture {
    let bucket = &aloft_testkit::deps().s3_bucket;
    let root = format!("s3://{bucket}/{}", aloft_testkit::unique_name("blob-test"));
    let store = BlobStore::from_config(&s3_config(root)).await.expect("s3 store");
    let base = store.root().to_string();
    Fixture { store, base, scratch: tempfile::tempdir().expect("temp dir") }
}

/// Generates one test per case and backend: `local::<case>` and `s3::<case>`.
macro_rules! suite {
    ($($case:ident),* $(,)?) => {
        mod local {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() -> anyhow::Result<()> {
                    let fixture = super::local_fixture().await;
                    super::cases::$case(&fixture).await?;
                    fixture.cleanup().await
                }
            )*
        }
        mod s3 {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() -> anyhow::Result<()> {
                    let fixture = super::s3_fixture().await;
                    super::cases::$case(&fixture).await?;
                    fixture.cleanup().await
                }
            )*
        }
    };
}

suite!(
    round_trip,
    missing_key_is_not_found,
    overwrite,
    concurrent_overwrites_are_atomic,
    list_with_prefix,
    list_paginates_past_1000_keys,
    copy,
    delete,
    big_file_streams_both_ways,
    presigned_put_with_content_md5,
    path_escape_is_rejected,
    wrong_uri_form_is_rejected,
);

fn md5_hex(data: &[u8]) -> String {
    hex::encode(Md5::digest(data))
}

fn assert_not_found<T: std::fmt::Debug>(result: aloft_blob::Result<T>, uri: &str) {
    match result {
        Err(BlobError::NotFound { uri: got }) => assert_eq!(got, uri),
        other => panic!("expected NotFound for {uri}, got {other:?}"),
    }
}

fn assert_invalid_uri<T: std::fmt::Debug>(result: aloft_blob::Result<T>, what: &str) {
    assert!(matches!(result, Err(BlobError::InvalidUri { .. })), "{what}: expected InvalidUri, got {result:?}");
}

/// Deterministic, incompressible-looking bytes (xorshift), so multipart parts differ.
fn pseudo_random(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.extend_from_slice(&seed.to_le_bytes());
    }
    out.truncate(len);
    out
}

mod cases {
    use super::*;

    pub async fn round_trip(f: &Fixture) -> Result<()> {
        let uri = f.uri("proj/dev/exec1/n0/data/inputs.pb");
        let data = Bytes::from_static(b"\x0a\x05hello inputs");
        f.store.put(&uri, data.clone()).await?;
        assert_eq!(f.store.get(&uri).await?, data);
        assert!(f.store.exists(&uri).await?);

        let meta = f.store.head(&uri).await?.context("head after put")?;
        assert_eq!(meta.size, data.len() as u64);
        match f.store.kind() {
            // the ETag of a single-part object
            BlobKind::S3 => assert_eq!(meta.md5.as_deref(), Some(md5_hex(&data).as_str())),
            // documented: the local backend computes md5 only when asked
            BlobKind::Local => assert_eq!(meta.md5, None),
        }
        assert_eq!(f.store.md5(&uri).await?, Some(md5_hex(&data)));

        // empty objects and keys with spaces and non-ASCII characters
        let odd = f.uri("odd names/ä ö+b=c&d.pb");
        f.store.put(&odd, Bytes::new()).await?;
        assert_eq!(f.store.get(&odd).await?, Bytes::new());
        assert_eq!(f.store.head(&odd).await?.context("head empty")?.size, 0);
        assert_eq!(f.store.list(&f.uri("odd names/")).await?, vec![odd]);
        Ok(())
    }

    pub async fn missing_key_is_not_found(f: &Fixture) -> Result<()> {
        let uri = f.uri("missing/outputs.pb");
        assert_not_found(f.store.get(&uri).await, &uri);
        let message = f.store.get(&uri).await.unwrap_err().to_string();
        assert_eq!(message, format!("blob not found: {uri}"));
        assert_eq!(f.store.head(&uri).await?, None);
        assert!(!f.store.exists(&uri).await?);
        assert_eq!(f.store.md5(&uri).await?, None);

        let local = f.scratch.path().join("never/written.bin");
        assert_not_found(f.store.get_to_file(&uri, &local).await, &uri);
        assert!(!local.exists(), "no partial file is left behind");

        let dst = f.uri("missing/copy.pb");
        assert_not_found(f.store.copy(&uri, &dst).await, &uri);
        assert!(!f.store.exists(&dst).await?);

        // "directories" are not objects
        f.store.put(&f.uri("dir/file"), "x").await?;
        assert_not_found(f.store.get(&f.uri("dir")).await, &f.uri("dir"));
        assert_eq!(f.store.head(&f.uri("dir")).await?, None);

        // deleting what is not there succeeds, as on S3
        f.store.delete(&uri).await?;
        Ok(())
    }

    pub async fn overwrite(f: &Fixture) -> Result<()> {
        let uri = f.uri("node/data/0/outputs.pb");
        f.store.put(&uri, "first version, longer").await?;
        f.store.put(&uri, "second").await?;
        assert_eq!(f.store.get(&uri).await?, Bytes::from_static(b"second"));
        assert_eq!(f.store.head(&uri).await?.context("head")?.size, 6);
        assert_eq!(f.store.list(&f.uri("node/")).await?, vec![uri]);
        Ok(())
    }

    pub async fn concurrent_overwrites_are_atomic(f: &Fixture) -> Result<()> {
        let uri = f.uri("contended.bin");
        let versions: Vec<Vec<u8>> = (0..8).map(|i| pseudo_random(256 * 1024, i + 1)).collect();
        futures::future::try_join_all(versions.iter().map(|v| f.store.put(&uri, v.clone()))).await?;
        let got = f.store.get(&uri).await?;
        ensure!(versions.iter().any(|v| v[..] == got[..]), "the object is one complete version, not a mix");
        assert_eq!(f.store.list(&f.base).await?, vec![uri], "no temp files are visible");
        Ok(())
    }

    pub async fn list_with_prefix(f: &Fixture) -> Result<()> {
        let keys = ["a/1.pb", "a/2.pb", "a/sub/3.pb", "ab/4.pb", "b/5.pb"];
        for key in keys {
            f.store.put(&f.uri(key), key.to_string()).await?;
        }
        let uris = |ks: &[&str]| ks.iter().map(|k| f.uri(k)).collect::<Vec<_>>();

        assert_eq!(f.store.list(&f.uri("a/")).await?, uris(&["a/1.pb", "a/2.pb", "a/sub/3.pb"]));
        // a plain string prefix, as S3 defines it
        assert_eq!(f.store.list(&f.uri("a")).await?, uris(&["a/1.pb", "a/2.pb", "a/sub/3.pb", "ab/4.pb"]));
        assert_eq!(f.store.list(&f.uri("a/su")).await?, uris(&["a/sub/3.pb"]));
        assert_eq!(f.store.list(&f.uri("a/1.pb")).await?, uris(&["a/1.pb"]));
        assert_eq!(f.store.list(&f.base).await?, uris(&keys));
        assert_eq!(f.store.list(&format!("{}/", f.base)).await?, uris(&keys));
        assert!(f.store.list(&f.uri("zzz/")).await?.is_empty());
        assert!(f.store.list(&f.uri("zzz")).await?.is_empty());
        Ok(())
    }

    pub async fn list_paginates_past_1000_keys(f: &Fixture) -> Result<()> {
        const N: usize = 1100;
        let expected: Vec<String> = (0..N).map(|i| f.uri(&format!("many/{i:05}.pb"))).collect();
        futures::stream::iter(expected.iter())
            .map(|uri| f.store.put(uri, Bytes::from_static(b"x")))
            .buffer_unordered(64)
            .try_collect::<()>()
            .await?;
        f.store.put(&f.uri("other/0.pb"), "not listed").await?;
        assert_eq!(f.store.list(&f.uri("many/")).await?, expected);
        Ok(())
    }

    pub async fn copy(f: &Fixture) -> Result<()> {
        let src = f.uri("src dir/ä+b=c.pb");
        let dst = f.uri("dst/copied.pb");
        f.store.put(&src, "payload").await?;
        f.store.copy(&src, &dst).await?;
        assert_eq!(f.store.get(&dst).await?, Bytes::from_static(b"payload"));
        assert_eq!(f.store.get(&src).await?, Bytes::from_static(b"payload"), "the source stays");
        assert_eq!(f.store.md5(&dst).await?, Some(md5_hex(b"payload")));

        // over an existing object
        f.store.put(&src, "newer").await?;
        f.store.copy(&src, &dst).await?;
        assert_eq!(f.store.get(&dst).await?, Bytes::from_static(b"newer"));
        Ok(())
    }

    pub async fn delete(f: &Fixture) -> Result<()> {
        let keep = f.uri("d/keep.pb");
        let gone = f.uri("d/gone.pb");
        f.store.put(&keep, "k").await?;
        f.store.put(&gone, "g").await?;
        f.store.delete(&gone).await?;
        assert_not_found(f.store.get(&gone).await, &gone);
        assert!(!f.store.exists(&gone).await?);
        assert_eq!(f.store.list(&f.uri("d/")).await?, vec![keep.clone()]);
        f.store.delete(&gone).await?;
        assert_eq!(f.store.get(&keep).await?, Bytes::from_static(b"k"));
        Ok(())
    }

    pub async fn big_file_streams_both_ways(f: &Fixture) -> Result<()> {
        // above the multipart threshold, and not a multiple of the part size
        let size = 20 * 1024 * 1024 + 123;
        assert!(size as u64 > aloft_blob::MULTIPART_THRESHOLD);
        let data = pseudo_random(size, 42);
        let expected_md5 = md5_hex(&data);
        let source = f.scratch.path().join("bundle.tar.gz");
        tokio::fs::write(&source, &data).await?;

        let uri = f.uri("bundles/fast0123.tar.gz");
        f.store.put_file(&uri, &source).await?;
        let meta = f.store.head(&uri).await?.context("head big file")?;
        assert_eq!(meta.size, size as u64);
        if f.store.kind() == BlobKind::S3 {
            // multipart: not in the ETag, but stored as metadata by put_file
            assert_eq!(meta.md5.as_deref(), Some(expected_md5.as_str()));
        }
        assert_eq!(f.store.md5(&uri).await?, Some(expected_md5.clone()));

        let target = f.scratch.path().join("download/nested/bundle.tar.gz");
        f.store.get_to_file(&uri, &target).await?;
        ensure!(tokio::fs::read(&target).await? == data, "downloaded file differs");
        ensure!(f.store.get(&uri).await?[..] == data[..], "get differs");

        // get_to_file replaces an existing file
        let small = f.scratch.path().join("small.txt");
        tokio::fs::write(&small, b"small file").await?;
        let small_uri = f.uri("bundles/small.txt");
        f.store.put_file(&small_uri, &small).await?;
        f.store.get_to_file(&small_uri, &target).await?;
        assert_eq!(tokio::fs::read(&target).await?, b"small file");
        assert_eq!(f.store.md5(&small_uri).await?, Some(md5_hex(b"small file")));

        let no_temp_files = std::fs::read_dir(target.parent().context("parent")?)?.count() == 1;
        ensure!(no_temp_files, "only the downloaded file is in its directory");

        let missing_local = f.scratch.path().join("does-not-exist");
        let err = f.store.put_file(&f.uri("x"), &missing_local).await.unwrap_err();
        assert!(matches!(err, BlobError::Io { .. }), "{err:?}");
        assert!(err.to_string().contains("does-not-exist"), "{err}");
        Ok(())
    }

    pub async fn presigned_put_with_content_md5(f: &Fixture) -> Result<()> {
        let uri = f.uri("uploads/proj/dev/ABCD/fast0123.tar.gz");
        let body = b"code bundle bytes".to_vec();
        let md5: [u8; 16] = Md5::digest(&body).into();
        let expires = Duration::from_secs(600);
        let put_url = f.store.presign_put(&uri, Some(md5), expires).await?;
        let get_url = f.store.presign_get(&uri, expires).await?;
        let (put_url, get_url) = match f.store.kind() {
            BlobKind::Local => {
                // the metadata service serves its own upload endpoint for local stores
                assert_eq!((put_url, get_url), (None, None));
                return Ok(());
            }
            BlobKind::S3 => (put_url.context("presigned put url")?, get_url.context("presigned get url")?),
        };

        let http = reqwest::Client::new();
        // what flytekit sends: Content-Length and Content-MD5
        let tampered = http.put(&put_url).header("Content-MD5", BASE64.encode(md5)).body("tampered").send().await?;
        ensure!(!tampered.status().is_success(), "a body that does not match Content-MD5 is rejected");
        let unsigned = http.put(&put_url).body(body.clone()).send().await?;
        ensure!(!unsigned.status().is_success(), "Content-MD5 is part of the signature");
        assert!(!f.store.exists(&uri).await?);

        let response = http.put(&put_url).header("Content-MD5", BASE64.encode(md5)).body(body.clone()).send().await?;
        let status = response.status();
        ensure!(status == 200 || status == 201, "presigned PUT failed: {status} {}", response.text().await?);
        assert_eq!(f.store.get(&uri).await?, Bytes::from(body.clone()));
        assert_eq!(f.store.head(&uri).await?.context("head")?.md5, Some(hex::encode(md5)));

        let response = http.get(&get_url).send().await?;
        ensure!(response.status().is_success(), "presigned GET failed: {}", response.status());
        assert_eq!(response.bytes().await?, Bytes::from(body));

        // without an md5 the URL accepts any body
        let free = f.uri("uploads/free.bin");
        let url = f.store.presign_put(&free, None, expires).await?.context("url")?;
        ensure!(http.put(&url).body("anything").send().await?.status().is_success());
        assert_eq!(f.store.get(&free).await?, Bytes::from_static(b"anything"));

        let too_long = f.store.presign_put(&free, None, Duration::from_secs(8 * 24 * 3600)).await;
        assert!(too_long.is_err(), "S3 caps presigned URLs at 7 days");
        Ok(())
    }

    pub async fn path_escape_is_rejected(f: &Fixture) -> Result<()> {
        f.store.put(&f.uri("inside.pb"), "in").await?;
        let escape = format!("{}/../escaped.pb", f.base);
        assert_invalid_uri(f.store.put(&escape, "out").await, "put");
        assert_invalid_uri(f.store.get(&escape).await, "get");
        assert_invalid_uri(f.store.head(&escape).await, "head");
        assert_invalid_uri(f.store.delete(&escape).await, "delete");
        assert_invalid_uri(f.store.list(&format!("{}/../", f.base)).await, "list");
        assert_invalid_uri(f.store.copy(&f.uri("inside.pb"), &escape).await, "copy dst");
        assert_invalid_uri(f.store.copy(&escape, &f.uri("x.pb")).await, "copy src");
        assert_invalid_uri(f.store.put_file(&escape, Path::new("/etc/hostname")).await, "put_file");
        assert_invalid_uri(f.store.presign_put(&escape, None, Duration::from_secs(60)).await, "presign_put");
        assert_invalid_uri(f.store.put(&f.uri("a/./b"), "x").await, "'.' segment");
        assert_invalid_uri(f.store.put(&f.uri("a//b"), "x").await, "empty segment");
        let message = f.store.put(&escape, "out").await.unwrap_err().to_string();
        assert!(message.contains(&escape) && message.contains("'..'"), "{message}");

        if f.store.kind() == BlobKind::Local {
            // an absolute path elsewhere on the machine, and a sibling of the root
            let sibling = f.scratch.path().join("outside.pb");
            let sibling = sibling.to_str().context("utf-8")?;
            for outside in ["/etc/aloft-blob-test.pb", sibling] {
                let result = f.store.put(outside, "out").await;
                assert!(matches!(result, Err(BlobError::OutsideRoot { .. })), "{outside}: {result:?}");
                assert!(matches!(f.store.get(outside).await, Err(BlobError::OutsideRoot { .. })));
            }
            assert!(!Path::new(sibling).exists() && !f.scratch.path().join("escaped.pb").exists());
        }
        Ok(())
    }

    pub async fn wrong_uri_form_is_rejected(f: &Fixture) -> Result<()> {
        let foreign = match f.store.kind() {
            BlobKind::Local => "s3://bucket/key.pb",
            BlobKind::S3 => "/var/lib/aloft/data/key.pb",
        };
        assert_invalid_uri(f.store.put(foreign, "x").await, "other backend's uri");
        assert_invalid_uri(f.store.get(foreign).await, "other backend's uri");
        if f.store.kind() == BlobKind::Local {
            let file_uri = format!("file://{}", f.uri("x.pb"));
            assert_invalid_uri(f.store.put(&file_uri, "x").await, "file:// uri");
        }
        assert_invalid_uri(f.store.put(&format!("{}/", f.uri("dir")), "x").await, "trailing slash");
        Ok(())
    }
}

#[tokio::test]
async fn invalid_config_is_rejected_naming_the_key() {
    let config = BlobConfig { root: "/not/an/s3/uri".into(), ..BlobConfig::s3("") };
    match BlobStore::from_config(&config).await {
        Err(BlobError::Config { key, .. }) => assert_eq!(key, "blob.root"),
        other => panic!("expected a config error, got {other:?}"),
    }
    let config = BlobConfig { access_key: Some("ak".into()), ..BlobConfig::s3("s3://bucket") };
    let err = BlobStore::from_config(&config).await.unwrap_err();
    assert_eq!(err.to_string(), "invalid blob config blob.secret_key: must be set when blob.access_key is set");
    assert!(matches!(BlobStore::local("relative/dir").await, Err(BlobError::Config { key: "blob.root", .. })));
}

#[tokio::test]
async fn local_store_creates_its_root() -> Result<()> {
    let scratch = tempfile::tempdir()?;
    let root = scratch.path().join("a/b/c");
    let store = BlobStore::local(&root).await?;
    assert!(root.is_dir());
    assert_eq!(store.root(), root.to_str().context("utf-8")?);
    assert_eq!(store.kind(), BlobKind::Local);
    Ok(())
}

#[tokio::test]
async fn s3_errors_other_than_missing_keys_are_not_not_found() -> Result<()> {
    let deps = aloft_testkit::deps();
    let key = format!("{}/k.pb", aloft_testkit::unique_name("blob-test"));

    let wrong_secret =
        BlobConfig { secret_key: Some("not-the-secret".into()), ..s3_config(format!("s3://{}", deps.s3_bucket)) };
    let store = BlobStore::from_config(&wrong_secret).await?;
    let uri = format!("s3://{}/{key}", deps.s3_bucket);
    let err = store.get(&uri).await.unwrap_err();
    assert!(matches!(err, BlobError::S3 { op: "GetObject", .. }), "{err:?}");
    assert!(err.to_string().contains(&uri), "{err}");

    let store = BlobStore::from_config(&s3_config(format!("s3://{}", deps.s3_bucket))).await?;
    let missing_bucket = format!("s3://{}/{key}", aloft_testkit::unique_name("nobucket").replace('_', "-"));
    let err = store.get(&missing_bucket).await.unwrap_err();
    assert!(matches!(err, BlobError::S3 { .. }), "a missing bucket is a real error: {err:?}");
    Ok(())
}
