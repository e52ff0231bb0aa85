//! The HTTP side: signed upload (PUT) and download (GET) URLs for stores that cannot sign their
//! own (the local directory). flytekit PUTs its code bundle here with `Content-MD5` and accepts
//! only 200 or 201.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use md5::{Digest, Md5};
use serde::Deserialize;

use crate::app::{App, now_micros};
use crate::domain::upload;

/// Query of a signed URL.
#[derive(Debug, Deserialize)]
struct Signed {
    expires: i64,
    #[serde(default)]
    md5: String,
    sig: String,
}

/// The router: `/data/<key>` and `/healthz`.
pub fn router(app: App) -> Router {
    Router::new()
        .route("/data/{*key}", get(download).put(upload_put))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(app)
        // code bundles can be large; the signed URL already bounds who may upload
        .layer(axum::extract::DefaultBodyLimit::max(2 * 1024 * 1024 * 1024))
}

fn reject(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, msg.into()).into_response()
}

async fn upload_put(
    State(app): State<App>,
    Path(key): Path<String>,
    Query(q): Query<Signed>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(e) = upload::verify(&app.signing_key, "PUT", &key, q.expires, &q.md5, &q.sig, now_micros() / 1_000_000) {
        return reject(StatusCode::FORBIDDEN, e.to_string());
    }
    let actual = Md5::digest(&body);
    if let Some(h) = headers.get("content-md5") {
        let claimed = h.to_str().ok().and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok());
        if claimed.as_deref() != Some(actual.as_slice()) {
            return reject(StatusCode::BAD_REQUEST, "Content-MD5 does not match the body");
        }
    }
    if !q.md5.is_empty() && q.md5 != hex::encode(actual) {
        return reject(StatusCode::BAD_REQUEST, "body does not match the MD5 this URL was issued for");
    }
    let uri = app.blob.join(app.blob.root(), &key);
    match app.blob.put(&uri, body).await {
        Ok(()) => StatusCode::CREATED.into_response(),
        Err(e) => {
            tracing::error!(error = %e, uri, "upload failed");
            reject(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot store upload: {e}"))
        }
    }
}

async fn download(State(app): State<App>, Path(key): Path<String>, Query(q): Query<Signed>) -> Response {
    if let Err(e) = upload::verify(&app.signing_key, "GET", &key, q.expires, &q.md5, &q.sig, now_micros() / 1_000_000) {
        return reject(StatusCode::FORBIDDEN, e.to_string());
    }
    let uri = app.blob.join(app.blob.root(), &key);
    match app.blob.get(&uri).await {
        Ok(bytes) => bytes.into_response(),
        Err(aloft_blob::BlobError::NotFound { .. }) => reject(StatusCode::NOT_FOUND, format!("{key} does not exist")),
        Err(e) => reject(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
