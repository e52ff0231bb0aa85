//! Task execution events and their envelopes, as the protocol doc fixes them: id
//! `task/<p>/<d>/<name>/<node-id>/<attempt>/<phase>/<phase_version>` (phase as the flyteidl enum
//! name, e.g. `RUNNING`), producer `executor`, one event per phase (phase_version 0).

use std::time::SystemTime;

use aloft_proto::aloft::v1::envelope::Body;
use aloft_proto::aloft::v1::{Envelope, TaskRunCommand};
use aloft_proto::flyteidl::core::task_execution::Phase;
use aloft_proto::flyteidl::core::{TaskLog, task_log};
use aloft_proto::flyteidl::event::{EventReason, TaskExecutionEvent, task_execution_event};

use super::ids::AttemptId;
use super::outcome::Outcome;

/// `producer_id` of every event the executor publishes, and the envelope's `source`.
pub const PRODUCER: &str = "executor";

/// The name of the log link.
pub const LOG_NAME: &str = "task.log";

/// The link to the attempt's log, `O/task.log`. flyteidl 1.16 has no TEXT message format;
/// UNKNOWN is its plain-text default.
pub fn log_link(output_prefix: &str) -> TaskLog {
    TaskLog {
        uri: format!("{}/{LOG_NAME}", output_prefix.trim_end_matches('/')),
        name: LOG_NAME.into(),
        message_format: task_log::MessageFormat::Unknown as i32,
        ..Default::default()
    }
}

/// The envelope id of an event.
pub fn event_id(id: &AttemptId, phase: Phase, phase_version: u32) -> String {
    let e = &id.execution;
    format!(
        "task/{}/{}/{}/{}/{}/{}/{}",
        e.project,
        e.domain,
        e.name,
        id.node_id,
        id.attempt,
        phase.as_str_name(),
        phase_version
    )
}

/// The RUNNING event, sent when the process has started.
pub fn running(cmd: &TaskRunCommand, id: &AttemptId, at: SystemTime) -> Envelope {
    let event = base(cmd, Phase::Running, at);
    envelope(id, event, at)
}

/// The terminal event of an outcome.
pub fn terminal(cmd: &TaskRunCommand, id: &AttemptId, outcome: &Outcome, at: SystemTime) -> Envelope {
    use task_execution_event::OutputResult;
    let (phase, result, reason) = match outcome {
        Outcome::Succeeded { output_uri } => {
            (Phase::Succeeded, Some(OutputResult::OutputUri(output_uri.clone())), None)
        }
        Outcome::RetryableFailed(e) => (
            Phase::RetryableFailed,
            Some(OutputResult::Error(e.clone())),
            Some(format!("{}: {}", e.code, first_line(&e.message))),
        ),
        Outcome::Failed(e) => (
            Phase::Failed,
            Some(OutputResult::Error(e.clone())),
            Some(format!("{}: {}", e.code, first_line(&e.message))),
        ),
        Outcome::Aborted { reason } => (Phase::Aborted, None, Some(reason.clone())),
    };
    let mut event = base(cmd, phase, at);
    event.output_result = result;
    if let Some(reason) = reason {
        // `reasons`, not the deprecated single `reason`: the event sink keeps the list.
        event.reasons = vec![EventReason { reason, occurred_at: event.occurred_at }];
    }
    envelope(id, event, at)
}

