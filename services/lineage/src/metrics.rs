//! The lineage service's Prometheus metrics: how far the catalog exports lag behind.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use crate::adapters::store::Store;
use crate::domain::graph::Target;

/// A catalog.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct BackendLabels {
    /// `datahub` or `openlineage`.
    pub backend: String,
}

/// A catalog and what happened to a payload.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ExportLabels {
    /// `datahub` or `openlineage`.
    pub backend: String,
    /// `sent`, `retry` or `dead`.
    pub outcome: String,
}

/// The lineage metrics.
#[derive(Debug, Clone)]
pub struct Metrics {
    lag: Family<BackendLabels, Gauge<f64, AtomicU64>>,
    pending: Family<BackendLabels, Gauge>,
    pub(crate) exports: Family<ExportLabels, Counter>,
}

impl Metrics {
    /// Registers the gauges and counters.
    pub fn register(registry: &mut Registry) -> Metrics {
        let m = Metrics { lag: Family::default(), pending: Family::default(), exports: Family::default() };
        registry.register_with_unit(
            "lineage_export_lag",
            "Age of the oldest payload waiting to be sent to a catalog (0 when none waits)",
            Unit::Seconds,
            m.lag.clone(),
        );
        registry.register("lineage_export_pending", "Payloads waiting to be sent to a catalog", m.pending.clone());
        registry.register("lineage_exports", "Catalog sends, by outcome (sent, retry, dead)", m.exports.clone());
        m
    }

    /// Counts one settled send.
    pub fn export(&self, target: Target, outcome: &str) {
        self.exports.get_or_create(&ExportLabels { backend: target.as_str().into(), outcome: outcome.into() }).inc();
    }
}

/// Reads the outbox backlog of `targets` every `every` into the gauges until `shutdown`.
pub fn watch_backlog(
    store: Store,
    targets: Vec<Target>,
    metrics: Metrics,
    every: Duration,
    shutdown: aloft_runtime::Shutdown,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = ticks.tick() => {}
            }
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_micros()
                as i64;
            for &t in &targets {
                let labels = BackendLabels { backend: t.as_str().into() };
                match store.outbox_backlog(t).await {
                    Ok((pending, oldest)) => {
                        metrics.pending.get_or_create(&labels).set(pending);
                        let lag = oldest.map(|o| (now - o).max(0) as f64 / 1e6).unwrap_or(0.0);
                        metrics.lag.get_or_create(&labels).set(lag);
                    }
                    Err(e) => tracing::debug!(target = t.as_str(), error = %e, "cannot read the export backlog"),
                }
            }
        }
    })
}
