//! Configuration of the lineage service.

use aloft_bus::BusConfig;
pub use aloft_runtime::grpc::HealthConfig;
use aloft_runtime::{ConfigError, Validate};
use serde::{Deserialize, Serialize};

/// Everything the lineage service reads at start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// NATS connection and topology (streams, subjects, delivery limits).
    pub bus: BusConfig,
    /// The gRPC health endpoint that deployments probe.
    pub health: HealthConfig,
}

impl Default for Config {
    fn default() -> Self {
        // 8091..8094 are scheduler, executor, notifier, lineage, so all five services share a host
        // with their defaults (metadata uses 8088/8089).
        Config { bus: BusConfig::default(), health: HealthConfig::at("127.0.0.1:8094") }
    }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        self.bus.validate_config()?;
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
        assert_eq!(Config::default().health.listen, "127.0.0.1:8094");
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
    fn printed_config_loads_back() {
        let text = aloft_runtime::config::to_toml(&Config::default());
        let back: Config = aloft_runtime::config::load_from(Some(("printed.toml", &text)), &[]).unwrap();
        assert_eq!(back, Config::default());
    }
}
