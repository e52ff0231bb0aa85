//! Pure uri handling shared by both backends: joining, splitting `s3://` uris and the segment
//! rules that keep the two backends' semantics identical.

/// Joins `relative` onto `base` with exactly one `/` between them.
///
/// Pure string work, valid for both uri forms: `join("s3://b/p/", "/x/inputs.pb")` is
/// `s3://b/p/x/inputs.pb`, `join("/data", "x")` is `/data/x`. `relative` may contain several
/// segments. Nothing is normalised or checked here; operations reject `..` and similar later.
pub fn join(base: &str, relative: &str) -> String {
    let relative = relative.trim_start_matches('/');
    // Keep "s3://" intact when a bucket-less base is (mis)used.
    let base = match base.strip_suffix("://") {
        Some(_) => base,
        None => base.trim_end_matches('/'),
    };
    if relative.is_empty() {
        return base.to_string();
    }
    if base.ends_with("://") { format!("{base}{relative}") } else { format!("{base}/{relative}") }
}

/// Splits `s3://bucket/key` into `(bucket, key)`; `key` may be empty.
pub(crate) fn split_s3(uri: &str) -> Result<(&str, &str), String> {
    let rest = uri.strip_prefix("s3://").ok_or_else(|| "expected an s3://bucket/key uri".to_string())?;
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err("has no bucket".to_string());
    }
    Ok((bucket, key))
}

/// Bucket names as S3 and the common S3-compatible servers accept them (lenient on length and
/// case, which the server checks anyway).
pub(crate) fn check_bucket(bucket: &str) -> Result<(), String> {
    if bucket.is_empty() {
        return Err("has no bucket".to_string());
    }
    if let Some(c) = bucket.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))) {
        return Err(format!("bucket {bucket:?} contains {c:?}"));
    }
    Ok(())
}

/// Rejects `.`/`..` segments, empty segments (`a//b`) and NUL in a key or path.
///
/// A local directory would resolve these while S3 would store them literally (and some
/// S3-compatible servers normalise them), so the same uri could name different objects on the two
/// backends; `..` would also let a caller climb out of the local root. A single trailing `/` is
/// allowed when `allow_trailing_slash` (prefixes and roots).
pub(crate) fn check_key_segments(key: &str, allow_trailing_slash: bool) -> Result<(), String> {
    if key.contains('\0') {
        return Err("contains a NUL byte".to_string());
    }
    let key = if allow_trailing_slash { key.strip_suffix('/').unwrap_or(key) } else { key };
    if key.is_empty() {
        return Ok(());
    }
    for segment in key.split('/') {
        match segment {
            ".." => return Err("contains a '..' segment".to_string()),
            "." => return Err("contains a '.' segment".to_string()),
            "" => return Err("contains an empty path segment".to_string()),
            _ => {}
        }
    }
    Ok(())
}

/// A local root or path: absolute, no scheme, segments as in [`check_key_segments`].
pub(crate) fn check_local_path(path: &str) -> Result<(), String> {
    let Some(relative) = path.strip_prefix('/') else {
        return Err(format!("{path:?} is not an absolute path"));
    };
    check_key_segments(relative, true)
}

/// Percent-encodes an S3 key for the `x-amz-copy-source` header, which (unlike the request
/// path) the SDK passes through verbatim. `/` stays as the separator.
pub(crate) fn encode_copy_source(bucket: &str, key: &str) -> String {
    let mut out = String::with_capacity(bucket.len() + key.len() + 1);
    out.push_str(bucket);
    out.push('/');
    for byte in key.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_puts_exactly_one_slash() {
        assert_eq!(join("s3://b/p", "x/inputs.pb"), "s3://b/p/x/inputs.pb");
        assert_eq!(join("s3://b/p/", "/x"), "s3://b/p/x");
        assert_eq!(join("s3://b", "x"), "s3://b/x");
        assert_eq!(join("/data", "a/b"), "/data/a/b");
        assert_eq!(join("/data//", "//a"), "/data/a");
        assert_eq!(join("/", "a"), "/a");
        assert_eq!(join("/data", ""), "/data");
        assert_eq!(join("s3://", "b/k"), "s3://b/k");
    }

    #[test]
    fn join_builds_the_flyte_layout() {
        let data = join(&join("s3://bucket/metadata", "proj/dev/exec1/n0"), "data");
        assert_eq!(join(&data, "inputs.pb"), "s3://bucket/metadata/proj/dev/exec1/n0/data/inputs.pb");
        assert_eq!(join(&data, "0/outputs.pb"), "s3://bucket/metadata/proj/dev/exec1/n0/data/0/outputs.pb");
    }

    #[test]
    fn splits_s3_uris() {
        assert_eq!(split_s3("s3://b/k/x"), Ok(("b", "k/x")));
        assert_eq!(split_s3("s3://b"), Ok(("b", "")));
        assert_eq!(split_s3("s3://b/"), Ok(("b", "")));
        assert!(split_s3("s3:///k").is_err());
        assert!(split_s3("/local/path").is_err());
        assert!(split_s3("S3://b/k").is_err());
    }

    #[test]
    fn segment_rules() {
        assert!(check_key_segments("a/b/c.pb", false).is_ok());
        assert!(check_key_segments("a/b/", true).is_ok());
        assert!(check_key_segments("", true).is_ok());
        assert!(check_key_segments("a/b/", false).is_err());
        assert!(check_key_segments("a/../b", false).is_err());
        assert!(check_key_segments("..", false).is_err());
        assert!(check_key_segments("a/./b", false).is_err());
        assert!(check_key_segments("a//b", false).is_err());
        assert!(check_key_segments("a\0b", false).is_err());
        assert!(check_key_segments("/k", false).is_err(), "an S3 key starting with '/' has an empty segment");
        // dots inside a name are fine
        assert!(check_key_segments("a/..b/c..", false).is_ok());
    }

    #[test]
    fn local_paths_are_absolute() {
        assert!(check_local_path("/var/lib/aloft").is_ok());
        assert!(check_local_path("/var/lib/aloft/").is_ok());
        assert!(check_local_path("var/lib").is_err());
        assert!(check_local_path("/var/../etc").is_err());
    }

    #[test]
    fn copy_source_is_percent_encoded() {
        assert_eq!(encode_copy_source("b", "a/b c+d=é.pb"), "b/a/b%20c%2Bd%3D%C3%A9.pb");
    }
}
