//! `BlobConfig`: which backend, where its root is, and how to reach S3.

use serde::{Deserialize, Serialize};

use crate::error::{BlobError, Result};
use crate::uri;

/// Root used by [`BlobConfig::default`]: a single-host install keeps its data here.
pub const DEFAULT_LOCAL_ROOT: &str = "/var/lib/aloft/data";

/// Which backend a [`BlobConfig`] selects.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobKind {
    /// A local directory; uris are plain absolute paths.
    #[default]
    Local,
    /// An S3 bucket (AWS or any S3-compatible server); uris are `s3://bucket/key`.
    S3,
}

/// Blob-store settings, usually embedded in a service config as `[blob]`.
///
/// Error messages name keys as `blob.<field>`. `secret_key` is redacted by `Debug` and
/// `Serialize` so `--print-config` and logs never show it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BlobConfig {
    /// `local` (default) or `s3`.
    pub kind: BlobKind,
    /// Local: an absolute directory (created if missing). S3: `s3://bucket` or `s3://bucket/prefix`.
    pub root: String,
    /// S3 only: endpoint URL of an S3-compatible server (`http://127.0.0.1:9000`). Unset: AWS
    /// (or `AWS_ENDPOINT_URL` from the environment).
    pub endpoint: Option<String>,
    /// S3 only: region. Unset: the default AWS chain (`AWS_REGION`, profile), else `us-east-1`.
    pub region: Option<String>,
    /// S3 only: static access key id. Unset (together with `secret_key`): the default AWS
    /// credential chain (environment, profile, web identity, ECS, IMDS).
    pub access_key: Option<String>,
    /// S3 only: static secret access key; required exactly when `access_key` is set.
    #[serde(serialize_with = "redact")]
    pub secret_key: Option<String>,
    /// S3 only: address buckets as `endpoint/bucket/key` instead of `bucket.endpoint/key`;
    /// needed by most S3-compatible servers reached by host name.
    pub force_path_style: bool,
    /// Local only: fsync each file before renaming it into place. Off by default: the data is
    /// reproducible from the run that wrote it, and fsync dominates the cost of small writes.
    pub fsync: bool,
}

impl Default for BlobConfig {
    fn default() -> Self {
        Self::local(DEFAULT_LOCAL_ROOT)
    }
}

impl std::fmt::Debug for BlobConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobConfig")
            .field("kind", &self.kind)
            .field("root", &self.root)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key", &self.access_key)
            .field("secret_key", &self.secret_key.as_ref().map(|_| REDACTED))
            .field("force_path_style", &self.force_path_style)
            .field("fsync", &self.fsync)
            .finish()
    }
}

const REDACTED: &str = "<redacted>";

fn redact<S: serde::Serializer>(value: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(_) => s.serialize_some(REDACTED),
        None => s.serialize_none(),
    }
}

impl BlobConfig {
    /// A local directory store rooted at `root` (an absolute path).
    pub fn local(root: impl Into<String>) -> Self {
        Self {
            kind: BlobKind::Local,
            root: root.into(),
            endpoint: None,
            region: None,
            access_key: None,
            secret_key: None,
            force_path_style: false,
            fsync: false,
        }
    }

    /// An S3 store rooted at `root` (`s3://bucket[/prefix]`) using the default AWS chain for
    /// region and credentials; set the other fields for S3-compatible servers.
    pub fn s3(root: impl Into<String>) -> Self {
        Self { kind: BlobKind::S3, ..Self::local(root) }
    }

    /// Checks every key and returns the first problem as [`BlobError::Config`] naming the key.
    pub fn validate(&self) -> Result<()> {
        if self.root.trim().is_empty() {
            return Err(BlobError::config("blob.root", "must not be empty"));
        }
        match self.kind {
            BlobKind::Local => self.validate_local(),
            BlobKind::S3 => self.validate_s3(),
        }
    }

    fn validate_local(&self) -> Result<()> {
        if self.root.starts_with("s3://") {
            return Err(BlobError::config(
                "blob.root",
                "is an s3:// uri but blob.kind is \"local\"; set blob.kind = \"s3\"",
            ));
        }
        // A scheme here would end up inside Flyte literals, which flytekit cannot read back.
        if self.root.contains("://") {
            return Err(BlobError::config(
                "blob.root",
                format!("{:?} has a scheme; a local root is a plain absolute path", self.root),
            ));
        }
        uri::check_local_path(&self.root).map_err(|reason| BlobError::config("blob.root", reason))?;
        // S3 settings on a local store are almost always a forgotten `kind = "s3"`.
        let s3_only = [
            ("blob.endpoint", self.endpoint.is_some()),
            ("blob.region", self.region.is_some()),
            ("blob.access_key", self.access_key.is_some()),
            ("blob.secret_key", self.secret_key.is_some()),
            ("blob.force_path_style", self.force_path_style),
        ];
        if let Some((key, _)) = s3_only.iter().find(|(_, set)| *set) {
            return Err(BlobError::config(key, "applies only to blob.kind = \"s3\" but blob.kind is \"local\""));
        }
        Ok(())
    }

