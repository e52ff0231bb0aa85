//! The event sink: a durable consumer of every execution event, applied to the database.
//!
//! At-least-once: an event is acked only after it is stored; applying it twice changes nothing
//! (see `domain::executions`). A database outage naks with a delay instead of dropping events.

use std::time::Duration;

use aloft_bus::{Bus, StreamKind};
use tokio::task::JoinHandle;

use crate::app::App;

/// Durable consumer name; all metadata replicas share it, so each event is applied by one of them.
pub const CONSUMER: &str = "metadata-events";

/// Creates the consumer and starts applying events until `shutdown`.
pub async fn spawn(app: App, bus: Bus, shutdown: aloft_runtime::Shutdown) -> Result<JoinHandle<()>, aloft_bus::Error> {
    let filter = bus.topology().events_filter(None, None, None);
    let consumer = bus.consumer(CONSUMER, &[filter], StreamKind::Events).await?;
    Ok(tokio::spawn(async move {
        loop {
            let batch = tokio::select! {
                _ = shutdown.cancelled() => break,
                b = consumer.fetch(64, Duration::from_secs(1)) => b,
            };
            let deliveries = match batch {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(error = %e, "event fetch failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            // In-flight deliveries are finished even when shutdown arrives meanwhile.
            for d in deliveries {
                match app.apply_envelope(d.envelope()).await {
                    Ok(()) => {
                        if let Err(e) = d.ack().await {
                            tracing::warn!(error = %e, "event ack failed; it will be redelivered and ignored");
                        }
                    }
                    Err(crate::error::Error::InvalidArgument(m)) => {
                        tracing::warn!(reason = %m, "malformed event dropped");
                        let _ = d.term().await;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "event not applied; redelivering later");
                        let _ = d.nak_with_delay(Duration::from_secs(2)).await;
                    }
                }
            }
        }
        tracing::info!("event sink stopped");
    }))
}
