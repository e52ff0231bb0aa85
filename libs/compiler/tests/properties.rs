//! Property tests: random DAGs compile into consistent graphs; a back edge is always a cycle.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use aloft_compiler::{CompileError, END_NODE_ID, START_NODE_ID, compile_workflow};
use aloft_proto::flyteidl::core::{Binding, CompiledWorkflow, TaskTemplate};
use common::*;
use proptest::prelude::*;

/// A random DAG: node `i` reads the output of each node in `reads[i]` and of the workflow input when
/// `uses_input[i]`, and lists `explicit[i]` as explicit upstream nodes. Every referenced node has a
/// smaller index, so the graph is acyclic.
#[derive(Debug, Clone)]
struct Dag {
    reads: Vec<BTreeSet<usize>>,
    explicit: Vec<BTreeSet<usize>>,
    uses_input: Vec<bool>,
    /// Which nodes feed the workflow output `out` (a list binding), if any.
    outputs: BTreeSet<usize>,
}

fn dag() -> impl Strategy<Value = Dag> {
    (1usize..12).prop_flat_map(|n| {
        let subsets = |n: usize| {
            (0..n)
                .map(|i| {
                    proptest::collection::btree_set(0..i.max(1), 0..=i.min(3))
                        .prop_map(move |s| s.into_iter().filter(|&j| j < i).collect::<BTreeSet<_>>())
                })
                .collect::<Vec<_>>()
        };
        (
            subsets(n),
            subsets(n),
            proptest::collection::vec(any::<bool>(), n),
            proptest::collection::btree_set(0..n, 0..=n.min(3)),
        )
            .prop_map(|(reads, explicit, uses_input, outputs)| Dag { reads, explicit, uses_input, outputs })
    })
}

fn name(i: usize) -> String {
    format!("n{i}")
}

/// Builds the spec; `back_edge = Some((from, to, via_binding))` makes node `to` depend on `from`
/// although `from` (transitively) depends on `to`.
fn build(dag: &Dag, back_edge: Option<(usize, usize, bool)>) -> (aloft_proto::flyteidl::admin::WorkflowSpec, Registry) {
    let mut tasks: Vec<TaskTemplate> = Vec::new();
    let mut nodes = Vec::new();
    for i in 0..dag.reads.len() {
        let mut inputs: Vec<(String, aloft_proto::flyteidl::core::LiteralType)> = Vec::new();
        let mut bindings: Vec<Binding> = Vec::new();
        for &j in &dag.reads[i] {
            inputs.push((format!("x{j}"), int()));
            bindings.push(bind(&format!("x{j}"), promise(&name(j), "o0")));
        }
        if dag.uses_input[i] {
            inputs.push(("a".into(), int()));
            bindings.push(bind("a", input("a")));
        }
        let mut explicit: Vec<String> = dag.explicit[i].iter().map(|&j| name(j)).collect();
        if let Some((from, to, via_binding)) = back_edge
            && to == i
        {
            if via_binding {
                inputs.push(("back".into(), int()));
                bindings.push(bind("back", promise(&name(from), "o0")));
            } else {
                explicit.push(name(from));
            }
        }
        let input_refs: Vec<(&str, _)> = inputs.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
        let task_name = format!("wf.t{i}");
        tasks.push(task(&task_name, &input_refs, &[("o0", int())]));
        let mut node = task_node(&name(i), &task_name, bindings);
        node.upstream_node_ids = explicit;
        nodes.push(node);
    }
    let (outputs, out_vars) = if dag.outputs.is_empty() {
        (vec![], vec![])
    } else {
        let items = dag.outputs.iter().map(|&j| promise(&name(j), "o0")).collect();
        (vec![bind("out", collection(items))], vec![("out", list(int()))])
    };
    let wf = workflow("wf.random", iface(&[("a", int())], &out_vars), nodes, outputs);
    (spec(wf, vec![]), Registry::with_tasks(tasks))
}

fn edges(wf: &CompiledWorkflow) -> (BTreeMap<String, BTreeSet<String>>, BTreeMap<String, BTreeSet<String>>) {
    let connections = wf.connections.as_ref().expect("connections");
    let convert = |m: &BTreeMap<String, aloft_proto::flyteidl::core::connection_set::IdList>| {
        m.iter().map(|(k, v)| (k.clone(), v.ids.iter().cloned().collect::<BTreeSet<_>>())).collect::<BTreeMap<_, _>>()
    };
    (convert(&connections.upstream), convert(&connections.downstream))
}

