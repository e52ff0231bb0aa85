//! Execution events -> graph mutations and catalog payloads. Pure: the shell reads what an event
//! points at (the run's workflow and launch plan from the admin API, the input and output
//! LiteralMaps from the blob store) and hands it in.
//!
//! What is captured from which event:
//! - workflow events: the run, its workflow and launch plan versions, its parent run, its phase,
//!   and (on success) its outputs, which declarations use to find model versions;
//! - task events: one attempt node per retry, with `consumed` edges to every blob, directory and
//!   structured dataset in its inputs and `produced` edges to those in its outputs;
//! - node events: cache hits (an attempt that ran nothing, linked to the attempt that produced
//!   the value) and child executions (launch-plan nodes).
//!
//! Every mutation is keyed, so a redelivered event, or events in another order, leave the same
//! graph; a late RUNNING never overwrites a terminal phase.

use std::collections::{BTreeMap, BTreeSet};

use aloft_proto::flyteidl::core::{
    self as core, CatalogCacheStatus, Identifier, LiteralMap, NodeExecutionIdentifier, literal, scalar,
    task_execution::Phase as TaskPhase, workflow_execution::Phase as WfPhase,
};
use aloft_proto::flyteidl::event::{
    NodeExecutionEvent, TaskExecutionEvent, WorkflowExecutionEvent, node_execution_event, task_execution_event,
    workflow_execution_event,
};
use serde_json::json;

use super::declarations::Declarations;
use super::export::{self, OlRun, Settings};
use super::graph::{Edge, EdgeKind, Export, Mutation, Node, NodeKind, Origin, Target, keys};
use super::links::{self, RunFacts};

/// What the admin API says about a run (absent fields: it did not say).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunInfo {
    /// The workflow version it runs.
    pub workflow: Option<Identifier>,
    /// The launch plan version it was started from.
    pub launch_plan: Option<Identifier>,
    /// The node of another execution that launched it.
    pub parent: Option<NodeExecutionIdentifier>,
}

/// One blob, directory or structured dataset found in a LiteralMap.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DataRef {
    /// Where the data is.
    pub uri: String,
    /// `file`, `directory`, `structured` or `schema`.
    pub kind: &'static str,
    /// Declared format (`csv`, `parquet`, ...), possibly empty.
    pub format: String,
    /// The input or output it came from (`model`, `files[2]`, `features.train`).
    pub name: String,
}

