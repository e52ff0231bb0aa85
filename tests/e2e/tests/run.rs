//! Workflows run end to end: the real `pyflyte run --remote` against metadata + scheduler +
//! executor started in this process (one bus prefix, one store per test), tasks run by the
//! executor as host processes with the flytekit venv, results read back with FlyteRemote
//! (`fixtures/check_execution.py`). The workflows are in `fixtures/runs/`.
//!
//! Each test starts its own stack and runs a few executions concurrently to keep wall time down
//! (Python start-up dominates: ~2 s per `pyflyte`, ~2-3 s per task attempt).

mod common;
#[path = "common/facts.rs"]
mod facts;
#[path = "common/stack.rs"]
mod stack;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};

use facts::{at, expect, str_at};
use stack::{DOMAIN, Stack, Store, wait_for_file};

/// The attempts FlyteRemote listed for a node, as (retry_attempt, phase).
fn attempts(facts: &Value, node: &str) -> Result<Vec<(u64, String)>> {
    let list = at(facts, &format!("/nodes/{node}/attempts"))?.as_array().context("attempts is not a list")?;
    Ok(list
        .iter()
        .map(|a| (a["retry_attempt"].as_u64().unwrap_or(u64::MAX), a["phase"].as_str().unwrap_or("?").to_string()))
        .collect())
}

/// The synthetic nodes flytekit lists without syncing them further.
const START_END: [&str; 2] = ["start-node", "end-node"];

/// Every node FlyteRemote listed succeeded (start-node and end-node included), and each task node
/// has exactly one successful attempt with the executor's log attached. Returns how many task
/// nodes there are.
fn all_nodes_succeeded_once(facts: &Value) -> Result<usize> {
    let nodes = at(facts, "/nodes")?.as_object().context("nodes is not an object")?;
    let mut tasks = 0;
    for (id, n) in nodes {
        ensure!(n["phase"] == "SUCCEEDED", "node {id} is {} in\n{facts:#}", n["phase"]);
        if START_END.contains(&id.as_str()) {
            continue;
        }
        tasks += 1;
        let a = attempts(facts, id)?;
        ensure!(a == vec![(0, "SUCCEEDED".to_string())], "node {id}: attempts {a:?}");
        ensure!(
            n["attempts"][0]["logs"].as_array().is_some_and(|l| l.iter().any(|l| l["name"] == "task.log")),
            "node {id}: the attempt has no task.log link\n{n:#}"
        );
    }
    Ok(tasks)
}

fn report(test: &str, timings: &[(&str, Duration)]) {
    for (step, took) in timings {
        eprintln!("{test}: {step}: {:.1} s", took.as_secs_f64());
    }
}

