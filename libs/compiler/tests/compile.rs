//! Workflows that compile, and the shape of what they compile to.

mod common;

use aloft_compiler::{
    END_NODE_ID, START_NODE_ID, compile_dynamic, compile_workflow, dynamic_workflow_id, synthesize_task_workflow,
};
use aloft_proto::flyteidl::core::{
    Binding, DynamicJobSpec, Identifier, Node, ResourceType, RetryStrategy, TaskMetadata, binding_data, if_else_block,
    node::Target,
};
use common::*;

fn inc() -> aloft_proto::flyteidl::core::TaskTemplate {
    task("wf.inc", &[("x", int())], &[("o0", int())])
}

#[test]
fn simple_chain() {
    let wf = workflow(
        "wf.chain",
        iface(&[("a", int())], &[("out", int())]),
        vec![
            task_node("n0", "wf.inc", vec![bind("x", input("a"))]),
            task_node("n1", "wf.inc", vec![bind("x", promise("n0", "o0"))]),
        ],
        vec![bind("out", promise("n1", "o0"))],
    );
    let closure = compile_workflow(&spec(wf, vec![]), &Registry::with_tasks(vec![inc()])).unwrap();
    let primary = closure.primary.as_ref().unwrap();

    assert_eq!(node_ids(primary), strings(&["start-node", "end-node", "n0", "n1"]));
    assert_eq!(find(primary, START_NODE_ID), &Node { id: START_NODE_ID.into(), ..Default::default() });
    let out = bind("out", promise("n1", "o0"));
    assert_eq!(
        find(primary, END_NODE_ID),
        &Node { id: END_NODE_ID.into(), inputs: vec![out.clone()], ..Default::default() }
    );
    assert_eq!(primary.template.as_ref().unwrap().outputs, vec![out]);

    assert_eq!(promise_node(&find(primary, "n0").inputs[0]), START_NODE_ID);
    assert!(find(primary, "n0").upstream_node_ids.is_empty(), "start-node is never listed");
    assert_eq!(find(primary, "n1").upstream_node_ids, strings(&["n0"]));

    assert_eq!(downstream_of(primary, START_NODE_ID), strings(&["n0"]));
    assert_eq!(downstream_of(primary, "n0"), strings(&["n1"]));
    assert_eq!(downstream_of(primary, "n1"), strings(&["end-node"]));
    assert_eq!(upstream_of(primary, "n0"), strings(&["start-node"]));
    assert_eq!(upstream_of(primary, "n1"), strings(&["n0"]));
    assert_eq!(upstream_of(primary, END_NODE_ID), strings(&["n1"]));
    assert!(downstream_of(primary, END_NODE_ID).is_empty());

    // one task, referenced twice, listed once with the id exactly as referenced
    assert_eq!(closure.tasks.len(), 1);
    assert_eq!(closure.tasks[0].template.as_ref().unwrap().id, Some(task_id("wf.inc")));
    assert!(closure.sub_workflows.is_empty());
}

#[test]
fn fan_out_fan_in() {
    let tasks = vec![
        task("wf.split", &[("a", int())], &[("o0", int()), ("o1", int())]),
        task("wf.square", &[("x", int())], &[("o0", int())]),
        task("wf.total", &[("xs", list(int())), ("named", map(int()))], &[("o0", int())]),
    ];
    let wf = workflow(
        "wf.fan",
        iface(&[("a", int())], &[("total", int())]),
        vec![
            task_node("n0", "wf.split", vec![bind("a", input("a"))]),
            task_node("n1", "wf.square", vec![bind("x", promise("n0", "o0"))]),
            task_node("n2", "wf.square", vec![bind("x", promise("n0", "o1"))]),
            task_node(
                "n3",
                "wf.total",
                vec![
                    bind("xs", collection(vec![promise("n1", "o0"), promise("n2", "o0"), lit_int(7)])),
                    bind("named", map_of(vec![("first", promise("n1", "o0")), ("input", input("a"))])),
                ],
            ),
        ],
        vec![bind("total", promise("n3", "o0"))],
    );
    let closure = compile_workflow(&spec(wf, vec![]), &Registry::with_tasks(tasks)).unwrap();
    let primary = closure.primary.as_ref().unwrap();

    assert_eq!(downstream_of(primary, "n0"), strings(&["n1", "n2"]));
    assert_eq!(find(primary, "n3").upstream_node_ids, strings(&["n1", "n2"]));
    assert_eq!(upstream_of(primary, "n3"), strings(&["n1", "n2", "start-node"]));
    assert_eq!(downstream_of(primary, START_NODE_ID), strings(&["n0", "n3"]));
    let names: Vec<String> =
        closure.tasks.iter().map(|t| t.template.as_ref().unwrap().id.as_ref().unwrap().name.clone()).collect();
    assert_eq!(names, strings(&["wf.split", "wf.square", "wf.total"]));
}

