//! The imperative shell around the state machine: load the execution's state from the KV bucket,
//! decide, perform the effects (blob writes, task runs, events), store the new state with
//! compare-and-set, then ack. Effects come before the state write, and all are idempotent, so a
//! crash anywhere replays the same decision instead of losing or duplicating work.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use aloft_blob::BlobStore;
use aloft_bus::{Bus, KvBucket};
use aloft_proto::aloft::v1::{
    AbortCommand, Envelope, ExecuteCommand, SignalNotice, TaskRunCommand, WakeCommand, envelope::Body,
};
use aloft_proto::flyteidl::admin;
use aloft_proto::flyteidl::core::{
    self as core, CompiledWorkflowClosure, LiteralMap, NodeExecutionIdentifier, TaskExecutionIdentifier,
    WorkflowExecutionIdentifier, node_execution::Phase as NodePhase, task_execution::Phase as TaskPhase,
    workflow_execution::Phase as WfPhase,
};
use aloft_proto::flyteidl::event::{self as event, NodeExecutionEvent, TaskExecutionEvent, WorkflowExecutionEvent};
use aloft_proto::flyteidl::service::admin_service_client::AdminServiceClient;
use aloft_proto::flyteidl::service::signal_service_client::SignalServiceClient;
use bytes::Bytes;
use futures::StreamExt;
use prost::Message;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tonic::transport::Channel;

use crate::domain::machine::{
    self, CacheResult, CacheStatus, Context, Effect, ExecState, Failure, Input, Limits, NodeEvent, NodeStatus, Outcome,
    WfStatus, layout,
};
use crate::domain::plan::{Catalog, Gate, Kind, PlanNode, ROOT};
use crate::domain::{bindings, cache};
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

/// A compiled closure's catalog (or why it cannot be run).
type Loaded = Result<Catalog, String>;

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
    /// Metadata's admin API: launch-plan nodes create and terminate their child executions there.
    admin: AdminServiceClient<Channel>,
    /// Metadata's signals: gate nodes create theirs there.
    signals: SignalServiceClient<Channel>,
    /// Cached outputs (`c.<key>`) and reservations of serialized cached tasks (`r.<key>`).
    cache: KvBucket,
    /// Compiled closures by URI: immutable, so cached forever (bounded by the number of running workflows).
    closures: Arc<Mutex<HashMap<String, Arc<Loaded>>>>,
    /// Compiled dynamic workflows by URI, as catalogs.
    dynamics: Arc<Mutex<HashMap<String, Arc<Catalog>>>>,
    /// Inputs of running array nodes by URI (immutable; read once per map, not once per index).
    array_inputs: Arc<Mutex<HashMap<String, Arc<LiteralMap>>>>,
    /// Time per step (`aloft_scheduler_stage_seconds`), registered by `start`.
    pub stages: aloft_runtime::metrics::Stages,
    /// Executions this replica is starting. Their state is stored only after their first tasks
    /// are out (so a crash mid-start is redone by the redelivered command), and a fast task's
    /// event can arrive before that: it waits for the start instead of finding no state.
    starting: Arc<std::sync::Mutex<HashSet<String>>>,
}

/// The scheduler's clients of metadata (one lazy channel).
pub struct Metadata {
    /// Admin API: child executions of launch-plan nodes.
    pub admin: AdminServiceClient<Channel>,
    /// SignalService: gate nodes.
    pub signals: SignalServiceClient<Channel>,
}

/// Where a scope's nodes are: their unique-id prefix and the scope's `start-node` inputs.
struct Scope {
    prefix: String,
    inputs_uri: String,
}

tokio::task_local! {
    /// Messages sent while one input is applied, not yet confirmed (see [`App::publish`]).
    static UNCONFIRMED: RefCell<Vec<aloft_bus::Unconfirmed>>;
}

/// Membership of [`App::starting`] for as long as it is held.
struct Starting {
    set: Arc<std::sync::Mutex<HashSet<String>>>,
    key: String,
}

impl Starting {
    fn enter(set: &Arc<std::sync::Mutex<HashSet<String>>>, key: String) -> Starting {
        set.lock().expect("starting set").insert(key.clone());
        Starting { set: set.clone(), key }
    }
}

impl Drop for Starting {
    fn drop(&mut self) {
        self.set.lock().expect("starting set").remove(&self.key);
    }
}