/// Whether `to` can be reached from `from` along downstream edges.
fn reaches(downstream: &BTreeMap<String, BTreeSet<String>>, from: &str, to: &str) -> bool {
    let mut stack = vec![from.to_owned()];
    let mut seen = BTreeSet::new();
    while let Some(current) = stack.pop() {
        for next in downstream.get(&current).into_iter().flatten() {
            if next == to {
                return true;
            }
            if seen.insert(next.clone()) {
                stack.push(next.clone());
            }
        }
    }
    false
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_dags_compile_consistently(dag in dag()) {
        let (spec, registry) = build(&dag, None);
        let closure = compile_workflow(&spec, &registry).expect("a DAG compiles");
        let primary = closure.primary.as_ref().unwrap();
        let (upstream, downstream) = edges(primary);
        let template = primary.template.as_ref().unwrap();
        prop_assert_eq!(template.nodes.len(), dag.reads.len() + 2);

        for i in 0..dag.reads.len() {
            let node = find(primary, &name(i));
            // upstream_node_ids = explicit ∪ read nodes, sorted, never start-node
            let expected: BTreeSet<String> = dag.reads[i].iter().chain(&dag.explicit[i]).map(|&j| name(j)).collect();
            prop_assert_eq!(&node.upstream_node_ids, &expected.iter().cloned().collect::<Vec<_>>());

            // connections.upstream = upstream_node_ids, plus start-node when the node reads a workflow
            // input or has nothing else to wait for
            let mut with_start = expected.clone();
            if dag.uses_input[i] || expected.is_empty() {
                with_start.insert(START_NODE_ID.to_owned());
            }
            prop_assert_eq!(upstream.get(&name(i)).cloned().unwrap_or_default(), with_start);

            // every node finishes before the end-node, directly or through its consumers
            prop_assert!(reaches(&downstream, &name(i), END_NODE_ID));
            prop_assert!(reaches(&downstream, START_NODE_ID, &name(i)));
        }

        // upstream and downstream describe the same edges (branch children aside; there are none)
        let mut from_down = BTreeSet::new();
        for (from, tos) in &downstream {
            for to in tos {
                from_down.insert((from.clone(), to.clone()));
            }
        }
        let mut from_up = BTreeSet::new();
        for (to, froms) in &upstream {
            for from in froms {
                from_up.insert((from.clone(), to.clone()));
            }
        }
        prop_assert_eq!(from_down, from_up);

        // lists are sorted and duplicate-free, as Flyte's sets.List() produces
        let connections = primary.connections.as_ref().unwrap();
        for list in connections.upstream.values().chain(connections.downstream.values()) {
            let mut sorted = list.ids.clone();
            sorted.sort();
            sorted.dedup();
            prop_assert_eq!(&sorted, &list.ids);
        }
        prop_assert_eq!(closure.tasks.len(), dag.reads.len());
    }

    #[test]
    fn a_back_edge_is_a_cycle(dag in dag(), pick in any::<prop::sample::Index>(), via_binding in any::<bool>()) {
        // pick an existing dependency to -> from (from reads or follows to) and make `to` depend on `from`
        let mut dependencies = Vec::new();
        for (i, (reads, explicit)) in dag.reads.iter().zip(&dag.explicit).enumerate() {
            for &j in reads.iter().chain(explicit) {
                dependencies.push((i, j));
            }
        }
        prop_assume!(!dependencies.is_empty());
        let (from, to) = dependencies[pick.index(dependencies.len())];
        let (spec, registry) = build(&dag, Some((from, to, via_binding)));
        let err = compile_workflow(&spec, &registry).expect_err("a cycle must not compile");
        let CompileError::Cycle { node, path, .. } = &err else {
            return Err(TestCaseError::fail(format!("expected a cycle, got: {err}")));
        };
        // the named node is on the reported cycle, and the reported cycle is real
        prop_assert_eq!(path.first(), Some(node));
        prop_assert_eq!(path.last(), Some(node));
        let mut forward: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (i, (reads, explicit)) in dag.reads.iter().zip(&dag.explicit).enumerate() {
            for &j in reads.iter().chain(explicit) {
                forward.entry(name(j)).or_default().insert(name(i));
            }
        }
        forward.entry(name(from)).or_default().insert(name(to));
        for pair in path.windows(2) {
            prop_assert!(forward.get(&pair[0]).is_some_and(|s| s.contains(&pair[1])), "no edge {} -> {}", pair[0], pair[1]);
        }
    }
}