/// Every promise of the global input node `""` becomes `start-node`, at any depth.
#[test]
fn workflow_inputs_are_rewritten_to_start_node() {
    let tasks = vec![task("wf.all", &[("xs", list(int())), ("m", map(list(int()))), ("o", optional(int()))], &[])];
    let wf = workflow(
        "wf.inputs",
        iface(&[("a", int()), ("b", int())], &[]),
        vec![task_node(
            "n0",
            "wf.all",
            vec![
                bind("xs", collection(vec![input("a"), input("b")])),
                bind("m", map_of(vec![("k", collection(vec![input("a")]))])),
                bind("o", input("b")),
            ],
        )],
        vec![],
    );
    let closure = compile_workflow(&spec(wf, vec![]), &Registry::with_tasks(tasks)).unwrap();
    let primary = closure.primary.as_ref().unwrap();
    let mut seen = Vec::new();
    fn walk(data: &aloft_proto::flyteidl::core::BindingData, seen: &mut Vec<String>) {
        match data.value.as_ref().unwrap() {
            binding_data::Value::Promise(p) => seen.push(p.node_id.clone()),
            binding_data::Value::Collection(c) => c.bindings.iter().for_each(|b| walk(b, seen)),
            binding_data::Value::Map(m) => m.bindings.values().for_each(|b| walk(b, seen)),
            _ => {}
        }
    }
    for b in &find(primary, "n0").inputs {
        walk(b.binding.as_ref().unwrap(), &mut seen);
    }
    assert_eq!(seen, strings(&["start-node", "start-node", "start-node", "start-node"]));
    // a node with no consumers still finishes before the workflow ends
    assert_eq!(upstream_of(primary, END_NODE_ID), strings(&["n0"]));
}

/// flytekit's `a >> b` adds explicit upstream ids; nodes without any dependency hang off start-node.
#[test]
fn explicit_dependencies_and_orphans() {
    let tasks = vec![task("wf.noop", &[], &[]), inc()];
    let wf = workflow(
        "wf.explicit",
        iface(&[("a", int())], &[("out", int())]),
        vec![
            task_node("n0", "wf.noop", vec![]),
            after(task_node("n1", "wf.inc", vec![bind("x", input("a"))]), &["n0"]),
            task_node("n2", "wf.noop", vec![]),
        ],
        vec![bind("out", promise("n1", "o0"))],
    );
    let closure = compile_workflow(&spec(wf, vec![]), &Registry::with_tasks(tasks)).unwrap();
    let primary = closure.primary.as_ref().unwrap();
    assert_eq!(find(primary, "n1").upstream_node_ids, strings(&["n0"]));
    assert_eq!(upstream_of(primary, "n1"), strings(&["n0", "start-node"]));
    assert_eq!(downstream_of(primary, START_NODE_ID), strings(&["n0", "n1", "n2"]));
    assert_eq!(upstream_of(primary, END_NODE_ID), strings(&["n1", "n2"]));
    assert_eq!(downstream_of(primary, "n0"), strings(&["n1"]));
}