fn base(cmd: &TaskRunCommand, phase: Phase, at: SystemTime) -> TaskExecutionEvent {
    let id = cmd.id.clone().unwrap_or_default();
    let at = prost_types::Timestamp::from(at);
    TaskExecutionEvent {
        task_id: id.task_id,
        parent_node_execution_id: id.node_execution_id,
        retry_attempt: id.retry_attempt,
        phase: phase as i32,
        producer_id: PRODUCER.into(),
        logs: vec![log_link(&cmd.output_prefix)],
        occurred_at: Some(at),
        reported_at: Some(at),
        phase_version: 0,
        task_type: cmd.task.as_ref().map(|t| t.r#type.clone()).unwrap_or_default(),
        input_value: Some(task_execution_event::InputValue::InputUri(cmd.inputs_uri.clone())),
        ..Default::default()
    }
}

fn envelope(id: &AttemptId, event: TaskExecutionEvent, at: SystemTime) -> Envelope {
    let phase = Phase::try_from(event.phase).unwrap_or(Phase::Undefined);
    Envelope {
        id: event_id(id, phase, event.phase_version),
        created_at: Some(prost_types::Timestamp::from(at)),
        source: PRODUCER.into(),
        body: Some(Body::TaskEvent(event)),
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use aloft_proto::flyteidl::core::ExecutionError;

    use super::*;
    use crate::domain::ids::tests::command;

    fn at() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    fn event(e: &Envelope) -> &TaskExecutionEvent {
        match &e.body {
            Some(Body::TaskEvent(ev)) => ev,
            other => panic!("not a task event: {other:?}"),
        }
    }

    #[test]
    fn running_event_carries_ids_log_and_input() {
        let cmd = command();
        let id = AttemptId::from_command(&cmd).unwrap();
        let env = running(&cmd, &id, at());
        assert_eq!(env.id, "task/proj/dev/exec1/n0/1/RUNNING/0");
        assert_eq!(env.source, "executor");
        let ev = event(&env);
        assert_eq!(ev.phase, Phase::Running as i32);
        assert_eq!(ev.phase_version, 0);
        assert_eq!(ev.producer_id, "executor");
        assert_eq!(ev.retry_attempt, 1);
        assert_eq!(ev.task_type, "python-task");
        assert_eq!(ev.task_id.as_ref().unwrap().name, "wf.t1");
        assert_eq!(ev.parent_node_execution_id.as_ref().unwrap().node_id, "n0");
        assert_eq!(ev.occurred_at.unwrap().seconds, 1_700_000_000);
        assert_eq!(
            ev.input_value,
            Some(task_execution_event::InputValue::InputUri("/data/metadata/proj/dev/exec1/n0/data/inputs.pb".into()))
        );
        assert_eq!(
            ev.logs,
            vec![TaskLog {
                uri: "/data/metadata/proj/dev/exec1/n0/data/1/task.log".into(),
                name: "task.log".into(),
                ..Default::default()
            }]
        );
        assert!(ev.output_result.is_none());
    }

    #[test]
    fn terminal_events_by_outcome() {
        let cmd = command();
        let id = AttemptId::from_command(&cmd).unwrap();
        let ok = terminal(&cmd, &id, &Outcome::Succeeded { output_uri: "/o/outputs.pb".into() }, at());
        assert_eq!(ok.id, "task/proj/dev/exec1/n0/1/SUCCEEDED/0");
        assert_eq!(
            event(&ok).output_result,
            Some(task_execution_event::OutputResult::OutputUri("/o/outputs.pb".into()))
        );

        let error = ExecutionError { code: "Timeout".into(), message: "too slow\nmore".into(), ..Default::default() };
        let retry = terminal(&cmd, &id, &Outcome::RetryableFailed(error.clone()), at());
        assert_eq!(retry.id, "task/proj/dev/exec1/n0/1/RETRYABLE_FAILED/0");
        assert_eq!(event(&retry).output_result, Some(task_execution_event::OutputResult::Error(error.clone())));
        assert_eq!(event(&retry).reasons[0].reason, "Timeout: too slow");

        let failed = terminal(&cmd, &id, &Outcome::Failed(error), at());
        assert_eq!(failed.id, "task/proj/dev/exec1/n0/1/FAILED/0");

        let aborted = terminal(&cmd, &id, &Outcome::Aborted { reason: "stop".into() }, at());
        assert_eq!(aborted.id, "task/proj/dev/exec1/n0/1/ABORTED/0");
        let ev = event(&aborted);
        assert_eq!(ev.reasons.len(), 1);
        assert_eq!(ev.reasons[0].reason, "stop");
        assert_eq!(ev.reasons[0].occurred_at, ev.occurred_at);
        assert!(ev.output_result.is_none());
        assert_eq!(ev.logs.len(), 1, "every event links the log");
    }
}
