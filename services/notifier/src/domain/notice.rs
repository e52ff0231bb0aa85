//! The enriched event: everything a message about one finished execution says, assembled from
//! the workflow event and what metadata answers. It is also the JSON the Lambda hook receives, so
//! its field names are a contract (see the README).

use std::collections::BTreeMap;

use aloft_proto::flyteidl::admin::{self, Execution, LaunchPlan, NodeExecution, execution_metadata::ExecutionMode};
use aloft_proto::flyteidl::core::{
    self, ExecutionError, Identifier, LiteralMap, WorkflowExecutionIdentifier, node_execution, workflow_execution,
};
use serde::{Deserialize, Serialize};

use super::text::{first_lines, truncate};

/// The terminal workflow phases the notifier reacts to; every other phase is not its business.
pub fn terminal_phase(phase: i32) -> Option<&'static str> {
    use workflow_execution::Phase;
    match Phase::try_from(phase).ok()? {
        Phase::Succeeded => Some("SUCCEEDED"),
        Phase::Failed => Some("FAILED"),
        Phase::TimedOut => Some("TIMED_OUT"),
        Phase::Aborted => Some("ABORTED"),
        _ => None,
    }
}

/// Whether `phase` (a terminal phase name) is a failure in the "failures" policy's sense.
pub fn is_failure(phase: &str) -> bool {
    matches!(phase, "FAILED" | "TIMED_OUT")
}

/// A registered entity as shown: name and version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntityRef {
    /// Entity name (`pkg.module.workflow`).
    pub name: String,
    /// Registered version.
    pub version: String,
}

/// One input, rendered short.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputValue {
    /// Input name.
    pub name: String,
    /// Short rendering (`7`, `"world"`, `[3 items]`, a blob URI).
    pub value: String,
}

/// Why a failed execution failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The node that failed first, when known.
    pub node: Option<String>,
    /// The error code (`USER:ValueError`, `Timeout`, ...).
    pub code: String,
    /// `user` or `system`.
    pub kind: String,
    /// The first lines of the error message.
    pub excerpt: String,
}

/// Everything a notification says about one finished execution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    /// The bus envelope id of the terminal event.
    pub event_id: String,
    /// Project.
    pub project: String,
    /// Domain.
    pub domain: String,
    /// Execution name.
    pub execution: String,
    /// SUCCEEDED, FAILED, TIMED_OUT or ABORTED.
    pub phase: String,
    /// Console link to the execution.
    pub link: String,
    /// The workflow run, with its version.
    pub workflow: Option<EntityRef>,
    /// The launch plan it was started from, with its version.
    pub launch_plan: Option<EntityRef>,
    /// Start, RFC 3339.
    pub started_at: Option<String>,
    /// End (the terminal event), RFC 3339.
    pub finished_at: Option<String>,
    /// Whole seconds from start to end.
    pub duration_seconds: Option<u64>,
    /// manual, scheduled, relaunch, child, system, recovered, trigger.
    pub trigger: String,
    /// Who started it, when known.
    pub principal: String,
    /// The owning team (`team` project label, else the execution's `team` label).
    pub owner: Option<String>,
    /// Execution labels (the launch plan's when the execution set none).
    pub labels: BTreeMap<String, String>,
    /// Execution tags.
    pub tags: Vec<String>,
    /// The first inputs, rendered short.
    pub inputs: Vec<InputValue>,
    /// How many inputs there are in all.
    pub input_count: usize,
    /// For failures: the failing node and the start of its error.
    pub failure: Option<Failure>,
    /// Abort cause, for ABORTED.
    pub abort_cause: Option<String>,
}

/// What flytekit sends as the principal; FlyteAdmin replaces it with the authenticated user, and
/// without authentication it names nobody.
pub const UNSET_PRINCIPAL: &str = "placeholder";

/// How many inputs a notice lists, and how long each rendering may be.
pub const MAX_INPUTS: usize = 8;
const MAX_INPUT_CHARS: usize = 80;
/// How much of an error a notice carries.
pub const ERROR_LINES: usize = 12;
const ERROR_CHARS: usize = 1500;