#[test]
fn end_node_binds_workflow_inputs_and_literals() {
    let wf = workflow(
        "wf.passthrough",
        iface(&[("a", int())], &[("same", int()), ("const", string()), ("computed", int())]),
        vec![task_node("n0", "wf.inc", vec![bind("x", input("a"))])],
        vec![bind("same", input("a")), bind("const", lit_str("hello")), bind("computed", promise("n0", "o0"))],
    );
    let closure = compile_workflow(&spec(wf, vec![]), &Registry::with_tasks(vec![inc()])).unwrap();
    let primary = closure.primary.as_ref().unwrap();
    let end = find(primary, END_NODE_ID);
    assert_eq!(end.inputs.len(), 3);
    assert_eq!(promise_node(&end.inputs[0]), START_NODE_ID);
    assert_eq!(end.inputs, primary.template.as_ref().unwrap().outputs);
    assert_eq!(upstream_of(primary, END_NODE_ID), strings(&["n0", "start-node"]));
    assert_eq!(downstream_of(primary, START_NODE_ID), strings(&["end-node", "n0"]));
}

#[test]
fn branch_with_nested_task_nodes() {
    let tasks = vec![
        inc(),
        task("wf.double", &[("x", int())], &[("o0", int())]),
        task("wf.negate", &[("x", int())], &[("o0", int())]),
        task("wf.zero", &[], &[("o0", int())]),
    ];
    // if n0.o0 > 10: double(n0.o0) elif n0.o0 > 5: (if a > 0: negate(a) else: zero()) else: inc(a)
    let inner = branch_node(
        "n1",
        vec![bind(".a", input("a"))],
        vec![case(greater_than(".a", 0), task_node("n0", "wf.negate", vec![bind("x", input("a"))]))],
        Some(task_node("n1", "wf.zero", vec![])),
    );
    let wf = workflow(
        "wf.cond",
        iface(&[("a", int())], &[("out", int())]),
        vec![
            task_node("n0", "wf.inc", vec![bind("x", input("a"))]),
            branch_node(
                "n1",
                vec![bind("n0.o0", promise("n0", "o0"))],
                vec![
                    case(greater_than("n0.o0", 10), task_node("n0", "wf.double", vec![bind("x", promise("n0", "o0"))])),
                    case(greater_than("n0.o0", 5), inner),
                ],
                Some(task_node("n2", "wf.inc", vec![bind("x", input("a"))])),
            ),
            task_node("n2", "wf.inc", vec![bind("x", promise("n1", "o0"))]),
        ],
        vec![bind("out", promise("n2", "o0"))],
    );
    let closure = compile_workflow(&spec(wf, vec![]), &Registry::with_tasks(tasks)).unwrap();
    let primary = closure.primary.as_ref().unwrap();

    let branch = find(primary, "n1");
    let Some(Target::BranchNode(b)) = &branch.target else { panic!("not a branch") };
    let if_else = b.if_else.as_ref().unwrap();
    let then = if_else.case.as_ref().unwrap().then_node.as_ref().unwrap();
    assert_eq!(then.id, "n1-n0");
    assert_eq!(then.upstream_node_ids, strings(&["n0"]));
    let nested = if_else.other[0].then_node.as_ref().unwrap();
    assert_eq!(nested.id, "n1-n1");
    let Some(Target::BranchNode(nb)) = &nested.target else { panic!("not a branch") };
    assert_eq!(nb.if_else.as_ref().unwrap().case.as_ref().unwrap().then_node.as_ref().unwrap().id, "n1-n1-n0");
    let Some(if_else_block::Default::ElseNode(else_node)) = &if_else.default else { panic!("no else") };
    assert_eq!(else_node.id, "n1-n2");
    assert_eq!(promise_node(&else_node.inputs[0]), START_NODE_ID);

    // children are not top-level nodes, but their inputs are recorded as upstream connections
    assert_eq!(node_ids(primary), strings(&["start-node", "end-node", "n0", "n1", "n2"]));
    assert_eq!(upstream_of(primary, "n1-n0"), strings(&["n0"]));
    assert_eq!(upstream_of(primary, "n1-n2"), strings(&["start-node"]));
    assert_eq!(upstream_of(primary, "n1-n1-n0"), strings(&["start-node"]));
    // the branch waits for whatever its children read
    assert_eq!(branch.upstream_node_ids, strings(&["n0"]));
    assert_eq!(upstream_of(primary, "n1"), strings(&["n0", "start-node"]));
    assert_eq!(find(primary, "n2").upstream_node_ids, strings(&["n1"]));

    let mut names: Vec<String> =
        closure.tasks.iter().map(|t| t.template.as_ref().unwrap().id.as_ref().unwrap().name.clone()).collect();
    names.sort();
    assert_eq!(names, strings(&["wf.double", "wf.inc", "wf.negate", "wf.zero"]));
}

