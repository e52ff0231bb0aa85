//! The execution state machine: `decide(state, input, plan, limits) -> effects`, pure.
//!
//! The caller performs the effects in order and only then stores the new state, so a crash at any
//! point re-runs the same decision on redelivery; every effect is idempotent (deterministic message
//! ids, overwrite-same-bytes blob writes).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::plan::Plan;

/// Workflow phase as the scheduler tracks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WfStatus {
    /// Nodes are running.
    Running,
    /// A node failed; waiting for the others (fail-after-executable-nodes-complete).
    Failing,
    /// Done: outputs written.
    Succeeded,
    /// Done: a node failed.
    Failed,
    /// Done: terminated.
    Aborted,
}

impl WfStatus {
    /// True for the final phases.
    pub fn is_terminal(self) -> bool {
        matches!(self, WfStatus::Succeeded | WfStatus::Failed | WfStatus::Aborted)
    }
}

/// Node phase as the scheduler tracks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeStatus {
    /// Waiting for upstream nodes.
    Waiting,
    /// An attempt was dispatched.
    Running,
    /// Outputs are at `output_uri`.
    Succeeded,
    /// No attempts left.
    Failed,
    /// Last attempt timed out.
    TimedOut,
    /// Stopped by an abort or by a failure elsewhere.
    Aborted,
    /// Never ran because an upstream node failed.
    Skipped,
}

/// An error as reported in events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// Short code ("USER:ValueError", "Timeout", ...).
    pub code: String,
    /// Human-readable message (for user errors, the Python traceback).
    pub message: String,
    /// True when the user's code failed, false for system failures.
    pub user: bool,
    /// Where the full error document is, if any.
    pub error_uri: String,
}

/// One node's progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeState {
    /// Phase.
    pub status: NodeStatus,
    /// Current attempt (0-based).
    pub attempt: u32,
    /// Recoverable user failures so far.
    pub user_failures: u32,
    /// System failures so far.
    pub system_failures: u32,
    /// Outputs of the successful attempt.
    pub output_uri: Option<String>,
    /// Error of the failed node.
    pub failure: Option<Failure>,
    /// For a branch node: the id of the child that runs (its attempts are counted here).
    #[serde(default)]
    pub chosen: Option<String>,
}

/// What the scheduler keeps per execution (stored in the KV bucket between messages).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecState {
    /// Workflow phase.
    pub status: WfStatus,
    /// Nodes by id.
    pub nodes: BTreeMap<String, NodeState>,
    /// The first node failure, reported as the execution's error.
    pub failure: Option<(String, Failure)>,
}

/// How an attempt ended (from the executor's terminal task event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Outputs written.
    Succeeded {
        /// `O/outputs.pb`.
        output_uri: String,
    },
    /// Failed; `retryable` for recoverable errors and system failures.
    Failed {
        /// The error.
        failure: Failure,
        /// Whether another attempt may help.
        retryable: bool,
    },
    /// Killed by an abort.
    Aborted,
}

/// Something that happened to an execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// The execute command: start.
    Start,
    /// An attempt ended.
    Attempt {
        /// Node id.
        node_id: String,
        /// Attempt number.
        attempt: u32,
        /// Result.
        outcome: Outcome,
    },
    /// A node's inputs could not be built (a binding failed).
    InputsFailed {
        /// Node id.
        node_id: String,
        /// Why.
        message: String,
    },
    /// A branch node's conditions were evaluated.
    Branch {
        /// The branch node.
        node_id: String,
        /// The child to run, or why the branch fails.
        decision: Result<String, String>,
    },
    /// Terminate.
    Abort {
        /// Why.
        cause: String,
    },
}

/// Limits from the execution spec and the scheduler's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// At most this many nodes running at once; 0 = no limit.
    pub max_parallelism: u32,
    /// Extra attempts after system failures.
    pub system_retries: u32,
}

