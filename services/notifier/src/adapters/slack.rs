//! Posting to Slack over HTTP: an incoming webhook (plain-text answers) or `chat.postMessage`
//! with the bot token (JSON answers). Returns what Slack said; `domain::slack::classify` decides
//! what it means.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::domain::slack::{Answer, Target, Transport};

/// The Slack HTTP client with the configured webhooks and token.
#[derive(Clone)]
pub struct SlackClient {
    http: reqwest::Client,
    api_url: String,
    bot_token: Option<String>,
    webhooks: BTreeMap<String, String>,
}

impl std::fmt::Debug for SlackClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // the token and webhook URLs are secrets
        f.debug_struct("SlackClient")
            .field("api_url", &self.api_url)
            .field("bot_token", &self.bot_token.is_some())
            .field("webhooks", &self.webhooks.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Building the HTTP client failed (the TLS backend could not initialise).
#[derive(Debug, thiserror::Error)]
#[error("slack http client: {0}")]
pub struct ClientError(String);

impl SlackClient {
    /// A client with `timeout` per call.
    pub fn new(
        api_url: &str,
        bot_token: Option<String>,
        webhooks: BTreeMap<String, String>,
        timeout: Duration,
    ) -> Result<SlackClient, ClientError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("aloft-notifier/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError(e.to_string()))?;
        Ok(SlackClient { http, api_url: api_url.trim_end_matches('/').to_string(), bot_token, webhooks })
    }

    /// Whether `chat.postMessage` is available.
    pub fn has_bot(&self) -> bool {
        self.bot_token.is_some()
    }

    /// Posts `body` (the message JSON without `channel`) to `target`. `Err` is a failure
    /// without an answer (network, timeout) or a missing webhook/token, described without the
    /// secret URL.
    pub async fn post(&self, target: &Target, body: &serde_json::Value) -> Result<Answer, String> {
        let request = match target.transport {
            Transport::Webhook => {
                let url = self
                    .webhooks
                    .get(&target.channel)
                    .ok_or_else(|| format!("no webhook configured for {} any more", target.channel))?;
                self.http.post(url).header("content-type", "application/json").body(body.to_string())
            }
            Transport::Api => {
                let token = self.bot_token.as_ref().ok_or("no slack.bot_token configured any more")?;
                let mut body = body.clone();
                body["channel"] = serde_json::Value::String(target.channel.clone());
                self.http
                    .post(format!("{}/chat.postMessage", self.api_url))
                    .header("content-type", "application/json; charset=utf-8")
                    .bearer_auth(token)
                    .body(body.to_string())
            }
        };
        let response = request.send().await.map_err(describe)?;
        let status = response.status().as_u16();
        let retry_after = response.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(|s| s.to_string());
        let body = response.text().await.map_err(describe)?;
        Ok(Answer { status, retry_after, body })
    }
}

/// A reqwest error without its URL (a webhook URL is a secret).
fn describe(e: reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_body() || e.is_decode() {
        "broken answer"
    } else {
        "request failed"
    };
    let mut source = std::error::Error::source(&e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() { kind.to_string() } else { format!("{kind}: {detail}") }
}