    fn validate_s3(&self) -> Result<()> {
        let (bucket, prefix) = uri::split_s3(&self.root).map_err(|reason| BlobError::config("blob.root", reason))?;
        uri::check_bucket(bucket).map_err(|reason| BlobError::config("blob.root", reason))?;
        uri::check_key_segments(prefix, true).map_err(|reason| BlobError::config("blob.root", reason))?;
        if let Some(endpoint) = &self.endpoint {
            let rest =
                endpoint.strip_prefix("http://").or_else(|| endpoint.strip_prefix("https://")).ok_or_else(|| {
                    BlobError::config("blob.endpoint", format!("{endpoint:?} must start with http:// or https://"))
                })?;
            if rest.is_empty() || rest.starts_with('/') {
                return Err(BlobError::config("blob.endpoint", format!("{endpoint:?} has no host")));
            }
        }
        if let Some(region) = &self.region
            && region.trim().is_empty()
        {
            return Err(BlobError::config("blob.region", "must not be empty when set"));
        }
        match (&self.access_key, &self.secret_key) {
            (Some(a), Some(s)) => {
                if a.is_empty() {
                    return Err(BlobError::config("blob.access_key", "must not be empty when set"));
                }
                if s.is_empty() {
                    return Err(BlobError::config("blob.secret_key", "must not be empty when set"));
                }
            }
            (Some(_), None) => {
                return Err(BlobError::config("blob.secret_key", "must be set when blob.access_key is set"));
            }
            (None, Some(_)) => {
                return Err(BlobError::config("blob.access_key", "must be set when blob.secret_key is set"));
            }
            (None, None) => {}
        }
        if self.fsync {
            return Err(BlobError::config(
                "blob.fsync",
                "applies only to blob.kind = \"local\" but blob.kind is \"s3\"",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err_key(config: &BlobConfig) -> &'static str {
        match config.validate() {
            Err(BlobError::Config { key, .. }) => key,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    fn s3_full() -> BlobConfig {
        BlobConfig {
            endpoint: Some("http://127.0.0.1:9000".into()),
            region: Some("us-east-1".into()),
            access_key: Some("ak".into()),
            secret_key: Some("sk".into()),
            force_path_style: true,
            ..BlobConfig::s3("s3://bucket/prefix")
        }
    }

    #[test]
    fn default_is_a_valid_local_store() {
        let config = BlobConfig::default();
        assert_eq!(config.kind, BlobKind::Local);
        assert_eq!(config.root, DEFAULT_LOCAL_ROOT);
        config.validate().unwrap();
    }

    #[test]
    fn valid_s3_configs() {
        s3_full().validate().unwrap();
        BlobConfig::s3("s3://bucket").validate().unwrap();
        BlobConfig::s3("s3://bucket/").validate().unwrap();
    }

    #[test]
    fn local_root_must_be_absolute_without_scheme() {
        assert_eq!(err_key(&BlobConfig::local("")), "blob.root");
        assert_eq!(err_key(&BlobConfig::local("relative/dir")), "blob.root");
        assert_eq!(err_key(&BlobConfig::local("file:///var/data")), "blob.root");
        assert_eq!(err_key(&BlobConfig::local("s3://bucket/x")), "blob.root");
        assert_eq!(err_key(&BlobConfig::local("/var/../etc")), "blob.root");
    }

    #[test]
    fn s3_keys_on_a_local_store_are_named() {
        let config = BlobConfig { endpoint: Some("http://x".into()), ..BlobConfig::local("/data") };
        assert_eq!(err_key(&config), "blob.endpoint");
        let config = BlobConfig { force_path_style: true, ..BlobConfig::local("/data") };
        assert_eq!(err_key(&config), "blob.force_path_style");
    }

    #[test]
    fn s3_errors_name_the_key() {
        assert_eq!(err_key(&BlobConfig { root: "/data".into(), ..s3_full() }), "blob.root");
        assert_eq!(err_key(&BlobConfig { root: "s3://".into(), ..s3_full() }), "blob.root");
        assert_eq!(err_key(&BlobConfig { root: "s3://b/../x".into(), ..s3_full() }), "blob.root");
        assert_eq!(err_key(&BlobConfig { endpoint: Some("127.0.0.1:9000".into()), ..s3_full() }), "blob.endpoint");
        assert_eq!(err_key(&BlobConfig { endpoint: Some("http://".into()), ..s3_full() }), "blob.endpoint");
        assert_eq!(err_key(&BlobConfig { region: Some(" ".into()), ..s3_full() }), "blob.region");
        assert_eq!(err_key(&BlobConfig { secret_key: None, ..s3_full() }), "blob.secret_key");
        assert_eq!(err_key(&BlobConfig { access_key: None, ..s3_full() }), "blob.access_key");
        assert_eq!(err_key(&BlobConfig { access_key: Some(String::new()), ..s3_full() }), "blob.access_key");
        assert_eq!(err_key(&BlobConfig { fsync: true, ..s3_full() }), "blob.fsync");
    }

    #[test]
    fn error_message_names_key_and_is_lowercase() {
        let message = BlobConfig { secret_key: None, ..s3_full() }.validate().unwrap_err().to_string();
        assert_eq!(message, "invalid blob config blob.secret_key: must be set when blob.access_key is set");
    }

    #[test]
    fn deserializes_from_toml_with_defaults() {
        let config: BlobConfig = toml::from_str("").unwrap();
        assert_eq!(config, BlobConfig::default());
        let config: BlobConfig = toml::from_str(
            r#"
            kind = "s3"
            root = "s3://bucket/prefix"
            endpoint = "http://127.0.0.1:9000"
            region = "us-east-1"
            access_key = "ak"
            secret_key = "sk"
            force_path_style = true
            "#,
        )
        .unwrap();
        assert_eq!(config, s3_full());
        assert!(toml::from_str::<BlobConfig>("kind = \"gcs\"").is_err());
        assert!(toml::from_str::<BlobConfig>("bucket = \"x\"").is_err(), "unknown keys are rejected");
    }

    #[test]
    fn secret_is_redacted_in_debug_and_serialize() {
        let config = s3_full();
        let debug = format!("{config:?}");
        assert!(!debug.contains("\"sk\""), "{debug}");
        assert!(debug.contains("<redacted>"));
        let printed = serde_json::to_string(&config).unwrap();
        assert!(printed.contains(r#""secret_key":"<redacted>""#), "{printed}");
    }
}