/// What the notifier learned for one terminal event; the pure input of [`Notice::build`].
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// Envelope id of the event.
    pub event_id: String,
    /// The execution the event is about.
    pub execution_id: WorkflowExecutionIdentifier,
    /// The event's phase.
    pub phase: i32,
    /// The event's error, when it carried one.
    pub event_error: Option<ExecutionError>,
    /// When the event happened (unix seconds, nanos).
    pub occurred_at: Option<prost_types::Timestamp>,
    /// GetExecution.
    pub execution: Option<Execution>,
    /// GetLaunchPlan of the execution's launch plan.
    pub launch_plan: Option<LaunchPlan>,
    /// GetProject's labels.
    pub project_labels: BTreeMap<String, String>,
    /// ListNodeExecutions (top level), for the failing node.
    pub nodes: Vec<NodeExecution>,
    /// GetExecutionData's full inputs.
    pub inputs: Option<LiteralMap>,
}

impl Facts {
    /// The effective execution labels: the execution's own, else its launch plan's (as metadata
    /// resolves them when it starts the execution).
    pub fn labels(&self) -> BTreeMap<String, String> {
        let own = self.spec().and_then(|s| s.labels.as_ref()).map(|l| l.values.clone()).unwrap_or_default();
        if !own.is_empty() {
            return own;
        }
        self.launch_plan
            .as_ref()
            .and_then(|lp| lp.spec.as_ref())
            .and_then(|s| s.labels.as_ref())
            .map(|l| l.values.clone())
            .unwrap_or_default()
    }

    /// The execution spec, when metadata answered.
    pub fn spec(&self) -> Option<&admin::ExecutionSpec> {
        self.execution.as_ref().and_then(|e| e.spec.as_ref())
    }
}

impl Notice {
    /// Assembles the notice. `console_url` is the console's base URL (no trailing `/`).
    pub fn build(facts: &Facts, phase: &str, console_url: &str) -> Notice {
        let id = &facts.execution_id;
        let spec = facts.spec();
        let closure = facts.execution.as_ref().and_then(|e| e.closure.as_ref());
        let metadata = spec.and_then(|s| s.metadata.as_ref());
        let labels = facts.labels();
        let owner = facts.project_labels.get("team").or_else(|| labels.get("team")).filter(|t| !t.is_empty()).cloned();
        let workflow = closure.and_then(|c| c.workflow_id.as_ref()).map(entity);
        let launch_plan = spec.and_then(|s| s.launch_plan.as_ref()).map(entity);
        let started = closure.and_then(|c| c.started_at).or_else(|| closure.and_then(|c| c.created_at));
        let finished = facts.occurred_at.or_else(|| closure.and_then(|c| c.updated_at));
        let duration_seconds = closure
            .and_then(|c| c.duration)
            .filter(|_| closure.is_some_and(|c| terminal_phase(c.phase).is_some()))
            .map(|d| d.seconds.max(0) as u64)
            .or_else(|| match (started, finished) {
                (Some(s), Some(f)) if f.seconds >= s.seconds => Some((f.seconds - s.seconds) as u64),
                _ => None,
            });
        let (inputs, input_count) = match &facts.inputs {
            Some(map) => (
                map.literals
                    .iter()
                    .take(MAX_INPUTS)
                    .map(|(name, lit)| InputValue { name: name.clone(), value: render_literal(lit, MAX_INPUT_CHARS) })
                    .collect(),
                map.literals.len(),
            ),
            None => (Vec::new(), 0),
        };
        let failure = if is_failure(phase) { Some(failure(facts)) } else { None };
        #[allow(deprecated)] // AbortCause is the older form; both are still written by FlyteAdmin
        let abort_cause = match closure.and_then(|c| c.output_result.as_ref()) {
            Some(admin::execution_closure::OutputResult::AbortMetadata(m)) => Some(m.cause.clone()),
            Some(admin::execution_closure::OutputResult::AbortCause(c)) => Some(c.clone()),
            _ => None,
        }
        .filter(|_| phase == "ABORTED");
        Notice {
            event_id: facts.event_id.clone(),
            project: id.project.clone(),
            domain: id.domain.clone(),
            execution: id.name.clone(),
            phase: phase.to_string(),
            link: execution_link(console_url, id),
            workflow,
            launch_plan,
            started_at: started.and_then(rfc3339),
            finished_at: finished.and_then(rfc3339),
            duration_seconds,
            trigger: trigger(metadata.map(|m| m.mode).unwrap_or(0)).to_string(),
            principal: metadata.map(|m| m.principal.clone()).filter(|p| p != UNSET_PRINCIPAL).unwrap_or_default(),
            owner,
            labels,
            // deprecated in flyteidl for the artifact service's tags, yet still what `pyflyte run --tags` sets
            #[allow(deprecated)]
            tags: spec.map(|s| s.tags.clone()).unwrap_or_default(),
            inputs,
            input_count,
            failure,
            abort_cause,
        }
    }
}