/// One-task workflow, the same task's outputs through `pyflyte fetch` (DataProxy GetData), and a
/// task run on its own (`pyflyte run --remote hello.py square --x 3`: CreateExecution with a task id).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_task_workflow_single_task_and_fetch() -> Result<()> {
    let s = Stack::start(Store::Local).await?;
    let t0 = Instant::now();
    let (wf, task) = tokio::join!(
        // --env lands in ExecutionSpec.envs and must reach the task's environment
        s.run_ok_with("hello1", &["--env", "GREETING=Bonjour"], "hello.py", "hello", &["--name", "aloft"]),
        s.run_ok("square1", "hello.py", "square", &["--x", "3"]),
    );
    let (wf, task) = (wf?, task?);
    let mut timings = vec![("pyflyte run --wait hello", wf.elapsed), ("pyflyte run --wait square", task.elapsed)];

    let (hello, square) = tokio::join!(s.inspect("hello1"), s.inspect("square1"));
    let (hello, square) = (hello?, square?);
    expect(&hello, "/phase", json!("SUCCEEDED"))?;
    expect(&hello, "/error", Value::Null)?;
    expect(&hello, "/inputs", json!({"name": "aloft"}))?;
    expect(&hello, "/outputs", json!({"o0": "Bonjour, aloft!"}))?;
    expect(&hello, "/target/resource_type", json!(3))?; // LAUNCH_PLAN
    expect(&hello, "/nodes/start-node/phase", json!("SUCCEEDED"))?;
    expect(&hello, "/nodes/end-node/phase", json!("SUCCEEDED"))?;
    ensure!(all_nodes_succeeded_once(&hello)? == 1, "one task node expected\n{hello:#}");
    expect(&hello, "/nodes/n0/inputs", json!({"name": "aloft"}))?;
    expect(&hello, "/nodes/n0/outputs", json!({"o0": "Bonjour, aloft!"}))?;
    expect(&hello, "/nodes/n0/attempts/0/outputs", json!({"o0": "Bonjour, aloft!"}))?;
    // the executor uploaded the attempt's log where the event said
    let log = str_at(&hello, "/nodes/n0/attempts/0/logs/0/uri")?;
    ensure!(s.blob.exists(log).await?, "task log {log} is not in the store");

    expect(&square, "/phase", json!("SUCCEEDED"))?;
    expect(&square, "/target/resource_type", json!(1))?; // TASK: kept as sent
    expect(&square, "/inputs", json!({"x": 3}))?;
    expect(&square, "/outputs", json!({"o0": 9}))?;
    ensure!(all_nodes_succeeded_once(&square)? == 1, "a single-task execution has exactly one node\n{square:#}");

    // pyflyte fetch flyte://v1/<project>/<domain>/<exec>/<node>[/<attempt>]/<i|o>[/<var>]
    // (DataProxyService.GetData): a node's outputs and inputs, an attempt's outputs, one variable
    let base = format!("flyte://v1/{}/{DOMAIN}/hello1/n0", s.project);
    let urls = [format!("{base}/o"), format!("{base}/i"), format!("{base}/0/o"), format!("{base}/o/o0")];
    let (o, i, attempt_o, var) = tokio::join!(
        s.pyflyte_fetch(&urls[0]),
        s.pyflyte_fetch(&urls[1]),
        s.pyflyte_fetch(&urls[2]),
        s.pyflyte_fetch(&urls[3])
    );
    let (o, i, attempt_o, var) = (o?, i?, attempt_o?, var?);
    timings.push(("pyflyte fetch", o.elapsed));
    eprintln!("pyflyte fetch {}:\n{}", urls[0], o.stdout);
    for (url, out, want) in [
        (&urls[0], &o, "{'o0': 'Bonjour, aloft!'}"),
        (&urls[1], &i, "{'name': 'aloft'}"),
        (&urls[2], &attempt_o, "{'o0': 'Bonjour, aloft!'}"),
        (&urls[3], &var, "Bonjour, aloft!"),
    ] {
        ensure!(
            out.status.success() && out.stdout.contains(want),
            "pyflyte fetch {url}: expected {want:?}\n{}",
            out.dump()
        );
    }
    timings.push(("total", t0.elapsed()));
    report("one_task", &timings);
    s.stop().await
}

