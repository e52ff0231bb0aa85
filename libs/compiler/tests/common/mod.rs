//! Terse builders for flyteidl workflow specs, and an in-memory registry.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};

use aloft_compiler::Resolver;
use aloft_proto::flyteidl::{
    admin::WorkflowSpec,
    core::{
        ApproveCondition, ArrayNode, Binding, BindingData, BindingDataCollection, BindingDataMap, BlobType,
        BooleanExpression, ComparisonExpression, CompiledWorkflow, EnumType, GateNode, Identifier, IfBlock,
        IfElseBlock, LiteralType, Node, Operand, OutputReference, Primitive, PromiseAttribute, ResourceType, Scalar,
        SignalCondition, SimpleType, SleepCondition, TaskNode, TaskTemplate, TypedInterface, UnionType, Variable,
        VariableMap, WorkflowNode, WorkflowTemplate, binding_data, blob_type::BlobDimensionality, boolean_expression,
        comparison_expression, gate_node, if_else_block, literal_type::Type, node::Target, operand, primitive,
        promise_attribute, scalar, task_node, workflow_node,
    },
};

pub const PROJECT: &str = "flytesnacks";
pub const DOMAIN: &str = "development";
pub const VERSION: &str = "v1";

// ---- types

pub fn simple(s: SimpleType) -> LiteralType {
    LiteralType { r#type: Some(Type::Simple(s as i32)), ..Default::default() }
}
pub fn int() -> LiteralType {
    simple(SimpleType::Integer)
}
pub fn float() -> LiteralType {
    simple(SimpleType::Float)
}
pub fn string() -> LiteralType {
    simple(SimpleType::String)
}
pub fn boolean() -> LiteralType {
    simple(SimpleType::Boolean)
}
pub fn none() -> LiteralType {
    simple(SimpleType::None)
}
pub fn generic() -> LiteralType {
    simple(SimpleType::Struct)
}
pub fn list(t: LiteralType) -> LiteralType {
    LiteralType { r#type: Some(Type::CollectionType(Box::new(t))), ..Default::default() }
}
pub fn map(t: LiteralType) -> LiteralType {
    LiteralType { r#type: Some(Type::MapValueType(Box::new(t))), ..Default::default() }
}
pub fn optional(t: LiteralType) -> LiteralType {
    LiteralType { r#type: Some(Type::UnionType(UnionType { variants: vec![t, none()] })), ..Default::default() }
}
pub fn file(format: &str) -> LiteralType {
    LiteralType {
        r#type: Some(Type::Blob(BlobType { format: format.into(), dimensionality: BlobDimensionality::Single as i32 })),
        ..Default::default()
    }
}
pub fn enum_of(values: &[&str]) -> LiteralType {
    LiteralType {
        r#type: Some(Type::EnumType(EnumType { values: values.iter().map(|v| v.to_string()).collect() })),
        ..Default::default()
    }
}

// ---- interfaces and ids

pub fn vars(v: &[(&str, LiteralType)]) -> VariableMap {
    VariableMap {
        variables: v
            .iter()
            .map(|(n, t)| (n.to_string(), Variable { r#type: Some(t.clone()), ..Default::default() }))
            .collect::<BTreeMap<_, _>>(),
    }
}

pub fn iface(inputs: &[(&str, LiteralType)], outputs: &[(&str, LiteralType)]) -> TypedInterface {
    TypedInterface { inputs: Some(vars(inputs)), outputs: Some(vars(outputs)) }
}

pub fn id(resource_type: ResourceType, name: &str) -> Identifier {
    Identifier {
        resource_type: resource_type as i32,
        project: PROJECT.into(),
        domain: DOMAIN.into(),
        name: name.into(),
        version: VERSION.into(),
        org: String::new(),
    }
}
pub fn task_id(name: &str) -> Identifier {
    id(ResourceType::Task, name)
}
pub fn wf_id(name: &str) -> Identifier {
    id(ResourceType::Workflow, name)
}
pub fn lp_id(name: &str) -> Identifier {
    id(ResourceType::LaunchPlan, name)
}

/// `flytesnacks/development/<name>@v1`, as errors print it.
pub fn shown(name: &str) -> String {
    format!("{PROJECT}/{DOMAIN}/{name}@{VERSION}")
}

pub fn task(name: &str, inputs: &[(&str, LiteralType)], outputs: &[(&str, LiteralType)]) -> TaskTemplate {
    TaskTemplate {
        id: Some(task_id(name)),
        r#type: "python-task".into(),
        interface: Some(iface(inputs, outputs)),
        ..Default::default()
    }
}

// ---- bindings

pub fn promise(node: &str, var: &str) -> BindingData {
    BindingData {
        value: Some(binding_data::Value::Promise(OutputReference {
            node_id: node.into(),
            var: var.into(),
            attr_path: vec![],
        })),
        union: None,
    }
}
/// A workflow input as flytekit serialises it: a promise of the global input node `""`.
pub fn input(var: &str) -> BindingData {
    promise("", var)
}
pub fn attr(node: &str, var: &str, path: &[&str]) -> BindingData {
    BindingData {
        value: Some(binding_data::Value::Promise(OutputReference {
            node_id: node.into(),
            var: var.into(),
            attr_path: path
                .iter()
                .map(|p| PromiseAttribute { value: Some(promise_attribute::Value::StringValue(p.to_string())) })
                .collect(),
        })),
        union: None,
    }
}
pub fn primitive_value(v: primitive::Value) -> Primitive {
    Primitive { value: Some(v) }
}
pub fn lit(v: primitive::Value) -> BindingData {
    BindingData {
        value: Some(binding_data::Value::Scalar(Scalar { value: Some(scalar::Value::Primitive(primitive_value(v))) })),
        union: None,
    }
}
pub fn lit_int(i: i64) -> BindingData {
    lit(primitive::Value::Integer(i))
}
pub fn lit_str(s: &str) -> BindingData {
    lit(primitive::Value::StringValue(s.into()))
}
pub fn collection(items: Vec<BindingData>) -> BindingData {
    BindingData { value: Some(binding_data::Value::Collection(BindingDataCollection { bindings: items })), union: None }
}
pub fn map_of(items: Vec<(&str, BindingData)>) -> BindingData {
    BindingData {
        value: Some(binding_data::Value::Map(BindingDataMap {
            bindings: items.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        })),
        union: None,
    }
}
pub fn bind(var: &str, data: BindingData) -> Binding {
    Binding { var: var.into(), binding: Some(data) }
}

// ---- nodes

pub fn node(id: &str, target: Target, inputs: Vec<Binding>) -> Node {
    Node { id: id.into(), inputs, target: Some(target), ..Default::default() }
}
pub fn task_target(task_name: &str) -> Target {
    Target::TaskNode(TaskNode {
        reference: Some(task_node::Reference::ReferenceId(task_id(task_name))),
        ..Default::default()
    })
}
pub fn task_node(id: &str, task_name: &str, inputs: Vec<Binding>) -> Node {
    node(id, task_target(task_name), inputs)
}
pub fn sub_wf_node(id: &str, wf_name: &str, inputs: Vec<Binding>) -> Node {
    node(
        id,
        Target::WorkflowNode(WorkflowNode {
            reference: Some(workflow_node::Reference::SubWorkflowRef(wf_id(wf_name))),
        }),
        inputs,
    )
}
pub fn lp_node(id: &str, lp_name: &str, inputs: Vec<Binding>) -> Node {
    node(
        id,
        Target::WorkflowNode(WorkflowNode { reference: Some(workflow_node::Reference::LaunchplanRef(lp_id(lp_name))) }),
        inputs,
    )
}
pub fn after(mut n: Node, upstream: &[&str]) -> Node {
    n.upstream_node_ids = upstream.iter().map(|s| s.to_string()).collect();
    n
}

/// `var > value` on the branch node's input `var`.
pub fn greater_than(var: &str, value: i64) -> BooleanExpression {
    compare(var, comparison_expression::Operator::Gt, value)
}
/// `var <op> value` on the branch node's input `var`.
pub fn compare(var: &str, operator: comparison_expression::Operator, value: i64) -> BooleanExpression {
    BooleanExpression {
        expr: Some(boolean_expression::Expr::Comparison(ComparisonExpression {
            operator: operator as i32,
            left_value: Some(Operand { val: Some(operand::Val::Var(var.into())) }),
            right_value: Some(Operand {
                val: Some(operand::Val::Scalar(Scalar {
                    value: Some(scalar::Value::Primitive(primitive_value(primitive::Value::Integer(value)))),
                })),
            }),
        })),
    }
}
pub fn case(condition: BooleanExpression, then: Node) -> IfBlock {
    IfBlock { condition: Some(condition), then_node: Some(Box::new(then)) }
}
pub fn branch_node(id: &str, inputs: Vec<Binding>, cases: Vec<IfBlock>, else_node: Option<Node>) -> Node {
    let mut cases = cases.into_iter();
    let first = cases.next().map(Box::new);
    let default = Some(match else_node {
        Some(n) => if_else_block::Default::ElseNode(Box::new(n)),
        None => if_else_block::Default::Error(aloft_proto::flyteidl::core::Error {
            failed_node_id: id.into(),
            message: "no case matched".into(),
        }),
    });
    node(
        id,
        Target::BranchNode(Box::new(aloft_proto::flyteidl::core::BranchNode {
            if_else: Some(Box::new(IfElseBlock { case: first, other: cases.collect(), default })),
        })),
        inputs,
    )
}
pub fn array_node(id: &str, task_name: &str, inputs: Vec<Binding>) -> Node {
    let sub = task_node(id, task_name, inputs.clone());
    node(
        id,
        Target::ArrayNode(Box::new(ArrayNode {
            node: Some(Box::new(sub)),
            is_original_sub_node_interface: Some(false),
            ..Default::default()
        })),
        inputs,
    )
}
pub fn gate(id: &str, condition: gate_node::Condition, inputs: Vec<Binding>) -> Node {
    node(id, Target::GateNode(GateNode { condition: Some(condition) }), inputs)
}
pub fn signal(signal_id: &str, t: Option<LiteralType>) -> gate_node::Condition {
    gate_node::Condition::Signal(SignalCondition {
        signal_id: signal_id.into(),
        r#type: t,
        output_variable_name: "o0".into(),
    })
}
pub fn approve(signal_id: &str) -> gate_node::Condition {
    gate_node::Condition::Approve(ApproveCondition { signal_id: signal_id.into() })
}
pub fn sleep(seconds: i64) -> gate_node::Condition {
    gate_node::Condition::Sleep(SleepCondition { duration: Some(prost_types::Duration { seconds, nanos: 0 }) })
}

// ---- workflows

pub fn workflow(name: &str, interface: TypedInterface, nodes: Vec<Node>, outputs: Vec<Binding>) -> WorkflowTemplate {
    WorkflowTemplate { id: Some(wf_id(name)), interface: Some(interface), nodes, outputs, ..Default::default() }
}
pub fn spec(primary: WorkflowTemplate, subs: Vec<WorkflowTemplate>) -> WorkflowSpec {
    WorkflowSpec { template: Some(primary), sub_workflows: subs, description: None }
}

/// Registered tasks and launch plans.
#[derive(Default)]
pub struct Registry {
    tasks: HashMap<Identifier, TaskTemplate>,
    launch_plans: HashMap<Identifier, TypedInterface>,
}

impl Registry {
    pub fn with_tasks(tasks: Vec<TaskTemplate>) -> Self {
        let mut registry = Registry::default();
        for t in tasks {
            registry.tasks.insert(t.id.clone().expect("task id"), t);
        }
        registry
    }
    pub fn launch_plan(mut self, name: &str, interface: TypedInterface) -> Self {
        self.launch_plans.insert(lp_id(name), interface);
        self
    }
}

impl Resolver for Registry {
    fn task(&self, id: &Identifier) -> Option<TaskTemplate> {
        self.tasks.get(id).cloned()
    }
    fn launch_plan_interface(&self, id: &Identifier) -> Option<TypedInterface> {
        self.launch_plans.get(id).cloned()
    }
}

// ---- reading compiled workflows

pub fn find<'a>(wf: &'a CompiledWorkflow, id: &str) -> &'a Node {
    let template = wf.template.as_ref().expect("template");
    template.nodes.iter().find(|n| n.id == id).unwrap_or_else(|| panic!("no node {id}"))
}
pub fn node_ids(wf: &CompiledWorkflow) -> Vec<String> {
    wf.template.as_ref().expect("template").nodes.iter().map(|n| n.id.clone()).collect()
}
pub fn upstream_of(wf: &CompiledWorkflow, id: &str) -> Vec<String> {
    wf.connections.as_ref().expect("connections").upstream.get(id).map(|l| l.ids.clone()).unwrap_or_default()
}
pub fn downstream_of(wf: &CompiledWorkflow, id: &str) -> Vec<String> {
    wf.connections.as_ref().expect("connections").downstream.get(id).map(|l| l.ids.clone()).unwrap_or_default()
}
pub fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}
/// The node a promise reads from, for single-promise bindings.
pub fn promise_node(b: &Binding) -> &str {
    match b.binding.as_ref().and_then(|d| d.value.as_ref()) {
        Some(binding_data::Value::Promise(p)) => &p.node_id,
        other => panic!("not a promise: {other:?}"),
    }
}
