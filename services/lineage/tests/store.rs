//! One suite, run against both backends (a SQLite file and a fresh database on the dev Postgres):
//! mutations are idempotent, declarations replace what their previous version contributed and
//! link runs captured before them, walks follow edges both ways with depth and node limits, and
//! the outbox queues each payload once and hands it out in order to one drainer at a time.

use std::collections::BTreeMap;

use aloft_lineage::adapters::store::{Direction, Settle, Store};
use aloft_lineage::app::App;
use aloft_lineage::domain::export::Settings;
use aloft_lineage::domain::graph::{Edge, EdgeKind, Export, Mutation, Node, NodeKind, Origin, Target};
use anyhow::{Result, ensure};

const DECLARATIONS: &str = r#"
sources:
  - {name: customers, platform: dbt, location: analytics.customers, uri: "s3://b/customers.csv"}
pipelines:
  - {name: training, workflow: wf.train}
models:
  - {name: churn, trained_by: training, artifact: model}
endpoints:
  - {name: api, model: churn}
"#;

async fn backends() -> Result<Vec<(String, Store, Option<tempfile::TempDir>)>> {
    let dir = tempfile::tempdir()?;
    let sqlite = Store::connect(&format!("sqlite://{}", dir.path().join("l.db").display())).await?;
    let pg = Store::connect(&aloft_testkit::fresh_postgres_url("lineage").await).await?;
    Ok(vec![("sqlite".into(), sqlite, Some(dir)), ("postgres".into(), pg, None)])
}

fn node(key: &str, kind: NodeKind, lookup: &str, attrs: &[(&str, &str)]) -> Mutation {
    Mutation::Node(
        Node {
            key: key.into(),
            kind,
            project: "p".into(),
            label: key.rsplit('/').next().unwrap_or(key).into(),
            lookup: lookup.into(),
            attrs: attrs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
        },
        Origin::Event,
    )
}

fn edge(from: &str, kind: EdgeKind, to: &str) -> Mutation {
    Mutation::Edge(Edge::new(from, kind, to), Origin::Event)
}

/// A captured training run: data -> attempt -> model file, the run succeeded with output `model`.
fn training_run() -> Vec<Mutation> {
    vec![
        node(
            "run:p/d/e1",
            NodeKind::Run,
            "p/wf.train",
            &[("domain", "d"), ("workflow", "wf.train"), ("phase", "SUCCEEDED")],
        ),
        Mutation::Attr {
            key: "run:p/d/e1".into(),
            name: "output.model".into(),
            value: "s3://b/model.pkl".into(),
            only_if_absent: false,
        },
        node("attempt:p/d/e1/n0/0", NodeKind::TaskAttempt, "", &[]),
        edge("dataset:s3://b/customers.csv", EdgeKind::Consumed, "attempt:p/d/e1/n0/0"),
        edge("attempt:p/d/e1/n0/0", EdgeKind::Produced, "dataset:s3://b/model.pkl"),
        edge("attempt:p/d/e1/n0/0", EdgeKind::PartOf, "run:p/d/e1"),
    ]
}

#[tokio::test]
async fn the_store_behaves_the_same_on_both_backends() -> Result<()> {
    for (name, store, _dir) in backends().await? {
        run_suite(&store).await.map_err(|e| e.context(format!("backend {name}")))?;
        store.close().await;
    }
    Ok(())
}

