//! The execution state machine: `decide(state, input, context) -> effects`, pure.
//!
//! The caller performs the effects in order and only then stores the new state, so a crash at any
//! point re-runs the same decision on redelivery; every effect is idempotent (deterministic message
//! ids, overwrite-same-bytes blob writes).
//!
//! An execution is a tree of *scopes*: the execution's workflow, and one per running sub-workflow
//! or dynamic node, whose nodes are named `<owner>-<attempt>-<node id>` (Propeller's scheme, so
//! every node execution has a unique id). The chosen child of a branch node lives in the branch's
//! scope; the sub-tasks of a map task are items of its array node, named `<array node>-<index>`.
//! Every node's progress is in one flat map keyed by that unique id.

use std::collections::BTreeMap;

use aloft_proto::flyteidl::core::Identifier;
use serde::{Deserialize, Serialize};

use super::plan::{Catalog, Kind, PlanNode, ROOT};

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
    /// Running: an attempt, a branch child, a sub-workflow, sub-tasks.
    Running,
    /// Reported while a dynamic node's workflow runs (the node's own status stays Running).
    Dynamic,
    /// Outputs are at `output_uri`.
    Succeeded,
    /// No attempts left.
    Failed,
    /// Last attempt timed out.
    TimedOut,
    /// Stopped by an abort or by a failure elsewhere.
    Aborted,
    /// Never ran: an upstream node failed, or a branch chose another child.
    Skipped,
    /// Reported for a node whose outputs a recovered execution took from the original (its own
    /// status is Succeeded).
    Recovered,
}

impl NodeStatus {
    fn code(self) -> u32 {
        match self {
            NodeStatus::Waiting => 0,
            NodeStatus::Running | NodeStatus::Dynamic => 1,
            NodeStatus::Succeeded => 2,
            NodeStatus::Failed => 3,
            NodeStatus::TimedOut => 4,
            NodeStatus::Aborted => 5,
            NodeStatus::Skipped | NodeStatus::Recovered => 6,
        }
    }

    fn from_code(c: u32) -> NodeStatus {
        match c {
            0 => NodeStatus::Waiting,
            1 => NodeStatus::Running,
            2 => NodeStatus::Succeeded,
            3 => NodeStatus::Failed,
            4 => NodeStatus::TimedOut,
            5 => NodeStatus::Aborted,
            _ => NodeStatus::Skipped,
        }
    }

    /// Finished, one way or another.
    pub fn is_terminal(self) -> bool {
        !matches!(self, NodeStatus::Waiting | NodeStatus::Running | NodeStatus::Dynamic)
    }
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

/// Which kind of node a state belongs to (kept in the state so counting needs no catalog).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Tag {
    /// A task node (possibly dynamic).
    Task,
    /// A branch node.
    Branch,
    /// A sub-workflow node.
    Workflow,
    /// An array node (map task).
    Array,
    /// A launch-plan node (a child execution).
    LaunchPlan,
    /// A gate node.
    Gate,
}

/// Where a cached task node is with the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CacheStatus {
    /// Being looked up.
    Lookup,
    /// Another run of the same key holds the reservation; this node waits for its outputs.
    Waiting,
    /// Not in the cache: this node runs (and holds the reservation of a serialized task).
    Miss,
    /// Outputs came from the cache; nothing ran.
    Hit,
    /// Ran and stored its outputs.
    Populated,
}

/// What a cache lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheResult {
    /// Outputs of an earlier run.
    Hit(String),
    /// Run it.
    Miss,
    /// Another run of the same key is in progress; wait to be woken.
    Wait,
}

/// A scope owned by a sub-workflow or dynamic node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeState {
    /// Catalog key of the template its nodes come from.
    pub template: String,
    /// Prefix of its nodes' unique ids (`<owner>-<attempt>-`).
    pub prefix: String,
    /// A node failed; the scope fails once nothing runs.
    pub failing: bool,
    /// The first failure (unique node id, error).
    pub failure: Option<(String, Failure)>,
}

/// Per-index progress of an array node, packed so 10,000 items stay small in the KV store and
/// cheap to read back on every event (one base64 string, not 10,000 JSON numbers).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Items {
    /// How many must succeed.
    pub required: u32,
    /// Indices below this one have been dispatched at least once.
    pub next: u32,
    /// Per index: status (4 bits), attempt, user failures, system failures (8 bits each).
    #[serde(with = "packed")]
    pub packed: Vec<u32>,
    /// The first sub-task failure, for the node's error.
    pub first_failure: Option<(u32, Failure)>,
    /// How many items are in each status (by [`NodeStatus::code`]), kept by `set` so counting is
    /// O(1) however large the map.
    #[serde(default)]
    pub counts: [u32; 7],
}

/// `Vec<u32>` as base64 of its little-endian bytes.
mod packed {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u32], s: S) -> Result<S::Ok, S::Error> {
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u32>, D::Error> {
        let text = String::deserialize(d)?;
        let bytes = base64::engine::general_purpose::STANDARD.decode(text).map_err(serde::de::Error::custom)?;
        if bytes.len() % 4 != 0 {
            return Err(serde::de::Error::custom("packed items are not a whole number of u32"));
        }
        Ok(bytes.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
    }
}

/// One array item, unpacked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Item {
    /// Phase.
    pub status: NodeStatus,
    /// Current attempt.
    pub attempt: u32,
    /// Recoverable user failures so far.
    pub user_failures: u32,
    /// System failures so far.
    pub system_failures: u32,
}

impl Items {
    fn new(n: u32, required: u32) -> Items {
        let mut counts = [0; 7];
        counts[NodeStatus::Waiting.code() as usize] = n;
        Items { required, next: 0, packed: vec![0; n as usize], first_failure: None, counts }
    }

    /// Number of sub-tasks.
    pub fn len(&self) -> u32 {
        self.packed.len() as u32
    }

    /// True for a map over an empty list.
    pub fn is_empty(&self) -> bool {
        self.packed.is_empty()
    }

