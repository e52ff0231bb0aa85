//! Workflows inside workflows, end to end through `pyflyte run --remote --wait` and FlyteRemote:
//! sub-workflows three deep with a conditional at the bottom, map tasks (parallelism, success
//! ratio, failure), and dynamic workflows (one of which starts a map task). The workflows are in
//! `fixtures/runs/nested.py`.

mod common;
#[path = "common/facts.rs"]
mod facts;
#[path = "common/stack.rs"]
mod stack;

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};

use facts::{at, expect};
use stack::{Stack, Store};

/// The children FlyteRemote listed under a node, by unique id.
fn children<'a>(node: &'a Value, what: &str) -> Result<&'a serde_json::Map<String, Value>> {
    node["children"].as_object().with_context(|| format!("{what} has no children in\n{node:#}"))
}

/// The only child whose spec node id is `spec`.
fn child<'a>(node: &'a Value, spec: &str) -> Result<(&'a String, &'a Value)> {
    let found: Vec<_> = children(node, spec)?.iter().filter(|(_, c)| c["spec_node_id"] == spec).collect();
    ensure!(found.len() == 1, "expected one child `{spec}`, found {}\nin {node:#}", found.len());
    Ok(found[0])
}

/// outer -> middle -> inner -> branch -> task: each level listed under its parent with unique ids
/// `<parent>-0-<node>`, the conditional inside the innermost sub-workflow taking each side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sub_workflows_three_deep_with_a_conditional_inside() -> Result<()> {
    let s = Stack::start(Store::Local).await?;
    let (small, big) = tokio::join!(
        s.run_ok("nest1", "nested.py", "outer", &["--x", "2"]),
        s.run_ok("nest2", "nested.py", "outer", &["--x", "7"]),
    );
    let (small, big) = (small?, big?);
    let (f1, f2) = tokio::join!(s.inspect("nest1"), s.inspect("nest2"));
    let (f1, f2) = (f1?, f2?);
    expect(&f1, "/outputs", json!({"o0": "SMALL 6"}))?;
    expect(&f2, "/outputs", json!({"o0": "BIG 16"}))?;

    // level 1: the sub-workflow node `middle` is a parent, with its own inputs and outputs
    let middle = at(&f2, "/nodes/n0")?;
    expect(middle, "/is_parent", json!(true))?;
    expect(middle, "/phase", json!("SUCCEEDED"))?;
    expect(middle, "/outputs", json!({"o0": "big 16"}))?;
    // level 2: add_one and the sub-workflow node `inner`
    let (add_id, add) = child(middle, "n0")?;
    ensure!(add_id == "n0-0-n0", "child ids are <parent>-<attempt>-<node>: {add_id}");
    expect(add, "/outputs", json!({"o0": 8}))?;
    let (inner_id, inner) = child(middle, "n1")?;
    ensure!(inner_id == "n0-0-n1", "{inner_id}");
    expect(inner, "/is_parent", json!(true))?;
    // level 3: double, then the branch whose chosen child ran inside it
    let (_, double) = child(inner, "n0")?;
    expect(double, "/outputs", json!({"o0": 16}))?;
    let (_, branch) = child(inner, "n1")?;
    expect(branch, "/is_parent", json!(true))?;
    // the child it ran, and the untaken one as SKIPPED
    let kids = children(branch, "the branch")?;
    let ran: Vec<_> = kids.values().filter(|c| c["phase"] != "SKIPPED").collect();
    ensure!(ran.len() == 1 && kids.len() == 2, "one child ran, one was skipped\n{branch:#}");
    let task = ran[0];
    expect(task, "/phase", json!("SUCCEEDED"))?;
    expect(task, "/outputs", json!({"o0": "big 16"}))?;
    ensure!(task["attempts"].as_array().is_some_and(|a| a.len() == 1), "one attempt\n{task:#}");
    eprintln!(
        "nested: pyflyte run --wait: {:.1} s and {:.1} s",
        small.elapsed.as_secs_f64(),
        big.elapsed.as_secs_f64()
    );
    s.stop().await
}

