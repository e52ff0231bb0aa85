//! The compiler proper: a [`Session`] per closure (task, launch-plan and sub-workflow bookkeeping)
//! and a [`WorkflowCompiler`] per workflow template (node interfaces, bindings, edges, cycles).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use aloft_proto::flyteidl::core::{
    self, Binding, BindingData, BooleanExpression, CompiledLaunchPlan, CompiledTask, CompiledWorkflow,
    CompiledWorkflowClosure, ConnectionSet, Identifier, IfElseBlock, LaunchPlanTemplate, LiteralType, Node, SimpleType,
    TaskTemplate, TypedInterface, WorkflowTemplate, binding_data, boolean_expression, connection_set, gate_node,
    if_else_block, literal_type::Type, node::Target, operand, primitive, scalar, task_node, workflow_node,
};

use crate::error::{CompileError, Site, promise_source};
use crate::types::{describe_type, is_well_formed, scalar_is_checked, scalar_type, types_castable};
use crate::{END_NODE_ID, Resolver, START_NODE_ID};

type Result<T> = std::result::Result<T, CompileError>;

/// Output variables of a node. `None` types are unknown (attribute access, pass-through gates whose
/// producer could not be typed) and are never type-checked.
type Vars = BTreeMap<String, Option<LiteralType>>;

/// `project/domain/name@version`, shortened when parts are empty (synthetic dynamic workflow ids).
pub(crate) fn display_id(id: &Identifier) -> String {
    let mut out = String::new();
    if !id.project.is_empty() || !id.domain.is_empty() {
        out.push_str(&format!("{}/{}/", id.project, id.domain));
    }
    out.push_str(&id.name);
    if !id.version.is_empty() {
        out.push('@');
        out.push_str(&id.version);
    }
    out
}

/// Compiles `template` and every sub-workflow into a closure.
pub(crate) fn compile(
    template: &WorkflowTemplate,
    sub_workflows: &[WorkflowTemplate],
    shipped_tasks: &[TaskTemplate],
    resolver: &dyn Resolver,
) -> Result<CompiledWorkflowClosure> {
    let mut session = Session::new(resolver, shipped_tasks, sub_workflows)?;
    let primary = WorkflowCompiler::new(&mut session).compile(template)?;
    // Sub-workflows nobody references are compiled too: the closure carries all of them.
    for idx in 0..session.subs.len() {
        if !session.compiled_subs.contains_key(&idx) {
            session.compile_sub_at(idx)?;
        }
    }
    let mut compiled_subs = std::mem::take(&mut session.compiled_subs);
    let sub_workflows = (0..session.subs.len()).filter_map(|idx| compiled_subs.remove(&idx)).collect();
    Ok(CompiledWorkflowClosure {
        primary: Some(primary),
        sub_workflows,
        tasks: session.tasks,
        launch_plans: session.launch_plans,
    })
}

/// Per-closure state shared by the primary workflow and its sub-workflows.
struct Session<'a> {
    resolver: &'a dyn Resolver,
    shipped_tasks: &'a [TaskTemplate],
    /// Distinct sub-workflow templates, in spec order.
    subs: Vec<&'a WorkflowTemplate>,
    sub_index: HashMap<Identifier, usize>,
    compiled_subs: HashMap<usize, CompiledWorkflow>,
    in_progress: Vec<usize>,
    /// Referenced tasks in first-reference order, ids exactly as referenced.
    tasks: Vec<CompiledTask>,
    task_index: HashMap<Identifier, usize>,
    launch_plans: Vec<CompiledLaunchPlan>,
    launch_plan_index: HashMap<Identifier, usize>,
}

impl<'a> Session<'a> {
    fn new(
        resolver: &'a dyn Resolver,
        shipped_tasks: &'a [TaskTemplate],
        sub_workflows: &'a [WorkflowTemplate],
    ) -> Result<Self> {
        let mut subs = Vec::new();
        let mut sub_index = HashMap::new();
        for (position, sub) in sub_workflows.iter().enumerate() {
            let Some(id) = &sub.id else {
                return Err(CompileError::MissingField {
                    workflow: format!("<sub-workflow #{}>", position + 1),
                    location: "sub-workflow template".to_owned(),
                    field: "id",
                });
            };
            match sub_index.get(id) {
                Some(&existing) => {
                    if subs[existing] != sub {
                        return Err(CompileError::DuplicateSubWorkflow { sub_workflow: display_id(id) });
                    }
                }
                None => {
                    sub_index.insert(id.clone(), subs.len());
                    subs.push(sub);
                }
            }
        }
        Ok(Session {
            resolver,
            shipped_tasks,
            subs,
            sub_index,
            compiled_subs: HashMap::new(),
            in_progress: Vec::new(),
            tasks: Vec::new(),
            task_index: HashMap::new(),
            launch_plans: Vec::new(),
            launch_plan_index: HashMap::new(),
        })
    }

