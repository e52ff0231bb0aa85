//! The shape of the workflows the state machine walks, read once from compiled closures.
//!
//! A [`Catalog`] holds every workflow template an execution can instantiate: the primary
//! workflow, its sub-workflows, and the workflows dynamic tasks produce while it runs. Templates
//! are named by a key so the machine's state (which must be serializable) can refer to them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use aloft_proto::flyteidl::core::{
    self, CompiledWorkflowClosure, Identifier, TaskTemplate, array_node, node::Target, task_node, workflow_node,
};

/// The key of the primary workflow of an execution.
pub const ROOT: &str = "";

/// A stable key for an entity: `project/domain/name/version`.
pub fn entity_key(id: &Identifier) -> String {
    format!("{}/{}/{}/{}", id.project, id.domain, id.name, id.version)
}

/// One node of a workflow template.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanNode {
    /// Node id within its template.
    pub id: String,
    /// Nodes of the same template that must succeed first (never `start-node`).
    pub upstream: BTreeSet<String>,
    /// How its inputs are built from upstream outputs and the template's inputs.
    pub inputs: Vec<core::Binding>,
    /// What it does.
    pub kind: Kind,
    /// Extra attempts allowed for recoverable user errors (task nodes).
    pub retries: u32,
    /// Kill an attempt after this long (task nodes).
    pub timeout: Option<prost_types::Duration>,
    /// A task node whose task caches its outputs (`cache=True`).
    pub cached: bool,
}

/// The node kinds the scheduler runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// Run a task (one attempt at a time). Its outputs may turn out to be a dynamic workflow.
    Task {
        /// The task.
        task: Identifier,
    },
    /// Run the first child whose condition holds.
    Branch(Branch),
    /// Run a workflow template inline; its nodes are children of this node.
    Workflow {
        /// Catalog key of the template.
        template: String,
    },
    /// Run a task once per element of the list inputs.
    Array(ArraySpec),
    /// Wait for a person's approval, a value, or some time.
    Gate(Gate),
    /// Start a child execution of a launch plan and wait for it.
    LaunchPlan {
        /// The launch plan.
        id: Identifier,
    },
}

/// What a gate node waits for.
#[derive(Debug, Clone, PartialEq)]
pub enum Gate {
    /// A yes/no signal (`approve`); yes passes the node's input through, no fails it.
    Approve {
        /// Signal id.
        signal_id: String,
    },
    /// A typed value (`wait_for_input`), which becomes the node's output.
    Signal {
        /// Signal id.
        signal_id: String,
        /// Its type.
        r#type: Box<core::LiteralType>,
        /// The output variable it is given as.
        output: String,
    },
    /// Some time (`sleep`).
    Sleep {
        /// How long.
        duration: prost_types::Duration,
    },
}

/// What a map task (array node) runs and how many sub-tasks must succeed.
#[derive(Debug, Clone, PartialEq)]
pub struct ArraySpec {
    /// Id of the inner node (the `spec_node_id` of the sub-task node executions).
    pub sub_node: String,
    /// The task run for every index (with the list interface).
    pub task: Identifier,
    /// At most this many sub-tasks at once; `None` = no limit of its own.
    pub parallelism: Option<u32>,
    /// Inputs passed whole to every sub-task (`functools.partial`), not mapped over.
    pub bound_inputs: Vec<String>,
    /// How many must succeed.
    pub success: Success,
}

/// An array node's success criterion.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Success {
    /// All sub-tasks.
    All,
    /// At least this many.
    Count(u32),
    /// At least this share (0.0..=1.0), rounded up.
    Ratio(f32),
}

impl Success {
    /// How many of `n` sub-tasks must succeed.
    pub fn required(self, n: u32) -> u32 {
        match self {
            Success::All => n,
            Success::Count(c) => c.min(n),
            Success::Ratio(r) => ((r.clamp(0.0, 1.0) as f64) * n as f64).ceil() as u32,
        }
    }
}

/// What a branch node does: the first case whose condition holds runs its child.
#[derive(Debug, Clone, PartialEq)]
pub struct Branch {
    /// Conditions and children, in order (`if`, then every `elif`).
    pub cases: Vec<(core::BooleanExpression, PlanNode)>,
    /// `else`: a child, an error message, or nothing (no case held: the branch fails).
    pub otherwise: Otherwise,
}

