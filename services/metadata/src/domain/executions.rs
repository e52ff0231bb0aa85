//! Execution rules: input merging, generated names, `flyte://` URLs, and how the event sink folds
//! workflow, node and task events into records with Flyte's phase rules (a terminal phase never
//! regresses, late events only fill gaps, duplicates change nothing).

use aloft_proto::flyteidl::admin::{
    ExecutionClosure, NodeExecutionClosure, NodeExecutionMetaData, TaskExecutionClosure, execution_closure,
    node_execution_closure, task_execution_closure,
};
use aloft_proto::flyteidl::core::{
    LiteralMap, ParameterMap, node_execution::Phase as NodePhase, parameter, task_execution::Phase as TaskPhase,
    workflow_execution::Phase as WfPhase,
};
use aloft_proto::flyteidl::event::{
    NodeExecutionEvent, TaskExecutionEvent, WorkflowExecutionEvent, node_execution_event, task_execution_event,
    workflow_execution_event,
};
use prost_types::{Duration, Timestamp};

use crate::error::{Error, Result};

/// FlyteAdmin's generated names: 20 characters, a lowercase letter then lowercase letters and digits.
pub fn generate_name(random: impl FnMut(usize) -> usize) -> String {
    let mut random = random;
    const FIRST: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
    const REST: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut s = String::with_capacity(20);
    s.push(FIRST[random(FIRST.len())] as char);
    for _ in 1..20 {
        s.push(REST[random(REST.len())] as char);
    }
    s
}

/// The full input map: launch-plan defaults, then the request's inputs, then fixed inputs (which win).
/// Unknown request inputs and missing required ones are errors naming the input.
pub fn merge_inputs(lp: &str, expected: &ParameterMap, fixed: &LiteralMap, given: &LiteralMap) -> Result<LiteralMap> {
    let mut out = LiteralMap::default();
    for (name, param) in &expected.parameters {
        if let Some(parameter::Behavior::Default(lit)) = &param.behavior {
            out.literals.insert(name.clone(), lit.clone());
        }
    }
    for (name, lit) in &given.literals {
        if fixed.literals.contains_key(name) {
            return Err(Error::invalid(format!("input `{name}` is fixed by launch plan {lp} and cannot be set")));
        }
        if !expected.parameters.contains_key(name) {
            let known: Vec<&str> = expected.parameters.keys().map(String::as_str).collect();
            return Err(Error::invalid(format!(
                "input `{name}` is not an input of launch plan {lp} (inputs: {})",
                if known.is_empty() { "none".to_string() } else { known.join(", ") }
            )));
        }
        out.literals.insert(name.clone(), lit.clone());
    }
    for (name, lit) in &fixed.literals {
        out.literals.insert(name.clone(), lit.clone());
    }
    let missing: Vec<&str> =
        expected.parameters.keys().filter(|n| !out.literals.contains_key(*n)).map(String::as_str).collect();
    if !missing.is_empty() {
        return Err(Error::invalid(format!("launch plan {lp} requires input {}", missing.join(", "))));
    }
    Ok(out)
}

/// A `flyte://v1/<project>/<domain>/<execution>/<node>[/<attempt>]/<i|o|d>[/<var>]` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlyteUrl {
    /// Project.
    pub project: String,
    /// Domain.
    pub domain: String,
    /// Execution name.
    pub execution: String,
    /// Node id.
    pub node_id: String,
    /// Task attempt, when the URL addresses a task execution.
    pub attempt: Option<u32>,
    /// `i`, `o` or `d`.
    pub kind: char,
    /// One variable of the map, if given.
    pub var: Option<String>,
}

