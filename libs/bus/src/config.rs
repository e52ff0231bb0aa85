//! Bus configuration: where the server is and how the streams and consumers are shaped.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::topology::{is_valid_name, is_valid_subject_prefix};

/// Connection and topology settings. Durations are human strings in files (`"30s"`, `"7d"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BusConfig {
    /// NATS server URL, e.g. `nats://127.0.0.1:4222`.
    pub url: String,
    /// Prefix of stream and key-value bucket names (`<prefix>_COMMANDS`, ...). Letters, digits,
    /// `_` and `-` only.
    pub stream_prefix: String,
    /// First token(s) of every subject (`<prefix>.cmd.execute`, ...). Two deployments (or two
    /// tests) with different prefixes never see each other's messages.
    pub subject_prefix: String,
    /// How long execution events stay in the EVENTS stream.
    #[serde(with = "humantime_serde")]
    pub event_max_age: Duration,
    /// How many times one message is delivered before the server gives up on it.
    pub max_deliver: u32,
    /// How long a delivered message may stay unacknowledged before it is redelivered; long work
    /// sends `in_progress` heartbeats well within it.
    #[serde(with = "humantime_serde")]
    pub ack_wait: Duration,
    /// Window in which a second publish with the same envelope id is dropped by the server.
    #[serde(with = "humantime_serde")]
    pub duplicate_window: Duration,
    /// Bound on establishing the connection, so a missing server fails startup instead of hanging.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Stream and bucket replicas: 1 for a single server, 3 for a production cluster.
    pub replicas: usize,
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            url: "nats://127.0.0.1:4222".into(),
            stream_prefix: "ALOFT".into(),
            subject_prefix: "aloft".into(),
            event_max_age: Duration::from_secs(7 * 24 * 3600),
            max_deliver: 5,
            ack_wait: Duration::from_secs(30),
            duplicate_window: Duration::from_secs(120),
            connect_timeout: Duration::from_secs(5),
            replicas: 1,
        }
    }
}

impl BusConfig {
    /// Checks every field, naming the first bad one.
    /// [`BusConfig::validate`] as a configuration error under the `bus` section, for services'
    /// `Validate` implementations (the bus's messages start with the field name).
    pub fn validate_config(&self) -> std::result::Result<(), aloft_runtime::ConfigError> {
        self.validate().map_err(|e| match e {
            crate::Error::Config(message) => aloft_runtime::ConfigError::invalid("bus", message),
            other => aloft_runtime::ConfigError::invalid("bus", other.to_string()),
        })
    }

    /// Checks every field, naming the first bad one.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::Config(msg));
        if self.url.trim().is_empty() {
            return bad("url is empty".into());
        }
        if !is_valid_name(&self.stream_prefix) {
            return bad(format!(
                "stream_prefix {:?} must be non-empty letters, digits, '_' or '-'",
                self.stream_prefix
            ));
        }
        if !is_valid_subject_prefix(&self.subject_prefix) {
            return bad(format!(
                "subject_prefix {:?} must be dot-separated non-empty tokens without '*', '>', whitespace or a leading '$'/'_INBOX'",
                self.subject_prefix
            ));
        }
        if self.max_deliver == 0 {
            return bad("max_deliver must be at least 1".into());
        }
        if self.ack_wait.is_zero() {
            return bad("ack_wait must be positive".into());
        }
        if self.connect_timeout.is_zero() {
            return bad("connect_timeout must be positive".into());
        }
        if self.duplicate_window.is_zero() {
            return bad("duplicate_window must be positive".into());
        }
        // The server rejects a stream whose dedupe window outlives its messages.
        if self.event_max_age < self.duplicate_window {
            return bad(format!(
                "event_max_age ({:?}) must not be shorter than duplicate_window ({:?})",
                self.event_max_age, self.duplicate_window
            ));
        }
        if !(1..=5).contains(&self.replicas) {
            return bad(format!("replicas must be between 1 and 5, got {}", self.replicas));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        BusConfig::default().validate().unwrap();
    }

    #[test]
    fn parses_human_durations_and_keeps_defaults() {
        let cfg: BusConfig = toml::from_str(
            r#"
            url = "nats://nats:4222"
            stream_prefix = "T1"
            event_max_age = "1d"
            ack_wait = "1s"
            "#,
        )
        .unwrap();
        assert_eq!(cfg.url, "nats://nats:4222");
        assert_eq!(cfg.event_max_age, Duration::from_secs(86400));
        assert_eq!(cfg.ack_wait, Duration::from_secs(1));
        assert_eq!(cfg.duplicate_window, Duration::from_secs(120));
        assert_eq!(cfg.subject_prefix, "aloft");
    }

    #[test]
    fn default_durations_serialize_as_documented() {
        let text = toml::to_string(&BusConfig::default()).unwrap();
        assert!(text.contains("event_max_age = \"7days\""), "{text}");
        assert!(text.contains("ack_wait = \"30s\""), "{text}");
        assert!(text.contains("duplicate_window = \"2m\""), "{text}");
    }

    #[test]
    fn rejects_unknown_keys() {
        let err = toml::from_str::<BusConfig>("ack_wiat = \"1s\"").unwrap_err();
        assert!(err.to_string().contains("ack_wiat"), "{err}");
    }

    #[test]
    fn rejects_bad_fields_naming_them() {
        let cases: Vec<(BusConfig, &str)> = vec![
            (BusConfig { stream_prefix: "A.B".into(), ..Default::default() }, "stream_prefix"),
            (BusConfig { subject_prefix: "a.*".into(), ..Default::default() }, "subject_prefix"),
            (BusConfig { subject_prefix: "$JS".into(), ..Default::default() }, "subject_prefix"),
            (BusConfig { max_deliver: 0, ..Default::default() }, "max_deliver"),
            (BusConfig { ack_wait: Duration::ZERO, ..Default::default() }, "ack_wait"),
            (BusConfig { event_max_age: Duration::from_secs(60), ..Default::default() }, "event_max_age"),
            (BusConfig { replicas: 0, ..Default::default() }, "replicas"),
            (BusConfig { url: " ".into(), ..Default::default() }, "url"),
        ];
        for (cfg, field) in cases {
            let err = cfg.validate().unwrap_err().to_string();
            assert!(err.contains(field), "{err} should name {field}");
        }
    }
}