/// What the caller must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Publish a workflow event.
    WorkflowEvent {
        /// Phase.
        phase: WfStatus,
        /// On failure.
        failure: Option<Failure>,
    },
    /// Publish a node event.
    NodeEvent {
        /// Node id (also `start-node` / `end-node`).
        node_id: String,
        /// Phase.
        phase: NodeStatus,
        /// Attempt it concerns (part of the event id).
        attempt: u32,
        /// Outputs, on success.
        output_uri: Option<String>,
        /// Error, on failure.
        failure: Option<Failure>,
    },
    /// Build and write the node's inputs (first attempt only), then publish the task run.
    Dispatch {
        /// Node id.
        node_id: String,
        /// Attempt.
        attempt: u32,
    },
    /// Ask executors to kill a running attempt.
    Kill {
        /// Node id.
        node_id: String,
        /// Attempt.
        attempt: u32,
    },
    /// Resolve the workflow's output bindings and write `M/outputs.pb`.
    WriteOutputs,
    /// Resolve a branch node's inputs, evaluate its conditions and answer with `Input::Branch`.
    Evaluate {
        /// The branch node.
        node_id: String,
    },
}

/// The initial state: every node waiting.
pub fn initial(plan: &Plan) -> ExecState {
    ExecState {
        status: WfStatus::Running,
        nodes: plan
            .nodes
            .keys()
            .map(|id| {
                (
                    id.clone(),
                    NodeState {
                        status: NodeStatus::Waiting,
                        attempt: 0,
                        user_failures: 0,
                        system_failures: 0,
                        output_uri: None,
                        failure: None,
                        chosen: None,
                    },
                )
            })
            .collect(),
        failure: None,
    }
}

