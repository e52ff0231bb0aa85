//! Unit and property tests of the state machine, with no servers.

use std::collections::{BTreeMap, BTreeSet};

use aloft_proto::flyteidl::core::Identifier;
use proptest::prelude::*;

use super::machine::*;
use super::plan::{Plan, PlanNode};

fn plan(edges: &[(&str, &[&str])], retries: u32, keep_going: bool) -> Plan {
    let nodes = edges
        .iter()
        .map(|(id, up)| {
            (
                id.to_string(),
                PlanNode {
                    id: id.to_string(),
                    upstream: up.iter().map(|s| s.to_string()).collect(),
                    task: Identifier::default(),
                    retries,
                    timeout: None,
                    branch: None,
                },
            )
        })
        .collect();
    Plan { nodes, fail_after_executable_nodes_complete: keep_going }
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
            Effect::Dispatch { node_id, attempt } => Some((node_id.clone(), *attempt)),
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
    let mut s = initial(&p);
    let fx = decide(&mut s, Input::Start, &p, NO_LIMIT);
    assert_eq!(dispatched(&fx), vec![("n0".into(), 0)]);
    assert_eq!(workflow_phase(&fx), Some(WfStatus::Running));
    let fx = decide(&mut s, ok("n0", 0), &p, NO_LIMIT);
    assert_eq!(dispatched(&fx), vec![("n1".into(), 0)]);
    let fx = decide(&mut s, ok("n1", 0), &p, NO_LIMIT);
    let write = fx.iter().position(|e| *e == Effect::WriteOutputs).expect("outputs written");
    let done = fx.iter().position(|e| matches!(e, Effect::WorkflowEvent { phase: WfStatus::Succeeded, .. })).unwrap();
    assert!(write < done, "outputs exist before the workflow says it succeeded");
    assert_eq!(s.status, WfStatus::Succeeded);
    assert!(decide(&mut s, ok("n1", 0), &p, NO_LIMIT).is_empty(), "late duplicates change nothing");
}

#[test]
fn empty_workflow_succeeds_at_once() {
    let p = plan(&[], 0, false);
    let mut s = initial(&p);
    let fx = decide(&mut s, Input::Start, &p, NO_LIMIT);
    assert_eq!(workflow_phase(&fx), Some(WfStatus::Succeeded));
}

#[test]
fn recoverable_user_error_retries_within_budget() {
    let p = plan(&[("n0", &[])], 1, false);
    let mut s = initial(&p);
    decide(&mut s, Input::Start, &p, NO_LIMIT);
    let fx = decide(&mut s, failed("n0", 0, true, true), &p, NO_LIMIT);
    assert_eq!(dispatched(&fx), vec![("n0".into(), 1)]);
    let fx = decide(&mut s, failed("n0", 1, true, true), &p, NO_LIMIT);
    assert_eq!(workflow_phase(&fx), Some(WfStatus::Failed));
    match fx.last() {
        Some(Effect::WorkflowEvent { failure: Some(f), .. }) => assert_eq!(f.message, "[n0] boom"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn non_recoverable_error_fails_without_retry() {
    let p = plan(&[("n0", &[])], 3, false);
    let mut s = initial(&p);
    decide(&mut s, Input::Start, &p, NO_LIMIT);
    let fx = decide(&mut s, failed("n0", 0, true, false), &p, NO_LIMIT);
    assert!(dispatched(&fx).is_empty());
    assert_eq!(workflow_phase(&fx), Some(WfStatus::Failed));
}

#[test]
fn system_failures_use_their_own_budget() {
    let p = plan(&[("n0", &[])], 0, false);
    let mut s = initial(&p);
    decide(&mut s, Input::Start, &p, NO_LIMIT);
    assert_eq!(dispatched(&decide(&mut s, failed("n0", 0, false, true), &p, NO_LIMIT)), vec![("n0".into(), 1)]);
    assert_eq!(dispatched(&decide(&mut s, failed("n0", 1, false, true), &p, NO_LIMIT)), vec![("n0".into(), 2)]);
    let fx = decide(&mut s, failed("n0", 2, false, true), &p, NO_LIMIT);
    assert_eq!(workflow_phase(&fx), Some(WfStatus::Failed));
}

#[test]
fn fail_immediately_kills_siblings() {
    let p = plan(&[("a", &[]), ("b", &[]), ("c", &["a", "b"])], 0, false);
    let mut s = initial(&p);
    decide(&mut s, Input::Start, &p, NO_LIMIT);
    let fx = decide(&mut s, failed("a", 0, true, false), &p, NO_LIMIT);
    assert!(fx.contains(&Effect::Kill { node_id: "b".into(), attempt: 0 }));
    assert_eq!(workflow_phase(&fx), Some(WfStatus::Failed));
    assert_eq!(s.nodes["c"].status, NodeStatus::Skipped);
}

#[test]
fn fail_after_executable_nodes_complete_lets_independent_nodes_finish() {
    let p = plan(&[("a", &[]), ("b", &[]), ("c", &["b"]), ("d", &["a"])], 0, true);
    let mut s = initial(&p);
    decide(&mut s, Input::Start, &p, NO_LIMIT);
    let fx = decide(&mut s, failed("a", 0, true, false), &p, NO_LIMIT);
    assert!(fx.iter().all(|e| !matches!(e, Effect::Kill { .. })));
    assert_eq!(workflow_phase(&fx), None, "b is still running");
    let fx = decide(&mut s, ok("b", 0), &p, NO_LIMIT);
    assert_eq!(dispatched(&fx), vec![("c".into(), 0)]);
    let fx = decide(&mut s, ok("c", 0), &p, NO_LIMIT);
    assert_eq!(workflow_phase(&fx), Some(WfStatus::Failed));
    assert_eq!(s.nodes["d"].status, NodeStatus::Skipped);
}

#[test]
fn timeouts_end_as_timed_out() {
    let p = plan(&[("n0", &[])], 0, false);
    let mut s = initial(&p);
    decide(&mut s, Input::Start, &p, Limits { max_parallelism: 0, system_retries: 0 });
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
    let fx = decide(&mut s, timeout, &p, Limits { max_parallelism: 0, system_retries: 0 });
    assert!(fx.iter().any(|e| matches!(e, Effect::NodeEvent { phase: NodeStatus::TimedOut, .. })));
    assert_eq!(s.status, WfStatus::Failed);
}

#[test]
fn abort_kills_running_attempts() {
    let p = plan(&[("a", &[]), ("b", &["a"])], 0, false);
    let mut s = initial(&p);
    decide(&mut s, Input::Start, &p, NO_LIMIT);
    let fx = decide(&mut s, Input::Abort { cause: "user".into() }, &p, NO_LIMIT);
    assert!(fx.contains(&Effect::Kill { node_id: "a".into(), attempt: 0 }));
    assert_eq!(workflow_phase(&fx), Some(WfStatus::Aborted));
    assert!(decide(&mut s, ok("a", 0), &p, NO_LIMIT).is_empty());
}

#[test]
fn bad_inputs_fail_the_node() {
    let p = plan(&[("a", &[])], 2, false);
    let mut s = initial(&p);
    decide(&mut s, Input::Start, &p, NO_LIMIT);
    let fx = decide(&mut s, Input::InputsFailed { node_id: "a".into(), message: "input `x`: no".into() }, &p, NO_LIMIT);
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
            (names[i].clone(), PlanNode { id: names[i].clone(), upstream, task: Identifier::default(), retries: 1, timeout: None, branch: None })
        }).collect();
        let p = Plan { nodes, fail_after_executable_nodes_complete: false };
        let limits = Limits { max_parallelism: par, system_retries: 10 };
        let mut s = initial(&p);
        let mut inflight: Vec<(String, u32)> = dispatched(&decide(&mut s, Input::Start, &p, limits));
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
            let fx = decide(&mut s, input, &p, limits);
            if succeeded { *successes.entry(node.clone()).or_default() += 1; }
            if let Some(w) = fx.iter().position(|e| matches!(e, Effect::WorkflowEvent { phase: WfStatus::Succeeded, .. })) {
                prop_assert!(fx[..w].contains(&Effect::WriteOutputs));
                finished += 1;
            }
            inflight.extend(dispatched(&fx));
        }
        prop_assert_eq!(finished, 1);
        prop_assert_eq!(s.status, WfStatus::Succeeded);
        prop_assert!(successes.values().all(|n| *n == 1));
        prop_assert_eq!(successes.len(), p.nodes.len());
    }
}

