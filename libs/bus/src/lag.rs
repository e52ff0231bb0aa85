//! JetStream consumer lag as Prometheus gauges: what is waiting for a durable consumer
//! (`num_pending`) and what was delivered but not yet acknowledged (`num_ack_pending`). Their
//! sum is what KEDA's `nats-jetstream` scaler calls lag (integrations.md 4.1), so the dashboards
//! and the autoscaler read the same number.

use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::consumer::Consumer;

/// Labels of the lag gauges: bounded by the topology (a handful of streams and durables).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct LagLabels {
    /// Stream name, e.g. `ALOFT_TASKS`.
    pub stream: String,
    /// Durable consumer name, e.g. `executor-default`.
    pub consumer: String,
}

/// `aloft_jetstream_consumer_pending_messages` and `aloft_jetstream_consumer_ack_pending_messages`.
#[derive(Clone, Default)]
pub struct LagGauges {
    pending: Family<LagLabels, Gauge>,
    ack_pending: Family<LagLabels, Gauge>,
}

impl LagGauges {
    /// Registers both gauges.
    pub fn register(registry: &mut Registry) -> LagGauges {
        let gauges = LagGauges::default();
        registry.register(
            "jetstream_consumer_pending_messages",
            "Messages in the stream not yet delivered to this durable consumer",
            gauges.pending.clone(),
        );
        registry.register(
            "jetstream_consumer_ack_pending_messages",
            "Messages delivered to this durable consumer and not yet acknowledged (work in flight)",
            gauges.ack_pending.clone(),
        );
        gauges
    }

    fn set(&self, labels: &LagLabels, pending: u64, ack_pending: u64) {
        self.pending.get_or_create(labels).set(i64::try_from(pending).unwrap_or(i64::MAX));
        self.ack_pending.get_or_create(labels).set(i64::try_from(ack_pending).unwrap_or(i64::MAX));
    }
}

/// A second handle on a durable consumer, only for reading its state.
#[derive(Clone)]
pub struct LagProbe {
    inner: PullConsumer,
    labels: LagLabels,
}

impl Consumer {
    /// A handle that reads this consumer's lag (for [`watch_lag`]).
    pub fn lag_probe(&self) -> LagProbe {
        LagProbe {
            inner: self.inner.clone(),
            labels: LagLabels { stream: self.stream().to_string(), consumer: self.name().to_string() },
        }
    }
}

impl LagProbe {
    /// (pending, ack pending) as the server sees them now.
    pub async fn read(&mut self) -> crate::Result<(u64, u64)> {
        let (consumer, stream) = (self.labels.consumer.clone(), self.labels.stream.clone());
        let info =
            self.inner.info().await.map_err(|e| crate::Error::Consumer { consumer, stream, source: Box::new(e) })?;
        Ok((info.num_pending, u64::try_from(info.num_ack_pending).unwrap_or(0)))
    }
}

/// Reads every probe every `every` into `gauges` until `shutdown`. A failed read keeps the last
/// value (NATS restarting must not make the backlog look empty).
pub fn watch_lag(
    mut probes: Vec<LagProbe>,
    gauges: LagGauges,
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
            for probe in &mut probes {
                match probe.read().await {
                    Ok((pending, ack_pending)) => gauges.set(&probe.labels, pending, ack_pending),
                    Err(e) => tracing::debug!(error = %e, "cannot read consumer lag"),
                }
            }
        }
    })
}
