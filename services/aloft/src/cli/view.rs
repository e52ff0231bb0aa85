//! What the commands and the console show, decoded from admin API messages into plain data.
//!
//! Pure: no I/O. The same views feed the text renderer (`render`), `--output json` and the HTML
//! console, so all three agree on what a phase, a duration or a cache status is.

use std::collections::BTreeMap;

use aloft_proto::flyteidl::{admin, core};
use serde::Serialize;

use super::literal;

/// One project, with the ownership labels the notifier routes by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProjectView {
    /// The project id (what `-p` takes).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// The `team` label: who owns it.
    pub team: String,
    /// The `slack-channel` label: where the team hears about runs.
    pub slack_channel: String,
    /// Every label, ownership ones included.
    pub labels: BTreeMap<String, String>,
}

impl ProjectView {
    /// From the admin message.
    pub fn from_proto(p: &admin::Project) -> ProjectView {
        let labels: BTreeMap<String, String> =
            p.labels.as_ref().map(|l| l.values.clone().into_iter().collect()).unwrap_or_default();
        ProjectView {
            id: p.id.clone(),
            name: p.name.clone(),
            description: p.description.clone(),
            team: labels.get("team").cloned().unwrap_or_default(),
            slack_channel: labels.get("slack-channel").cloned().unwrap_or_default(),
            labels,
        }
    }
}

/// One execution, as a row of `executions list` and the head of `executions show`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExecutionView {
    /// Project.
    pub project: String,
    /// Domain.
    pub domain: String,
    /// Execution name.
    pub name: String,
    /// Launch plan name (a single-task run names the task).
    pub launch_plan: String,
    /// Launch plan version.
    pub version: String,
    /// Workflow phase, upper case as in flyteidl (`SUCCEEDED`).
    pub phase: String,
    /// Unix seconds the execution was created.
    pub created_at: Option<f64>,
    /// Unix seconds it started running.
    pub started_at: Option<f64>,
    /// Seconds it ran (final once terminal; up to the last update otherwise).
    pub duration_secs: Option<f64>,
    /// How it was started: manual, scheduled, relaunch, ...
    pub mode: String,
    /// The execution it re-runs (relaunch, recover), `project/domain/name`.
    pub reference: Option<String>,
    /// Why it failed or was aborted.
    pub error: Option<String>,
}

/// The phases after which nothing changes.
pub fn is_terminal(phase: &str) -> bool {
    matches!(phase, "SUCCEEDED" | "FAILED" | "TIMED_OUT" | "ABORTED" | "SKIPPED" | "RECOVERED")
}

fn seconds(t: Option<&prost_types::Timestamp>) -> Option<f64> {
    t.filter(|t| t.seconds > 0 || t.nanos > 0).map(|t| t.seconds as f64 + f64::from(t.nanos) / 1e9)
}

fn duration(d: Option<&prost_types::Duration>) -> Option<f64> {
    d.map(|d| d.seconds as f64 + f64::from(d.nanos) / 1e9)
}

/// The enum's flyteidl name, or the number when this build does not know it.
fn phase_name<E: TryFrom<i32>>(value: i32, name: impl Fn(E) -> &'static str) -> String {
    E::try_from(value).map(&name).map(str::to_string).unwrap_or_else(|_| value.to_string())
}

/// The workflow phase as flyteidl spells it.
pub fn workflow_phase(value: i32) -> String {
    phase_name::<core::workflow_execution::Phase>(value, |p| p.as_str_name())
}

/// The node phase as flyteidl spells it.
pub fn node_phase(value: i32) -> String {
    phase_name::<core::node_execution::Phase>(value, |p| p.as_str_name())
}

/// The task-attempt phase as flyteidl spells it.
pub fn task_phase(value: i32) -> String {
    phase_name::<core::task_execution::Phase>(value, |p| p.as_str_name())
}

/// An execution error in one line per line of its message, with its code in front.
pub fn error_text(e: &core::ExecutionError) -> String {
    let message = e.message.trim();
    if e.code.is_empty() { message.to_string() } else { format!("{}: {message}", e.code) }
}