#[test]
fn array_node_over_a_map_task() {
    let tasks = vec![
        task("wf.make", &[("n", int())], &[("o0", list(int()))]),
        task("wf.map_square_6b3bd", &[("x", list(int()))], &[("o0", list(int()))]),
    ];
    let wf = workflow(
        "wf.mapped",
        iface(&[("n", int())], &[("squares", list(int()))]),
        vec![
            task_node("n0", "wf.make", vec![bind("n", input("n"))]),
            array_node("n1", "wf.map_square_6b3bd", vec![bind("x", promise("n0", "o0"))]),
        ],
        vec![bind("squares", promise("n1", "o0"))],
    );
    let closure = compile_workflow(&spec(wf, vec![]), &Registry::with_tasks(tasks)).unwrap();
    let primary = closure.primary.as_ref().unwrap();
    assert_eq!(find(primary, "n1").upstream_node_ids, strings(&["n0"]));
    assert_eq!(upstream_of(primary, END_NODE_ID), strings(&["n1"]));
    assert!(closure.tasks.iter().any(|t| t.template.as_ref().unwrap().id == Some(task_id("wf.map_square_6b3bd"))));
}

#[test]
fn array_node_with_original_sub_node_interface_maps_over_lists() {
    let mut n1 = array_node("n1", "wf.inc", vec![bind("x", promise("n0", "o0"))]);
    if let Some(Target::ArrayNode(a)) = &mut n1.target {
        a.is_original_sub_node_interface = Some(true);
    }
    let wf = workflow(
        "wf.mapped_lp",
        iface(&[("n", int())], &[("out", list(int()))]),
        vec![task_node("n0", "wf.make", vec![bind("n", input("n"))]), n1],
        vec![bind("out", promise("n1", "o0"))],
    );
    let tasks = vec![inc(), task("wf.make", &[("n", int())], &[("o0", list(int()))])];
    compile_workflow(&spec(wf, vec![]), &Registry::with_tasks(tasks)).unwrap();
}

/// primary -> sub_a -> sub_b -> sub_c, plus an unreferenced sub-workflow.
#[test]
fn sub_workflows_three_deep() {
    let leaf = task("wf.leaf", &[("x", int())], &[("o0", int())]);
    let sub_c = workflow(
        "wf.sub_c",
        iface(&[("x", int())], &[("o0", int())]),
        vec![task_node("n0", "wf.leaf", vec![bind("x", input("x"))])],
        vec![bind("o0", promise("n0", "o0"))],
    );
    let sub_b = workflow(
        "wf.sub_b",
        iface(&[("x", int())], &[("o0", int())]),
        vec![sub_wf_node("n0", "wf.sub_c", vec![bind("x", input("x"))])],
        vec![bind("o0", promise("n0", "o0"))],
    );
    let sub_a = workflow(
        "wf.sub_a",
        iface(&[("x", int())], &[("o0", int())]),
        vec![sub_wf_node("n0", "wf.sub_b", vec![bind("x", input("x"))])],
        vec![bind("o0", promise("n0", "o0"))],
    );
    let unused = workflow("wf.unused", iface(&[], &[]), vec![task_node("n0", "wf.noop", vec![])], vec![]);
    let primary = workflow(
        "wf.outer",
        iface(&[("a", int())], &[("out", int())]),
        vec![
            sub_wf_node("n0", "wf.sub_a", vec![bind("x", input("a"))]),
            sub_wf_node("n1", "wf.sub_a", vec![bind("x", promise("n0", "o0"))]),
        ],
        vec![bind("out", promise("n1", "o0"))],
    );
    let registry = Registry::with_tasks(vec![leaf, task("wf.noop", &[], &[])]);
    let closure = compile_workflow(&spec(primary, vec![sub_c, sub_b, sub_a, unused]), &registry).unwrap();

    let sub_names: Vec<String> =
        closure.sub_workflows.iter().map(|w| w.template.as_ref().unwrap().id.as_ref().unwrap().name.clone()).collect();
    assert_eq!(sub_names, strings(&["wf.sub_c", "wf.sub_b", "wf.sub_a", "wf.unused"]));
    for sub in &closure.sub_workflows {
        assert_eq!(&node_ids(sub)[..2], &strings(&["start-node", "end-node"])[..]);
        assert!(sub.connections.is_some());
    }
    let sub_c = &closure.sub_workflows[0];
    assert_eq!(promise_node(&find(sub_c, "n0").inputs[0]), START_NODE_ID);
    assert_eq!(upstream_of(sub_c, END_NODE_ID), strings(&["n0"]));
    let task_names: Vec<String> =
        closure.tasks.iter().map(|t| t.template.as_ref().unwrap().id.as_ref().unwrap().name.clone()).collect();
    assert_eq!(task_names, strings(&["wf.leaf", "wf.noop"]));
    assert_eq!(find(closure.primary.as_ref().unwrap(), "n1").upstream_node_ids, strings(&["n0"]));
}

