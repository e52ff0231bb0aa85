//! Unit and property tests of the state machine, with no servers.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use aloft_proto::flyteidl::core::Identifier;
use proptest::prelude::*;

use super::machine::*;
use super::plan::{ArraySpec, Branch, Catalog, Kind, Otherwise, PlanNode, ROOT, Success, Template};

fn task(id: &str, upstream: &[&str], retries: u32) -> PlanNode {
    PlanNode {
        id: id.to_string(),
        upstream: upstream.iter().map(|s| s.to_string()).collect(),
        inputs: vec![],
        kind: Kind::Task { task: Identifier { name: format!("t.{id}"), ..Default::default() } },
        retries,
        timeout: None,
        cached: false,
    }
}

fn template(nodes: Vec<PlanNode>, keep_going: bool) -> Template {
    Template {
        nodes: nodes.into_iter().map(|n| (n.id.clone(), n)).collect(),
        outputs: vec![],
        fail_after_executable_nodes_complete: keep_going,
        failure_node: None,
    }
}

fn plan(edges: &[(&str, &[&str])], retries: u32, keep_going: bool) -> Template {
    template(edges.iter().map(|(id, up)| task(id, up, retries)).collect(), keep_going)
}

/// A catalog of the primary workflow and named sub-workflows.
fn catalog(root: Template, subs: Vec<(&str, Template)>) -> Catalog {
    let mut templates: HashMap<String, Arc<Template>> = HashMap::new();
    templates.insert(ROOT.into(), Arc::new(root));
    for (k, t) in subs {
        templates.insert(k.into(), Arc::new(t));
    }
    Catalog { templates, tasks: HashMap::new() }
}

fn cx(c: &Catalog, limits: Limits) -> Context<'_> {
    Context { catalog: c, limits, prefix: "/m" }
}

const NO_LIMIT: Limits = Limits { max_parallelism: 0, system_retries: 2 };

fn ok(node: &str, attempt: u32) -> Input {
    Input::Attempt {
        node_id: node.into(),
        attempt,
        outcome: Outcome::Succeeded { output_uri: format!("/o/{node}/{attempt}") },
    }
}

fn failed(node: &str, attempt: u32, user: bool, retryable: bool) -> Input {
    Input::Attempt {
        node_id: node.into(),
        attempt,
        outcome: Outcome::Failed {
            failure: Failure { code: "USER:ValueError".into(), message: "boom".into(), user, error_uri: String::new() },
            retryable,
        },
    }
}

fn dispatched(fx: &[Effect]) -> Vec<(String, u32)> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Dispatch { node_id, attempt, .. } => Some((node_id.clone(), *attempt)),
            _ => None,
        })
        .collect()
}

fn workflow_phase(fx: &[Effect]) -> Option<WfStatus> {
    fx.iter().rev().find_map(|e| match e {
        Effect::WorkflowEvent { phase, .. } => Some(*phase),
        _ => None,
    })
}

#[test]
fn chain_runs_in_order_and_writes_outputs() {
    let p = plan(&[("n0", &[]), ("n1", &["n0"])], 0, false);
    let p = catalog(p, vec![]);
    let mut s = initial(&p);
    let fx = decide(&mut s, Input::Start, cx(&p, NO_LIMIT));
    assert_eq!(dispatched(&fx), vec![("n0".into(), 0)]);
    assert_eq!(workflow_phase(&fx), Some(WfStatus::Running));
    let fx = decide(&mut s, ok("n0", 0), cx(&p, NO_LIMIT));
    assert_eq!(dispatched(&fx), vec![("n1".into(), 0)]);
    let fx = decide(&mut s, ok("n1", 0), cx(&p, NO_LIMIT));
    let write = fx.iter().position(|e| *e == Effect::WriteOutputs { owner: None }).expect("outputs written");
    let done = fx.iter().position(|e| matches!(e, Effect::WorkflowEvent { phase: WfStatus::Succeeded, .. })).unwrap();
    assert!(write < done, "outputs exist before the workflow says it succeeded");
    assert_eq!(s.status, WfStatus::Succeeded);
    assert!(decide(&mut s, ok("n1", 0), cx(&p, NO_LIMIT)).is_empty(), "late duplicates change nothing");
}

#[test]
fn empty_workflow_succeeds_at_once() {
    let p = plan(&[], 0, false);
    let p = catalog(p, vec![]);
    let mut s = initial(&p);
    let fx = decide(&mut s, Input::Start, cx(&p, NO_LIMIT));
    assert_eq!(workflow_phase(&fx), Some(WfStatus::Succeeded));
}

