//! The imperative shell around the state machine: load the execution's state from the KV bucket,
//! decide, perform the effects (blob writes, task runs, events), store the new state with
//! compare-and-set, then ack. Effects come before the state write, and all are idempotent, so a
//! crash anywhere replays the same decision instead of losing or duplicating work.

use std::collections::HashMap;
use std::sync::Arc;

use aloft_blob::BlobStore;
use aloft_bus::{Bus, KvBucket};
use aloft_proto::aloft::v1::{AbortCommand, Envelope, ExecuteCommand, TaskRunCommand, envelope::Body};
use aloft_proto::flyteidl::core::{
    self as core, CompiledWorkflowClosure, LiteralMap, NodeExecutionIdentifier, TaskExecutionIdentifier,
    WorkflowExecutionIdentifier, node_execution::Phase as NodePhase, task_execution::Phase as TaskPhase,
    workflow_execution::Phase as WfPhase,
};
use aloft_proto::flyteidl::event::{self as event, NodeExecutionEvent, TaskExecutionEvent, WorkflowExecutionEvent};
use bytes::Bytes;
use prost::Message;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::domain::bindings;
use crate::domain::machine::{self, Effect, ExecState, Failure, Input, Limits, NodeStatus, Outcome, WfStatus};
use crate::domain::plan::Plan;
use crate::error::Error;

/// How often a decision is retried when another replica changed the same execution meanwhile.
const CAS_RETRIES: usize = 50;

/// What is stored per execution: the command that started it and the machine's state.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    /// `ExecuteCommand`, encoded (hex keeps the JSON readable with `nats kv get`).
    command: String,
    state: ExecState,
}

/// A compiled closure and the plan derived from it (or why it cannot be run).
type Loaded = (CompiledWorkflowClosure, Result<Plan, String>);

/// Shared state of the scheduler's consumers.
#[derive(Clone)]
pub struct App {
    /// The bus.
    pub bus: Bus,
    /// Execution states.
    pub kv: KvBucket,
    /// The blob store (node inputs, workflow outputs).
    pub blob: BlobStore,
    /// Executor queue task runs go to.
    pub queue: String,
    /// Extra attempts for system failures.
    pub system_retries: u32,
    /// Compiled closures by URI: immutable, so cached forever (bounded by the number of running workflows).
    closures: Arc<Mutex<HashMap<String, Arc<Loaded>>>>,
}

fn key(id: &WorkflowExecutionIdentifier) -> String {
    format!("{}.{}.{}", id.project, id.domain, id.name)
}

fn now() -> prost_types::Timestamp {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    prost_types::Timestamp { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 }
}

fn node_phase(s: NodeStatus) -> NodePhase {
    match s {
        NodeStatus::Waiting => NodePhase::Queued,
        NodeStatus::Running => NodePhase::Running,
        NodeStatus::Succeeded => NodePhase::Succeeded,
        NodeStatus::Failed => NodePhase::Failed,
        NodeStatus::TimedOut => NodePhase::TimedOut,
        NodeStatus::Aborted => NodePhase::Aborted,
        NodeStatus::Skipped => NodePhase::Skipped,
    }
}

fn wf_phase(s: WfStatus) -> WfPhase {
    match s {
        WfStatus::Running => WfPhase::Running,
        WfStatus::Failing => WfPhase::Failing,
        WfStatus::Succeeded => WfPhase::Succeeded,
        WfStatus::Failed => WfPhase::Failed,
        WfStatus::Aborted => WfPhase::Aborted,
    }
}

fn execution_error(f: &Failure) -> core::ExecutionError {
    core::ExecutionError {
        code: f.code.clone(),
        message: f.message.clone(),
        error_uri: f.error_uri.clone(),
        kind: if f.user { core::execution_error::ErrorKind::User } else { core::execution_error::ErrorKind::System }
            as i32,
        ..Default::default()
    }
}

impl App {
    /// Builds the shell around an existing bus, bucket and store.
    pub fn new(bus: Bus, kv: KvBucket, blob: BlobStore, queue: String, system_retries: u32) -> App {
        App { bus, kv, blob, queue, system_retries, closures: Arc::default() }
    }