#[test]
fn identical_duplicate_sub_workflows_are_listed_once() {
    let sub = workflow(
        "wf.sub",
        iface(&[("x", int())], &[("o0", int())]),
        vec![task_node("n0", "wf.inc", vec![bind("x", input("x"))])],
        vec![bind("o0", promise("n0", "o0"))],
    );
    let primary = workflow(
        "wf.outer",
        iface(&[("a", int())], &[]),
        vec![sub_wf_node("n0", "wf.sub", vec![bind("x", input("a"))])],
        vec![],
    );
    let closure = compile_workflow(&spec(primary, vec![sub.clone(), sub]), &Registry::with_tasks(vec![inc()])).unwrap();
    assert_eq!(closure.sub_workflows.len(), 1);
}

#[test]
fn launch_plan_node() {
    let registry = Registry::with_tasks(vec![inc()])
        .launch_plan("wf.child_lp", iface(&[("x", int()), ("scale", float())], &[("result", int())]));
    let wf = workflow(
        "wf.parent",
        iface(&[("a", int())], &[("out", int())]),
        vec![
            // `scale` has a default in the launch plan and is not bound
            lp_node("n0", "wf.child_lp", vec![bind("x", input("a"))]),
            task_node("n1", "wf.inc", vec![bind("x", promise("n0", "result"))]),
        ],
        vec![bind("out", promise("n1", "o0"))],
    );
    let closure = compile_workflow(&spec(wf, vec![]), &registry).unwrap();
    assert_eq!(closure.launch_plans.len(), 1);
    let lp = closure.launch_plans[0].template.as_ref().unwrap();
    assert_eq!(lp.id, Some(lp_id("wf.child_lp")));
    assert_eq!(find(closure.primary.as_ref().unwrap(), "n1").upstream_node_ids, strings(&["n0"]));
}

#[test]
fn gate_nodes() {
    let tasks = vec![inc(), task("wf.report", &[("x", int()), ("ok", boolean())], &[])];
    let wf = workflow(
        "wf.gated",
        iface(&[("a", int())], &[("out", int())]),
        vec![
            task_node("n0", "wf.inc", vec![bind("x", input("a"))]),
            // approve passes its inputs through
            gate("n1", approve("review"), vec![bind("o0", promise("n0", "o0"))]),
            gate("n2", signal("confirm", Some(boolean())), vec![]),
            after(gate("n3", sleep(30), vec![]), &["n1"]),
            after(
                task_node("n4", "wf.report", vec![bind("x", promise("n1", "o0")), bind("ok", promise("n2", "o0"))]),
                &["n3"],
            ),
        ],
        vec![bind("out", promise("n1", "o0"))],
    );
    let closure = compile_workflow(&spec(wf, vec![]), &Registry::with_tasks(tasks)).unwrap();
    let primary = closure.primary.as_ref().unwrap();
    assert_eq!(find(primary, "n1").upstream_node_ids, strings(&["n0"]));
    assert_eq!(find(primary, "n4").upstream_node_ids, strings(&["n1", "n2", "n3"]));
    assert_eq!(upstream_of(primary, "n2"), strings(&["start-node"]));
    assert_eq!(upstream_of(primary, "n3"), strings(&["n1"]));
    assert_eq!(upstream_of(primary, END_NODE_ID), strings(&["n1", "n4"]));
}

