//! DataProxyService with both stores: a signed upload URL accepts exactly the promised bytes
//! (flytekit PUTs with Content-MD5 and accepts only 200/201), and the native URL keeps the file name.

mod common;

use aloft_proto::flyteidl::service::{CreateDownloadLocationRequest, CreateUploadLocationRequest};
use base64::Engine;
use common::*;
use md5::{Digest, Md5};

fn request(body: &[u8], filename: &str) -> CreateUploadLocationRequest {
    CreateUploadLocationRequest {
        project: PROJECT.into(),
        domain: DOMAIN.into(),
        filename: filename.into(),
        content_md5: Md5::digest(body).to_vec(),
        add_content_md5_metadata: true,
        ..Default::default()
    }
}

async fn put(url: &str, body: &[u8], md5: &[u8]) -> u16 {
    reqwest::Client::new()
        .put(url)
        .header("Content-MD5", base64::engine::general_purpose::STANDARD.encode(md5))
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
// CreateDownloadLocation is deprecated in flyteidl but older clients still call it.
#[allow(deprecated)]
async fn local_store_upload_through_our_endpoint() {
    let mut env = start(Backend::Sqlite, |_| {}).await;
    let body = b"a code bundle".to_vec();
    let resp = env.dataproxy.create_upload_location(request(&body, "fastabc.tar.gz")).await.unwrap().into_inner();
    assert!(resp.native_url.starts_with(&env.store_dir.path().display().to_string()), "{}", resp.native_url);
    assert!(resp.native_url.ends_with("/fastabc.tar.gz"));
    assert!(resp.signed_url.starts_with(&format!("http://{}/data/", env.http)));
    assert!(resp.headers.contains_key("Content-MD5"));

    // the wrong body is refused, the right one stored
    assert_eq!(put(&resp.signed_url, b"tampered", &Md5::digest(b"tampered")).await, 400);
    assert_eq!(put(&resp.signed_url, &body, &Md5::digest(&body)).await, 201);
    assert_eq!(std::fs::read(&resp.native_url).unwrap(), body);
    // a forged signature is refused
    let forged = resp.signed_url.replace("sig=", "sig=00");
    assert_eq!(put(&forged, &body, &Md5::digest(&body)).await, 403);

    let dl = env
        .dataproxy
        .create_download_location(CreateDownloadLocationRequest {
            native_url: resp.native_url.clone(),
            expires_in: None,
        })
        .await
        .unwrap()
        .into_inner();
    let got = reqwest::get(&dl.signed_url).await.unwrap().bytes().await.unwrap();
    assert_eq!(got.as_ref(), body.as_slice());
}

#[tokio::test]
async fn s3_store_upload_through_a_presigned_url() {
    let deps = aloft_testkit::deps();
    let prefix = aloft_testkit::unique_name("dataproxy");
    let mut env = start(Backend::Sqlite, |c| {
        c.storage = aloft_blob::BlobConfig {
            kind: aloft_blob::BlobKind::S3,
            root: format!("s3://{}/{prefix}", deps.s3_bucket),
            endpoint: Some(deps.s3_endpoint.clone()),
            region: Some(deps.s3_region.clone()),
            access_key: Some(deps.s3_access_key.clone()),
            secret_key: Some(deps.s3_secret_key.clone()),
            force_path_style: true,
            fsync: false,
        };
    })
    .await;
    let body = b"inputs for a run".to_vec();
    let resp = env.dataproxy.create_upload_location(request(&body, "data.csv")).await.unwrap().into_inner();
    assert!(resp.native_url.starts_with(&format!("s3://{}/{prefix}/uploads/", deps.s3_bucket)), "{}", resp.native_url);
    assert!(resp.native_url.ends_with("/data.csv"));
    assert!(resp.signed_url.starts_with(&deps.s3_endpoint), "{}", resp.signed_url);
    assert_eq!(put(&resp.signed_url, &body, &Md5::digest(&body)).await, 200);
    let store = aloft_blob::BlobStore::from_config(&aloft_blob::BlobConfig {
        kind: aloft_blob::BlobKind::S3,
        root: format!("s3://{}", deps.s3_bucket),
        endpoint: Some(deps.s3_endpoint.clone()),
        region: Some(deps.s3_region.clone()),
        access_key: Some(deps.s3_access_key.clone()),
        secret_key: Some(deps.s3_secret_key.clone()),
        force_path_style: true,
        fsync: false,
    })
    .await
    .unwrap();
    assert_eq!(store.get(&resp.native_url).await.unwrap().as_ref(), body.as_slice());
    // same name and root with other content: refused instead of overwritten
    let mut again = request(b"other content", "data.csv");
    again.filename_root = resp.native_url.rsplit('/').nth(1).unwrap().to_string();
    let err = env.dataproxy.create_upload_location(again).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::AlreadyExists);
}
