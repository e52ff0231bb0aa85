//! Configuration of the scheduler.

use aloft_bus::BusConfig;
pub use aloft_runtime::grpc::HealthConfig;
use aloft_runtime::{ConfigError, Validate};
use serde::{Deserialize, Serialize};

/// Everything the scheduler reads at start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// NATS connection and topology (streams, subjects, delivery limits).
    pub bus: BusConfig,
    /// The gRPC health endpoint that deployments probe.
    pub health: HealthConfig,
    /// The HTTP endpoint serving Prometheus `/metrics` (port 0: any free port).
    pub metrics: aloft_runtime::metrics::MetricsConfig,
    /// The blob store shared with metadata and executors (node inputs, workflow outputs).
    pub storage: aloft_blob::BlobConfig,
    /// Executor queue task runs are published to.
    pub queue: String,
    /// Extra attempts after system failures (crashes, lost executors, timeouts), on top of the
    /// task's own retries for recoverable user errors.
    pub system_retries: u32,
    /// Metadata's admin gRPC address, `host:port`: launch-plan nodes create their child
    /// executions there, and schedules fire there. Connected lazily, so metadata may start later.
    pub metadata_endpoint: String,
    /// Launch-plan schedules (off unless enabled).
    pub schedules: SchedulesConfig,
}

/// The schedule loop (`[schedules]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulesConfig {
    /// Run the schedule loop in this replica.
    pub enabled: bool,
    /// How often active launch plans are listed and due times fired.
    #[serde(with = "humantime_serde")]
    pub poll_interval: std::time::Duration,
    /// What to do with scheduled times missed while no replica ran: `all`, `latest` or `none`.
    pub catch_up: crate::schedule::CatchUp,
    /// With `catch_up = "all"`: at most this many missed times per schedule (the most recent).
    pub max_catch_up: u32,
    /// A due time older than this counts as missed (must exceed `poll_interval`).
    #[serde(with = "humantime_serde")]
    pub missed_after: std::time::Duration,
}

impl Default for SchedulesConfig {
    fn default() -> Self {
        SchedulesConfig {
            enabled: false,
            poll_interval: std::time::Duration::from_secs(10),
            catch_up: crate::schedule::CatchUp::Latest,
            max_catch_up: 10,
            missed_after: std::time::Duration::from_secs(60),
        }
    }
}

impl SchedulesConfig {
    /// The catch-up policy the pure core applies.
    pub fn policy(&self) -> crate::schedule::Policy {
        crate::schedule::Policy {
            catch_up: self.catch_up,
            max_catch_up: self.max_catch_up,
            missed_after: self.missed_after.as_secs() as i64,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if !self.enabled {
            return Ok(());
        }
        if self.poll_interval.is_zero() {
            return Err(ConfigError::invalid("schedules.poll_interval", "must be greater than zero"));
        }
        if self.missed_after <= self.poll_interval {
            // Otherwise a time due just after a pass is already "missed" at the next one.
            return Err(ConfigError::invalid("schedules.missed_after", "must be longer than schedules.poll_interval"));
        }
        Ok(())
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bus: BusConfig::default(),
            // 8091..8094 are scheduler, executor, notifier, lineage, so all five services share a host
            // with their defaults (metadata uses 8088/8089).
            health: HealthConfig::at("127.0.0.1:8091"),
            metrics: aloft_runtime::metrics::MetricsConfig::default(),
            storage: aloft_blob::BlobConfig::default(),
            queue: "default".into(),
            system_retries: 3,
            metadata_endpoint: "127.0.0.1:8089".into(),
            schedules: SchedulesConfig::default(),
        }
    }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        self.bus.validate_config()?;
        self.storage.validate().map_err(|e| ConfigError::invalid("storage", e.to_string()))?;
        if self.queue.is_empty() {
            return Err(ConfigError::invalid("queue", "must not be empty"));
        }
        aloft_runtime::grpc::validate_listen(&self.metadata_endpoint, "metadata_endpoint")?;
        self.schedules.validate()?;
        self.metrics.validate()?;
        self.health.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
        assert_eq!(Config::default().health.listen, "127.0.0.1:8091");
    }

    #[test]
    fn file_and_environment_set_nested_keys() {
        let c: Config = aloft_runtime::config::load_from(
            Some(("s.toml", "[bus]\nurl = \"nats://nats:4222\"\nack_wait = \"10s\"\n")),
            &env(&[("ALOFT_HEALTH__LISTEN", "0.0.0.0:9000")]),
        )
        .unwrap();
        assert_eq!(c.bus.url, "nats://nats:4222");
        assert_eq!(c.bus.ack_wait, std::time::Duration::from_secs(10));
        assert_eq!(c.health.listen, "0.0.0.0:9000");
    }

    #[test]
    fn unknown_key_is_named() {
        let err =
            aloft_runtime::config::load_from::<Config>(Some(("s.toml", "[health]\nport = 1\n")), &[]).unwrap_err();
        assert_eq!(err.to_string(), "unknown config key `health.port` (from s.toml)");
    }

    #[test]
    fn bad_values_name_their_key() {
        let err =
            aloft_runtime::config::load_from::<Config>(None, &env(&[("ALOFT_HEALTH__LISTEN", "8091")])).unwrap_err();
        assert_eq!(err.to_string(), "invalid value for config key `health.listen`: `8091` is not host:port");
        let err =
            aloft_runtime::config::load_from::<Config>(None, &env(&[("ALOFT_BUS__MAX_DELIVER", "0")])).unwrap_err();
        assert_eq!(err.to_string(), "invalid value for config key `bus`: max_deliver must be at least 1");
    }

    #[test]
    fn schedules_keys_load_and_validate() {
        let c: Config = aloft_runtime::config::load_from(
            Some((
                "s.toml",
                "metadata_endpoint = \"metadata:8089\"\n[schedules]\nenabled = true\npoll_interval = \"5s\"\n\
                 catch_up = \"all\"\nmax_catch_up = 3\nmissed_after = \"2m\"\n",
            )),
            &[],
        )
        .unwrap();
        assert!(c.schedules.enabled);
        assert_eq!(c.metadata_endpoint, "metadata:8089");
        assert_eq!(c.schedules.policy().catch_up, crate::schedule::CatchUp::All);
        assert_eq!((c.schedules.policy().max_catch_up, c.schedules.policy().missed_after), (3, 120));
        let err = aloft_runtime::config::load_from::<Config>(
            None,
            &env(&[("ALOFT_SCHEDULES__ENABLED", "true"), ("ALOFT_SCHEDULES__MISSED_AFTER", "5s")]),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid value for config key `schedules.missed_after`: must be longer than schedules.poll_interval"
        );
        let err =
            aloft_runtime::config::load_from::<Config>(Some(("s.toml", "[schedules]\ncatch_up = \"some\"\n")), &[])
                .unwrap_err();
        assert!(err.to_string().contains("schedules.catch_up"), "{err}");
    }

    #[test]
    fn printed_config_loads_back() {
        let text = aloft_runtime::config::to_toml(&Config::default());
        let back: Config = aloft_runtime::config::load_from(Some(("printed.toml", &text)), &[]).unwrap();
        assert_eq!(back, Config::default());
    }
}