    /// Item `i`.
    pub fn get(&self, i: u32) -> Item {
        let p = self.packed[i as usize];
        Item {
            status: NodeStatus::from_code(p & 0xf),
            attempt: (p >> 4) & 0xff,
            user_failures: (p >> 12) & 0xff,
            system_failures: (p >> 20) & 0xff,
        }
    }

    fn set(&mut self, i: u32, it: Item) {
        let old = (self.packed[i as usize] & 0xf) as usize;
        self.counts[old] = self.counts[old].saturating_sub(1);
        self.counts[it.status.code() as usize] += 1;
        self.packed[i as usize] = it.status.code()
            | (it.attempt.min(0xff) << 4)
            | (it.user_failures.min(0xff) << 12)
            | (it.system_failures.min(0xff) << 20);
    }

    fn count(&self, pred: impl Fn(NodeStatus) -> bool) -> u32 {
        (0..7u32).map(NodeStatus::from_code).filter(|s| pred(*s)).map(|s| self.counts[s.code() as usize]).sum()
    }
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
    /// What kind of node it is.
    pub kind: Tag,
    /// Catalog key of the template its spec is in.
    pub template: String,
    /// Its node id in that template (`spec_node_id` in events).
    pub spec: String,
    /// The owner of the scope it is in (`None`: the execution's workflow).
    pub scope: Option<String>,
    /// The node it is listed under: the branch that chose it, or its scope's owner.
    pub parent: Option<String>,
    /// Branch node: the unique id of the chosen child.
    pub chosen: Option<String>,
    /// Sub-workflow or dynamic node: the scope of its children.
    pub child: Option<ScopeState>,
    /// Dynamic node: where its compiled workflow is (the shell loads it into the catalog).
    pub dynamic: Option<String>,
    /// Array node: its sub-tasks.
    pub items: Option<Items>,
    /// Cached task node: where it is with the cache.
    #[serde(default)]
    pub cache: Option<CacheStatus>,
    /// Cached task node: its cache key.
    #[serde(default)]
    pub cache_key: Option<String>,
}

/// What the scheduler keeps per execution (stored in the KV bucket between messages).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecState {
    /// Workflow phase.
    pub status: WfStatus,
    /// Nodes by unique id.
    pub nodes: BTreeMap<String, NodeState>,
    /// The first node failure, reported as the execution's error.
    pub failure: Option<(String, Failure)>,
    /// A recovered execution: outputs of the original's succeeded nodes, by unique id; such a
    /// node is not run again.
    #[serde(default)]
    pub recover: BTreeMap<String, String>,
}

/// How an attempt ended (from the executor's terminal task event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Outputs written.
    Succeeded {
        /// `O/outputs.pb`.
        output_uri: String,
    },
    /// The task returned a dynamic workflow (`futures.pb`) instead of outputs.
    Dynamic,
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
    /// An attempt ended (`node_id` is a task node or an array item).
    Attempt {
        /// Unique node id.
        node_id: String,
        /// Attempt number.
        attempt: u32,
        /// Result.
        outcome: Outcome,
    },
    /// A node's inputs could not be built (a binding failed).
    InputsFailed {
        /// Unique node id.
        node_id: String,
        /// Why.
        message: String,
    },
    /// A sub-workflow or array node's inputs are written (`size`: an array's list length).
    Prepared {
        /// Unique node id.
        node_id: String,
        /// Number of sub-tasks of an array node.
        size: Option<u32>,
    },
    /// A branch node's conditions were evaluated.
    Branch {
        /// The branch node.
        node_id: String,
        /// The child (node id in the template) to run, or why the branch fails.
        decision: Result<String, String>,
    },
    /// A dynamic node's workflow was compiled (and is in the catalog under [`dynamic_key`]).
    Compiled {
        /// The dynamic node.
        node_id: String,
        /// Where the compiled closure is, or why it could not be compiled.
        closure: Result<String, String>,
    },
    /// A cached task node's lookup finished.
    Cache {
        /// The node.
        node_id: String,
        /// Its cache key.
        key: String,
        /// What was found.
        result: CacheResult,
    },
    /// The run a waiting cached node depends on finished: look again.
    CacheCheck {
        /// The node.
        node_id: String,
    },
    /// A gate node got its signal, slept enough, or timed out.
    GateDone {
        /// The gate node.
        node_id: String,
        /// Its outputs, or why it fails (rejected, timed out).
        result: Result<String, Failure>,
    },
    /// A launch-plan node's child execution ended.
    ChildDone {
        /// The launch-plan node.
        node_id: String,
        /// How (`Succeeded` carries the child's outputs).
        outcome: Outcome,
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
    /// At most this many task attempts running at once; 0 = no limit.
    pub max_parallelism: u32,
    /// Extra attempts after system failures.
    pub system_retries: u32,
}

/// What a decision reads besides the state.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The templates and tasks of the execution.
    pub catalog: &'a Catalog,
    /// Limits.
    pub limits: Limits,
    /// The execution's metadata prefix (node data lives under it, see [`layout`]).
    pub prefix: &'a str,
}

/// Where node data lives (Propeller's layout, flyte-contract 5.8).
pub mod layout {
    /// A node's inputs.
    pub fn inputs(prefix: &str, node: &str) -> String {
        format!("{}/{node}/data/inputs.pb", prefix.trim_end_matches('/'))
    }

    /// An attempt's output prefix.
    pub fn attempt_dir(prefix: &str, node: &str, attempt: u32) -> String {
        format!("{}/{node}/data/{attempt}", prefix.trim_end_matches('/'))
    }

    /// An attempt's outputs.
    pub fn outputs(prefix: &str, node: &str, attempt: u32) -> String {
        format!("{}/outputs.pb", attempt_dir(prefix, node, attempt))
    }

    /// The execution's outputs.
    pub fn workflow_outputs(prefix: &str) -> String {
        format!("{}/outputs.pb", prefix.trim_end_matches('/'))
    }
}

