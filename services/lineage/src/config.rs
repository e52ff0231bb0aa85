//! Configuration of the lineage service.

use std::time::Duration;

use aloft_blob::BlobConfig;
use aloft_bus::BusConfig;
pub use aloft_runtime::grpc::HealthConfig;
use aloft_runtime::{ConfigError, Validate};
use serde::{Deserialize, Serialize};

use crate::domain::declarations::ENVS;
use crate::domain::export::{DataHubNames, OpenLineageNames, Settings};

const REDACTED: &str = "<redacted>";

fn redact<S: serde::Serializer>(value: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(_) => s.serialize_some(REDACTED),
        None => s.serialize_none(),
    }
}

/// Everything the lineage service reads at start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// NATS connection and topology (streams, subjects, delivery limits).
    pub bus: BusConfig,
    /// The gRPC listener: `LineageService` and the health service deployments probe.
    pub health: HealthConfig,
    /// The HTTP endpoint serving Prometheus `/metrics` (port 0: any free port).
    pub metrics: aloft_runtime::metrics::MetricsConfig,
    /// The lineage service's own database (`sqlite://...` or `postgres://...`).
    pub database_url: String,
    /// The blob store the runs write to (input and output LiteralMaps are read from it).
    pub storage: BlobConfig,
    /// The metadata service, asked which workflow and launch plan each run is.
    pub metadata: MetadataConfig,
    /// Catalogs the graph is exported to.
    pub export: ExportConfig,
}

impl Default for Config {
    fn default() -> Self {
        // 8091..8094 are scheduler, executor, notifier, lineage, so all five services share a host
        // with their defaults (metadata uses 8088/8089).
        Config {
            bus: BusConfig::default(),
            health: HealthConfig::at("127.0.0.1:8094"),
            metrics: aloft_runtime::metrics::MetricsConfig::default(),
            database_url: "sqlite://aloft-data/lineage.db".into(),
            storage: BlobConfig::default(),
            metadata: MetadataConfig::default(),
            export: ExportConfig::default(),
        }
    }
}

/// Where the admin API is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetadataConfig {
    /// `http://host:port` of metadata's gRPC listener.
    pub endpoint: String,
    /// Per call.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for MetadataConfig {
    fn default() -> Self {
        MetadataConfig { endpoint: "http://127.0.0.1:8089".into(), timeout: Duration::from_secs(10) }
    }
}

/// Exporters and how the outbox is drained.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExportConfig {
    /// DataHub (off while `url` is empty).
    pub datahub: DataHubConfig,
    /// OpenLineage (off while `url` is empty).
    pub openlineage: OpenLineageConfig,
    /// Failed sends of one payload before it is given up (marked dead).
    pub max_attempts: u32,
    /// First retry delay; doubled per failure up to `max_backoff`.
    #[serde(with = "humantime_serde")]
    pub initial_backoff: Duration,
    /// Longest retry delay.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Per HTTP request.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// How often the outbox is checked when it was empty.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
}

impl Default for ExportConfig {
    fn default() -> Self {
        ExportConfig {
            datahub: DataHubConfig::default(),
            openlineage: OpenLineageConfig::default(),
            max_attempts: 20,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            timeout: Duration::from_secs(10),
            poll_interval: Duration::from_secs(1),
        }
    }
}

/// DataHub GMS.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataHubConfig {
    /// GMS base URL (`http://datahub-gms:8080`, or `https://host/api/gms`); empty: off.
    pub url: String,
    /// Personal access token, sent as `Authorization: Bearer`.
    #[serde(serialize_with = "redact")]
    pub token: Option<String>,
    /// FabricType of datasets and models.
    pub env: String,
    /// Orchestrator name in dataFlow URNs.
    pub orchestrator: String,
    /// Cluster in dataFlow URNs.
    pub cluster: String,
}

impl Default for DataHubConfig {
    fn default() -> Self {
        DataHubConfig {
            url: String::new(),
            token: None,
            env: "PROD".into(),
            orchestrator: "aloft".into(),
            cluster: "prod".into(),
        }
    }
}

