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
    /// The task it runs (for a branch node: unused; its children have their own).
    pub task: Identifier,
    /// Extra attempts allowed for recoverable user errors.
    pub retries: u32,
    /// Kill an attempt after this long.
    pub timeout: Option<prost_types::Duration>,
    /// A branch node's cases; `None` for a task node.
    pub branch: Option<Branch>,
}

/// A task node run as the chosen child of a branch node.
#[derive(Debug, Clone, PartialEq)]
pub struct Child {
    /// Its unique node id (`<branch>-<id>` as the compiler renamed it).
    pub id: String,
    /// Extra attempts allowed for recoverable user errors.
    pub retries: u32,
}

/// What a branch node does: the first case whose condition holds runs its child.
#[derive(Debug, Clone, PartialEq)]
pub struct Branch {
    /// Conditions and children, in order (`if`, then every `elif`).
    pub cases: Vec<(core::BooleanExpression, Child)>,
    /// `else`: a child, an error message, or nothing (no case held: the branch fails).
    pub otherwise: Otherwise,
}

/// The `else` of a branch.
#[derive(Debug, Clone, PartialEq)]
pub enum Otherwise {
    /// Run this child.
    Child(Child),
    /// Fail with this message (`conditional(...).else_().fail("...")`).
    Fail(String),
    /// No `else`.
    Nothing,
}

impl Branch {
    /// Every child, for SKIPPED events and lookups.
    pub fn children(&self) -> impl Iterator<Item = &Child> {
        self.cases.iter().map(|(_, c)| c).chain(match &self.otherwise {
            Otherwise::Child(c) => Some(c),
            _ => None,
        })
    }
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
        Some(Target::TaskNode(_)) | Some(Target::BranchNode(_)) => None,
        Some(Target::WorkflowNode(w)) => Some(match &w.reference {
            Some(core::workflow_node::Reference::LaunchplanRef(_)) => "launch plan nodes",
            _ => "sub-workflow nodes",
        }),
        Some(Target::GateNode(_)) => Some("gate nodes"),
        Some(Target::ArrayNode(_)) => Some("array nodes (map tasks)"),
        None => Some("nodes without a target"),
    }
}

/// The task, retries and timeout of a task node (node metadata over task metadata).
type Task = (Identifier, u32, Option<prost_types::Duration>);

fn task_of(
    n: &core::Node,
    retries_of: &dyn Fn(&Identifier) -> u32,
    timeout_of: &dyn Fn(&Identifier) -> Option<prost_types::Duration>,
) -> Result<Task, String> {
    let Some(Target::TaskNode(t)) = &n.target else {
        return Err(format!("node `{}`: only task nodes can run here", n.id));
    };
    let Some(task_node::Reference::ReferenceId(task)) = &t.reference else {
        return Err(format!("node `{}` has no task reference", n.id));
    };
    let meta = n.metadata.as_ref();
    let retries =
        meta.and_then(|m| m.retries.as_ref()).map(|r| r.retries).filter(|r| *r > 0).unwrap_or_else(|| retries_of(task));
    let timeout = meta.and_then(|m| m.timeout).filter(|d| d.seconds > 0 || d.nanos > 0).or_else(|| timeout_of(task));
    Ok((task.clone(), retries, timeout))
}

fn branch_of(n: &core::Node, b: &core::BranchNode, retries_of: &dyn Fn(&Identifier) -> u32) -> Result<Branch, String> {
    let ie = b.if_else.as_ref().ok_or_else(|| format!("branch node `{}` has no cases", n.id))?;
    let child = |node: &core::Node| -> Result<Child, String> {
        if !matches!(node.target, Some(Target::TaskNode(_))) {
            return Err(format!(
                "branch node `{}`: child `{}` is not a task node; nested branches and sub-workflows under a branch are not supported yet",
                n.id, node.id
            ));
        }
        let (_, retries, _) = task_of(node, retries_of, &|_| None)?;
        Ok(Child { id: node.id.clone(), retries })
    };
    let mut cases = Vec::new();
    for block in ie.case.iter().map(|b| &**b).chain(ie.other.iter()) {
        let condition =
            block.condition.clone().ok_or_else(|| format!("branch node `{}`: a case has no condition", n.id))?;
        let then = block.then_node.as_deref().ok_or_else(|| format!("branch node `{}`: a case has no node", n.id))?;
        cases.push((condition, child(then)?));
    }
    let otherwise = match &ie.default {
        Some(core::if_else_block::Default::ElseNode(e)) => Otherwise::Child(child(e)?),
        Some(core::if_else_block::Default::Error(e)) => Otherwise::Fail(e.message.clone()),
        None => Otherwise::Nothing,
    };
    Ok(Branch { cases, otherwise })
}

impl Plan {
    /// The branch node whose child has this id.
    pub fn parent_of(&self, child_id: &str) -> Option<&PlanNode> {
        self.nodes.values().find(|n| n.branch.as_ref().is_some_and(|b| b.children().any(|c| c.id == child_id)))
    }

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
            let upstream: BTreeSet<String> =
                n.upstream_node_ids.iter().filter(|u| *u != "start-node").cloned().collect();
            if let Some(Target::BranchNode(b)) = &n.target {
                let branch = branch_of(n, b, &retries_of)?;
                let node = PlanNode {
                    id: n.id.clone(),
                    upstream,
                    task: Identifier::default(),
                    retries: 0,
                    timeout: None,
                    branch: Some(branch),
                };
                nodes.insert(n.id.clone(), node);
                continue;
            }
            let (task, retries, timeout) = task_of(n, &retries_of, &timeout_of)?;
            nodes.insert(n.id.clone(), PlanNode { id: n.id.clone(), upstream, task, retries, timeout, branch: None });
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