#[test]
fn branch_runs_the_chosen_child_and_skips_the_other() {
    use super::plan::{Branch, Child, Otherwise};
    let mut p = plan(&[("n0", &[]), ("n1", &["n0"]), ("n2", &["n1"])], 0, false);
    let child = |id: &str| Child { id: id.into(), retries: 1 };
    p.nodes.get_mut("n1").unwrap().branch =
        Some(Branch { cases: vec![(Default::default(), child("n1-n0"))], otherwise: Otherwise::Child(child("n1-n1")) });
    let mut s = initial(&p);
    decide(&mut s, Input::Start, &p, NO_LIMIT);
    let fx = decide(&mut s, ok("n0", 0), &p, NO_LIMIT);
    assert!(fx.contains(&Effect::Evaluate { node_id: "n1".into() }), "a branch is evaluated, not dispatched");
    assert!(dispatched(&fx).is_empty());
    let fx = decide(&mut s, Input::Branch { node_id: "n1".into(), decision: Ok("n1-n1".into()) }, &p, NO_LIMIT);
    assert_eq!(dispatched(&fx), vec![("n1-n1".into(), 0)]);
    assert!(
        fx.iter()
            .any(|e| matches!(e, Effect::NodeEvent { node_id, phase: NodeStatus::Skipped, .. } if node_id == "n1-n0"))
    );
    // the child's retries apply, and its attempts are counted on the branch node
    let fx = decide(&mut s, failed("n1-n1", 0, true, true), &p, NO_LIMIT);
    assert_eq!(dispatched(&fx), vec![("n1-n1".into(), 1)]);
    let fx = decide(&mut s, ok("n1-n1", 1), &p, NO_LIMIT);
    assert_eq!(dispatched(&fx), vec![("n2".into(), 0)], "the branch's output feeds the next node");
    assert_eq!(s.nodes["n1"].output_uri.as_deref(), Some("/o/n1-n1/1"));
    let fx = decide(&mut s, ok("n2", 0), &p, NO_LIMIT);
    assert_eq!(workflow_phase(&fx), Some(WfStatus::Succeeded));
}

#[test]
fn a_branch_without_a_match_fails_the_workflow() {
    let mut p = plan(&[("n0", &[])], 0, false);
    p.nodes.get_mut("n0").unwrap().branch =
        Some(super::plan::Branch { cases: vec![], otherwise: super::plan::Otherwise::Fail("no data".into()) });
    let mut s = initial(&p);
    decide(&mut s, Input::Start, &p, NO_LIMIT);
    let fx = decide(&mut s, Input::Branch { node_id: "n0".into(), decision: Err("no data".into()) }, &p, NO_LIMIT);
    assert_eq!(workflow_phase(&fx), Some(WfStatus::Failed));
}