impl std::fmt::Debug for DataHubConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataHubConfig")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| REDACTED))
            .field("env", &self.env)
            .field("orchestrator", &self.orchestrator)
            .field("cluster", &self.cluster)
            .finish()
    }
}

/// An OpenLineage HTTP endpoint.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpenLineageConfig {
    /// The full URL RunEvents are POSTed to (`http://marquez:5000/api/v1/lineage`); empty: off.
    pub url: String,
    /// Namespace of every job.
    pub namespace: String,
    /// Sent as `Authorization: Bearer` when set.
    #[serde(serialize_with = "redact")]
    pub api_key: Option<String>,
}

impl Default for OpenLineageConfig {
    fn default() -> Self {
        OpenLineageConfig { url: String::new(), namespace: "aloft".into(), api_key: None }
    }
}

impl std::fmt::Debug for OpenLineageConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenLineageConfig")
            .field("url", &self.url)
            .field("namespace", &self.namespace)
            .field("api_key", &self.api_key.as_ref().map(|_| REDACTED))
            .finish()
    }
}

fn check_http_url(url: &str, key: &str) -> Result<(), ConfigError> {
    let rest = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://"));
    match rest {
        Some(r) if !r.is_empty() && !r.starts_with('/') => Ok(()),
        _ => Err(ConfigError::invalid(key, format!("`{url}` is not an http:// or https:// URL"))),
    }
}

impl ExportConfig {
    /// The datahub section when it is on.
    pub fn datahub_on(&self) -> Option<&DataHubConfig> {
        (!self.datahub.url.is_empty()).then_some(&self.datahub)
    }

    /// The openlineage section when it is on.
    pub fn openlineage_on(&self) -> Option<&OpenLineageConfig> {
        (!self.openlineage.url.is_empty()).then_some(&self.openlineage)
    }

