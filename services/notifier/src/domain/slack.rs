//! How a destination is reached (incoming webhook or `chat.postMessage`), what Slack's answer
//! means (delivered, rate limited, worth retrying, never going to work), and how long to wait
//! before trying again. Pure: the adapter does the HTTP.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::Deserialize;

use super::routing::Destination;
use super::text::truncate;

/// How a message reaches Slack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// An incoming webhook configured for the channel (`slack.webhooks`).
    Webhook,
    /// `chat.postMessage` with the bot token.
    Api,
}

/// The resolved place a message is sent: transport and channel (`#name`, a channel id, or a
/// user id for a direct message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Webhook or Web API.
    pub transport: Transport,
    /// `#name`, `C…`, or `U…`.
    pub channel: String,
}

impl Target {
    /// `webhook:#ml-alerts` or `chat.postMessage:C0123ABCD`: how it is stored.
    pub fn key(&self) -> String {
        match self.transport {
            Transport::Webhook => format!("webhook:{}", self.channel),
            Transport::Api => format!("chat.postMessage:{}", self.channel),
        }
    }

    /// Reads back a [`Target::key`].
    pub fn parse(key: &str) -> Option<Target> {
        let (transport, channel) = key.split_once(':')?;
        let transport = match transport {
            "webhook" => Transport::Webhook,
            "chat.postMessage" => Transport::Api,
            _ => return None,
        };
        (!channel.is_empty()).then(|| Target { transport, channel: channel.to_string() })
    }

    /// The channel the rate limit applies to (Slack limits per channel, whichever way one posts).
    pub fn rate_key(&self) -> String {
        self.channel.clone()
    }
}

/// Chooses how to reach `destination`: a channel's own webhook first, else the bot token. Errors
/// say what configuration is missing; they are recorded as permanent failures.
pub fn resolve(destination: &Destination, webhooks: &BTreeSet<String>, bot: bool) -> Result<Target, String> {
    match destination {
        Destination::Channel(c) if webhooks.contains(c) => {
            Ok(Target { transport: Transport::Webhook, channel: c.clone() })
        }
        Destination::Channel(c) if bot => Ok(Target { transport: Transport::Api, channel: c.clone() }),
        Destination::Channel(c) => {
            Err(format!("no webhook for {c} in slack.webhooks and no slack.bot_token to post with"))
        }
        Destination::User(u) if bot => Ok(Target { transport: Transport::Api, channel: u.clone() }),
        Destination::User(u) => {
            Err(format!("direct messages to {u} need slack.bot_token (webhooks post to one channel)"))
        }
        Destination::Unresolved(r) => Err(format!("no Slack user for recipient {r}: add it to slack.users")),
    }
}

/// What Slack answered, as far as deciding goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// The `Retry-After` header, if any.
    pub retry_after: Option<String>,
    /// The body (webhooks: plain text such as `ok` or `channel_is_archived`; Web API: JSON).
    pub body: String,
}

/// What to do after one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Posted; `ts` is the message timestamp (Web API only).
    Delivered {
        /// Slack's message timestamp.
        ts: Option<String>,
    },
    /// Too many messages: wait `after` (Slack's `Retry-After`) before posting to this channel.
    RateLimited {
        /// How long.
        after: Duration,
    },
    /// Slack or the network failed; try again later.
    Retry {
        /// What happened.
        reason: String,
    },
    /// It will never work (revoked webhook, archived channel, bad token, bad message).
    Permanent {
        /// What happened.
        reason: String,
    },
}

/// Used when a 429 comes without a usable `Retry-After`.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(5);
/// A `Retry-After` longer than this is capped (a misbehaving proxy must not park a channel for days).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(15 * 60);

/// Web API errors worth retrying; every other `ok:false` error is a configuration or message
/// problem that retrying cannot fix.
const TRANSIENT_API_ERRORS: &[&str] =
    &["internal_error", "fatal_error", "service_unavailable", "request_timeout", "team_added_to_org"];

