//! `pyflyte register` of a realistic flytekit project (tests/e2e/fixtures/marketplace) against
//! aloft-metadata on SQLite and on Postgres, read back with flytekit's `FlyteRemote`.
//!
//! Per backend, in order (4 `pyflyte` runs and one Python checker):
//! 1. register version v1: all 24 entities (14 tasks incl. the map task's array-node task,
//!    4 workflows, 6 launch plans) are created and the code bundle is uploaded;
//! 2. the exact specs flytekit sent, with `upstream_node_ids` listed in another order, are
//!    ALREADY_EXISTS (flytekit builds that list from a Python `set`, so its order changes between
//!    runs of the same code);
//! 3. register v1 again: succeeds through the ALREADY_EXISTS path;
//! 4. register v1 with one task changed: fails with INVALID_ARGUMENT "already exists with a
//!    different structure", and v1 is left as it was;
//! 5. register the changed code as v2;
//! 6. `check_registered.py` fetches latest and pinned tasks, workflows and launch plans and
//!    prints what it found; compiled workflows must have the branch, array and sub-workflow
//!    nodes, launch plans their defaults, fixed inputs, schedules and notifications;
//! 7. both code bundles exist in the local store at their `native_url` and are gzip tarballs of
//!    the project.

mod common;

use std::path::Path;

use aloft_proto::flyteidl::admin::WorkflowSpec;
use aloft_proto::flyteidl::core::{Identifier, Node, ResourceType, node::Target};
use anyhow::{Context, Result, bail, ensure};
use prost::Message;
use serde_json::Value;

use common::{Db, Metadata, Output, TestDb, Venv, copy_tree, edit_file, fixtures_dir};

const DOMAIN: &str = "development";
const PACKAGE: &str = "marketplace";
const ENTITIES: usize = 24;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_and_fetch_on_sqlite() -> Result<()> {
    register_and_fetch(Db::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_and_fetch_on_postgres() -> Result<()> {
    register_and_fetch(Db::Postgres).await
}

/// The fixture is valid flytekit code: its own pytest file runs the workflows locally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixture_runs_locally() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let project = tmp.path().join("project");
    copy_tree(&fixtures_dir().join("marketplace"), &project)?;
    let venv = Venv::new(&tmp.path().join("home"))?;
    let out = venv.run("python", &["-m", "pytest", "-q", "-p", "no:cacheprovider", "test_local.py"], &project).await?;
    ensure!(out.status.success(), "pytest of the fixture failed\n{}", out.dump());
    ensure!(out.stdout.contains("4 passed"), "expected 4 passing local tests\n{}", out.dump());
    Ok(())
}

async fn register_and_fetch(kind: Db) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let db = TestDb::create(kind, tmp.path()).await?;
    let result = scenario(kind, &db.url, tmp.path()).await;
    // the database goes away whether or not the scenario passed
    let dropped = db.drop_db().await;
    result.and(dropped)
}