#[test]
fn approve_gate_passes_its_input_type_through() {
    let tasks = vec![inc(), task("wf.shout", &[("s", string())], &[])];
    let wf = workflow(
        "wf.gated",
        iface(&[("a", int())], &[]),
        vec![
            task_node("n0", "wf.inc", vec![bind("x", input("a"))]),
            gate("n1", approve("review"), vec![bind("o0", promise("n0", "o0"))]),
            task_node("n2", "wf.shout", vec![bind("s", promise("n1", "o0"))]),
        ],
        vec![],
    );
    let err = compile_workflow(&spec(wf, vec![]), &Registry::with_tasks(tasks)).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("workflow {}: node n2 input s expects string but is bound to n1.o0 of type integer", shown("wf.gated"))
    );
}

#[test]
fn dynamic_job_spec() {
    let registered = task("wf.registered", &[("x", int())], &[("o0", int())]);
    let shipped = task("wf.shipped_only", &[("x", int())], &[("o0", int())]);
    let spec = DynamicJobSpec {
        nodes: vec![
            task_node("dn0", "wf.shipped_only", vec![bind("x", input("n"))]),
            task_node("dn1", "wf.registered", vec![bind("x", promise("dn0", "o0"))]),
        ],
        min_successes: 2,
        outputs: vec![bind("o0", promise("dn1", "o0"))],
        tasks: vec![shipped],
        subworkflows: vec![],
    };
    let interface = iface(&[("n", int())], &[("o0", int())]);
    let closure = compile_dynamic(&spec, "n2", &interface, &Registry::with_tasks(vec![registered])).unwrap();
    let primary = closure.primary.as_ref().unwrap();
    let template = primary.template.as_ref().unwrap();
    assert_eq!(template.id, Some(dynamic_workflow_id("n2")));
    assert_eq!(
        template.id,
        Some(Identifier {
            resource_type: ResourceType::Workflow as i32,
            name: "dynamic_n2".into(),
            ..Default::default()
        })
    );
    assert_eq!(template.interface, Some(interface));
    assert_eq!(node_ids(primary), strings(&["start-node", "end-node", "dn0", "dn1"]));
    assert_eq!(promise_node(&find(primary, "dn0").inputs[0]), START_NODE_ID);
    let names: Vec<String> =
        closure.tasks.iter().map(|t| t.template.as_ref().unwrap().id.as_ref().unwrap().name.clone()).collect();
    assert_eq!(names, strings(&["wf.shipped_only", "wf.registered"]));
}

#[test]
fn dynamic_job_spec_with_sub_workflow() {
    let sub = workflow(
        "wf.dyn_sub",
        iface(&[("x", int())], &[("o0", int())]),
        vec![task_node("n0", "wf.inc", vec![bind("x", input("x"))])],
        vec![bind("o0", promise("n0", "o0"))],
    );
    let spec = DynamicJobSpec {
        nodes: vec![sub_wf_node("dn0", "wf.dyn_sub", vec![bind("x", input("n"))])],
        min_successes: 1,
        outputs: vec![bind("o0", promise("dn0", "o0"))],
        tasks: vec![inc()],
        subworkflows: vec![sub],
    };
    let interface = iface(&[("n", int())], &[("o0", int())]);
    let closure = compile_dynamic(&spec, "n0", &interface, &Registry::default()).unwrap();
    assert_eq!(closure.sub_workflows.len(), 1);
    assert_eq!(closure.tasks.len(), 1);
}