/// Decides what Slack's answer (or the network error, `Err`) means.
pub fn classify(transport: Transport, answer: Result<&Answer, &str>) -> Outcome {
    let answer = match answer {
        Ok(a) => a,
        Err(e) => return Outcome::Retry { reason: format!("network: {}", truncate(e, 300)) },
    };
    let body = truncate(answer.body.trim(), 300);
    if answer.status == 429 {
        return Outcome::RateLimited { after: retry_after(answer.retry_after.as_deref()) };
    }
    if answer.status >= 500 {
        return Outcome::Retry { reason: format!("HTTP {}: {body}", answer.status) };
    }
    match transport {
        Transport::Webhook if (200..300).contains(&answer.status) => Outcome::Delivered { ts: None },
        Transport::Webhook => Outcome::Permanent { reason: format!("HTTP {}: {body}", answer.status) },
        Transport::Api if answer.status == 200 => api_body(&answer.body, answer.retry_after.as_deref()),
        Transport::Api => Outcome::Permanent { reason: format!("HTTP {}: {body}", answer.status) },
    }
}

#[derive(Deserialize)]
struct ApiAnswer {
    ok: bool,
    #[serde(default)]
    error: String,
    #[serde(default)]
    ts: Option<String>,
}

fn api_body(body: &str, retry: Option<&str>) -> Outcome {
    let Ok(answer) = serde_json::from_str::<ApiAnswer>(body) else {
        // Something between us and Slack (a proxy page); Slack itself always answers JSON.
        return Outcome::Retry { reason: format!("HTTP 200 without a Slack answer: {}", truncate(body.trim(), 200)) };
    };
    if answer.ok {
        return Outcome::Delivered { ts: answer.ts };
    }
    let error = if answer.error.is_empty() { "unknown_error".to_string() } else { answer.error };
    if error == "ratelimited" || error == "rate_limited" {
        Outcome::RateLimited { after: retry_after(retry) }
    } else if TRANSIENT_API_ERRORS.contains(&error.as_str()) {
        Outcome::Retry { reason: error }
    } else {
        Outcome::Permanent { reason: error }
    }
}

/// `Retry-After` in seconds (what Slack sends), bounded; absent or unreadable: a default.
pub fn retry_after(header: Option<&str>) -> Duration {
    header
        .and_then(|h| h.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s).min(MAX_RETRY_AFTER))
        .unwrap_or(DEFAULT_RETRY_AFTER)
}