/// Applies `input` to `state`, returning the effects to perform.
pub fn decide(state: &mut ExecState, input: Input, plan: &Plan, limits: Limits) -> Vec<Effect> {
    let mut fx = Vec::new();
    if state.status.is_terminal() {
        return fx; // late or duplicate input
    }
    match input {
        Input::Start => {
            fx.push(Effect::WorkflowEvent { phase: WfStatus::Running, failure: None });
            fx.push(Effect::NodeEvent {
                node_id: "start-node".into(),
                phase: NodeStatus::Succeeded,
                attempt: 0,
                output_uri: None,
                failure: None,
            });
        }
        Input::Attempt { node_id: attempt_id, attempt, outcome } => {
            // The attempt belongs to a task node, or to the chosen child of a branch node, whose
            // progress is kept on the branch node; events go to the child, then the branch.
            let (node_id, retries, mut event_ids) = match plan.nodes.get(&attempt_id) {
                Some(p) => (attempt_id.clone(), p.retries, vec![attempt_id.clone()]),
                None => match plan.parent_of(&attempt_id) {
                    Some(parent) if state.nodes[&parent.id].chosen.as_deref() == Some(attempt_id.as_str()) => {
                        let retries = parent
                            .branch
                            .as_ref()
                            .and_then(|b| b.children().find(|c| c.id == attempt_id))
                            .map(|c| c.retries)
                            .unwrap_or(0);
                        (parent.id.clone(), retries, vec![attempt_id.clone(), parent.id.clone()])
                    }
                    _ => return fx,
                },
            };
            let Some(node) = state.nodes.get_mut(&node_id) else { return fx };
            if node.status != NodeStatus::Running || node.attempt != attempt {
                return fx; // a duplicate or a stale attempt
            }
            match outcome {
                Outcome::Succeeded { output_uri } => {
                    node.status = NodeStatus::Succeeded;
                    node.output_uri = Some(output_uri.clone());
                    for id in event_ids {
                        fx.push(Effect::NodeEvent {
                            node_id: id,
                            phase: NodeStatus::Succeeded,
                            attempt,
                            output_uri: Some(output_uri.clone()),
                            failure: None,
                        });
                    }
                }
                Outcome::Failed { failure, retryable } => {
                    let budget_left = if failure.user {
                        node.user_failures < retries
                    } else {
                        node.system_failures < limits.system_retries
                    };
                    if retryable && budget_left && state.status == WfStatus::Running {
                        if failure.user {
                            node.user_failures += 1;
                        } else {
                            node.system_failures += 1;
                        }
                        node.attempt += 1;
                        fx.push(Effect::Dispatch { node_id: attempt_id, attempt: node.attempt });
                    } else {
                        let phase = if failure.code == "Timeout" { NodeStatus::TimedOut } else { NodeStatus::Failed };
                        node.status = phase;
                        node.failure = Some(failure.clone());
                        for id in event_ids.drain(..) {
                            fx.push(Effect::NodeEvent {
                                node_id: id,
                                phase,
                                attempt,
                                output_uri: None,
                                failure: Some(failure.clone()),
                            });
                        }
                        fail(state, plan, node_id, failure, &mut fx);
                    }
                }
                Outcome::Aborted => {
                    node.status = NodeStatus::Aborted;
                    for id in event_ids {
                        fx.push(Effect::NodeEvent {
                            node_id: id,
                            phase: NodeStatus::Aborted,
                            attempt,
                            output_uri: None,
                            failure: None,
                        });
                    }
                    let failure = Failure {
                        code: "Aborted".into(),
                        message: format!("node {node_id} was aborted"),
                        user: false,
                        error_uri: String::new(),
                    };
                    fail(state, plan, node_id, failure, &mut fx);
                }
            }
        }
        Input::InputsFailed { node_id, message } => {
            // a branch child's inputs count as its branch node's
            let node_id = match plan.parent_of(&node_id) {
                Some(parent) if !plan.nodes.contains_key(&node_id) => parent.id.clone(),
                _ => node_id,
            };
            let Some(node) = state.nodes.get_mut(&node_id) else { return fx };
            if node.status != NodeStatus::Running {
                return fx;
            }
            let failure =
                Failure { code: "BindingResolutionFailed".into(), message, user: true, error_uri: String::new() };
            node.status = NodeStatus::Failed;
            node.failure = Some(failure.clone());
            fx.push(Effect::NodeEvent {
                node_id: node_id.clone(),
                phase: NodeStatus::Failed,
                attempt: node.attempt,
                output_uri: None,
                failure: Some(failure.clone()),
            });
            fail(state, plan, node_id, failure, &mut fx);
        }
        Input::Branch { node_id, decision } => {
            let Some(node) = state.nodes.get_mut(&node_id) else { return fx };
            if node.status != NodeStatus::Running || node.chosen.is_some() {
                return fx; // a duplicate
            }
            match decision {
                Ok(child) => {
                    node.chosen = Some(child.clone());
                    let others: Vec<String> = plan.nodes[&node_id]
                        .branch
                        .as_ref()
                        .map(|b| b.children().map(|c| c.id.clone()).filter(|c| *c != child).collect())
                        .unwrap_or_default();
                    for other in others {
                        fx.push(Effect::NodeEvent {
                            node_id: other,
                            phase: NodeStatus::Skipped,
                            attempt: 0,
                            output_uri: None,
                            failure: None,
                        });
                    }
                    fx.push(Effect::NodeEvent {
                        node_id: child.clone(),
                        phase: NodeStatus::Running,
                        attempt: 0,
                        output_uri: None,
                        failure: None,
                    });
                    fx.push(Effect::Dispatch { node_id: child, attempt: 0 });
                }
                Err(message) => {
                    let failure =
                        Failure { code: "BranchFailed".into(), message, user: true, error_uri: String::new() };
                    node.status = NodeStatus::Failed;
                    node.failure = Some(failure.clone());
                    fx.push(Effect::NodeEvent {
                        node_id: node_id.clone(),
                        phase: NodeStatus::Failed,
                        attempt: 0,
                        output_uri: None,
                        failure: Some(failure.clone()),
                    });
                    fail(state, plan, node_id, failure, &mut fx);
                }
            }
        }
        Input::Abort { cause } => {
            kill_running(state, &mut fx);
            state.status = WfStatus::Aborted;
            let _ = cause; // the cause is recorded by metadata when the abort is requested
            fx.push(Effect::WorkflowEvent { phase: WfStatus::Aborted, failure: None });
            return fx;
        }
    }
    advance(state, plan, limits, &mut fx);
    fx
}

