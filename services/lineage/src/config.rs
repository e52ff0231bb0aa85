//! Configuration of the lineage service.

use aloft_bus::BusConfig;
use aloft_runtime::{ConfigError, Validate};
use serde::{Deserialize, Serialize};

/// Everything the lineage service reads at start.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// NATS connection and topology (streams, subjects, delivery limits).
    pub bus: BusConfig,
    /// The gRPC health endpoint that deployments probe.
    pub health: HealthConfig,
}

/// The health listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// host:port serving `grpc.health.v1.Health` (port 0 picks a free port).
    pub listen: String,
}

impl Default for HealthConfig {
    fn default() -> Self {
        // 8091..8094 are scheduler, executor, notifier, lineage: all five services can run on one
        // host with their defaults (metadata uses 8088/8089).
        HealthConfig { listen: "127.0.0.1:8094".into() }
    }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        validate_bus(&self.bus)?;
        validate_listen(&self.health.listen, "health.listen")
    }
}

/// The bus checks its own fields; its messages start with the field name, so only the section
/// is added here.
pub(crate) fn validate_bus(bus: &BusConfig) -> Result<(), ConfigError> {
    bus.validate().map_err(|e| match e {
        aloft_bus::Error::Config(message) => ConfigError::invalid("bus", message),
        other => ConfigError::invalid("bus", other.to_string()),
    })
}

/// A listen address must be `host:port`; whether the host resolves is left to binding, which
/// reports it with the same key.
pub(crate) fn validate_listen(listen: &str, key: &str) -> Result<(), ConfigError> {
    match listen.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
        _ => Err(ConfigError::invalid(key, format!("`{listen}` is not host:port"))),
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