/// Typed values cross four task boundaries: int, float, str, bool, list, dict, a dataclass and a
/// datetime, as inputs from the command line, between tasks, and as workflow outputs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_values_through_a_chain() -> Result<()> {
    let s = Stack::start(Store::Local).await?;
    let args = [
        "--n",
        "6",
        "--scale",
        "0.5",
        "--label",
        "demo",
        "--active",
        "--tags",
        r#"{"a": 1, "b": 2}"#,
        "--start",
        "2024-05-06T03:00:00",
    ];
    let out = s.run_ok("typed1", "typed.py", "typed_chain", &args).await?;
    let f = s.inspect("typed1").await?;
    expect(&f, "/phase", json!("SUCCEEDED"))?;
    ensure!(all_nodes_succeeded_once(&f)? == 4, "four task nodes expected\n{f:#}");
    let config = json!({
        "label": "DEMO", "threshold": 1.25, "enabled": true,
        "weights": [0.2, 0.267, 0.333], "tags": {"a": 1, "b": 2, "above": 3}
    });
    expect(
        &f,
        "/outputs",
        json!({
            "o0": 6, "o1": 7.5, "o2": [1.5, 2.0, 2.5], "o3": config,
            "o4": "2024-05-09T04:00:00Z",
            "o5": "DEMO: 3 weights, threshold 1.25, next 2024-05-09T04:00:00+00:00",
            "o6": true, "o7": {"a": 10, "b": 20, "above": 30}
        }),
    )?;
    expect(
        &f,
        "/inputs",
        json!({
            "n": 6, "scale": 0.5, "label": "demo", "active": true, "tags": {"a": 1, "b": 2},
            "start": "2024-05-06T03:00:00Z", "threshold": 1.0
        }),
    )?;
    expect(&f, "/nodes/n0/outputs/o0", json!([0.0, 0.5, 1.0, 1.5, 2.0, 2.5]))?;
    expect(&f, "/nodes/n1/outputs", json!({"count": 6, "total": 7.5, "above": [1.5, 2.0, 2.5]}))?;
    expect(
        &f,
        "/nodes/n2/inputs",
        json!({"label": "demo", "active": true, "count": 6, "total": 7.5, "above": [1.5, 2.0, 2.5], "tags": {"a": 1, "b": 2}}),
    )?;
    expect(&f, "/nodes/n3/inputs", json!({"cfg": config, "start": "2024-05-06T03:00:00Z"}))?;
    // Attribute access on a dataclass output (`cfg.weights[0]`) is resolved by the scheduler.
    let attrs = s.run_ok("typed2", "typed.py", "attribute_access", &[]).await?;
    let f = s.inspect("typed2").await?;
    expect(&f, "/outputs", json!({"o0": "DEMO:0.2:3"}))?;
    report("typed", &[("pyflyte run --wait typed_chain", out.elapsed), ("attribute_access", attrs.elapsed)]);
    s.stop().await
}

/// 20 task nodes from a list comprehension, gathered by one node (a collection binding of 20
/// promises). Metadata runs on Postgres here: the most concurrent events of any test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_and_fan_in_on_postgres() -> Result<()> {
    let s = Stack::start_on(Store::Local, common::Db::Postgres).await?;
    let result = fan_out(&s).await;
    // stops the services and drops the database whether or not the scenario passed
    let stopped = s.stop().await;
    result.and(stopped)
}

async fn fan_out(s: &Stack) -> Result<()> {
    let out = s.run_ok("fan1", "fanout.py", "fan_out_in", &["--factor", "3"]).await?;
    let f = s.inspect("fan1").await?;
    expect(&f, "/phase", json!("SUCCEEDED"))?;
    let parts: Vec<i64> = (0..20).map(|i| i * 3).collect();
    expect(&f, "/outputs", json!({"o0": 570, "o1": parts}))?;
    ensure!(all_nodes_succeeded_once(&f)? == 21, "20 scale nodes and one total node expected\n{f:#}");
    for i in 0..20 {
        expect(&f, &format!("/nodes/n{i}/inputs"), json!({"i": i, "factor": 3}))?;
        expect(&f, &format!("/nodes/n{i}/outputs"), json!({"o0": i * 3}))?;
    }
    expect(&f, "/nodes/n20/inputs", json!({"parts": parts}))?;
    report("fan_out", &[("pyflyte run --wait fan_out_in (21 tasks)", out.elapsed)]);
    Ok(())
}