#[test]
fn synthesized_task_workflow() {
    let mut t = task("wf.tasks.say_hello", &[("name", string()), ("times", int())], &[("o0", string())]);
    let spec = synthesize_task_workflow(&t);
    let template = spec.template.as_ref().unwrap();
    assert_eq!(template.id, Some(Identifier { name: ".flytegen.wf.tasks.say_hello".into(), ..wf_id("") }));
    assert_eq!(template.interface, t.interface);
    assert_eq!(template.nodes.len(), 1);
    let n0 = &template.nodes[0];
    assert_eq!(n0.id, "n0");
    let metadata = n0.metadata.as_ref().unwrap();
    assert_eq!(metadata.name, "wftaskssayhello");
    assert_eq!(metadata.retries, Some(RetryStrategy { retries: 3 }));
    assert_eq!(n0.inputs, vec![bind("name", input("name")), bind("times", input("times"))]);
    assert_eq!(n0.target, Some(task_target("wf.tasks.say_hello")));
    assert_eq!(template.outputs, vec![bind("o0", promise("n0", "o0"))]);

    let closure = compile_workflow(&spec, &Registry::with_tasks(vec![t.clone()])).unwrap();
    let primary = closure.primary.as_ref().unwrap();
    assert_eq!(node_ids(primary), strings(&["start-node", "end-node", "n0"]));
    assert_eq!(closure.tasks.len(), 1);

    t.metadata = Some(TaskMetadata { retries: Some(RetryStrategy { retries: 1 }), ..Default::default() });
    let spec = synthesize_task_workflow(&t);
    let retries = spec.template.unwrap().nodes[0].metadata.as_ref().unwrap().retries;
    assert_eq!(retries, Some(RetryStrategy { retries: 1 }));
}

#[test]
fn optional_inputs_may_stay_unbound() {
    let tasks = vec![task("wf.opt", &[("x", int()), ("maybe", optional(string()))], &[])];
    let wf = workflow(
        "wf.optional",
        iface(&[("a", int())], &[]),
        vec![task_node("n0", "wf.opt", vec![bind("x", input("a"))])],
        vec![],
    );
    compile_workflow(&spec(wf, vec![]), &Registry::with_tasks(tasks)).unwrap();
}

#[test]
fn attribute_access_skips_the_type_check() {
    let tasks = vec![task("wf.make", &[], &[("o0", generic())]), inc()];
    let wf = workflow(
        "wf.attrs",
        iface(&[], &[("out", int())]),
        vec![
            task_node("n0", "wf.make", vec![]),
            task_node("n1", "wf.inc", vec![bind("x", attr("n0", "o0", &["count"]))]),
        ],
        vec![bind("out", promise("n1", "o0"))],
    );
    let closure = compile_workflow(&spec(wf, vec![]), &Registry::with_tasks(tasks)).unwrap();
    assert_eq!(find(closure.primary.as_ref().unwrap(), "n1").upstream_node_ids, strings(&["n0"]));
}

#[test]
fn union_values_and_literals_fit_optional_inputs() {
    let tasks = vec![task(
        "wf.opt",
        &[("x", optional(int())), ("xs", optional(list(int()))), ("color", enum_of(&["red", "blue"]))],
        &[],
    )];
    let wf = workflow(
        "wf.unions",
        iface(&[("a", int())], &[]),
        vec![task_node(
            "n0",
            "wf.opt",
            vec![
                bind("x", input("a")),
                bind("xs", collection(vec![input("a"), lit_int(2)])),
                bind("color", lit_str("red")),
            ],
        )],
        vec![],
    );
    compile_workflow(&spec(wf, vec![]), &Registry::with_tasks(tasks)).unwrap();
}

#[test]
fn failure_node_is_compiled_on_the_upstream_side_only() {
    let tasks = vec![inc(), task("wf.cleanup", &[("a", int()), ("err", optional(generic()))], &[])];
    let mut wf = workflow(
        "wf.with_failure",
        iface(&[("a", int())], &[]),
        vec![task_node("n0", "wf.inc", vec![bind("x", input("a"))])],
        vec![],
    );
    wf.failure_node = Some(task_node("fn0", "wf.cleanup", vec![bind("a", input("a"))]));
    let closure = compile_workflow(&spec(wf, vec![]), &Registry::with_tasks(tasks)).unwrap();
    let primary = closure.primary.as_ref().unwrap();
    assert_eq!(upstream_of(primary, "fn0"), strings(&["start-node"]));
    assert!(!downstream_of(primary, START_NODE_ID).contains(&"fn0".to_string()));
    let failure = primary.template.as_ref().unwrap().failure_node.as_ref().unwrap();
    assert_eq!(promise_node(&failure.inputs[0]), START_NODE_ID);
    assert_eq!(closure.tasks.len(), 2);
}

