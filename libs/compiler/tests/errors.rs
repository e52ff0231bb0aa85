//! Every compile error, with its exact message.

mod common;

use aloft_compiler::{CompileError, compile_workflow};
use aloft_proto::flyteidl::{
    admin::WorkflowSpec,
    core::{
        BooleanExpression, IfElseBlock, LiteralType, Node, TaskTemplate, WorkflowTemplate, literal_type::Type,
        node::Target,
    },
};
use common::*;

fn tasks() -> Vec<TaskTemplate> {
    vec![
        task("wf.inc", &[("x", int())], &[("o0", int())]),
        task("wf.greet", &[("name", string())], &[("o0", string())]),
        task("wf.two", &[("a", int()), ("b", int())], &[("o0", int())]),
        task("wf.ints", &[("xs", list(int()))], &[("o0", list(int()))]),
        task("wf.strs", &[("xs", list(string()))], &[]),
        task("wf.csv", &[], &[("o0", file("csv"))]),
        task("wf.parquet", &[("f", file("parquet"))], &[]),
        task("wf.floats", &[], &[("o0", map(float()))]),
        task("wf.int_map", &[("m", map(int()))], &[]),
        task("wf.color", &[("c", enum_of(&["red", "green"]))], &[]),
        task("wf.noop", &[], &[]),
        task("wf.struct", &[], &[("o0", generic())]),
    ]
}

