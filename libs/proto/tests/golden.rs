//! Golden-file tests: the wire encoding of every bus message kind is pinned, so a change to
//! `proto/aloft/bus.proto` that breaks messages already sitting in a stream fails here first.
//! Regenerate deliberately with `UPDATE_GOLDEN=1 cargo nextest run -p aloft-proto`.

use std::path::PathBuf;

use aloft_proto::aloft::v1::{AbortCommand, Envelope, ExecuteCommand, TaskRunCommand, envelope::Body};
use aloft_proto::flyteidl::admin::ExecutionSpec;
use aloft_proto::flyteidl::core::{
    self, Identifier, NodeExecutionIdentifier, ResourceType, TaskExecutionIdentifier, WorkflowExecutionIdentifier,
};
use aloft_proto::flyteidl::event::{NodeExecutionEvent, TaskExecutionEvent, WorkflowExecutionEvent};
use prost::Message;

fn exec_id() -> WorkflowExecutionIdentifier {
    WorkflowExecutionIdentifier {
        project: "flytesnacks".into(),
        domain: "development".into(),
        name: "abc123".into(),
        org: String::new(),
    }
}

fn ident(kind: ResourceType, name: &str) -> Identifier {
    Identifier {
        resource_type: kind as i32,
        project: "flytesnacks".into(),
        domain: "development".into(),
        name: name.into(),
        version: "v1".into(),
        org: String::new(),
    }
}

fn envelope(id: &str, body: Body) -> Envelope {
    Envelope {
        id: id.into(),
        created_at: Some(prost_types::Timestamp { seconds: 1_700_000_000, nanos: 5 }),
        source: "test".into(),
        body: Some(body),
    }
}

fn cases() -> Vec<(&'static str, Envelope)> {
    let node_id = NodeExecutionIdentifier { node_id: "n0".into(), execution_id: Some(exec_id()) };
    let task_exec_id = TaskExecutionIdentifier {
        task_id: Some(ident(ResourceType::Task, "wf.t1")),
        node_execution_id: Some(node_id.clone()),
        retry_attempt: 1,
    };
    vec![
        (
            "execute",
            envelope(
                "exec/flytesnacks/development/abc123",
                Body::Execute(ExecuteCommand {
                    execution_id: Some(exec_id()),
                    workflow_id: Some(ident(ResourceType::Workflow, "wf")),
                    launch_plan_id: Some(ident(ResourceType::LaunchPlan, "wf")),
                    closure_uri: "s3://b/closures/wf.pb".into(),
                    inputs_uri: "s3://b/m/flytesnacks/development/abc123/inputs.pb".into(),
                    metadata_prefix: "s3://b/m/flytesnacks/development/abc123".into(),
                    raw_output_prefix: "s3://b/raw".into(),
                    spec: Some(ExecutionSpec { max_parallelism: 4, ..Default::default() }),
                }),
            ),
        ),
        (
            "abort",
            envelope(
                "abort/flytesnacks/development/abc123",
                Body::Abort(AbortCommand {
                    execution_id: Some(exec_id()),
                    cause: "user".into(),
                    principal: "me".into(),
                }),
            ),
        ),
        (
            "task_run",
            envelope(
                "run/flytesnacks/development/abc123/n0/1",
                Body::TaskRun(TaskRunCommand {
                    id: Some(task_exec_id.clone()),
                    task: Some(core::TaskTemplate {
                        id: Some(ident(ResourceType::Task, "wf.t1")),
                        r#type: "python-task".into(),
                        ..Default::default()
                    }),
                    inputs_uri: "s3://b/in.pb".into(),
                    output_prefix: "s3://b/out/1".into(),
                    raw_output_prefix: "s3://b/raw/x".into(),
                    checkpoint_prefix: "s3://b/raw/x/_flytecheckpoints".into(),
                    prev_checkpoint_prefix: String::new(),
                    env: [("A".to_string(), "1".to_string())].into(),
                    timeout: Some(prost_types::Duration { seconds: 300, nanos: 0 }),
                    array_index: -1,
                    queue: "default".into(),
                }),
            ),
        ),
        (
            "workflow_event",
            envelope(
                "evt/wf/abc123/2",
                Body::WorkflowEvent(WorkflowExecutionEvent {
                    execution_id: Some(exec_id()),
                    producer_id: "scheduler".into(),
                    phase: core::workflow_execution::Phase::Running as i32,
                    ..Default::default()
                }),
            ),
        ),
        (
            "node_event",
            envelope(
                "evt/node/abc123/n0/3",
                Body::NodeEvent(NodeExecutionEvent {
                    id: Some(node_id),
                    phase: core::node_execution::Phase::Succeeded as i32,
                    ..Default::default()
                }),
            ),
        ),
        (
            "task_event",
            envelope(
                "evt/task/abc123/n0/1/5",
                Body::TaskEvent(TaskExecutionEvent {
                    task_id: task_exec_id.task_id.clone(),
                    parent_node_execution_id: task_exec_id.node_execution_id.clone(),
                    retry_attempt: 1,
                    phase: core::task_execution::Phase::Failed as i32,
                    ..Default::default()
                }),
            ),
        ),
    ]
}

#[test]
fn bus_messages_match_golden_files() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    for (name, msg) in cases() {
        let encoded = hex::encode(msg.encode_to_vec());
        let path = dir.join(format!("{name}.hex"));
        if update {
            std::fs::write(&path, format!("{encoded}\n")).unwrap();
            continue;
        }
        let golden = std::fs::read_to_string(&path)
            .unwrap_or_else(|_| panic!("{} missing: run with UPDATE_GOLDEN=1", path.display()));
        assert_eq!(golden.trim(), encoded, "encoding of {name} changed");
        // and the golden bytes decode back to the same message
        let decoded = Envelope::decode(hex::decode(golden.trim()).unwrap().as_slice()).unwrap();
        assert_eq!(decoded, msg, "{name} does not round-trip");
    }
}