/// Map tasks: every index runs once with its own attempt listed under the array node; a
/// tolerated failure becomes None; an intolerable one fails the execution with the index's error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn map_tasks_gather_in_order_and_honour_success_criteria() -> Result<()> {
    let s = Stack::start(Store::Local).await?;
    let (sq, tol, bad) = tokio::join!(
        s.run_ok("map1", "nested.py", "squares", &["--xs", "[1, 2, 3, 4, 5]"]),
        s.run_ok("map2", "nested.py", "tolerant", &["--xs", "[1, 2, 3, 4]"]),
        s.pyflyte_run("map3", true, "nested.py", "intolerant", &["--xs", "[1, 2, 3]"]),
    );
    let (_sq, _tol, bad) = (sq?, tol?, bad?);
    ensure!(!bad.status.success(), "a map with a failed index must fail\n{}", bad.dump());
    let (f1, f2, f3) = tokio::join!(s.inspect("map1"), s.inspect("map2"), s.inspect("map3"));
    let (f1, f2, f3) = (f1?, f2?, f3?);
    expect(&f1, "/outputs", json!({"o0": [1, 4, 9, 16, 25]}))?;
    let array = at(&f1, "/nodes/n0")?;
    expect(array, "/is_array", json!(true))?;
    // the sub-task attempts are the array node's task executions, one per index
    let attempts = array["attempts"].as_array().context("attempts")?;
    let nodes: Vec<&str> = attempts.iter().filter_map(|a| a["node"].as_str()).collect();
    ensure!(nodes == ["n0-0", "n0-1", "n0-2", "n0-3", "n0-4"], "one attempt per index: {nodes:?}\n{array:#}");
    ensure!(attempts.iter().all(|a| a["phase"] == "SUCCEEDED"), "{array:#}");
    expect(&attempts[2], "/outputs", json!({"o0": 9}))?;

    expect(&f2, "/phase", json!("SUCCEEDED"))?;
    expect(&f2, "/outputs", json!({"o0": [10, 20, null, 40]}))?;

    expect(&f3, "/phase", json!("FAILED"))?;
    let message = at(&f3, "/error/message")?.as_str().unwrap_or_default();
    ensure!(
        message.contains("1 of 3 sub-tasks failed") && message.contains("three is unlucky"),
        "the error names the count and the sub-task's error: {message}"
    );
    s.stop().await
}

/// Dynamic workflows: a Python loop decides the tasks; a dynamic task starts a map task; the
/// dynamic node lists its children and its output feeds the next node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_workflows_run_their_children() -> Result<()> {
    let s = Stack::start(Store::Local).await?;
    let (a, b) = tokio::join!(
        s.run_ok("dyn1", "nested.py", "dynamic_then_task", &["--n", "4"]),
        s.run_ok("dyn2", "nested.py", "squares_of_range", &["--n", "5"]),
    );
    let (_a, _b) = (a?, b?);
    let (f1, f2) = tokio::join!(s.inspect("dyn1"), s.inspect("dyn2"));
    let (f1, f2) = (f1?, f2?);
    // 0*2 + 1*2 + 2*2 + 3*2 = 12, then add_one
    expect(&f1, "/outputs", json!({"o0": 13}))?;
    let dynamic = at(&f1, "/nodes/n0")?;
    expect(dynamic, "/is_dynamic", json!(true))?;
    expect(dynamic, "/outputs", json!({"o0": 12}))?;
    let kids = children(dynamic, "the dynamic node")?;
    ensure!(kids.len() == 5, "four doubles and a total under the dynamic node\n{dynamic:#}");
    ensure!(
        kids.keys().all(|k| k.starts_with("n0-0-dn")),
        "children are named <node>-<attempt>-dn<i>: {:?}",
        kids.keys()
    );

    expect(&f2, "/outputs", json!({"o0": [0, 1, 4, 9, 16]}))?;
    s.stop().await
}