async fn scenario(kind: Db, database_url: &str, tmp: &Path) -> Result<()> {
    let store_root = tmp.join("store");
    let metadata = Metadata::start(database_url, &store_root).await?;
    let config = tmp.join("flyte.yaml");
    metadata.write_flyte_config(&config)?;
    let venv = Venv::new(&tmp.join("home"))?;
    // a private copy: pyflyte bundles everything under the project root, and step 4 edits it
    let root = tmp.join("project");
    copy_tree(&fixtures_dir().join("marketplace"), &root)?;
    let project = aloft_testkit::unique_name("mkt");
    let register = |version: &'static str| {
        let (venv, config, root, project) = (&venv, &config, &root, &project);
        async move {
            let config = config.to_str().context("config path is not UTF-8")?;
            let args = [
                "--config",
                config,
                "register",
                "--project",
                project,
                "--domain",
                DOMAIN,
                "--version",
                version,
                PACKAGE,
            ];
            venv.run("pyflyte", &args, root).await
        }
    };
    let mut timings = Vec::new();

    // 1. first registration
    let first = register("v1").await?;
    timings.push(("register v1", first.elapsed));
    ensure!(first.status.success(), "pyflyte register v1 failed\n{}", first.dump());
    ensure_registered_all(&first)?;

    // 2. the order of upstream_node_ids is not part of a workflow's identity
    reregister_with_permuted_upstreams(&metadata, &project).await?;

    // 3. identical re-registration: every Create* is ALREADY_EXISTS, which flytekit treats as success
    let again = register("v1").await?;
    timings.push(("re-register v1", again.elapsed));
    ensure!(
        again.status.success(),
        "re-registering identical code under v1 must succeed (ALREADY_EXISTS)\n{}",
        again.dump()
    );
    ensure_registered_all(&again)?;

    // 4. a changed task under an existing version is refused
    edit_file(
        &root.join("marketplace/tasks/catalog.py"),
        "@task(timeout=timedelta(minutes=5))",
        "@task(timeout=timedelta(minutes=5), retries=3)",
    )?;
    let changed = register("v1").await?;
    timings.push(("register changed v1", changed.elapsed));
    ensure!(!changed.status.success(), "registering a changed task under v1 must fail\n{}", changed.dump());
    let text = changed.all();
    ensure!(
        text.contains("INVALID_ARGUMENT") && text.contains("already exists with a different structure"),
        "expected INVALID_ARGUMENT \"already exists with a different structure\"\n{}",
        changed.dump()
    );
    ensure!(
        text.contains(&format!("{project}/{DOMAIN}/")) && text.contains("@v1"),
        "the error should name the entity\n{}",
        changed.dump()
    );

    // 5. the changed code as a new version
    let second = register("v2").await?;
    timings.push(("register v2", second.elapsed));
    ensure!(second.status.success(), "pyflyte register v2 failed\n{}", second.dump());
    ensure_registered_all(&second)?;

    // 6. read everything back through FlyteRemote
    let script = fixtures_dir().join("check_registered.py");
    let endpoint = metadata.endpoint();
    let args = [
        script.to_str().context("fixture path is not UTF-8")?,
        "--endpoint",
        &endpoint,
        "--project",
        &project,
        "--domain",
        DOMAIN,
        "--v1",
        "v1",
        "--v2",
        "v2",
    ];
    let checked = venv.run("python", &args, tmp).await?;
    timings.push(("check_registered.py", checked.elapsed));
    ensure!(checked.status.success(), "check_registered.py failed\n{}", checked.dump());
    let facts: Value = serde_json::from_str(&checked.stdout)
        .with_context(|| format!("checker output is not JSON\n{}", checked.dump()))?;
    check_facts(&facts, &store_root).with_context(|| format!("facts read back:\n{:#}", facts))?;

    // 7. the uploaded code bundles
    let v1_bundle = str_at(&facts, "/tasks/score_listing@v1/native_url")?;
    let v2_bundle = str_at(&facts, "/tasks/score_listing/native_url")?;
    ensure!(v1_bundle != v2_bundle, "changed code must be a new bundle: {v1_bundle}");
    check_bundle(Path::new(v1_bundle), &store_root, "@task(timeout=timedelta(minutes=5))\n").await?;
    check_bundle(Path::new(v2_bundle), &store_root, "@task(timeout=timedelta(minutes=5), retries=3)\n").await?;

    for (step, took) in &timings {
        eprintln!("{kind:?}: {step}: {:.1} s", took.as_secs_f64());
    }
    metadata.stop().await
}

/// pyflyte printed success for every entity of the fixture.
fn ensure_registered_all(out: &Output) -> Result<()> {
    let want = format!("Successfully registered {ENTITIES} entities");
    ensure!(out.stdout.contains(&want), "expected {want:?}\n{}", out.dump());
    Ok(())
}