impl ExecutionView {
    /// From the admin message.
    pub fn from_proto(e: &admin::Execution) -> ExecutionView {
        let id = e.id.clone().unwrap_or_default();
        let spec = e.spec.clone().unwrap_or_default();
        let closure = e.closure.clone().unwrap_or_default();
        let lp = spec.launch_plan.clone().unwrap_or_default();
        let metadata = spec.metadata.clone().unwrap_or_default();
        let mode = admin::execution_metadata::ExecutionMode::try_from(metadata.mode)
            .map(|m| m.as_str_name().to_ascii_lowercase())
            .unwrap_or_else(|_| metadata.mode.to_string());
        let error = match &closure.output_result {
            Some(admin::execution_closure::OutputResult::Error(err)) => Some(error_text(err)),
            Some(admin::execution_closure::OutputResult::AbortMetadata(a)) => Some(format!("aborted: {}", a.cause)),
            #[allow(deprecated)]
            Some(admin::execution_closure::OutputResult::AbortCause(c)) => Some(format!("aborted: {c}")),
            _ => None,
        };
        ExecutionView {
            project: id.project,
            domain: id.domain,
            name: id.name,
            launch_plan: lp.name,
            version: lp.version,
            phase: workflow_phase(closure.phase),
            created_at: seconds(closure.created_at.as_ref()),
            started_at: seconds(closure.started_at.as_ref()),
            duration_secs: duration(closure.duration.as_ref()),
            mode,
            reference: metadata.reference_execution.map(|r| format!("{}/{}/{}", r.project, r.domain, r.name)),
            error,
        }
    }

    /// `project/domain/name`.
    pub fn full_name(&self) -> String {
        format!("{}/{}/{}", self.project, self.domain, self.name)
    }
}

/// One attempt of a task node.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttemptView {
    /// 0 for the first.
    pub attempt: u32,
    /// Task phase (`SUCCEEDED`, `FAILED`, ...).
    pub phase: String,
    /// Seconds it ran.
    pub duration_secs: Option<f64>,
    /// The task that ran, `name@version` without the project.
    pub task: String,
    /// Where its log is (a blob URI), if the executor linked one.
    pub log_uri: Option<String>,
}

impl AttemptView {
    /// From the admin message.
    pub fn from_proto(t: &admin::TaskExecution) -> AttemptView {
        let id = t.id.clone().unwrap_or_default();
        let task = id.task_id.map(|t| t.name).unwrap_or_default();
        let closure = t.closure.clone().unwrap_or_default();
        AttemptView {
            attempt: id.retry_attempt,
            phase: task_phase(closure.phase),
            duration_secs: duration(closure.duration.as_ref()),
            task,
            log_uri: closure.logs.iter().find(|l| !l.uri.is_empty()).map(|l| l.uri.clone()),
        }
    }
}

/// One node of an execution and, for branches, sub-workflows and map tasks, its children.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeView {
    /// The node execution id (unique in the execution, e.g. `n1-0-n0` inside a branch).
    pub id: String,
    /// The node id in its workflow (`n0`).
    pub spec_id: String,
    /// The task it ran (from its last attempt), empty for other kinds of node.
    pub task: String,
    /// Node phase.
    pub phase: String,
    /// Unix seconds it started.
    pub started_at: Option<f64>,
    /// Seconds it ran.
    pub duration_secs: Option<f64>,
    /// Cache status in lower case (`hit`, `miss`, `populated`, `disabled`, ...), empty when not
    /// a task node.
    pub cache: String,
    /// The node failed with this.
    pub error: Option<String>,
    /// Task attempts, oldest first.
    pub attempts: Vec<AttemptView>,
    /// Nodes run inside this one.
    pub children: Vec<NodeView>,
}

impl NodeView {
    /// From the admin message; attempts and children are filled in by the caller.
    pub fn from_proto(n: &admin::NodeExecution) -> NodeView {
        let id = n.id.clone().unwrap_or_default();
        let closure = n.closure.clone().unwrap_or_default();
        let metadata = n.metadata.clone().unwrap_or_default();
        let cache = match &closure.target_metadata {
            Some(admin::node_execution_closure::TargetMetadata::TaskNodeMetadata(t)) => {
                core::CatalogCacheStatus::try_from(t.cache_status)
                    .map(|c| c.as_str_name().trim_start_matches("CACHE_").to_ascii_lowercase().replace('_', " "))
                    .unwrap_or_default()
            }
            _ => String::new(),
        };
        let error = match &closure.output_result {
            Some(admin::node_execution_closure::OutputResult::Error(e)) => Some(error_text(e)),
            _ => None,
        };
        NodeView {
            spec_id: if metadata.spec_node_id.is_empty() { id.node_id.clone() } else { metadata.spec_node_id },
            id: id.node_id,
            task: String::new(),
            phase: node_phase(closure.phase),
            started_at: seconds(closure.started_at.as_ref()),
            duration_secs: duration(closure.duration.as_ref()),
            cache,
            error,
            attempts: Vec::new(),
            children: Vec::new(),
        }
    }

