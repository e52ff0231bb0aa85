//! The single-node workflow FlyteAdmin creates to run a task on its own.

use aloft_proto::flyteidl::{
    admin,
    core::{
        self, Binding, BindingData, Identifier, Node, NodeMetadata, OutputReference, ResourceType, RetryStrategy,
        TaskNode, WorkflowMetadata, WorkflowTemplate, binding_data, node::Target, task_node,
    },
};

/// The id of the only node of a synthesized task workflow.
pub const TASK_WORKFLOW_NODE_ID: &str = "n0";

/// FlyteAdmin keeps at most this many trailing characters of the task name in the node name.
const MAX_NODE_NAME_LENGTH: usize = 63;

/// Retries FlyteAdmin gives the node when the task declares none.
const DEFAULT_RETRIES: u32 = 3;

/// The `.flytegen.<task name>` workflow FlyteAdmin creates for a single-task execution
/// (`flyteadmin/pkg/manager/impl/util/single_task_execution.go`): same project, domain and version
/// as the task, one task node `n0` whose inputs are bound to the workflow inputs (promises with an
/// empty node id, which compilation turns into `start-node`), and workflow outputs bound to `n0`'s
/// outputs. The node's metadata name is the task name reduced to letters, digits and `-`; its
/// retries are the task's, or 3 when the task sets none. Bindings are sorted by variable name.
pub fn synthesize_task_workflow(task: &core::TaskTemplate) -> admin::WorkflowSpec {
    let task_id = task.id.clone().unwrap_or_default();
    let workflow_id = Identifier {
        resource_type: ResourceType::Workflow as i32,
        name: format!(".flytegen.{}", task_id.name),
        ..task_id.clone()
    };
    let interface = task.interface.clone().unwrap_or_default();
    let retries = task.metadata.as_ref().and_then(|m| m.retries).unwrap_or(RetryStrategy { retries: DEFAULT_RETRIES });

    let node = Node {
        id: TASK_WORKFLOW_NODE_ID.to_owned(),
        metadata: Some(NodeMetadata { name: node_name(&task_id.name), retries: Some(retries), ..Default::default() }),
        inputs: promises(interface.inputs.as_ref(), ""),
        target: Some(Target::TaskNode(TaskNode {
            reference: Some(task_node::Reference::ReferenceId(task_id)),
            ..Default::default()
        })),
        ..Default::default()
    };
    let outputs = promises(interface.outputs.as_ref(), TASK_WORKFLOW_NODE_ID);

    admin::WorkflowSpec {
        template: Some(WorkflowTemplate {
            id: Some(workflow_id),
            metadata: Some(WorkflowMetadata::default()),
            interface: Some(interface),
            nodes: vec![node],
            outputs,
            ..Default::default()
        }),
        sub_workflows: Vec::new(),
        description: None,
    }
}

/// One binding per variable, each a promise of the same-named variable of `node_id`.
fn promises(vars: Option<&core::VariableMap>, node_id: &str) -> Vec<Binding> {
    let mut names: Vec<&String> = vars.map(|v| v.variables.keys().collect()).unwrap_or_default();
    names.sort();
    names
        .into_iter()
        .map(|name| Binding {
            var: name.clone(),
            binding: Some(BindingData {
                value: Some(binding_data::Value::Promise(OutputReference {
                    node_id: node_id.to_owned(),
                    var: name.clone(),
                    attr_path: Vec::new(),
                })),
                union: None,
            }),
        })
        .collect()
}

fn node_name(task_name: &str) -> String {
    let chars: Vec<char> = task_name.chars().collect();
    let tail = &chars[chars.len().saturating_sub(MAX_NODE_NAME_LENGTH)..];
    tail.iter().filter(|c| **c == '-' || c.is_alphanumeric()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_name_keeps_letters_digits_and_dashes_of_the_tail() {
        assert_eq!(node_name("wf.tasks.say_hello-2"), "wftaskssayhello-2");
        let long = format!("{}.end", "a".repeat(100));
        assert_eq!(node_name(&long), format!("{}end", "a".repeat(59)));
    }
}