/// Sends each stored workflow spec that has a node with several upstream nodes again, with those
/// lists reversed: FlyteAdmin sorts `upstream_node_ids` before computing a workflow's digest
/// (flytepropeller#323) because flytekit emits them in `set` order, so this must be
/// ALREADY_EXISTS. Otherwise re-running `pyflyte register` on unchanged code fails at random.
async fn reregister_with_permuted_upstreams(metadata: &Metadata, project: &str) -> Result<()> {
    let app = &metadata.running.app;
    // nightly's last node consumes a launch-plan node and a sub-workflow node
    for name in ["marketplace.workflows.nightly.nightly"] {
        let row = app
            .store
            .get_entity(ResourceType::Workflow as i32, project, DOMAIN, name, "v1")
            .await?
            .with_context(|| format!("workflow {name}@v1 is not stored"))?;
        let mut spec = WorkflowSpec::decode(row.spec.as_slice())?;
        let mut changed = 0;
        if let Some(t) = spec.template.as_mut() {
            changed += reverse_upstreams(&mut t.nodes);
        }
        for sub in &mut spec.sub_workflows {
            changed += reverse_upstreams(&mut sub.nodes);
        }
        ensure!(changed > 0, "{name} was expected to have a node with several upstream nodes");
        let id = Identifier {
            resource_type: ResourceType::Workflow as i32,
            project: project.into(),
            domain: DOMAIN.into(),
            name: name.into(),
            version: "v1".into(),
            org: String::new(),
        };
        // the gRPC handler is a one-line adapter over this call; the status is what flytekit sees
        match app.create_workflow(Some(id), Some(spec)).await.map_err(tonic::Status::from) {
            Err(status) if status.code() == tonic::Code::AlreadyExists => {}
            other => bail!(
                "CreateWorkflow {name}@v1 with the same spec, only upstream_node_ids reordered, must be ALREADY_EXISTS \
                 (flytekit sends them in Python set order; FlyteAdmin sorts them before hashing), got {other:?}"
            ),
        }
    }
    Ok(())
}

/// Reverses every `upstream_node_ids` list with two or more entries; returns how many.
fn reverse_upstreams(nodes: &mut [Node]) -> usize {
    let mut n = 0;
    for node in nodes {
        if node.upstream_node_ids.len() > 1 {
            node.upstream_node_ids.reverse();
            n += 1;
        }
        if let Some(Target::BranchNode(b)) = node.target.as_mut()
            && let Some(ie) = b.if_else.as_mut()
        {
            let cases = ie.case.iter_mut().map(|c| &mut **c).chain(ie.other.iter_mut());
            for then in cases.filter_map(|c| c.then_node.as_deref_mut()) {
                n += reverse_upstreams(std::slice::from_mut(then));
            }
        }
    }
    n
}

fn at<'a>(facts: &'a Value, pointer: &str) -> Result<&'a Value> {
    facts.pointer(pointer).with_context(|| format!("{pointer} is missing"))
}

fn str_at<'a>(facts: &'a Value, pointer: &str) -> Result<&'a str> {
    at(facts, pointer)?.as_str().with_context(|| format!("{pointer} is not a string"))
}

fn expect(facts: &Value, pointer: &str, want: Value) -> Result<()> {
    let got = at(facts, pointer)?;
    ensure!(*got == want, "{pointer}: expected {want}, got {got}");
    Ok(())
}