/// The task type of flytekit's `ContainerTask`.
const RAW_CONTAINER: &str = "raw-container";

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
        NodeStatus::Dynamic => NodePhase::DynamicRunning,
        NodeStatus::Succeeded => NodePhase::Succeeded,
        NodeStatus::Failed => NodePhase::Failed,
        NodeStatus::TimedOut => NodePhase::TimedOut,
        NodeStatus::Aborted => NodePhase::Aborted,
        NodeStatus::Skipped => NodePhase::Skipped,
        NodeStatus::Recovered => NodePhase::Recovered,
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
    pub fn new(
        bus: Bus,
        kv: KvBucket,
        blob: BlobStore,
        queue: String,
        system_retries: u32,
        metadata: Metadata,
        cache: KvBucket,
    ) -> App {
        App {
            bus,
            kv,
            blob,
            queue,
            system_retries,
            admin: metadata.admin,
            signals: metadata.signals,
            cache,
            closures: Arc::default(),
            dynamics: Arc::default(),
            array_inputs: Arc::default(),
            stages: Default::default(),
            starting: Arc::default(),
        }
    }

    /// Publishes on the bus, timed (`publish`). While one input is applied ([`App::decide_and_perform`])
    /// the message is only sent, and its storage confirmed with the others' before the state is
    /// stored: one round trip for all of a step's messages.
    async fn publish(&self, env: &Envelope) -> Result<(), Error> {
        let t = std::time::Instant::now();
        let mut sent = Some(self.bus.send(env).await?);
        let _ = UNCONFIRMED.try_with(|u| u.borrow_mut().push(sent.take().expect("sent once")));
        if let Some(sent) = sent {
            sent.confirm().await?;
        }
        self.stages.lap("publish", t);
        Ok(())
    }

    /// Writes to the store, timed (`store_put`).
    async fn put(&self, uri: &str, bytes: Vec<u8>) -> Result<(), Error> {
        let t = std::time::Instant::now();
        let put = self.blob.put(uri, bytes).await;
        self.stages.lap("store_put", t);
        Ok(put?)
    }

    async fn closure(&self, uri: &str) -> Result<Arc<Loaded>, Error> {
        if let Some(c) = self.closures.lock().await.get(uri) {
            return Ok(c.clone());
        }
        let bytes = self.blob.get(uri).await?;
        let closure =
            CompiledWorkflowClosure::decode(bytes.as_ref()).map_err(|e| Error::Corrupt(format!("{uri}: {e}")))?;
        let entry = Arc::new(Catalog::from_closure(&closure, ROOT));
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
        let _starting = Starting::enter(&self.starting, key(&id));
        let loaded = self.closure(&cmd.closure_uri).await?;
        let catalog = match &*loaded {
            Ok(c) => c,
            Err(why) => {
                // A workflow this scheduler cannot run fails visibly instead of hanging in QUEUED.
                let failure =
                    Failure { code: "Unsupported".into(), message: why.clone(), user: false, error_uri: String::new() };
                self.publish_wf(cmd, WfStatus::Running, None).await?;
                self.publish_wf(cmd, WfStatus::Failed, Some(&failure)).await?;
                let stored = Stored {
                    command: hex::encode(cmd.encode_to_vec()),
                    state: ExecState {
                        status: WfStatus::Failed,
                        nodes: Default::default(),
                        failure: None,
                        recover: Default::default(),
                    },
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
        let mut state = machine::initial(catalog);
        state.recover = self.recoverable(cmd).await?;
        self.decide_and_perform(cmd, catalog, &mut state, Input::Start).await?;
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

    /// For a recovered execution: the outputs of every node that succeeded in the original
    /// (read from the original's state, which the scheduler keeps).
    async fn recoverable(&self, cmd: &ExecuteCommand) -> Result<BTreeMap<String, String>, Error> {
        let meta = cmd.spec.as_ref().and_then(|s| s.metadata.as_ref());
        let recovering = meta.is_some_and(|m| m.mode == admin::execution_metadata::ExecutionMode::Recovered as i32);
        let Some(original) = meta.and_then(|m| m.reference_execution.as_ref()).filter(|_| recovering) else {
            return Ok(BTreeMap::new());
        };
        let Some(entry) = self.kv.get(&key(original)).await? else {
            tracing::warn!(original = %key(original), "recovering an execution the scheduler has no state of: running all");
            return Ok(BTreeMap::new());
        };
        let stored: Stored = serde_json::from_slice(&entry.value)
            .map_err(|e| Error::Corrupt(format!("state of {}: {e}", key(original))))?;
        Ok(stored
            .state
            .nodes
            .into_iter()
            .filter(|(_, n)| n.status == NodeStatus::Succeeded)
            .filter_map(|(id, n)| Some((id, n.output_uri?)))
            .collect())
    }

    fn limits(&self, cmd: &ExecuteCommand) -> Limits {
        let max = cmd.spec.as_ref().map(|s| s.max_parallelism).unwrap_or(0).max(0) as u32;
        Limits { max_parallelism: max, system_retries: self.system_retries }
    }

    /// Applies an input to a stored execution with compare-and-set, retrying on conflicts.
    pub async fn apply(&self, id: &WorkflowExecutionIdentifier, input: Input) -> Result<(), Error> {
        while self.starting.lock().expect("starting set").contains(&key(id)) {
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        for _ in 0..CAS_RETRIES {
            let t = std::time::Instant::now();
            let Some(entry) = self.kv.get(&key(id)).await? else {
                if matches!(input, Input::Attempt { .. }) {
                    // Another replica may still be starting it (its tasks can finish before its
                    // state is stored): try again shortly, within the delivery limit.
                    return Err(Error::NotYet(std::time::Duration::from_millis(500)));
                }
                tracing::warn!(execution = %key(id), "input for an execution the scheduler never started; ignored");
                return Ok(());
            };
            let t = self.stages.lap("state_get", t);
            let mut stored: Stored = serde_json::from_slice(&entry.value)
                .map_err(|e| Error::Corrupt(format!("state of {}: {e}", key(id))))?;
            let cmd = ExecuteCommand::decode(
                hex::decode(&stored.command).map_err(|e| Error::Corrupt(e.to_string()))?.as_slice(),
            )
            .map_err(|e| Error::Corrupt(e.to_string()))?;
            let loaded = self.closure(&cmd.closure_uri).await?;
            let Ok(catalog) = &*loaded else { return Ok(()) };
            let t = self.stages.lap("state_decode", t);
            if !self.decide_and_perform(&cmd, catalog, &mut stored.state, input.clone()).await? {
                return Ok(());
            }
            let t = self.stages.lap("decide_and_effects", t);
            let bytes = Bytes::from(serde_json::to_vec(&stored).map_err(|e| Error::Corrupt(e.to_string()))?);
            let t = self.stages.lap("state_encode", t);
            let updated = self.kv.update(&key(id), bytes, entry.revision).await;
            self.stages.lap("state_put", t);
            match updated {
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
                // a dynamic task leaves futures.pb (its workflow) instead of outputs; a raw
                // container cannot (the executor writes only outputs.pb or error.pb for it), which
                // saves a store round trip per task
                match uri.strip_suffix("/outputs.pb") {
                    Some(dir)
                        if ev.task_type != RAW_CONTAINER
                            && self.blob.exists(&format!("{dir}/futures.pb")).await?
                            && !self.blob.exists(&uri).await? =>
                    {
                        Outcome::Dynamic
                    }
                    _ => Outcome::Succeeded { output_uri: uri },
                }
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

    /// The scope `node_id` is in: its unique-id prefix and where its `start-node` inputs are.
    fn scope_of(cmd: &ExecuteCommand, state: &ExecState, node_id: &str) -> Scope {
        match state.nodes.get(node_id).and_then(|n| n.scope.clone()) {
            None => Scope { prefix: String::new(), inputs_uri: cmd.inputs_uri.clone() },
            Some(owner) => Self::scope_owned(cmd, state, &owner),
        }
    }

    /// The scope `owner` (a sub-workflow or dynamic node) runs.
    fn scope_owned(cmd: &ExecuteCommand, state: &ExecState, owner: &str) -> Scope {
        let prefix = state.nodes.get(owner).and_then(|n| n.child.as_ref()).map(|c| c.prefix.clone());
        Scope { prefix: prefix.unwrap_or_default(), inputs_uri: layout::inputs(Self::prefix(cmd), owner) }
    }

    fn prefix(cmd: &ExecuteCommand) -> &str {
        cmd.metadata_prefix.trim_end_matches('/')
    }

    async fn perform(
        &self,
        cmd: &ExecuteCommand,
        catalog: &Catalog,
        state: &ExecState,
        fx: Vec<Effect>,
    ) -> Result<Vec<Input>, Error> {
        let id = cmd.execution_id.clone().unwrap_or_default();
        let prefix = Self::prefix(cmd);
        let mut followups = Vec::new();
        for e in fx {
            match e {
                Effect::WorkflowEvent { phase, failure } => {
                    self.publish_wf(cmd, phase, failure.as_ref()).await?;
                }
                Effect::NodeEvent(ev) => {
                    let input_uri = match ev.node_id.as_str() {
                        "start-node" => String::new(),
                        "end-node" => layout::workflow_outputs(prefix),
                        _ => ev.inputs_of.as_deref().map(|n| layout::inputs(prefix, n)).unwrap_or_default(),
                    };
                    let output_uri = match ev.node_id.as_str() {
                        "start-node" => Some(cmd.inputs_uri.clone()),
                        _ => ev.output_uri.clone(),
                    };
                    // a dynamic node points at its workflow so GetNodeExecutionData can return it
                    let dynamic_spec = ev.is_dynamic.then(|| {
                        let n = &state.nodes[&ev.node_id];
                        format!("{}/futures.pb", layout::attempt_dir(prefix, &ev.node_id, n.attempt))
                    });
                    let child = child_execution(cmd, catalog, state, &ev.node_id);
                    self.publish_node(&id, &ev, input_uri, output_uri, dynamic_spec, child).await?;
                }
                Effect::Dispatch { node_id, attempt, array } => {
                    if let Err(message) = self.dispatch(cmd, catalog, state, &node_id, attempt, array).await? {
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
                    let plan = known_node(catalog, state, &node_id)?;
                    let Kind::Branch(branch) = &plan.kind else {
                        return Err(Error::Corrupt(format!("node `{node_id}` is not a branch node")));
                    };
                    let scope = Self::scope_of(cmd, state, &node_id);
                    match self.resolve(state, &scope, &plan.inputs).await? {
                        Ok(inputs) => {
                            // the branch's inputs are written like any node's, for the API to show
                            self.put(&layout::inputs(prefix, &node_id), inputs.encode_to_vec()).await?;
                            let decision = crate::domain::conditions::choose(&node_id, branch, &inputs);
                            followups.push(Input::Branch { node_id, decision });
                        }
                        Err(message) => followups.push(Input::InputsFailed { node_id, message }),
                    }
                }
                Effect::Prepare { node_id } => {
                    let plan = known_node(catalog, state, &node_id)?;
                    let scope = Self::scope_of(cmd, state, &node_id);
                    let inputs = match self.resolve(state, &scope, &plan.inputs).await? {
                        Ok(inputs) => inputs,
                        Err(message) => {
                            followups.push(Input::InputsFailed { node_id, message });
                            continue;
                        }
                    };
                    let size = match &plan.kind {
                        Kind::Array(spec) => match array_size(&inputs, &spec.bound_inputs) {
                            Ok(n) => Some(n),
                            Err(message) => {
                                followups.push(Input::InputsFailed { node_id, message });
                                continue;
                            }
                        },
                        _ => None,
                    };
                    self.put(&layout::inputs(prefix, &node_id), inputs.encode_to_vec()).await?;
                    followups.push(Input::Prepared { node_id, size });
                }
                Effect::Compile { node_id, attempt } => {
                    let answer = self.compile(cmd, catalog, state, &node_id, attempt).await?;
                    followups.push(Input::Compiled { node_id, closure: answer });
                }
                Effect::WriteOutputs { owner } => {
                    let (bindings, scope, uri) = match &owner {
                        None => {
                            let t = catalog.template(ROOT).map(|t| t.outputs.clone()).unwrap_or_default();
                            let scope = Scope { prefix: String::new(), inputs_uri: cmd.inputs_uri.clone() };
                            (t, scope, layout::workflow_outputs(prefix))
                        }
                        Some(o) => {
                            let n = &state.nodes[o];
                            let key = n.child.as_ref().map(|c| c.template.clone()).unwrap_or_default();
                            let t = catalog.template(&key).map(|t| t.outputs.clone()).unwrap_or_default();
                            (t, Self::scope_owned(cmd, state, o), layout::outputs(prefix, o, n.attempt))
                        }
                    };
                    match self.resolve(state, &scope, &bindings).await? {
                        Ok(map) => self.put(&uri, map.encode_to_vec()).await?,
                        Err(message) => {
                            // cannot happen for a compiled workflow whose nodes all succeeded; fail loudly
                            return Err(Error::Corrupt(format!("outputs of {} {owner:?}: {message}", key(&id))));
                        }
                    }
                }
                Effect::Gather { node_id } => self.gather(cmd, catalog, state, &node_id).await?,
                Effect::OpenGate { node_id } => {
                    if let Some(input) = self.open_gate(cmd, catalog, state, &node_id).await? {
                        followups.push(input);
                    }
                }
                Effect::CacheLookup { node_id } => {
                    followups.push(self.cache_lookup(cmd, catalog, state, &node_id).await?);
                }
                Effect::CachePut { node_id, key, output_uri } => {
                    let entry = CacheEntry { output_uri, execution: key_of(&id), node_id: node_id.clone() };
                    let bytes = Bytes::from(serde_json::to_vec(&entry).map_err(|e| Error::Corrupt(e.to_string()))?);
                    // the first run to finish wins; a second one (overwrite_cache, a race) keeps it
                    match self.cache.create(&format!("c.{key}"), bytes.clone()).await {
                        Ok(_) => {}
                        Err(e) if e.is_conflict() && cmd.spec.as_ref().is_some_and(|s| s.overwrite_cache) => {
                            let rev = self.cache.get(&format!("c.{key}")).await?.map(|e| e.revision).unwrap_or(0);
                            self.cache.update(&format!("c.{key}"), bytes, rev).await.or_else(ignore_conflict)?;
                        }
                        Err(e) if e.is_conflict() => {}
                        Err(e) => return Err(e.into()),
                    }
                    self.cache_release(&id, &node_id, &key).await?;
                }
                Effect::CacheRelease { node_id, key } => self.cache_release(&id, &node_id, &key).await?,
                Effect::Launch { node_id } => {
                    if let Some(input) = self.launch(cmd, catalog, state, &node_id).await? {
                        followups.push(input);
                    }
                }
                Effect::AbortChild { node_id } => {
                    let Some(child) = child_execution(cmd, catalog, state, &node_id) else { continue };
                    let req = admin::ExecutionTerminateRequest {
                        id: Some(child),
                        cause: format!("the parent execution {} was stopped", key(&id)),
                    };
                    match self.admin.clone().terminate_execution(req).await {
                        // already finished, or never created: nothing to stop
                        Ok(_) => {}
                        Err(s) if matches!(s.code(), tonic::Code::NotFound | tonic::Code::FailedPrecondition) => {}
                        Err(s) => return Err(Error::Metadata(format!("terminating the child of {node_id}: {s}"))),
                    }
                }
            }
        }
        Ok(followups)
    }

    /// Decides `input`, performs the effects, then decides and performs what those effects fed
    /// back (inputs that could not be built, branch decisions, prepared and compiled nodes), all
    /// on `state`, which the caller then stores in one compare-and-set. Returns whether anything
    /// happened.
    async fn decide_and_perform(
        &self,
        cmd: &ExecuteCommand,
        base: &Catalog,
        state: &mut ExecState,
        input: Input,
    ) -> Result<bool, Error> {
        let (changed, sent) = UNCONFIRMED
            .scope(RefCell::new(Vec::new()), async {
                let changed = self.decide_and_perform_now(cmd, base, state, input).await;
                (changed, UNCONFIRMED.with(|u| u.take()))
            })
            .await;
        // Every message of this step is stored before the caller stores the state (if one is
        // lost, the step is retried and sends them again under the same ids).
        let t = std::time::Instant::now();
        for message in sent {
            message.confirm().await?;
        }
        self.stages.lap("publish_confirm", t);
        changed
    }

    async fn decide_and_perform_now(
        &self,
        cmd: &ExecuteCommand,
        base: &Catalog,
        state: &mut ExecState,
        input: Input,
    ) -> Result<bool, Error> {
        let mut pending = vec![input];
        let mut changed = false;
        while let Some(input) = pending.pop() {
            let catalog = self.catalog_for(cmd, base, state, &input).await?;
            let cx = Context { catalog: &catalog, limits: self.limits(cmd), prefix: Self::prefix(cmd) };
            let fx = machine::decide(state, input, cx);
            if fx.is_empty() {
                continue;
            }
            changed = true;
            pending.extend(self.perform(cmd, &catalog, state, fx).await?);
        }
        Ok(changed)
    }

    /// The execution's catalog plus the workflows its dynamic nodes produced (and the one an
    /// `Input::Compiled` is about to start).
    async fn catalog_for(
        &self,
        cmd: &ExecuteCommand,
        base: &Catalog,
        state: &ExecState,
        input: &Input,
    ) -> Result<Catalog, Error> {
        let mut dynamic: Vec<(String, u32, String)> = state
            .nodes
            .iter()
            .filter_map(|(id, n)| n.dynamic.clone().map(|uri| (id.clone(), n.attempt, uri)))
            .collect();
        if let Input::Compiled { node_id, closure: Ok(uri) } = input {
            let attempt = state.nodes.get(node_id).map(|n| n.attempt).unwrap_or(0);
            dynamic.push((node_id.clone(), attempt, uri.clone()));
        }
        if dynamic.is_empty() {
            return Ok(base.clone());
        }
        let mut catalog = base.clone();
        for (node, attempt, uri) in dynamic {
            match self.dynamic_catalog(&uri, &machine::dynamic_key(&node, attempt)).await {
                Ok(c) => catalog.extend(&c),
                Err(e) => {
                    tracing::warn!(execution = %key(&cmd.execution_id.clone().unwrap_or_default()), %uri, error = %e,
                        "cannot load a dynamic workflow");
                    return Err(e);
                }
            }
        }
        Ok(catalog)
    }

    async fn dynamic_catalog(&self, uri: &str, root_key: &str) -> Result<Arc<Catalog>, Error> {
        if let Some(c) = self.dynamics.lock().await.get(uri) {
            return Ok(c.clone());
        }
        let bytes = self.blob.get(uri).await?;
        let closure =
            CompiledWorkflowClosure::decode(bytes.as_ref()).map_err(|e| Error::Corrupt(format!("{uri}: {e}")))?;
        let catalog = Arc::new(Catalog::from_closure(&closure, root_key).map_err(Error::Corrupt)?);
        self.dynamics.lock().await.insert(uri.to_string(), catalog.clone());
        Ok(catalog)
    }

    /// An array node's inputs, cached: every one of its sub-tasks needs them.
    async fn array_inputs(&self, uri: &str) -> Result<Arc<LiteralMap>, Error> {
        if let Some(m) = self.array_inputs.lock().await.get(uri) {
            return Ok(m.clone());
        }
        let bytes = self.blob.get(uri).await?;
        let map = Arc::new(LiteralMap::decode(bytes.as_ref()).map_err(|e| Error::Corrupt(format!("{uri}: {e}")))?);
        let mut cache = self.array_inputs.lock().await;
        // a handful of maps run at once; forget the others rather than grow without bound
        if cache.len() >= 16 {
            cache.clear();
        }
        cache.insert(uri.to_string(), map.clone());
        Ok(map)
    }

    /// Compiles a dynamic node's `futures.pb` into a workflow closure next to it. Returns the
    /// closure's URI, or why the dynamic workflow is invalid (the node's failure).
    async fn compile(
        &self,
        cmd: &ExecuteCommand,
        catalog: &Catalog,
        state: &ExecState,
        node_id: &str,
        attempt: u32,
    ) -> Result<Result<String, String>, Error> {
        let dir = layout::attempt_dir(Self::prefix(cmd), node_id, attempt);
        let futures_uri = format!("{dir}/futures.pb");
        let bytes = self.blob.get(&futures_uri).await?;
        let spec = match core::DynamicJobSpec::decode(bytes.as_ref()) {
            Ok(s) => s,
            Err(e) => return Ok(Err(format!("{futures_uri} is not a dynamic job spec: {e}"))),
        };
        let Some(task) = machine::task_of(catalog, state, node_id).and_then(|t| catalog.task(t)) else {
            return Ok(Err(format!("the task of dynamic node {node_id} is not known")));
        };
        let interface = task.interface.clone().unwrap_or_default();
        let resolver = CatalogResolver(catalog);
        let spec_node = state.nodes.get(node_id).map(|n| n.spec.clone()).unwrap_or_else(|| node_id.to_string());
        let closure = match aloft_compiler::compile_dynamic(&spec, &spec_node, &interface, &resolver) {
            Ok(c) => c,
            Err(e) => return Ok(Err(format!("the dynamic workflow of node {node_id} does not compile: {e}"))),
        };
        let uri = format!("{dir}/futures_compiled.pb");
        self.put(&uri, closure.encode_to_vec()).await?;
        Ok(Ok(uri))
    }

    /// Starts a gate: writes its inputs, then creates its signal (answering at once when a
    /// value was given before the gate started) and sets its timeout, or sets its sleep timer.
    async fn open_gate(
        &self,
        cmd: &ExecuteCommand,
        catalog: &Catalog,
        state: &ExecState,
        node_id: &str,
    ) -> Result<Option<Input>, Error> {
        let id = cmd.execution_id.clone().unwrap_or_default();
        let plan = known_node(catalog, state, node_id)?;
        let Kind::Gate(gate) = &plan.kind else {
            return Err(Error::Corrupt(format!("node `{node_id}` is not a gate node")));
        };
        let scope = Self::scope_of(cmd, state, node_id);
        let inputs = match self.resolve(state, &scope, &plan.inputs).await? {
            Ok(inputs) => inputs,
            Err(message) => return Ok(Some(Input::InputsFailed { node_id: node_id.into(), message })),
        };
        self.put(&layout::inputs(Self::prefix(cmd), node_id), inputs.encode_to_vec()).await?;
        let (signal_id, signal_type) = match gate {
            Gate::Sleep { duration } => {
                self.wake_at(&id, node_id, duration, "sleep").await?;
                return Ok(None);
            }
            Gate::Approve { signal_id } => (signal_id, bool_type()),
            Gate::Signal { signal_id, r#type, .. } => (signal_id, (**r#type).clone()),
        };
        let req = admin::SignalGetOrCreateRequest {
            id: Some(core::SignalIdentifier { signal_id: signal_id.clone(), execution_id: Some(id.clone()) }),
            r#type: Some(signal_type),
        };
        let signal = self
            .signals
            .clone()
            .get_or_create_signal(req)
            .await
            .map_err(|s| Error::Metadata(format!("creating signal {signal_id}: {s}")))?
            .into_inner();
        if let Some(value) = signal.value {
            let result = self.gate_result(cmd, node_id, gate, &value).await?;
            return Ok(Some(Input::GateDone { node_id: node_id.into(), result }));
        }
        if let Some(timeout) = &plan.timeout {
            self.wake_at(&id, node_id, timeout, "timeout").await?;
        }
        Ok(None)
    }

    /// Schedules a `WakeCommand` for `node_id` after `after`.
    async fn wake_at(
        &self,
        id: &WorkflowExecutionIdentifier,
        node_id: &str,
        after: &prost_types::Duration,
        reason: &str,
    ) -> Result<(), Error> {
        let at = add(now(), after);
        let env = Envelope {
            id: format!("wake/{}/{node_id}/{reason}", key(id)),
            created_at: Some(now()),
            source: "scheduler".into(),
            body: Some(Body::Wake(WakeCommand {
                execution_id: Some(id.clone()),
                node_id: node_id.to_string(),
                at: Some(at),
                reason: reason.to_string(),
            })),
        };
        self.publish(&env).await?;
        Ok(())
    }

    /// What a signal's value does to its gate: approval passes the gate's input through as its
    /// output, rejection fails it, a typed value becomes its output.
    async fn gate_result(
        &self,
        cmd: &ExecuteCommand,
        node_id: &str,
        gate: &Gate,
        value: &core::Literal,
    ) -> Result<Result<String, Failure>, Error> {
        let prefix = Self::prefix(cmd);
        let outputs = match gate {
            Gate::Approve { signal_id } => {
                if !is_true(value) {
                    return Ok(Err(Failure {
                        code: "Rejected".into(),
                        message: format!("gate {node_id} was rejected (signal {signal_id})"),
                        user: true,
                        error_uri: String::new(),
                    }));
                }
                let uri = layout::inputs(prefix, node_id);
                let bytes = self.blob.get(&uri).await?;
                LiteralMap::decode(bytes.as_ref()).map_err(|e| Error::Corrupt(format!("{uri}: {e}")))?
            }
            Gate::Signal { output, .. } => LiteralMap { literals: [(output.clone(), value.clone())].into() },
            Gate::Sleep { .. } => LiteralMap::default(),
        };
        let uri = layout::outputs(prefix, node_id, 0);
        self.put(&uri, outputs.encode_to_vec()).await?;
        Ok(Ok(uri))
    }

    /// A signal got its value: the running gates waiting for it open.
    pub async fn signal(&self, notice: &SignalNotice) -> Result<(), Error> {
        let Some(sid) = notice.id.as_ref() else { return Ok(()) };
        let Some(id) = sid.execution_id.as_ref() else { return Ok(()) };
        let Some(value) = notice.value.as_ref() else { return Ok(()) };
        let Some((cmd, state, catalog)) = self.load(id).await? else { return Ok(()) };
        for (node_id, n) in &state.nodes {
            if n.kind != machine::Tag::Gate || n.status != NodeStatus::Running {
                continue;
            }
            let Some(Kind::Gate(gate)) = plan_node(&catalog, &state, node_id).map(|p| p.kind.clone()) else { continue };
            let waits_for = match &gate {
                Gate::Approve { signal_id } | Gate::Signal { signal_id, .. } => signal_id == &sid.signal_id,
                Gate::Sleep { .. } => false,
            };
            if waits_for {
                let result = self.gate_result(&cmd, node_id, &gate, value).await?;
                self.apply(id, Input::GateDone { node_id: node_id.clone(), result }).await?;
            }
        }
        Ok(())
    }

    /// A timer is due (or not yet: put back until it is).
    pub async fn wake(&self, wake: &WakeCommand) -> Result<(), Error> {
        let Some(id) = wake.execution_id.as_ref() else { return Ok(()) };
        let at = wake.at.unwrap_or_default();
        let now = now();
        let early = (at.seconds - now.seconds) * 1000 + i64::from(at.nanos - now.nanos) / 1_000_000;
        if early > 0 {
            return Err(Error::NotYet(std::time::Duration::from_millis(early as u64)));
        }
        let Some((cmd, state, catalog)) = self.load(id).await? else { return Ok(()) };
        let running = state.nodes.get(&wake.node_id).is_some_and(|n| n.status == NodeStatus::Running);
        let Some(Kind::Gate(gate)) = plan_node(&catalog, &state, &wake.node_id).map(|p| p.kind.clone()) else {
            return Ok(());
        };
        if !running {
            return Ok(());
        }
        let result = match (&gate, wake.reason.as_str()) {
            (Gate::Sleep { .. }, _) => self.gate_result(&cmd, &wake.node_id, &gate, &core::Literal::default()).await?,
            _ => Err(Failure {
                code: "GateTimeout".into(),
                message: format!("gate {} timed out waiting for its signal", wake.node_id),
                user: true,
                error_uri: String::new(),
            }),
        };
        self.apply(id, Input::GateDone { node_id: wake.node_id.clone(), result }).await
    }

    /// An execution's command, state and catalog (dynamic workflows included), if the scheduler
    /// runs it.
    async fn load(
        &self,
        id: &WorkflowExecutionIdentifier,
    ) -> Result<Option<(ExecuteCommand, ExecState, Catalog)>, Error> {
        let Some(entry) = self.kv.get(&key(id)).await? else { return Ok(None) };
        let stored: Stored =
            serde_json::from_slice(&entry.value).map_err(|e| Error::Corrupt(format!("state of {}: {e}", key(id))))?;
        let cmd =
            ExecuteCommand::decode(hex::decode(&stored.command).map_err(|e| Error::Corrupt(e.to_string()))?.as_slice())
                .map_err(|e| Error::Corrupt(e.to_string()))?;
        let loaded = self.closure(&cmd.closure_uri).await?;
        let Ok(base) = &*loaded else { return Ok(None) };
        let catalog = self.catalog_for(&cmd, base, &stored.state, &Input::Start).await?;
        Ok(Some((cmd, stored.state, catalog)))
    }

    /// Looks a cached task node up: resolves and writes its inputs, computes its key, and finds
    /// its outputs, or (for a serialized task) takes the key's reservation, or waits behind the
    /// run holding it (registered to be woken when that run ends).
    async fn cache_lookup(
        &self,
        cmd: &ExecuteCommand,
        catalog: &Catalog,
        state: &ExecState,
        node_id: &str,
    ) -> Result<Input, Error> {
        let id = cmd.execution_id.clone().unwrap_or_default();
        let (Some(plan), Some(task_id)) =
            (plan_node(catalog, state, node_id), machine::task_of(catalog, state, node_id))
        else {
            return Err(Error::Corrupt(format!("cached node `{node_id}` is not in the workflow")));
        };
        let Some((task, spec)) = catalog.task(task_id).and_then(|t| Some((t, cache::spec(t)?))) else {
            return Err(Error::Corrupt(format!("the task of cached node `{node_id}` is not cached")));
        };
        let scope = Self::scope_of(cmd, state, node_id);
        let inputs = match self.resolve(state, &scope, &plan.inputs).await? {
            Ok(inputs) => inputs,
            Err(message) => return Ok(Input::InputsFailed { node_id: node_id.into(), message }),
        };
        self.put(&layout::inputs(Self::prefix(cmd), node_id), inputs.encode_to_vec()).await?;
        let key = cache::key(task_id, &spec, &task.interface.clone().unwrap_or_default(), &inputs);
        let answer = |result| Input::Cache { node_id: node_id.into(), key: key.clone(), result };
        let overwrite = cmd.spec.as_ref().is_some_and(|s| s.overwrite_cache);
        let me = Waiter { execution: key_of(&id), node_id: node_id.to_string() };
        for _ in 0..CAS_RETRIES {
            if !overwrite && let Some(hit) = self.cache.get(&format!("c.{key}")).await? {
                let entry: CacheEntry = serde_json::from_slice(&hit.value)
                    .map_err(|e| Error::Corrupt(format!("cache entry {key}: {e}")))?;
                return Ok(answer(CacheResult::Hit(entry.output_uri)));
            }
            if !spec.serializable {
                return Ok(answer(CacheResult::Miss));
            }
            let reservation = Reservation { holder: me.clone(), waiters: vec![] };
            let bytes = Bytes::from(serde_json::to_vec(&reservation).map_err(|e| Error::Corrupt(e.to_string()))?);
            match self.cache.create(&format!("r.{key}"), bytes).await {
                Ok(_) => return Ok(answer(CacheResult::Miss)),
                Err(e) if e.is_conflict() => {}
                Err(e) => return Err(e.into()),
            }
            // held: by this node (a replayed decision), or by another run to wait behind
            let Some(held) = self.cache.get(&format!("r.{key}")).await? else { continue };
            let mut r: Reservation = serde_json::from_slice(&held.value)
                .map_err(|e| Error::Corrupt(format!("cache reservation {key}: {e}")))?;
            if r.holder == me {
                return Ok(answer(CacheResult::Miss));
            }
            if r.waiters.contains(&me) {
                return Ok(answer(CacheResult::Wait));
            }
            r.waiters.push(me.clone());
            let bytes = Bytes::from(serde_json::to_vec(&r).map_err(|e| Error::Corrupt(e.to_string()))?);
            match self.cache.update(&format!("r.{key}"), bytes, held.revision).await {
                Ok(_) => return Ok(answer(CacheResult::Wait)),
                Err(e) if e.is_conflict() => continue, // released or joined meanwhile: look again
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Corrupt(format!("cache key {key} kept changing; giving up for now")))
    }

    /// Gives up `node_id`'s reservation of `key` (if it holds it) and wakes the runs waiting
    /// behind it: they find the outputs, or one of them takes the reservation over.
    fn cache_release<'a>(
        &'a self,
        id: &'a WorkflowExecutionIdentifier,
        node_id: &'a str,
        key: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Error>> + Send + 'a>> {
        Box::pin(async move {
            let me = Waiter { execution: key_of(id), node_id: node_id.to_string() };
            let Some(held) = self.cache.get(&format!("r.{key}")).await? else { return Ok(()) };
            let r: Reservation = serde_json::from_slice(&held.value)
                .map_err(|e| Error::Corrupt(format!("cache reservation {key}: {e}")))?;
            if r.holder != me {
                return Ok(());
            }
            match self.cache.delete(&format!("r.{key}"), held.revision).await {
                Ok(()) => {}
                // a waiter joined meanwhile: release again with the new list (the message is retried)
                Err(e) if e.is_conflict() => return Err(Error::Corrupt(format!("cache reservation {key} changed"))),
                Err(e) => return Err(e.into()),
            }
            for w in r.waiters {
                let Some(exec) = parse_key(&w.execution) else { continue };
                self.apply(&exec, Input::CacheCheck { node_id: w.node_id }).await?;
            }
            Ok(())
        })
    }

    /// Creates a launch-plan node's child execution (mode CHILD_WORKFLOW, linked to the node).
    /// Returns the node's failure when the child cannot be created (unknown launch plan, inputs
    /// it rejects); an existing child (a replayed decision) is fine.
    async fn launch(
        &self,
        cmd: &ExecuteCommand,
        catalog: &Catalog,
        state: &ExecState,
        node_id: &str,
    ) -> Result<Option<Input>, Error> {
        let id = cmd.execution_id.clone().unwrap_or_default();
        let plan = known_node(catalog, state, node_id)?;
        let Kind::LaunchPlan { id: lp } = &plan.kind else {
            return Err(Error::Corrupt(format!("node `{node_id}` is not a launch plan node")));
        };
        let scope = Self::scope_of(cmd, state, node_id);
        let inputs = match self.resolve(state, &scope, &plan.inputs).await? {
            Ok(inputs) => inputs,
            Err(message) => return Ok(Some(Input::InputsFailed { node_id: node_id.into(), message })),
        };
        self.put(&layout::inputs(Self::prefix(cmd), node_id), inputs.encode_to_vec()).await?;
        let child = child_execution(cmd, catalog, state, node_id).expect("a launch plan node");
        let parent_meta = cmd.spec.as_ref().and_then(|s| s.metadata.clone()).unwrap_or_default();
        let spec = admin::ExecutionSpec {
            launch_plan: Some(lp.clone()),
            metadata: Some(admin::ExecutionMetadata {
                mode: admin::execution_metadata::ExecutionMode::ChildWorkflow as i32,
                principal: parent_meta.principal.clone(),
                nesting: parent_meta.nesting + 1,
                parent_node_execution: Some(NodeExecutionIdentifier {
                    node_id: node_id.to_string(),
                    execution_id: Some(id.clone()),
                }),
                ..Default::default()
            }),
            // the parent's run-time settings carry over to the child, as in Flyte
            envs: cmd.spec.as_ref().and_then(|s| s.envs.clone()),
            overwrite_cache: cmd.spec.as_ref().is_some_and(|s| s.overwrite_cache),
            ..Default::default()
        };
        let req = admin::ExecutionCreateRequest {
            project: child.project.clone(),
            domain: child.domain.clone(),
            name: child.name.clone(),
            spec: Some(spec),
            inputs: Some(inputs),
            org: String::new(),
        };
        match self.admin.clone().create_execution(req).await {
            Ok(_) => Ok(None),
            Err(s) if s.code() == tonic::Code::AlreadyExists => Ok(None),
            Err(s)
                if matches!(
                    s.code(),
                    tonic::Code::InvalidArgument | tonic::Code::NotFound | tonic::Code::FailedPrecondition
                ) =>
            {
                let failure = Failure {
                    code: "LaunchPlanFailed".into(),
                    message: format!("launch plan {} cannot start: {}", lp.name, s.message()),
                    user: true,
                    error_uri: String::new(),
                };
                let outcome = Outcome::Failed { failure, retryable: false };
                Ok(Some(Input::ChildDone { node_id: node_id.into(), outcome }))
            }
            Err(s) => Err(Error::Metadata(format!("creating the child execution of {node_id}: {s}"))),
        }
    }

    /// Gathers an array node's sub-task outputs into one list per output, in index order; the
    /// sub-tasks that failed (allowed by the success criterion) contribute `None`.
    async fn gather(
        &self,
        cmd: &ExecuteCommand,
        catalog: &Catalog,
        state: &ExecState,
        node_id: &str,
    ) -> Result<(), Error> {
        let prefix = Self::prefix(cmd);
        let node = &state.nodes[node_id];
        let items = node.items.clone().unwrap_or_default();
        let names: Vec<String> = machine::task_of(catalog, state, node_id)
            .and_then(|t| catalog.task(t))
            .and_then(|t| t.interface.as_ref())
            .and_then(|i| i.outputs.as_ref())
            .map(|o| o.variables.keys().cloned().collect())
            .unwrap_or_default();
        let mut lists: BTreeMap<String, Vec<core::Literal>> = names.iter().map(|n| (n.clone(), Vec::new())).collect();
        // reads run a few at a time: a 10,000-element map is 10,000 small objects
        let reads = (0..items.len()).map(|i| {
            let it = items.get(i);
            let uri = layout::outputs(prefix, &format!("{node_id}-{i}"), it.attempt);
            async move {
                if it.status != NodeStatus::Succeeded {
                    return Ok::<_, Error>(None);
                }
                let bytes = self.blob.get(&uri).await?;
                let map = LiteralMap::decode(bytes.as_ref()).map_err(|e| Error::Corrupt(format!("{uri}: {e}")))?;
                Ok(Some(map))
            }
        });
        let results: Vec<Result<Option<LiteralMap>, Error>> = futures::stream::iter(reads).buffered(32).collect().await;
        for r in results {
            let out = r?;
            for (name, list) in lists.iter_mut() {
                let lit = out.as_ref().and_then(|m| m.literals.get(name).cloned()).unwrap_or_else(none_literal);
                list.push(lit);
            }
        }
        let map = LiteralMap {
            literals: lists
                .into_iter()
                .map(|(k, literals)| {
                    let lit = core::Literal {
                        value: Some(core::literal::Value::Collection(core::LiteralCollection { literals })),
                        ..Default::default()
                    };
                    (k, lit)
                })
                .collect(),
        };
        self.put(&layout::outputs(prefix, node_id, 0), map.encode_to_vec()).await?;
        Ok(())
    }

    /// Outputs of finished nodes of a scope by node id; `start-node` = the scope's inputs.
    async fn resolve(
        &self,
        state: &ExecState,
        scope: &Scope,
        bindings: &[core::Binding],
    ) -> Result<Result<LiteralMap, String>, Error> {
        let mut needed: Vec<String> = Vec::new();
        collect_nodes(bindings, &mut needed);
        let mut outputs: HashMap<String, LiteralMap> = HashMap::new();
        for n in needed {
            let uri = if n == "start-node" {
                scope.inputs_uri.clone()
            } else {
                match state.nodes.get(&format!("{}{n}", scope.prefix)).and_then(|s| s.output_uri.clone()) {
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

    /// Writes the node's inputs (first attempt; an array's sub-tasks read their array's) and
    /// publishes the task run. Returns Err(message) when the inputs cannot be built.
    async fn dispatch(
        &self,
        cmd: &ExecuteCommand,
        catalog: &Catalog,
        state: &ExecState,
        node_id: &str,
        attempt: u32,
        array: Option<(String, u32)>,
    ) -> Result<Result<(), String>, Error> {
        let id = cmd.execution_id.clone().unwrap_or_default();
        let prefix = Self::prefix(cmd);
        let Some(task_id) = machine::task_of(catalog, state, node_id) else {
            return Ok(Err(format!("node `{node_id}` has no task")));
        };
        let Some(task) = catalog.task(task_id) else {
            return Ok(Err(format!("task {} of node `{node_id}` is missing from the closure", task_id.name)));
        };
        let owner = array.as_ref().map(|(a, _)| a.as_str()).unwrap_or(node_id);
        let Some(plan) = plan_node(catalog, state, owner) else {
            return Ok(Err(format!("node `{node_id}` is not in the workflow")));
        };
        let mut inputs_uri = layout::inputs(prefix, owner);
        let mut extra_env = Vec::new();
        if let (Some((array_id, index)), Kind::Array(spec)) = (&array, &plan.kind) {
            // Each sub-task gets only its own element of the mapped lists (flytekit would
            // otherwise decode all n elements in every one of the n sub-tasks): a one-element
            // list, with BATCH_JOB_ARRAY_INDEX_OFFSET = -index so flytekit picks element 0 while
            // FLYTE_K8S_ARRAY_INDEX still says which index this is.
            let full = self.array_inputs(&inputs_uri).await?;
            let mut own = LiteralMap::default();
            for (name, lit) in &full.literals {
                let value = match &lit.value {
                    Some(core::literal::Value::Collection(c)) if !spec.bound_inputs.contains(name) => {
                        let Some(element) = c.literals.get(*index as usize) else {
                            return Ok(Err(format!("map task input `{name}` has no element {index}")));
                        };
                        core::Literal {
                            value: Some(core::literal::Value::Collection(core::LiteralCollection {
                                literals: vec![element.clone()],
                            })),
                            ..Default::default()
                        }
                    }
                    _ => lit.clone(),
                };
                own.literals.insert(name.clone(), value);
            }
            inputs_uri = layout::inputs(prefix, &format!("{array_id}-{index}"));
            if attempt == 0 || !self.blob.exists(&inputs_uri).await? {
                self.put(&inputs_uri, own.encode_to_vec()).await?;
            }
            extra_env.push(("BATCH_JOB_ARRAY_INDEX_OFFSET".to_string(), format!("-{index}")));
        }
        if array.is_none() && (attempt == 0 || !self.blob.exists(&inputs_uri).await?) {
            let scope = Self::scope_of(cmd, state, node_id);
            match self.resolve(state, &scope, &plan.inputs).await? {
                Ok(mut map) => {
                    if let Some(err) = failure_input(catalog, state, node_id, task) {
                        map.literals.insert("err".into(), err);
                    }
                    self.put(&inputs_uri, map.encode_to_vec()).await?
                }
                Err(message) => return Ok(Err(message)),
            }
        }
        let raw_root = cmd.raw_output_prefix.trim_end_matches('/');
        let raw = format!("{raw_root}/{node_id}/{attempt}");
        let prev_checkpoint = if attempt == 0 {
            String::new()
        } else {
            format!("{raw_root}/{node_id}/{}/_flytecheckpoints", attempt - 1)
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
        env.extend(extra_env);
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
            output_prefix: layout::attempt_dir(prefix, node_id, attempt),
            raw_output_prefix: raw.clone(),
            checkpoint_prefix: format!("{raw}/_flytecheckpoints"),
            prev_checkpoint_prefix: prev_checkpoint,
            env,
            timeout: plan.timeout,
            array_index: array.as_ref().map(|(_, i)| *i as i64).unwrap_or(-1),
            queue: self.queue.clone(),
        };
        let env = Envelope {
            id: format!("run/{}/{}/{}/{node_id}/{attempt}", id.project, id.domain, id.name),
            created_at: Some(now()),
            source: "scheduler".into(),
            body: Some(Body::TaskRun(run)),
        };
        self.publish(&env).await?;
        Ok(Ok(()))
    }

    async fn publish_wf(&self, cmd: &ExecuteCommand, phase: WfStatus, failure: Option<&Failure>) -> Result<(), Error> {
        let id = &cmd.execution_id.clone().unwrap_or_default();
        let p = wf_phase(phase);
        let output_result = match (phase, failure) {
            (_, Some(f)) => Some(event::workflow_execution_event::OutputResult::Error(execution_error(f))),
            // exactly where WriteOutputs put them: under the prefix metadata chose
            (WfStatus::Succeeded, None) => Some(event::workflow_execution_event::OutputResult::OutputUri(
                layout::workflow_outputs(Self::prefix(cmd)),
            )),
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
        self.publish(&env).await?;
        if phase.is_terminal() {
            self.tell_parent(cmd, phase, failure).await?;
        }
        Ok(())
    }

    /// A child execution (of a launch-plan node) that ended tells its parent, after its own
    /// terminal event is out; the parent ignores a second telling.
    fn tell_parent<'a>(
        &'a self,
        cmd: &'a ExecuteCommand,
        phase: WfStatus,
        failure: Option<&'a Failure>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Error>> + Send + 'a>> {
        Box::pin(async move {
            let meta = cmd.spec.as_ref().and_then(|s| s.metadata.as_ref());
            let Some(parent) = meta.and_then(|m| m.parent_node_execution.as_ref()) else { return Ok(()) };
            let Some(parent_exec) = parent.execution_id.as_ref() else { return Ok(()) };
            let outcome = match (phase, failure) {
                (WfStatus::Succeeded, _) => {
                    Outcome::Succeeded { output_uri: layout::workflow_outputs(Self::prefix(cmd)) }
                }
                (WfStatus::Aborted, _) => Outcome::Aborted,
                (_, f) => Outcome::Failed {
                    failure: f.cloned().unwrap_or(Failure {
                        code: "ChildFailed".into(),
                        message: "the child execution failed".into(),
                        user: true,
                        error_uri: String::new(),
                    }),
                    retryable: false,
                },
            };
            self.apply(parent_exec, Input::ChildDone { node_id: parent.node_id.clone(), outcome }).await
        })
    }

    async fn publish_node(
        &self,
        id: &WorkflowExecutionIdentifier,
        ev: &NodeEvent,
        input_uri: String,
        output_uri: Option<String>,
        dynamic_spec: Option<String>,
        child: Option<WorkflowExecutionIdentifier>,
    ) -> Result<(), Error> {
        let p = node_phase(ev.phase);
        let output_result = match (output_uri, &ev.failure) {
            (_, Some(f)) => Some(event::node_execution_event::OutputResult::Error(execution_error(f))),
            (Some(u), None) => Some(event::node_execution_event::OutputResult::OutputUri(u)),
            (None, None) => None,
        };
        let launched = child.map(|execution_id| {
            event::node_execution_event::TargetMetadata::WorkflowNodeMetadata(event::WorkflowNodeMetadata {
                execution_id: Some(execution_id),
            })
        });
        let task_meta = (dynamic_spec.is_some() || ev.cache.is_some()).then(|| {
            event::node_execution_event::TargetMetadata::TaskNodeMetadata(event::TaskNodeMetadata {
                cache_status: ev.cache.map(cache_status).unwrap_or(core::CatalogCacheStatus::CacheDisabled) as i32,
                dynamic_workflow: dynamic_spec
                    .map(|uri| event::DynamicWorkflowNodeMetadata { dynamic_job_spec_uri: uri, ..Default::default() }),
                ..Default::default()
            })
        });
        let target_metadata = launched.or(task_meta);
        let node_id = &ev.node_id;
        let env = Envelope {
            id: format!("node/{}/{}/{}/{node_id}/{}/{}", id.project, id.domain, id.name, p.as_str_name(), ev.attempt),
            created_at: Some(now()),
            source: "scheduler".into(),
            body: Some(Body::NodeEvent(NodeExecutionEvent {
                id: Some(NodeExecutionIdentifier { node_id: node_id.clone(), execution_id: Some(id.clone()) }),
                producer_id: "scheduler".into(),
                phase: p as i32,
                occurred_at: Some(now()),
                spec_node_id: ev.spec.clone(),
                node_name: ev.spec.clone(),
                retry_group: ev.attempt.to_string(),
                is_parent: ev.is_parent,
                is_dynamic: ev.is_dynamic,
                is_array: ev.is_array,
                parent_node_metadata: ev.parent.clone().map(|node_id| event::ParentNodeExecutionMetadata { node_id }),
                input_value: (!input_uri.is_empty())
                    .then_some(event::node_execution_event::InputValue::InputUri(input_uri)),
                output_result,
                target_metadata,
                ..Default::default()
            })),
        };
        self.publish(&env).await?;
        Ok(())
    }
}

fn ignore_conflict(e: aloft_bus::Error) -> Result<u64, aloft_bus::Error> {
    if e.is_conflict() { Ok(0) } else { Err(e) }
}

/// The plan node of a node the machine asked about; its absence means stored state and
/// catalog disagree.
fn known_node<'c>(catalog: &'c Catalog, state: &ExecState, node_id: &str) -> Result<&'c PlanNode, Error> {
    plan_node(catalog, state, node_id).ok_or_else(|| Error::Corrupt(format!("node `{node_id}` is not in the workflow")))
}

/// The plan node of a node of the state.
fn plan_node<'c>(catalog: &'c Catalog, state: &ExecState, node_id: &str) -> Option<&'c PlanNode> {
    let n = state.nodes.get(node_id)?;
    catalog.template(&n.template)?.find(&n.spec)
}

/// A workflow's failure node gets the failure as its `err` input (flytekit's `FlyteError`), when
/// its task declares one and the workflow did not bind it.
fn failure_input(
    catalog: &Catalog,
    state: &ExecState,
    node_id: &str,
    task: &core::TaskTemplate,
) -> Option<core::Literal> {
    let n = state.nodes.get(node_id)?;
    let template = catalog.template(&n.template)?;
    template.failure_node.as_ref().filter(|f| f.id == n.spec)?;
    let declared = task.interface.as_ref()?.inputs.as_ref()?.variables.get("err")?.r#type.clone()?;
    let failure = match &n.scope {
        None => state.failure.clone(),
        Some(owner) => state.nodes.get(owner)?.child.as_ref()?.failure.clone(),
    };
    let (failed_node_id, f) = failure?;
    let scalar = |value| core::Literal {
        value: Some(core::literal::Value::Scalar(Box::new(core::Scalar { value: Some(value) }))),
        ..Default::default()
    };
    let error = scalar(core::scalar::Value::Error(core::Error { failed_node_id, message: f.message }));
    // `Optional[FlyteError]` is a union: the value goes in tagged with its variant's type
    match &declared.r#type {
        Some(core::literal_type::Type::UnionType(u)) => {
            let is_error = |t: &&core::LiteralType| matches!(t.r#type, Some(core::literal_type::Type::Simple(s)) if s == core::SimpleType::Error as i32);
            let variant = u.variants.iter().find(is_error)?.clone();
            Some(scalar(core::scalar::Value::Union(Box::new(core::Union {
                value: Some(Box::new(error)),
                r#type: Some(variant),
            }))))
        }
        _ => Some(error),
    }
}

fn bool_type() -> core::LiteralType {
    core::LiteralType {
        r#type: Some(core::literal_type::Type::Simple(core::SimpleType::Boolean as i32)),
        ..Default::default()
    }
}

fn is_true(v: &core::Literal) -> bool {
    matches!(&v.value, Some(core::literal::Value::Scalar(s)) if matches!(&s.value,
        Some(core::scalar::Value::Primitive(core::Primitive { value: Some(core::primitive::Value::Boolean(true)) }))))
}

fn add(t: prost_types::Timestamp, d: &prost_types::Duration) -> prost_types::Timestamp {
    let nanos = i64::from(t.nanos) + i64::from(d.nanos);
    prost_types::Timestamp {
        seconds: t.seconds + d.seconds + nanos.div_euclid(1_000_000_000),
        nanos: nanos.rem_euclid(1_000_000_000) as i32,
    }
}

/// How Flyte shows a cached node's status.
fn cache_status(s: CacheStatus) -> core::CatalogCacheStatus {
    match s {
        CacheStatus::Lookup | CacheStatus::Waiting | CacheStatus::Miss => core::CatalogCacheStatus::CacheMiss,
        CacheStatus::Hit => core::CatalogCacheStatus::CacheHit,
        CacheStatus::Populated => core::CatalogCacheStatus::CachePopulated,
    }
}

/// A cached run's outputs, under `c.<key>` in the cache bucket.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CacheEntry {
    output_uri: String,
    /// The run that produced them (`project.domain.name` and node).
    execution: String,
    node_id: String,
}

/// A node of an execution, as the cache knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Waiter {
    execution: String,
    node_id: String,
}

/// The run of a serialized cached task in progress, under `r.<key>`, and who waits for it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Reservation {
    holder: Waiter,
    waiters: Vec<Waiter>,
}

fn key_of(id: &WorkflowExecutionIdentifier) -> String {
    key(id)
}

/// The execution id of a `project.domain.name` state key.
fn parse_key(k: &str) -> Option<WorkflowExecutionIdentifier> {
    let mut parts = k.splitn(3, '.');
    let (project, domain, name) = (parts.next()?, parts.next()?, parts.next()?);
    Some(WorkflowExecutionIdentifier {
        project: project.into(),
        domain: domain.into(),
        name: name.into(),
        org: String::new(),
    })
}

/// The child execution of a launch-plan node: in the launch plan's project and domain, named
/// from the parent and the node (so a replayed decision finds the same child).
fn child_execution(
    cmd: &ExecuteCommand,
    catalog: &Catalog,
    state: &ExecState,
    node_id: &str,
) -> Option<WorkflowExecutionIdentifier> {
    let Kind::LaunchPlan { id: lp } = &plan_node(catalog, state, node_id)?.kind else { return None };
    let parent = cmd.execution_id.clone().unwrap_or_default();
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("{}/{}/{}/{node_id}", parent.project, parent.domain, parent.name));
    let name = format!("c{}", &hex::encode(digest)[..19]);
    Some(WorkflowExecutionIdentifier {
        project: lp.project.clone(),
        domain: lp.domain.clone(),
        name,
        org: String::new(),
    })
}

/// The number of sub-tasks of a map task: the common length of its list inputs (inputs bound
/// whole with `functools.partial` are not mapped over).
fn array_size(inputs: &LiteralMap, bound: &[String]) -> Result<u32, String> {
    let mut size: Option<(String, usize)> = None;
    for (name, lit) in &inputs.literals {
        if bound.contains(name) {
            continue;
        }
        let Some(core::literal::Value::Collection(c)) = &lit.value else {
            return Err(format!("map task input `{name}` is not a list"));
        };
        match &size {
            Some((first, n)) if *n != c.literals.len() => {
                return Err(format!(
                    "map task inputs have different lengths: `{first}` has {n}, `{name}` has {}",
                    c.literals.len()
                ));
            }
            Some(_) => {}
            None => size = Some((name.clone(), c.literals.len())),
        }
    }
    let n = size.map(|(_, n)| n).unwrap_or(0);
    u32::try_from(n).map_err(|_| format!("a map over {n} elements is too large"))
}

/// Flyte's `None` value (a failed sub-task's slot in a map task's outputs).
fn none_literal() -> core::Literal {
    core::Literal {
        value: Some(core::literal::Value::Scalar(Box::new(core::Scalar {
            value: Some(core::scalar::Value::NoneType(core::Void {})),
        }))),
        ..Default::default()
    }
}

/// Tasks a dynamic workflow references without carrying them: the execution's own.
struct CatalogResolver<'a>(&'a Catalog);

impl aloft_compiler::Resolver for CatalogResolver<'_> {
    fn task(&self, id: &core::Identifier) -> Option<core::TaskTemplate> {
        self.0.task(id).cloned()
    }

    fn launch_plan_interface(&self, _id: &core::Identifier) -> Option<core::TypedInterface> {
        None
    }
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