/// Records a node failure and applies the failure policy.
fn fail(state: &mut ExecState, plan: &Plan, node_id: String, failure: Failure, fx: &mut Vec<Effect>) {
    if state.failure.is_none() {
        state.failure = Some((node_id, failure));
    }
    if plan.fail_after_executable_nodes_complete {
        state.status = WfStatus::Failing;
    } else {
        kill_running(state, fx);
        state.status = WfStatus::Failing;
    }
}

fn kill_running(state: &mut ExecState, fx: &mut Vec<Effect>) {
    for (id, n) in state.nodes.iter_mut() {
        if n.status == NodeStatus::Running {
            n.status = NodeStatus::Aborted;
            // a branch node's attempts run under its chosen child's id
            let running = n.chosen.clone().unwrap_or_else(|| id.clone());
            fx.push(Effect::Kill { node_id: running.clone(), attempt: n.attempt });
            let ids = if running == *id { vec![running] } else { vec![running, id.clone()] };
            for event_id in ids {
                fx.push(Effect::NodeEvent {
                    node_id: event_id,
                    phase: NodeStatus::Aborted,
                    attempt: n.attempt,
                    output_uri: None,
                    failure: None,
                });
            }
        }
    }
}

/// Dispatches what became ready and finishes the workflow when nothing is left to do.
fn advance(state: &mut ExecState, plan: &Plan, limits: Limits, fx: &mut Vec<Effect>) {
    let mut running = state.nodes.values().filter(|n| n.status == NodeStatus::Running).count() as u32;
    let ready: Vec<String> = plan
        .nodes
        .values()
        .filter(|p| state.nodes[&p.id].status == NodeStatus::Waiting)
        .filter(|p| p.upstream.iter().all(|u| state.nodes[u].status == NodeStatus::Succeeded))
        .map(|p| p.id.clone())
        .collect();
    let may_start = state.status == WfStatus::Running || plan.fail_after_executable_nodes_complete;
    if may_start {
        for id in ready {
            if limits.max_parallelism > 0 && running >= limits.max_parallelism {
                break;
            }
            let n = state.nodes.get_mut(&id).expect("planned node");
            n.status = NodeStatus::Running;
            running += 1;
            fx.push(Effect::NodeEvent {
                node_id: id.clone(),
                phase: NodeStatus::Running,
                attempt: 0,
                output_uri: None,
                failure: None,
            });
            if plan.nodes[&id].branch.is_some() {
                fx.push(Effect::Evaluate { node_id: id });
            } else {
                fx.push(Effect::Dispatch { node_id: id, attempt: 0 });
            }
        }
    }
    if running > 0 {
        return;
    }
    match state.status {
        WfStatus::Running if state.nodes.values().all(|n| n.status == NodeStatus::Succeeded) => {
            fx.push(Effect::WriteOutputs);
            fx.push(Effect::NodeEvent {
                node_id: "end-node".into(),
                phase: NodeStatus::Succeeded,
                attempt: 0,
                output_uri: None,
                failure: None,
            });
            state.status = WfStatus::Succeeded;
            fx.push(Effect::WorkflowEvent { phase: WfStatus::Succeeded, failure: None });
        }
        WfStatus::Failing => {
            for (id, n) in state.nodes.iter_mut() {
                if n.status == NodeStatus::Waiting {
                    n.status = NodeStatus::Skipped;
                    fx.push(Effect::NodeEvent {
                        node_id: id.clone(),
                        phase: NodeStatus::Skipped,
                        attempt: 0,
                        output_uri: None,
                        failure: None,
                    });
                }
            }
            state.status = WfStatus::Failed;
            let failure = state
                .failure
                .as_ref()
                .map(|(node, f)| Failure { message: format!("[{node}] {}", f.message), ..f.clone() });
            fx.push(Effect::WorkflowEvent { phase: WfStatus::Failed, failure });
        }
        _ => {}
    }
}