/// Catalog key of the workflow a dynamic node produced in an attempt.
pub fn dynamic_key(node_id: &str, attempt: u32) -> String {
    format!("dyn/{node_id}/{attempt}")
}

/// A node event to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeEvent {
    /// Unique node id (also `start-node` / `end-node`).
    pub node_id: String,
    /// Node id in its template.
    pub spec: String,
    /// The node it is listed under.
    pub parent: Option<String>,
    /// It has children (branch, sub-workflow, dynamic).
    pub is_parent: bool,
    /// It is a dynamic node running its workflow.
    pub is_dynamic: bool,
    /// It is an array node (its sub-tasks are listed as its task executions).
    pub is_array: bool,
    /// Phase.
    pub phase: NodeStatus,
    /// Attempt it concerns (part of the event id).
    pub attempt: u32,
    /// The node whose inputs.pb are this node's inputs (array items share their array's).
    pub inputs_of: Option<String>,
    /// Outputs, on success.
    pub output_uri: Option<String>,
    /// Error, on failure.
    pub failure: Option<Failure>,
    /// A cached task node's cache status.
    pub cache: Option<CacheStatus>,
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
    NodeEvent(NodeEvent),
    /// Build and write the node's inputs (first attempt; array items use their array's), then
    /// publish the task run.
    Dispatch {
        /// Unique node id (an array item's for sub-tasks).
        node_id: String,
        /// Attempt.
        attempt: u32,
        /// For a sub-task: the array node and the index.
        array: Option<(String, u32)>,
    },
    /// Ask executors to kill a running attempt.
    Kill {
        /// Unique node id.
        node_id: String,
        /// Attempt.
        attempt: u32,
    },
    /// Resolve a sub-workflow or array node's inputs, write them and answer with
    /// `Input::Prepared` (or `Input::InputsFailed`).
    Prepare {
        /// Unique node id.
        node_id: String,
    },
    /// Resolve a branch node's inputs, evaluate its conditions and answer with `Input::Branch`.
    Evaluate {
        /// The branch node.
        node_id: String,
    },
    /// Compile a dynamic node's `futures.pb` and answer with `Input::Compiled`.
    Compile {
        /// The dynamic node.
        node_id: String,
        /// Its attempt (the futures file is in that attempt's output prefix).
        attempt: u32,
    },
    /// Resolve a scope's output bindings and write them: the execution's outputs (`None`), or
    /// the owner's outputs (`layout::outputs(owner, attempt)`).
    WriteOutputs {
        /// Owner of the scope.
        owner: Option<String>,
    },
    /// Gather an array node's sub-task outputs into lists and write its outputs.
    Gather {
        /// The array node.
        node_id: String,
    },
    /// Resolve a launch-plan node's inputs and create its child execution (idempotent: the
    /// child's name is derived from the node); a child that cannot be created answers
    /// `Input::ChildDone` with the failure.
    Launch {
        /// The launch-plan node.
        node_id: String,
    },
    /// Terminate a launch-plan node's child execution.
    AbortChild {
        /// The launch-plan node.
        node_id: String,
    },
    /// Resolve a gate node's inputs, write them, and start waiting: create its signal (a value
    /// already given answers at once with `Input::GateDone`) or set its timer.
    OpenGate {
        /// The gate node.
        node_id: String,
    },
    /// Resolve a cached task node's inputs, write them, compute its key and look it up (and
    /// reserve it for a serialized task); answer with `Input::Cache`.
    CacheLookup {
        /// The node.
        node_id: String,
    },
    /// Store a cached node's outputs under its key, then release its reservation.
    CachePut {
        /// The node.
        node_id: String,
        /// Its key.
        key: String,
        /// Its outputs.
        output_uri: String,
    },
    /// Release a cached node's reservation (it did not produce outputs), waking the waiters.
    CacheRelease {
        /// The node.
        node_id: String,
        /// Its key.
        key: String,
    },
}

/// The initial state: every node of the workflow waiting.
pub fn initial(catalog: &Catalog) -> ExecState {
    let mut nodes = BTreeMap::new();
    if let Some(t) = catalog.template(ROOT) {
        for n in t.nodes.values() {
            nodes.insert(n.id.clone(), new_node(n, ROOT, None, None));
        }
    }
    ExecState { status: WfStatus::Running, nodes, failure: None, recover: BTreeMap::new() }
}

fn tag(kind: &Kind) -> Tag {
    match kind {
        Kind::Task { .. } => Tag::Task,
        Kind::Branch(_) => Tag::Branch,
        Kind::Workflow { .. } => Tag::Workflow,
        Kind::Array(_) => Tag::Array,
        Kind::LaunchPlan { .. } => Tag::LaunchPlan,
        Kind::Gate(_) => Tag::Gate,
    }
}

fn new_node(n: &PlanNode, template: &str, scope: Option<String>, parent: Option<String>) -> NodeState {
    NodeState {
        status: NodeStatus::Waiting,
        attempt: 0,
        user_failures: 0,
        system_failures: 0,
        output_uri: None,
        failure: None,
        kind: tag(&n.kind),
        template: template.to_string(),
        spec: n.id.clone(),
        scope,
        parent,
        chosen: None,
        child: None,
        dynamic: None,
        items: None,
        cache: None,
        cache_key: None,
    }
}

/// How a node ended.
#[derive(Debug, Clone)]
enum Done {
    Succeeded(String),
    /// Succeeded in the execution this one recovers.
    Recovered(String),
    Failed(NodeStatus, Failure),
    Aborted,
}

struct Machine<'s, 'c> {
    state: &'s mut ExecState,
    cx: Context<'c>,
    fx: Vec<Effect>,
}

