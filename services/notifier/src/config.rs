//! Configuration of the notifier.
//!
//! Secrets (the bot token, webhook URLs, the Lambda secret key) are redacted by `Debug` and by
//! `Serialize`, so neither logs nor `--print-config` show them.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use aloft_bus::BusConfig;
pub use aloft_runtime::grpc::HealthConfig;
use aloft_runtime::{ConfigError, Validate};
use serde::{Deserialize, Serialize};

use crate::domain::routing::{Destination, Policy, RoutingConfig, parse_recipient};

const REDACTED: &str = "<redacted>";

/// Everything the notifier reads at start.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// NATS connection and topology (streams, subjects, delivery limits).
    pub bus: BusConfig,
    /// The gRPC endpoint: `grpc.health.v1.Health` and `aloft.v1.NotifierService`.
    pub health: HealthConfig,
    /// The HTTP endpoint serving Prometheus `/metrics`.
    pub metrics: aloft_runtime::metrics::MetricsConfig,
    /// The notifier's own database (its delivery records): `sqlite://path` or `postgres://...`.
    /// It may be the same database as metadata's; the notifier's tables are prefixed `notifier_`.
    #[serde(serialize_with = "redact_url_field")]
    pub database_url: String,
    /// Base URL of the console that execution links point to.
    pub console_url: String,
    /// Where enrichment data comes from.
    pub metadata: MetadataConfig,
    /// Slack delivery.
    pub slack: SlackConfig,
    /// Project-level defaults.
    pub routing: RoutingSettings,
    /// The optional AWS Lambda enrichment hook.
    pub lambda: LambdaConfig,
    /// Retries, rate limit, leases.
    pub delivery: DeliveryConfig,
}

/// The metadata service's admin API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetadataConfig {
    /// `http://host:port` of metadata's gRPC listener.
    pub endpoint: String,
    /// Bound on each call.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// How long to wait for metadata to show the terminal phase (its event sink and the
    /// notifier read the same event independently) before notifying from the event alone.
    #[serde(with = "humantime_serde")]
    pub settle_wait: Duration,
}

impl Default for MetadataConfig {
    fn default() -> Self {
        MetadataConfig {
            endpoint: "http://127.0.0.1:8089".into(),
            timeout: Duration::from_secs(10),
            settle_wait: Duration::from_secs(10),
        }
    }
}

/// How to reach Slack.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlackConfig {
    /// Web API base (`chat.postMessage` is `<api_url>/chat.postMessage`).
    pub api_url: String,
    /// Bot token (`xoxb-...`) for `chat.postMessage`: any channel the bot may post in, and
    /// direct messages to people.
    #[serde(serialize_with = "redact_option")]
    pub bot_token: Option<String>,
    /// Incoming webhook URL per channel (`ml-alerts` or `#ml-alerts` or a channel id). A channel
    /// with a webhook is posted to through it, even when there is a bot token.
    #[serde(serialize_with = "redact_map")]
    pub webhooks: Option<BTreeMap<String, String>>,
    /// People: email or `@handle` -> Slack user id (`U0123ABCD`), for recipients that are not ids.
    pub users: Option<BTreeMap<String, String>>,
    /// Bound on each HTTP call to Slack.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for SlackConfig {
    fn default() -> Self {
        SlackConfig {
            api_url: "https://slack.com/api".into(),
            bot_token: None,
            webhooks: None,
            users: None,
            timeout: Duration::from_secs(10),
        }
    }
}

impl std::fmt::Debug for SlackConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackConfig")
            .field("api_url", &self.api_url)
            .field("bot_token", &self.bot_token.as_ref().map(|_| REDACTED))
            .field(
                "webhooks",
                &self.webhooks.as_ref().map(|w| w.keys().map(|k| (k, REDACTED)).collect::<BTreeMap<_, _>>()),
            )
            .field("users", &self.users)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl SlackConfig {
    /// Webhook URLs by normalized channel (`#name` or an id).
    pub fn webhook_channels(&self) -> BTreeMap<String, String> {
        let users = BTreeMap::new();
        self.webhooks
            .iter()
            .flatten()
            .filter_map(|(k, url)| match parse_recipient(k, &users) {
                Some(Destination::Channel(c)) => Some((c, url.clone())),
                _ => None,
            })
            .collect()
    }

    /// The channels that have a webhook.
    pub fn webhook_set(&self) -> BTreeSet<String> {
        self.webhook_channels().into_keys().collect()
    }

    /// `users` with lower-case keys, as routing looks them up.
    pub fn user_map(&self) -> BTreeMap<String, String> {
        self.users.iter().flatten().map(|(k, v)| (k.to_lowercase(), v.clone())).collect()
    }
}