/// With the S3 store: a file input uploaded by `pyflyte run` (CreateUploadLocation + PUT), a
/// FlyteFile written by one task to the raw-output prefix in S3 and read by the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flyte_file_between_tasks_through_s3() -> Result<()> {
    let s = Stack::start(Store::S3).await?;
    s.write_input("header.txt", "quarterly numbers\n")?;
    let out = s.run_ok("files1", "files.py", "file_roundtrip", &["--header", "header.txt", "--rows", "4"]).await?;
    let f = s.inspect("files1").await?;
    expect(&f, "/phase", json!("SUCCEEDED"))?;
    ensure!(all_nodes_succeeded_once(&f)? == 2, "two task nodes expected\n{f:#}");
    let root = format!("{}/", s.storage.root);
    let header = str_at(&f, "/inputs/header/uri")?;
    ensure!(header.starts_with(&root), "the uploaded input {header} is not under the store root {root}");
    let report_uri = str_at(&f, "/outputs/o0/uri")?;
    ensure!(report_uri.starts_with(&root), "the task's file {report_uri} is not under the store root {root}");
    expect(&f, "/nodes/n1/inputs/report/uri", json!(report_uri))?;
    expect(&f, "/outputs/o1", json!(5))?;
    expect(&f, "/outputs/o2", json!("quarterly numbers"))?;
    let content = s.blob.get(report_uri).await.with_context(|| format!("reading {report_uri}"))?;
    ensure!(
        content.as_ref() == b"quarterly numbers\nrow 0\nrow 1\nrow 2\nrow 3\n",
        "unexpected content of {report_uri}: {:?}",
        String::from_utf8_lossy(&content)
    );
    let log = str_at(&f, "/nodes/n0/attempts/0/logs/0/uri")?;
    ensure!(log.starts_with("s3://") && s.blob.exists(log).await?, "task log {log} is not in S3");
    report("files_s3", &[("pyflyte run --wait file_roundtrip", out.elapsed)]);
    s.stop().await
}

/// A task that raises fails the execution with the Python error; one that raises
/// FlyteRecoverableException once succeeds on its retry; one that runs past its timeout is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_retries_and_timeouts() -> Result<()> {
    let s = Stack::start(Store::Local).await?;
    let scratch = s.scratch_str()?.to_string();
    let flaky_args = ["--marker_dir", scratch.as_str()];
    let (failing, recovers, slow) = tokio::join!(
        s.pyflyte_run("fail1", true, "failures.py", "failing", &["--x", "7"]),
        s.pyflyte_run("flaky1", true, "failures.py", "recovers", &flaky_args),
        s.pyflyte_run("slow1", true, "failures.py", "times_out", &["--seconds", "30"]),
    );
    let (failing, recovers, slow) = (failing?, recovers?, slow?);
    let timings =
        [("failing", failing.elapsed), ("recovers (2 attempts)", recovers.elapsed), ("times_out", slow.elapsed)];
    let (ff, rf, sf) = tokio::join!(s.inspect("fail1"), s.inspect("flaky1"), s.inspect("slow1"));
    let (ff, rf, sf) = (ff?, rf?, sf?);

    // 1. the user's exception
    ensure!(
        !failing.status.success(),
        "pyflyte run --wait must exit non-zero on a failed execution\n{}",
        failing.dump()
    );
    ensure!(failing.all().contains("refusing x=7"), "pyflyte should print the task's error\n{}", failing.dump());
    expect(&ff, "/phase", json!("FAILED"))?;
    let message = str_at(&ff, "/error/message")?;
    ensure!(
        message.contains("ValueError") && message.contains("refusing x=7: only non-positive values are accepted"),
        "the execution error should carry the Python exception: {message}"
    );
    expect(&ff, "/error/kind", json!("USER"))?;
    expect(&ff, "/nodes/n0/phase", json!("FAILED"))?;
    ensure!(
        str_at(&ff, "/nodes/n0/error/message")?.contains("refusing x=7"),
        "the node error should carry the Python exception\n{ff:#}"
    );
    ensure!(attempts(&ff, "n0")? == vec![(0, "FAILED".to_string())], "a non-recoverable error is not retried\n{ff:#}");
    let log_uri = str_at(&ff, "/nodes/n0/attempts/0/logs/0/uri")?;
    let log = String::from_utf8_lossy(&s.blob.get(log_uri).await?).into_owned();
    ensure!(log.contains("refusing x=7"), "the attempt's task.log should show the exception:\n{log}");

    // 2. recoverable once, then success on attempt 1
    ensure!(recovers.status.success(), "the retried execution must succeed\n{}", recovers.dump());
    expect(&rf, "/phase", json!("SUCCEEDED"))?;
    expect(&rf, "/outputs", json!({"o0": 1}))?; // FLYTE_ATTEMPT_NUMBER of the attempt that succeeded
    expect(&rf, "/nodes/n0/phase", json!("SUCCEEDED"))?;
    ensure!(
        attempts(&rf, "n0")? == vec![(0, "RETRYABLE_FAILED".to_string()), (1, "SUCCEEDED".to_string())],
        "expected a retryable failure then a success\n{rf:#}"
    );
    ensure!(
        str_at(&rf, "/nodes/n0/attempts/0/error/message")?.contains("transient failure on the first attempt"),
        "the first attempt's error should be the task's\n{rf:#}"
    );
    let marker = std::fs::read_to_string(Path::new(&scratch).join("flaky-attempted"))?;
    ensure!(marker == "0", "the first attempt ran with FLYTE_ATTEMPT_NUMBER={marker}");

    // 3. killed at its timeout, long before the 30 s sleep ends
    ensure!(!slow.status.success(), "a timed-out execution must make pyflyte exit non-zero\n{}", slow.dump());
    let phase = str_at(&sf, "/phase")?;
    ensure!(phase == "FAILED" || phase == "TIMED_OUT", "timed out execution is {phase}\n{sf:#}");
    let node_phase = str_at(&sf, "/nodes/n0/phase")?;
    ensure!(node_phase == "TIMED_OUT" || node_phase == "FAILED", "timed out node is {node_phase}\n{sf:#}");
    let message = str_at(&sf, "/error/message")?.to_lowercase();
    ensure!(message.contains("timeout") || message.contains("timed out"), "error should say it timed out: {message}");
    let tries = attempts(&sf, "n0")?;
    ensure!(!tries.is_empty(), "no attempts listed\n{sf:#}");
    for a in at(&sf, "/nodes/n0/attempts")?.as_array().context("attempts")? {
        let d = a["duration_s"].as_f64().unwrap_or(0.0);
        ensure!(d < 20.0, "an attempt ran {d} s: the 2 s timeout did not kill it\n{a:#}");
    }
    eprintln!("times_out: {} attempt(s): {tries:?}", tries.len());
    report("failures", &timings);
    s.stop().await
}