/// Applies `input` to `state`, returning the effects to perform.
pub fn decide(state: &mut ExecState, input: Input, cx: Context<'_>) -> Vec<Effect> {
    if state.status.is_terminal() {
        return Vec::new(); // late or duplicate input
    }
    let mut m = Machine { state, cx, fx: Vec::new() };
    match input {
        Input::Start => {
            m.fx.push(Effect::WorkflowEvent { phase: WfStatus::Running, failure: None });
            m.fx.push(Effect::NodeEvent(boundary_event("start-node")));
        }
        Input::Attempt { node_id, attempt, outcome } => m.attempt(&node_id, attempt, outcome),
        Input::InputsFailed { node_id, message } => {
            if m.running(&node_id) {
                let failure =
                    Failure { code: "BindingResolutionFailed".into(), message, user: true, error_uri: String::new() };
                m.finish(&node_id, Done::Failed(NodeStatus::Failed, failure));
            }
        }
        Input::Prepared { node_id, size } => m.prepared(&node_id, size),
        Input::Branch { node_id, decision } => m.branch(&node_id, decision),
        Input::Compiled { node_id, closure } => m.compiled(&node_id, closure),
        Input::Cache { node_id, key, result } => m.cache(&node_id, key, result),
        Input::CacheCheck { node_id } => {
            let waiting = m
                .state
                .nodes
                .get(&node_id)
                .is_some_and(|n| n.status == NodeStatus::Running && n.cache == Some(CacheStatus::Waiting));
            if waiting {
                m.state.nodes.get_mut(&node_id).expect("waiting").cache = Some(CacheStatus::Lookup);
                m.fx.push(Effect::CacheLookup { node_id });
            }
        }
        Input::GateDone { node_id, result } => {
            if m.running(&node_id) && m.state.nodes[&node_id].kind == Tag::Gate {
                match result {
                    Ok(uri) => m.finish(&node_id, Done::Succeeded(uri)),
                    Err(failure) => m.finish(&node_id, Done::Failed(NodeStatus::Failed, failure)),
                }
            }
        }
        Input::ChildDone { node_id, outcome } => {
            if m.running(&node_id) && m.state.nodes[&node_id].kind == Tag::LaunchPlan {
                match outcome {
                    Outcome::Succeeded { output_uri } => m.finish(&node_id, Done::Succeeded(output_uri)),
                    Outcome::Failed { failure, .. } => m.finish(&node_id, Done::Failed(NodeStatus::Failed, failure)),
                    Outcome::Aborted | Outcome::Dynamic => m.finish(&node_id, Done::Aborted),
                }
            }
        }
        Input::Abort { cause } => {
            let _ = cause; // the cause is recorded by metadata when the abort is requested
            m.kill_scope(None);
            m.state.status = WfStatus::Aborted;
            m.fx.push(Effect::WorkflowEvent { phase: WfStatus::Aborted, failure: None });
            return m.fx;
        }
    }
    m.advance();
    m.fx
}

fn boundary_event(id: &str) -> NodeEvent {
    NodeEvent {
        node_id: id.into(),
        spec: id.into(),
        parent: None,
        is_parent: false,
        is_dynamic: false,
        is_array: false,
        phase: NodeStatus::Succeeded,
        attempt: 0,
        inputs_of: None,
        output_uri: None,
        failure: None,
        cache: None,
    }
}

/// Splits an array item id `<array>-<index>` when `<array>` is an array node of the state.
fn item_of(state: &ExecState, id: &str) -> Option<(String, u32)> {
    let (array, index) = id.rsplit_once('-')?;
    let index: u32 = index.parse().ok()?;
    let node = state.nodes.get(array)?;
    (node.kind == Tag::Array && node.items.as_ref().is_some_and(|i| index < i.len())).then(|| (array.into(), index))
}

impl Machine<'_, '_> {
    fn running(&self, id: &str) -> bool {
        self.state.nodes.get(id).is_some_and(|n| n.status == NodeStatus::Running)
    }

    fn plan_node(&self, id: &str) -> Option<&PlanNode> {
        let n = self.state.nodes.get(id)?;
        self.cx.catalog.template(&n.template)?.find(&n.spec)
    }

    /// The unique-id prefix of a scope.
    fn prefix_of(&self, scope: &Option<String>) -> String {
        match scope {
            None => String::new(),
            Some(owner) => self.state.nodes[owner].child.as_ref().map(|c| c.prefix.clone()).unwrap_or_default(),
        }
    }

    fn event(&mut self, id: &str, phase: NodeStatus, output_uri: Option<String>, failure: Option<Failure>) {
        let n = &self.state.nodes[id];
        let is_dynamic = n.dynamic.is_some() || phase == NodeStatus::Dynamic;
        self.fx.push(Effect::NodeEvent(NodeEvent {
            node_id: id.into(),
            spec: n.spec.clone(),
            parent: n.parent.clone(),
            is_parent: matches!(n.kind, Tag::Branch | Tag::Workflow) || is_dynamic,
            is_dynamic,
            is_array: n.kind == Tag::Array,
            phase,
            attempt: n.attempt,
            inputs_of: Some(id.into()),
            output_uri,
            failure,
            cache: n.cache,
        }));
    }

    fn item_event(&mut self, array: &str, index: u32, it: Item, output: Option<String>, failure: Option<Failure>) {
        let spec = match self.plan_node(array).map(|p| &p.kind) {
            Some(Kind::Array(a)) => a.sub_node.clone(),
            _ => String::new(),
        };
        self.fx.push(Effect::NodeEvent(NodeEvent {
            node_id: format!("{array}-{index}"),
            spec,
            parent: Some(array.into()),
            is_parent: false,
            is_dynamic: false,
            is_array: false,
            phase: it.status,
            attempt: it.attempt,
            // the scheduler writes each sub-task its own inputs (its element of the lists)
            inputs_of: Some(format!("{array}-{index}")),
            output_uri: output,
            failure,
            cache: None,
        }));
    }

    // ------------------------------------------------------------------ inputs