/// Parses FlyteAdmin's `flyte://` URL grammar (an `org/<org>/` segment after `v1/` is skipped).
pub fn parse_flyte_url(url: &str) -> Result<FlyteUrl> {
    let bad = |why: &str| Error::invalid(format!("invalid flyte url `{url}`: {why}"));
    let rest = url.strip_prefix("flyte://v1/").ok_or_else(|| bad("expected flyte://v1/..."))?;
    let mut parts: Vec<&str> = rest.split('/').collect();
    if parts.first() == Some(&"org") && parts.len() > 2 {
        parts.drain(..2);
    }
    let seg_ok = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    // The kind follows the node (index 4) or the attempt (index 5); project or domain may be "d".
    let is_kind = |i: usize| parts.get(i).is_some_and(|p| matches!(*p, "i" | "o" | "d"));
    let kind_at = if is_kind(4) {
        4
    } else if is_kind(5) {
        5
    } else {
        return Err(bad("expected <project>/<domain>/<execution>/<node>[/<attempt>]/<i|o|d>"));
    };
    let (head, tail) = parts.split_at(kind_at);
    let (attempt, head) = match head.len() {
        4 => (None, head),
        _ => (Some(head[4].parse::<u32>().map_err(|_| bad("attempt must be a number"))?), &head[..4]),
    };
    if !head.iter().all(|s| seg_ok(s)) {
        return Err(bad("segments may only contain letters, digits, - and _"));
    }
    let var = match tail.len() {
        1 => None,
        2 if !tail[1].is_empty() => Some(tail[1].to_string()),
        _ => return Err(bad("unexpected trailing segments")),
    };
    Ok(FlyteUrl {
        project: head[0].into(),
        domain: head[1].into(),
        execution: head[2].into(),
        node_id: head[3].into(),
        attempt,
        kind: tail[0].chars().next().expect("non-empty"),
        var,
    })
}

fn micros(t: &Option<Timestamp>) -> i64 {
    t.as_ref().map(|t| t.seconds * 1_000_000 + i64::from(t.nanos) / 1000).unwrap_or(0)
}

fn duration_between(start: &Option<Timestamp>, end: &Option<Timestamp>) -> Option<Duration> {
    let (s, e) = (micros(start), micros(end));
    (s > 0 && e >= s).then(|| Duration { seconds: (e - s) / 1_000_000, nanos: (((e - s) % 1_000_000) * 1000) as i32 })
}

/// Workflow phases that end an execution.
pub fn wf_terminal(phase: i32) -> bool {
    matches!(WfPhase::try_from(phase), Ok(WfPhase::Succeeded | WfPhase::Failed | WfPhase::Aborted | WfPhase::TimedOut))
}

fn wf_rank(phase: i32) -> u8 {
    match WfPhase::try_from(phase) {
        Ok(WfPhase::Undefined) | Err(_) => 0,
        Ok(WfPhase::Queued) => 1,
        Ok(WfPhase::Running) => 2,
        Ok(WfPhase::Succeeding | WfPhase::Failing | WfPhase::Aborting) => 3,
        Ok(_) => 4,
    }
}

/// Node phases that end a node execution.
pub fn node_terminal(phase: i32) -> bool {
    matches!(
        NodePhase::try_from(phase),
        Ok(NodePhase::Succeeded
            | NodePhase::Failed
            | NodePhase::Aborted
            | NodePhase::Skipped
            | NodePhase::TimedOut
            | NodePhase::Recovered)
    )
}

fn node_rank(phase: i32) -> u8 {
    match NodePhase::try_from(phase) {
        Ok(NodePhase::Undefined) | Err(_) => 0,
        Ok(NodePhase::Queued) => 1,
        Ok(NodePhase::Running | NodePhase::DynamicRunning) => 2,
        Ok(NodePhase::Failing) => 3,
        Ok(_) => 4,
    }
}

/// Task phases that end an attempt.
pub fn task_terminal(phase: i32) -> bool {
    matches!(
        TaskPhase::try_from(phase),
        Ok(TaskPhase::Succeeded | TaskPhase::Aborted | TaskPhase::Failed | TaskPhase::RetryableFailed)
    )
}

fn task_rank(phase: i32) -> u8 {
    match TaskPhase::try_from(phase) {
        Ok(TaskPhase::Undefined) | Err(_) => 0,
        Ok(TaskPhase::Queued | TaskPhase::Initializing | TaskPhase::WaitingForResources) => 1,
        Ok(TaskPhase::Running) => 2,
        Ok(_) => 4,
    }
}