#[test]
fn recoverable_user_error_retries_within_budget() {
    let p = plan(&[("n0", &[])], 1, false);
    let p = catalog(p, vec![]);
    let mut s = initial(&p);
    decide(&mut s, Input::Start, cx(&p, NO_LIMIT));
    let fx = decide(&mut s, failed("n0", 0, true, true), cx(&p, NO_LIMIT));
    assert_eq!(dispatched(&fx), vec![("n0".into(), 1)]);
    let fx = decide(&mut s, failed("n0", 1, true, true), cx(&p, NO_LIMIT));
    assert_eq!(workflow_phase(&fx), Some(WfStatus::Failed));
    match fx.last() {
        Some(Effect::WorkflowEvent { failure: Some(f), .. }) => assert_eq!(f.message, "[n0] boom"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn non_recoverable_error_fails_without_retry() {
    let p = plan(&[("n0", &[])], 3, false);
    let p = catalog(p, vec![]);
    let mut s = initial(&p);
    decide(&mut s, Input::Start, cx(&p, NO_LIMIT));
    let fx = decide(&mut s, failed("n0", 0, true, false), cx(&p, NO_LIMIT));
    assert!(dispatched(&fx).is_empty());
    assert_eq!(workflow_phase(&fx), Some(WfStatus::Failed));
}

#[test]
fn system_failures_use_their_own_budget() {
    let p = plan(&[("n0", &[])], 0, false);
    let p = catalog(p, vec![]);
    let mut s = initial(&p);
    decide(&mut s, Input::Start, cx(&p, NO_LIMIT));
    assert_eq!(dispatched(&decide(&mut s, failed("n0", 0, false, true), cx(&p, NO_LIMIT))), vec![("n0".into(), 1)]);
    assert_eq!(dispatched(&decide(&mut s, failed("n0", 1, false, true), cx(&p, NO_LIMIT))), vec![("n0".into(), 2)]);
    let fx = decide(&mut s, failed("n0", 2, false, true), cx(&p, NO_LIMIT));
    assert_eq!(workflow_phase(&fx), Some(WfStatus::Failed));
}

#[test]
fn fail_immediately_kills_siblings() {
    let p = plan(&[("a", &[]), ("b", &[]), ("c", &["a", "b"])], 0, false);
    let p = catalog(p, vec![]);
    let mut s = initial(&p);
    decide(&mut s, Input::Start, cx(&p, NO_LIMIT));
    let fx = decide(&mut s, failed("a", 0, true, false), cx(&p, NO_LIMIT));
    assert!(fx.contains(&Effect::Kill { node_id: "b".into(), attempt: 0 }));
    assert_eq!(workflow_phase(&fx), Some(WfStatus::Failed));
    assert_eq!(s.nodes["c"].status, NodeStatus::Skipped);
}

#[test]
fn fail_after_executable_nodes_complete_lets_independent_nodes_finish() {
    let p = plan(&[("a", &[]), ("b", &[]), ("c", &["b"]), ("d", &["a"])], 0, true);
    let p = catalog(p, vec![]);
    let mut s = initial(&p);
    decide(&mut s, Input::Start, cx(&p, NO_LIMIT));
    let fx = decide(&mut s, failed("a", 0, true, false), cx(&p, NO_LIMIT));
    assert!(fx.iter().all(|e| !matches!(e, Effect::Kill { .. })));
    assert_eq!(workflow_phase(&fx), None, "b is still running");
    let fx = decide(&mut s, ok("b", 0), cx(&p, NO_LIMIT));
    assert_eq!(dispatched(&fx), vec![("c".into(), 0)]);
    let fx = decide(&mut s, ok("c", 0), cx(&p, NO_LIMIT));
    assert_eq!(workflow_phase(&fx), Some(WfStatus::Failed));
    assert_eq!(s.nodes["d"].status, NodeStatus::Skipped);
}

#[test]
fn timeouts_end_as_timed_out() {
    let p = plan(&[("n0", &[])], 0, false);
    let p = catalog(p, vec![]);
    let mut s = initial(&p);
    decide(&mut s, Input::Start, cx(&p, Limits { max_parallelism: 0, system_retries: 0 }));
    let timeout = Input::Attempt {
        node_id: "n0".into(),
        attempt: 0,
        outcome: Outcome::Failed {
            failure: Failure {
                code: "Timeout".into(),
                message: "killed after 1s".into(),
                user: false,
                error_uri: String::new(),
            },
            retryable: true,
        },
    };
    let fx = decide(&mut s, timeout, cx(&p, Limits { max_parallelism: 0, system_retries: 0 }));
    assert!(fx.iter().any(|e| matches!(e, Effect::NodeEvent(NodeEvent { phase: NodeStatus::TimedOut, .. }))));
    assert_eq!(s.status, WfStatus::Failed);
}

#[test]
fn abort_kills_running_attempts() {
    let p = plan(&[("a", &[]), ("b", &["a"])], 0, false);
    let p = catalog(p, vec![]);
    let mut s = initial(&p);
    decide(&mut s, Input::Start, cx(&p, NO_LIMIT));
    let fx = decide(&mut s, Input::Abort { cause: "user".into() }, cx(&p, NO_LIMIT));
    assert!(fx.contains(&Effect::Kill { node_id: "a".into(), attempt: 0 }));
    assert_eq!(workflow_phase(&fx), Some(WfStatus::Aborted));
    assert!(decide(&mut s, ok("a", 0), cx(&p, NO_LIMIT)).is_empty());
}

#[test]
fn bad_inputs_fail_the_node() {
    let p = plan(&[("a", &[])], 2, false);
    let p = catalog(p, vec![]);
    let mut s = initial(&p);
    decide(&mut s, Input::Start, cx(&p, NO_LIMIT));
    let fx =
        decide(&mut s, Input::InputsFailed { node_id: "a".into(), message: "input `x`: no".into() }, cx(&p, NO_LIMIT));
    assert_eq!(workflow_phase(&fx), Some(WfStatus::Failed));
}

/// Random DAGs (edges only from lower to higher index), random completion order, random
/// retryable failures: every node runs to success exactly once, parallelism is respected,
/// and the workflow succeeds exactly once after its outputs are written.
fn dag() -> impl Strategy<Value = (Vec<BTreeSet<usize>>, u32, Vec<u8>)> {
    (1usize..14, 0u32..4).prop_flat_map(|(n, par)| {
        let edges = (0..n).map(|i| proptest::collection::btree_set(0..i.max(1), 0..i.min(3) + 1)).collect::<Vec<_>>();
        (edges, Just(par), proptest::collection::vec(any::<u8>(), 200))
    })
}

proptest! {
    #[test]
    fn random_dags_complete((edges, par, choices) in dag()) {
        let names: Vec<String> = (0..edges.len()).map(|i| format!("n{i}")).collect();
        let nodes: BTreeMap<String, PlanNode> = edges.iter().enumerate().map(|(i, up)| {
            let upstream = up.iter().filter(|u| **u < i).map(|u| names[*u].clone()).collect();
            let up: Vec<&str> = Vec::new();
            let mut n = task(&names[i], &up, 1);
            n.upstream = upstream;
            (names[i].clone(), n)
        }).collect();
        let count = nodes.len();
        let p = catalog(Template { nodes, outputs: vec![], fail_after_executable_nodes_complete: false, failure_node: None }, vec![]);
        let limits = Limits { max_parallelism: par, system_retries: 10 };
        let mut s = initial(&p);
        let mut inflight: Vec<(String, u32)> = dispatched(&decide(&mut s, Input::Start, cx(&p, limits)));
        let mut successes: BTreeMap<String, u32> = BTreeMap::new();
        let mut finished = 0;
        let mut step = 0usize;
        while !inflight.is_empty() {
            prop_assert!(par == 0 || inflight.len() as u32 <= par, "parallelism exceeded");
            let c = choices[step % choices.len()] as usize;
            step += 1;
            let (node, attempt) = inflight.remove(c % inflight.len());
            let input = if c.is_multiple_of(5) { failed(&node, attempt, false, true) } else { ok(&node, attempt) };
            let succeeded = matches!(&input, Input::Attempt { outcome: Outcome::Succeeded { .. }, .. });
            let fx = decide(&mut s, input, cx(&p, limits));
            if succeeded { *successes.entry(node.clone()).or_default() += 1; }
            if let Some(w) = fx.iter().position(|e| matches!(e, Effect::WorkflowEvent { phase: WfStatus::Succeeded, .. })) {
                let wrote = fx[..w].contains(&Effect::WriteOutputs { owner: None });
                prop_assert!(wrote);
                finished += 1;
            }
            inflight.extend(dispatched(&fx));
        }
        prop_assert_eq!(finished, 1);
        prop_assert_eq!(s.status, WfStatus::Succeeded);
        prop_assert!(successes.values().all(|n| *n == 1));
        prop_assert_eq!(successes.len(), count);
    }
}

#[test]
fn branch_runs_the_chosen_child_and_skips_the_other() {
    let mut root = plan(&[("n0", &[]), ("n1", &["n0"]), ("n2", &["n1"])], 0, false);
    root.nodes.get_mut("n1").unwrap().kind = Kind::Branch(Branch {
        cases: vec![(Default::default(), task("n1-n0", &[], 1))],
        otherwise: Otherwise::Child(Box::new(task("n1-n1", &[], 1))),
    });
    let p = catalog(root, vec![]);
    let mut s = initial(&p);
    decide(&mut s, Input::Start, cx(&p, NO_LIMIT));
    let fx = decide(&mut s, ok("n0", 0), cx(&p, NO_LIMIT));
    assert!(fx.contains(&Effect::Evaluate { node_id: "n1".into() }), "a branch is evaluated, not dispatched");
    assert!(dispatched(&fx).is_empty());
    let fx = decide(&mut s, Input::Branch { node_id: "n1".into(), decision: Ok("n1-n1".into()) }, cx(&p, NO_LIMIT));
    assert_eq!(dispatched(&fx), vec![("n1-n1".into(), 0)]);
    assert!(fx.iter().any(|e| matches!(e,
        Effect::NodeEvent(NodeEvent { node_id, phase: NodeStatus::Skipped, parent: Some(parent), .. })
            if node_id == "n1-n0" && parent == "n1")));
    // the child's own retries apply
    let fx = decide(&mut s, failed("n1-n1", 0, true, true), cx(&p, NO_LIMIT));
    assert_eq!(dispatched(&fx), vec![("n1-n1".into(), 1)]);
    let fx = decide(&mut s, ok("n1-n1", 1), cx(&p, NO_LIMIT));
    assert_eq!(dispatched(&fx), vec![("n2".into(), 0)], "the branch's output feeds the next node");
    assert_eq!(s.nodes["n1"].output_uri.as_deref(), Some("/o/n1-n1/1"));
    assert_eq!(s.nodes["n1-n1"].parent.as_deref(), Some("n1"));
    let fx = decide(&mut s, ok("n2", 0), cx(&p, NO_LIMIT));
    assert_eq!(workflow_phase(&fx), Some(WfStatus::Succeeded));
}

#[test]
fn a_branch_without_a_match_fails_the_workflow() {
    let mut root = plan(&[("n0", &[])], 0, false);
    root.nodes.get_mut("n0").unwrap().kind =
        Kind::Branch(Branch { cases: vec![], otherwise: Otherwise::Fail("no data".into()) });
    let p = catalog(root, vec![]);
    let mut s = initial(&p);
    decide(&mut s, Input::Start, cx(&p, NO_LIMIT));
    let fx = decide(&mut s, Input::Branch { node_id: "n0".into(), decision: Err("no data".into()) }, cx(&p, NO_LIMIT));
    assert_eq!(workflow_phase(&fx), Some(WfStatus::Failed));
}

fn sub(id: &str, upstream: &[&str], template: &str) -> PlanNode {
    PlanNode { kind: Kind::Workflow { template: template.into() }, ..task(id, upstream, 0) }
}

fn prepared(node: &str, size: Option<u32>) -> Input {
    Input::Prepared { node_id: node.into(), size }
}

/// Three levels: root n0 -> sub-workflow "a" whose n1 is a sub-workflow "b" with a branch whose
/// chosen child is a task.
fn nested() -> Catalog {
    let mut b = plan(&[("n0", &[])], 0, false);
    b.nodes.get_mut("n0").unwrap().kind = Kind::Branch(Branch {
        cases: vec![(Default::default(), task("n0-n0", &[], 0))],
        otherwise: Otherwise::Nothing,
    });
    let a = template(vec![task("n0", &[], 0), sub("n1", &["n0"], "b")], false);
    let root = template(vec![sub("n0", &[], "a"), task("n1", &["n0"], 0)], false);
    catalog(root, vec![("a", a), ("b", b)])
}

#[test]
fn sub_workflows_nest_with_unique_ids_and_parents() {
    let p = nested();
    let mut s = initial(&p);
    let fx = decide(&mut s, Input::Start, cx(&p, NO_LIMIT));
    assert!(fx.contains(&Effect::Prepare { node_id: "n0".into() }), "inputs first: {fx:?}");
    assert!(dispatched(&fx).is_empty());
    let fx = decide(&mut s, prepared("n0", None), cx(&p, NO_LIMIT));
    assert_eq!(dispatched(&fx), vec![("n0-0-n0".into(), 0)]);
    assert_eq!(s.nodes["n0-0-n0"].parent.as_deref(), Some("n0"));
    assert_eq!(s.nodes["n0-0-n0"].spec, "n0");
    let fx = decide(&mut s, ok("n0-0-n0", 0), cx(&p, NO_LIMIT));
    assert!(fx.contains(&Effect::Prepare { node_id: "n0-0-n1".into() }));
    decide(&mut s, prepared("n0-0-n1", None), cx(&p, NO_LIMIT));
    let fx = decide(
        &mut s,
        Input::Branch { node_id: "n0-0-n1-0-n0".into(), decision: Ok("n0-n0".into()) },
        cx(&p, NO_LIMIT),
    );
    assert_eq!(dispatched(&fx), vec![("n0-0-n1-0-n0-n0".into(), 0)]);
    let fx = decide(&mut s, ok("n0-0-n1-0-n0-n0", 0), cx(&p, NO_LIMIT));
    // the inner scopes complete inside out, each writing its outputs before it reports success
    let owners: Vec<_> = fx
        .iter()
        .filter_map(|e| match e {
            Effect::WriteOutputs { owner } => Some(owner.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(owners, vec![Some("n0-0-n1".to_string()), Some("n0".to_string())]);
    assert_eq!(s.nodes["n0"].output_uri.as_deref(), Some("/m/n0/data/0/outputs.pb"));
    assert_eq!(dispatched(&fx), vec![("n1".into(), 0)]);
    let fx = decide(&mut s, ok("n1", 0), cx(&p, NO_LIMIT));
    assert_eq!(workflow_phase(&fx), Some(WfStatus::Succeeded));
}

#[test]
fn a_failure_deep_inside_fails_every_enclosing_scope_and_skips_the_rest() {
    let p = nested();
    let mut s = initial(&p);
    decide(&mut s, Input::Start, cx(&p, NO_LIMIT));
    decide(&mut s, prepared("n0", None), cx(&p, NO_LIMIT));
    let fx = decide(&mut s, failed("n0-0-n0", 0, true, false), cx(&p, NO_LIMIT));
    assert_eq!(s.nodes["n0-0-n1"].status, NodeStatus::Skipped);
    assert_eq!(s.nodes["n0"].status, NodeStatus::Failed);
    assert_eq!(s.nodes["n1"].status, NodeStatus::Skipped);
    match fx.last() {
        Some(Effect::WorkflowEvent { phase: WfStatus::Failed, failure: Some(f) }) => {
            assert_eq!(f.message, "[n0] [n0-0-n0] boom")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn abort_reaches_attempts_in_sub_workflows() {
    let p = nested();
    let mut s = initial(&p);
    decide(&mut s, Input::Start, cx(&p, NO_LIMIT));
    decide(&mut s, prepared("n0", None), cx(&p, NO_LIMIT));
    let fx = decide(&mut s, Input::Abort { cause: "user".into() }, cx(&p, NO_LIMIT));
    assert!(fx.contains(&Effect::Kill { node_id: "n0-0-n0".into(), attempt: 0 }));
    assert_eq!(s.nodes["n0"].status, NodeStatus::Aborted);
}

fn map(id: &str, parallelism: Option<u32>, success: Success, retries: u32) -> Catalog {
    let node = PlanNode {
        kind: Kind::Array(ArraySpec {
            sub_node: "n0".into(),
            task: Identifier { name: "map_t".into(), ..Default::default() },
            parallelism,
            bound_inputs: vec![],
            success,
        }),
        ..task(id, &[], retries)
    };
    catalog(template(vec![node, task("after", &[id], 0)], false), vec![])
}

#[test]
fn map_task_runs_every_index_within_its_parallelism_and_gathers() {
    let p = map("m", Some(2), Success::All, 1);
    let mut s = initial(&p);
    let fx = decide(&mut s, Input::Start, cx(&p, NO_LIMIT));
    assert!(fx.contains(&Effect::Prepare { node_id: "m".into() }));
    let fx = decide(&mut s, prepared("m", Some(5)), cx(&p, NO_LIMIT));
    assert_eq!(dispatched(&fx), vec![("m-0".into(), 0), ("m-1".into(), 0)]);
    assert!(fx.contains(&Effect::Dispatch { node_id: "m-0".into(), attempt: 0, array: Some(("m".into(), 0)) }));
    let fx = decide(&mut s, failed("m-1", 0, true, true), cx(&p, NO_LIMIT));
    assert_eq!(dispatched(&fx), vec![("m-1".into(), 1)], "per-index retries");
    let mut inflight = vec![("m-0".to_string(), 0), ("m-1".to_string(), 1)];
    let mut gathered = 0;
    while let Some((id, a)) = inflight.pop() {
        let fx = decide(&mut s, ok(&id, a), cx(&p, NO_LIMIT));
        gathered += fx.iter().filter(|e| matches!(e, Effect::Gather { .. })).count();
        inflight.extend(dispatched(&fx).into_iter().filter(|(n, _)| n.starts_with("m-")));
        assert!(inflight.len() <= 2, "parallelism 2");
    }
    assert_eq!(gathered, 1);
    assert_eq!(s.nodes["m"].status, NodeStatus::Succeeded);
    assert_eq!(s.nodes["after"].status, NodeStatus::Running);
}

#[test]
fn map_task_tolerates_failures_within_its_success_ratio() {
    let p = map("m", None, Success::Ratio(0.5), 0);
    let mut s = initial(&p);
    decide(&mut s, Input::Start, cx(&p, NO_LIMIT));
    let fx = decide(&mut s, prepared("m", Some(4)), cx(&p, NO_LIMIT));
    assert_eq!(dispatched(&fx).len(), 4);
    decide(&mut s, failed("m-0", 0, true, false), cx(&p, NO_LIMIT));
    decide(&mut s, failed("m-1", 0, true, false), cx(&p, NO_LIMIT));
    decide(&mut s, ok("m-2", 0), cx(&p, NO_LIMIT));
    let fx = decide(&mut s, ok("m-3", 0), cx(&p, NO_LIMIT));
    assert!(fx.contains(&Effect::Gather { node_id: "m".into() }));
    assert_eq!(s.nodes["m"].status, NodeStatus::Succeeded);
}

#[test]
fn map_task_fails_as_soon_as_its_criterion_cannot_be_met() {
    let p = map("m", None, Success::Count(3), 0);
    let mut s = initial(&p);
    decide(&mut s, Input::Start, cx(&p, NO_LIMIT));
    decide(&mut s, prepared("m", Some(4)), cx(&p, NO_LIMIT));
    decide(&mut s, failed("m-0", 0, true, false), cx(&p, NO_LIMIT));
    let fx = decide(&mut s, failed("m-1", 0, true, false), cx(&p, NO_LIMIT));
    assert!(fx.contains(&Effect::Kill { node_id: "m-2".into(), attempt: 0 }));
    assert_eq!(s.status, WfStatus::Failed);
    let Some((_, f)) = &s.failure else { panic!() };
    assert!(f.message.contains("2 of 4 sub-tasks failed, at least 3 had to succeed"), "{}", f.message);
}

#[test]
fn an_empty_map_succeeds_with_empty_lists() {
    let p = map("m", None, Success::All, 0);
    let mut s = initial(&p);
    decide(&mut s, Input::Start, cx(&p, NO_LIMIT));
    let fx = decide(&mut s, prepared("m", Some(0)), cx(&p, NO_LIMIT));
    assert!(fx.contains(&Effect::Gather { node_id: "m".into() }));
    assert_eq!(dispatched(&fx), vec![("after".into(), 0)]);
}

#[test]
fn global_parallelism_counts_map_items_and_tasks_together() {
    let mut c = map("m", None, Success::All, 0);
    let root = Arc::make_mut(c.templates.get_mut(ROOT).unwrap());
    root.nodes.insert("x".into(), task("x", &[], 0));
    let limits = Limits { max_parallelism: 3, system_retries: 0 };
    let mut s = initial(&c);
    decide(&mut s, Input::Start, cx(&c, limits));
    let fx = decide(&mut s, prepared("m", Some(10)), cx(&c, limits));
    assert_eq!(dispatched(&fx).len(), 2, "x runs too: {:?}", dispatched(&fx));
}

#[test]
fn dynamic_node_runs_its_workflow_then_succeeds_with_its_outputs() {
    let mut p = catalog(plan(&[("d", &[]), ("after", &["d"])], 0, false), vec![]);
    let mut s = initial(&p);
    decide(&mut s, Input::Start, cx(&p, NO_LIMIT));
    let fx =
        decide(&mut s, Input::Attempt { node_id: "d".into(), attempt: 0, outcome: Outcome::Dynamic }, cx(&p, NO_LIMIT));
    assert!(fx.contains(&Effect::Compile { node_id: "d".into(), attempt: 0 }));
    assert!(fx.iter().any(|e| matches!(
        e,
        Effect::NodeEvent(NodeEvent { phase: NodeStatus::Dynamic, is_dynamic: true, is_parent: true, .. })
    )));
    // the shell loads the compiled workflow into the catalog before answering
    p.templates.insert(dynamic_key("d", 0), Arc::new(plan(&[("dn0", &[]), ("dn1", &["dn0"])], 0, false)));
    let fx = decide(
        &mut s,
        Input::Compiled { node_id: "d".into(), closure: Ok("/m/d/data/0/dynamic.pb".into()) },
        cx(&p, NO_LIMIT),
    );
    assert_eq!(dispatched(&fx), vec![("d-0-dn0".into(), 0)]);
    decide(&mut s, ok("d-0-dn0", 0), cx(&p, NO_LIMIT));
    let fx = decide(&mut s, ok("d-0-dn1", 0), cx(&p, NO_LIMIT));
    assert!(fx.contains(&Effect::WriteOutputs { owner: Some("d".into()) }));
    assert_eq!(s.nodes["d"].output_uri.as_deref(), Some("/m/d/data/0/outputs.pb"));
    assert_eq!(dispatched(&fx), vec![("after".into(), 0)]);
}

#[test]
fn a_dynamic_workflow_that_does_not_compile_fails_the_node() {
    let p = catalog(plan(&[("d", &[])], 0, false), vec![]);
    let mut s = initial(&p);
    decide(&mut s, Input::Start, cx(&p, NO_LIMIT));
    decide(&mut s, Input::Attempt { node_id: "d".into(), attempt: 0, outcome: Outcome::Dynamic }, cx(&p, NO_LIMIT));
    let fx = decide(&mut s, Input::Compiled { node_id: "d".into(), closure: Err("bad".into()) }, cx(&p, NO_LIMIT));
    assert_eq!(workflow_phase(&fx), Some(WfStatus::Failed));
}

#[test]
fn launch_plan_node_waits_for_its_child_execution() {
    let lp = PlanNode {
        kind: Kind::LaunchPlan { id: Identifier { name: "child_lp".into(), ..Default::default() } },
        ..task("n0", &[], 0)
    };
    let p = catalog(template(vec![lp, task("n1", &["n0"], 0)], false), vec![]);
    let mut s = initial(&p);
    let fx = decide(&mut s, Input::Start, cx(&p, NO_LIMIT));
    assert!(fx.contains(&Effect::Launch { node_id: "n0".into() }));
    assert!(dispatched(&fx).is_empty());
    let done = Input::ChildDone {
        node_id: "n0".into(),
        outcome: Outcome::Succeeded { output_uri: "/child/outputs.pb".into() },
    };
    let fx = decide(&mut s, done.clone(), cx(&p, NO_LIMIT));
    assert_eq!(s.nodes["n0"].output_uri.as_deref(), Some("/child/outputs.pb"));
    assert_eq!(dispatched(&fx), vec![("n1".into(), 0)]);
    assert!(decide(&mut s, done, cx(&p, NO_LIMIT)).is_empty(), "a second telling changes nothing");
}

#[test]
fn aborting_the_parent_terminates_the_child_execution() {
    let lp = PlanNode {
        kind: Kind::LaunchPlan { id: Identifier { name: "child_lp".into(), ..Default::default() } },
        ..task("n0", &[], 0)
    };
    let p = catalog(template(vec![lp], false), vec![]);
    let mut s = initial(&p);
    decide(&mut s, Input::Start, cx(&p, NO_LIMIT));
    let fx = decide(&mut s, Input::Abort { cause: "user".into() }, cx(&p, NO_LIMIT));
    assert!(fx.contains(&Effect::AbortChild { node_id: "n0".into() }));
    let failed = Input::ChildDone {
        node_id: "n0".into(),
        outcome: Outcome::Failed {
            failure: Failure { code: "x".into(), message: "m".into(), user: true, error_uri: String::new() },
            retryable: false,
        },
    };
    assert!(decide(&mut s, failed, cx(&p, NO_LIMIT)).is_empty());
}

fn cached_plan() -> Catalog {
    let mut n = task("n0", &[], 1);
    n.cached = true;
    catalog(template(vec![n, task("n1", &["n0"], 0)], false), vec![])
}

fn cache_answer(result: CacheResult) -> Input {
    Input::Cache { node_id: "n0".into(), key: "k".into(), result }
}

#[test]
fn a_cache_hit_runs_nothing() {
    let p = cached_plan();
    let mut s = initial(&p);
    let fx = decide(&mut s, Input::Start, cx(&p, NO_LIMIT));
    assert!(fx.contains(&Effect::CacheLookup { node_id: "n0".into() }));
    assert!(dispatched(&fx).is_empty(), "looked up before it runs");
    let fx = decide(&mut s, cache_answer(CacheResult::Hit("/cache/o.pb".into())), cx(&p, NO_LIMIT));
    assert_eq!(dispatched(&fx), vec![("n1".into(), 0)], "only the next node runs");
    assert_eq!(s.nodes["n0"].output_uri.as_deref(), Some("/cache/o.pb"));
    assert!(fx.iter().any(|e| matches!(e,
        Effect::NodeEvent(NodeEvent { node_id, phase: NodeStatus::Succeeded, cache: Some(CacheStatus::Hit), .. })
            if node_id == "n0")));
}

#[test]
fn a_miss_runs_and_stores_its_outputs_before_reporting_success() {
    let p = cached_plan();
    let mut s = initial(&p);
    decide(&mut s, Input::Start, cx(&p, NO_LIMIT));
    let fx = decide(&mut s, cache_answer(CacheResult::Miss), cx(&p, NO_LIMIT));
    assert_eq!(dispatched(&fx), vec![("n0".into(), 0)]);
    // a retried attempt still runs for the cache
    let fx = decide(&mut s, failed("n0", 0, true, true), cx(&p, NO_LIMIT));
    assert_eq!(dispatched(&fx), vec![("n0".into(), 1)]);
    let fx = decide(&mut s, ok("n0", 1), cx(&p, NO_LIMIT));
    let put = fx
        .iter()
        .position(|e| matches!(e, Effect::CachePut { key, output_uri, .. } if key == "k" && output_uri == "/o/n0/1"));
    let event = fx.iter().position(|e| matches!(e, Effect::NodeEvent(NodeEvent { phase: NodeStatus::Succeeded, .. })));
    assert!(put.is_some() && put < event, "{fx:?}");
    assert_eq!(s.nodes["n0"].cache, Some(CacheStatus::Populated));
}

#[test]
fn a_waiting_node_looks_again_when_woken_and_a_failed_run_releases_its_reservation() {
    let p = cached_plan();
    let mut s = initial(&p);
    decide(&mut s, Input::Start, cx(&p, NO_LIMIT));
    let fx = decide(&mut s, cache_answer(CacheResult::Wait), cx(&p, NO_LIMIT));
    assert!(fx.is_empty(), "waiting does nothing: {fx:?}");
    let fx = decide(&mut s, Input::CacheCheck { node_id: "n0".into() }, cx(&p, NO_LIMIT));
    assert_eq!(fx, vec![Effect::CacheLookup { node_id: "n0".into() }]);
    assert!(decide(&mut s, Input::CacheCheck { node_id: "n0".into() }, cx(&p, NO_LIMIT)).is_empty(), "once");
    decide(&mut s, cache_answer(CacheResult::Miss), cx(&p, NO_LIMIT));
    let fx = decide(&mut s, failed("n0", 0, true, false), cx(&p, NO_LIMIT));
    assert!(fx.contains(&Effect::CacheRelease { node_id: "n0".into(), key: "k".into() }));
    assert_eq!(s.status, WfStatus::Failed);
}

#[test]
fn a_recovered_execution_reuses_what_succeeded() {
    let p = catalog(plan(&[("n0", &[]), ("n1", &["n0"])], 0, false), vec![]);
    let mut s = initial(&p);
    s.recover.insert("n0".into(), "/original/n0/outputs.pb".into());
    let fx = decide(&mut s, Input::Start, cx(&p, NO_LIMIT));
    assert_eq!(dispatched(&fx), vec![("n1".into(), 0)], "only what did not succeed runs");
    assert!(fx.iter().any(|e| matches!(e,
        Effect::NodeEvent(NodeEvent { node_id, phase: NodeStatus::Recovered, output_uri: Some(u), .. })
            if node_id == "n0" && u == "/original/n0/outputs.pb")));
    assert_eq!(s.nodes["n0"].status, NodeStatus::Succeeded);
}

#[test]
fn the_failure_node_runs_once_before_the_workflow_fails() {
    let mut root = plan(&[("n0", &[]), ("n1", &["n0"])], 0, false);
    root.failure_node = Some(task("fn0", &[], 0));
    let p = catalog(root, vec![]);
    let mut s = initial(&p);
    decide(&mut s, Input::Start, cx(&p, NO_LIMIT));
    let fx = decide(&mut s, failed("n0", 0, true, false), cx(&p, NO_LIMIT));
    assert_eq!(dispatched(&fx), vec![("fn0".into(), 0)]);
    assert_eq!(workflow_phase(&fx), None, "not reported before the failure node ran");
    let fx = decide(&mut s, ok("fn0", 0), cx(&p, NO_LIMIT));
    match fx.last() {
        Some(Effect::WorkflowEvent { phase: WfStatus::Failed, failure: Some(f) }) => assert_eq!(f.message, "[n0] boom"),
        other => panic!("the original failure is reported: {other:?}"),
    }
    assert_eq!(s.nodes["n1"].status, NodeStatus::Skipped);
}

#[test]
#[ignore]
fn perf_big_map_decide() {
    let p = map("m", Some(64), Success::All, 0);
    let mut s = initial(&p);
    decide(&mut s, Input::Start, cx(&p, NO_LIMIT));
    let t = std::time::Instant::now();
    let fx = decide(&mut s, prepared("m", Some(10_000)), cx(&p, NO_LIMIT));
    let mut inflight = dispatched(&fx);
    eprintln!("prepare: {:?}", t.elapsed());
    let t = std::time::Instant::now();
    let mut ser = std::time::Duration::ZERO;
    while let Some((id, a)) = inflight.pop() {
        let t2 = std::time::Instant::now();
        let bytes = serde_json::to_vec(&s).unwrap();
        s = serde_json::from_slice(&bytes).unwrap();
        ser += t2.elapsed();
        let fx = decide(&mut s, ok(&id, a), cx(&p, NO_LIMIT));
        inflight.extend(dispatched(&fx).into_iter().filter(|(n, _)| n.starts_with("m-")));
    }
    eprintln!("10k items: {:?} (serde {:?}), state {} bytes", t.elapsed(), ser, serde_json::to_vec(&s).unwrap().len());
}