/// `pyflyte run --remote` without --wait, then FlyteRemote.terminate while the task sleeps:
/// ABORTED with the cause, and the task's process is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_a_running_execution() -> Result<()> {
    let s = Stack::start(Store::Local).await?;
    let scratch = s.scratch_str()?.to_string();
    let t0 = Instant::now();
    let started = s
        .pyflyte_run("long1", false, "failures.py", "long_running", &["--marker_dir", &scratch, "--seconds", "60"])
        .await?;
    ensure!(started.status.success(), "pyflyte run --remote (no --wait) failed\n{}", started.dump());
    let marker = Path::new(&scratch).join("sleeper-started");
    wait_for_file(&marker, Duration::from_secs(90)).await.context("the sleeping task never started")?;
    let running_after = t0.elapsed();
    let pid: i32 = std::fs::read_to_string(&marker)?.trim().parse()?;

    let f = s.remote("terminate", "long1", &["--cause", "stopped by the e2e test", "--timeout", "60"]).await?;
    expect(&f, "/phase", json!("ABORTED"))?;
    expect(&f, "/abort_cause", json!("stopped by the e2e test"))?;
    expect(&f, "/nodes/n0/phase", json!("ABORTED"))?;
    let first_view = attempts(&f, "n0")?;

    // the task process is gone (killed with its process group), it never finished its sleep
    let gone = Instant::now();
    while process_alive(pid) {
        ensure!(gone.elapsed() < Duration::from_secs(15), "task process {pid} still alive after the abort");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ensure!(!Path::new(&scratch).join("sleeper-finished").exists(), "the task finished despite the abort");

    // The attempt ends ABORTED. The execution may be reported ABORTED before the executor has
    // killed the process and reported the attempt (the scheduler does not wait for it), so the
    // attempt is allowed to catch up; the first view is printed for the record.
    let mut tries = first_view.clone();
    let mut reads = 0;
    while tries != vec![(0, "ABORTED".to_string())] {
        reads += 1;
        ensure!(reads <= 5, "the aborted attempt is still {tries:?} after {reads} reads");
        tokio::time::sleep(Duration::from_secs(1)).await;
        tries = attempts(&s.inspect("long1").await?, "n0")?;
    }
    eprintln!("terminate: attempt as FlyteRemote saw it when the execution was ABORTED: {first_view:?}");
    report("terminate", &[("until the task ran", running_after), ("total", t0.elapsed())]);
    s.stop().await
}

