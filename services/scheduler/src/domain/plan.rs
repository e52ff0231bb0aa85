//! The shape of a workflow the state machine walks: task nodes and their dependencies, read once
//! from the compiled closure.

use std::collections::{BTreeMap, BTreeSet};

use aloft_proto::flyteidl::core::{self, CompiledWorkflowClosure, Identifier, node::Target, task_node};

/// One runnable node.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanNode {
    /// Node id.
    pub id: String,
    /// Nodes that must succeed first (never `start-node`).
    pub upstream: BTreeSet<String>,
    /// The task it runs.
    pub task: Identifier,
    /// Extra attempts allowed for recoverable user errors.
    pub retries: u32,
    /// Kill an attempt after this long.
    pub timeout: Option<prost_types::Duration>,
}

/// A workflow reduced to what scheduling needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Nodes by id (ordered, so scheduling is deterministic).
    pub nodes: BTreeMap<String, PlanNode>,
    /// Keep going after a failure until nothing else can run.
    pub fail_after_executable_nodes_complete: bool,
}

/// The node kinds this scheduler runs so far; anything else fails the execution with this message.
fn unsupported(node: &core::Node) -> Option<&'static str> {
    match &node.target {
        Some(Target::TaskNode(_)) => None,
        Some(Target::BranchNode(_)) => Some("branch nodes"),
        Some(Target::WorkflowNode(w)) => Some(match &w.reference {
            Some(core::workflow_node::Reference::LaunchplanRef(_)) => "launch plan nodes",
            _ => "sub-workflow nodes",
        }),
        Some(Target::GateNode(_)) => Some("gate nodes"),
        Some(Target::ArrayNode(_)) => Some("array nodes (map tasks)"),
        None => Some("nodes without a target"),
    }
}

impl Plan {
    /// Builds the plan of the primary workflow.
    pub fn from_closure(closure: &CompiledWorkflowClosure) -> Result<Plan, String> {
        let primary =
            closure.primary.as_ref().and_then(|p| p.template.as_ref()).ok_or("the closure has no primary workflow")?;
        let retries_of = |id: &Identifier| -> u32 {
            closure
                .tasks
                .iter()
                .filter_map(|t| t.template.as_ref())
                .find(|t| t.id.as_ref() == Some(id))
                .and_then(|t| t.metadata.as_ref())
                .and_then(|m| m.retries.as_ref())
                .map(|r| r.retries)
                .unwrap_or(0)
        };
        let timeout_of = |id: &Identifier| {
            closure
                .tasks
                .iter()
                .filter_map(|t| t.template.as_ref())
                .find(|t| t.id.as_ref() == Some(id))
                .and_then(|t| t.metadata.as_ref())
                .and_then(|m| m.timeout)
                .filter(|d| d.seconds > 0 || d.nanos > 0)
        };
        let mut nodes = BTreeMap::new();
        for n in &primary.nodes {
            if n.id == "start-node" || n.id == "end-node" {
                continue;
            }
            if let Some(kind) = unsupported(n) {
                return Err(format!("node `{}`: {kind} are not supported by this scheduler yet", n.id));
            }
            let Some(Target::TaskNode(t)) = &n.target else { unreachable!("checked above") };
            let Some(task_node::Reference::ReferenceId(task)) = &t.reference else {
                return Err(format!("node `{}` has no task reference", n.id));
            };
            let meta = n.metadata.as_ref();
            let retries = meta
                .and_then(|m| m.retries.as_ref())
                .map(|r| r.retries)
                .filter(|r| *r > 0)
                .unwrap_or_else(|| retries_of(task));
            let timeout =
                meta.and_then(|m| m.timeout).filter(|d| d.seconds > 0 || d.nanos > 0).or_else(|| timeout_of(task));
            let upstream = n.upstream_node_ids.iter().filter(|u| *u != "start-node").cloned().collect();
            nodes.insert(n.id.clone(), PlanNode { id: n.id.clone(), upstream, task: task.clone(), retries, timeout });
        }
        for n in nodes.values() {
            if let Some(missing) = n.upstream.iter().find(|u| !nodes.contains_key(*u)) {
                return Err(format!("node `{}` depends on unknown node `{missing}`", n.id));
            }
        }
        let policy = primary.metadata.as_ref().map(|m| m.on_failure).unwrap_or(0);
        Ok(Plan {
            nodes,
            fail_after_executable_nodes_complete: policy
                == core::workflow_metadata::OnFailurePolicy::FailAfterExecutableNodesComplete as i32,
        })
    }
}