/// Every data reference in a LiteralMap, in name order, deduplicated by URI.
pub fn data_refs(map: &LiteralMap) -> Vec<DataRef> {
    fn walk(l: &core::Literal, name: String, out: &mut Vec<DataRef>) {
        match &l.value {
            Some(literal::Value::Scalar(s)) => match &s.value {
                Some(scalar::Value::Blob(b)) if !b.uri.is_empty() => {
                    let t = b.metadata.as_ref().and_then(|m| m.r#type.as_ref());
                    let multipart = t.is_some_and(|t| t.dimensionality == 1);
                    out.push(DataRef {
                        uri: b.uri.clone(),
                        kind: if multipart { "directory" } else { "file" },
                        format: t.map(|t| t.format.clone()).unwrap_or_default(),
                        name,
                    });
                }
                Some(scalar::Value::StructuredDataset(sd)) if !sd.uri.is_empty() => out.push(DataRef {
                    uri: sd.uri.clone(),
                    kind: "structured",
                    format: sd
                        .metadata
                        .as_ref()
                        .and_then(|m| m.structured_dataset_type.as_ref())
                        .map(|t| t.format.clone())
                        .unwrap_or_default(),
                    name,
                }),
                Some(scalar::Value::Schema(s)) if !s.uri.is_empty() => {
                    out.push(DataRef { uri: s.uri.clone(), kind: "schema", format: String::new(), name })
                }
                Some(scalar::Value::Union(u)) => {
                    if let Some(v) = &u.value {
                        walk(v, name, out);
                    }
                }
                _ => {}
            },
            Some(literal::Value::Collection(c)) => {
                for (i, l) in c.literals.iter().enumerate() {
                    walk(l, format!("{name}[{i}]"), out);
                }
            }
            Some(literal::Value::Map(m)) => {
                for (k, l) in &m.literals {
                    walk(l, format!("{name}.{k}"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    for (k, l) in &map.literals {
        walk(l, k.clone(), &mut out);
    }
    let mut seen = BTreeSet::new();
    out.retain(|r| seen.insert(r.uri.clone()));
    out
}

/// The data references of each top-level entry of a LiteralMap.
pub fn refs_by_name(map: &LiteralMap) -> BTreeMap<String, Vec<String>> {
    map.literals
        .iter()
        .map(|(k, l)| {
            let one = LiteralMap { literals: [(k.clone(), l.clone())].into_iter().collect() };
            (k.clone(), data_refs(&one).into_iter().map(|r| r.uri).collect::<Vec<_>>())
        })
        .filter(|(_, v)| !v.is_empty())
        .collect()
}

/// RFC 3339 with milliseconds, UTC.
pub fn rfc3339(t: Option<&prost_types::Timestamp>) -> String {
    let t = t.cloned().unwrap_or_default();
    chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn millis(t: Option<&prost_types::Timestamp>) -> i64 {
    t.map(|t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000).unwrap_or(0)
}

/// The job name of a run in OpenLineage: `<project>.<domain>.<workflow>`.
fn run_job(project: &str, domain: &str, workflow: &str) -> String {
    format!("{project}.{domain}.{workflow}")
}

/// Collects mutations and numbers exports, so each payload of one event gets a stable key.
struct Out<'a> {
    event_id: &'a str,
    list: Vec<Mutation>,
    exports: usize,
}

impl<'a> Out<'a> {
    fn new(event_id: &'a str) -> Self {
        Out { event_id, list: Vec::new(), exports: 0 }
    }
    fn node(&mut self, key: String, kind: NodeKind, project: &str, label: &str, attrs: Vec<(&str, String)>) {
        self.node_with_lookup(key, kind, project, label, String::new(), attrs);
    }
    fn node_with_lookup(
        &mut self,
        key: String,
        kind: NodeKind,
        project: &str,
        label: &str,
        lookup: String,
        attrs: Vec<(&str, String)>,
    ) {
        let attrs = attrs.into_iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| (k.to_string(), v)).collect();
        self.list.push(Mutation::Node(
            Node { key, kind, project: project.into(), label: label.into(), lookup, attrs },
            Origin::Event,
        ));
    }
    fn attr(&mut self, key: &str, name: &str, value: String, only_if_absent: bool) {
        self.list.push(Mutation::Attr { key: key.into(), name: name.into(), value, only_if_absent });
    }
    fn edge(&mut self, from: String, kind: EdgeKind, to: String) {
        self.list.push(Mutation::Edge(Edge::new(from, kind, to), Origin::Event));
    }
    fn export(&mut self, target: Target, body: serde_json::Value) {
        self.exports += 1;
        let key = format!("{}#{}", self.event_id, self.exports);
        self.list.push(Mutation::Export(Export { target, key, body }));
    }
    fn dataset(&mut self, r: &DataRef) {
        self.node(
            keys::dataset(&r.uri),
            NodeKind::Dataset,
            "",
            &r.uri,
            vec![("type", r.kind.to_string()), ("format", r.format.clone())],
        );
    }
}

fn terminal_wf(p: WfPhase) -> bool {
    matches!(p, WfPhase::Succeeded | WfPhase::Failed | WfPhase::TimedOut | WfPhase::Aborted)
}

/// A workflow event. `outputs` is the LiteralMap its `output_uri` points at (success only).
pub fn workflow_event(
    event_id: &str,
    ev: &WorkflowExecutionEvent,
    run: &RunInfo,
    outputs: Option<&LiteralMap>,
    settings: &Settings,
    declarations: &[Declarations],
) -> Vec<Mutation> {
    let Some(id) = &ev.execution_id else { return Vec::new() };
    let phase = WfPhase::try_from(ev.phase).unwrap_or(WfPhase::Undefined);
    let mut out = Out::new(event_id);
    let run_key = keys::run(&id.project, &id.domain, &id.name);
    let workflow = run.workflow.as_ref().map(|w| w.name.clone()).unwrap_or_default();
    let lookup = if workflow.is_empty() { String::new() } else { format!("{}/{workflow}", id.project) };
    out.node_with_lookup(run_key.clone(), NodeKind::Run, &id.project, &id.name, lookup, run_attrs(&id.domain, run));
    let at = rfc3339(ev.occurred_at.as_ref());
    if terminal_wf(phase) {
        out.attr(&run_key, "phase", phase.as_str_name().into(), false);
        out.attr(&run_key, "ended_at", at.clone(), false);
    } else if phase != WfPhase::Undefined {
        out.attr(&run_key, "phase", phase.as_str_name().into(), true);
    }
    if matches!(phase, WfPhase::Running | WfPhase::Queued) {
        out.attr(&run_key, "started_at", at.clone(), true);
    }
    link_run_entities(&mut out, &run_key, run);

    let output_refs = outputs.map(refs_by_name).unwrap_or_default();
    if phase == WfPhase::Succeeded {
        for (name, uris) in &output_refs {
            out.attr(&run_key, &format!("output.{name}"), uris.join("\n"), false);
        }
    }
    let error = match &ev.output_result {
        Some(workflow_execution_event::OutputResult::Error(e)) => Some(format!("{}: {}", e.code, e.message)),
        _ => None,
    };
    let all_outputs: Vec<String> = output_refs.values().flatten().cloned().collect();

    let wf_label = if workflow.is_empty() { "unknown".to_string() } else { workflow.clone() };
    if let Some(ol) = &settings.openlineage {
        let event_type = match phase {
            WfPhase::Running => Some("START"),
            WfPhase::Succeeded => Some("COMPLETE"),
            WfPhase::Failed | WfPhase::TimedOut => Some("FAIL"),
            WfPhase::Aborted => Some("ABORT"),
            _ => None,
        };
        if let Some(event_type) = event_type {
            let job = run_job(&id.project, &id.domain, &wf_label);
            let parent_key = run.parent.as_ref().and_then(parent_run_key);
            let body = export::ol_run_event(
                ol,
                &OlRun {
                    event_type,
                    event_time: &at,
                    run_key: &run_key,
                    job: &job,
                    job_type: "DAG",
                    parent: parent_key.as_deref().map(|k| (k, "parent")),
                    inputs: &[],
                    outputs: &all_outputs,
                    error: error.as_deref(),
                },
            );
            out.export(Target::OpenLineage, body);
        }
    }
    if let Some(dh) = &settings.datahub {
        let flow = export::flow_urn(dh, &id.project, &id.domain, &wf_label);
        let dpi = export::instance_urn(&run_key);
        if phase == WfPhase::Running {
            out.export(
                Target::DataHub,
                export::proposal(
                    "dataFlow",
                    &flow,
                    "dataFlowInfo",
                    &json!({"name": wf_label, "customProperties": {"project": id.project, "domain": id.domain}}),
                ),
            );
            out.export(
                Target::DataHub,
                export::proposal(
                    "dataProcessInstance",
                    &dpi,
                    "dataProcessInstanceProperties",
                    &json!({
                        "name": id.name,
                        "type": "BATCH_AD_HOC",
                        "created": {"time": millis(ev.occurred_at.as_ref()), "actor": export::DATAHUB_ACTOR},
                        "customProperties": {"execution": run_key},
                    }),
                ),
            );
            out.export(
                Target::DataHub,
                export::proposal(
                    "dataProcessInstance",
                    &dpi,
                    "dataProcessInstanceRelationships",
                    &json!({"parentTemplate": flow, "upstreamInstances": []}),
                ),
            );
        }
        let status = match phase {
            WfPhase::Running => Some(json!({"status": "STARTED"})),
            WfPhase::Succeeded => {
                Some(json!({"status": "COMPLETE", "result": {"type": "SUCCESS", "nativeResultType": dh.orchestrator}}))
            }
            WfPhase::Failed | WfPhase::TimedOut | WfPhase::Aborted => {
                Some(json!({"status": "COMPLETE", "result": {"type": "FAILURE", "nativeResultType": dh.orchestrator}}))
            }
            _ => None,
        };
        if let Some(mut s) = status {
            s["timestampMillis"] = json!(millis(ev.occurred_at.as_ref()));
            s["attempt"] = json!(1);
            out.export(
                Target::DataHub,
                export::proposal("dataProcessInstance", &dpi, "dataProcessInstanceRunEvent", &s),
            );
        }
    }

    let mut list = out.list;
    if !workflow.is_empty() {
        let facts = RunFacts {
            key: run_key,
            project: id.project.clone(),
            domain: id.domain.clone(),
            name: id.name.clone(),
            workflow,
            succeeded: phase == WfPhase::Succeeded,
            ended_at: at,
            outputs: output_refs,
        };
        for d in declarations {
            list.extend(links::link_run(d, &facts, settings));
        }
    }
    list
}

fn run_attrs(domain: &str, run: &RunInfo) -> Vec<(&'static str, String)> {
    let id_text = |i: &Option<Identifier>, f: fn(&Identifier) -> String| i.as_ref().map(f).unwrap_or_default();
    vec![
        ("domain", domain.to_string()),
        ("workflow", id_text(&run.workflow, |w| w.name.clone())),
        ("workflow_version", id_text(&run.workflow, |w| w.version.clone())),
        ("launch_plan", id_text(&run.launch_plan, |w| w.name.clone())),
        ("launch_plan_version", id_text(&run.launch_plan, |w| w.version.clone())),
        ("parent", run.parent.as_ref().and_then(parent_run_key).unwrap_or_default()),
    ]
}

fn parent_run_key(n: &NodeExecutionIdentifier) -> Option<String> {
    n.execution_id.as_ref().map(|e| keys::run(&e.project, &e.domain, &e.name))
}

fn link_run_entities(out: &mut Out<'_>, run_key: &str, run: &RunInfo) {
    for (prefix, kind, id) in [
        ("workflow", NodeKind::WorkflowVersion, &run.workflow),
        ("launch_plan", NodeKind::LaunchPlanVersion, &run.launch_plan),
    ] {
        // A single-task run names the task as its launch plan; only real launch plans count.
        let Some(id) = id.as_ref().filter(|i| !i.name.is_empty()) else { continue };
        if prefix == "launch_plan" && id.resource_type == core::ResourceType::Task as i32 {
            continue;
        }
        let key = keys::entity(prefix, &id.project, &id.domain, &id.name, &id.version);
        out.node(key.clone(), kind, &id.project, &id.name, vec![("version", id.version.clone())]);
        out.edge(key, EdgeKind::InstanceOf, run_key.to_string());
    }
    if let Some(parent) = run.parent.as_ref().and_then(parent_run_key) {
        out.edge(parent, EdgeKind::Child, run_key.to_string());
    }
}

fn terminal_task(p: TaskPhase) -> bool {
    matches!(p, TaskPhase::Succeeded | TaskPhase::Failed | TaskPhase::Aborted | TaskPhase::RetryableFailed)
}

/// A task event. `inputs`/`outputs` are the LiteralMaps its input and output URIs point at.
pub fn task_event(
    event_id: &str,
    ev: &TaskExecutionEvent,
    run: &RunInfo,
    inputs: Option<&LiteralMap>,
    outputs: Option<&LiteralMap>,
    settings: &Settings,
) -> Vec<Mutation> {
    let Some(node) = &ev.parent_node_execution_id else { return Vec::new() };
    let Some(exec) = &node.execution_id else { return Vec::new() };
    let phase = TaskPhase::try_from(ev.phase).unwrap_or(TaskPhase::Undefined);
    if phase != TaskPhase::Running && !terminal_task(phase) {
        return Vec::new();
    }
    let mut out = Out::new(event_id);
    let run_key = keys::run(&exec.project, &exec.domain, &exec.name);
    let key = keys::attempt(&exec.project, &exec.domain, &exec.name, &node.node_id, ev.retry_attempt);
    let task = ev.task_id.clone().unwrap_or_default();
    let at = rfc3339(ev.occurred_at.as_ref());
    out.node(
        key.clone(),
        NodeKind::TaskAttempt,
        &exec.project,
        &format!("{}/{}", node.node_id, ev.retry_attempt),
        vec![
            ("run", run_key.clone()),
            ("node", node.node_id.clone()),
            ("retry", ev.retry_attempt.to_string()),
            ("task", task.name.clone()),
            ("task_version", task.version.clone()),
        ],
    );
    out.node(run_key.clone(), NodeKind::Run, &exec.project, &exec.name, vec![("domain", exec.domain.clone())]);
    out.edge(key.clone(), EdgeKind::PartOf, run_key.clone());
    if !task.name.is_empty() {
        let tkey = keys::entity("task", &task.project, &task.domain, &task.name, &task.version);
        out.node(
            tkey.clone(),
            NodeKind::TaskVersion,
            &task.project,
            &task.name,
            vec![("version", task.version.clone())],
        );
        out.edge(tkey, EdgeKind::Executed, key.clone());
    }
    if terminal_task(phase) {
        out.attr(&key, "phase", phase.as_str_name().into(), false);
        out.attr(&key, "ended_at", at.clone(), false);
    } else {
        out.attr(&key, "phase", phase.as_str_name().into(), true);
        out.attr(&key, "started_at", at.clone(), true);
    }
    let ins = inputs.map(data_refs).unwrap_or_default();
    let outs = if phase == TaskPhase::Succeeded { outputs.map(data_refs).unwrap_or_default() } else { Vec::new() };
    for r in &ins {
        out.dataset(r);
        out.edge(keys::dataset(&r.uri), EdgeKind::Consumed, key.clone());
    }
    for r in &outs {
        out.dataset(r);
        out.edge(key.clone(), EdgeKind::Produced, keys::dataset(&r.uri));
    }

    let in_uris: Vec<String> = ins.iter().map(|r| r.uri.clone()).collect();
    let out_uris: Vec<String> = outs.iter().map(|r| r.uri.clone()).collect();
    let workflow = run.workflow.as_ref().map(|w| w.name.clone()).filter(|w| !w.is_empty()).unwrap_or("unknown".into());
    let task_label = if task.name.is_empty() { node.node_id.clone() } else { task.name.clone() };
    if let Some(ol) = &settings.openlineage {
        let event_type = match phase {
            TaskPhase::Running => "START",
            TaskPhase::Succeeded => "COMPLETE",
            TaskPhase::Aborted => "ABORT",
            _ => "FAIL",
        };
        let error = match &ev.output_result {
            Some(task_execution_event::OutputResult::Error(e)) => Some(format!("{}: {}", e.code, e.message)),
            _ => None,
        };
        let parent_job = run_job(&exec.project, &exec.domain, &workflow);
        let job = format!("{parent_job}.{task_label}");
        let body = export::ol_run_event(
            ol,
            &OlRun {
                event_type,
                event_time: &at,
                run_key: &key,
                job: &job,
                job_type: "TASK",
                parent: Some((&run_key, &parent_job)),
                inputs: &in_uris,
                outputs: &out_uris,
                error: error.as_deref(),
            },
        );
        out.export(Target::OpenLineage, body);
    }
    if let Some(dh) = &settings.datahub {
        let flow = export::flow_urn(dh, &exec.project, &exec.domain, &workflow);
        let job = export::job_urn(&flow, &task_label);
        let dpi = export::instance_urn(&key);
        let urns = |u: &[String]| u.iter().map(|u| export::uri_dataset_urn(u, &dh.env)).collect::<Vec<_>>();
        if phase == TaskPhase::Running {
            out.export(
                Target::DataHub,
                export::proposal(
                    "dataProcessInstance",
                    &dpi,
                    "dataProcessInstanceProperties",
                    &json!({
                        "name": format!("{}/{}/{}", exec.name, node.node_id, ev.retry_attempt),
                        "type": "BATCH_AD_HOC",
                        "created": {"time": millis(ev.occurred_at.as_ref()), "actor": export::DATAHUB_ACTOR},
                        "customProperties": {"attempt": key},
                    }),
                ),
            );
            out.export(
                Target::DataHub,
                export::proposal(
                    "dataProcessInstance",
                    &dpi,
                    "dataProcessInstanceRelationships",
                    &json!({"parentTemplate": job, "parentInstance": export::instance_urn(&run_key), "upstreamInstances": []}),
                ),
            );
            out.export(
                Target::DataHub,
                export::proposal(
                    "dataProcessInstance",
                    &dpi,
                    "dataProcessInstanceRunEvent",
                    &json!({"timestampMillis": millis(ev.occurred_at.as_ref()), "status": "STARTED", "attempt": ev.retry_attempt + 1}),
                ),
            );
        } else {
            if phase == TaskPhase::Succeeded {
                out.export(
                    Target::DataHub,
                    export::proposal(
                        "dataJob",
                        &job,
                        "dataJobInfo",
                        &json!({"name": task_label, "type": {"string": "COMMAND"}, "flowUrn": flow, "customProperties": {"task_version": task.version}}),
                    ),
                );
                out.export(
                    Target::DataHub,
                    export::proposal(
                        "dataJob",
                        &job,
                        "dataJobInputOutput",
                        &json!({"inputDatasets": urns(&in_uris), "outputDatasets": urns(&out_uris)}),
                    ),
                );
                out.export(
                    Target::DataHub,
                    export::proposal(
                        "dataProcessInstance",
                        &dpi,
                        "dataProcessInstanceInput",
                        &json!({"inputs": urns(&in_uris)}),
                    ),
                );
                out.export(
                    Target::DataHub,
                    export::proposal(
                        "dataProcessInstance",
                        &dpi,
                        "dataProcessInstanceOutput",
                        &json!({"outputs": urns(&out_uris)}),
                    ),
                );
            }
            let result = match phase {
                TaskPhase::Succeeded => "SUCCESS",
                TaskPhase::RetryableFailed => "UP_FOR_RETRY",
                TaskPhase::Aborted => "SKIPPED",
                _ => "FAILURE",
            };
            out.export(
                Target::DataHub,
                export::proposal(
                    "dataProcessInstance",
                    &dpi,
                    "dataProcessInstanceRunEvent",
                    &json!({
                        "timestampMillis": millis(ev.occurred_at.as_ref()), "status": "COMPLETE", "attempt": ev.retry_attempt + 1,
                        "result": {"type": result, "nativeResultType": dh.orchestrator},
                    }),
                ),
            );
        }
    }
    out.list
}

/// A node event: only cache hits and child executions add to what task and workflow events say.
pub fn node_event(
    event_id: &str,
    ev: &NodeExecutionEvent,
    inputs: Option<&LiteralMap>,
    outputs: Option<&LiteralMap>,
) -> Vec<Mutation> {
    let Some(id) = &ev.id else { return Vec::new() };
    let Some(exec) = &id.execution_id else { return Vec::new() };
    let mut out = Out::new(event_id);
    let run_key = keys::run(&exec.project, &exec.domain, &exec.name);
    match &ev.target_metadata {
        Some(node_execution_event::TargetMetadata::WorkflowNodeMetadata(w)) => {
            if let Some(child) = &w.execution_id {
                let child_key = keys::run(&child.project, &child.domain, &child.name);
                out.node(
                    run_key.clone(),
                    NodeKind::Run,
                    &exec.project,
                    &exec.name,
                    vec![("domain", exec.domain.clone())],
                );
                out.node(
                    child_key.clone(),
                    NodeKind::Run,
                    &child.project,
                    &child.name,
                    vec![("domain", child.domain.clone()), ("parent", run_key.clone())],
                );
                out.edge(run_key, EdgeKind::Child, child_key);
            }
        }
        Some(node_execution_event::TargetMetadata::TaskNodeMetadata(t))
            if t.cache_status == CatalogCacheStatus::CacheHit as i32
                && ev.phase == core::node_execution::Phase::Succeeded as i32 =>
        {
            let retry = ev.retry_group.parse::<u32>().unwrap_or(0);
            let key = keys::attempt(&exec.project, &exec.domain, &exec.name, &id.node_id, retry);
            let catalog = t.catalog_key.as_ref();
            let dataset = catalog.and_then(|c| c.dataset_id.as_ref()).map(|d| format!("{}:{}", d.name, d.version));
            out.node(
                key.clone(),
                NodeKind::TaskAttempt,
                &exec.project,
                &format!("{}/{retry}", id.node_id),
                vec![
                    ("run", run_key.clone()),
                    ("node", id.node_id.clone()),
                    ("retry", retry.to_string()),
                    ("cache", "hit".into()),
                    ("catalog_dataset", dataset.unwrap_or_default()),
                ],
            );
            out.attr(&key, "phase", "SUCCEEDED".into(), false);
            out.attr(&key, "ended_at", rfc3339(ev.occurred_at.as_ref()), false);
            out.node(run_key.clone(), NodeKind::Run, &exec.project, &exec.name, vec![("domain", exec.domain.clone())]);
            out.edge(key.clone(), EdgeKind::PartOf, run_key);
            if let Some(core::catalog_metadata::SourceExecution::SourceTaskExecution(src)) =
                catalog.and_then(|c| c.source_execution.as_ref())
                && let Some(n) = &src.node_execution_id
                && let Some(e) = &n.execution_id
            {
                let src_key = keys::attempt(&e.project, &e.domain, &e.name, &n.node_id, src.retry_attempt);
                out.edge(src_key, EdgeKind::CachedFrom, key.clone());
            }
            for r in inputs.map(data_refs).unwrap_or_default() {
                out.dataset(&r);
                out.edge(keys::dataset(&r.uri), EdgeKind::Consumed, key.clone());
            }
            for r in outputs.map(data_refs).unwrap_or_default() {
                out.dataset(&r);
                out.edge(key.clone(), EdgeKind::Produced, keys::dataset(&r.uri));
            }
        }
        _ => {}
    }
    out.list
}

/// Which blobs a node event needs read: (input URI, output URI) of a cache hit, else none.
pub fn node_event_needs(ev: &NodeExecutionEvent) -> (Option<String>, Option<String>) {
    match &ev.target_metadata {
        Some(node_execution_event::TargetMetadata::TaskNodeMetadata(t))
            if t.cache_status == CatalogCacheStatus::CacheHit as i32
                && ev.phase == core::node_execution::Phase::Succeeded as i32 =>
        {
            let input = match &ev.input_value {
                Some(node_execution_event::InputValue::InputUri(u)) if !u.is_empty() => Some(u.clone()),
                _ => None,
            };
            let output = match &ev.output_result {
                Some(node_execution_event::OutputResult::OutputUri(u)) if !u.is_empty() => Some(u.clone()),
                _ => None,
            };
            (input, output)
        }
        _ => (None, None),
    }
}

/// Which blobs a task event needs read: (input URI, output URI).
pub fn task_event_needs(ev: &TaskExecutionEvent) -> (Option<String>, Option<String>) {
    let phase = TaskPhase::try_from(ev.phase).unwrap_or(TaskPhase::Undefined);
    if phase != TaskPhase::Running && !terminal_task(phase) {
        return (None, None);
    }
    let input = match &ev.input_value {
        Some(task_execution_event::InputValue::InputUri(u)) if !u.is_empty() => Some(u.clone()),
        _ => None,
    };
    let output = match &ev.output_result {
        Some(task_execution_event::OutputResult::OutputUri(u)) if phase == TaskPhase::Succeeded && !u.is_empty() => {
            Some(u.clone())
        }
        _ => None,
    };
    (input, output)
}

/// The output URI of a successful workflow event.
pub fn workflow_event_output(ev: &WorkflowExecutionEvent) -> Option<String> {
    match &ev.output_result {
        Some(workflow_execution_event::OutputResult::OutputUri(u))
            if ev.phase == WfPhase::Succeeded as i32 && !u.is_empty() =>
        {
            Some(u.clone())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use aloft_proto::flyteidl::core::{
        Blob, BlobMetadata, BlobType, CatalogMetadata, ExecutionError, Literal, LiteralCollection, ResourceType,
        Scalar, StructuredDataset, TaskExecutionIdentifier, WorkflowExecutionIdentifier, blob_type,
    };
    use aloft_proto::flyteidl::event::{TaskNodeMetadata, WorkflowNodeMetadata};

    use super::*;
    use crate::domain::export::{DataHubNames, OpenLineageNames};

    fn ts(s: i64) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp { seconds: 1_700_000_000 + s, nanos: 0 })
    }

    fn exec() -> WorkflowExecutionIdentifier {
        WorkflowExecutionIdentifier {
            project: "p".into(),
            domain: "development".into(),
            name: "e1".into(),
            org: String::new(),
        }
    }

    fn file(uri: &str, multipart: bool) -> Literal {
        let dimensionality =
            if multipart { blob_type::BlobDimensionality::Multipart } else { blob_type::BlobDimensionality::Single };
        Literal {
            value: Some(literal::Value::Scalar(Box::new(Scalar {
                value: Some(scalar::Value::Blob(Blob {
                    uri: uri.into(),
                    metadata: Some(BlobMetadata {
                        r#type: Some(BlobType { format: "csv".into(), dimensionality: dimensionality as i32 }),
                    }),
                })),
            }))),
            ..Default::default()
        }
    }

    fn map(entries: Vec<(&str, Literal)>) -> LiteralMap {
        LiteralMap { literals: entries.into_iter().map(|(k, v)| (k.to_string(), v)).collect() }
    }

    fn settings() -> Settings {
        Settings {
            datahub: Some(DataHubNames { env: "PROD".into(), orchestrator: "aloft".into(), cluster: "prod".into() }),
            openlineage: Some(OpenLineageNames { namespace: "aloft".into() }),
        }
    }

    fn run_info() -> RunInfo {
        let id = |rt: ResourceType, name: &str| Identifier {
            resource_type: rt as i32,
            project: "p".into(),
            domain: "development".into(),
            name: name.into(),
            version: "v1".into(),
            org: String::new(),
        };
        RunInfo {
            workflow: Some(id(ResourceType::Workflow, "wf.train")),
            launch_plan: Some(id(ResourceType::LaunchPlan, "wf.train")),
            parent: None,
        }
    }

    fn task(phase: TaskPhase, retry: u32, at: i64) -> TaskExecutionEvent {
        TaskExecutionEvent {
            task_id: Some(Identifier {
                resource_type: ResourceType::Task as i32,
                project: "p".into(),
                domain: "development".into(),
                name: "wf.fit".into(),
                version: "v1".into(),
                org: String::new(),
            }),
            parent_node_execution_id: Some(NodeExecutionIdentifier {
                node_id: "n0".into(),
                execution_id: Some(exec()),
            }),
            retry_attempt: retry,
            phase: phase as i32,
            occurred_at: ts(at),
            ..Default::default()
        }
    }

    fn wf(phase: WfPhase, at: i64) -> WorkflowExecutionEvent {
        WorkflowExecutionEvent {
            execution_id: Some(exec()),
            phase: phase as i32,
            occurred_at: ts(at),
            ..Default::default()
        }
    }

    fn edges(m: &[Mutation]) -> Vec<Edge> {
        m.iter()
            .filter_map(|m| match m {
                Mutation::Edge(e, _) => Some(e.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn literal_maps_yield_every_file_directory_and_dataset() {
        let sd = Literal {
            value: Some(literal::Value::Scalar(Box::new(Scalar {
                value: Some(scalar::Value::StructuredDataset(StructuredDataset {
                    uri: "s3://b/df".into(),
                    metadata: None,
                })),
            }))),
            ..Default::default()
        };
        let list = Literal {
            value: Some(literal::Value::Collection(LiteralCollection {
                literals: vec![file("s3://b/a.csv", false), file("s3://b/a.csv", false)],
            })),
            ..Default::default()
        };
        let refs = data_refs(&map(vec![("dir", file("s3://b/d", true)), ("frames", sd), ("files", list)]));
        let got: Vec<(&str, &str, &str)> = refs.iter().map(|r| (r.uri.as_str(), r.kind, r.name.as_str())).collect();
        assert_eq!(
            got,
            vec![
                ("s3://b/d", "directory", "dir"),
                ("s3://b/a.csv", "file", "files[0]"),
                ("s3://b/df", "structured", "frames")
            ]
        );
    }

    #[test]
    fn an_attempt_consumes_its_inputs_and_produces_its_outputs() {
        let inputs = map(vec![("data", file("s3://b/in.csv", false))]);
        let outputs = map(vec![("o0", file("s3://b/model.pkl", false))]);
        let m = task_event(
            "t1",
            &task(TaskPhase::Succeeded, 1, 5),
            &run_info(),
            Some(&inputs),
            Some(&outputs),
            &Settings::default(),
        );
        let a = "attempt:p/development/e1/n0/1";
        assert_eq!(
            edges(&m),
            vec![
                Edge::new(a, EdgeKind::PartOf, "run:p/development/e1"),
                Edge::new("task:p/development/wf.fit@v1", EdgeKind::Executed, a),
                Edge::new("dataset:s3://b/in.csv", EdgeKind::Consumed, a),
                Edge::new(a, EdgeKind::Produced, "dataset:s3://b/model.pkl"),
            ]
        );
        // the terminal phase overwrites; a (late) RUNNING only fills a gap
        assert!(m.contains(&Mutation::Attr {
            key: a.into(),
            name: "phase".into(),
            value: "SUCCEEDED".into(),
            only_if_absent: false
        }));
        let running =
            task_event("t0", &task(TaskPhase::Running, 1, 1), &run_info(), Some(&inputs), None, &Settings::default());
        assert!(running.contains(&Mutation::Attr {
            key: a.into(),
            name: "phase".into(),
            value: "RUNNING".into(),
            only_if_absent: true
        }));
        assert!(!edges(&running).iter().any(|e| e.kind == EdgeKind::Produced));
        // phases with nothing to record produce nothing
        assert!(task_event("q", &task(TaskPhase::Queued, 0, 0), &run_info(), None, None, &settings()).is_empty());
    }

    #[test]
    fn runs_link_their_versions_and_parent() {
        let mut info = run_info();
        info.parent = Some(NodeExecutionIdentifier {
            node_id: "n3".into(),
            execution_id: Some(WorkflowExecutionIdentifier {
                project: "p".into(),
                domain: "development".into(),
                name: "parent".into(),
                org: String::new(),
            }),
        });
        let m = workflow_event("w", &wf(WfPhase::Running, 0), &info, None, &Settings::default(), &[]);
        assert_eq!(
            edges(&m),
            vec![
                Edge::new("workflow:p/development/wf.train@v1", EdgeKind::InstanceOf, "run:p/development/e1"),
                Edge::new("launch_plan:p/development/wf.train@v1", EdgeKind::InstanceOf, "run:p/development/e1"),
                Edge::new("run:p/development/parent", EdgeKind::Child, "run:p/development/e1"),
            ]
        );
        let Mutation::Node(run, _) = &m[0] else { panic!("the run node comes first") };
        assert_eq!(run.lookup, "p/wf.train");
    }

    #[test]
    fn cache_hits_link_to_the_attempt_that_produced_the_value() {
        let src = TaskExecutionIdentifier {
            node_execution_id: Some(NodeExecutionIdentifier {
                node_id: "n0".into(),
                execution_id: Some(WorkflowExecutionIdentifier {
                    project: "p".into(),
                    domain: "development".into(),
                    name: "old".into(),
                    org: String::new(),
                }),
            }),
            retry_attempt: 2,
            ..Default::default()
        };
        let ev = NodeExecutionEvent {
            id: Some(NodeExecutionIdentifier { node_id: "n0".into(), execution_id: Some(exec()) }),
            phase: core::node_execution::Phase::Succeeded as i32,
            retry_group: "0".into(),
            target_metadata: Some(node_execution_event::TargetMetadata::TaskNodeMetadata(TaskNodeMetadata {
                cache_status: CatalogCacheStatus::CacheHit as i32,
                catalog_key: Some(CatalogMetadata {
                    source_execution: Some(core::catalog_metadata::SourceExecution::SourceTaskExecution(src)),
                    ..Default::default()
                }),
                ..Default::default()
            })),
            ..Default::default()
        };
        let outputs = map(vec![("o0", file("s3://b/cached.csv", false))]);
        let m = node_event("n", &ev, None, Some(&outputs));
        let a = "attempt:p/development/e1/n0/0";
        assert_eq!(
            edges(&m),
            vec![
                Edge::new(a, EdgeKind::PartOf, "run:p/development/e1"),
                Edge::new("attempt:p/development/old/n0/2", EdgeKind::CachedFrom, a),
                Edge::new(a, EdgeKind::Produced, "dataset:s3://b/cached.csv"),
            ]
        );
        // a miss adds nothing to what task events say
        let mut miss = ev.clone();
        if let Some(node_execution_event::TargetMetadata::TaskNodeMetadata(t)) = &mut miss.target_metadata {
            t.cache_status = CatalogCacheStatus::CacheMiss as i32;
        }
        assert!(node_event("n", &miss, None, None).is_empty());
        let child = NodeExecutionEvent {
            target_metadata: Some(node_execution_event::TargetMetadata::WorkflowNodeMetadata(WorkflowNodeMetadata {
                execution_id: Some(WorkflowExecutionIdentifier {
                    project: "p".into(),
                    domain: "development".into(),
                    name: "sub".into(),
                    org: String::new(),
                }),
            })),
            ..ev
        };
        assert_eq!(
            edges(&node_event("c", &child, None, None)),
            vec![Edge::new("run:p/development/e1", EdgeKind::Child, "run:p/development/sub")]
        );
    }

    /// Every payload of one run (start, one failed and one successful attempt, success) for both
    /// catalogs, against `tests/golden/exports.json` (`UPDATE_GOLDEN=1` rewrites it).
    #[test]
    fn catalog_payloads_match_the_golden_file() {
        let s = settings();
        let inputs = map(vec![("data", file("s3://b/in.csv", false))]);
        let outputs = map(vec![("model", file("s3://b/raw/model.pkl", false))]);
        let mut failed = task(TaskPhase::RetryableFailed, 0, 3);
        failed.output_result = Some(task_execution_event::OutputResult::Error(ExecutionError {
            code: "OOM".into(),
            message: "killed".into(),
            ..Default::default()
        }));
        let mut done = wf(WfPhase::Succeeded, 9);
        done.output_result = Some(workflow_execution_event::OutputResult::OutputUri("s3://b/meta/outputs.pb".into()));
        let mut all = Vec::new();
        all.extend(workflow_event("wf/RUNNING", &wf(WfPhase::Running, 0), &run_info(), None, &s, &[]));
        all.extend(task_event("task/0/RUNNING", &task(TaskPhase::Running, 0, 1), &run_info(), Some(&inputs), None, &s));
        all.extend(task_event("task/0/RETRYABLE_FAILED", &failed, &run_info(), Some(&inputs), None, &s));
        all.extend(task_event(
            "task/1/SUCCEEDED",
            &task(TaskPhase::Succeeded, 1, 8),
            &run_info(),
            Some(&inputs),
            Some(&outputs),
            &s,
        ));
        all.extend(workflow_event("wf/SUCCEEDED", &done, &run_info(), Some(&outputs), &s, &[]));
        let exports: Vec<serde_json::Value> = all
            .into_iter()
            .filter_map(|m| match m {
                Mutation::Export(x) => Some(json!({"target": x.target.as_str(), "key": x.key, "body": x.body})),
                _ => None,
            })
            .collect();
        let got = serde_json::to_string_pretty(&exports).unwrap() + "\n";
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/exports.json");
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, &got).unwrap();
        }
        let want = std::fs::read_to_string(&path).expect("golden file (UPDATE_GOLDEN=1 writes it)");
        assert_eq!(got, want, "payloads changed; review and rerun with UPDATE_GOLDEN=1");
        // keys are unique per (target, event)
        let keys: BTreeSet<(String, String)> =
            exports.iter().map(|e| (e["target"].to_string(), e["key"].to_string())).collect();
        assert_eq!(keys.len(), exports.len());
    }
}