/// Launch-plan nodes: each hop is a child execution (mode CHILD_WORKFLOW, linked to its parent
/// node), three executions deep, the last one running sub-workflows and a conditional.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launch_plan_nodes_run_child_executions() -> Result<()> {
    let s = Stack::start(Store::Local).await?;
    s.run_ok("lp1", "nested.py", "via_two_lps", &["--x", "7"]).await?;
    let f = s.inspect("lp1").await?;
    expect(&f, "/outputs", json!({"o0": "BIG 16!"}))?;
    let (lp_node, _) = (at(&f, "/nodes/n0")?, ());
    expect(lp_node, "/phase", json!("SUCCEEDED"))?;
    expect(lp_node, "/outputs", json!({"o0": "BIG 16"}))?;
    let child = at(lp_node, "/child_execution")?.as_str().context("the node names its child execution")?.to_string();
    // the child is an execution of its own, started by the parent's node
    let c = s.inspect(&child).await?;
    expect(&c, "/phase", json!("SUCCEEDED"))?;
    expect(&c, "/mode", json!("CHILD_WORKFLOW"))?;
    expect(&c, "/parent_node/node_id", json!("n0"))?;
    expect(&c, "/parent_node/execution", json!("lp1"))?;
    let grandchild = at(&c, "/nodes/n0/child_execution")?.as_str().context("the grandchild")?.to_string();
    let g = s.inspect(&grandchild).await?;
    expect(&g, "/outputs", json!({"o0": "big 16"}))?;
    expect(&g, "/parent_node/execution", json!(child))?;
    ensure!(at(&g, "/nodes/n1/is_parent")? == &json!(true), "the grandchild runs the sub-workflow\n{g:#}");
    s.stop().await
}

/// How many times a task of `fixtures/runs/cached.py` really ran (its marker files).
fn runs_of(s: &Stack, task: &str) -> usize {
    std::fs::read_dir(s.scratch.join(task)).map(|d| d.count()).unwrap_or(0)
}

/// Caching: a cached task runs once across executions (the second is a CACHE_HIT that runs
/// nothing), inputs it ignores do not matter, `--overwrite-cache` and a new cache version run it
/// again; a serialized cached task started by two executions at once runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_tasks_run_once_per_key() -> Result<()> {
    let s = Stack::start(Store::Local).await?;
    let scratch = s.scratch_str()?.to_string();
    s.run_ok("cache1", "cached.py", "features", &["--rows", "5", "--scratch", &scratch]).await?;
    s.run_ok("cache2", "cached.py", "features", &["--rows", "5", "--scratch", &scratch]).await?;
    ensure!(runs_of(&s, "featurize") == 1, "ran {} times", runs_of(&s, "featurize"));
    let (f1, f2) = tokio::join!(s.inspect("cache1"), s.inspect("cache2"));
    let (f1, f2) = (f1?, f2?);
    expect(&f1, "/nodes/n0/cache_status", json!("CACHE_POPULATED"))?;
    expect(&f2, "/nodes/n0/cache_status", json!("CACHE_HIT"))?;
    expect(&f2, "/nodes/n0/outputs", json!({"o0": 15}))?;
    expect(&f2, "/outputs", json!({"o0": "15 features"}))?;
    ensure!(at(&f2, "/nodes/n0/attempts")?.as_array().is_some_and(|a| a.is_empty()), "a hit has no attempt\n{f2:#}");

    // other inputs, then the same inputs with --overwrite-cache
    s.run_ok("cache3", "cached.py", "features", &["--rows", "6", "--scratch", &scratch]).await?;
    s.run_ok_with("cache4", &["--overwrite-cache"], "cached.py", "features", &["--rows", "5", "--scratch", &scratch])
        .await?;
    ensure!(runs_of(&s, "featurize") == 3, "ran {} times", runs_of(&s, "featurize"));

    // a new cache version is a new key
    common::edit_file(
        &s.workdir.join("cached.py"),
        "cache_version=\"1.0\", cache_ignore",
        "cache_version=\"2.0\", cache_ignore",
    )?;
    s.run_ok("cache5", "cached.py", "features", &["--rows", "5", "--scratch", &scratch]).await?;
    ensure!(runs_of(&s, "featurize") == 4, "ran {} times", runs_of(&s, "featurize"));

    // serialized: two executions at once, one run; the other waits and hits
    let args = ["--n", "1", "--scratch", &scratch];
    let (a, b) = tokio::join!(
        s.run_ok("ser1", "cached.py", "embeddings", &args),
        s.run_ok("ser2", "cached.py", "embeddings", &args),
    );
    let (_a, _b) = (a?, b?);
    ensure!(runs_of(&s, "slow_embed") == 1, "serialized task ran {} times", runs_of(&s, "slow_embed"));
    let (g1, g2) = tokio::join!(s.inspect("ser1"), s.inspect("ser2"));
    let (g1, g2) = (g1?, g2?);
    expect(&g1, "/outputs", json!({"o0": 101}))?;
    expect(&g2, "/outputs", json!({"o0": 101}))?;
    let statuses = [at(&g1, "/nodes/n0/cache_status")?.clone(), at(&g2, "/nodes/n0/cache_status")?.clone()];
    ensure!(
        statuses.contains(&json!("CACHE_HIT")) && statuses.contains(&json!("CACHE_POPULATED")),
        "one populated, one hit: {statuses:?}"
    );
    s.stop().await
}

