//! Data proxy decisions: where an upload goes, and signing of URLs served by our HTTP endpoint.

use aloft_proto::flyteidl::service::CreateUploadLocationRequest;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::{Error, Result};

/// Where an upload lands: the key under the storage root, and the expected MD5 if known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadTarget {
    /// Path relative to the storage root: `<upload_prefix>/<project>/<domain>/<prefix>/<filename>`.
    pub key: String,
    /// MD5 of the content the client promised, if any.
    pub md5: Option<[u8; 16]>,
}

/// FlyteAdmin's rules: project and domain are required; so is `content_md5` or `filename_root`;
/// the directory is `filename_root` or base32(md5); the file name is kept exactly (the task
/// runtime checks that a code bundle ends in `.tar.gz`), or random when not given.
pub fn upload_target(
    req: &CreateUploadLocationRequest,
    upload_prefix: &str,
    random_name: &str,
) -> Result<UploadTarget> {
    if req.project.is_empty() {
        return Err(Error::invalid("CreateUploadLocation: project is required"));
    }
    if req.domain.is_empty() {
        return Err(Error::invalid("CreateUploadLocation: domain is required"));
    }
    for (field, v) in [("project", &req.project), ("domain", &req.domain)] {
        if !super::ids::is_valid_token(v) {
            return Err(Error::invalid(format!(
                "CreateUploadLocation: {field} `{v}` may only contain letters, digits, - and _"
            )));
        }
    }
    let md5: Option<[u8; 16]> = match req.content_md5.len() {
        0 => None,
        16 => Some(req.content_md5.as_slice().try_into().expect("length checked")),
        n => return Err(Error::invalid(format!("CreateUploadLocation: content_md5 must be 16 bytes, got {n}"))),
    };
    let prefix = if !req.filename_root.is_empty() {
        req.filename_root.clone()
    } else if let Some(m) = md5 {
        data_encoding::BASE32.encode(&m)
    } else {
        return Err(Error::invalid("CreateUploadLocation: content_md5 or filename_root is required"));
    };
    let filename = if req.filename.is_empty() { random_name.to_string() } else { req.filename.clone() };
    for (field, v) in [("filename", &filename), ("filename_root", &prefix)] {
        if v.contains('/') || v.contains('\\') || v == "." || v == ".." || v.contains('\0') {
            return Err(Error::invalid(format!("CreateUploadLocation: {field} `{v}` must be a single path segment")));
        }
    }
    let up = upload_prefix.trim_matches('/');
    let key = if up.is_empty() {
        format!("{}/{}/{prefix}/{filename}", req.project, req.domain)
    } else {
        format!("{up}/{}/{}/{prefix}/{filename}", req.project, req.domain)
    };
    Ok(UploadTarget { key, md5 })
}

/// The signed query our HTTP endpoint checks: method, object key, expiry (unix seconds) and
/// expected MD5 (hex, or empty), so a URL cannot be reused for another object, method or body.
pub fn sign(key: &[u8], method: &str, object: &str, expires: i64, md5_hex: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("hmac takes any key length");
    mac.update(format!("{method}\n{object}\n{expires}\n{md5_hex}").as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Checks a signature in constant time, and the expiry against `now`.
pub fn verify(key: &[u8], method: &str, object: &str, expires: i64, md5_hex: &str, sig: &str, now: i64) -> Result<()> {
    if now > expires {
        return Err(Error::invalid("signed URL has expired"));
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("hmac takes any key length");
    mac.update(format!("{method}\n{object}\n{expires}\n{md5_hex}").as_bytes());
    let sig = hex::decode(sig).map_err(|_| Error::invalid("signed URL has a malformed signature"))?;
    mac.verify_slice(&sig).map_err(|_| Error::invalid("signed URL signature does not match"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> CreateUploadLocationRequest {
        CreateUploadLocationRequest {
            project: "flytesnacks".into(),
            domain: "development".into(),
            filename: "fastabc.tar.gz".into(),
            content_md5: vec![7; 16],
            ..Default::default()
        }
    }

    #[test]
    fn code_bundle_keeps_its_name_under_base32_md5() {
        let t = upload_target(&req(), "uploads", "rnd").unwrap();
        assert_eq!(
            t.key,
            format!("uploads/flytesnacks/development/{}/fastabc.tar.gz", data_encoding::BASE32.encode(&[7; 16]))
        );
        assert_eq!(t.md5, Some([7; 16]));
    }

    #[test]
    fn filename_root_wins_and_random_name_fills_in() {
        let mut r = req();
        r.filename_root = "ROOT".into();
        r.filename.clear();
        r.content_md5.clear();
        assert_eq!(upload_target(&r, "/u/", "rnd").unwrap().key, "u/flytesnacks/development/ROOT/rnd");
    }

    #[test]
    fn bad_requests_name_the_field() {
        let mut r = req();
        r.content_md5.clear();
        assert_eq!(
            upload_target(&r, "u", "x").unwrap_err().to_string(),
            "CreateUploadLocation: content_md5 or filename_root is required"
        );
        let mut r = req();
        r.content_md5 = vec![1, 2];
        assert_eq!(
            upload_target(&r, "u", "x").unwrap_err().to_string(),
            "CreateUploadLocation: content_md5 must be 16 bytes, got 2"
        );
        let mut r = req();
        r.filename = "../../etc/passwd".into();
        assert!(upload_target(&r, "u", "x").unwrap_err().to_string().contains("single path segment"));
        let mut r = req();
        r.project.clear();
        assert_eq!(upload_target(&r, "u", "x").unwrap_err().to_string(), "CreateUploadLocation: project is required");
    }

    #[test]
    fn signatures_bind_every_part() {
        let s = sign(b"k", "PUT", "a/b", 100, "ff");
        assert!(verify(b"k", "PUT", "a/b", 100, "ff", &s, 50).is_ok());
        assert!(verify(b"k", "GET", "a/b", 100, "ff", &s, 50).is_err());
        assert!(verify(b"k", "PUT", "a/c", 100, "ff", &s, 50).is_err());
        assert!(verify(b"k", "PUT", "a/b", 100, "", &s, 50).is_err());
        assert_eq!(verify(b"k", "PUT", "a/b", 100, "ff", &s, 101).unwrap_err().to_string(), "signed URL has expired");
    }
}