    fn attempt(&mut self, id: &str, attempt: u32, outcome: Outcome) {
        if let Some((array, index)) = item_of(self.state, id) {
            return self.item_attempt(&array, index, attempt, outcome);
        }
        let Some(node) = self.state.nodes.get(id) else { return };
        if node.status != NodeStatus::Running
            || node.attempt != attempt
            || node.kind != Tag::Task
            || node.child.is_some()
        {
            return; // a duplicate or a stale attempt
        }
        let retries = self.plan_node(id).map(|p| p.retries).unwrap_or(0);
        match outcome {
            Outcome::Succeeded { output_uri } => self.finish(id, Done::Succeeded(output_uri)),
            Outcome::Dynamic => {
                // The node stays Running while its workflow is compiled and run.
                self.event(id, NodeStatus::Dynamic, None, None);
                self.fx.push(Effect::Compile { node_id: id.into(), attempt });
            }
            Outcome::Failed { failure, retryable } => {
                let workflow_running = self.scope_running(&self.state.nodes[id].scope.clone());
                let node = self.state.nodes.get_mut(id).expect("checked above");
                let budget_left = if failure.user {
                    node.user_failures < retries
                } else {
                    node.system_failures < self.cx.limits.system_retries
                };
                if retryable && budget_left && workflow_running {
                    if failure.user {
                        node.user_failures += 1;
                    } else {
                        node.system_failures += 1;
                    }
                    node.attempt += 1;
                    let attempt = node.attempt;
                    self.fx.push(Effect::Dispatch { node_id: id.into(), attempt, array: None });
                } else {
                    let phase = if failure.code == "Timeout" { NodeStatus::TimedOut } else { NodeStatus::Failed };
                    self.finish(id, Done::Failed(phase, failure));
                }
            }
            Outcome::Aborted => self.finish(id, Done::Aborted),
        }
    }

    fn item_attempt(&mut self, array: &str, index: u32, attempt: u32, outcome: Outcome) {
        let retries = self.plan_node(array).map(|p| p.retries).unwrap_or(0);
        let system_retries = self.cx.limits.system_retries;
        let node = self.state.nodes.get_mut(array).expect("item_of checked it");
        if node.status != NodeStatus::Running {
            return;
        }
        let items = node.items.as_mut().expect("item_of checked it");
        let mut it = items.get(index);
        if it.status != NodeStatus::Running || it.attempt != attempt {
            return;
        }
        let mut output = None;
        let mut failure_out = None;
        match outcome {
            Outcome::Succeeded { output_uri } => {
                it.status = NodeStatus::Succeeded;
                output = Some(output_uri);
            }
            Outcome::Failed { failure, retryable } => {
                let budget_left =
                    if failure.user { it.user_failures < retries } else { it.system_failures < system_retries };
                if retryable && budget_left {
                    if failure.user {
                        it.user_failures += 1;
                    } else {
                        it.system_failures += 1;
                    }
                    it.attempt += 1;
                    items.set(index, it);
                    self.fx.push(Effect::Dispatch {
                        node_id: format!("{array}-{index}"),
                        attempt: it.attempt,
                        array: Some((array.into(), index)),
                    });
                    return;
                }
                it.status = if failure.code == "Timeout" { NodeStatus::TimedOut } else { NodeStatus::Failed };
                if items.first_failure.is_none() {
                    items.first_failure = Some((index, failure.clone()));
                }
                failure_out = Some(failure);
            }
            Outcome::Aborted => it.status = NodeStatus::Aborted,
            // a map task's sub-task cannot return a workflow
            Outcome::Dynamic => {
                it.status = NodeStatus::Failed;
                let f = Failure {
                    code: "DynamicInMap".into(),
                    message: "a map task's sub-task returned a dynamic workflow".into(),
                    user: true,
                    error_uri: String::new(),
                };
                if items.first_failure.is_none() {
                    items.first_failure = Some((index, f.clone()));
                }
                failure_out = Some(f);
            }
        }
        items.set(index, it);
        self.item_event(array, index, it, output, failure_out);
    }

    fn prepared(&mut self, id: &str, size: Option<u32>) {
        if !self.running(id) {
            return;
        }
        let Some(plan) = self.plan_node(id).cloned() else { return };
        let node = self.state.nodes.get_mut(id).expect("running");
        match &plan.kind {
            Kind::Workflow { template } if node.child.is_none() => {
                let prefix = format!("{id}-{}-", node.attempt);
                node.child = Some(ScopeState { template: template.clone(), prefix, failing: false, failure: None });
                self.open_scope(id);
            }
            Kind::Array(spec) if node.items.is_none() => {
                let n = size.unwrap_or(0);
                node.items = Some(Items::new(n, spec.success.required(n)));
            }
            _ => {}
        }
    }

    fn branch(&mut self, id: &str, decision: Result<String, String>) {
        if !self.running(id) || self.state.nodes[id].chosen.is_some() {
            return; // a duplicate
        }
        let Some(Kind::Branch(b)) = self.plan_node(id).map(|p| p.kind.clone()) else { return };
        match decision {
            Ok(child) => {
                let n = &self.state.nodes[id];
                let (scope, template) = (n.scope.clone(), n.template.clone());
                let prefix = self.prefix_of(&scope);
                let Some(plan) = b.children().find(|c| c.id == child) else { return };
                let unique = format!("{prefix}{child}");
                self.state.nodes.get_mut(id).expect("running").chosen = Some(unique.clone());
                for other in b.children().filter(|c| c.id != child) {
                    self.fx.push(Effect::NodeEvent(NodeEvent {
                        node_id: format!("{prefix}{}", other.id),
                        spec: other.id.clone(),
                        parent: Some(id.into()),
                        is_parent: false,
                        is_dynamic: false,
                        is_array: false,
                        phase: NodeStatus::Skipped,
                        attempt: 0,
                        inputs_of: None,
                        output_uri: None,
                        failure: None,
                        cache: None,
                    }));
                }
                self.state.nodes.insert(unique.clone(), new_node(plan, &template, scope, Some(id.into())));
                self.start(&unique);
            }
            Err(message) => {
                let failure = Failure { code: "BranchFailed".into(), message, user: true, error_uri: String::new() };
                self.finish(id, Done::Failed(NodeStatus::Failed, failure));
            }
        }
    }