/// The `else` of a branch.
#[derive(Debug, Clone, PartialEq)]
pub enum Otherwise {
    /// Run this child.
    Child(Box<PlanNode>),
    /// Fail with this message (`conditional(...).else_().fail("...")`).
    Fail(String),
    /// No `else`.
    Nothing,
}

impl Branch {
    /// Every child, for SKIPPED events and lookups.
    pub fn children(&self) -> impl Iterator<Item = &PlanNode> {
        self.cases.iter().map(|(_, c)| c).chain(match &self.otherwise {
            Otherwise::Child(c) => Some(&**c),
            _ => None,
        })
    }
}

/// A workflow template reduced to what scheduling needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    /// Top-level nodes by id (ordered, so scheduling is deterministic); branch children are
    /// inside their branch node.
    pub nodes: BTreeMap<String, PlanNode>,
    /// The workflow's outputs, bound to its nodes' outputs.
    pub outputs: Vec<core::Binding>,
    /// Keep going after a failure until nothing else can run.
    pub fail_after_executable_nodes_complete: bool,
    /// Runs when the workflow fails, before it reports the failure (`@workflow(on_failure=...)`).
    pub failure_node: Option<PlanNode>,
}

impl Template {
    /// A node by id, top-level or a (nested) branch child.
    pub fn find(&self, id: &str) -> Option<&PlanNode> {
        fn walk<'a>(n: &'a PlanNode, id: &str) -> Option<&'a PlanNode> {
            if n.id == id {
                return Some(n);
            }
            match &n.kind {
                Kind::Branch(b) => b.children().find_map(|c| walk(c, id)),
                _ => None,
            }
        }
        self.nodes
            .get(id)
            .or_else(|| self.nodes.values().find_map(|n| walk(n, id)))
            .or_else(|| self.failure_node.as_ref().filter(|f| f.id == id))
    }
}

/// Every template and task an execution can use, by key.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// Templates by key ([`ROOT`] for the primary workflow).
    pub templates: HashMap<String, Arc<Template>>,
    /// Task templates by [`entity_key`].
    pub tasks: HashMap<String, Arc<TaskTemplate>>,
}

impl Catalog {
    /// The template with this key.
    pub fn template(&self, key: &str) -> Option<&Template> {
        self.templates.get(key).map(|t| &**t)
    }

    /// The task template with this id.
    pub fn task(&self, id: &Identifier) -> Option<&TaskTemplate> {
        self.tasks.get(&entity_key(id)).map(|t| &**t)
    }

    /// Adds everything of `other` (a dynamic workflow's catalog) to this one.
    pub fn extend(&mut self, other: &Catalog) {
        self.templates.extend(other.templates.iter().map(|(k, v)| (k.clone(), v.clone())));
        self.tasks.extend(other.tasks.iter().map(|(k, v)| (k.clone(), v.clone())));
    }

    /// Reads a compiled closure: its primary workflow under `root_key`, its sub-workflows under
    /// `<root_key>/<entity key>` (so two dynamic workflows cannot collide), and its tasks.
    pub fn from_closure(closure: &CompiledWorkflowClosure, root_key: &str) -> Result<Catalog, String> {
        let tasks: HashMap<String, Arc<TaskTemplate>> = closure
            .tasks
            .iter()
            .filter_map(|t| t.template.as_ref())
            .filter_map(|t| Some((entity_key(t.id.as_ref()?), Arc::new(t.clone()))))
            .collect();
        let sub_key = |id: &Identifier| format!("{root_key}/{}", entity_key(id));
        let subs: BTreeSet<String> =
            closure.sub_workflows.iter().filter_map(|w| w.template.as_ref()?.id.as_ref()).map(&sub_key).collect();
        let ctx = Ctx { tasks: &tasks, subs: &subs, sub_key: &sub_key };
        let mut templates = HashMap::new();
        let primary =
            closure.primary.as_ref().and_then(|p| p.template.as_ref()).ok_or("the closure has no primary workflow")?;
        templates.insert(root_key.to_string(), Arc::new(ctx.template(primary)?));
        for sub in closure.sub_workflows.iter().filter_map(|w| w.template.as_ref()) {
            let id = sub.id.as_ref().ok_or("a sub-workflow has no id")?;
            let t = ctx.template(sub).map_err(|e| format!("sub-workflow {}: {e}", id.name))?;
            templates.insert(sub_key(id), Arc::new(t));
        }
        Ok(Catalog { templates, tasks })
    }
}