    /// Start and end nodes are bookkeeping of the workflow graph, not work a person cares about.
    pub fn is_bookkeeping(&self) -> bool {
        matches!(self.id.as_str(), "start-node" | "end-node")
    }

    /// Every node of the tree, depth first.
    pub fn walk(&self) -> Vec<&NodeView> {
        let mut out = vec![self];
        for c in &self.children {
            out.extend(c.walk());
        }
        out
    }
}

/// An execution with its node tree: what `executions show` and the console page show.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExecutionDetail {
    /// The execution.
    pub execution: ExecutionView,
    /// Its top-level nodes in start order, each with its children.
    pub nodes: Vec<NodeView>,
}

impl ExecutionDetail {
    /// Counts of nodes per phase over the whole tree (bookkeeping and parent nodes excluded):
    /// the progress line of `executions watch`.
    pub fn progress(&self) -> (usize, usize) {
        let leaves: Vec<&NodeView> = self
            .nodes
            .iter()
            .flat_map(NodeView::walk)
            .filter(|n| !n.is_bookkeeping() && n.children.is_empty())
            .collect();
        (leaves.iter().filter(|n| is_terminal(&n.phase)).count(), leaves.len())
    }
}

/// Named values (inputs or outputs), rendered readably.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Value {
    /// The input or output name.
    pub name: String,
    /// The Flyte type, short (`int`, `str`, `FlyteFile`, ...).
    pub kind: String,
    /// The value as text.
    pub value: String,
}

/// The values of a literal map, sorted by name.
pub fn values(map: Option<&core::LiteralMap>) -> Vec<Value> {
    let Some(map) = map else { return Vec::new() };
    map.literals
        .iter()
        .map(|(name, l)| Value { name: name.clone(), kind: literal::kind(l), value: literal::render(l) })
        .collect()
}

/// One Slack notification and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeliveryView {
    /// The terminal phase it announces.
    pub phase: String,
    /// Routed destination (`channel:#ml-alerts`).
    pub destination: String,
    /// How it is sent (`webhook:#ml-alerts`).
    pub target: String,
    /// pending, delivered, failed, suppressed.
    pub state: String,
    /// Send attempts so far.
    pub attempts: u32,
    /// The last failure.
    pub last_error: String,
    /// The message text (Slack's fallback `text`), when the payload has one.
    pub text: String,
}

impl DeliveryView {
    /// From the notifier's message.
    pub fn from_proto(d: &aloft_proto::aloft::v1::NotificationDelivery) -> DeliveryView {
        let text = serde_json::from_str::<serde_json::Value>(&d.payload)
            .ok()
            .and_then(|v| v.get("text").and_then(|t| t.as_str()).map(str::to_string))
            .unwrap_or_default();
        DeliveryView {
            phase: d.phase.clone(),
            destination: d.destination.clone(),
            target: d.target.clone(),
            state: d.state.clone(),
            attempts: d.attempts,
            last_error: d.last_error.clone(),
            text,
        }
    }
}

/// A lineage graph as nodes and edges with readable kinds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LineageView {
    /// Nodes, the one asked about first.
    pub nodes: Vec<LineageNodeView>,
    /// Edges `from -kind-> to`.
    pub edges: Vec<LineageEdgeView>,
    /// The service cut the answer short.
    pub truncated: bool,
}

/// One lineage node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LineageNodeView {
    /// Stable key (`dataset:s3://...`).
    pub key: String,
    /// Kind in lower case (`dataset`, `run`, ...).
    pub kind: String,
    /// Short name.
    pub label: String,
}

/// One lineage edge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LineageEdgeView {
    /// From key.
    pub from: String,
    /// To key.
    pub to: String,
    /// Kind in lower case (`consumed`, `produced`, ...).
    pub kind: String,
}

fn strip_kind(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix).unwrap_or(name).to_ascii_lowercase().replace('_', " ")
}

