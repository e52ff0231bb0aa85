//! Configuration of the metadata service.

use std::time::Duration;

use aloft_blob::BlobConfig;
use aloft_runtime::{ConfigError, Validate};
use serde::{Deserialize, Serialize};

/// Everything the metadata service reads at start.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// gRPC: AdminService, DataProxyService, health.
    pub grpc: GrpcConfig,
    /// HTTP: signed upload/download URLs for the local-directory store.
    pub http: HttpConfig,
    /// `postgres://...` or `sqlite://path` (`sqlite://` creates the file).
    pub database_url: String,
    /// Where data, code bundles and closures live.
    pub storage: BlobConfig,
    /// Projects and domains.
    pub projects: ProjectsConfig,
    /// Data proxy settings.
    pub data_proxy: DataProxyConfig,
    /// NATS JetStream; without it the registry works and executions are refused.
    pub bus: Option<aloft_bus::BusConfig>,
    /// The sweep of unfinished executions for SLA breaches (see `sla`).
    pub sla: crate::sla::SlaConfig,
}

/// gRPC listener.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrpcConfig {
    /// host:port to serve on.
    pub listen: String,
}

/// HTTP listener for signed URLs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// host:port to serve on.
    pub listen: String,
    /// Base URL clients use to reach it (defaults to `http://<listen>`).
    pub public_url: String,
    /// Key signing upload/download URLs; random per start when empty (URLs then die with the process).
    pub signing_key: String,
}

/// How projects and domains are handled.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProjectsConfig {
    /// Create a project the first time something is registered in it (the embedded default);
    /// deployments set this to false so typos do not create projects.
    pub auto_create: bool,
    /// The domains every project has.
    pub domains: Vec<String>,
}

/// Data proxy (upload locations, download links).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataProxyConfig {
    /// Key prefix under the storage root for uploaded code bundles and inputs.
    pub upload_prefix: String,
    /// How long signed URLs live when the client does not say.
    #[serde(with = "humantime_serde")]
    pub default_expiry: Duration,
    /// The longest expiry a client may ask for.
    #[serde(with = "humantime_serde")]
    pub max_expiry: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            grpc: GrpcConfig::default(),
            http: HttpConfig::default(),
            database_url: "sqlite://aloft-data/metadata.db".into(),
            storage: BlobConfig::default(),
            projects: ProjectsConfig::default(),
            data_proxy: DataProxyConfig::default(),
            bus: None,
            sla: crate::sla::SlaConfig::default(),
        }
    }
}

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig { listen: "127.0.0.1:8089".into() }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig { listen: "127.0.0.1:8088".into(), public_url: String::new(), signing_key: String::new() }
    }
}

impl Default for ProjectsConfig {
    fn default() -> Self {
        ProjectsConfig { auto_create: true, domains: vec!["development".into(), "staging".into(), "production".into()] }
    }
}

impl Default for DataProxyConfig {
    fn default() -> Self {
        DataProxyConfig {
            upload_prefix: "uploads".into(),
            default_expiry: Duration::from_secs(3600),
            max_expiry: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        let db = &self.database_url;
        if !(db.starts_with("postgres://") || db.starts_with("postgresql://") || db.starts_with("sqlite:")) {
            return Err(ConfigError::invalid(
                "database_url",
                format!("`{db}` is neither postgres://... nor sqlite://..."),
            ));
        }
        if self.projects.domains.is_empty() {
            return Err(ConfigError::invalid("projects.domains", "at least one domain is required"));
        }
        for d in &self.projects.domains {
            if !crate::domain::ids::is_valid_token(d) {
                return Err(ConfigError::invalid("projects.domains", format!("`{d}` is not a valid domain name")));
            }
        }
        if !self.http.public_url.is_empty() && url::Url::parse(&self.http.public_url).is_err() {
            return Err(ConfigError::invalid("http.public_url", format!("`{}` is not a URL", self.http.public_url)));
        }
        self.storage.validate().map_err(|e| ConfigError::invalid("storage", e.to_string()))?;
        if let Some(bus) = &self.bus {
            bus.validate().map_err(|e| ConfigError::invalid("bus", e.to_string()))?;
        }
        self.sla.validate()?;
        Ok(())
    }
}

impl Config {
    /// The base URL of the HTTP side as clients see it.
    pub fn public_http_url(&self, bound: std::net::SocketAddr) -> String {
        if self.http.public_url.is_empty() {
            format!("http://{bound}")
        } else {
            self.http.public_url.trim_end_matches('/').to_string()
        }
    }
}
