//! The CLI's tables and trees against golden files (`tests/golden/*.txt`), from fixed views so
//! every column width and glyph is pinned. `UPDATE_GOLDEN=1` rewrites the files after a deliberate
//! change; review the diff.

use std::collections::BTreeMap;

use aloft::cli::render;
use aloft::cli::view::{
    AttemptView, DeliveryView, ExecutionDetail, ExecutionView, LineageEdgeView, LineageNodeView, LineageView, NodeView,
    ProjectView, Value,
};
use anyhow::{Context as _, Result};

fn golden(name: &str, actual: &str) -> Result<()> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual)?;
    }
    let expected =
        std::fs::read_to_string(&path).with_context(|| format!("{} (UPDATE_GOLDEN=1 creates it)", path.display()))?;
    assert_eq!(actual, expected, "{name} differs from its golden file; UPDATE_GOLDEN=1 rewrites it");
    Ok(())
}

/// 2023-11-14 22:13:20 UTC.
const T0: f64 = 1_700_000_000.0;

fn execution(name: &str, phase: &str, duration: Option<f64>) -> ExecutionView {
    ExecutionView {
        project: "churn".into(),
        domain: "development".into(),
        name: name.into(),
        launch_plan: "churn.workflows.training".into(),
        version: "v7".into(),
        phase: phase.into(),
        created_at: Some(T0),
        started_at: Some(T0 + 1.0),
        duration_secs: duration,
        mode: "manual".into(),
        reference: None,
        error: None,
    }
}

fn node(id: &str, task: &str, phase: &str, secs: Option<f64>, cache: &str, attempts: u32) -> NodeView {
    NodeView {
        id: id.into(),
        spec_id: id.rsplit('-').next().unwrap_or(id).into(),
        task: task.into(),
        phase: phase.into(),
        started_at: Some(T0),
        duration_secs: secs,
        cache: cache.into(),
        error: None,
        attempts: (0..attempts)
            .map(|a| AttemptView {
                attempt: a,
                phase: if a + 1 == attempts { phase.into() } else { "FAILED".into() },
                duration_secs: secs,
                task: task.into(),
                log_uri: Some(format!("/data/store/{id}/{a}/task.log")),
            })
            .collect(),
        children: Vec::new(),
    }
}

#[test]
fn projects_table() -> Result<()> {
    let labels = |team: &str, ch: &str| {
        BTreeMap::from([("team".to_string(), team.to_string()), ("slack-channel".to_string(), ch.to_string())])
    };
    let list = vec![
        ProjectView {
            id: "churn".into(),
            name: "Churn model".into(),
            description: "weekly churn scores".into(),
            team: "ml-platform".into(),
            slack_channel: "ml-alerts".into(),
            labels: labels("ml-platform", "ml-alerts"),
        },
        ProjectView {
            id: "flytesnacks".into(),
            name: "flytesnacks".into(),
            description: String::new(),
            team: String::new(),
            slack_channel: String::new(),
            labels: BTreeMap::new(),
        },
    ];
    golden("projects.txt", &render::projects(&list))?;
    golden("projects-empty.txt", &render::projects(&[]))
}

#[test]
fn executions_table() -> Result<()> {
    let mut relaunched = execution("r2", "RUNNING", None);
    relaunched.mode = "relaunch".into();
    relaunched.started_at = None;
    let list = vec![relaunched, execution("r1", "FAILED", Some(245.0)), execution("r0", "SUCCEEDED", Some(12.34))];
    golden("executions.txt", &render::executions(&list))
}