async fn run_suite(store: &Store) -> Result<()> {
    let app = App::new(store.clone(), None, None, Settings::default());

    // captured first, applied twice: the same rows
    store.apply(&training_run()).await?;
    store.apply(&training_run()).await?;
    let down = store.edges(&["attempt:p/d/e1/n0/0".into()], Direction::Downstream).await?;
    ensure!(down.len() == 2, "edges are unique: {down:?}");
    // a late non-terminal phase does not overwrite
    store
        .apply(&[Mutation::Attr {
            key: "run:p/d/e1".into(),
            name: "phase".into(),
            value: "RUNNING".into(),
            only_if_absent: true,
        }])
        .await?;
    let run = store.nodes(&["run:p/d/e1".into()]).await?;
    ensure!(run[0].attrs["phase"] == "SUCCEEDED", "{run:?}");

    // declarations link the run captured before them
    let applied = app.apply_declarations("p", "lineage.yaml", DECLARATIONS, false).await?;
    ensure!(applied.version == 1 && applied.changed, "{applied:?}");
    let again = app.apply_declarations("p", "lineage.yaml", DECLARATIONS, false).await?;
    ensure!(again.version == 1 && !again.changed, "identical text is not a new version: {again:?}");
    let g = app.walk("source:p/customers", Direction::Downstream, 10, 0, &[]).await?;
    let keys: Vec<&str> = g.nodes.iter().map(|n| n.key.as_str()).collect();
    ensure!(
        keys == [
            "source:p/customers",
            "dataset:s3://b/customers.csv",
            "attempt:p/d/e1/n0/0",
            "dataset:s3://b/model.pkl",
            "run:p/d/e1",
            "model:p/churn@e1",
            "model:p/churn",
            "endpoint:p/api",
        ],
        "breadth-first from the source: {keys:?}"
    );
    ensure!(!g.truncated);
    let (mv, runs, datasets, sources) = app.model_training_data("p", "churn", "").await?;
    ensure!(mv.key == "model:p/churn@e1" && runs.len() == 1 && sources.len() == 1, "{mv:?} {runs:?} {sources:?}");
    ensure!(datasets.iter().map(|d| d.label.as_str()).collect::<Vec<_>>() == ["s3://b/customers.csv"], "{datasets:?}");

    // limits
    let g = app.walk("source:p/customers", Direction::Downstream, 2, 0, &[]).await?;
    ensure!(g.truncated && g.nodes.len() == 3, "depth 2: {:?}", g.nodes);
    let g = app.walk("endpoint:p/api", Direction::Upstream, 10, 4, &[]).await?;
    ensure!(g.truncated && g.nodes.len() == 4, "4 nodes: {:?}", g.nodes);
    ensure!(g.edges.iter().all(|e| g.nodes.iter().any(|n| n.key == e.from) && g.nodes.iter().any(|n| n.key == e.to)));

    // a new version replaces everything the previous one contributed
    let v2 = DECLARATIONS.replace("  - {name: api, model: churn}\n", "  - {name: api2, model: churn}\n");
    ensure!(app.apply_declarations("p", "lineage.yaml", &v2, false).await?.version == 2);
    let g = app.walk("model:p/churn", Direction::Downstream, 1, 0, &[]).await?;
    ensure!(
        g.nodes.iter().map(|n| n.key.as_str()).collect::<Vec<_>>() == ["model:p/churn", "endpoint:p/api2"],
        "{:?}",
        g.nodes
    );
    ensure!(store.nodes(&["endpoint:p/api".into()]).await?.is_empty(), "the old endpoint is gone");
    ensure!(
        app.walk("run:p/d/e1", Direction::Downstream, 1, 0, &[]).await?.nodes.len() == 2,
        "the model version was rebuilt"
    );
    // invalid text changes nothing
    let err = app.apply_declarations("p", "lineage.yaml", "models: 3\n", false).await.unwrap_err();
    ensure!(
        err.to_string().starts_with("lineage.yaml: models: invalid type: integer `3`, expected a sequence"),
        "{err}"
    );
    ensure!(store.declarations("p", None).await?.map(|d| d.version) == Some(2));
    ensure!(store.declaration_versions("p").await?.len() == 2);

    // the outbox: queued once, in order, one drainer at a time
    let export = |key: &str| {
        Mutation::Export(Export { target: Target::OpenLineage, key: key.into(), body: serde_json::json!({"k": key}) })
    };
    store.apply(&[export("a"), export("b")]).await?;
    store.apply(&[export("a")]).await?;
    let pending = store.pending(Target::OpenLineage, 10).await?;
    ensure!(pending.iter().map(|r| r.key.as_str()).collect::<Vec<_>>() == ["a", "b"], "{pending:?}");
    let now = 1_000_000;
    ensure!(store.claim(&pending[0], now, 60_000_000).await?, "first claim");
    ensure!(!store.claim(&pending[0], now + 1, 60_000_000).await?, "a held payload is not handed out twice");
    store.settle(&pending[0], Settle::Retry { next_at: now + 5, error: "503" }).await?;
    let again = store.pending(Target::OpenLineage, 10).await?;
    ensure!(again[0].key == "a" && again[0].attempts == 1 && again[0].next_at == now + 5, "{again:?}");
    store.settle(&again[0], Settle::Sent).await?;
    store.settle(&again[1], Settle::Dead { error: "400" }).await?;
    let counts = store.outbox_counts(Target::OpenLineage).await?;
    ensure!(counts.sent == 1 && counts.dead == 1 && counts.pending == 0, "{counts:?}");
    Ok(())
}