/// Project-level defaults (project labels override them; see the README).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingSettings {
    /// Policy per domain for projects without a `notify-<domain>` label: `failures`, `all` or
    /// `none`. Unset: `{ production = "failures" }`.
    pub default_policy: Option<BTreeMap<String, Policy>>,
    /// Channel for project policies when the project has no `slack-channel` label.
    pub default_channel: Option<String>,
}

impl Config {
    /// What routing needs from the configuration.
    pub fn routing_config(&self) -> RoutingConfig {
        RoutingConfig {
            default_policy: self
                .routing
                .default_policy
                .clone()
                .unwrap_or_else(|| [("production".to_string(), Policy::Failures)].into()),
            default_channel: self.routing.default_channel.clone().filter(|c| !c.trim().is_empty()),
            users: self.slack.user_map(),
        }
    }
}

/// The AWS Lambda enrichment hook.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LambdaConfig {
    /// Function name or ARN (`name:alias` works). Empty: no hook.
    pub function: String,
    /// Endpoint URL (a local Lambda-compatible server); unset: AWS, or `AWS_ENDPOINT_URL_LAMBDA`.
    pub endpoint_url: Option<String>,
    /// Region; unset: the default AWS chain, else `us-east-1`.
    pub region: Option<String>,
    /// Bound on one invocation; a slower function counts as a timeout and the built-in message
    /// is sent.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Static access key id; unset (with `secret_access_key`): the default AWS credential chain.
    pub access_key_id: Option<String>,
    /// Static secret key; required exactly when `access_key_id` is set.
    #[serde(serialize_with = "redact_option")]
    pub secret_access_key: Option<String>,
}

impl Default for LambdaConfig {
    fn default() -> Self {
        LambdaConfig {
            function: String::new(),
            endpoint_url: None,
            region: None,
            timeout: Duration::from_secs(5),
            access_key_id: None,
            secret_access_key: None,
        }
    }
}

impl std::fmt::Debug for LambdaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LambdaConfig")
            .field("function", &self.function)
            .field("endpoint_url", &self.endpoint_url)
            .field("region", &self.region)
            .field("timeout", &self.timeout)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &self.secret_access_key.as_ref().map(|_| REDACTED))
            .finish()
    }
}

/// Delivery: pacing, retries, leases.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// At most one message per channel per this interval, across all replicas (Slack allows
    /// about one per second per channel).
    #[serde(with = "humantime_serde")]
    pub min_interval: Duration,
    /// Give up after this many failed attempts (rate-limited ones do not count).
    pub max_attempts: u32,
    /// First retry delay; doubles per failure, with jitter.
    #[serde(with = "humantime_serde")]
    pub backoff_base: Duration,
    /// Longest retry delay.
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
    /// How long a replica owns a delivery it is sending; if it dies, another takes over after this.
    /// Must exceed `slack.timeout` comfortably, or a slow call would be sent twice.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// How often due deliveries are looked for (new ones are sent at once).
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Messages in flight at once per replica.
    pub concurrency: usize,
    /// On shutdown, how long sends in flight may finish.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            min_interval: Duration::from_secs(1),
            max_attempts: 8,
            backoff_base: Duration::from_secs(2),
            backoff_max: Duration::from_secs(300),
            lease: Duration::from_secs(60),
            poll_interval: Duration::from_millis(500),
            concurrency: 4,
            drain_timeout: Duration::from_secs(10),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        // 8091..8094 are scheduler, executor, notifier, lineage, so all five services share a host
        // with their defaults (metadata uses 8088/8089).
        Config {
            bus: BusConfig::default(),
            health: HealthConfig::at("127.0.0.1:8093"),
            metrics: aloft_runtime::metrics::MetricsConfig::default(),
            database_url: "sqlite://aloft-data/notifier.db".into(),
            console_url: "http://localhost:30080".into(),
            metadata: MetadataConfig::default(),
            slack: SlackConfig::default(),
            routing: RoutingSettings::default(),
            lambda: LambdaConfig::default(),
            delivery: DeliveryConfig::default(),
        }
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("bus", &self.bus)
            .field("health", &self.health)
            .field("metrics", &self.metrics)
            .field("database_url", &redact_url(&self.database_url))
            .field("console_url", &self.console_url)
            .field("metadata", &self.metadata)
            .field("slack", &self.slack)
            .field("routing", &self.routing)
            .field("lambda", &self.lambda)
            .field("delivery", &self.delivery)
            .finish()
    }
}

