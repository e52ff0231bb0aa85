//! The execution and task KPIs, derived in the event sink: every workflow and task event passes
//! through it, so the scheduler and executors need no metrics of their own for them.
//!
//! What an event means for the KPIs is decided here from the stored state before the event and
//! the event itself ([`workflow_observations`], [`task_observations`], pure), and only recorded
//! once the sink stored the event. A duplicate or late event changes nothing in the store, and
//! observes nothing here. Two replicas applying the same redelivered event at the same moment
//! may both count it; that race needs a redelivery racing its original and is accepted.

use aloft_proto::flyteidl::admin::ExecutionClosure;
use aloft_proto::flyteidl::core::execution_error::ErrorKind;
use aloft_proto::flyteidl::core::{task_execution, workflow_execution};
use aloft_proto::flyteidl::event::{TaskExecutionEvent, WorkflowExecutionEvent};
use aloft_runtime::metrics::{HistogramMaker, LONG_BUCKETS, histogram_family};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::domain::executions as rules;

/// project, domain, launch plan.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RunLabels {
    /// Project.
    pub project: String,
    /// Domain.
    pub domain: String,
    /// Launch plan name (the task name for single-task runs); bounded by what is registered.
    pub launch_plan: String,
}

/// [`RunLabels`] and a terminal phase.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct PhaseLabels {
    /// Project.
    pub project: String,
    /// Domain.
    pub domain: String,
    /// Launch plan name.
    pub launch_plan: String,
    /// `SUCCEEDED`, `FAILED`, `ABORTED`, `TIMED_OUT`.
    pub phase: String,
}

/// [`RunLabels`] and why it failed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct FailureLabels {
    /// Project.
    pub project: String,
    /// Domain.
    pub domain: String,
    /// Launch plan name.
    pub launch_plan: String,
    /// `user`, `system`, `timeout` or `unknown`.
    pub kind: String,
}

/// Task attempt labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct TaskLabels {
    /// Project of the execution.
    pub project: String,
    /// Domain of the execution.
    pub domain: String,
    /// Task type (`python-task`, `container`, ...): bounded by the plugins.
    pub task_type: String,
    /// Terminal phase of the attempt: `SUCCEEDED`, `FAILED`, `RETRYABLE_FAILED` (retried if
    /// attempts are left), `ABORTED`.
    pub phase: String,
}

/// Project and domain.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ScopeLabels {
    /// Project.
    pub project: String,
    /// Domain.
    pub domain: String,
}

/// SLA breach labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct SlaLabels {
    /// Project.
    pub project: String,
    /// Domain.
    pub domain: String,
    /// Launch plan name.
    pub launch_plan: String,
    /// `max_duration` or `deadline`.
    pub sla: String,
}

/// Metadata's metrics. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    started: Family<RunLabels, Counter>,
    finished: Family<PhaseLabels, Counter>,
    failed: Family<FailureLabels, Counter>,
    duration: Family<PhaseLabels, Histogram, HistogramMaker>,
    queue: Family<RunLabels, Histogram, HistogramMaker>,
    attempts: Family<TaskLabels, Counter>,
    attempt_duration: Family<TaskLabels, Histogram, HistogramMaker>,
    retries: Family<ScopeLabels, Counter>,
    pub(crate) sla_breaches: Family<SlaLabels, Counter>,
    /// Time per step of the event sink (`aloft_metadata_stage_seconds`).
    pub(crate) stages: aloft_runtime::metrics::Stages,
}

impl Metrics {
    /// Registers every family.
    pub fn register(registry: &mut Registry) -> Metrics {
        let m = Metrics {
            started: Family::default(),
            finished: Family::default(),
            failed: Family::default(),
            duration: histogram_family(LONG_BUCKETS),
            queue: histogram_family(LONG_BUCKETS),
            attempts: Family::default(),
            attempt_duration: histogram_family(LONG_BUCKETS),
            retries: Family::default(),
            sla_breaches: Family::default(),
            stages: Default::default(),
        };
        m.stages.register(registry, "metadata");
        registry.register("executions_started", "Executions that started running", m.started.clone());
        registry.register(
            "executions_finished",
            "Executions that reached a terminal phase, by phase",
            m.finished.clone(),
        );
        registry.register(
            "executions_failed",
            "Executions that FAILED or TIMED_OUT, by kind of error (user, system, timeout)",
            m.failed.clone(),
        );
        registry.register_with_unit(
            "execution_duration",
            "Iteration time: from an execution's start to its terminal phase",
            Unit::Seconds,
            m.duration.clone(),
        );
        registry.register_with_unit(
            "execution_queue",
            "Queue-to-start latency: from an execution's creation to its start",
            Unit::Seconds,
            m.queue.clone(),
        );
        registry.register(
            "task_attempts",
            "Task attempts that reached a terminal phase, by task type and phase",
            m.attempts.clone(),
        );
        registry.register_with_unit(
            "task_attempt_duration",
            "Task attempt run time: from running to its terminal phase",
            Unit::Seconds,
            m.attempt_duration.clone(),
        );
        registry.register("task_retries", "Task attempts that are retries (attempt number > 0)", m.retries.clone());
        registry.register(
            "sla_breaches",
            "Executions seen still running past their SLA (max duration or deadline)",
            m.sla_breaches.clone(),
        );
        m
    }