/// RecoverExecution reuses the outputs of the nodes that succeeded (reported RECOVERED, not run
/// again) and runs the rest; RelaunchExecution runs everything again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_skips_succeeded_nodes_and_relaunch_runs_all() -> Result<()> {
    let s = Stack::start(Store::Local).await?;
    let scratch = s.scratch_str()?.to_string();
    let failed = s.pyflyte_run("rec1", true, "recover.py", "recoverable", &["--scratch", &scratch]).await?;
    ensure!(!failed.status.success(), "the first run fails\n{}", failed.dump());
    ensure!(runs_of(&s, "prepare") == 1, "prepare ran once");
    std::fs::write(s.scratch.join("source-is-back"), "")?;

    let recovered = s.remote("recover", "rec1", &["--new-name", "rec2"]).await?;
    expect(&recovered, "/name", json!("rec2"))?;
    expect(&recovered, "/phase", json!("SUCCEEDED"))?;
    expect(&recovered, "/outputs", json!({"o0": 42}))?;
    expect(&recovered, "/mode", json!("RECOVERED"))?;
    expect(&recovered, "/nodes/n0/phase", json!("RECOVERED"))?;
    expect(&recovered, "/nodes/n1/phase", json!("SUCCEEDED"))?;
    ensure!(runs_of(&s, "prepare") == 1, "a recovered node does not run again ({} runs)", runs_of(&s, "prepare"));

    let relaunched = s.remote("relaunch", "rec2", &["--new-name", "rec3"]).await?;
    expect(&relaunched, "/phase", json!("SUCCEEDED"))?;
    expect(&relaunched, "/mode", json!("RELAUNCH"))?;
    expect(&relaunched, "/outputs", json!({"o0": 42}))?;
    ensure!(runs_of(&s, "prepare") == 2, "a relaunch runs everything ({} runs)", runs_of(&s, "prepare"));
    s.stop().await
}