/// A database URL without its password.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => match url[s + 3..at].split_once(':') {
            Some((user, _)) => format!("{}{user}:{REDACTED}{}", &url[..s + 3], &url[at..]),
            None => url.to_string(),
        },
        _ => url.to_string(),
    }
}

fn redact_url_field<S: serde::Serializer>(value: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&redact_url(value))
}

fn redact_option<S: serde::Serializer>(value: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(_) => s.serialize_some(REDACTED),
        None => s.serialize_none(),
    }
}

fn redact_map<S: serde::Serializer>(value: &Option<BTreeMap<String, String>>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(m) => s.serialize_some(&m.keys().map(|k| (k.clone(), REDACTED)).collect::<BTreeMap<_, _>>()),
        None => s.serialize_none(),
    }
}

fn http_url(value: &str, key: &str) -> Result<(), ConfigError> {
    let rest = value.strip_prefix("http://").or_else(|| value.strip_prefix("https://"));
    if rest.is_some_and(|r| !r.is_empty()) {
        return Ok(());
    }
    Err(ConfigError::invalid(key, format!("`{value}` is not an http:// or https:// URL")))
}

fn positive(d: Duration, key: &str) -> Result<(), ConfigError> {
    if d.is_zero() { Err(ConfigError::invalid(key, "must be positive")) } else { Ok(()) }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        self.bus.validate_config()?;
        self.health.validate()?;
        self.metrics.validate()?;
        if !(self.database_url.starts_with("sqlite:")
            || self.database_url.starts_with("postgres://")
            || self.database_url.starts_with("postgresql://"))
        {
            return Err(ConfigError::invalid(
                "database_url",
                format!("`{}` is not a sqlite: or postgres:// URL", redact_url(&self.database_url)),
            ));
        }
        http_url(&self.console_url, "console_url")?;
        http_url(&self.metadata.endpoint, "metadata.endpoint")?;
        positive(self.metadata.timeout, "metadata.timeout")?;
        http_url(&self.slack.api_url, "slack.api_url")?;
        positive(self.slack.timeout, "slack.timeout")?;
        if self.slack.bot_token.as_ref().is_some_and(|t| t.trim().is_empty()) {
            return Err(ConfigError::invalid("slack.bot_token", "is empty; leave it unset for webhooks only"));
        }
        let no_users = BTreeMap::new();
        for (channel, url) in self.slack.webhooks.iter().flatten() {
            let key = format!("slack.webhooks.{channel}");
            if !matches!(parse_recipient(channel, &no_users), Some(Destination::Channel(_))) {
                return Err(ConfigError::invalid(key, "must name a channel (`ml-alerts`, `#ml-alerts` or an id)"));
            }
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                // never echo the URL: it is the webhook's secret
                return Err(ConfigError::invalid(key, "is not an http:// or https:// URL"));
            }
        }
        for (who, id) in self.slack.users.iter().flatten() {
            let ok = id.len() >= 8 && id.starts_with(['U', 'W']) && id.chars().all(|c| c.is_ascii_alphanumeric());
            if !ok {
                return Err(ConfigError::invalid(
                    format!("slack.users.{who}"),
                    format!("`{id}` is not a Slack user id"),
                ));
            }
        }
        if let Some(c) = &self.routing.default_channel
            && !c.trim().is_empty()
            && !matches!(parse_recipient(c, &no_users), Some(Destination::Channel(_)))
        {
            return Err(ConfigError::invalid("routing.default_channel", format!("`{c}` is not a channel")));
        }
        if !self.lambda.function.is_empty() {
            positive(self.lambda.timeout, "lambda.timeout")?;
            if let Some(e) = &self.lambda.endpoint_url {
                http_url(e, "lambda.endpoint_url")?;
            }
        }
        if self.lambda.access_key_id.is_some() != self.lambda.secret_access_key.is_some() {
            return Err(ConfigError::invalid(
                "lambda.secret_access_key",
                "set both lambda.access_key_id and lambda.secret_access_key, or neither",
            ));
        }
        let d = &self.delivery;
        positive(d.min_interval, "delivery.min_interval")?;
        positive(d.backoff_base, "delivery.backoff_base")?;
        positive(d.poll_interval, "delivery.poll_interval")?;
        if d.backoff_max < d.backoff_base {
            return Err(ConfigError::invalid("delivery.backoff_max", "must not be shorter than delivery.backoff_base"));
        }
        if d.max_attempts == 0 {
            return Err(ConfigError::invalid("delivery.max_attempts", "must be at least 1"));
        }
        if d.concurrency == 0 {
            return Err(ConfigError::invalid("delivery.concurrency", "must be at least 1"));
        }
        if d.lease < self.slack.timeout * 2 {
            return Err(ConfigError::invalid(
                "delivery.lease",
                format!(
                    "{:?} must be at least twice slack.timeout ({:?}), or a slow send could be taken over and sent twice",
                    d.lease, self.slack.timeout
                ),
            ));
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

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
        assert_eq!(Config::default().health.listen, "127.0.0.1:8093");
        let routing = Config::default().routing_config();
        assert_eq!(routing.default_policy.get("production"), Some(&Policy::Failures));
    }

    #[test]
    fn file_and_environment_set_nested_keys() {
        let file = "[bus]\nurl = \"nats://nats:4222\"\nack_wait = \"10s\"\n\
                    [slack]\nbot_token = \"xoxb-1\"\n[slack.webhooks]\nml-alerts = \"https://hooks.example/T/B/x\"\n\
                    [routing.default_policy]\nstaging = \"all\"\n";
        let c: Config = aloft_runtime::config::load_from(
            Some(("s.toml", file)),
            &env(&[("ALOFT_HEALTH__LISTEN", "0.0.0.0:9000"), ("ALOFT_METADATA__ENDPOINT", "http://md:8089")]),
        )
        .unwrap();
        assert_eq!(c.bus.url, "nats://nats:4222");
        assert_eq!(c.bus.ack_wait, Duration::from_secs(10));
        assert_eq!(c.health.listen, "0.0.0.0:9000");
        assert_eq!(c.metadata.endpoint, "http://md:8089");
        assert_eq!(c.slack.webhook_set(), ["#ml-alerts".to_string()].into());
        assert_eq!(c.routing_config().default_policy, [("staging".to_string(), Policy::All)].into());
    }

    #[test]
    fn unknown_key_is_named() {
        let err =
            aloft_runtime::config::load_from::<Config>(Some(("s.toml", "[slack]\ntoken = \"x\"\n")), &[]).unwrap_err();
        assert_eq!(err.to_string(), "unknown config key `slack.token` (from s.toml)");
    }

    #[test]
    fn bad_values_name_their_key() {
        let load = |pairs: &[(&str, &str)]| {
            aloft_runtime::config::load_from::<Config>(None, &env(pairs)).unwrap_err().to_string()
        };
        assert_eq!(
            load(&[("ALOFT_HEALTH__LISTEN", "8091")]),
            "invalid value for config key `health.listen`: `8091` is not host:port"
        );
        assert_eq!(
            load(&[("ALOFT_BUS__MAX_DELIVER", "0")]),
            "invalid value for config key `bus`: max_deliver must be at least 1"
        );
        assert!(load(&[("ALOFT_METADATA__ENDPOINT", "md:8089")]).contains("`metadata.endpoint`"));
        assert!(load(&[("ALOFT_DATABASE_URL", "mysql://x")]).contains("`database_url`"));
        assert!(load(&[("ALOFT_DELIVERY__LEASE", "5s")]).contains("`delivery.lease`"));
        assert!(load(&[("ALOFT_LAMBDA__ACCESS_KEY_ID", "AKIA")]).contains("`lambda.secret_access_key`"));
        let err = aloft_runtime::config::load_from::<Config>(
            Some(("s.toml", "[slack.webhooks]\n\"#a\" = \"ftp://secret-part\"\n")),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("`slack.webhooks.#a`") && !err.contains("secret-part"), "{err}");
    }

    #[test]
    fn secrets_are_never_shown() {
        let mut c = Config::default();
        c.slack.bot_token = Some("xoxb-secret-token".into());
        c.slack.webhooks =
            Some([("ml".to_string(), "https://hooks.slack.com/services/T/B/secret-hook".to_string())].into());
        c.lambda.access_key_id = Some("AKIA1".into());
        c.lambda.secret_access_key = Some("secret-key".into());
        c.database_url = "postgres://aloft:db-password@pg/aloft".into();
        let shown = format!("{c:?}\n{}", aloft_runtime::config::to_toml(&c));
        for secret in ["xoxb-secret-token", "secret-hook", "secret-key", "db-password"] {
            assert!(!shown.contains(secret), "{secret} shown in\n{shown}");
        }
        assert!(shown.contains("postgres://aloft:<redacted>@pg/aloft"), "{shown}");
    }

    #[test]
    fn printed_config_loads_back() {
        let text = aloft_runtime::config::to_toml(&Config::default());
        let back: Config = aloft_runtime::config::load_from(Some(("printed.toml", &text)), &[]).unwrap();
        assert_eq!(back, Config::default());
    }
}
