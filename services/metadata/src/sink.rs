//! The event sink: a durable consumer of every execution event, applied to the database.
//!
//! At-least-once: an event is acked only after it is stored; applying it twice changes nothing
//! (see `domain::executions`). A database outage naks with a delay instead of dropping events.

use std::time::Duration;

use aloft_bus::{Bus, Handled, StreamKind};
use tokio::task::JoinHandle;

use crate::app::App;

/// Durable consumer name; all metadata replicas share it, so each event is applied by one of them.
pub const CONSUMER: &str = "metadata-events";

/// Creates the consumer and starts applying events until `shutdown`.
pub async fn spawn(app: App, bus: Bus, shutdown: aloft_runtime::Shutdown) -> Result<JoinHandle<()>, aloft_bus::Error> {
    let filter = bus.topology().events_filter(None, None, None);
    let consumer = bus.consumer(CONSUMER, &[filter], StreamKind::Events).await?;
    Ok(tokio::spawn(async move {
        consumer
            .process(64, &shutdown, |envelope| {
                let app = app.clone();
                async move {
                    match app.apply_envelope(&envelope).await {
                        Ok(()) => Handled::Done,
                        Err(crate::error::Error::InvalidArgument(m)) => Handled::Drop(format!("malformed event: {m}")),
                        Err(e) => Handled::Retry(e.to_string(), Duration::from_secs(2)),
                    }
                }
            })
            .await;
        tracing::info!("event sink stopped");
    }))
}