/// Folds a workflow event into an execution closure. Returns false when it changes nothing.
pub fn apply_workflow_event(c: &mut ExecutionClosure, ev: &WorkflowExecutionEvent) -> bool {
    let at = ev.occurred_at;
    if wf_terminal(c.phase) {
        return false;
    }
    let running = ev.phase == WfPhase::Running as i32;
    if wf_rank(ev.phase) < wf_rank(c.phase) || (wf_rank(ev.phase) == wf_rank(c.phase) && ev.phase == c.phase) {
        // late or duplicate: only fill a missing start time
        if running && c.started_at.is_none() {
            c.started_at = at;
            return true;
        }
        return false;
    }
    c.phase = ev.phase;
    if running && c.started_at.is_none() {
        c.started_at = at;
    }
    if micros(&at) > micros(&c.updated_at) {
        c.updated_at = at;
    }
    match &ev.output_result {
        Some(workflow_execution_event::OutputResult::OutputUri(uri)) => {
            #[allow(deprecated)] // the outputs blob is still how older consoles find outputs
            let r = execution_closure::OutputResult::Outputs(aloft_proto::flyteidl::admin::LiteralMapBlob {
                data: Some(aloft_proto::flyteidl::admin::literal_map_blob::Data::Uri(uri.clone())),
            });
            c.output_result = Some(r);
        }
        Some(workflow_execution_event::OutputResult::Error(e)) => {
            c.output_result = Some(execution_closure::OutputResult::Error(e.clone()));
        }
        _ => {}
    }
    if wf_terminal(ev.phase) {
        if c.started_at.is_none() {
            c.started_at = at;
        }
        c.duration = duration_between(&c.started_at, &at);
    }
    true
}

/// What the event sink keeps per node execution.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NodeRecord {
    /// Unique id of the parent node ('' at top level).
    pub parent_id: String,
    /// Where its inputs are.
    pub input_uri: String,
    /// The closure the API returns.
    pub closure: NodeExecutionClosure,
    /// The metadata the API returns.
    pub metadata: NodeExecutionMetaData,
    /// Unix microseconds of the newest applied event.
    pub occurred_at: i64,
}

/// Folds a node event into its record (None = a new node). Returns None when nothing changes.
pub fn apply_node_event(existing: Option<&NodeRecord>, ev: &NodeExecutionEvent) -> Option<NodeRecord> {
    let mut r = existing.cloned().unwrap_or_else(|| NodeRecord {
        parent_id: ev.parent_node_metadata.as_ref().map(|p| p.node_id.clone()).unwrap_or_default(),
        closure: NodeExecutionClosure { created_at: ev.occurred_at, ..Default::default() },
        ..Default::default()
    });
    let fresh = existing.is_none();
    let c = &mut r.closure;
    if !fresh && node_terminal(c.phase) {
        return None;
    }
    let at = ev.occurred_at;
    let running = matches!(NodePhase::try_from(ev.phase), Ok(NodePhase::Running | NodePhase::DynamicRunning));
    let newer = fresh
        || node_rank(ev.phase) > node_rank(c.phase)
        || (ev.phase != c.phase && node_rank(ev.phase) == node_rank(c.phase));
    let mut changed = fresh;
    if r.input_uri.is_empty()
        && let Some(node_execution_event::InputValue::InputUri(u)) = &ev.input_value
    {
        r.input_uri = u.clone();
        changed = true;
    }
    if running && c.started_at.is_none() {
        c.started_at = at;
        changed = true;
    }
    // metadata fields only ever get more specific
    let m = &mut r.metadata;
    if m.spec_node_id.is_empty() && !ev.spec_node_id.is_empty() {
        m.spec_node_id = ev.spec_node_id.clone();
        changed = true;
    }
    for (flag, value) in [
        (&mut m.is_parent_node, ev.is_parent),
        (&mut m.is_dynamic, ev.is_dynamic),
        (&mut m.is_array, ev.is_array),
        (&mut m.is_eager, ev.is_eager),
    ] {
        if value && !*flag {
            *flag = true;
            changed = true;
        }
    }
    if !ev.retry_group.is_empty() && m.retry_group != ev.retry_group {
        m.retry_group = ev.retry_group.clone();
        changed = true;
    }
    if !newer {
        return changed.then_some(r);
    }
    c.phase = ev.phase;
    r.occurred_at = micros(&at);
    if micros(&at) > micros(&c.updated_at) {
        c.updated_at = at;
    }
    if !ev.deck_uri.is_empty() {
        c.deck_uri = ev.deck_uri.clone();
    }
    #[allow(deprecated)] // output_uri is deprecated in the admin closure but flytekit and consoles read it
    match &ev.output_result {
        Some(node_execution_event::OutputResult::OutputUri(u)) => {
            c.output_result = Some(node_execution_closure::OutputResult::OutputUri(u.clone()))
        }
        Some(node_execution_event::OutputResult::Error(e)) => {
            c.output_result = Some(node_execution_closure::OutputResult::Error(e.clone()))
        }
        Some(node_execution_event::OutputResult::OutputData(_)) | None => {}
    }
    match &ev.target_metadata {
        Some(node_execution_event::TargetMetadata::TaskNodeMetadata(t)) => {
            c.target_metadata = Some(node_execution_closure::TargetMetadata::TaskNodeMetadata(
                aloft_proto::flyteidl::admin::TaskNodeMetadata {
                    cache_status: t.cache_status,
                    catalog_key: t.catalog_key.clone(),
                    checkpoint_uri: t.checkpoint_uri.clone(),
                },
            ));
            if t.dynamic_workflow.is_some() {
                c.dynamic_job_spec_uri =
                    t.dynamic_workflow.as_ref().map(|d| d.dynamic_job_spec_uri.clone()).unwrap_or_default();
            }
        }
        Some(node_execution_event::TargetMetadata::WorkflowNodeMetadata(w)) => {
            c.target_metadata = Some(node_execution_closure::TargetMetadata::WorkflowNodeMetadata(
                aloft_proto::flyteidl::admin::WorkflowNodeMetadata { execution_id: w.execution_id.clone() },
            ));
        }
        None => {}
    }
    if node_terminal(ev.phase) {
        if c.started_at.is_none() {
            c.started_at = at;
        }
        c.duration = duration_between(&c.started_at, &at);
    }
    Some(r)
}