/// A raw container task (`ContainerTask`: inputs as files, outputs read from files) feeding a
/// Python task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_container_task() -> Result<()> {
    let s = Stack::start(Store::Local).await?;
    let out =
        s.run_ok("raw1", "container.py", "container_wf", &["--a", "20", "--b", "22", "--label", "answer"]).await?;
    let f = s.inspect("raw1").await?;
    expect(&f, "/phase", json!("SUCCEEDED"))?;
    ensure!(all_nodes_succeeded_once(&f)? == 2, "two task nodes expected\n{f:#}");
    expect(&f, "/nodes/n0/inputs", json!({"a": 20, "b": 22, "label": "answer"}))?;
    expect(&f, "/nodes/n0/outputs", json!({"total": 42, "summary": "answer: 20+22"}))?;
    expect(&f, "/outputs", json!({"o0": 84, "o1": "answer: 20+22"}))?;
    report("raw_container", &[("pyflyte run --wait container_wf", out.elapsed)]);
    s.stop().await
}

/// A fan-out of 100 raw tasks that end within milliseconds: the first ones finish while the
/// scheduler is still starting the execution, and their events must not be lost (they were, until
/// the workload benchmark's W2 found it: the execution then never ended).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_fan_out_of_raw_tasks() -> Result<()> {
    let s = Stack::start(Store::Local).await?;
    let out = s.run_ok("fan100", "container.py", "raw_fan_out", &[]).await?;
    let f = s.inspect("fan100").await?;
    expect(&f, "/phase", json!("SUCCEEDED"))?;
    ensure!(all_nodes_succeeded_once(&f)? == 101, "101 task nodes expected\n{f:#}");
    report("raw_fan_out", &[("pyflyte run --wait raw_fan_out (101 tasks)", out.elapsed)]);
    s.stop().await
}

/// The fixture is valid flytekit code: its own pytest file runs the workflows locally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_fixture_runs_locally() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let project = tmp.path().join("project");
    common::copy_tree(&common::fixtures_dir().join("runs"), &project)?;
    let venv = common::Venv::new(&tmp.path().join("home"))?;
    let out = venv.run("python", &["-m", "pytest", "-q", "-p", "no:cacheprovider", "test_local.py"], &project).await?;
    ensure!(out.status.success(), "pytest of the fixture failed\n{}", out.dump());
    ensure!(out.stdout.contains("5 passed"), "expected 5 passing local tests\n{}", out.dump());
    Ok(())
}

/// Whether `pid` is a live (not zombie) process.
fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// A conditional (`conditional().if_().then().else_()`): one execution takes each side; the branch
/// node lists only the child it ran, and its output feeds the next node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_runs_one_side() -> Result<()> {
    let s = Stack::start(Store::Local).await?;
    let good = s.run_ok("branch1", "branches.py", "train_if_good", &["--rows", "80"]).await?;
    let f = s.inspect("branch1").await?;
    expect(&f, "/phase", json!("SUCCEEDED"))?;
    expect(&f, "/outputs", json!({"o0": "TRAINED ON QUALITY 0.8"}))?;
    let bad = s.run_ok("branch2", "branches.py", "train_if_good", &["--rows", "20"]).await?;
    let f = s.inspect("branch2").await?;
    expect(&f, "/outputs", json!({"o0": "SKIPPED TRAINING: QUALITY 0.2 TOO LOW"}))?;
    report("branches", &[("pyflyte run --wait, then side", good.elapsed), ("else side", bad.elapsed)]);
    s.stop().await
}