type Vars<'a> = &'a [(&'a str, LiteralType)];

/// The message of compiling a primary workflow `wf.main` with the given interface, nodes and outputs.
fn error_of(
    interface: (Vars<'_>, Vars<'_>),
    nodes: Vec<Node>,
    outputs: Vec<aloft_proto::flyteidl::core::Binding>,
) -> String {
    let wf = workflow("wf.main", iface(interface.0, interface.1), nodes, outputs);
    error_of_spec(spec(wf, vec![]))
}

fn error_of_spec(spec: WorkflowSpec) -> String {
    let registry = Registry::with_tasks(tasks()).launch_plan("wf.lp", iface(&[("x", int())], &[("o0", int())]));
    compile_workflow(&spec, &registry).expect_err("must not compile").to_string()
}

fn main_wf() -> String {
    shown("wf.main")
}

#[test]
fn missing_template() {
    assert_eq!(error_of_spec(WorkflowSpec::default()), "workflow spec has no template");
}

#[test]
fn duplicate_node_ids() {
    let message = error_of(
        (&[], &[]),
        vec![
            task_node("n0", "wf.noop", vec![]),
            task_node("n1", "wf.noop", vec![]),
            task_node("n0", "wf.noop", vec![]),
        ],
        vec![],
    );
    assert_eq!(message, format!("workflow {}: duplicate node id n0", main_wf()));
}

#[test]
fn reserved_node_id() {
    let message = error_of((&[], &[]), vec![task_node("end-node", "wf.noop", vec![])], vec![]);
    assert_eq!(message, format!("workflow {}: node id end-node is reserved", main_wf()));
}

#[test]
fn node_without_target() {
    let message = error_of((&[], &[]), vec![Node { id: "n0".into(), ..Default::default() }], vec![]);
    assert_eq!(message, format!("workflow {}: node n0 is missing target", main_wf()));
}

#[test]
fn unknown_explicit_upstream_node() {
    let message = error_of((&[], &[]), vec![after(task_node("n0", "wf.noop", vec![]), &["n7"])], vec![]);
    assert_eq!(message, format!("workflow {}: node n0 depends on unknown node n7", main_wf()));
}

#[test]
fn binding_to_unknown_node() {
    let message = error_of((&[], &[]), vec![task_node("n0", "wf.inc", vec![bind("x", promise("n9", "o0"))])], vec![]);
    assert_eq!(message, format!("workflow {}: node n0 input x is bound to unknown node n9", main_wf()));
}

#[test]
fn binding_to_a_variable_the_producer_does_not_output() {
    let message = error_of(
        (&[], &[]),
        vec![task_node("n0", "wf.struct", vec![]), task_node("n1", "wf.inc", vec![bind("x", promise("n0", "o1"))])],
        vec![],
    );
    assert_eq!(
        message,
        format!("workflow {}: node n1 input x is bound to n0.o1 but node n0 has no output o1", main_wf())
    );
}

#[test]
fn binding_to_an_undeclared_workflow_input() {
    let message =
        error_of((&[("a", int())], &[]), vec![task_node("n0", "wf.inc", vec![bind("x", input("b"))])], vec![]);
    assert_eq!(
        message,
        format!("workflow {}: node n0 input x is bound to workflow input b but the workflow has no input b", main_wf())
    );
}

#[test]
fn attribute_access_on_a_missing_variable() {
    let message = error_of(
        (&[], &[]),
        vec![
            task_node("n0", "wf.struct", vec![]),
            task_node("n1", "wf.inc", vec![bind("x", attr("n0", "o9", &["a"]))]),
        ],
        vec![],
    );
    assert_eq!(
        message,
        format!("workflow {}: node n1 input x is bound to n0.o9 but node n0 has no output o9", main_wf())
    );
}

#[test]
fn required_input_without_binding() {
    let message =
        error_of((&[("a", int())], &[]), vec![task_node("n0", "wf.two", vec![bind("a", input("a"))])], vec![]);
    assert_eq!(message, format!("workflow {}: node n0 input b is required but not bound", main_wf()));
}

#[test]
fn binding_to_an_input_the_interface_lacks() {
    let message = error_of(
        (&[("a", int())], &[]),
        vec![task_node("n0", "wf.inc", vec![bind("x", input("a")), bind("y", input("a"))])],
        vec![],
    );
    assert_eq!(message, format!("workflow {}: node n0 has no input y, but it is bound", main_wf()));
}

#[test]
fn input_bound_twice() {
    let message = error_of(
        (&[("a", int())], &[]),
        vec![task_node("n0", "wf.inc", vec![bind("x", input("a")), bind("x", lit_int(1))])],
        vec![],
    );
    assert_eq!(message, format!("workflow {}: node n0 input x is bound more than once", main_wf()));
}

#[test]
fn type_mismatch_between_simple_types() {
    let message = error_of(
        (&[("a", int())], &[]),
        vec![
            task_node("n0", "wf.inc", vec![bind("x", input("a"))]),
            task_node("n1", "wf.greet", vec![bind("name", promise("n0", "o0"))]),
        ],
        vec![],
    );
    assert_eq!(
        message,
        format!("workflow {}: node n1 input name expects string but is bound to n0.o0 of type integer", main_wf())
    );
}

#[test]
fn type_mismatch_on_a_workflow_input() {
    let message =
        error_of((&[("who", int())], &[]), vec![task_node("n0", "wf.greet", vec![bind("name", input("who"))])], vec![]);
    assert_eq!(
        message,
        format!(
            "workflow {}: node n0 input name expects string but is bound to workflow input who of type integer",
            main_wf()
        )
    );
}

#[test]
fn type_mismatch_between_lists() {
    let message = error_of(
        (&[("xs", list(int()))], &[]),
        vec![
            task_node("n0", "wf.ints", vec![bind("xs", input("xs"))]),
            task_node("n1", "wf.strs", vec![bind("xs", promise("n0", "o0"))]),
        ],
        vec![],
    );
    assert_eq!(
        message,
        format!(
            "workflow {}: node n1 input xs expects list<string> but is bound to n0.o0 of type list<integer>",
            main_wf()
        )
    );
}

#[test]
fn type_mismatch_between_blob_formats() {
    let message = error_of(
        (&[], &[]),
        vec![task_node("n0", "wf.csv", vec![]), task_node("n1", "wf.parquet", vec![bind("f", promise("n0", "o0"))])],
        vec![],
    );
    assert_eq!(
        message,
        format!(
            "workflow {}: node n1 input f expects blob(parquet) but is bound to n0.o0 of type blob(csv)",
            main_wf()
        )
    );
}

#[test]
fn type_mismatch_between_maps() {
    let message = error_of(
        (&[], &[]),
        vec![task_node("n0", "wf.floats", vec![]), task_node("n1", "wf.int_map", vec![bind("m", promise("n0", "o0"))])],
        vec![],
    );
    assert_eq!(
        message,
        format!(
            "workflow {}: node n1 input m expects map<string, integer> but is bound to n0.o0 of type map<string, float>",
            main_wf()
        )
    );
}

#[test]
fn type_mismatch_inside_a_list_binding() {
    let message = error_of(
        (&[("a", int()), ("s", string())], &[]),
        vec![task_node("n0", "wf.ints", vec![bind("xs", collection(vec![input("a"), input("s")]))])],
        vec![],
    );
    assert_eq!(
        message,
        format!(
            "workflow {}: node n0 input xs expects integer but is bound to workflow input s of type string",
            main_wf()
        )
    );
}

#[test]
fn list_bound_to_a_scalar_input() {
    let message = error_of(
        (&[("a", int())], &[]),
        vec![task_node("n0", "wf.inc", vec![bind("x", collection(vec![input("a")]))])],
        vec![],
    );
    assert_eq!(
        message,
        format!("workflow {}: node n0 input x expects integer but is bound to a list of type list<integer>", main_wf())
    );
}

#[test]
fn literal_of_the_wrong_kind() {
    let message = error_of((&[], &[]), vec![task_node("n0", "wf.inc", vec![bind("x", lit_str("three"))])], vec![]);
    assert_eq!(
        message,
        format!("workflow {}: node n0 input x expects integer but is bound to a literal of type string", main_wf())
    );
}

#[test]
fn literal_outside_the_enum() {
    let message = error_of((&[], &[]), vec![task_node("n0", "wf.color", vec![bind("c", lit_str("blue"))])], vec![]);
    assert_eq!(
        message,
        format!(
            "workflow {}: node n0 input c expects enum{{red, green}} but is bound to the literal \"blue\"",
            main_wf()
        )
    );
}

#[test]
fn cycle_through_bindings() {
    let message = error_of(
        (&[("a", int())], &[]),
        vec![
            task_node("n0", "wf.inc", vec![bind("x", input("a"))]),
            task_node("n1", "wf.two", vec![bind("a", promise("n0", "o0")), bind("b", promise("n2", "o0"))]),
            task_node("n2", "wf.inc", vec![bind("x", promise("n1", "o0"))]),
        ],
        vec![],
    );
    assert_eq!(message, format!("workflow {}: cycle detected through node n1 (n1 -> n2 -> n1)", main_wf()));
}

#[test]
fn cycle_on_itself() {
    let message = error_of((&[], &[]), vec![task_node("n0", "wf.inc", vec![bind("x", promise("n0", "o0"))])], vec![]);
    assert_eq!(message, format!("workflow {}: cycle detected through node n0 (n0 -> n0)", main_wf()));
}

#[test]
fn cycle_through_explicit_dependencies() {
    let message = error_of(
        (&[], &[]),
        vec![
            after(task_node("n0", "wf.noop", vec![]), &["n2"]),
            after(task_node("n1", "wf.noop", vec![]), &["n0"]),
            after(task_node("n2", "wf.noop", vec![]), &["n1"]),
        ],
        vec![],
    );
    assert_eq!(message, format!("workflow {}: cycle detected through node n0 (n0 -> n1 -> n2 -> n0)", main_wf()));
}

#[test]
fn unregistered_task() {
    let message = error_of((&[], &[]), vec![task_node("n0", "wf.missing", vec![])], vec![]);
    assert_eq!(
        message,
        format!("workflow {}: node n0 references task {} which is not registered", main_wf(), shown("wf.missing"))
    );
}

#[test]
fn task_lookup_is_exact() {
    let mut n0 = task_node("n0", "wf.noop", vec![]);
    if let Some(Target::TaskNode(t)) = &mut n0.target
        && let Some(aloft_proto::flyteidl::core::task_node::Reference::ReferenceId(id)) = &mut t.reference
    {
        id.version = "v2".into();
    }
    let message = error_of((&[], &[]), vec![n0], vec![]);
    assert_eq!(
        message,
        format!(
            "workflow {}: node n0 references task flytesnacks/development/wf.noop@v2 which is not registered",
            main_wf()
        )
    );
}

#[test]
fn unregistered_task_in_a_branch() {
    let message = error_of(
        (&[("a", int())], &[]),
        vec![branch_node(
            "n0",
            vec![bind(".a", input("a"))],
            vec![case(greater_than(".a", 1), task_node("n0", "wf.missing", vec![]))],
            None,
        )],
        vec![],
    );
    assert_eq!(
        message,
        format!("workflow {}: node n0-n0 references task {} which is not registered", main_wf(), shown("wf.missing"))
    );
}

#[test]
fn unregistered_task_in_an_array_node() {
    let message = error_of(
        (&[("xs", list(int()))], &[]),
        vec![array_node("n0", "wf.map_missing", vec![bind("x", input("xs"))])],
        vec![],
    );
    assert_eq!(
        message,
        format!("workflow {}: node n0 references task {} which is not registered", main_wf(), shown("wf.map_missing"))
    );
}

#[test]
fn unregistered_task_in_a_nested_sub_workflow() {
    let inner = workflow("wf.inner", iface(&[], &[]), vec![task_node("n0", "wf.missing", vec![])], vec![]);
    let outer = workflow("wf.outer", iface(&[], &[]), vec![sub_wf_node("n0", "wf.inner", vec![])], vec![]);
    let main = workflow("wf.main", iface(&[], &[]), vec![sub_wf_node("n0", "wf.outer", vec![])], vec![]);
    let message = error_of_spec(spec(main, vec![outer, inner]));
    assert_eq!(
        message,
        format!(
            "workflow {}: node n0 references task {} which is not registered",
            shown("wf.inner"),
            shown("wf.missing")
        )
    );
}

#[test]
fn array_node_binding_must_be_a_list() {
    let message =
        error_of((&[("a", int())], &[]), vec![array_node("n0", "wf.ints", vec![bind("xs", input("a"))])], vec![]);
    assert_eq!(
        message,
        format!(
            "workflow {}: node n0 input xs expects list<integer> but is bound to workflow input a of type integer",
            main_wf()
        )
    );
}

#[test]
fn unknown_sub_workflow() {
    let message = error_of((&[], &[]), vec![sub_wf_node("n0", "wf.nowhere", vec![])], vec![]);
    assert_eq!(
        message,
        format!(
            "workflow {}: node n0 references sub-workflow {} which is not among the spec's sub-workflows",
            main_wf(),
            shown("wf.nowhere")
        )
    );
}

#[test]
fn recursive_sub_workflows() {
    let a = workflow("wf.a", iface(&[], &[]), vec![sub_wf_node("n0", "wf.b", vec![])], vec![]);
    let b = workflow("wf.b", iface(&[], &[]), vec![sub_wf_node("n0", "wf.a", vec![])], vec![]);
    let main = workflow("wf.main", iface(&[], &[]), vec![sub_wf_node("n0", "wf.a", vec![])], vec![]);
    assert_eq!(
        error_of_spec(spec(main, vec![a, b])),
        format!("workflow {}: node n0 references sub-workflow {} which contains itself", shown("wf.b"), shown("wf.a"))
    );
}

#[test]
fn conflicting_sub_workflow_definitions() {
    let a = workflow("wf.a", iface(&[], &[]), vec![task_node("n0", "wf.noop", vec![])], vec![]);
    let mut a2 = a.clone();
    a2.nodes.push(task_node("n1", "wf.noop", vec![]));
    let main = workflow("wf.main", iface(&[], &[]), vec![sub_wf_node("n0", "wf.a", vec![])], vec![]);
    assert_eq!(
        error_of_spec(spec(main, vec![a, a2])),
        format!("sub-workflow {} is defined more than once with different templates", shown("wf.a"))
    );
}

#[test]
fn unknown_launch_plan() {
    let message = error_of((&[], &[]), vec![lp_node("n0", "wf.other_lp", vec![])], vec![]);
    assert_eq!(
        message,
        format!(
            "workflow {}: node n0 references launch plan {} which is not registered",
            main_wf(),
            shown("wf.other_lp")
        )
    );
}

#[test]
fn launch_plan_input_type_mismatch() {
    let message =
        error_of((&[("s", string())], &[]), vec![lp_node("n0", "wf.lp", vec![bind("x", input("s"))])], vec![]);
    assert_eq!(
        message,
        format!(
            "workflow {}: node n0 input x expects integer but is bound to workflow input s of type string",
            main_wf()
        )
    );
}

#[test]
fn output_bound_to_unknown_node() {
    let message = error_of(
        (&[], &[("out", int())]),
        vec![task_node("n0", "wf.noop", vec![])],
        vec![bind("out", promise("n5", "o0"))],
    );
    assert_eq!(message, format!("workflow {}: output out is bound to unknown node n5", main_wf()));
}

#[test]
fn output_bound_to_unknown_variable() {
    let message = error_of(
        (&[("a", int())], &[("out", int())]),
        vec![task_node("n0", "wf.inc", vec![bind("x", input("a"))])],
        vec![bind("out", promise("n0", "result"))],
    );
    assert_eq!(
        message,
        format!("workflow {}: output out is bound to n0.result but node n0 has no output result", main_wf())
    );
}

#[test]
fn output_not_bound() {
    let message = error_of((&[], &[("out", int())]), vec![task_node("n0", "wf.noop", vec![])], vec![]);
    assert_eq!(message, format!("workflow {}: output out is required but not bound", main_wf()));
}

#[test]
fn output_not_declared() {
    let message =
        error_of((&[], &[]), vec![task_node("n0", "wf.struct", vec![])], vec![bind("extra", promise("n0", "o0"))]);
    assert_eq!(message, format!("workflow {}: the workflow has no output extra, but it is bound", main_wf()));
}

#[test]
fn output_type_mismatch() {
    let message = error_of(
        (&[("a", int())], &[("out", string())]),
        vec![task_node("n0", "wf.inc", vec![bind("x", input("a"))])],
        vec![bind("out", promise("n0", "o0"))],
    );
    assert_eq!(
        message,
        format!("workflow {}: output out expects string but is bound to n0.o0 of type integer", main_wf())
    );
}

fn without_if_else(id: &str) -> Node {
    node(id, Target::BranchNode(Box::new(aloft_proto::flyteidl::core::BranchNode { if_else: None })), vec![])
}

#[test]
fn branch_without_cases() {
    assert_eq!(
        error_of((&[], &[]), vec![without_if_else("n0")], vec![]),
        format!("workflow {}: branch node n0 has no cases", main_wf())
    );
    let empty = node(
        "n0",
        Target::BranchNode(Box::new(aloft_proto::flyteidl::core::BranchNode {
            if_else: Some(Box::new(IfElseBlock::default())),
        })),
        vec![],
    );
    assert_eq!(
        error_of((&[], &[]), vec![empty], vec![]),
        format!("workflow {}: branch node n0 has no cases", main_wf())
    );
}

#[test]
fn branch_without_default() {
    let mut n0 = branch_node(
        "n0",
        vec![bind(".a", input("a"))],
        vec![case(greater_than(".a", 1), task_node("n0", "wf.noop", vec![]))],
        None,
    );
    if let Some(Target::BranchNode(b)) = &mut n0.target {
        b.if_else.as_mut().unwrap().default = None;
    }
    assert_eq!(
        error_of((&[("a", int())], &[]), vec![n0], vec![]),
        format!("workflow {}: branch node n0 has neither an else node nor an else error", main_wf())
    );
}

#[test]
fn branch_condition_reads_an_unbound_variable() {
    let n0 = branch_node(
        "n0",
        vec![bind(".a", input("a"))],
        vec![case(greater_than(".b", 1), task_node("n0", "wf.noop", vec![]))],
        None,
    );
    assert_eq!(
        error_of((&[("a", int())], &[]), vec![n0], vec![]),
        format!("workflow {}: branch node n0 condition reads .b which is not one of its inputs", main_wf())
    );
}

#[test]
fn branch_case_without_condition() {
    let mut n0 = branch_node(
        "n0",
        vec![bind(".a", input("a"))],
        vec![case(BooleanExpression::default(), task_node("n0", "wf.noop", vec![]))],
        None,
    );
    if let Some(Target::BranchNode(b)) = &mut n0.target {
        b.if_else.as_mut().unwrap().case.as_mut().unwrap().condition = None;
    }
    assert_eq!(
        error_of((&[("a", int())], &[]), vec![n0], vec![]),
        format!("workflow {}: branch node n0 case 1 is missing condition", main_wf())
    );
}

#[test]
fn branch_child_binding_is_type_checked() {
    let n0 = branch_node(
        "n0",
        vec![bind(".a", input("a"))],
        vec![case(greater_than(".a", 1), task_node("n0", "wf.greet", vec![bind("name", input("a"))]))],
        None,
    );
    assert_eq!(
        error_of((&[("a", int())], &[]), vec![n0], vec![]),
        format!(
            "workflow {}: node n0-n0 input name expects string but is bound to workflow input a of type integer",
            main_wf()
        )
    );
}

#[test]
fn signal_gate_without_type() {
    let message = error_of((&[], &[]), vec![gate("n0", signal("go", None), vec![])], vec![]);
    assert_eq!(
        message,
        format!("workflow {}: gate node n0 waits for signal \"go\" with a missing or invalid type", main_wf())
    );
}

#[test]
fn signal_gate_with_malformed_type() {
    let malformed = LiteralType { r#type: Some(Type::CollectionType(Box::default())), ..Default::default() };
    let message = error_of((&[], &[]), vec![gate("n0", signal("go", Some(malformed)), vec![])], vec![]);
    assert_eq!(
        message,
        format!("workflow {}: gate node n0 waits for signal \"go\" with a missing or invalid type", main_wf())
    );
}

#[test]
fn gate_without_condition() {
    let n0 = node("n0", Target::GateNode(aloft_proto::flyteidl::core::GateNode { condition: None }), vec![]);
    assert_eq!(
        error_of((&[], &[]), vec![n0], vec![]),
        format!("workflow {}: gate node n0 has no condition", main_wf())
    );
}

#[test]
fn signal_gate_output_type_is_checked_downstream() {
    let message = error_of(
        (&[], &[]),
        vec![
            gate("n0", signal("go", Some(boolean())), vec![]),
            task_node("n1", "wf.inc", vec![bind("x", promise("n0", "o0"))]),
        ],
        vec![],
    );
    assert_eq!(
        message,
        format!("workflow {}: node n1 input x expects integer but is bound to n0.o0 of type boolean", main_wf())
    );
}

#[test]
fn sleep_gate_accepts_no_inputs() {
    let message = error_of((&[("a", int())], &[]), vec![gate("n0", sleep(5), vec![bind("x", input("a"))])], vec![]);
    assert_eq!(message, format!("workflow {}: node n0 has no input x, but it is bound", main_wf()));
}

#[test]
fn workflow_template_without_id() {
    let wf = WorkflowTemplate { nodes: vec![task_node("n0", "wf.noop", vec![])], ..Default::default() };
    assert_eq!(error_of_spec(spec(wf, vec![])), "workflow <unnamed>: workflow template is missing id");
}

#[test]
fn errors_are_comparable_values() {
    let wf = workflow("wf.main", iface(&[], &[]), vec![task_node("n0", "wf.missing", vec![])], vec![]);
    let err = compile_workflow(&spec(wf, vec![]), &Registry::default()).unwrap_err();
    assert_eq!(err, CompileError::UnknownTask { workflow: main_wf(), node: "n0".into(), task: shown("wf.missing") });
}

#[test]
fn unreferenced_sub_workflow_containing_itself() {
    let a = workflow("wf.a", iface(&[], &[]), vec![sub_wf_node("n0", "wf.a", vec![])], vec![]);
    let main = workflow("wf.main", iface(&[], &[]), vec![task_node("n0", "wf.noop", vec![])], vec![]);
    assert_eq!(
        error_of_spec(spec(main, vec![a])),
        format!("workflow {}: node n0 references sub-workflow {} which contains itself", shown("wf.a"), shown("wf.a"))
    );
}