    /// What the pure core needs to build payloads.
    pub fn settings(&self) -> Settings {
        Settings {
            datahub: self.datahub_on().map(|d| DataHubNames {
                env: d.env.clone(),
                orchestrator: d.orchestrator.clone(),
                cluster: d.cluster.clone(),
            }),
            openlineage: self.openlineage_on().map(|o| OpenLineageNames { namespace: o.namespace.clone() }),
        }
    }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        self.bus.validate_config()?;
        self.health.validate()?;
        self.metrics.validate()?;
        let db = &self.database_url;
        if !(db.starts_with("sqlite:") || db.starts_with("postgres://") || db.starts_with("postgresql://")) {
            return Err(ConfigError::invalid("database_url", "must start with sqlite:, postgres:// or postgresql://"));
        }
        self.storage.validate().map_err(|e| ConfigError::invalid("storage", e.to_string()))?;
        check_http_url(&self.metadata.endpoint, "metadata.endpoint")?;
        if self.metadata.timeout.is_zero() {
            return Err(ConfigError::invalid("metadata.timeout", "must be more than 0s"));
        }
        let e = &self.export;
        if let Some(d) = e.datahub_on() {
            check_http_url(&d.url, "export.datahub.url")?;
            if !ENVS.contains(&d.env.as_str()) {
                return Err(ConfigError::invalid("export.datahub.env", format!("must be one of {}", ENVS.join(", "))));
            }
            for (key, v) in [("export.datahub.orchestrator", &d.orchestrator), ("export.datahub.cluster", &d.cluster)] {
                if !crate::domain::declarations::is_valid_name(v) {
                    return Err(ConfigError::invalid(key, format!("`{v}` must be letters, digits, '_', '-' or '.'")));
                }
            }
        }
        if let Some(o) = e.openlineage_on() {
            check_http_url(&o.url, "export.openlineage.url")?;
            if o.namespace.trim().is_empty() {
                return Err(ConfigError::invalid("export.openlineage.namespace", "must not be empty"));
            }
        }
        if e.max_attempts == 0 {
            return Err(ConfigError::invalid("export.max_attempts", "must be at least 1"));
        }
        if e.initial_backoff.is_zero() || e.max_backoff < e.initial_backoff {
            return Err(ConfigError::invalid(
                "export.max_backoff",
                "initial_backoff must be more than 0s and max_backoff at least initial_backoff",
            ));
        }
        if e.timeout.is_zero() || e.poll_interval.is_zero() {
            return Err(ConfigError::invalid("export.timeout", "timeout and poll_interval must be more than 0s"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn load(file: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        aloft_runtime::config::load_from::<Config>(Some(("s.toml", file)), &env(vars))
    }

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
        assert_eq!(Config::default().health.listen, "127.0.0.1:8094");
        assert_eq!(Config::default().export.settings(), Settings::default());
    }

    #[test]
    fn file_and_environment_set_nested_keys() {
        let c = load(
            "[bus]\nurl = \"nats://nats:4222\"\nack_wait = \"10s\"\n[export.datahub]\nurl = \"http://gms:8080\"\n",
            &[
                ("ALOFT_HEALTH__LISTEN", "0.0.0.0:9000"),
                ("ALOFT_EXPORT__OPENLINEAGE__URL", "http://marquez:5000/api/v1/lineage"),
                ("ALOFT_EXPORT__DATAHUB__TOKEN", "secret-token"),
            ],
        )
        .unwrap();
        assert_eq!(c.bus.url, "nats://nats:4222");
        assert_eq!(c.bus.ack_wait, Duration::from_secs(10));
        assert_eq!(c.health.listen, "0.0.0.0:9000");
        assert_eq!(c.export.datahub.token.as_deref(), Some("secret-token"));
        let s = c.export.settings();
        assert_eq!(s.datahub.unwrap().env, "PROD");
        assert_eq!(s.openlineage.unwrap().namespace, "aloft");
    }

    #[test]
    fn secrets_never_print() {
        let mut c = Config::default();
        c.export.datahub.token = Some("tok-123".into());
        c.export.openlineage.api_key = Some("key-456".into());
        let printed = aloft_runtime::config::to_toml(&c);
        let debugged = format!("{c:?}");
        for text in [printed, debugged] {
            assert!(!text.contains("tok-123") && !text.contains("key-456"), "{text}");
            assert!(text.contains(REDACTED));
        }
    }

    #[test]
    fn unknown_key_is_named() {
        let err = load("[export.datahub]\ntokn = \"x\"\n", &[]).unwrap_err();
        assert_eq!(err.to_string(), "unknown config key `export.datahub.tokn` (from s.toml)");
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            (
                "",
                ("ALOFT_HEALTH__LISTEN", "8091"),
                "invalid value for config key `health.listen`: `8091` is not host:port",
            ),
            ("", ("ALOFT_BUS__MAX_DELIVER", "0"), "invalid value for config key `bus`: max_deliver must be at least 1"),
            (
                "",
                ("ALOFT_DATABASE_URL", "mysql://x"),
                "invalid value for config key `database_url`: must start with sqlite:, postgres:// or postgresql://",
            ),
            (
                "",
                ("ALOFT_EXPORT__DATAHUB__URL", "gms:8080"),
                "invalid value for config key `export.datahub.url`: `gms:8080` is not an http:// or https:// URL",
            ),
            (
                "[export.datahub]\nurl = \"http://gms\"\nenv = \"prod\"\n",
                ("X", ""),
                "invalid value for config key `export.datahub.env`: must be one of DEV, TEST, QA, UAT, EI, PRE, STG, NON_PROD, PROD, CORP",
            ),
            (
                "",
                ("ALOFT_METADATA__ENDPOINT", "127.0.0.1:8089"),
                "invalid value for config key `metadata.endpoint`: `127.0.0.1:8089` is not an http:// or https:// URL",
            ),
            (
                "",
                ("ALOFT_EXPORT__MAX_ATTEMPTS", "0"),
                "invalid value for config key `export.max_attempts`: must be at least 1",
            ),
        ];
        for (file, var, expected) in cases {
            assert_eq!(load(file, &[var]).unwrap_err().to_string(), expected);
        }
    }

    #[test]
    fn printed_config_loads_back() {
        let text = aloft_runtime::config::to_toml(&Config::default());
        let back: Config = aloft_runtime::config::load_from(Some(("printed.toml", &text)), &[]).unwrap();
        assert_eq!(back, Config::default());
    }
}