/// What reading a template needs: task defaults and the known sub-workflows.
struct Ctx<'a> {
    tasks: &'a HashMap<String, Arc<TaskTemplate>>,
    subs: &'a BTreeSet<String>,
    sub_key: &'a dyn Fn(&Identifier) -> String,
}

fn gate(n: &core::Node, g: &core::GateNode) -> Result<Gate, String> {
    use core::gate_node::Condition;
    match &g.condition {
        Some(Condition::Approve(a)) => Ok(Gate::Approve { signal_id: a.signal_id.clone() }),
        Some(Condition::Signal(s)) => Ok(Gate::Signal {
            signal_id: s.signal_id.clone(),
            r#type: Box::new(s.r#type.clone().unwrap_or_default()),
            output: if s.output_variable_name.is_empty() { "o0".into() } else { s.output_variable_name.clone() },
        }),
        Some(Condition::Sleep(s)) => {
            Ok(Gate::Sleep { duration: s.duration.ok_or_else(|| format!("sleep gate `{}` has no duration", n.id))? })
        }
        None => Err(format!("gate node `{}` has no condition", n.id)),
    }
}

impl Ctx<'_> {
    fn template(&self, wf: &core::WorkflowTemplate) -> Result<Template, String> {
        let mut nodes = BTreeMap::new();
        for n in &wf.nodes {
            if n.id == "start-node" || n.id == "end-node" {
                continue;
            }
            let mut node = self.node(n)?;
            node.upstream = n.upstream_node_ids.iter().filter(|u| *u != "start-node").cloned().collect();
            nodes.insert(n.id.clone(), node);
        }
        for n in nodes.values() {
            if let Some(missing) = n.upstream.iter().find(|u| !nodes.contains_key(*u)) {
                return Err(format!("node `{}` depends on unknown node `{missing}`", n.id));
            }
        }
        let policy = wf.metadata.as_ref().map(|m| m.on_failure).unwrap_or(0);
        let failure_node = wf.failure_node.as_ref().map(|n| self.node(n)).transpose()?;
        Ok(Template {
            failure_node,
            nodes,
            outputs: wf.outputs.clone(),
            fail_after_executable_nodes_complete: policy
                == core::workflow_metadata::OnFailurePolicy::FailAfterExecutableNodesComplete as i32,
        })
    }

    fn task_meta(&self, id: &Identifier) -> Option<&core::TaskMetadata> {
        self.tasks.get(&entity_key(id)).and_then(|t| t.metadata.as_ref())
    }

    /// Retries and timeout: node metadata over task metadata.
    fn limits(&self, n: &core::Node, task: Option<&Identifier>) -> (u32, Option<prost_types::Duration>) {
        let meta = n.metadata.as_ref();
        let task_meta = task.and_then(|t| self.task_meta(t));
        let retries = meta
            .and_then(|m| m.retries.as_ref())
            .map(|r| r.retries)
            .filter(|r| *r > 0)
            .or_else(|| task_meta.and_then(|m| m.retries.as_ref()).map(|r| r.retries))
            .unwrap_or(0);
        let positive = |d: &prost_types::Duration| d.seconds > 0 || d.nanos > 0;
        let timeout = meta
            .and_then(|m| m.timeout)
            .filter(positive)
            .or_else(|| task_meta.and_then(|m| m.timeout).filter(positive));
        (retries, timeout)
    }

    fn node(&self, n: &core::Node) -> Result<PlanNode, String> {
        let (kind, task) = match &n.target {
            Some(Target::TaskNode(t)) => {
                let Some(task_node::Reference::ReferenceId(task)) = &t.reference else {
                    return Err(format!("node `{}` has no task reference", n.id));
                };
                (Kind::Task { task: task.clone() }, Some(task.clone()))
            }
            Some(Target::BranchNode(b)) => (Kind::Branch(self.branch(n, b)?), None),
            Some(Target::WorkflowNode(w)) => match &w.reference {
                Some(workflow_node::Reference::SubWorkflowRef(id)) => {
                    let key = (self.sub_key)(id);
                    if !self.subs.contains(&key) {
                        return Err(format!("node `{}`: sub-workflow {} is not in the closure", n.id, id.name));
                    }
                    (Kind::Workflow { template: key }, None)
                }
                Some(workflow_node::Reference::LaunchplanRef(id)) => (Kind::LaunchPlan { id: id.clone() }, None),
                None => return Err(format!("workflow node `{}` has no reference", n.id)),
            },
            Some(Target::ArrayNode(a)) => {
                let spec = self.array(n, a)?;
                let task = spec.task.clone();
                (Kind::Array(spec), Some(task))
            }
            Some(Target::GateNode(g)) => (Kind::Gate(gate(n, g)?), None),
            None => return Err(format!("node `{}` has no target", n.id)),
        };
        let (retries, timeout) = match (&kind, &n.target) {
            // a map task's retries and timeout are its sub-node's, per index
            (Kind::Array(_), Some(Target::ArrayNode(a))) => match a.node.as_deref() {
                Some(sub) => self.limits(sub, task.as_ref()),
                None => (0, None),
            },
            _ => self.limits(n, task.as_ref()),
        };
        let cached = matches!(kind, Kind::Task { .. })
            && task.as_ref().and_then(|t| self.task_meta(t)).is_some_and(|m| m.discoverable);
        Ok(PlanNode {
            id: n.id.clone(),
            upstream: BTreeSet::new(),
            inputs: n.inputs.clone(),
            kind,
            retries,
            timeout,
            cached,
        })
    }

    fn array(&self, n: &core::Node, a: &core::ArrayNode) -> Result<ArraySpec, String> {
        let sub = a.node.as_deref().ok_or_else(|| format!("array node `{}` has no sub-node", n.id))?;
        let Some(Target::TaskNode(t)) = &sub.target else {
            return Err(format!(
                "array node `{}`: only task sub-nodes are supported (map tasks); `{}` is another kind",
                n.id, sub.id
            ));
        };
        let Some(task_node::Reference::ReferenceId(task)) = &t.reference else {
            return Err(format!("array node `{}`: sub-node `{}` has no task reference", n.id, sub.id));
        };
        let parallelism = match a.parallelism_option {
            Some(array_node::ParallelismOption::Parallelism(p)) if p > 0 => Some(p),
            _ => None,
        };
        let success = match a.success_criteria {
            Some(array_node::SuccessCriteria::MinSuccesses(c)) => Success::Count(c),
            Some(array_node::SuccessCriteria::MinSuccessRatio(r)) => {
                if !(0.0..=1.0).contains(&r) {
                    return Err(format!("array node `{}`: min_success_ratio {r} is not between 0 and 1", n.id));
                }
                Success::Ratio(r)
            }
            None => Success::All,
        };
        Ok(ArraySpec {
            sub_node: sub.id.clone(),
            task: task.clone(),
            parallelism,
            bound_inputs: a.bound_inputs.clone(),
            success,
        })
    }

    fn branch(&self, n: &core::Node, b: &core::BranchNode) -> Result<Branch, String> {
        let ie = b.if_else.as_ref().ok_or_else(|| format!("branch node `{}` has no cases", n.id))?;
        let mut cases = Vec::new();
        for block in ie.case.iter().map(|b| &**b).chain(ie.other.iter()) {
            let condition =
                block.condition.clone().ok_or_else(|| format!("branch node `{}`: a case has no condition", n.id))?;
            let then =
                block.then_node.as_deref().ok_or_else(|| format!("branch node `{}`: a case has no node", n.id))?;
            cases.push((condition, self.node(then)?));
        }
        let otherwise = match &ie.default {
            Some(core::if_else_block::Default::ElseNode(e)) => Otherwise::Child(Box::new(self.node(e)?)),
            Some(core::if_else_block::Default::Error(e)) => Otherwise::Fail(e.message.clone()),
            None => Otherwise::Nothing,
        };
        Ok(Branch { cases, otherwise })
    }
}