/// Exponential backoff with "equal jitter": after the `failures`-th failure (1-based), half of
/// `min(base * 2^(failures-1), max)` plus `jitter` (0..1) times the other half. Replicas that
/// failed together do not retry together.
pub fn backoff(failures: u32, base: Duration, max: Duration, jitter: f64) -> Duration {
    let exp = failures.saturating_sub(1).min(30);
    let full = base.saturating_mul(1u32 << exp).min(max);
    let half = full / 2;
    half + half.mul_f64(jitter.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, retry_after: Option<&str>, body: &str) -> Answer {
        Answer { status, retry_after: retry_after.map(String::from), body: body.into() }
    }

    #[test]
    fn webhook_answers() {
        let c = |a: Answer| classify(Transport::Webhook, Ok(&a));
        assert_eq!(c(answer(200, None, "ok")), Outcome::Delivered { ts: None });
        assert_eq!(c(answer(429, Some("3"), "rate limited")), Outcome::RateLimited { after: Duration::from_secs(3) });
        assert!(matches!(c(answer(500, None, "rollup_error")), Outcome::Retry { .. }));
        assert_eq!(c(answer(404, None, "no_service")), Outcome::Permanent { reason: "HTTP 404: no_service".into() });
        assert_eq!(
            c(answer(410, None, "channel_is_archived")),
            Outcome::Permanent { reason: "HTTP 410: channel_is_archived".into() }
        );
        assert!(matches!(c(answer(400, None, "invalid_payload")), Outcome::Permanent { .. }));
        assert!(matches!(classify(Transport::Webhook, Err("connection refused")), Outcome::Retry { .. }));
    }

    #[test]
    fn web_api_answers_are_read_from_json_even_on_200() {
        let c = |a: Answer| classify(Transport::Api, Ok(&a));
        assert_eq!(
            c(answer(200, None, r#"{"ok":true,"channel":"C1","ts":"1503435956.000247"}"#)),
            Outcome::Delivered { ts: Some("1503435956.000247".into()) }
        );
        assert_eq!(
            c(answer(200, None, r#"{"ok":false,"error":"invalid_auth"}"#)),
            Outcome::Permanent { reason: "invalid_auth".into() }
        );
        assert_eq!(
            c(answer(200, None, r#"{"ok":false,"error":"channel_not_found"}"#)),
            Outcome::Permanent { reason: "channel_not_found".into() }
        );
        assert_eq!(
            c(answer(200, None, r#"{"ok":false,"error":"internal_error"}"#)),
            Outcome::Retry { reason: "internal_error".into() }
        );
        assert_eq!(
            c(answer(429, Some("7"), r#"{"ok":false,"error":"ratelimited"}"#)),
            Outcome::RateLimited { after: Duration::from_secs(7) }
        );
        assert!(matches!(c(answer(200, None, "<html>proxy</html>")), Outcome::Retry { .. }));
        assert!(matches!(c(answer(503, None, "")), Outcome::Retry { .. }));
    }

    #[test]
    fn retry_after_is_bounded_and_defaults() {
        assert_eq!(retry_after(Some("1")), Duration::from_secs(1));
        assert_eq!(retry_after(Some("0.5")), Duration::from_millis(500));
        assert_eq!(retry_after(Some("99999")), MAX_RETRY_AFTER);
        assert_eq!(retry_after(Some("soon")), DEFAULT_RETRY_AFTER);
        assert_eq!(retry_after(None), DEFAULT_RETRY_AFTER);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_in_the_upper_half() {
        let (base, max) = (Duration::from_secs(1), Duration::from_secs(60));
        assert_eq!(backoff(1, base, max, 0.0), Duration::from_millis(500));
        assert_eq!(backoff(1, base, max, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(3, base, max, 1.0), Duration::from_secs(4));
        assert_eq!(backoff(20, base, max, 1.0), max);
        assert_eq!(backoff(20, base, max, 0.0), max / 2);
        for failures in 1..40 {
            let d = backoff(failures, base, max, 0.5);
            assert!(d <= max && d >= base / 4, "{failures}: {d:?}");
        }
    }

    #[test]
    fn targets_prefer_a_channel_webhook_then_the_bot() {
        let hooks: BTreeSet<String> = ["#alerts".to_string()].into();
        let ch = |c: &str| Destination::Channel(c.into());
        assert_eq!(resolve(&ch("#alerts"), &hooks, true).unwrap().key(), "webhook:#alerts");
        assert_eq!(resolve(&ch("#other"), &hooks, true).unwrap().key(), "chat.postMessage:#other");
        assert!(resolve(&ch("#other"), &hooks, false).unwrap_err().contains("slack.bot_token"));
        assert_eq!(
            resolve(&Destination::User("U0123ABCD".into()), &hooks, true).unwrap().key(),
            "chat.postMessage:U0123ABCD"
        );
        assert!(resolve(&Destination::User("U0123ABCD".into()), &hooks, false).is_err());
        assert!(
            resolve(&Destination::Unresolved("bob@x.io".into()), &hooks, true).unwrap_err().contains("slack.users")
        );
        let t = Target::parse("chat.postMessage:C0123ABCD").unwrap();
        assert_eq!((t.transport, t.channel.as_str()), (Transport::Api, "C0123ABCD"));
        assert_eq!(Target::parse("webhook:#a:b").unwrap().channel, "#a:b");
        assert_eq!(Target::parse("smtp:x"), None);
    }
}