    async fn closure(&self, uri: &str) -> Result<Arc<Loaded>, Error> {
        if let Some(c) = self.closures.lock().await.get(uri) {
            return Ok(c.clone());
        }
        let bytes = self.blob.get(uri).await?;
        let closure =
            CompiledWorkflowClosure::decode(bytes.as_ref()).map_err(|e| Error::Corrupt(format!("{uri}: {e}")))?;
        let plan = Plan::from_closure(&closure);
        let entry = Arc::new((closure, plan));
        self.closures.lock().await.insert(uri.to_string(), entry.clone());
        Ok(entry)
    }

    /// Handles an execute command. A second delivery of the same command finds the state and does nothing.
    pub async fn execute(&self, cmd: &ExecuteCommand) -> Result<(), Error> {
        let id =
            cmd.execution_id.clone().ok_or_else(|| Error::Corrupt("execute command without execution id".into()))?;
        if self.kv.get(&key(&id)).await?.is_some() {
            return Ok(());
        }
        let closure = self.closure(&cmd.closure_uri).await?;
        let plan = match &closure.1 {
            Ok(p) => p.clone(),
            Err(why) => {
                // A workflow this scheduler cannot run fails visibly instead of hanging in QUEUED.
                let failure =
                    Failure { code: "Unsupported".into(), message: why.clone(), user: false, error_uri: String::new() };
                self.publish_wf(cmd, WfStatus::Running, None).await?;
                self.publish_wf(cmd, WfStatus::Failed, Some(&failure)).await?;
                let stored = Stored {
                    command: hex::encode(cmd.encode_to_vec()),
                    state: ExecState { status: WfStatus::Failed, nodes: Default::default(), failure: None },
                };
                self.kv
                    .create(
                        &key(&id),
                        Bytes::from(serde_json::to_vec(&stored).map_err(|e| Error::Corrupt(e.to_string()))?),
                    )
                    .await
                    .or_else(ignore_conflict)?;
                return Ok(());
            }
        };
        let mut state = machine::initial(&plan);
        self.decide_and_perform(cmd, &closure.0, &plan, &mut state, Input::Start).await?;
        let stored = Stored { command: hex::encode(cmd.encode_to_vec()), state };
        match self
            .kv
            .create(&key(&id), Bytes::from(serde_json::to_vec(&stored).map_err(|e| Error::Corrupt(e.to_string()))?))
            .await
        {
            Ok(_) => Ok(()),
            // another replica started it first; its effects are the same ones (same ids)
            Err(e) if e.is_conflict() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn limits(&self, cmd: &ExecuteCommand) -> Limits {
        let max = cmd.spec.as_ref().map(|s| s.max_parallelism).unwrap_or(0).max(0) as u32;
        Limits { max_parallelism: max, system_retries: self.system_retries }
    }

    /// Applies an input to a stored execution with compare-and-set, retrying on conflicts.
    pub async fn apply(&self, id: &WorkflowExecutionIdentifier, input: Input) -> Result<(), Error> {
        for _ in 0..CAS_RETRIES {
            let Some(entry) = self.kv.get(&key(id)).await? else {
                tracing::warn!(execution = %key(id), "input for an execution the scheduler never started; ignored");
                return Ok(());
            };
            let mut stored: Stored = serde_json::from_slice(&entry.value)
                .map_err(|e| Error::Corrupt(format!("state of {}: {e}", key(id))))?;
            let cmd = ExecuteCommand::decode(
                hex::decode(&stored.command).map_err(|e| Error::Corrupt(e.to_string()))?.as_slice(),
            )
            .map_err(|e| Error::Corrupt(e.to_string()))?;
            let closure = self.closure(&cmd.closure_uri).await?;
            let Ok(plan) = &closure.1 else { return Ok(()) };
            if !self.decide_and_perform(&cmd, &closure.0, plan, &mut stored.state, input.clone()).await? {
                return Ok(());
            }
            let bytes = Bytes::from(serde_json::to_vec(&stored).map_err(|e| Error::Corrupt(e.to_string()))?);
            match self.kv.update(&key(id), bytes, entry.revision).await {
                Ok(_) => return Ok(()),
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Corrupt(format!("execution {} kept changing; giving up for now", key(id))))
    }

    /// Turns a terminal task event into an input.
    pub async fn task_event(&self, ev: &TaskExecutionEvent) -> Result<(), Error> {
        let Some(node) = ev.parent_node_execution_id.as_ref() else { return Ok(()) };
        let Some(id) = node.execution_id.as_ref() else { return Ok(()) };
        let outcome = match TaskPhase::try_from(ev.phase) {
            Ok(TaskPhase::Succeeded) => {
                let uri = match &ev.output_result {
                    Some(event::task_execution_event::OutputResult::OutputUri(u)) => u.clone(),
                    _ => String::new(),
                };
                Outcome::Succeeded { output_uri: uri }
            }
            Ok(p @ (TaskPhase::Failed | TaskPhase::RetryableFailed)) => {
                let e = match &ev.output_result {
                    Some(event::task_execution_event::OutputResult::Error(e)) => e.clone(),
                    _ => core::ExecutionError {
                        code: "Unknown".into(),
                        message: "the task failed without an error".into(),
                        ..Default::default()
                    },
                };
                let user = e.kind != core::execution_error::ErrorKind::System as i32;
                Outcome::Failed {
                    failure: Failure { code: e.code, message: e.message, user, error_uri: e.error_uri },
                    retryable: p == TaskPhase::RetryableFailed,
                }
            }
            Ok(TaskPhase::Aborted) => Outcome::Aborted,
            _ => return Ok(()), // non-terminal phases are for the event sink only
        };
        self.apply(id, Input::Attempt { node_id: node.node_id.clone(), attempt: ev.retry_attempt, outcome }).await
    }

    /// Handles an abort command: stop the execution and tell executors to kill its attempts.
    pub async fn abort(&self, cmd: &AbortCommand) -> Result<(), Error> {
        let Some(id) = cmd.execution_id.as_ref() else { return Ok(()) };
        self.apply(id, Input::Abort { cause: cmd.cause.clone() }).await
    }

    // ------------------------------------------------------------------ effects

    fn prefix(cmd: &ExecuteCommand) -> &str {
        cmd.metadata_prefix.trim_end_matches('/')
    }

    fn node_inputs_uri(cmd: &ExecuteCommand, node: &str) -> String {
        format!("{}/{node}/data/inputs.pb", Self::prefix(cmd))
    }

    fn outputs_uri(cmd: &ExecuteCommand) -> String {
        format!("{}/outputs.pb", Self::prefix(cmd))
    }

    async fn perform(
        &self,
        cmd: &ExecuteCommand,
        closure: &CompiledWorkflowClosure,
        plan: &Plan,
        state: &ExecState,
        fx: Vec<Effect>,
    ) -> Result<Vec<Input>, Error> {
        let id = cmd.execution_id.clone().unwrap_or_default();
        let mut followups = Vec::new();
        for e in fx {
            match e {
                Effect::WorkflowEvent { phase, failure } => {
                    self.publish_wf(cmd, phase, failure.as_ref()).await?;
                }
                Effect::NodeEvent { node_id, phase, attempt, output_uri, failure } => {
                    let input_uri = match node_id.as_str() {
                        "start-node" => String::new(),
                        "end-node" => Self::outputs_uri(cmd),
                        n => Self::node_inputs_uri(cmd, n),
                    };
                    let output_uri = match node_id.as_str() {
                        "start-node" => Some(cmd.inputs_uri.clone()),
                        _ => output_uri,
                    };
                    let parent =
                        plan.parent_of(&node_id).filter(|_| !plan.nodes.contains_key(&node_id)).map(|p| p.id.clone());
                    let is_parent = plan.nodes.get(&node_id).is_some_and(|n| n.branch.is_some());
                    let meta = NodeMeta { parent, is_parent };
                    self.publish_node(&id, &node_id, phase, attempt, input_uri, output_uri, failure.as_ref(), meta)
                        .await?;
                }
                Effect::Dispatch { node_id, attempt } => {
                    if let Err(message) = self.dispatch(cmd, closure, state, &node_id, attempt).await? {
                        followups.push(Input::InputsFailed { node_id, message });
                    }
                }
                Effect::Kill { node_id, attempt } => {
                    let env = Envelope {
                        id: format!("kill/{}/{node_id}/{attempt}", key(&id)),
                        created_at: Some(now()),
                        source: "scheduler".into(),
                        body: Some(Body::Abort(AbortCommand {
                            execution_id: Some(id.clone()),
                            cause: format!("{node_id}/{attempt}"),
                            principal: String::new(),
                        })),
                    };
                    let subject = format!("{}.ctl.abort", self.bus.config().subject_prefix);
                    // core NATS: every executor hears it; an executor not running the attempt ignores it
                    self.bus
                        .client()
                        .publish(subject, env.encode_to_vec().into())
                        .await
                        .map_err(|e| Error::Publish(e.to_string()))?;
                }
                Effect::Evaluate { node_id } => {
                    let branch = plan.nodes.get(&node_id).and_then(|n| n.branch.as_ref());
                    let node = find_node(closure, &node_id);
                    let (Some(branch), Some(node)) = (branch, node) else {
                        return Err(Error::Corrupt(format!("branch node `{node_id}` is not in the workflow")));
                    };
                    match self.resolve(cmd, state, &node.inputs).await? {
                        Ok(inputs) => {
                            // the branch's inputs are written like any node's, for the API to show
                            self.blob.put(&Self::node_inputs_uri(cmd, &node_id), inputs.encode_to_vec()).await?;
                            let decision = crate::domain::conditions::choose(&node_id, branch, &inputs);
                            followups.push(Input::Branch { node_id, decision });
                        }
                        Err(message) => followups.push(Input::InputsFailed { node_id, message }),
                    }
                }
                Effect::WriteOutputs => {
                    let primary = closure.primary.as_ref().and_then(|p| p.template.as_ref());
                    let outputs = primary.map(|t| t.outputs.clone()).unwrap_or_default();
                    match self.resolve(cmd, state, &outputs).await? {
                        Ok(map) => self.blob.put(&Self::outputs_uri(cmd), map.encode_to_vec()).await?,
                        Err(message) => {
                            // cannot happen for a compiled workflow whose nodes all succeeded; fail loudly
                            return Err(Error::Corrupt(format!("workflow outputs of {}: {message}", key(&id))));
                        }
                    }
                }
            }
        }
        Ok(followups)
    }

    /// Decides `input`, performs the effects, then decides and performs what those effects fed
    /// back (a node whose inputs could not be built), all on `state`, which the caller then
    /// stores in one compare-and-set. Returns whether anything happened.
    async fn decide_and_perform(
        &self,
        cmd: &ExecuteCommand,
        closure: &CompiledWorkflowClosure,
        plan: &Plan,
        state: &mut ExecState,
        input: Input,
    ) -> Result<bool, Error> {
        let mut pending = vec![input];
        let mut changed = false;
        while let Some(input) = pending.pop() {
            let fx = machine::decide(state, input, plan, self.limits(cmd));
            if fx.is_empty() {
                continue;
            }
            changed = true;
            pending.extend(self.perform(cmd, closure, plan, state, fx).await?);
        }
        Ok(changed)
    }

    /// Outputs of finished nodes by id; `start-node` = the execution inputs.
    async fn resolve(
        &self,
        cmd: &ExecuteCommand,
        state: &ExecState,
        bindings: &[core::Binding],
    ) -> Result<Result<LiteralMap, String>, Error> {
        let mut needed: Vec<String> = Vec::new();
        collect_nodes(bindings, &mut needed);
        let mut outputs: HashMap<String, LiteralMap> = HashMap::new();
        for n in needed {
            let uri = if n == "start-node" {
                cmd.inputs_uri.clone()
            } else {
                match state.nodes.get(&n).and_then(|s| s.output_uri.clone()) {
                    Some(u) => u,
                    None => continue,
                }
            };
            let bytes = self.blob.get(&uri).await?;
            let map = LiteralMap::decode(bytes.as_ref()).map_err(|e| Error::Corrupt(format!("{uri}: {e}")))?;
            outputs.insert(n, map);
        }
        Ok(bindings::resolve(bindings, &|n| outputs.get(n).cloned()).map_err(|e| e.to_string()))
    }

    /// Writes the node's inputs (first attempt) and publishes the task run. Returns Err(message)
    /// when the inputs cannot be built.
    async fn dispatch(
        &self,
        cmd: &ExecuteCommand,
        closure: &CompiledWorkflowClosure,
        state: &ExecState,
        node_id: &str,
        attempt: u32,
    ) -> Result<Result<(), String>, Error> {
        let id = cmd.execution_id.clone().unwrap_or_default();
        let Some(node) = find_node(closure, node_id) else {
            return Ok(Err(format!("node `{node_id}` is not in the workflow")));
        };
        let Some(core::node::Target::TaskNode(tn)) = &node.target else {
            return Ok(Err(format!("node `{node_id}` is not a task node")));
        };
        let Some(core::task_node::Reference::ReferenceId(task_id)) = &tn.reference else {
            return Ok(Err(format!("node `{node_id}` has no task")));
        };
        let Some(task) =
            closure.tasks.iter().filter_map(|t| t.template.as_ref()).find(|t| t.id.as_ref() == Some(task_id))
        else {
            return Ok(Err(format!("task of node `{node_id}` is missing from the closure")));
        };
        let inputs_uri = Self::node_inputs_uri(cmd, node_id);
        if attempt == 0 || !self.blob.exists(&inputs_uri).await? {
            match self.resolve(cmd, state, &node.inputs).await? {
                Ok(map) => self.blob.put(&inputs_uri, map.encode_to_vec()).await?,
                Err(message) => return Ok(Err(message)),
            }
        }
        let raw = format!("{}/{node_id}/{attempt}", cmd.raw_output_prefix.trim_end_matches('/'));
        let prev_checkpoint = if attempt == 0 {
            String::new()
        } else {
            format!("{}/{node_id}/{}/_flytecheckpoints", cmd.raw_output_prefix.trim_end_matches('/'), attempt - 1)
        };
        let mut env = std::collections::BTreeMap::new();
        if let Some(w) = &cmd.workflow_id {
            env.insert("FLYTE_INTERNAL_EXECUTION_WORKFLOW".to_string(), w.name.clone());
        }
        if let Some(lp) = &cmd.launch_plan_id {
            env.insert("FLYTE_INTERNAL_EXECUTION_LAUNCHPLAN".to_string(), lp.name.clone());
        }
        if let Some(envs) = cmd.spec.as_ref().and_then(|s| s.envs.as_ref()) {
            for kv in &envs.values {
                env.insert(kv.key.clone(), kv.value.clone());
            }
        }
        let timeout = node
            .metadata
            .as_ref()
            .and_then(|m| m.timeout)
            .filter(|d| d.seconds > 0 || d.nanos > 0)
            .or_else(|| task.metadata.as_ref().and_then(|m| m.timeout).filter(|d| d.seconds > 0 || d.nanos > 0));
        let run = TaskRunCommand {
            id: Some(TaskExecutionIdentifier {
                task_id: Some(task_id.clone()),
                node_execution_id: Some(NodeExecutionIdentifier {
                    node_id: node_id.to_string(),
                    execution_id: Some(id.clone()),
                }),
                retry_attempt: attempt,
            }),
            task: Some(task.clone()),
            inputs_uri,
            output_prefix: format!("{}/{node_id}/data/{attempt}", Self::prefix(cmd)),
            raw_output_prefix: raw.clone(),
            checkpoint_prefix: format!("{raw}/_flytecheckpoints"),
            prev_checkpoint_prefix: prev_checkpoint,
            env,
            timeout,
            array_index: -1,
            queue: self.queue.clone(),
        };
        let env = Envelope {
            id: format!("run/{}/{}/{}/{node_id}/{attempt}", id.project, id.domain, id.name),
            created_at: Some(now()),
            source: "scheduler".into(),
            body: Some(Body::TaskRun(run)),
        };
        self.bus.publish(&env).await?;
        Ok(Ok(()))
    }

    async fn publish_wf(&self, cmd: &ExecuteCommand, phase: WfStatus, failure: Option<&Failure>) -> Result<(), Error> {
        let id = &cmd.execution_id.clone().unwrap_or_default();
        let p = wf_phase(phase);
        let output_result = match (phase, failure) {
            (_, Some(f)) => Some(event::workflow_execution_event::OutputResult::Error(execution_error(f))),
            // exactly where WriteOutputs put them: under the prefix metadata chose
            (WfStatus::Succeeded, None) => {
                Some(event::workflow_execution_event::OutputResult::OutputUri(Self::outputs_uri(cmd)))
            }
            _ => None,
        };
        let env = Envelope {
            id: format!("wf/{}/{}/{}/{}", id.project, id.domain, id.name, p.as_str_name()),
            created_at: Some(now()),
            source: "scheduler".into(),
            body: Some(Body::WorkflowEvent(WorkflowExecutionEvent {
                execution_id: Some(id.clone()),
                producer_id: "scheduler".into(),
                phase: p as i32,
                occurred_at: Some(now()),
                output_result,
            })),
        };
        self.bus.publish(&env).await?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn publish_node(
        &self,
        id: &WorkflowExecutionIdentifier,
        node_id: &str,
        phase: NodeStatus,
        attempt: u32,
        input_uri: String,
        output_uri: Option<String>,
        failure: Option<&Failure>,
        meta: NodeMeta,
    ) -> Result<(), Error> {
        let p = node_phase(phase);
        let output_result = match (output_uri, failure) {
            (_, Some(f)) => Some(event::node_execution_event::OutputResult::Error(execution_error(f))),
            (Some(u), None) => Some(event::node_execution_event::OutputResult::OutputUri(u)),
            (None, None) => None,
        };
        let env = Envelope {
            id: format!("node/{}/{}/{}/{node_id}/{}/{attempt}", id.project, id.domain, id.name, p.as_str_name()),
            created_at: Some(now()),
            source: "scheduler".into(),
            body: Some(Body::NodeEvent(NodeExecutionEvent {
                id: Some(NodeExecutionIdentifier { node_id: node_id.to_string(), execution_id: Some(id.clone()) }),
                producer_id: "scheduler".into(),
                phase: p as i32,
                occurred_at: Some(now()),
                spec_node_id: node_id.to_string(),
                node_name: node_id.to_string(),
                retry_group: attempt.to_string(),
                is_parent: meta.is_parent,
                parent_node_metadata: meta.parent.map(|node_id| event::ParentNodeExecutionMetadata { node_id }),
                input_value: (!input_uri.is_empty())
                    .then_some(event::node_execution_event::InputValue::InputUri(input_uri)),
                output_result,
                ..Default::default()
            })),
        };
        self.bus.publish(&env).await?;
        Ok(())
    }
}

fn ignore_conflict(e: aloft_bus::Error) -> Result<u64, aloft_bus::Error> {
    if e.is_conflict() { Ok(0) } else { Err(e) }
}

/// How a node event relates to others: a branch node is a parent, its child names it.
struct NodeMeta {
    parent: Option<String>,
    is_parent: bool,
}

/// A node of the primary workflow by id, including the children of branch nodes.
fn find_node<'a>(closure: &'a CompiledWorkflowClosure, id: &str) -> Option<&'a core::Node> {
    fn walk<'a>(n: &'a core::Node, id: &str) -> Option<&'a core::Node> {
        if n.id == id {
            return Some(n);
        }
        let Some(core::node::Target::BranchNode(b)) = &n.target else { return None };
        let ie = b.if_else.as_ref()?;
        let mut children: Vec<&core::Node> =
            ie.case.iter().map(|c| &**c).chain(ie.other.iter()).filter_map(|c| c.then_node.as_deref()).collect();
        if let Some(core::if_else_block::Default::ElseNode(e)) = &ie.default {
            children.push(e);
        }
        children.into_iter().find_map(|c| walk(c, id))
    }
    closure.primary.as_ref()?.template.as_ref()?.nodes.iter().find_map(|n| walk(n, id))
}

/// Node ids referenced by promises anywhere in the bindings.
fn collect_nodes(bindings: &[core::Binding], out: &mut Vec<String>) {
    fn walk(d: &core::BindingData, out: &mut Vec<String>) {
        match &d.value {
            Some(core::binding_data::Value::Promise(p)) if !out.contains(&p.node_id) => out.push(p.node_id.clone()),
            Some(core::binding_data::Value::Collection(c)) => c.bindings.iter().for_each(|b| walk(b, out)),
            Some(core::binding_data::Value::Map(m)) => m.bindings.values().for_each(|b| walk(b, out)),
            _ => {}
        }
    }
    for b in bindings {
        if let Some(d) = &b.binding {
            walk(d, out);
        }
    }
}
