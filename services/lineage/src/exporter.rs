//! Drains the outbox to the catalogs: per target, in the order the payloads were queued, one at
//! a time. A failed send is retried with exponential backoff and holds back the ones queued after
//! it (a COMPLETE must not overtake its START); a payload the catalog refuses as wrong (4xx) or
//! that keeps failing past `max_attempts` is marked dead and skipped. Nothing here is on the path
//! of an execution: a slow or down catalog only grows the outbox.

use std::time::Duration;

use crate::adapters::sender::{SendError, Sender};
use crate::adapters::store::{Settle, Store};
use crate::config::ExportConfig;
use crate::domain::graph::Target;

/// How long a drainer holds a payload it is sending; another replica takes it over after that.
const LEASE: Duration = Duration::from_secs(60);
/// Payloads read per round and target.
const BATCH: i64 = 100;

fn now_micros() -> i64 {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    d.as_micros() as i64
}

/// The delay before retry number `attempts` (1 = after the first failure).
pub fn backoff(config: &ExportConfig, attempts: i64) -> Duration {
    let shift = attempts.clamp(1, 30) as u32 - 1;
    config.initial_backoff.saturating_mul(1u32 << shift.min(20)).min(config.max_backoff)
}

/// Sends what is due until `shutdown`; the send in flight is finished first.
pub async fn run(
    store: Store,
    sender: Sender,
    config: ExportConfig,
    metrics: Option<crate::metrics::Metrics>,
    shutdown: aloft_runtime::Shutdown,
) {
    let mut targets = Vec::new();
    if config.datahub_on().is_some() {
        targets.push(Target::DataHub);
    }
    if config.openlineage_on().is_some() {
        targets.push(Target::OpenLineage);
    }
    loop {
        let mut sent_any = false;
        for &t in &targets {
            match drain_target(&store, &sender, &config, t, metrics.as_ref()).await {
                Ok(n) => sent_any |= n > 0,
                Err(e) => tracing::warn!(target = t.as_str(), error = %e, "cannot read the outbox; retrying"),
            }
            if shutdown.is_cancelled() {
                return;
            }
        }
        if !sent_any {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(config.poll_interval) => {}
            }
        }
    }
}

/// One round for one target: sends due payloads in order until one fails or is not due yet.
/// Returns how many were settled.
pub async fn drain_target(
    store: &Store,
    sender: &Sender,
    config: &ExportConfig,
    target: Target,
    metrics: Option<&crate::metrics::Metrics>,
) -> Result<usize, crate::error::Error> {
    let count = |outcome: &str| {
        if let Some(m) = metrics {
            m.export(target, outcome);
        }
    };
    let mut settled = 0;
    for row in store.pending(target, BATCH).await? {
        let now = now_micros();
        if row.next_at > now || !store.claim(&row, now, LEASE.as_micros() as i64).await? {
            break;
        }
        match sender.send(target, &row.payload).await {
            Ok(()) => {
                store.settle(&row, Settle::Sent).await?;
                count("sent");
            }
            Err(SendError::Permanent(e)) => {
                tracing::error!(target = target.as_str(), key = %row.key, error = %e, "catalog refused a payload; dropped");
                store.settle(&row, Settle::Dead { error: &e }).await?;
                count("dead");
            }
            Err(SendError::Transient(e)) => {
                let attempts = row.attempts + 1;
                if attempts >= i64::from(config.max_attempts) {
                    tracing::error!(target = target.as_str(), key = %row.key, attempts, error = %e, "giving up on a payload");
                    store.settle(&row, Settle::Dead { error: &e }).await?;
                    count("dead");
                    settled += 1;
                    continue;
                }
                let delay = backoff(config, attempts);
                tracing::warn!(target = target.as_str(), key = %row.key, attempts, ?delay, error = %e, "send failed; retrying later");
                store.settle(&row, Settle::Retry { next_at: now + delay.as_micros() as i64, error: &e }).await?;
                count("retry");
                break;
            }
        }
        settled += 1;
    }
    Ok(settled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let c = ExportConfig {
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(10),
            ..ExportConfig::default()
        };
        let got: Vec<u64> = (1..=6).map(|a| backoff(&c, a).as_secs()).collect();
        assert_eq!(got, vec![1, 2, 4, 8, 10, 10]);
        assert_eq!(backoff(&c, 1000), Duration::from_secs(10));
    }
}
