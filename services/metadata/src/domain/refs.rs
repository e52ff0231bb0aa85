//! What a workflow spec refers to, so the registry can load exactly those entities before the
//! (synchronous) compiler runs.

use aloft_proto::flyteidl::admin::WorkflowSpec;
use aloft_proto::flyteidl::core::{Identifier, Node, if_else_block, node::Target, task_node, workflow_node};

/// Task and launch plan identifiers referenced anywhere in the spec (sub-workflows included).
#[derive(Debug, Default, PartialEq)]
pub struct Refs {
    /// Tasks, in first-seen order, de-duplicated.
    pub tasks: Vec<Identifier>,
    /// Launch plans, likewise.
    pub launch_plans: Vec<Identifier>,
}

/// Walks every node of the template, its failure node and every sub-workflow.
pub fn collect(spec: &WorkflowSpec) -> Refs {
    let mut refs = Refs::default();
    let templates = spec.template.iter().chain(spec.sub_workflows.iter());
    for t in templates {
        for n in t.nodes.iter().chain(t.failure_node.iter()) {
            walk(n, &mut refs);
        }
    }
    refs
}

fn push(list: &mut Vec<Identifier>, id: &Identifier) {
    if !list.contains(id) {
        list.push(id.clone());
    }
}

fn walk(node: &Node, refs: &mut Refs) {
    match &node.target {
        Some(Target::TaskNode(t)) => {
            if let Some(task_node::Reference::ReferenceId(id)) = &t.reference {
                push(&mut refs.tasks, id);
            }
        }
        Some(Target::WorkflowNode(w)) => {
            if let Some(workflow_node::Reference::LaunchplanRef(id)) = &w.reference {
                push(&mut refs.launch_plans, id);
            }
        }
        Some(Target::BranchNode(b)) => {
            if let Some(ie) = &b.if_else {
                for block in ie.case.iter().map(|b| &**b).chain(ie.other.iter()) {
                    if let Some(n) = &block.then_node {
                        walk(n, refs);
                    }
                }
                if let Some(if_else_block::Default::ElseNode(n)) = &ie.default {
                    walk(n, refs);
                }
            }
        }
        Some(Target::ArrayNode(a)) => {
            if let Some(n) = &a.node {
                walk(n, refs);
            }
        }
        Some(Target::GateNode(_)) | None => {}
    }
}