impl LineageNodeView {
    /// From the lineage service's message.
    pub fn from_proto(n: &aloft_proto::aloft::v1::LineageNode) -> LineageNodeView {
        use aloft_proto::aloft::v1::LineageNodeKind;
        let kind = LineageNodeKind::try_from(n.kind)
            .map(|k| strip_kind(k.as_str_name(), "LINEAGE_NODE_KIND_"))
            .unwrap_or_else(|_| n.kind.to_string());
        LineageNodeView { key: n.key.clone(), kind, label: n.label.clone() }
    }
}

impl LineageView {
    /// From the lineage service's message.
    pub fn from_proto(g: &aloft_proto::aloft::v1::LineageGraph) -> LineageView {
        use aloft_proto::aloft::v1::LineageEdgeKind;
        LineageView {
            nodes: g.nodes.iter().map(LineageNodeView::from_proto).collect(),
            edges: g
                .edges
                .iter()
                .map(|e| LineageEdgeView {
                    from: e.from.clone(),
                    to: e.to.clone(),
                    kind: LineageEdgeKind::try_from(e.kind)
                        .map(|k| strip_kind(k.as_str_name(), "LINEAGE_EDGE_KIND_"))
                        .unwrap_or_else(|_| e.kind.to_string()),
                })
                .collect(),
            truncated: g.truncated,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn execution_view_reads_phase_mode_reference_and_error() {
        let e = admin::Execution {
            id: Some(core::WorkflowExecutionIdentifier {
                project: "ml".into(),
                domain: "development".into(),
                name: "r2".into(),
                org: String::new(),
            }),
            spec: Some(admin::ExecutionSpec {
                launch_plan: Some(core::Identifier {
                    name: "train.lp".into(),
                    version: "v1".into(),
                    ..Default::default()
                }),
                metadata: Some(admin::ExecutionMetadata {
                    mode: admin::execution_metadata::ExecutionMode::Relaunch as i32,
                    reference_execution: Some(core::WorkflowExecutionIdentifier {
                        project: "ml".into(),
                        domain: "development".into(),
                        name: "r1".into(),
                        org: String::new(),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            closure: Some(admin::ExecutionClosure {
                phase: core::workflow_execution::Phase::Failed as i32,
                duration: Some(prost_types::Duration { seconds: 3, nanos: 500_000_000 }),
                output_result: Some(admin::execution_closure::OutputResult::Error(core::ExecutionError {
                    code: "USER:ValueError".into(),
                    message: " bad input\n".into(),
                    ..Default::default()
                })),
                ..Default::default()
            }),
        };
        let v = ExecutionView::from_proto(&e);
        assert_eq!(v.full_name(), "ml/development/r2");
        assert_eq!(v.phase, "FAILED");
        assert_eq!(v.mode, "relaunch");
        assert_eq!(v.reference.as_deref(), Some("ml/development/r1"));
        assert_eq!(v.error.as_deref(), Some("USER:ValueError: bad input"));
        assert_eq!(v.duration_secs, Some(3.5));
        assert_eq!(v.started_at, None);
    }

    #[test]
    fn cache_status_is_short_and_lower_case() {
        let n = admin::NodeExecution {
            id: Some(core::NodeExecutionIdentifier { node_id: "n1-0-n0".into(), execution_id: None }),
            closure: Some(admin::NodeExecutionClosure {
                phase: core::node_execution::Phase::Succeeded as i32,
                target_metadata: Some(admin::node_execution_closure::TargetMetadata::TaskNodeMetadata(
                    admin::TaskNodeMetadata {
                        cache_status: core::CatalogCacheStatus::CacheHit as i32,
                        ..Default::default()
                    },
                )),
                ..Default::default()
            }),
            metadata: Some(admin::NodeExecutionMetaData { spec_node_id: "n0".into(), ..Default::default() }),
            ..Default::default()
        };
        let v = NodeView::from_proto(&n);
        assert_eq!((v.id.as_str(), v.spec_id.as_str(), v.cache.as_str()), ("n1-0-n0", "n0", "hit"));
        assert_eq!(v.phase, "SUCCEEDED");
    }

    #[test]
    fn unknown_enum_values_show_as_numbers() {
        assert_eq!(workflow_phase(99), "99");
        assert_eq!(node_phase(5), "FAILED");
        assert!(is_terminal("ABORTED") && !is_terminal("RUNNING"));
    }
}