/// What the event sink keeps per task attempt.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TaskRecord {
    /// Where the attempt's inputs are.
    pub input_uri: String,
    /// Phase version of the newest applied event.
    pub phase_version: u32,
    /// The closure the API returns.
    pub closure: TaskExecutionClosure,
    /// Unix microseconds of the newest applied event.
    pub occurred_at: i64,
}

/// Folds a task event into its record (None = a new attempt). Returns None when nothing changes.
pub fn apply_task_event(existing: Option<&TaskRecord>, ev: &TaskExecutionEvent) -> Option<TaskRecord> {
    let mut r = existing.cloned().unwrap_or_else(|| TaskRecord {
        closure: TaskExecutionClosure { created_at: ev.occurred_at, ..Default::default() },
        ..Default::default()
    });
    let fresh = existing.is_none();
    let c = &mut r.closure;
    if !fresh && task_terminal(c.phase) {
        return None;
    }
    let at = ev.occurred_at;
    let newer = fresh
        || task_rank(ev.phase) > task_rank(c.phase)
        || (task_rank(ev.phase) == task_rank(c.phase) && (ev.phase != c.phase || ev.phase_version > r.phase_version));
    let mut changed = fresh;
    if r.input_uri.is_empty()
        && let Some(task_execution_event::InputValue::InputUri(u)) = &ev.input_value
    {
        r.input_uri = u.clone();
        changed = true;
    }
    if ev.phase == TaskPhase::Running as i32 && c.started_at.is_none() {
        c.started_at = at;
        changed = true;
    }
    // logs accumulate: a late event may still carry a link the record lacks
    for log in &ev.logs {
        if !c.logs.iter().any(|l| l.uri == log.uri && l.name == log.name) {
            c.logs.push(log.clone());
            changed = true;
        }
    }
    if !newer {
        return changed.then_some(r);
    }
    c.phase = ev.phase;
    r.phase_version = ev.phase_version;
    r.occurred_at = micros(&at);
    if micros(&at) > micros(&c.updated_at) {
        c.updated_at = at;
    }
    for reason in &ev.reasons {
        c.reasons.push(aloft_proto::flyteidl::admin::Reason {
            occurred_at: reason.occurred_at,
            message: reason.reason.clone(),
        });
    }
    if !ev.task_type.is_empty() {
        c.task_type = ev.task_type.clone();
    }
    if ev.metadata.is_some() {
        c.metadata = ev.metadata.clone();
    }
    if ev.custom_info.is_some() {
        c.custom_info = ev.custom_info.clone();
    }
    c.event_version = ev.event_version;
    #[allow(deprecated)] // see apply_node_event
    match &ev.output_result {
        Some(task_execution_event::OutputResult::OutputUri(u)) => {
            c.output_result = Some(task_execution_closure::OutputResult::OutputUri(u.clone()))
        }
        Some(task_execution_event::OutputResult::Error(e)) => {
            c.output_result = Some(task_execution_closure::OutputResult::Error(e.clone()))
        }
        Some(task_execution_event::OutputResult::OutputData(_)) | None => {}
    }
    if task_terminal(ev.phase) {
        if c.started_at.is_none() {
            c.started_at = at;
        }
        c.duration = duration_between(&c.started_at, &at);
    }
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aloft_proto::flyteidl::core::{Literal, Parameter, Variable};

    fn ts(s: i64) -> Option<Timestamp> {
        Some(Timestamp { seconds: s, nanos: 0 })
    }

    fn lit(v: i64) -> Literal {
        Literal {
            value: Some(aloft_proto::flyteidl::core::literal::Value::Scalar(Box::new(
                aloft_proto::flyteidl::core::Scalar {
                    value: Some(aloft_proto::flyteidl::core::scalar::Value::Primitive(
                        aloft_proto::flyteidl::core::Primitive {
                            value: Some(aloft_proto::flyteidl::core::primitive::Value::Integer(v)),
                        },
                    )),
                },
            ))),
            ..Default::default()
        }
    }

    fn params() -> ParameterMap {
        let mut p = ParameterMap::default();
        p.parameters.insert(
            "a".into(),
            Parameter { var: Some(Variable::default()), behavior: Some(parameter::Behavior::Default(lit(1))) },
        );
        p.parameters.insert(
            "b".into(),
            Parameter { var: Some(Variable::default()), behavior: Some(parameter::Behavior::Required(true)) },
        );
        p
    }

    #[test]
    fn names_look_like_flyte_admin_ones() {
        let mut i = 0;
        let name = generate_name(|n| {
            i += 7;
            i % n
        });
        assert_eq!(name.len(), 20);
        assert!(name.as_bytes()[0].is_ascii_lowercase());
        assert!(name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
    }

    #[test]
    fn inputs_merge_defaults_given_fixed() {
        let given = LiteralMap { literals: [("b".to_string(), lit(2)), ("a".to_string(), lit(5))].into() };
        let m = merge_inputs("lp", &params(), &LiteralMap::default(), &given).unwrap();
        assert_eq!(m.literals["a"], lit(5));
        assert_eq!(m.literals["b"], lit(2));
        let err = merge_inputs("lp", &params(), &LiteralMap::default(), &LiteralMap::default()).unwrap_err();
        assert_eq!(err.to_string(), "launch plan lp requires input b");
        let unknown = LiteralMap { literals: [("zz".to_string(), lit(2))].into() };
        let err = merge_inputs("lp", &params(), &LiteralMap::default(), &unknown).unwrap_err();
        assert_eq!(err.to_string(), "input `zz` is not an input of launch plan lp (inputs: a, b)");
        let fixed = LiteralMap { literals: [("c".to_string(), lit(9))].into() };
        let m = merge_inputs("lp", &params(), &fixed, &LiteralMap { literals: [("b".to_string(), lit(2))].into() })
            .unwrap();
        assert_eq!(m.literals["c"], lit(9));
        let err = merge_inputs("lp", &params(), &fixed, &LiteralMap { literals: [("c".to_string(), lit(2))].into() })
            .unwrap_err();
        assert_eq!(err.to_string(), "input `c` is fixed by launch plan lp and cannot be set");
    }

    #[test]
    fn flyte_urls() {
        let u = parse_flyte_url("flyte://v1/flytesnacks/development/abc/n0/i").unwrap();
        assert_eq!((u.node_id.as_str(), u.attempt, u.kind, u.var), ("n0", None, 'i', None));
        let u = parse_flyte_url("flyte://v1/p/d/abc/n0/2/o/o0").unwrap();
        assert_eq!((u.attempt, u.kind, u.var.as_deref()), (Some(2), 'o', Some("o0")));
        let u = parse_flyte_url("flyte://v1/org/acme/p/d/abc/n0/d").unwrap();
        assert_eq!((u.project.as_str(), u.kind), ("p", 'd'));
        assert!(parse_flyte_url("s3://x").is_err());
        assert!(parse_flyte_url("flyte://v1/p/d/n0/i").is_err());
        assert!(parse_flyte_url("flyte://v1/p/d/e/n.0/i").is_err());
    }

    fn wf(phase: WfPhase, at: i64) -> WorkflowExecutionEvent {
        WorkflowExecutionEvent { phase: phase as i32, occurred_at: ts(at), ..Default::default() }
    }

    #[test]
    fn workflow_phases_never_regress() {
        let mut c = ExecutionClosure { phase: WfPhase::Queued as i32, ..Default::default() };
        assert!(apply_workflow_event(&mut c, &wf(WfPhase::Running, 10)));
        assert!(!apply_workflow_event(&mut c, &wf(WfPhase::Running, 10)), "duplicate changes nothing");
        assert!(apply_workflow_event(&mut c, &wf(WfPhase::Succeeded, 15)));
        assert_eq!(c.duration.unwrap().seconds, 5);
        assert!(!apply_workflow_event(&mut c, &wf(WfPhase::Running, 20)));
        assert!(!apply_workflow_event(&mut c, &wf(WfPhase::Failed, 21)), "terminal is final");
        assert_eq!(c.phase, WfPhase::Succeeded as i32);
    }

    #[test]
    fn late_running_fills_start_time_only() {
        let mut c = ExecutionClosure { phase: WfPhase::Queued as i32, ..Default::default() };
        apply_workflow_event(&mut c, &wf(WfPhase::Failing, 12));
        assert!(apply_workflow_event(&mut c, &wf(WfPhase::Running, 10)));
        assert_eq!(c.phase, WfPhase::Failing as i32);
        assert_eq!(c.started_at, ts(10));
    }

    fn node(phase: NodePhase, at: i64) -> NodeExecutionEvent {
        NodeExecutionEvent { phase: phase as i32, occurred_at: ts(at), spec_node_id: "n0".into(), ..Default::default() }
    }

    #[test]
    fn node_events_out_of_order() {
        let done = apply_node_event(None, &node(NodePhase::Succeeded, 20)).unwrap();
        let late = apply_node_event(Some(&done), &node(NodePhase::Running, 10));
        assert!(late.is_none(), "a terminal node ignores late events");
        let r = apply_node_event(None, &node(NodePhase::Queued, 5)).unwrap();
        let r = apply_node_event(Some(&r), &node(NodePhase::Running, 10)).unwrap();
        assert!(apply_node_event(Some(&r), &node(NodePhase::Running, 10)).is_none(), "duplicate");
        let r = apply_node_event(Some(&r), &node(NodePhase::Failed, 13)).unwrap();
        assert_eq!(r.closure.duration.unwrap().seconds, 3);
        assert_eq!(r.metadata.spec_node_id, "n0");
    }

    fn task(phase: TaskPhase, version: u32, at: i64) -> TaskExecutionEvent {
        TaskExecutionEvent { phase: phase as i32, phase_version: version, occurred_at: ts(at), ..Default::default() }
    }

    #[test]
    fn task_phase_versions_order_same_phase_events() {
        let r = apply_task_event(None, &task(TaskPhase::Running, 0, 1)).unwrap();
        let r2 = apply_task_event(Some(&r), &task(TaskPhase::Running, 1, 2)).unwrap();
        assert_eq!(r2.phase_version, 1);
        assert!(apply_task_event(Some(&r2), &task(TaskPhase::Running, 0, 1)).is_none());
        let r3 = apply_task_event(Some(&r2), &task(TaskPhase::RetryableFailed, 0, 5)).unwrap();
        assert!(task_terminal(r3.closure.phase));
        assert!(apply_task_event(Some(&r3), &task(TaskPhase::Succeeded, 0, 6)).is_none());
    }
}