/// Assertions on what FlyteRemote read back.
fn check_facts(f: &Value, store_root: &Path) -> Result<()> {
    use serde_json::json;
    let catalog = "marketplace.tasks.catalog";

    // tasks: latest is v2 (only score_listing changed in content), pinned v1 is untouched
    expect(f, "/tasks/score_listing/version", json!("v2"))?;
    expect(f, "/tasks/score_listing/retries", json!(3))?;
    expect(f, "/tasks/score_listing/timeout_s", json!(300))?;
    expect(f, "/tasks/score_listing@v1/version", json!("v1"))?;
    expect(f, "/tasks/score_listing@v1/retries", json!(0))?;
    expect(f, "/tasks/fetch_listing_ids/name", json!(format!("{catalog}.fetch_listing_ids")))?;
    expect(f, "/tasks/fetch_listing_ids/type", json!("python-task"))?;
    expect(f, "/tasks/fetch_listing_ids/cache", json!(true))?;
    expect(f, "/tasks/fetch_listing_ids/cache_version", json!("1.0"))?;
    expect(f, "/tasks/fetch_listing_ids/retries", json!(2))?;
    expect(f, "/tasks/fetch_listing_ids/cpu_request", json!("250m"))?;
    expect(f, "/tasks/fetch_listing_ids/inputs", json!({"category": "STRING", "limit": "INTEGER"}))?;
    expect(f, "/tasks/fetch_listing_ids/outputs", json!({"o0": "list[STRING]"}))?;
    expect(f, "/tasks/summarize_scores/inputs/scores", json!("list[union[FLOAT,NONE]]"))?;
    expect(f, "/tasks/summarize_scores/outputs/o0", json!("STRUCT"))?;
    expect(f, "/tasks/publish_report/env", json!({"REPORT_FORMAT": "markdown"}))?;
    expect(
        f,
        "/tasks/train_per_region/inputs",
        json!({"lookback_days": "INTEGER", "params": "STRUCT", "regions": "list[STRING]", "snapshot": "DATETIME"}),
    )?;
    ensure!(
        at(f, "/tasks/train_per_region/env/_F_SS_C").is_ok(),
        "the @dynamic task lost its serialization settings env"
    );
    expect(f, "/tasks/train_model/inputs/features", json!("dict[FLOAT]"))?;
    expect(f, "/tasks/train_model/cpu_request", json!("2"))?;
    let store = store_root.to_str().context("store path is not UTF-8")?;
    for t in ["score_listing", "score_listing@v1", "fetch_listing_ids", "train_per_region"] {
        let url = str_at(f, &format!("/tasks/{t}/native_url"))?;
        ensure!(
            url.starts_with(&format!("{store}/")) && url.ends_with(".tar.gz"),
            "{t}: native_url {url} is not a bundle in the store"
        );
    }
    expect(f, "/tasks/train_per_region/native_url", at(f, "/tasks/score_listing@v1/native_url")?.clone())?;

    // ListTasks filtered by version: the 14 tasks in each version, incl. the map task's
    for v in ["v1", "v2"] {
        let names = at(f, &format!("/tasks_by_version/{v}"))?.as_array().context("not a list")?;
        ensure!(names.len() == 14, "{v}: expected 14 tasks, got {names:?}");
        ensure!(
            names.iter().any(|n| n
                .as_str()
                .is_some_and(|n| n.starts_with(&format!("{catalog}.map_score_listing_")) && n.ends_with("-arraynode"))),
            "{v}: the map task's array-node task is missing: {names:?}"
        );
    }

    // catalog_quality: sub-workflow node; the sub-workflow holds the map task (ArrayNode)
    let score_category = "marketplace.workflows.catalog_quality.score_category";
    expect(f, "/workflows/catalog_quality/version", json!("v2"))?;
    expect(f, "/workflows/catalog_quality@v1/version", json!("v1"))?;
    expect(f, "/workflows/catalog_quality/nodes/0/kind", json!("workflow_node"))?;
    expect(f, "/workflows/catalog_quality/nodes/0/ref", json!("sub_workflow_ref"))?;
    expect(f, "/workflows/catalog_quality/nodes/0/target", json!(score_category))?;
    expect(f, "/workflows/catalog_quality/nodes/3/task", json!(format!("{catalog}.publish_report")))?;
    expect(f, "/workflows/catalog_quality/nodes/3/upstream", json!(["n1"]))?;
    expect(
        f,
        "/workflows/catalog_quality/inputs",
        json!({"boost": "dict[FLOAT]", "category": "STRING", "channel": "STRING", "limit": "INTEGER", "threshold": "FLOAT"}),
    )?;
    let sub = at(f, &format!("/workflows/catalog_quality/sub_workflows/{score_category}"))?;
    expect(sub, "/1/kind", json!("array_node"))?;
    expect(sub, "/1/parallelism", json!(4))?;
    expect(sub, "/1/min_success_ratio", json!(0.9))?;
    expect(sub, "/1/sub_node/kind", json!("task_node"))?;
    ensure!(str_at(sub, "/1/sub_node/task")?.ends_with("-arraynode"), "array node must run the map task");
    expect(f, "/workflows/catalog_quality/tasks", at(f, "/workflows/catalog_quality@v1/tasks")?.clone())?;
    ensure!(
        at(f, "/workflows/catalog_quality/tasks")?.as_array().is_some_and(|t| t.len() == 5),
        "closure must carry the 5 tasks of parent and sub-workflow"
    );
    expect(f, "/workflows/score_category/nodes/1/kind", json!("array_node"))?;
    expect(f, "/workflows/score_category/outputs/o0", json!("list[union[FLOAT,NONE]]"))?;

    // churn_training: dynamic task node, then a branch with then/else task nodes
    let churn = "marketplace.tasks.churn";
    expect(f, "/workflows/churn_training/nodes/0/task", json!(format!("{churn}.train_per_region")))?;
    expect(f, "/workflows/churn_training/nodes/3/kind", json!("branch_node"))?;
    expect(f, "/workflows/churn_training/nodes/3/upstream", json!(["n1", "n2"]))?;
    expect(f, "/workflows/churn_training/nodes/3/case_then/task", json!(format!("{churn}.promote_model")))?;
    expect(f, "/workflows/churn_training/nodes/3/else/task", json!(format!("{churn}.alert_team")))?;
    expect(f, "/workflows/churn_training/nodes/3/case_condition/comparison/leftValue/var", json!("n2.o0"))?;
    expect(f, "/workflows/churn_training/inputs/params", json!("STRUCT"))?;
    expect(f, "/workflows/churn_training/inputs/snapshot", json!("DATETIME"))?;

    // nightly: a launch-plan node and a sub-workflow node feeding one task
    expect(f, "/workflows/nightly/nodes/0/ref", json!("launchplan_ref"))?;
    expect(f, "/workflows/nightly/nodes/0/target", json!("catalog_quality_daily"))?;
    expect(f, "/workflows/nightly/nodes/1/ref", json!("sub_workflow_ref"))?;
    expect(f, "/workflows/nightly/nodes/1/target", json!("marketplace.workflows.churn.churn_training"))?;
    expect(f, "/workflows/nightly/nodes/2/upstream", json!(["n0", "n1"]))?;
    expect(f, "/workflows/nightly/launch_plans", json!(["catalog_quality_daily"]))?;
    expect(
        f,
        "/workflows/nightly/sub_workflows/marketplace.workflows.churn.churn_training/3/kind",
        json!("branch_node"),
    )?;

    // launch plans: defaults, fixed inputs, schedule, labels; latest follows the newest version
    let daily = json!({
        "defaults": {"boost": {"fashion": 2.0, "home": 0.5}, "category": "fashion", "limit": 50},
        "fixed": {"channel": "#catalog-alerts", "threshold": 0.3},
        "schedule": {"cron": "0 6 * * *", "kickoff_time_input_arg": ""},
        "is_scheduled": true,
        "labels": {"team": "catalog"},
        "notifications": [],
        "required": [],
        "workflow": "marketplace.workflows.catalog_quality.catalog_quality",
    });
    for (key, version) in [("catalog_quality_daily", "v2"), ("catalog_quality_daily@v1", "v1")] {
        for (field, want) in daily.as_object().expect("object") {
            expect(f, &format!("/launch_plans/{key}/{field}"), want.clone())?;
        }
        expect(f, &format!("/launch_plans/{key}/version"), json!(version))?;
        expect(f, &format!("/launch_plans/{key}/workflow_version"), json!(version))?;
    }
    let params = json!({"features": ["tenure_days", "orders_90d", "support_tickets"], "learning_rate": 0.05, "max_depth": 6, "n_estimators": 200});
    expect(f, "/launch_plans/churn_weekly/version", json!("v1"))?;
    expect(
        f,
        "/launch_plans/churn_weekly/defaults",
        json!({"lookback_days": 180, "params": params, "regions": ["us", "eu", "apac"]}),
    )?;
    expect(f, "/launch_plans/churn_weekly/required", json!(["snapshot"]))?;
    expect(f, "/launch_plans/churn_weekly/fixed", json!({"dry_run": false, "min_auc": 0.75}))?;
    expect(
        f,
        "/launch_plans/churn_weekly/schedule",
        json!({"cron": "0 3 * * 1", "kickoff_time_input_arg": "snapshot"}),
    )?;
    expect(
        f,
        "/launch_plans/churn_weekly/notifications",
        json!([
            {"kind": "slack", "phases": ["FAILED", "TIMED_OUT"], "recipients": ["churn-oncall@example.com"]},
            {"kind": "slack", "phases": ["SUCCEEDED"], "recipients": ["ml-team@example.com"]},
        ]),
    )?;
    expect(f, "/launch_plans/churn_weekly/annotations", json!({"owner": "churn-team"}))?;
    // the default launch plan of a workflow: its defaults, the rest required
    expect(f, "/launch_plans/churn_training/version", json!("v2"))?;
    expect(f, "/launch_plans/churn_training/required", json!(["regions", "snapshot"]))?;
    expect(
        f,
        "/launch_plans/churn_training/defaults",
        json!({"dry_run": true, "lookback_days": 90, "min_auc": 0.7, "params": params}),
    )?;
    expect(f, "/launch_plans/churn_training/schedule", Value::Null)?;

    // NOT_FOUND paths: nothing activated; an unknown task
    expect(f, "/active_churn_weekly", Value::Null)?;
    expect(f, "/missing_task", json!("FlyteEntityNotExistException"))?;
    Ok(())
}