#[test]
fn compiling_is_deterministic() {
    let wf = workflow(
        "wf.chain",
        iface(&[("a", int())], &[("out", int())]),
        vec![
            task_node("n0", "wf.inc", vec![bind("x", input("a"))]),
            task_node("n1", "wf.inc", vec![bind("x", promise("n0", "o0"))]),
        ],
        vec![bind("out", promise("n1", "o0"))],
    );
    let registry = Registry::with_tasks(vec![inc()]);
    let first = compile_workflow(&spec(wf.clone(), vec![]), &registry).unwrap();
    let second = compile_workflow(&spec(wf, vec![]), &registry).unwrap();
    assert_eq!(first, second);
    let _: Vec<Binding> = first.primary.unwrap().template.unwrap().outputs;
}

/// The same workflow as Flyte's `flytepropeller/pkg/compiler/test/testdata/branch/success_1.json`,
/// compiled to the same nodes and connections as its `compiled/success_1.json`.
#[test]
fn matches_flytes_compiled_branch_testdata() {
    use aloft_proto::flyteidl::core::comparison_expression::Operator;
    use std::collections::BTreeMap;
    let tasks = vec![
        task("test_serialization.t2", &[], &[("out_0", string())]),
        task("test_serialization.t3", &[("a", int())], &[("out_0", int())]),
    ];
    let wf = workflow(
        "test_serialization.my_wf",
        iface(&[("a", int())], &[("out_0", string())]),
        vec![
            task_node("node-0", "test_serialization.t3", vec![bind("a", input("a"))]),
            after(
                branch_node(
                    "node-1",
                    vec![bind("out_0", promise("node-0", "out_0"))],
                    vec![case(
                        compare("out_0", Operator::Eq, 1),
                        task_node("branchnode-0", "test_serialization.t2", vec![]),
                    )],
                    None,
                ),
                &["node-0"],
            ),
        ],
        vec![bind("out_0", promise("node-1", "out_0"))],
    );
    let closure = compile_workflow(&spec(wf, vec![]), &Registry::with_tasks(tasks)).unwrap();
    let primary = closure.primary.as_ref().unwrap();
    assert_eq!(node_ids(primary), strings(&["start-node", "end-node", "node-0", "node-1"]));
    assert_eq!(find(primary, "end-node").inputs, vec![bind("out_0", promise("node-1", "out_0"))]);
    assert_eq!(promise_node(&find(primary, "node-0").inputs[0]), "start-node");
    assert!(find(primary, "node-0").upstream_node_ids.is_empty());
    assert_eq!(find(primary, "node-1").upstream_node_ids, strings(&["node-0"]));
    let Some(Target::BranchNode(b)) = &find(primary, "node-1").target else { panic!("not a branch") };
    assert_eq!(
        b.if_else.as_ref().unwrap().case.as_ref().unwrap().then_node.as_ref().unwrap().id,
        "node-1-branchnode-0"
    );

    let connections = primary.connections.as_ref().unwrap();
    let lists = |m: &BTreeMap<String, aloft_proto::flyteidl::core::connection_set::IdList>| {
        m.iter().map(|(k, v)| (k.clone(), v.ids.clone())).collect::<Vec<_>>()
    };
    assert_eq!(
        lists(&connections.downstream),
        vec![
            ("node-0".to_string(), strings(&["node-1"])),
            ("node-1".to_string(), strings(&["end-node"])),
            ("start-node".to_string(), strings(&["node-0"])),
        ]
    );
    assert_eq!(
        lists(&connections.upstream),
        vec![
            ("end-node".to_string(), strings(&["node-1"])),
            ("node-0".to_string(), strings(&["start-node"])),
            ("node-1".to_string(), strings(&["node-0"])),
        ]
    );
}

#[test]
fn workflow_without_nodes_returns_its_input() {
    let wf = workflow("wf.identity", iface(&[("a", int())], &[("out", int())]), vec![], vec![bind("out", input("a"))]);
    let closure = compile_workflow(&spec(wf, vec![]), &Registry::default()).unwrap();
    let primary = closure.primary.as_ref().unwrap();
    assert_eq!(node_ids(primary), strings(&["start-node", "end-node"]));
    assert_eq!(downstream_of(primary, START_NODE_ID), strings(&["end-node"]));
    assert_eq!(upstream_of(primary, END_NODE_ID), strings(&["start-node"]));
    assert!(closure.tasks.is_empty());
}