    /// The task's interface, recording the task in the closure on first use.
    fn task_interface(&mut self, id: &Identifier) -> Option<TypedInterface> {
        if let Some(&i) = self.task_index.get(id) {
            return Some(self.tasks[i].template.as_ref()?.interface.clone().unwrap_or_default());
        }
        let mut template = self
            .shipped_tasks
            .iter()
            .find(|t| t.id.as_ref() == Some(id))
            .cloned()
            .or_else(|| self.resolver.task(id))?;
        // flytekit looks tasks up by the id the node references, so the closure must carry exactly it.
        template.id = Some(id.clone());
        let interface = template.interface.clone().unwrap_or_default();
        self.task_index.insert(id.clone(), self.tasks.len());
        self.tasks.push(CompiledTask { template: Some(template) });
        Some(interface)
    }

    fn launch_plan_interface(&mut self, id: &Identifier) -> Option<TypedInterface> {
        if let Some(&i) = self.launch_plan_index.get(id) {
            return Some(self.launch_plans[i].template.as_ref()?.interface.clone().unwrap_or_default());
        }
        let interface = self.resolver.launch_plan_interface(id)?;
        self.launch_plan_index.insert(id.clone(), self.launch_plans.len());
        self.launch_plans.push(CompiledLaunchPlan {
            template: Some(LaunchPlanTemplate {
                id: Some(id.clone()),
                interface: Some(interface.clone()),
                fixed_inputs: None,
            }),
        });
        Some(interface)
    }

    /// Compiles a referenced sub-workflow once; a sub-workflow reached again while it is being
    /// compiled contains itself.
    fn compile_sub(&mut self, id: &Identifier, workflow: &str, node: &str) -> Result<()> {
        let Some(&idx) = self.sub_index.get(id) else {
            return Err(CompileError::UnknownSubWorkflow {
                workflow: workflow.to_owned(),
                node: node.to_owned(),
                sub_workflow: display_id(id),
            });
        };
        if self.compiled_subs.contains_key(&idx) {
            return Ok(());
        }
        if self.in_progress.contains(&idx) {
            return Err(CompileError::RecursiveSubWorkflow {
                workflow: workflow.to_owned(),
                node: node.to_owned(),
                sub_workflow: display_id(id),
            });
        }
        self.compile_sub_at(idx)
    }

    fn compile_sub_at(&mut self, idx: usize) -> Result<()> {
        self.in_progress.push(idx);
        let template = self.subs[idx];
        let compiled = WorkflowCompiler::new(self).compile(template);
        self.in_progress.pop();
        self.compiled_subs.insert(idx, compiled?);
        Ok(())
    }
}

/// What a node accepts as inputs.
#[derive(Clone)]
enum Inputs {
    /// Bindings must target declared variables and fit their types; with `require_all`, every
    /// non-optional variable must be bound.
    Typed { vars: Vars, require_all: bool },
    /// Any variable may be bound and types are not checked (branch nodes, approve gates, array
    /// sub-nodes): the interface is whatever the bindings provide.
    Open,
}

#[derive(Clone)]
struct NodeIface {
    inputs: Inputs,
    outputs: Vars,
}