/// The bundle at `native_url` is a gzip tarball inside the store holding the project, and its
/// copy of catalog.py contains `marker`.
async fn check_bundle(native_url: &Path, store_root: &Path, marker: &str) -> Result<()> {
    ensure!(
        native_url.starts_with(store_root),
        "{} is outside the store {}",
        native_url.display(),
        store_root.display()
    );
    let bytes = std::fs::read(native_url)
        .with_context(|| format!("code bundle {} is not in the store", native_url.display()))?;
    ensure!(bytes.starts_with(&[0x1f, 0x8b]), "{} is not gzip", native_url.display());
    let list = tokio::process::Command::new("tar").arg("-tzf").arg(native_url).output().await?;
    ensure!(
        list.status.success(),
        "tar -tzf {} failed: {}",
        native_url.display(),
        String::from_utf8_lossy(&list.stderr)
    );
    let members = String::from_utf8_lossy(&list.stdout);
    for want in
        ["marketplace/__init__.py", "marketplace/tasks/catalog.py", "marketplace/workflows/churn.py", "test_local.py"]
    {
        ensure!(members.lines().any(|m| m.trim_start_matches("./") == want), "{want} is not in the bundle:\n{members}");
    }
    ensure!(!members.lines().any(|m| m.contains("..")), "bundle members must not contain `..`:\n{members}");
    let member =
        members.lines().find(|m| m.trim_start_matches("./") == "marketplace/tasks/catalog.py").expect("checked above");
    let catalog = tokio::process::Command::new("tar").arg("-xzOf").arg(native_url).arg(member).output().await?;
    ensure!(catalog.status.success(), "cannot extract {member}");
    ensure!(
        String::from_utf8_lossy(&catalog.stdout).contains(marker),
        "{} does not hold the registered code ({marker:?})",
        native_url.display()
    );
    Ok(())
}