    /// Records what one stored event meant.
    pub fn record(&self, observations: &[Observation]) {
        for o in observations {
            match o {
                Observation::Started { labels, queued_seconds } => {
                    self.started.get_or_create(labels).inc();
                    if let Some(s) = queued_seconds {
                        self.queue.get_or_create(labels).observe(*s);
                    }
                }
                Observation::Finished { labels, seconds, failure } => {
                    self.finished.get_or_create(labels).inc();
                    if let Some(s) = seconds {
                        self.duration.get_or_create(labels).observe(*s);
                    }
                    if let Some(kind) = failure {
                        self.failed
                            .get_or_create(&FailureLabels {
                                project: labels.project.clone(),
                                domain: labels.domain.clone(),
                                launch_plan: labels.launch_plan.clone(),
                                kind: kind.to_string(),
                            })
                            .inc();
                    }
                }
                Observation::AttemptFinished { labels, seconds } => {
                    self.attempts.get_or_create(labels).inc();
                    if let Some(s) = seconds {
                        self.attempt_duration.get_or_create(labels).observe(*s);
                    }
                }
                Observation::Retry(labels) => {
                    self.retries.get_or_create(labels).inc();
                }
            }
        }
    }
}

/// One thing an event did that the KPIs count.
#[derive(Debug, Clone, PartialEq)]
pub enum Observation {
    /// The execution started running; with how long it was queued.
    Started {
        /// Its labels.
        labels: RunLabels,
        /// Creation to start, when both are known.
        queued_seconds: Option<f64>,
    },
    /// The execution reached a terminal phase.
    Finished {
        /// Its labels, with the phase.
        labels: PhaseLabels,
        /// Start to finish, when known.
        seconds: Option<f64>,
        /// For FAILED and TIMED_OUT: `user`, `system`, `timeout` or `unknown`.
        failure: Option<&'static str>,
    },
    /// A task attempt reached a terminal phase.
    AttemptFinished {
        /// Its labels.
        labels: TaskLabels,
        /// Running to finish, when known.
        seconds: Option<f64>,
    },
    /// A task attempt with a retry number above 0 appeared.
    Retry(ScopeLabels),
}

fn micros(t: &Option<prost_types::Timestamp>) -> Option<i64> {
    t.as_ref().map(|t| t.seconds * 1_000_000 + i64::from(t.nanos) / 1_000)
}

fn wf_phase_name(phase: i32) -> String {
    workflow_execution::Phase::try_from(phase)
        .map(|p| p.as_str_name().to_string())
        .unwrap_or_else(|_| "UNDEFINED".into())
}

fn wf_terminal(phase: i32) -> bool {
    use workflow_execution::Phase as P;
    matches!(P::try_from(phase), Ok(P::Succeeded | P::Failed | P::Aborted | P::TimedOut))
}

/// What a workflow event means, given the execution as stored before it (`created_at` in unix
/// microseconds). Nothing when the event changes nothing.
pub fn workflow_observations(
    labels: &RunLabels,
    created_at: i64,
    before: &ExecutionClosure,
    ev: &WorkflowExecutionEvent,
) -> Vec<Observation> {
    let mut after = before.clone();
    if !rules::apply_workflow_event(&mut after, ev) {
        return Vec::new();
    }
    let mut out = Vec::new();
    // A start is an event saying RUNNING; a terminal event also fills a missing start time, but
    // an execution aborted while queued never started.
    if before.started_at.is_none() && ev.phase == workflow_execution::Phase::Running as i32 {
        let queued = micros(&after.started_at).map(|s| (s - created_at).max(0) as f64 / 1e6);
        out.push(Observation::Started { labels: labels.clone(), queued_seconds: queued });
    }
    if !wf_terminal(before.phase) && wf_terminal(after.phase) {
        let seconds = after.duration.as_ref().map(|d| (d.seconds as f64 + f64::from(d.nanos) / 1e9).max(0.0));
        let failure = match workflow_execution::Phase::try_from(after.phase) {
            Ok(workflow_execution::Phase::TimedOut) => Some("timeout"),
            Ok(workflow_execution::Phase::Failed) => Some(match &after.output_result {
                Some(aloft_proto::flyteidl::admin::execution_closure::OutputResult::Error(e)) => {
                    match ErrorKind::try_from(e.kind) {
                        Ok(ErrorKind::User) => "user",
                        Ok(ErrorKind::System) => "system",
                        _ => "unknown",
                    }
                }
                _ => "unknown",
            }),
            _ => None,
        };
        out.push(Observation::Finished {
            labels: PhaseLabels {
                project: labels.project.clone(),
                domain: labels.domain.clone(),
                launch_plan: labels.launch_plan.clone(),
                phase: wf_phase_name(after.phase),
            },
            seconds,
            failure,
        });
    }
    out
}