fn entity(id: &Identifier) -> EntityRef {
    EntityRef { name: id.name.clone(), version: id.version.clone() }
}

/// `<console>/console/projects/<p>/domains/<d>/executions/<name>`, as Flyte's console links it.
pub fn execution_link(console_url: &str, id: &WorkflowExecutionIdentifier) -> String {
    format!(
        "{}/console/projects/{}/domains/{}/executions/{}",
        console_url.trim_end_matches('/'),
        id.project,
        id.domain,
        id.name
    )
}

/// The execution mode as a word people read.
pub fn trigger(mode: i32) -> &'static str {
    match ExecutionMode::try_from(mode) {
        Ok(ExecutionMode::Manual) | Err(_) => "manual",
        Ok(ExecutionMode::Scheduled) => "scheduled",
        Ok(ExecutionMode::System) => "system",
        Ok(ExecutionMode::Relaunch) => "relaunch",
        Ok(ExecutionMode::ChildWorkflow) => "child",
        Ok(ExecutionMode::Recovered) => "recovered",
        Ok(ExecutionMode::Trigger) => "trigger",
    }
}

fn rfc3339(t: prost_types::Timestamp) -> Option<String> {
    let at = chrono::DateTime::from_timestamp(t.seconds, 0)?;
    Some(at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

/// The failing node and its error: the earliest failed top-level node that metadata knows, with
/// its own error; else the execution's error, whose `[node]` prefix (the scheduler's convention)
/// names the node.
fn failure(facts: &Facts) -> Failure {
    use node_execution::Phase as NodePhase;
    let failed_node = facts
        .nodes
        .iter()
        .filter(|n| {
            let phase = n.closure.as_ref().map(|c| c.phase).unwrap_or(0);
            matches!(NodePhase::try_from(phase), Ok(NodePhase::Failed | NodePhase::TimedOut))
        })
        .filter_map(|n| {
            let id = n.id.as_ref()?.node_id.clone();
            if id == "start-node" || id == "end-node" {
                return None;
            }
            let closure = n.closure.as_ref()?;
            let error = match &closure.output_result {
                Some(admin::node_execution_closure::OutputResult::Error(e)) => Some(e.clone()),
                _ => None,
            };
            let at = closure.updated_at.map(|t| (t.seconds, t.nanos)).unwrap_or((i64::MAX, 0));
            Some((at, id, error))
        })
        .min_by(|a, b| a.0.cmp(&b.0));
    #[allow(deprecated)]
    let execution_error = facts
        .execution
        .as_ref()
        .and_then(|e| e.closure.as_ref())
        .and_then(|c| match &c.output_result {
            Some(admin::execution_closure::OutputResult::Error(e)) => Some(e.clone()),
            _ => None,
        })
        .or_else(|| facts.event_error.clone());
    let (node, error) = match failed_node {
        Some((_, node, Some(error))) => (Some(node), Some(error)),
        Some((_, node, None)) => (Some(node), execution_error),
        None => {
            let node = execution_error.as_ref().and_then(|e| bracketed_node(&e.message));
            (node, execution_error)
        }
    };
    let error = error.unwrap_or_default();
    let message = match &node {
        // "[n0] ..." repeats the node the message is shown under
        Some(n) => error.message.strip_prefix(&format!("[{n}] ")).unwrap_or(&error.message).to_string(),
        None => error.message.clone(),
    };
    Failure {
        node,
        code: error.code.clone(),
        kind: match core::execution_error::ErrorKind::try_from(error.kind) {
            Ok(core::execution_error::ErrorKind::User) => "user".into(),
            Ok(core::execution_error::ErrorKind::System) => "system".into(),
            _ => "unknown".into(),
        },
        excerpt: error_excerpt(&message),
    }
}

/// `n0` from `[n0] message`.
fn bracketed_node(message: &str) -> Option<String> {
    let rest = message.strip_prefix('[')?;
    let end = rest.find(']')?;
    let node = &rest[..end];
    (!node.is_empty() && !node.contains(char::is_whitespace)).then(|| node.to_string())
}

/// The part of an error people need first. flytekit's user errors read
/// `Trace:\n\n    Traceback ...\n\nMessage:\n\n    ValueError: ...`: the message comes first here,
/// then the start of the trace; anything else is its first lines.
pub fn error_excerpt(message: &str) -> String {
    let message = message.trim();
    let text = match (message.find("Trace:"), message.rfind("Message:")) {
        (Some(t), Some(m)) if t < m => {
            // only blank lines are trimmed: the indentation of the first line counts for dedent
            let body = message[m + "Message:".len()..].trim_matches(['\n', '\r']);
            let trace = message[t + "Trace:".len()..m].trim_matches(['\n', '\r']);
            format!("{}\n\n{}", dedent(body), dedent(trace))
        }
        _ => message.to_string(),
    };
    truncate(&first_lines(text.trim(), ERROR_LINES), ERROR_CHARS)
}

fn dedent(text: &str) -> String {
    let indent =
        text.lines().filter(|l| !l.trim().is_empty()).map(|l| l.len() - l.trim_start().len()).min().unwrap_or(0);
    let lines: Vec<&str> = text.lines().map(|l| l.get(indent..).unwrap_or(l.trim_start())).collect();
    lines.join("\n").trim_end().to_string()
}

/// A literal in at most `max` characters.
pub fn render_literal(literal: &core::Literal, max: usize) -> String {
    use core::literal::Value;
    let text = match &literal.value {
        Some(Value::Scalar(s)) => render_scalar(s),
        Some(Value::Collection(c)) => format!("[{} items]", c.literals.len()),
        Some(Value::Map(m)) => format!("{{{} entries}}", m.literals.len()),
        Some(Value::OffloadedMetadata(o)) => o.uri.clone(),
        None => "?".into(),
    };
    truncate(&text, max)
}

fn render_scalar(s: &core::Scalar) -> String {
    use core::primitive::Value as P;
    use core::scalar::Value;
    match &s.value {
        Some(Value::Primitive(p)) => match &p.value {
            Some(P::Integer(i)) => i.to_string(),
            Some(P::FloatValue(f)) => f.to_string(),
            Some(P::StringValue(s)) => format!("{s:?}"),
            Some(P::Boolean(b)) => b.to_string(),
            Some(P::Datetime(t)) => rfc3339(*t).unwrap_or_else(|| "?".into()),
            Some(P::Duration(d)) => format!("{}s", d.seconds),
            None => "?".into(),
        },
        Some(Value::Blob(b)) => b.uri.clone(),
        Some(Value::StructuredDataset(d)) => d.uri.clone(),
        Some(Value::Schema(s)) => s.uri.clone(),
        Some(Value::Binary(b)) => format!("<{} bytes>", b.value.len()),
        Some(Value::NoneType(_)) => "None".into(),
        Some(Value::Error(e)) => format!("error: {}", e.message),
        Some(Value::Generic(g)) => format!("{{{} fields}}", g.fields.len()),
        Some(Value::Union(u)) => u.value.as_ref().map(|l| render_literal(l, usize::MAX)).unwrap_or_else(|| "?".into()),
        None => "?".into(),
    }
}

/// A notice with every field set, for the tests of the modules that read notices.
#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    pub fn notice(phase: &str) -> Notice {
        Notice {
            event_id: "wf/ml/production/r42/FAILED".into(),
            project: "ml".into(),
            domain: "production".into(),
            execution: "r42".into(),
            phase: phase.into(),
            link: "https://aloft.example.com/console/projects/ml/domains/production/executions/r42".into(),
            workflow: Some(EntityRef { name: "churn.train".into(), version: "v3".into() }),
            launch_plan: Some(EntityRef { name: "churn.nightly".into(), version: "v3".into() }),
            started_at: Some("2023-11-14T22:13:20Z".into()),
            finished_at: Some("2023-11-14T22:25:23Z".into()),
            duration_seconds: Some(723),
            trigger: "scheduled".into(),
            principal: String::new(),
            owner: Some("ml-platform".into()),
            labels: [("env".to_string(), "prod".to_string())].into(),
            tags: vec!["nightly".into()],
            inputs: vec![InputValue { name: "x".into(), value: "7".into() }],
            input_count: 1,
            failure: (phase == "FAILED").then(|| Failure {
                node: Some("n0".into()),
                code: "USER:ValueError".into(),
                kind: "user".into(),
                excerpt: "ValueError: x < 0 & y > 1".into(),
            }),
            abort_cause: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aloft_proto::flyteidl::admin::{ExecutionClosure, ExecutionMetadata, ExecutionSpec, Labels, LaunchPlanSpec};
    use aloft_proto::flyteidl::core::{Literal, Primitive, Scalar, literal, primitive, scalar};

    fn int(i: i64) -> Literal {
        Literal {
            value: Some(literal::Value::Scalar(Box::new(Scalar {
                value: Some(scalar::Value::Primitive(Primitive { value: Some(primitive::Value::Integer(i)) })),
            }))),
            ..Default::default()
        }
    }

    fn exec_id() -> WorkflowExecutionIdentifier {
        WorkflowExecutionIdentifier {
            project: "ml".into(),
            domain: "production".into(),
            name: "r42".into(),
            org: String::new(),
        }
    }

    fn ts(seconds: i64) -> prost_types::Timestamp {
        prost_types::Timestamp { seconds, nanos: 0 }
    }

    fn node(id: &str, phase: node_execution::Phase, at: i64, message: &str) -> NodeExecution {
        NodeExecution {
            id: Some(core::NodeExecutionIdentifier { node_id: id.into(), execution_id: Some(exec_id()) }),
            closure: Some(admin::NodeExecutionClosure {
                phase: phase as i32,
                updated_at: Some(ts(at)),
                output_result: (!message.is_empty()).then(|| {
                    admin::node_execution_closure::OutputResult::Error(ExecutionError {
                        code: "USER:ValueError".into(),
                        message: message.into(),
                        kind: core::execution_error::ErrorKind::User as i32,
                        ..Default::default()
                    })
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[allow(deprecated)] // ExecutionSpec.tags
    fn facts() -> Facts {
        Facts {
            event_id: "wf/ml/production/r42/FAILED".into(),
            execution_id: exec_id(),
            phase: workflow_execution::Phase::Failed as i32,
            occurred_at: Some(ts(1_700_000_075)),
            execution: Some(Execution {
                id: Some(exec_id()),
                spec: Some(ExecutionSpec {
                    launch_plan: Some(Identifier {
                        name: "train.lp".into(),
                        version: "v3".into(),
                        ..Default::default()
                    }),
                    metadata: Some(ExecutionMetadata {
                        mode: ExecutionMode::Scheduled as i32,
                        principal: "scheduler".into(),
                        ..Default::default()
                    }),
                    tags: vec!["nightly".into()],
                    ..Default::default()
                }),
                closure: Some(ExecutionClosure {
                    phase: workflow_execution::Phase::Failed as i32,
                    workflow_id: Some(Identifier {
                        name: "train.wf".into(),
                        version: "v3".into(),
                        ..Default::default()
                    }),
                    started_at: Some(ts(1_700_000_000)),
                    duration: Some(prost_types::Duration { seconds: 75, nanos: 0 }),
                    ..Default::default()
                }),
            }),
            launch_plan: Some(LaunchPlan {
                spec: Some(LaunchPlanSpec {
                    labels: Some(Labels { values: [("env".to_string(), "prod".to_string())].into() }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            project_labels: [("team".to_string(), "ml-platform".to_string())].into(),
            nodes: vec![
                node("start-node", node_execution::Phase::Succeeded, 1, ""),
                node("n1", node_execution::Phase::Failed, 1_700_000_070, "[n1] later failure"),
                node("n0", node_execution::Phase::Failed, 1_700_000_050, "ValueError: bad x\nsecond line"),
            ],
            inputs: Some(LiteralMap { literals: [("x".to_string(), int(7))].into() }),
            event_error: None,
        }
    }

    #[test]
    fn builds_every_field_from_the_facts() {
        let n = Notice::build(&facts(), "FAILED", "https://aloft.example.com/");
        assert_eq!(n.link, "https://aloft.example.com/console/projects/ml/domains/production/executions/r42");
        assert_eq!(n.workflow, Some(EntityRef { name: "train.wf".into(), version: "v3".into() }));
        assert_eq!(n.launch_plan, Some(EntityRef { name: "train.lp".into(), version: "v3".into() }));
        assert_eq!(n.duration_seconds, Some(75));
        assert_eq!(n.started_at.as_deref(), Some("2023-11-14T22:13:20Z"));
        assert_eq!(n.trigger, "scheduled");
        assert_eq!(n.principal, "scheduler");
        assert_eq!(n.owner.as_deref(), Some("ml-platform"));
        assert_eq!(
            n.labels.get("env").map(String::as_str),
            Some("prod"),
            "launch plan labels when the execution has none"
        );
        assert_eq!(n.tags, vec!["nightly"]);
        assert_eq!(n.inputs, vec![InputValue { name: "x".into(), value: "7".into() }]);
        let f = n.failure.unwrap();
        assert_eq!(f.node.as_deref(), Some("n0"), "the earliest failed node");
        assert_eq!(f.excerpt, "ValueError: bad x\nsecond line");
        assert_eq!(f.kind, "user");
    }

    #[test]
    fn failing_node_falls_back_to_the_bracketed_prefix_of_the_execution_error() {
        let mut f = facts();
        f.nodes.clear();
        f.execution = None;
        f.event_error = Some(ExecutionError {
            code: "Timeout".into(),
            message: "[train] took too long".into(),
            ..Default::default()
        });
        let n = Notice::build(&f, "TIMED_OUT", "http://c");
        let failure = n.failure.unwrap();
        assert_eq!(failure.node.as_deref(), Some("train"));
        assert_eq!(failure.excerpt, "took too long");
        assert_eq!(n.duration_seconds, None, "no start known without metadata");
        assert_eq!(n.trigger, "manual");
    }

    #[test]
    fn flytekits_placeholder_principal_names_nobody() {
        let mut f = facts();
        f.execution.as_mut().unwrap().spec.as_mut().unwrap().metadata.as_mut().unwrap().principal =
            "placeholder".into();
        assert_eq!(Notice::build(&f, "FAILED", "http://c").principal, "");
    }

    #[test]
    fn success_has_no_failure() {
        assert!(Notice::build(&facts(), "SUCCEEDED", "http://c").failure.is_none());
    }

    #[test]
    fn excerpt_puts_flytekit_message_before_the_trace() {
        let message = "Trace:\n\n    Traceback (most recent call last):\n      File \"x.py\", line 3\n\nMessage:\n\n    ValueError: refusing x=7";
        assert_eq!(
            error_excerpt(message),
            "ValueError: refusing x=7\n\nTraceback (most recent call last):\n  File \"x.py\", line 3"
        );
        let long: String = (0..40).map(|i| format!("line {i}\n")).collect();
        assert_eq!(error_excerpt(&long).lines().count(), ERROR_LINES + 1, "12 lines and an ellipsis line");
    }

    #[test]
    fn terminal_phases_only() {
        assert_eq!(terminal_phase(workflow_execution::Phase::Succeeded as i32), Some("SUCCEEDED"));
        assert_eq!(terminal_phase(workflow_execution::Phase::Running as i32), None);
        assert_eq!(terminal_phase(workflow_execution::Phase::Failing as i32), None);
        assert_eq!(terminal_phase(99), None);
    }

    #[test]
    fn literals_render_short() {
        assert_eq!(render_literal(&int(3), 10), "3");
        let s = Literal {
            value: Some(literal::Value::Scalar(Box::new(Scalar {
                value: Some(scalar::Value::Primitive(Primitive {
                    value: Some(primitive::Value::StringValue("a".repeat(100))),
                })),
            }))),
            ..Default::default()
        };
        assert_eq!(render_literal(&s, 10).chars().count(), 10);
        let c = Literal {
            value: Some(literal::Value::Collection(core::LiteralCollection { literals: vec![int(1), int(2)] })),
            ..Default::default()
        };
        assert_eq!(render_literal(&c, 80), "[2 items]");
    }
}