#[test]
fn execution_tree_with_a_branch_a_map_and_a_failure() -> Result<()> {
    let mut branch = node("n4", "", "SUCCEEDED", Some(3.0), "", 0);
    let mut inner = node("n4-n0", "", "SUCCEEDED", Some(2.5), "", 0);
    inner.children = vec![
        node("n4-n0-0-n0", "churn.tasks.train", "SUCCEEDED", Some(2.0), "miss", 1),
        node("n4-n0-0-n1", "churn.tasks.save", "SUCCEEDED", Some(0.4), "disabled", 1),
    ];
    branch.children = vec![inner, node("n4-n1", "churn.tasks.report", "SKIPPED", None, "", 0)];
    let mut failed = node("n5", "churn.tasks.evaluate", "FAILED", Some(61.0), "", 3);
    failed.error = Some("USER:ValueError: r2 is 0.41\nbelow the threshold 0.9".into());
    let mut exec = execution("r1", "FAILED", Some(70.2));
    exec.error = Some("USER:ValueError: r2 is 0.41\nbelow the threshold 0.9".into());
    exec.reference = Some("churn/development/r0".into());
    exec.mode = "relaunch".into();
    let detail = ExecutionDetail {
        execution: exec,
        nodes: vec![
            node("start-node", "", "SUCCEEDED", None, "", 0),
            node("n0", "churn.tasks.load", "SUCCEEDED", Some(0.8), "hit", 0),
            node("n1", "churn.tasks.validate", "SUCCEEDED", Some(1.25), "disabled", 1),
            node("n2", "churn.tasks.train-map", "SUCCEEDED", Some(4.0), "", 4),
            branch,
            failed,
        ],
    };
    golden(
        "execution-show.txt",
        &render::execution_detail(
            &detail,
            "http://localhost:30080/console/projects/churn/domains/development/executions/r1",
        ),
    )?;
    let queued = ExecutionDetail { execution: execution("r3", "QUEUED", None), nodes: Vec::new() };
    golden("execution-show-queued.txt", &render::execution_detail(&queued, ""))
}

#[test]
fn watch_lines_report_each_change_once() -> Result<()> {
    let mut before = ExecutionDetail {
        execution: execution("r1", "RUNNING", None),
        nodes: vec![
            node("n0", "churn.tasks.load", "RUNNING", None, "", 1),
            node("n1", "churn.tasks.train", "QUEUED", None, "", 0),
        ],
    };
    let first = render::changes(None, &before, T0);
    let mut after = before.clone();
    after.nodes[0] = node("n0", "churn.tasks.load", "SUCCEEDED", Some(1.5), "", 1);
    after.nodes[1] = node("n1", "churn.tasks.train", "RUNNING", None, "", 1);
    let second = render::changes(Some(&before), &after, T0 + 2.0);
    before = after.clone();
    let nothing = render::changes(Some(&before), &after, T0 + 3.0);
    after.execution.phase = "SUCCEEDED".into();
    after.nodes[1] = node("n1", "churn.tasks.train", "SUCCEEDED", Some(2.0), "", 1);
    let last = render::changes(Some(&before), &after, T0 + 4.0);
    assert!(nothing.is_empty(), "{nothing:?}");
    golden("watch.txt", &[first, second, last].concat().join("\n"))
}

#[test]
fn values_deliveries_and_lineage() -> Result<()> {
    let values = vec![
        Value { name: "model".into(), kind: "file".into(), value: "/data/store/raw/r1/model.joblib".into() },
        Value { name: "scores".into(), kind: "dataclass".into(), value: r#"{"accuracy":0.97,"f1":0.95}"#.into() },
        Value { name: "threshold".into(), kind: "float".into(), value: "0.9".into() },
    ];
    golden("values.txt", &render::values("outputs", &values))?;
    let deliveries = vec![
        DeliveryView {
            phase: "FAILED".into(),
            destination: "channel:#ml-alerts".into(),
            target: "webhook:#ml-alerts".into(),
            state: "delivered".into(),
            attempts: 1,
            last_error: String::new(),
            text: "churn r1 failed".into(),
        },
        DeliveryView {
            phase: "FAILED".into(),
            destination: "recipient:alice@example.com".into(),
            target: String::new(),
            state: "failed".into(),
            attempts: 0,
            last_error: "alice@example.com is not in slack.users".into(),
            text: String::new(),
        },
    ];
    golden("notifications.txt", &render::deliveries("churn/production/r1", &deliveries))?;
    let graph = LineageView {
        nodes: vec![
            LineageNodeView { key: "run:churn/development/r1".into(), kind: "run".into(), label: "r1".into() },
            LineageNodeView {
                key: "dataset:/data/store/raw/r1/model.joblib".into(),
                kind: "dataset".into(),
                label: "/data/store/raw/r1/model.joblib".into(),
            },
        ],
        edges: vec![LineageEdgeView {
            from: "attempt:churn/development/r1/n3/0".into(),
            to: "dataset:/data/store/raw/r1/model.joblib".into(),
            kind: "produced".into(),
        }],
        truncated: true,
    };
    golden("lineage.txt", &render::lineage(&graph))
}