    fn compiled(&mut self, id: &str, closure: Result<String, String>) {
        let Some(node) = self.state.nodes.get(id) else { return };
        if node.status != NodeStatus::Running || node.child.is_some() || node.kind != Tag::Task {
            return;
        }
        let key = dynamic_key(id, node.attempt);
        match closure {
            Ok(uri) if self.cx.catalog.template(&key).is_some() => {
                let node = self.state.nodes.get_mut(id).expect("checked");
                node.dynamic = Some(uri);
                let prefix = format!("{id}-{}-", node.attempt);
                node.child = Some(ScopeState { template: key, prefix, failing: false, failure: None });
                self.open_scope(id);
            }
            Ok(uri) => {
                let failure = Failure {
                    code: "DynamicWorkflowMissing".into(),
                    message: format!("the dynamic workflow of node {id} at {uri} could not be loaded"),
                    user: false,
                    error_uri: String::new(),
                };
                self.finish(id, Done::Failed(NodeStatus::Failed, failure));
            }
            Err(message) => {
                let failure =
                    Failure { code: "DynamicCompileFailed".into(), message, user: true, error_uri: String::new() };
                self.finish(id, Done::Failed(NodeStatus::Failed, failure));
            }
        }
    }

    fn cache(&mut self, id: &str, key: String, result: CacheResult) {
        let Some(node) = self.state.nodes.get_mut(id) else { return };
        if node.status != NodeStatus::Running || node.cache != Some(CacheStatus::Lookup) {
            return; // a duplicate
        }
        node.cache_key = Some(key);
        match result {
            CacheResult::Hit(uri) => {
                node.cache = Some(CacheStatus::Hit);
                self.finish(id, Done::Succeeded(uri));
            }
            CacheResult::Miss => {
                node.cache = Some(CacheStatus::Miss);
                let attempt = node.attempt;
                self.fx.push(Effect::Dispatch { node_id: id.into(), attempt, array: None });
            }
            CacheResult::Wait => node.cache = Some(CacheStatus::Waiting),
        }
    }

    // ------------------------------------------------------------------ transitions

    /// Creates the waiting nodes of the scope `owner` just opened.
    fn open_scope(&mut self, owner: &str) {
        let Some(scope) = self.state.nodes[owner].child.clone() else { return };
        let Some(t) = self.cx.catalog.template(&scope.template) else { return };
        for n in t.nodes.values() {
            let unique = format!("{}{}", scope.prefix, n.id);
            self.state
                .nodes
                .entry(unique)
                .or_insert_with(|| new_node(n, &scope.template, Some(owner.into()), Some(owner.into())));
        }
    }

    /// Starts a waiting node.
    fn start(&mut self, id: &str) {
        if let Some(uri) = self.state.recover.remove(id) {
            self.state.nodes.get_mut(id).expect("exists").status = NodeStatus::Running;
            return self.finish(id, Done::Recovered(uri));
        }
        let kind = self.state.nodes[id].kind;
        let cached = kind == Tag::Task && self.plan_node(id).is_some_and(|p| p.cached);
        let node = self.state.nodes.get_mut(id).expect("exists");
        node.status = NodeStatus::Running;
        if cached {
            node.cache = Some(CacheStatus::Lookup);
            self.event(id, NodeStatus::Running, None, None);
            self.fx.push(Effect::CacheLookup { node_id: id.into() });
            return;
        }
        self.event(id, NodeStatus::Running, None, None);
        self.fx.push(match kind {
            Tag::Task => Effect::Dispatch { node_id: id.into(), attempt: 0, array: None },
            Tag::Branch => Effect::Evaluate { node_id: id.into() },
            Tag::Workflow | Tag::Array => Effect::Prepare { node_id: id.into() },
            Tag::LaunchPlan => Effect::Launch { node_id: id.into() },
            Tag::Gate => Effect::OpenGate { node_id: id.into() },
        });
    }

    /// Records how a node ended and tells whoever waits for it.
    fn finish(&mut self, id: &str, done: Done) {
        let node = self.state.nodes.get_mut(id).expect("finished node exists");
        let (phase, output, failure) = match &done {
            Done::Succeeded(uri) | Done::Recovered(uri) => (NodeStatus::Succeeded, Some(uri.clone()), None),
            Done::Failed(phase, f) => (*phase, None, Some(f.clone())),
            Done::Aborted => (NodeStatus::Aborted, None, None),
        };
        node.status = phase;
        node.output_uri = output.clone();
        node.failure = failure.clone();
        // a node that ran for the cache stores its outputs (or gives its reservation up) first
        if node.cache == Some(CacheStatus::Miss) {
            let key = node.cache_key.clone().unwrap_or_default();
            match &output {
                Some(uri) => {
                    node.cache = Some(CacheStatus::Populated);
                    self.fx.push(Effect::CachePut { node_id: id.into(), key, output_uri: uri.clone() });
                }
                None => self.fx.push(Effect::CacheRelease { node_id: id.into(), key }),
            }
        }
        let node = &self.state.nodes[id];
        let (parent, scope) = (node.parent.clone(), node.scope.clone());
        let reported = if matches!(done, Done::Recovered(_)) { NodeStatus::Recovered } else { phase };
        self.event(id, reported, output, failure);
        // a branch's chosen child: the branch ends as its child did, with its outputs
        if let Some(p) = parent.filter(|p| self.state.nodes[p].chosen.as_deref() == Some(id)) {
            return self.finish(&p, done);
        }
        let failure = match done {
            Done::Succeeded(_) | Done::Recovered(_) => return,
            Done::Failed(_, f) => f,
            Done::Aborted => Failure {
                code: "Aborted".into(),
                message: format!("node {id} was aborted"),
                user: false,
                error_uri: String::new(),
            },
        };
        self.scope_failed(scope, id, failure);
    }