/// Gates: an approval holds the deployment until `FlyteRemote.approve` (and a rejection fails
/// it), `wait_for_input` takes a typed value, `sleep` waits; a workflow's failure node runs with
/// the error before the failure is reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gates_wait_for_people_and_time_and_failure_nodes_clean_up() -> Result<()> {
    let s = Stack::start(Store::Local).await?;
    let scratch = s.scratch_str()?.to_string();
    for (name, entity, args) in [
        ("gate1", "approval_gated", vec!["--x", "21"]),
        ("gate2", "approval_gated", vec!["--x", "1"]),
        ("gate3", "asks_for_threshold", vec!["--x", "5"]),
    ] {
        let out = s.pyflyte_run(name, false, "gates.py", entity, &args).await?;
        ensure!(out.status.success(), "pyflyte run {entity}\n{}", out.dump());
    }
    let clean_up_args = ["--x", "3", "--scratch", &scratch];
    let (approved, rejected, valued, napped, cleaned) = tokio::join!(
        s.remote("approve", "gate1", &["--signal-id", "deploy-approval"]),
        s.remote("reject", "gate2", &["--signal-id", "deploy-approval"]),
        s.remote("signal", "gate3", &["--signal-id", "threshold", "--value", "3.5"]),
        s.run_ok("gate4", "gates.py", "naps", &["--x", "4"]),
        s.pyflyte_run("gate5", true, "gates.py", "with_clean_up", &clean_up_args),
    );
    let (approved, rejected, valued, _napped, cleaned) = (approved?, rejected?, valued?, napped?, cleaned?);
    expect(&approved, "/phase", json!("SUCCEEDED"))?;
    expect(&approved, "/outputs", json!({"o0": "deployed model 42"}))?;
    expect(&rejected, "/phase", json!("FAILED"))?;
    let message = at(&rejected, "/error/message")?.as_str().unwrap_or_default();
    ensure!(message.contains("rejected"), "the error says why: {message}");
    expect(&valued, "/outputs", json!({"o0": "above"}))?;
    let naps = s.inspect("gate4").await?;
    expect(&naps, "/outputs", json!({"o0": 8}))?;

    ensure!(!cleaned.status.success(), "the workflow still fails\n{}", cleaned.dump());
    let failed = s.inspect("gate5").await?;
    expect(&failed, "/phase", json!("FAILED"))?;
    let note = std::fs::read_to_string(s.scratch.join("cleaned-up.txt")).context("the failure node ran")?;
    ensure!(note.starts_with("n0: ") && note.contains("cannot train on 3"), "the failure node got the error: {note}");
    s.stop().await
}

/// A map over 10,000 elements on one machine (Flyte caps near 5,000): every index runs as its
/// own attempt and the outputs come back in order. `ALOFT_E2E_BIG_MAP` sets the size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_thousand_element_map() -> Result<()> {
    let n: usize = std::env::var("ALOFT_E2E_BIG_MAP").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let s = Stack::start(Store::Local).await?;
    let xs: Vec<usize> = (0..n).collect();
    let arg = serde_json::to_string(&xs)?;
    let started = std::time::Instant::now();
    let out = s.pyflyte_run("big1", false, "nested.py", "big_map", &["--xs", &arg]).await?;
    ensure!(out.status.success(), "pyflyte run big_map\n{}", out.dump());
    let f = s.remote("wait", "big1", &["--timeout", "3000"]).await?;
    let took = started.elapsed();
    expect(&f, "/phase", json!("SUCCEEDED"))?;
    let outputs = at(&f, "/outputs/o0")?.as_array().context("a list")?;
    ensure!(outputs.len() == n, "{} outputs for {n} inputs", outputs.len());
    ensure!(outputs.iter().enumerate().all(|(i, v)| v.as_u64() == Some(i as u64)), "outputs are in index order");
    eprintln!(
        "big map: {n} sub-tasks in {:.1} s ({:.1} ms each)",
        took.as_secs_f64(),
        took.as_secs_f64() * 1000.0 / n as f64
    );
    s.stop().await
}

/// An eager workflow (`@eager`): plain Python control flow; each task call is a sub-execution the
/// eager task starts through the admin API, from inside its process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eager_workflows_use_plain_python_control_flow() -> Result<()> {
    let s = Stack::start(Store::Local).await?;
    s.run_ok("eager1", "eager.py", "grow_until", &["--x", "2", "--limit", "20"]).await?;
    let f = s.inspect("eager1").await?;
    // 2 + 1 = 3, doubled while below 20: 6, 12, 24
    expect(&f, "/outputs", json!({"o0": 24}))?;
    s.stop().await
}
