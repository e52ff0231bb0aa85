//! The event sink: a durable consumer of every execution event, applied to the database.
//!
//! At-least-once: an event is acked only after it is stored; applying it twice changes nothing
//! (see `domain::executions`). A database outage naks with a delay instead of dropping events.
//!
//! Every event passes here, so the execution and task KPIs are counted here too (see
//! `metrics`): the state before the event is read, the event applied, and what it changed
//! recorded once it is stored.

use std::time::Duration;

use aloft_bus::{Bus, Handled, StreamKind};
use aloft_proto::aloft::v1::Envelope;
use aloft_proto::aloft::v1::envelope::Body;
use aloft_proto::flyteidl::admin::{ExecutionClosure, TaskExecutionClosure};
use prost::Message as _;
use tokio::task::JoinHandle;

use crate::app::App;
use crate::error::Result;
use crate::metrics::{Metrics, Observation, RunLabels, ScopeLabels, task_observations, workflow_observations};

/// Executions whose events are applied at once (a database round trip is mostly waiting).
const CONCURRENCY: usize = 8;

/// Durable consumer name; all metadata replicas share it, so each event is applied by one of them.
pub const CONSUMER: &str = "metadata-events";

/// Creates the consumer and starts applying events until `shutdown`; its lag is read into
/// `lag` meanwhile.
pub async fn spawn(
    app: App,
    bus: Bus,
    metrics: Metrics,
    lag: aloft_bus::LagGauges,
    shutdown: aloft_runtime::Shutdown,
) -> std::result::Result<JoinHandle<()>, aloft_bus::Error> {
    let filter = bus.topology().events_filter(None, None, None);
    let consumer = bus.consumer(CONSUMER, &[filter], StreamKind::Events).await?;
    let lag_task = aloft_bus::watch_lag(vec![consumer.lag_probe()], lag, Duration::from_secs(5), shutdown.clone());
    Ok(tokio::spawn(async move {
        consumer
            // One execution's events in order; different executions' side by side (each event
            // is a read-modify-write of its rows with a conflict check, so this is safe).
            .process_by_key(64, CONCURRENCY, &shutdown, aloft_bus::execution_key, |envelope| {
                let (app, metrics) = (app.clone(), metrics.clone());
                async move {
                    metrics.stages.since_stamp("event_hop", envelope.created_at);
                    let t = std::time::Instant::now();
                    // What the event will change is read first; a failed read only costs the KPIs.
                    let observe = match observations(&app, &envelope).await {
                        Ok(o) => o,
                        Err(e) => {
                            tracing::debug!(error = %e, "cannot read the state before an event; not counted");
                            Vec::new()
                        }
                    };
                    let t = metrics.stages.lap("db_read_before", t);
                    let applied = app.apply_envelope(&envelope).await;
                    metrics.stages.lap("db_apply", t);
                    match applied {
                        Ok(()) => {
                            metrics.record(&observe);
                            Handled::Done
                        }
                        Err(crate::error::Error::InvalidArgument(m)) => Handled::Drop(format!("malformed event: {m}")),
                        Err(e) => Handled::Retry(e.to_string(), Duration::from_secs(2)),
                    }
                }
            })
            .await;
        lag_task.abort();
        tracing::info!("event sink stopped");
    }))
}

/// What applying `envelope` to the current state would count.
async fn observations(app: &App, envelope: &Envelope) -> Result<Vec<Observation>> {
    match &envelope.body {
        Some(Body::WorkflowEvent(ev)) => {
            let Some(id) = ev.execution_id.as_ref() else { return Ok(Vec::new()) };
            let Some(row) = app.store.get_execution(&id.project, &id.domain, &id.name).await? else {
                return Ok(Vec::new());
            };
            let before = ExecutionClosure::decode(row.closure.as_slice()).unwrap_or_default();
            let labels = RunLabels { project: row.project, domain: row.domain, launch_plan: row.launch_plan };
            Ok(workflow_observations(&labels, row.created_at, &before, ev))
        }
        Some(Body::TaskEvent(ev)) => {
            let Some(node) = ev.parent_node_execution_id.as_ref() else { return Ok(Vec::new()) };
            let Some(exec) = node.execution_id.as_ref() else { return Ok(Vec::new()) };
            let row = app
                .store
                .get_task_execution(&exec.project, &exec.domain, &exec.name, &node.node_id, ev.retry_attempt as i32)
                .await?;
            let before = row.map(|r| {
                let started = TaskExecutionClosure::decode(r.closure.as_slice())
                    .ok()
                    .and_then(|c| c.started_at)
                    .map(|t| t.seconds * 1_000_000 + i64::from(t.nanos) / 1_000);
                (r.phase, started)
            });
            let scope = ScopeLabels { project: exec.project.clone(), domain: exec.domain.clone() };
            Ok(task_observations(&scope, before, ev))
        }
        _ => Ok(Vec::new()),
    }
}