/// What a task event means, given the attempt as stored before it (`None`: a new attempt) as
/// its phase and start time (unix microseconds).
pub fn task_observations(
    scope: &ScopeLabels,
    before: Option<(i32, Option<i64>)>,
    ev: &TaskExecutionEvent,
) -> Vec<Observation> {
    let mut out = Vec::new();
    if before.is_none() && ev.retry_attempt > 0 {
        out.push(Observation::Retry(scope.clone()));
    }
    let was_terminal = before.is_some_and(|(phase, _)| rules::task_terminal(phase));
    if !was_terminal && rules::task_terminal(ev.phase) {
        let started = before.and_then(|(_, s)| s);
        let seconds = match (started, micros(&ev.occurred_at)) {
            (Some(s), Some(e)) => Some((e - s).max(0) as f64 / 1e6),
            _ => None,
        };
        let task_type = if ev.task_type.is_empty() { "unknown".to_string() } else { ev.task_type.clone() };
        out.push(Observation::AttemptFinished {
            labels: TaskLabels {
                project: scope.project.clone(),
                domain: scope.domain.clone(),
                task_type,
                phase: task_execution::Phase::try_from(ev.phase)
                    .map(|p| p.as_str_name().to_string())
                    .unwrap_or_else(|_| "UNDEFINED".into()),
            },
            seconds,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use aloft_proto::flyteidl::core::ExecutionError;
    use aloft_proto::flyteidl::event::workflow_execution_event::OutputResult;

    use super::*;

    fn ts(s: i64) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp { seconds: s, nanos: 0 })
    }

    fn labels() -> RunLabels {
        RunLabels { project: "p".into(), domain: "d".into(), launch_plan: "lp".into() }
    }

    fn wf(phase: workflow_execution::Phase, at: i64) -> WorkflowExecutionEvent {
        WorkflowExecutionEvent { phase: phase as i32, occurred_at: ts(at), ..Default::default() }
    }

    #[test]
    fn start_then_failure_is_observed_once() {
        use workflow_execution::Phase as P;
        let queued = ExecutionClosure { phase: P::Queued as i32, ..Default::default() };
        let start = wf(P::Running, 105);
        let obs = workflow_observations(&labels(), 100_000_000, &queued, &start);
        assert_eq!(obs, vec![Observation::Started { labels: labels(), queued_seconds: Some(5.0) }]);

        let mut running = queued.clone();
        assert!(rules::apply_workflow_event(&mut running, &start));
        // the same RUNNING again: nothing
        assert!(workflow_observations(&labels(), 100_000_000, &running, &start).is_empty());

        let mut fail = wf(P::Failed, 125);
        fail.output_result =
            Some(OutputResult::Error(ExecutionError { kind: ErrorKind::User as i32, ..Default::default() }));
        let obs = workflow_observations(&labels(), 100_000_000, &running, &fail);
        let Observation::Finished { labels: l, seconds, failure } = &obs[0] else { panic!("{obs:?}") };
        assert_eq!((l.phase.as_str(), *seconds, *failure), ("FAILED", Some(20.0), Some("user")));

        let mut failed = running.clone();
        assert!(rules::apply_workflow_event(&mut failed, &fail));
        assert!(workflow_observations(&labels(), 100_000_000, &failed, &fail).is_empty());
    }

    #[test]
    fn aborted_while_queued_never_started() {
        use workflow_execution::Phase as P;
        let queued = ExecutionClosure { phase: P::Queued as i32, ..Default::default() };
        let obs = workflow_observations(&labels(), 0, &queued, &wf(P::Aborted, 3));
        assert_eq!(obs.len(), 1);
        assert!(matches!(&obs[0], Observation::Finished { failure: None, labels, .. } if labels.phase == "ABORTED"));
    }

    #[test]
    fn task_attempts_and_retries() {
        use task_execution::Phase as P;
        let scope = ScopeLabels { project: "p".into(), domain: "d".into() };
        let ev = |phase: P, attempt: u32, at: i64| TaskExecutionEvent {
            phase: phase as i32,
            retry_attempt: attempt,
            occurred_at: ts(at),
            task_type: "python-task".into(),
            ..Default::default()
        };
        assert!(task_observations(&scope, None, &ev(P::Running, 0, 1)).is_empty());
        assert_eq!(task_observations(&scope, None, &ev(P::Running, 1, 1)), vec![Observation::Retry(scope.clone())]);
        let obs = task_observations(&scope, Some((P::Running as i32, Some(1_000_000))), &ev(P::Failed, 1, 4));
        let Observation::AttemptFinished { labels, seconds } = &obs[0] else { panic!("{obs:?}") };
        assert_eq!((labels.phase.as_str(), labels.task_type.as_str(), *seconds), ("FAILED", "python-task", Some(3.0)));
        assert!(task_observations(&scope, Some((P::Failed as i32, None)), &ev(P::Failed, 1, 5)).is_empty());
    }
}