    fn fail_after(&self, scope: &Option<String>) -> bool {
        let key = match scope {
            None => ROOT.to_string(),
            Some(o) => self.state.nodes[o].child.as_ref().map(|c| c.template.clone()).unwrap_or_default(),
        };
        self.cx.catalog.template(&key).is_some_and(|t| t.fail_after_executable_nodes_complete)
    }

    fn scope_running(&self, scope: &Option<String>) -> bool {
        match scope {
            None => self.state.status == WfStatus::Running,
            Some(o) => self.state.nodes[o].child.as_ref().is_some_and(|c| !c.failing),
        }
    }

    /// Applies a scope's failure policy after one of its nodes failed.
    fn scope_failed(&mut self, scope: Option<String>, node: &str, failure: Failure) {
        match &scope {
            None => {
                if self.state.failure.is_none() {
                    self.state.failure = Some((node.into(), failure));
                }
                self.state.status = WfStatus::Failing;
            }
            Some(owner) => {
                let Some(child) = self.state.nodes.get_mut(owner).and_then(|o| o.child.as_mut()) else { return };
                if child.failure.is_none() {
                    child.failure = Some((node.into(), failure));
                }
                child.failing = true;
            }
        }
        if !self.fail_after(&scope) {
            self.kill_scope(scope);
        }
    }

    /// Stops everything running in a scope, its sub-scopes included.
    fn kill_scope(&mut self, scope: Option<String>) {
        let running: Vec<String> = self
            .state
            .nodes
            .iter()
            .filter(|(_, n)| n.scope == scope && n.status == NodeStatus::Running)
            .map(|(id, _)| id.clone())
            .collect();
        for id in running {
            self.kill_node(&id);
        }
    }

    fn kill_node(&mut self, id: &str) {
        let node = &self.state.nodes[id];
        if node.status != NodeStatus::Running {
            return;
        }
        match node.kind {
            Tag::Task if node.child.is_none() => {
                if node.cache == Some(CacheStatus::Miss) {
                    let key = node.cache_key.clone().unwrap_or_default();
                    self.fx.push(Effect::CacheRelease { node_id: id.into(), key });
                }
                if node.cache != Some(CacheStatus::Waiting) && node.cache != Some(CacheStatus::Lookup) {
                    self.fx.push(Effect::Kill { node_id: id.into(), attempt: node.attempt });
                }
            }
            Tag::Array => self.kill_items(id),
            Tag::LaunchPlan => self.fx.push(Effect::AbortChild { node_id: id.into() }),
            // sub-workflow and dynamic nodes: their children; a branch's chosen child is in the
            // same scope and is stopped as one of its nodes
            _ => self.kill_scope(Some(id.into())),
        }
        self.state.nodes.get_mut(id).expect("exists").status = NodeStatus::Aborted;
        self.event(id, NodeStatus::Aborted, None, None);
    }

    // ------------------------------------------------------------------ progress

    fn running_leaves(&self) -> u32 {
        self.state
            .nodes
            .values()
            .map(|n| match n.kind {
                Tag::Task
                    if n.status == NodeStatus::Running
                        && n.child.is_none()
                        && n.cache != Some(CacheStatus::Waiting) =>
                {
                    1
                }
                Tag::Array if n.status == NodeStatus::Running => {
                    n.items.as_ref().map(|i| i.count(|s| s == NodeStatus::Running)).unwrap_or(0)
                }
                _ => 0,
            })
            .sum()
    }

    fn budget(&self) -> u32 {
        match self.cx.limits.max_parallelism {
            0 => u32::MAX,
            max => max.saturating_sub(self.running_leaves()),
        }
    }

    /// Starts what became ready and completes scopes and arrays with nothing left to do, until
    /// nothing changes.
    fn advance(&mut self) {
        loop {
            let mut changed = false;
            if !self.state.status.is_terminal() {
                changed |= self.step_scope(None);
            }
            let owners: Vec<String> = self
                .state
                .nodes
                .iter()
                .filter(|(_, n)| n.status == NodeStatus::Running && n.child.is_some())
                .map(|(id, _)| id.clone())
                .collect();
            for o in owners {
                changed |= self.step_scope(Some(o));
            }
            let arrays: Vec<String> = self
                .state
                .nodes
                .iter()
                .filter(|(_, n)| n.status == NodeStatus::Running && n.items.is_some())
                .map(|(id, _)| id.clone())
                .collect();
            for a in arrays {
                changed |= self.step_array(&a);
            }
            if !changed {
                break;
            }
        }
    }