fn vars_of(map: Option<&core::VariableMap>) -> Vars {
    map.map(|m| m.variables.iter().map(|(name, var)| (name.clone(), var.r#type.clone())).collect()).unwrap_or_default()
}

fn typed(interface: &TypedInterface, require_all: bool) -> NodeIface {
    NodeIface {
        inputs: Inputs::Typed { vars: vars_of(interface.inputs.as_ref()), require_all },
        outputs: vars_of(interface.outputs.as_ref()),
    }
}

fn is_approve_gate(node: &Node) -> bool {
    match &node.target {
        Some(Target::GateNode(gate)) => {
            matches!(gate.condition, Some(gate_node::Condition::Approve(_)))
        }
        _ => false,
    }
}

fn list_of(t: Option<LiteralType>) -> Option<LiteralType> {
    t.map(|t| LiteralType { r#type: Some(Type::CollectionType(Box::new(t))), ..Default::default() })
}

fn is_optional(t: Option<&LiteralType>) -> bool {
    match t.and_then(|t| t.r#type.as_ref()) {
        Some(Type::UnionType(u)) => {
            u.variants.iter().any(|v| matches!(v.r#type, Some(Type::Simple(s)) if s == SimpleType::None as i32))
        }
        _ => false,
    }
}

/// The then/else nodes of a branch, with the label errors use for them.
fn branch_children(if_else: &IfElseBlock) -> Vec<(String, Option<&Node>)> {
    let mut children = vec![("case 1".to_owned(), if_else.case.as_ref().and_then(|c| c.then_node.as_deref()))];
    for (i, other) in if_else.other.iter().enumerate() {
        children.push((format!("case {}", i + 2), other.then_node.as_deref()));
    }
    if let Some(if_else_block::Default::ElseNode(node)) = &if_else.default {
        children.push(("else".to_owned(), Some(node.as_ref())));
    }
    children
}

fn branch_children_mut(if_else: &mut IfElseBlock) -> Vec<&mut Node> {
    let mut children = Vec::new();
    if let Some(node) = if_else.case.as_mut().and_then(|c| c.then_node.as_deref_mut()) {
        children.push(node);
    }
    for other in &mut if_else.other {
        if let Some(node) = other.then_node.as_deref_mut() {
            children.push(node);
        }
    }
    if let Some(if_else_block::Default::ElseNode(node)) = &mut if_else.default {
        children.push(node.as_mut());
    }
    children
}

/// Compiles one workflow template against the session.
struct WorkflowCompiler<'s, 'a> {
    session: &'s mut Session<'a>,
    name: String,
    /// Outputs of every node a promise may name: `start-node` (the workflow inputs) and the
    /// top-level nodes. Branch children and array sub-nodes are not addressable, as in Flyte.
    producers: HashMap<String, Vars>,
    upstream: BTreeMap<String, BTreeSet<String>>,
    downstream: BTreeMap<String, BTreeSet<String>>,
}

impl<'s, 'a> WorkflowCompiler<'s, 'a> {
    fn new(session: &'s mut Session<'a>) -> Self {
        WorkflowCompiler {
            session,
            name: String::new(),
            producers: HashMap::new(),
            upstream: BTreeMap::new(),
            downstream: BTreeMap::new(),
        }
    }

    fn compile(mut self, template: &WorkflowTemplate) -> Result<CompiledWorkflow> {
        let mut template = template.clone();
        let Some(id) = &template.id else {
            return Err(CompileError::MissingField {
                workflow: "<unnamed>".to_owned(),
                location: "workflow template".to_owned(),
                field: "id",
            });
        };
        self.name = display_id(id);
        let interface = template.interface.clone().unwrap_or_default();
        self.producers.insert(START_NODE_ID.to_owned(), vars_of(interface.inputs.as_ref()));

        self.check_node_ids(&template.nodes)?;
        for node in &mut template.nodes {
            self.rename_branch_children(node)?;
        }

        // Pass 1: every top-level node's interface. Approve gates pass their inputs through, so their
        // outputs are typed from producers resolved before them.
        let mut ifaces: Vec<Option<NodeIface>> = vec![None; template.nodes.len()];
        let order = (0..template.nodes.len())
            .filter(|&i| !is_approve_gate(&template.nodes[i]))
            .chain((0..template.nodes.len()).filter(|&i| is_approve_gate(&template.nodes[i])))
            .collect::<Vec<_>>();
        for i in order {
            let iface = self.resolve_iface(&template.nodes[i])?;
            self.producers.insert(template.nodes[i].id.clone(), iface.outputs.clone());
            ifaces[i] = Some(iface);
        }

        // Pass 2: bindings, explicit dependencies, nested nodes and sub-workflows, in declaration order.
        for (node, iface) in template.nodes.iter_mut().zip(ifaces) {
            let Some(iface) = iface else { continue };
            self.check_explicit_upstream(node)?;
            let deps = self.validate_node(node, &iface)?;
            for dep in &deps {
                self.execution_edge(dep, &node.id);
            }
            for explicit in node.upstream_node_ids.clone() {
                self.execution_edge(&explicit, &node.id);
            }
            node.upstream_node_ids = upstream_ids(&node.upstream_node_ids, &deps);
        }

        // The end-node's inputs are the workflow outputs.
        let outputs = Inputs::Typed { vars: vars_of(interface.outputs.as_ref()), require_all: true };
        let deps = self.validate_bindings(END_NODE_ID, &mut template.outputs, &outputs)?;
        for dep in &deps {
            self.execution_edge(dep, END_NODE_ID);
        }

        // The failure node runs after everything else; Flyte records only its upstream side.
        if let Some(failure) = template.failure_node.as_mut() {
            self.rename_branch_children(failure)?;
            let iface = self.resolve_iface(failure)?;
            let deps = self.validate_node(failure, &iface)?;
            for dep in &deps {
                self.upstream_edge(dep, &failure.id);
            }
        }

        // Nodes that need nothing start with the workflow; nodes nothing needs finish before it ends.
        for node in &template.nodes {
            if !self.upstream.contains_key(&node.id) {
                self.execution_edge(START_NODE_ID, &node.id);
            }
            if !self.downstream.contains_key(&node.id) {
                self.execution_edge(&node.id, END_NODE_ID);
            }
        }

        self.check_cycles(&template.nodes)?;

        let start = Node { id: START_NODE_ID.to_owned(), ..Default::default() };
        let end = Node { id: END_NODE_ID.to_owned(), inputs: template.outputs.clone(), ..Default::default() };
        let user_nodes = std::mem::take(&mut template.nodes);
        template.nodes = [start, end].into_iter().chain(user_nodes).collect();

        Ok(CompiledWorkflow {
            template: Some(template),
            connections: Some(ConnectionSet {
                downstream: id_lists(&self.downstream),
                upstream: id_lists(&self.upstream),
            }),
        })
    }

    fn check_node_ids(&self, nodes: &[Node]) -> Result<()> {
        let mut seen = HashSet::new();
        for (position, node) in nodes.iter().enumerate() {
            if node.id.is_empty() {
                return Err(self.missing(format!("node #{}", position + 1), "id"));
            }
            if node.id == START_NODE_ID || node.id == END_NODE_ID {
                return Err(CompileError::ReservedNodeId { workflow: self.name.clone(), node: node.id.clone() });
            }
            if !seen.insert(node.id.as_str()) {
                return Err(CompileError::DuplicateNodeId { workflow: self.name.clone(), node: node.id.clone() });
            }
        }
        Ok(())
    }

    /// Branch children take the id `<branch>-<child>` in the compiled template, as Flyte's compiler
    /// renames them (`validators/branch.go`), so node executions report these ids.
    fn rename_branch_children(&self, node: &mut Node) -> Result<()> {
        let Node { id, target, .. } = node;
        match target {
            Some(Target::BranchNode(branch)) => {
                if let Some(if_else) = branch.if_else.as_mut() {
                    for child in branch_children_mut(if_else) {
                        if child.id.is_empty() {
                            return Err(self.missing(format!("branch node {id} child"), "id"));
                        }
                        child.id = format!("{id}-{}", child.id);
                        self.rename_branch_children(child)?;
                    }
                }
            }
            Some(Target::ArrayNode(array)) => {
                if let Some(sub) = array.node.as_deref_mut() {
                    self.rename_branch_children(sub)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn missing(&self, location: String, field: &'static str) -> CompileError {
        CompileError::MissingField { workflow: self.name.clone(), location, field }
    }

    /// The interface a node presents to its bindings and to its consumers.
    fn resolve_iface(&mut self, node: &Node) -> Result<NodeIface> {
        let id = node.id.as_str();
        let mut iface = match &node.target {
            None => return Err(self.missing(format!("node {id}"), "target")),
            Some(Target::TaskNode(task)) => {
                let Some(task_node::Reference::ReferenceId(task_id)) = &task.reference else {
                    return Err(self.missing(format!("node {id}"), "task_node.reference_id"));
                };
                let interface = self.session.task_interface(task_id).ok_or_else(|| CompileError::UnknownTask {
                    workflow: self.name.clone(),
                    node: id.to_owned(),
                    task: display_id(task_id),
                })?;
                typed(&interface, true)
            }
            Some(Target::WorkflowNode(workflow)) => match &workflow.reference {
                None => return Err(self.missing(format!("node {id}"), "workflow_node.reference")),
                Some(workflow_node::Reference::LaunchplanRef(lp_id)) => {
                    let interface =
                        self.session.launch_plan_interface(lp_id).ok_or_else(|| CompileError::UnknownLaunchPlan {
                            workflow: self.name.clone(),
                            node: id.to_owned(),
                            launch_plan: display_id(lp_id),
                        })?;
                    // The interface does not say which inputs have defaults; the launch plan
                    // supplies those, and missing required ones fail the child execution.
                    typed(&interface, false)
                }
                Some(workflow_node::Reference::SubWorkflowRef(sub_id)) => {
                    let Some(&idx) = self.session.sub_index.get(sub_id) else {
                        return Err(CompileError::UnknownSubWorkflow {
                            workflow: self.name.clone(),
                            node: id.to_owned(),
                            sub_workflow: display_id(sub_id),
                        });
                    };
                    typed(&self.session.subs[idx].interface.clone().unwrap_or_default(), true)
                }
            },
            Some(Target::BranchNode(branch)) => {
                let no_cases = || CompileError::BranchWithoutCases { workflow: self.name.clone(), node: id.to_owned() };
                let if_else = branch.if_else.as_deref().ok_or_else(no_cases)?;
                if if_else.case.is_none() {
                    return Err(no_cases());
                }
                if if_else.default.is_none() {
                    return Err(CompileError::BranchWithoutDefault {
                        workflow: self.name.clone(),
                        node: id.to_owned(),
                    });
                }
                // A branch outputs what its children output (the union: the child that runs provides it).
                let mut outputs = Vars::new();
                for (label, child) in branch_children(if_else) {
                    let child = child.ok_or_else(|| self.missing(format!("branch node {id} {label}"), "then_node"))?;
                    for (name, ty) in self.resolve_iface(child)?.outputs {
                        outputs.entry(name).or_insert(ty);
                    }
                }
                NodeIface { inputs: Inputs::Open, outputs }
            }
            Some(Target::GateNode(gate)) => match &gate.condition {
                None => {
                    return Err(CompileError::GateWithoutCondition {
                        workflow: self.name.clone(),
                        node: id.to_owned(),
                    });
                }
                // Approving copies the inputs to the outputs.
                Some(gate_node::Condition::Approve(_)) => NodeIface {
                    inputs: Inputs::Open,
                    outputs: node
                        .inputs
                        .iter()
                        .map(|b| (b.var.clone(), self.static_type(b.binding.as_ref())))
                        .collect(),
                },
                Some(gate_node::Condition::Signal(signal)) => {
                    let Some(ty) = signal.r#type.as_ref().filter(|t| is_well_formed(t)) else {
                        return Err(CompileError::GateSignalType {
                            workflow: self.name.clone(),
                            node: id.to_owned(),
                            signal: signal.signal_id.clone(),
                        });
                    };
                    if signal.output_variable_name.is_empty() {
                        return Err(self.missing(format!("gate node {id}"), "signal.output_variable_name"));
                    }
                    NodeIface {
                        inputs: Inputs::Typed { vars: Vars::new(), require_all: true },
                        outputs: Vars::from([(signal.output_variable_name.clone(), Some(ty.clone()))]),
                    }
                }
                Some(gate_node::Condition::Sleep(_)) => {
                    NodeIface { inputs: Inputs::Typed { vars: Vars::new(), require_all: true }, outputs: Vars::new() }
                }
            },
            Some(Target::ArrayNode(array)) => {
                let sub = array.node.as_deref().ok_or_else(|| self.missing(format!("node {id}"), "array_node.node"))?;
                let sub_iface = self.resolve_iface(sub)?;
                if array.is_original_sub_node_interface == Some(true) {
                    // The sub-node kept its scalar interface: the array node maps over lists of it,
                    // except for inputs bound once for every index.
                    let inputs = match sub_iface.inputs {
                        Inputs::Typed { vars, require_all } => Inputs::Typed {
                            vars: vars
                                .into_iter()
                                .map(|(name, ty)| {
                                    let ty = if array.bound_inputs.contains(&name) { ty } else { list_of(ty) };
                                    (name, ty)
                                })
                                .collect(),
                            require_all,
                        },
                        Inputs::Open => Inputs::Open,
                    };
                    let outputs = sub_iface.outputs.into_iter().map(|(name, ty)| (name, list_of(ty))).collect();
                    NodeIface { inputs, outputs }
                } else {
                    // flytekit map tasks: the sub-node's task already has the list interface.
                    sub_iface
                }
            }
        };
        for alias in &node.output_aliases {
            if let Some(ty) = iface.outputs.remove(&alias.var) {
                iface.outputs.insert(alias.alias.clone(), ty);
            }
        }
        Ok(iface)
    }

    /// The type of a binding known without validating it (used for pass-through gates).
    fn static_type(&self, binding: Option<&BindingData>) -> Option<LiteralType> {
        match binding?.value.as_ref()? {
            binding_data::Value::Promise(p) if p.attr_path.is_empty() => {
                let producer = if p.node_id.is_empty() { START_NODE_ID } else { p.node_id.as_str() };
                self.producers.get(producer)?.get(&p.var)?.clone()
            }
            binding_data::Value::Scalar(s) => scalar_type(s),
            _ => None,
        }
    }

    fn check_explicit_upstream(&self, node: &Node) -> Result<()> {
        for upstream in &node.upstream_node_ids {
            if !self.producers.contains_key(upstream) {
                return Err(CompileError::UnknownUpstreamNode {
                    workflow: self.name.clone(),
                    node: node.id.clone(),
                    upstream: upstream.clone(),
                });
            }
        }
        Ok(())
    }

    /// Validates a node's bindings and nested nodes; returns the producers it reads from
    /// (`start-node` included).
    fn validate_node(&mut self, node: &mut Node, iface: &NodeIface) -> Result<BTreeSet<String>> {
        let id = node.id.clone();
        let mut deps = self.validate_bindings(&id, &mut node.inputs, &iface.inputs)?;
        let bound: BTreeSet<String> = node.inputs.iter().map(|b| b.var.clone()).collect();
        match node.target.as_mut() {
            Some(Target::WorkflowNode(workflow)) => {
                if let Some(workflow_node::Reference::SubWorkflowRef(sub_id)) = &workflow.reference {
                    self.session.compile_sub(sub_id, &self.name, &id)?;
                }
            }
            Some(Target::BranchNode(branch)) => {
                let Some(if_else) = branch.if_else.as_deref_mut() else {
                    return Ok(deps);
                };
                let conditions = if_else
                    .case
                    .iter()
                    .map(|c| c.condition.as_ref())
                    .chain(if_else.other.iter().map(|o| o.condition.as_ref()));
                for (k, condition) in conditions.enumerate() {
                    let location = format!("branch node {id} case {}", k + 1);
                    let condition = condition.ok_or_else(|| self.missing(location.clone(), "condition"))?;
                    self.check_condition(condition, &bound, &id, &location)?;
                }
                for child in branch_children_mut(if_else) {
                    self.check_explicit_upstream(child)?;
                    let child_iface = self.resolve_iface(child)?;
                    let child_deps = self.validate_node(child, &child_iface)?;
                    for dep in &child_deps {
                        self.upstream_edge(dep, &child.id);
                    }
                    // The child runs inside the branch, so the branch waits for what the child reads.
                    deps.extend(child.upstream_node_ids.iter().cloned());
                    child.upstream_node_ids = upstream_ids(&child.upstream_node_ids, &child_deps);
                    deps.extend(child_deps);
                }
            }
            Some(Target::ArrayNode(array)) => {
                if let Some(sub) = array.node.as_deref_mut() {
                    // flytekit repeats the array node's bindings on the sub-node; their types follow
                    // the per-index interface, so only the references are checked here.
                    deps.extend(self.validate_bindings(&sub.id, &mut sub.inputs, &Inputs::Open)?);
                    if let Some(Target::WorkflowNode(workflow)) = &sub.target
                        && let Some(workflow_node::Reference::SubWorkflowRef(sub_id)) = &workflow.reference
                    {
                        self.session.compile_sub(sub_id, &self.name, &sub.id)?;
                    }
                }
            }
            _ => {}
        }
        Ok(deps)
    }

    fn check_condition(
        &self,
        expr: &BooleanExpression,
        bound: &BTreeSet<String>,
        node: &str,
        location: &str,
    ) -> Result<()> {
        match &expr.expr {
            None => Err(self.missing(location.to_owned(), "condition expression")),
            Some(boolean_expression::Expr::Comparison(comparison)) => {
                for operand in [&comparison.left_value, &comparison.right_value] {
                    match operand.as_ref().and_then(|o| o.val.as_ref()) {
                        None => return Err(self.missing(location.to_owned(), "comparison operand")),
                        Some(operand::Val::Var(var)) if !bound.contains(var) => {
                            return Err(CompileError::UnknownConditionVariable {
                                workflow: self.name.clone(),
                                node: node.to_owned(),
                                var: var.clone(),
                            });
                        }
                        Some(_) => {}
                    }
                }
                Ok(())
            }
            Some(boolean_expression::Expr::Conjunction(conjunction)) => {
                for side in [&conjunction.left_expression, &conjunction.right_expression] {
                    let side =
                        side.as_deref().ok_or_else(|| self.missing(location.to_owned(), "conjunction operand"))?;
                    self.check_condition(side, bound, node, location)?;
                }
                Ok(())
            }
        }
    }

    fn site(node: &str, var: &str) -> Site {
        if node == END_NODE_ID { Site::output(var) } else { Site::node(node, var) }
    }

    /// Validates `bindings` of `node` against `inputs`, rewriting workflow-input promises to
    /// `start-node`; returns the producers read.
    fn validate_bindings(&mut self, node: &str, bindings: &mut [Binding], inputs: &Inputs) -> Result<BTreeSet<String>> {
        let mut deps = BTreeSet::new();
        let mut seen = BTreeSet::new();
        for binding in bindings.iter_mut() {
            let site = Self::site(node, &binding.var);
            let expected = match inputs {
                Inputs::Typed { vars, .. } => match vars.get(&binding.var) {
                    Some(ty) => ty.clone(),
                    None => {
                        return Err(CompileError::UnknownInput { workflow: self.name.clone(), site });
                    }
                },
                Inputs::Open => None,
            };
            if !seen.insert(binding.var.clone()) {
                return Err(CompileError::DuplicateBinding { workflow: self.name.clone(), site });
            }
            let data = binding.binding.as_mut().ok_or_else(|| self.missing(site.to_string(), "binding"))?;
            self.check_binding_data(&site, data, expected.as_ref(), &mut deps)?;
        }
        if let Inputs::Typed { vars, require_all: true } = inputs {
            for (name, ty) in vars {
                if !seen.contains(name) && !is_optional(ty.as_ref()) {
                    return Err(CompileError::UnboundInput {
                        workflow: self.name.clone(),
                        site: Self::site(node, name),
                    });
                }
            }
        }
        Ok(deps)
    }

    fn mismatch(&self, site: &Site, source_desc: String, expected: &LiteralType, actual: &LiteralType) -> CompileError {
        CompileError::TypeMismatch {
            workflow: self.name.clone(),
            site: site.clone(),
            source_desc,
            expected: describe_type(expected),
            actual: describe_type(actual),
        }
    }

    fn check_binding_data(
        &mut self,
        site: &Site,
        data: &mut BindingData,
        expected: Option<&LiteralType>,
        deps: &mut BTreeSet<String>,
    ) -> Result<()> {
        // flytekit marks which union variant a value was built for.
        let narrowed = match (&data.union, expected.and_then(|t| t.r#type.as_ref())) {
            (Some(core::UnionInfo { target_type: Some(target) }), Some(Type::UnionType(_))) => Some(target.clone()),
            _ => None,
        };
        let expected = narrowed.as_ref().or(expected);

        // A list or map bound to a union must fit one of its variants.
        if let Some(Type::UnionType(union)) = expected.and_then(|t| t.r#type.as_ref())
            && matches!(data.value, Some(binding_data::Value::Collection(_) | binding_data::Value::Map(_)))
        {
            for variant in &union.variants {
                let mut trial = data.clone();
                let mut trial_deps = BTreeSet::new();
                if self.check_binding_data(site, &mut trial, Some(variant), &mut trial_deps).is_ok() {
                    *data = trial;
                    deps.extend(trial_deps);
                    return Ok(());
                }
            }
            let actual = self.binding_type(data);
            return Err(self.mismatch(site, binding_source(data), expected.unwrap_or(&actual), &actual));
        }

        let actual_if_wrong_shape = match (&data.value, expected.and_then(|t| t.r#type.as_ref())) {
            (Some(binding_data::Value::Collection(_)), Some(t)) if !matches!(t, Type::CollectionType(_)) => true,
            (Some(binding_data::Value::Map(_)), Some(t)) if !matches!(t, Type::MapValueType(_)) => true,
            _ => false,
        };
        if actual_if_wrong_shape {
            let actual = self.binding_type(data);
            return Err(self.mismatch(site, binding_source(data), expected.unwrap_or(&actual), &actual));
        }

        match data.value.as_mut() {
            None => Err(self.missing(site.to_string(), "binding value")),
            Some(binding_data::Value::Promise(promise)) => {
                if promise.node_id.is_empty() {
                    promise.node_id = START_NODE_ID.to_owned();
                }
                let Some(outputs) = self.producers.get(&promise.node_id) else {
                    return Err(CompileError::BindingToUnknownNode {
                        workflow: self.name.clone(),
                        site: site.clone(),
                        upstream: promise.node_id.clone(),
                    });
                };
                let Some(source) = outputs.get(&promise.var) else {
                    return Err(CompileError::UnknownOutputVariable {
                        workflow: self.name.clone(),
                        site: site.clone(),
                        upstream: promise.node_id.clone(),
                        var: promise.var.clone(),
                    });
                };
                deps.insert(promise.node_id.clone());
                // Attribute access into dataclasses and dicts has no static type to check.
                if let (Some(expected), Some(source), true) = (expected, source, promise.attr_path.is_empty())
                    && !types_castable(source, expected)
                {
                    return Err(self.mismatch(site, promise_source(&promise.node_id, &promise.var), expected, source));
                }
                Ok(())
            }
            Some(binding_data::Value::Scalar(scalar)) => {
                let Some(expected) = expected else {
                    return Ok(());
                };
                if scalar_is_checked(scalar)
                    && let Some(actual) = scalar_type(scalar)
                    && !types_castable(&actual, expected)
                {
                    return Err(self.mismatch(site, "a literal".to_owned(), expected, &actual));
                }
                if let (Some(Type::EnumType(enum_type)), Some(value)) = (&expected.r#type, string_literal(scalar))
                    && !enum_type.values.iter().any(|v| v == value)
                {
                    return Err(CompileError::InvalidEnumValue {
                        workflow: self.name.clone(),
                        site: site.clone(),
                        expected: describe_type(expected),
                        value: value.to_owned(),
                    });
                }
                Ok(())
            }
            Some(binding_data::Value::Collection(collection)) => {
                let element = match expected.and_then(|t| t.r#type.as_ref()) {
                    Some(Type::CollectionType(element)) => Some(element.as_ref().clone()),
                    _ => None,
                };
                for item in &mut collection.bindings {
                    self.check_binding_data(site, item, element.as_ref(), deps)?;
                }
                Ok(())
            }
            Some(binding_data::Value::Map(map)) => {
                let value_type = match expected.and_then(|t| t.r#type.as_ref()) {
                    Some(Type::MapValueType(value)) => Some(value.as_ref().clone()),
                    _ => None,
                };
                for item in map.bindings.values_mut() {
                    self.check_binding_data(site, item, value_type.as_ref(), deps)?;
                }
                Ok(())
            }
            Some(binding_data::Value::OffloadedMetadata(offloaded)) => {
                if let (Some(expected), Some(actual)) = (expected, offloaded.inferred_type.as_ref())
                    && !types_castable(actual, expected)
                {
                    return Err(self.mismatch(site, "an offloaded literal".to_owned(), expected, actual));
                }
                Ok(())
            }
        }
    }

    /// A best-effort type of a binding, for error messages.
    fn binding_type(&self, data: &BindingData) -> LiteralType {
        let none = || LiteralType { r#type: Some(Type::Simple(SimpleType::None as i32)), ..Default::default() };
        match data.value.as_ref() {
            Some(binding_data::Value::Scalar(s)) => scalar_type(s).unwrap_or_default(),
            Some(binding_data::Value::Promise(p)) => {
                let producer = if p.node_id.is_empty() { START_NODE_ID } else { p.node_id.as_str() };
                self.producers.get(producer).and_then(|o| o.get(&p.var).cloned().flatten()).unwrap_or_default()
            }
            Some(binding_data::Value::Collection(c)) => {
                let element = c.bindings.first().map_or_else(none, |b| self.binding_type(b));
                LiteralType { r#type: Some(Type::CollectionType(Box::new(element))), ..Default::default() }
            }
            Some(binding_data::Value::Map(m)) => {
                let first = m.bindings.values().next();
                let value = first.map_or_else(none, |b| self.binding_type(b));
                LiteralType { r#type: Some(Type::MapValueType(Box::new(value))), ..Default::default() }
            }
            Some(binding_data::Value::OffloadedMetadata(o)) => o.inferred_type.clone().unwrap_or_default(),
            None => LiteralType::default(),
        }
    }

    fn execution_edge(&mut self, from: &str, to: &str) {
        self.downstream.entry(from.to_owned()).or_default().insert(to.to_owned());
        self.upstream_edge(from, to);
    }

    fn upstream_edge(&mut self, from: &str, to: &str) {
        self.upstream.entry(to.to_owned()).or_default().insert(from.to_owned());
    }

    /// Rejects cycles among the top-level nodes, naming one node on the cycle and the cycle itself.
    fn check_cycles(&self, nodes: &[Node]) -> Result<()> {
        let order: Vec<&str> =
            [START_NODE_ID, END_NODE_ID].into_iter().chain(nodes.iter().map(|n| n.id.as_str())).collect();
        let mut in_degree: HashMap<&str, usize> = order.iter().map(|&id| (id, 0)).collect();
        for (from, tos) in &self.downstream {
            if !in_degree.contains_key(from.as_str()) {
                continue;
            }
            for to in tos {
                if let Some(d) = in_degree.get_mut(to.as_str()) {
                    *d += 1;
                }
            }
        }
        let mut ready: Vec<&str> = order.iter().copied().filter(|id| in_degree[id] == 0).collect();
        while let Some(id) = ready.pop() {
            for to in self.downstream.get(id).into_iter().flatten() {
                if let Some(d) = in_degree.get_mut(to.as_str()) {
                    *d -= 1;
                    if *d == 0 {
                        ready.push(to.as_str());
                    }
                }
            }
        }
        let Some(&first) = order.iter().find(|id| in_degree[*id] > 0) else {
            return Ok(());
        };
        // Every node left has a predecessor left: walking predecessors must revisit a node, and the
        // stretch between the two visits is a cycle.
        let mut walk: Vec<&str> = vec![first];
        loop {
            let current = walk[walk.len() - 1];
            let Some(previous) = self
                .upstream
                .get(current)
                .into_iter()
                .flatten()
                .map(String::as_str)
                .find(|p| in_degree.get(p).is_some_and(|&d| d > 0))
            else {
                return Ok(()); // unreachable: a node with in-degree left has a predecessor left
            };
            if let Some(pos) = walk.iter().position(|&w| w == previous) {
                let mut cycle: Vec<&str> = walk[pos..].iter().rev().copied().collect();
                // Start the cycle at the node declared first, for stable messages.
                let rank = |id: &str| order.iter().position(|&o| o == id).unwrap_or(usize::MAX);
                let start = (0..cycle.len()).min_by_key(|&i| rank(cycle[i])).unwrap_or(0);
                cycle.rotate_left(start);
                let node = cycle[0].to_owned();
                let mut path: Vec<String> = cycle.into_iter().map(str::to_owned).collect();
                path.push(node.clone());
                return Err(CompileError::Cycle { workflow: self.name.clone(), node, path });
            }
            walk.push(previous);
        }
    }
}

/// `upstream_node_ids` of a compiled node: the explicit ones plus every node its bindings read,
/// sorted, without `start-node` (Flyte's compiled templates never list it).
fn upstream_ids(explicit: &[String], deps: &BTreeSet<String>) -> Vec<String> {
    let mut ids: BTreeSet<String> = explicit.iter().cloned().collect();
    ids.extend(deps.iter().cloned());
    ids.remove(START_NODE_ID);
    ids.into_iter().collect()
}

fn id_lists(edges: &BTreeMap<String, BTreeSet<String>>) -> BTreeMap<String, connection_set::IdList> {
    edges.iter().map(|(id, ids)| (id.clone(), connection_set::IdList { ids: ids.iter().cloned().collect() })).collect()
}

fn binding_source(data: &BindingData) -> String {
    match data.value {
        Some(binding_data::Value::Collection(_)) => "a list".to_owned(),
        Some(binding_data::Value::Map(_)) => "a map".to_owned(),
        _ => "a value".to_owned(),
    }
}

fn string_literal(s: &core::Scalar) -> Option<&str> {
    match &s.value {
        Some(scalar::Value::Primitive(core::Primitive { value: Some(primitive::Value::StringValue(v)) })) => Some(v),
        _ => None,
    }
}
