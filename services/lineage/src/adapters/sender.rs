//! Sending queued payloads to the catalogs over HTTP. One request per payload: DataHub's Rest.li
//! `ingestProposal` takes one proposal, OpenLineage one RunEvent.

use std::time::Duration;

use crate::config::{DataHubConfig, OpenLineageConfig};
use crate::domain::graph::Target;

/// Why a send failed, and whether trying again can help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// Network trouble, timeouts, 408, 429 and 5xx: try again later.
    Transient(String),
    /// Any other refusal (4xx): the payload itself is wrong for this catalog.
    Permanent(String),
}

/// HTTP clients for the configured catalogs.
#[derive(Clone)]
pub struct Sender {
    http: reqwest::Client,
    datahub: Option<DataHubConfig>,
    openlineage: Option<OpenLineageConfig>,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // the configs redact their secrets in Debug
        f.debug_struct("Sender").field("datahub", &self.datahub).field("openlineage", &self.openlineage).finish()
    }
}

impl Sender {
    /// Clients with `timeout` per request.
    pub fn new(
        timeout: Duration,
        datahub: Option<DataHubConfig>,
        openlineage: Option<OpenLineageConfig>,
    ) -> Result<Sender, String> {
        let http = reqwest::Client::builder().timeout(timeout).build().map_err(|e| e.to_string())?;
        Ok(Sender { http, datahub, openlineage })
    }

    /// Sends one JSON body to a target's endpoint.
    pub async fn send(&self, target: Target, body: &str) -> Result<(), SendError> {
        let request = match target {
            Target::DataHub => {
                let Some(c) = &self.datahub else {
                    return Err(SendError::Permanent("datahub is not configured".into()));
                };
                let url = format!("{}/aspects?action=ingestProposal", c.url.trim_end_matches('/'));
                let mut r = self.http.post(url).header("X-RestLi-Protocol-Version", "2.0.0");
                if let Some(t) = c.token.as_deref().filter(|t| !t.is_empty()) {
                    r = r.bearer_auth(t);
                }
                r
            }
            Target::OpenLineage => {
                let Some(c) = &self.openlineage else {
                    return Err(SendError::Permanent("openlineage is not configured".into()));
                };
                let mut r = self.http.post(&c.url);
                if let Some(k) = c.api_key.as_deref().filter(|k| !k.is_empty()) {
                    r = r.bearer_auth(k);
                }
                r
            }
        };
        let response = request
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| SendError::Transient(format!("{}: {e}", target.as_str())))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let text = response.text().await.unwrap_or_default();
        let text: String = text.chars().take(300).collect();
        let message = format!("{} answered {status}: {text}", target.as_str());
        if status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429 {
            Err(SendError::Transient(message))
        } else {
            Err(SendError::Permanent(message))
        }
    }
}