    fn step_scope(&mut self, scope: Option<String>) -> bool {
        if scope.as_ref().is_some_and(|o| !self.running(o)) {
            return false;
        }
        let (key, prefix, failing) = match &scope {
            None => (ROOT.to_string(), String::new(), self.state.status == WfStatus::Failing),
            Some(o) => {
                let c = self.state.nodes[o].child.clone().expect("owner has a scope");
                (c.template, c.prefix, c.failing)
            }
        };
        let Some(template) = self.cx.catalog.template(&key) else { return false };
        let may_start = !failing || template.fail_after_executable_nodes_complete;
        let mut changed = false;
        let mut blocked = false;
        let ready: Vec<(String, bool)> = template
            .nodes
            .values()
            .filter(|p| {
                self.state.nodes.get(&format!("{prefix}{}", p.id)).map(|n| n.status) == Some(NodeStatus::Waiting)
            })
            .filter(|p| {
                p.upstream.iter().all(|u| {
                    self.state.nodes.get(&format!("{prefix}{u}")).map(|n| n.status) == Some(NodeStatus::Succeeded)
                })
            })
            .map(|p| (format!("{prefix}{}", p.id), matches!(p.kind, Kind::Task { .. })))
            .collect();
        if may_start {
            for (id, leaf) in ready {
                if leaf && self.budget() == 0 {
                    blocked = true;
                    continue;
                }
                self.start(&id);
                changed = true;
            }
        }
        // a node finished at once (recovered) may have made others ready: the caller loops
        if changed {
            return true;
        }
        let busy = blocked || self.state.nodes.values().any(|n| n.scope == scope && n.status == NodeStatus::Running);
        if busy {
            return false;
        }
        // nothing runs and nothing more can start: the scope is done
        let members: Vec<String> =
            self.state.nodes.iter().filter(|(_, n)| n.scope == scope).map(|(id, _)| id.clone()).collect();
        let all_ok = members.iter().all(|id| self.state.nodes[id].status == NodeStatus::Succeeded);
        if !failing && all_ok {
            match &scope {
                None => {
                    self.fx.push(Effect::WriteOutputs { owner: None });
                    self.fx.push(Effect::NodeEvent(NodeEvent {
                        inputs_of: Some("end-node".into()),
                        ..boundary_event("end-node")
                    }));
                    self.state.status = WfStatus::Succeeded;
                    self.fx.push(Effect::WorkflowEvent { phase: WfStatus::Succeeded, failure: None });
                }
                Some(owner) => {
                    self.fx.push(Effect::WriteOutputs { owner: Some(owner.clone()) });
                    let uri = layout::outputs(self.cx.prefix, owner, self.state.nodes[owner].attempt);
                    self.finish(owner, Done::Succeeded(uri));
                }
            }
            return true;
        }
        // the workflow's failure node runs once, before the failure is reported
        if let Some(f) = template.failure_node.as_ref() {
            let id = format!("{prefix}{}", f.id);
            if !self.state.nodes.contains_key(&id) {
                let node = new_node(f, &key, scope.clone(), scope.clone());
                self.state.nodes.insert(id.clone(), node);
                self.start(&id);
                return true;
            }
        }
        for id in members {
            if self.state.nodes[&id].status == NodeStatus::Waiting {
                self.state.nodes.get_mut(&id).expect("member").status = NodeStatus::Skipped;
                self.event(&id, NodeStatus::Skipped, None, None);
            }
        }
        let first = match &scope {
            None => self.state.failure.clone(),
            Some(o) => self.state.nodes[o].child.as_ref().and_then(|c| c.failure.clone()),
        };
        let failure =
            first.map(|(node, f)| Failure { message: format!("[{node}] {}", f.message), ..f }).unwrap_or(Failure {
                code: "Failed".into(),
                message: "a node failed".into(),
                user: false,
                error_uri: String::new(),
            });
        match &scope {
            None => {
                self.state.status = WfStatus::Failed;
                self.fx.push(Effect::WorkflowEvent { phase: WfStatus::Failed, failure: Some(failure) });
            }
            Some(owner) => self.finish(owner, Done::Failed(NodeStatus::Failed, failure)),
        }
        true
    }

    fn step_array(&mut self, id: &str) -> bool {
        let Some(Kind::Array(spec)) = self.plan_node(id).map(|p| p.kind.clone()) else { return false };
        let Some(mut items) = self.state.nodes[id].items.clone() else { return false };
        let n = items.len();
        let succeeded = items.count(|s| s == NodeStatus::Succeeded);
        let failed = items.count(|s| s.is_terminal() && s != NodeStatus::Succeeded);
        let running = items.count(|s| s == NodeStatus::Running);
        if failed > n - items.required {
            // the criterion cannot be met any more: stop the rest
            self.kill_items(id);
            let (index, first) = items.first_failure.clone().unwrap_or((
                0,
                Failure { code: "Failed".into(), message: String::new(), user: true, error_uri: String::new() },
            ));
            let failure = Failure {
                message: format!(
                    "{failed} of {n} sub-tasks failed, at least {} had to succeed; first failure (index {index}): {}",
                    items.required, first.message
                ),
                ..first
            };
            self.finish(id, Done::Failed(NodeStatus::Failed, failure));
            return true;
        }
        if succeeded + failed == n {
            self.fx.push(Effect::Gather { node_id: id.into() });
            let uri = layout::outputs(self.cx.prefix, id, 0);
            self.finish(id, Done::Succeeded(uri));
            return true;
        }
        let mut changed = false;
        let mut running = running;
        while items.next < n {
            if spec.parallelism.is_some_and(|p| running >= p) || self.budget() == 0 {
                break;
            }
            let i = items.next;
            let mut it = items.get(i);
            it.status = NodeStatus::Running;
            items.set(i, it);
            items.next += 1;
            running += 1;
            // the budget counts running items from the state
            self.state.nodes.get_mut(id).expect("array").items = Some(items.clone());
            self.item_event(id, i, it, None, None);
            self.fx.push(Effect::Dispatch { node_id: format!("{id}-{i}"), attempt: 0, array: Some((id.into(), i)) });
            changed = true;
        }
        changed
    }

    fn kill_items(&mut self, id: &str) {
        let Some(mut items) = self.state.nodes[id].items.clone() else { return };
        for i in 0..items.len() {
            let mut it = items.get(i);
            match it.status {
                NodeStatus::Running => {
                    self.fx.push(Effect::Kill { node_id: format!("{id}-{i}"), attempt: it.attempt });
                    it.status = NodeStatus::Aborted;
                }
                NodeStatus::Waiting => it.status = NodeStatus::Skipped,
                _ => continue,
            }
            items.set(i, it);
            self.item_event(id, i, it, None, None);
        }
        self.state.nodes.get_mut(id).expect("array").items = Some(items);
    }
}

/// The task an attempt of `node_id` runs (a task node's, or an array node's sub-task).
pub fn task_of<'c>(catalog: &'c Catalog, state: &ExecState, node_id: &str) -> Option<&'c Identifier> {
    let id = item_of(state, node_id).map(|(a, _)| a).unwrap_or_else(|| node_id.to_string());
    let n = state.nodes.get(&id)?;
    match &catalog.template(&n.template)?.find(&n.spec)?.kind {
        Kind::Task { task } => Some(task),
        Kind::Array(a) => Some(&a.task),
        _ => None,
    }
}
