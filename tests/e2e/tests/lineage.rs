//! The lineage service against a whole Aloft stack and the real flytekit client: a training
//! pipeline reads a dataset file (the export of a dbt table), splits it, trains, evaluates and
//! writes a model file; a deploy pipeline consumes that model file. A `lineage.yaml` declares the
//! dbt source, both pipelines, the model and its endpoint. The query API must then return the
//! whole chain from the dbt table through both runs to the endpoint, and two local HTTP
//! receivers (DataHub GMS and an OpenLineage endpoint, each failing its first requests) must
//! receive payloads that match their schemas, each exactly once. Bad `lineage.yaml` files get
//! precise errors and change nothing.

mod common;
#[path = "common/stack.rs"]
mod stack;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aloft_proto::aloft::v1::lineage_service_client::LineageServiceClient;
use aloft_proto::aloft::v1::{
    ApplyDeclarationsRequest, GetDeclarationsRequest, LineageEdgeKind, LineageGraph, LineageGraphRequest,
    ModelTrainingDataRequest, RunLineageRequest, RunsUsingDatasetRequest,
};
use aloft_proto::flyteidl::core::WorkflowExecutionIdentifier;
use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use stack::{DOMAIN, Stack, Store};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// Bound on waiting for events to reach the graph and payloads to reach the receivers.
const SETTLE: Duration = Duration::from_secs(90);

/// One request a receiver got.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: BTreeMap<String, String>,
    body: Value,
}

/// A minimal HTTP/1.1 server that records JSON POSTs and answers 503 to the first `fail_first`.
#[derive(Clone)]
struct Receiver {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Received>>>,
    refused: Arc<Mutex<usize>>,
}

impl Receiver {
    async fn start(fail_first: usize) -> Result<Receiver> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let got = Arc::new(Mutex::new(Vec::new()));
        let refused = Arc::new(Mutex::new(0usize));
        let r = Receiver { addr, got: got.clone(), refused: refused.clone() };
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let (got, refused) = (got.clone(), refused.clone());
                tokio::spawn(async move {
                    let _ = serve_connection(sock, got, refused, fail_first).await;
                });
            }
        });
        Ok(r)
    }

    fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }
}

async fn serve_connection(
    mut sock: tokio::net::TcpStream,
    got: Arc<Mutex<Vec<Received>>>,
    refused: Arc<Mutex<usize>>,
    fail_first: usize,
) -> Result<()> {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            let mut chunk = [0u8; 8192];
            let n = sock.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or_default().to_string();
        let headers: BTreeMap<String, String> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let len: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
        while buf.len() < head_end + 4 + len {
            let mut chunk = [0u8; 8192];
            let n = sock.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let body = buf[head_end + 4..head_end + 4 + len].to_vec();
        buf.drain(..head_end + 4 + len);
        let refuse = {
            let mut r = refused.lock().unwrap();
            *r += 1;
            *r <= fail_first
        };
        if refuse {
            sock.write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\nbusy").await?;
            continue;
        }
        let path = request_line.split(' ').nth(1).unwrap_or_default().to_string();
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        got.lock().unwrap().push(Received { path, headers, body });
        sock.write_all(b"HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n").await?;
    }
}

fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.iter().map(|p| p.len()).collect::<Vec<_>>() == [8, 4, 4, 4, 12]
        && parts.iter().all(|p| p.chars().all(|c| c.is_ascii_hexdigit()))
}

fn is_rfc3339(s: &str) -> bool {
    s.len() >= 20 && s.as_bytes()[4] == b'-' && s.as_bytes()[10] == b'T' && (s.ends_with('Z') || s.contains('+'))
}

/// OpenLineage 2-0-2 `RunEvent`: the required fields, their types and enums, and `_producer` /
/// `_schemaURL` on every facet.
fn check_openlineage(e: &Value) -> Result<()> {
    let s =
        |p: &str| e.pointer(p).and_then(Value::as_str).with_context(|| format!("{p} missing or not a string in {e}"));
    ensure!(is_rfc3339(s("/eventTime")?), "eventTime is not ISO-8601: {e}");
    ensure!(s("/producer")?.starts_with("https://"), "producer is not a URI");
    ensure!(s("/schemaURL")? == "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent", "schemaURL");
    ensure!(is_uuid(s("/run/runId")?), "runId is not a UUID: {e}");
    ensure!(!s("/job/namespace")?.is_empty() && !s("/job/name")?.is_empty(), "job needs namespace and name");
    ensure!(["START", "RUNNING", "COMPLETE", "ABORT", "FAIL", "OTHER"].contains(&s("/eventType")?), "eventType");
    for side in ["inputs", "outputs"] {
        for d in e[side].as_array().with_context(|| format!("{side} is not an array"))? {
            ensure!(
                d["namespace"].is_string() && d["name"].is_string(),
                "{side} dataset needs namespace and name: {d}"
            );
        }
    }
    for facets in [&e["run"]["facets"], &e["job"]["facets"]] {
        for (name, f) in facets.as_object().context("facets must be an object")? {
            ensure!(
                f["_producer"].is_string() && f["_schemaURL"].is_string(),
                "facet {name} lacks _producer/_schemaURL"
            );
        }
    }
    if let Some(p) = e.pointer("/run/facets/parent") {
        ensure!(is_uuid(p["run"]["runId"].as_str().unwrap_or_default()), "parent runId");
        ensure!(p["job"]["namespace"].is_string() && p["job"]["name"].is_string(), "parent job");
    }
    Ok(())
}

/// A DataHub Rest.li `ingestProposal` body: the proposal envelope, URN forms, the aspect as a
/// JSON string, and the required fields of each aspect we send (metadata-models pegasus).
fn check_datahub(r: &Received) -> Result<Value> {
    ensure!(r.path == "/aspects?action=ingestProposal", "path {}", r.path);
    ensure!(r.headers.get("x-restli-protocol-version").map(String::as_str) == Some("2.0.0"), "restli header");
    ensure!(r.headers.get("authorization").map(String::as_str) == Some("Bearer dh-token"), "bearer token");
    let b = &r.body;
    ensure!(b["async"] == "false", "async must be \"false\": {b}");
    let p = &b["proposal"];
    let keys: BTreeSet<&str> = p.as_object().context("proposal")?.keys().map(String::as_str).collect();
    ensure!(
        keys == BTreeSet::from(["entityType", "entityUrn", "changeType", "aspectName", "aspect"]),
        "proposal keys {keys:?}"
    );
    let entity = p["entityType"].as_str().context("entityType")?;
    ensure!(
        ["dataFlow", "dataJob", "dataProcessInstance", "dataset", "mlModel"].contains(&entity),
        "unexpected entityType {entity}"
    );
    ensure!(
        p["entityUrn"].as_str().context("urn")?.starts_with(&format!("urn:li:{entity}:")),
        "urn does not match {entity}"
    );
    ensure!(p["changeType"] == "UPSERT", "changeType");
    ensure!(p["aspect"]["contentType"] == "application/json", "contentType");
    let value: Value = serde_json::from_str(p["aspect"]["value"].as_str().context("aspect.value must be a string")?)?;
    let has = |k: &str| !value[k].is_null();
    let arr = |k: &str| value[k].is_array();
    let urns = |k: &str, prefix: &str| {
        value[k].as_array().is_some_and(|a| a.iter().all(|u| u.as_str().is_some_and(|u| u.starts_with(prefix))))
    };
    let ok = match p["aspectName"].as_str().context("aspectName")? {
        "dataFlowInfo" => entity == "dataFlow" && value["name"].is_string(),
        "dataJobInfo" => entity == "dataJob" && value["name"].is_string() && value["type"]["string"].is_string(),
        "dataJobInputOutput" => {
            entity == "dataJob"
                && urns("inputDatasets", "urn:li:dataset:(")
                && urns("outputDatasets", "urn:li:dataset:(")
        }
        "dataProcessInstanceProperties" => {
            entity == "dataProcessInstance"
                && value["name"].is_string()
                && value["created"]["time"].is_i64()
                && value["created"]["actor"].is_string()
        }
        "dataProcessInstanceRelationships" => {
            entity == "dataProcessInstance" && value["parentTemplate"].is_string() && arr("upstreamInstances")
        }
        "dataProcessInstanceInput" => entity == "dataProcessInstance" && urns("inputs", "urn:li:"),
        "dataProcessInstanceOutput" => entity == "dataProcessInstance" && urns("outputs", "urn:li:"),
        "dataProcessInstanceRunEvent" => {
            let status = value["status"].as_str().unwrap_or_default();
            entity == "dataProcessInstance"
                && value["timestampMillis"].is_i64()
                && (status == "STARTED"
                    || (status == "COMPLETE"
                        && ["SUCCESS", "FAILURE", "SKIPPED", "UP_FOR_RETRY"]
                            .contains(&value["result"]["type"].as_str().unwrap_or_default())))
        }
        "mlModelProperties" => {
            entity == "mlModel" && urns("trainingJobs", "urn:li:dataProcessInstance:") && has("version")
        }
        "upstreamLineage" => {
            entity == "dataset"
                && value["upstreams"].as_array().is_some_and(|a| {
                    a.iter().all(|u| {
                        u["dataset"].as_str().is_some_and(|d| d.starts_with("urn:li:dataset:("))
                            && ["COPY", "TRANSFORMED", "VIEW"].contains(&u["type"].as_str().unwrap_or_default())
                            && u["auditStamp"]["time"].is_i64()
                            && u["auditStamp"]["actor"].is_string()
                    })
                })
        }
        other => bail!("unexpected aspect {other}"),
    };
    ensure!(ok, "aspect does not match its schema: {p}\nvalue {value}");
    Ok(value)
}

async fn client(addr: SocketAddr) -> Result<LineageServiceClient<Channel>> {
    Ok(LineageServiceClient::new(Channel::from_shared(format!("http://{addr}"))?.connect().await?))
}

fn graph_request(node: &str, depth: u32) -> LineageGraphRequest {
    LineageGraphRequest { node: node.into(), depth, max_nodes: 0 }
}

/// Polls `f` until it returns `Some`, at most [`SETTLE`].
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let started = Instant::now();
    loop {
        if let Some(v) = f().await? {
            return Ok(v);
        }
        if started.elapsed() > SETTLE {
            bail!("{what} did not happen within {SETTLE:?}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn has_edge(g: &LineageGraph, from: &str, kind: LineageEdgeKind, to: &str) -> bool {
    g.edges.iter().any(|e| e.from == from && e.to == to && e.kind == kind as i32)
}

/// A path in `g` from `from` to `to` along edges, as node keys.
fn path(g: &LineageGraph, from: &str, to: &str, through: &str) -> Option<Vec<String>> {
    // breadth-first with parents, once to `through` and once from it
    fn bfs(g: &LineageGraph, from: &str, to: &str) -> Option<Vec<String>> {
        let mut parent: BTreeMap<String, String> = BTreeMap::new();
        let mut frontier = vec![from.to_string()];
        let mut seen: HashSet<String> = [from.to_string()].into();
        while !frontier.is_empty() {
            let mut next = Vec::new();
            for n in &frontier {
                for e in g.edges.iter().filter(|e| &e.from == n) {
                    if seen.insert(e.to.clone()) {
                        parent.insert(e.to.clone(), n.clone());
                        next.push(e.to.clone());
                    }
                }
            }
            frontier = next;
        }
        let mut p = vec![to.to_string()];
        while p.last()? != from {
            p.push(parent.get(p.last()?)?.clone());
        }
        p.reverse();
        Some(p)
    }
    let mut a = bfs(g, from, through)?;
    let b = bfs(g, through, to)?;
    a.extend(b.into_iter().skip(1));
    Some(a)
}

fn declarations(project: &str, dataset_uri: &str, owner: &str) -> String {
    format!(
        r#"# lineage of {project}
owners: [{owner}]
sources:
  - name: customers
    platform: dbt
    location: analytics.marts.customers
    uri: {dataset_uri}
    description: dbt model exported nightly for training
pipelines:
  - name: churn-training
    workflow: lineage_pipelines.training_pipeline
    domains: [{DOMAIN}]
    infrastructure: {{queue: default, runtime: python}}
  - name: churn-deploy
    workflow: lineage_pipelines.deploy_pipeline
models:
  - name: churn
    trained_by: churn-training
    artifact: model
    description: least-squares churn score
endpoints:
  - name: churn-api
    model: churn
    url: https://churn.example.com/predict
    deployed_by: churn-deploy
"#
    )
}

#[tokio::test]
async fn training_and_deploy_runs_form_one_chain_from_the_dbt_table_to_the_endpoint() -> Result<()> {
    let s = Stack::start(Store::S3).await?;
    let datahub = Receiver::start(2).await?;
    let openlineage = Receiver::start(2).await?;

    let mut config = aloft_lineage::Config { bus: s.bus.clone(), ..Default::default() };
    config.health.listen = "127.0.0.1:0".into();
    config.database_url = format!("sqlite://{}", s.tmp.path().join("lineage.db").display());
    config.storage = s.storage.clone();
    config.metadata.endpoint = format!("http://{}", s.metadata.endpoint());
    config.export.datahub.url = format!("http://{}", datahub.addr);
    config.export.datahub.token = Some("dh-token".into());
    config.export.openlineage.url = format!("http://{}/api/v1/lineage", openlineage.addr);
    config.export.openlineage.namespace = "aloft-e2e".into();
    config.export.initial_backoff = Duration::from_millis(200);
    config.export.max_backoff = Duration::from_secs(1);
    config.export.poll_interval = Duration::from_millis(100);
    let token = CancellationToken::new();
    let lineage = aloft_lineage::start(config, token.clone()).await.context("starting aloft-lineage")?;
    let mut api = client(lineage.health_addr).await?;
    let project = s.project.clone();

    // The dbt table as the training pipeline reads it: an export at a stable URI.
    let dataset_uri = format!("{}/exports/customers.csv", s.storage.root);
    let csv: String = "x,y\n".to_string() + &(0..40).map(|i| format!("{i},{}\n", 3 * i + 2)).collect::<String>();
    s.blob.put(&dataset_uri, csv.into_bytes()).await?;

    // Declarations first (version 1): the training run then becomes a model version as it ends.
    let applied = api
        .apply_declarations(ApplyDeclarationsRequest {
            project: project.clone(),
            yaml: declarations(&project, &dataset_uri, "ml-team@example.com"),
            file_name: "lineage.yaml".into(),
            dry_run: false,
        })
        .await?
        .into_inner();
    ensure!(applied.version == 1 && applied.changed, "first apply: {applied:?}");

    let train_name = "lintrain1";
    s.run_ok(train_name, "lineage_pipelines.py", "training_pipeline", &["--data", &dataset_uri]).await?;
    let trained = eventually("the model version of the training run", || {
        let mut api = api.clone();
        let project = project.clone();
        async move {
            match api
                .model_training_data(ModelTrainingDataRequest {
                    project,
                    model: "churn".into(),
                    version: String::new(),
                })
                .await
            {
                Ok(r) => Ok(Some(r.into_inner())),
                Err(st) if st.code() == tonic::Code::NotFound => Ok(None),
                Err(st) => Err(st.into()),
            }
        }
    })
    .await?;
    let mv = trained.model_version.clone().context("model version")?;
    ensure!(mv.attributes.get("version").map(String::as_str) == Some(train_name), "version is the run: {mv:?}");
    let model_uri = mv.attributes.get("artifact").cloned().context("artifact attribute")?;
    ensure!(model_uri.ends_with("/model.json") && model_uri.starts_with(&s.storage.root), "model file {model_uri}");
    let train_run = format!("run:{project}/{DOMAIN}/{train_name}");
    ensure!(trained.runs.iter().map(|r| r.key.as_str()).collect::<Vec<_>>() == [train_run.as_str()], "{trained:?}");
    let data: Vec<&str> = trained.datasets.iter().map(|d| d.label.as_str()).collect();
    ensure!(data.contains(&dataset_uri.as_str()), "training data must include the dataset file: {data:?}");
    ensure!(data.iter().any(|d| d.ends_with("/train.csv")), "training data must include the split: {data:?}");
    ensure!(!data.contains(&model_uri.as_str()), "the model file is not its own training data");
    ensure!(
        trained.sources.iter().map(|s| s.key.clone()).collect::<Vec<_>>() == [format!("source:{project}/customers")],
        "the dbt table is upstream of the model: {trained:?}"
    );

    let deploy_name = "lindeploy1";
    s.run_ok(deploy_name, "lineage_pipelines.py", "deploy_pipeline", &["--model", &model_uri]).await?;
    let deploy_run = format!("run:{project}/{DOMAIN}/{deploy_name}");
    let endpoint = format!("endpoint:{project}/churn-api");
    let source = format!("source:{project}/customers");

    // Re-apply with a change (version 2): links to the runs already captured are rebuilt.
    let applied = api
        .apply_declarations(ApplyDeclarationsRequest {
            project: project.clone(),
            yaml: declarations(&project, &dataset_uri, "platform@example.com"),
            file_name: "lineage.yaml".into(),
            dry_run: false,
        })
        .await?
        .into_inner();
    ensure!(applied.version == 2 && applied.changed, "second apply: {applied:?}");

    let chain = eventually("the chain from the dbt table to the endpoint", || {
        let mut api = api.clone();
        let (source, endpoint, deploy_run) = (source.clone(), endpoint.clone(), deploy_run.clone());
        async move {
            let g = api.downstream(graph_request(&source, 30)).await?.into_inner();
            Ok(has_edge(&g, &deploy_run, LineageEdgeKind::Deployed, &endpoint).then_some(g))
        }
    })
    .await?;
    let model_file = format!("dataset:{model_uri}");
    let mv_key = format!("model:{project}/churn@{train_name}");
    let model_key = format!("model:{project}/churn");
    for (from, kind, to) in [
        (source.as_str(), LineageEdgeKind::Materializes, format!("dataset:{dataset_uri}")),
        (train_run.as_str(), LineageEdgeKind::Trained, mv_key.clone()),
        (model_file.as_str(), LineageEdgeKind::Artifact, mv_key.clone()),
        (mv_key.as_str(), LineageEdgeKind::VersionOf, model_key.clone()),
        (model_key.as_str(), LineageEdgeKind::Serves, endpoint.clone()),
        (deploy_run.as_str(), LineageEdgeKind::Deployed, endpoint.clone()),
    ] {
        ensure!(has_edge(&chain, from, kind, &to), "missing {from} -{kind:?}-> {to}\n{chain:#?}");
    }
    // dbt table -> dataset file -> split attempt -> ... -> model file -> deploy attempt -> deploy run -> endpoint
    let p =
        path(&chain, &source, &endpoint, &deploy_run).context("no path from the dbt table through the deploy run")?;
    ensure!(p.iter().any(|k| k.starts_with(&format!("attempt:{project}/{DOMAIN}/{train_name}/"))), "{p:?}");
    ensure!(p.contains(&model_file), "the path goes through the model file: {p:?}");
    ensure!(p.iter().any(|k| k.starts_with(&format!("attempt:{project}/{DOMAIN}/{deploy_name}/"))), "{p:?}");
    ensure!(chain.nodes.iter().any(|n| n.key == train_run), "the training run is downstream of the dbt table");
    let up = api.upstream(graph_request(&endpoint, 30)).await?.into_inner();
    for k in [&source, &train_run, &deploy_run, &format!("dataset:{dataset_uri}")] {
        ensure!(up.nodes.iter().any(|n| &n.key == k), "{k} must be upstream of the endpoint");
    }
    ensure!(up.nodes[0].key == endpoint && !up.truncated, "the start node comes first");

    let users = api.runs_using_dataset(RunsUsingDatasetRequest { uri: model_uri.clone() }).await?.into_inner();
    // the deploy run packaged it; the training run's evaluate step read it too. Newest first.
    let users: Vec<&str> = users.runs.iter().map(|r| r.key.as_str()).collect();
    ensure!(users == [deploy_run.as_str(), train_run.as_str()], "{users:?}");
    let run = api
        .run_lineage(RunLineageRequest {
            execution: Some(WorkflowExecutionIdentifier {
                project: project.clone(),
                domain: DOMAIN.into(),
                name: train_name.into(),
                org: String::new(),
            }),
        })
        .await?
        .into_inner();
    let kinds: BTreeSet<&str> = run.nodes.iter().map(|n| n.key.split(':').next().unwrap_or_default()).collect();
    ensure!(
        kinds.is_superset(&BTreeSet::from([
            "run",
            "attempt",
            "dataset",
            "task",
            "workflow",
            "launch_plan",
            "model",
            "pipeline"
        ])),
        "run lineage kinds {kinds:?}"
    );
    let attempts = run.nodes.iter().filter(|n| n.key.starts_with("attempt:")).count();
    ensure!(attempts == 3, "three task attempts in the training run, got {attempts}");
    let run_node = &run.nodes[0];
    ensure!(run_node.attributes.get("phase").map(String::as_str) == Some("SUCCEEDED"), "{run_node:?}");
    ensure!(
        run_node.attributes.get("workflow").map(String::as_str) == Some("lineage_pipelines.training_pipeline"),
        "{run_node:?}"
    );

    // Bad files: precise errors, and nothing changes.
    let good = declarations(&project, &dataset_uri, "platform@example.com");
    let bad: Vec<(String, &str)> = vec![
        (String::new(), "lineage.yaml: .: is empty; declare at least one of sources, pipelines, models, endpoints"),
        (
            good.replace("trained_by: churn-training", "trained_by: x"),
            "lineage.yaml: models[0].trained_by: unknown pipeline \"x\"",
        ),
        (
            good.replace("    model: churn\n", "    model: nope\n"),
            "lineage.yaml: endpoints[0].model: unknown model \"nope\"",
        ),
        (
            good.replace("deployed_by: churn-deploy", "deployed_by: ghost"),
            "lineage.yaml: endpoints[0].deployed_by: unknown pipeline \"ghost\"",
        ),
        (
            good.replace("name: churn-deploy", "name: churn-training"),
            "lineage.yaml: pipelines[1].name: duplicate name \"churn-training\"",
        ),
        (
            good.replace("location: analytics.marts.customers", "location: \"a(b)\""),
            "lineage.yaml: sources[0].location: \"a(b)\" must be non-empty without ',', '(' or ')'",
        ),
        (
            good.replace(&format!("uri: {dataset_uri}"), "uri: exports/customers.csv"),
            "lineage.yaml: sources[0].uri: \"exports/customers.csv\" is neither an absolute path nor a <scheme>://... URI",
        ),
        (
            good.replace("platform: dbt", "platform: dbt\n    env: production"),
            "lineage.yaml: sources[0].env: \"production\" is not one of DEV, TEST, QA, UAT, EI, PRE, STG, NON_PROD, PROD, CORP",
        ),
        (
            good.replace("url: https://churn.example.com/predict", "url: churn.example.com"),
            "lineage.yaml: endpoints[0].url: \"churn.example.com\" is not an http(s):// or grpc:// URL",
        ),
        (good.replace("    artifact: model\n", ""), "lineage.yaml: models[0]: missing field `artifact`"),
        (good.replace("sources:\n", "sorces:\n"), "lineage.yaml: .: unknown field `sorces`"),
        (
            good.replace("domains: [development]", "domains: development"),
            "lineage.yaml: pipelines[0].domains: invalid type: string \"development\", expected a sequence",
        ),
    ];
    let before = api.downstream(graph_request(&source, 30)).await?.into_inner();
    for (text, expected) in &bad {
        let err = api
            .apply_declarations(ApplyDeclarationsRequest {
                project: project.clone(),
                yaml: text.clone(),
                file_name: String::new(),
                dry_run: false,
            })
            .await
            .expect_err("bad declarations must be refused");
        ensure!(err.code() == tonic::Code::InvalidArgument, "{expected}: code {:?}", err.code());
        ensure!(err.message().starts_with(expected), "expected {expected:?}\n     got {:?}", err.message());
    }
    let current =
        api.get_declarations(GetDeclarationsRequest { project: project.clone(), version: 0 }).await?.into_inner();
    ensure!(
        current.version == 2 && current.yaml == good && current.versions.len() == 2,
        "declarations changed: {current:?}"
    );
    let after = api.downstream(graph_request(&source, 30)).await?.into_inner();
    ensure!(before == after, "a refused file changed the graph");

    // Catalogs: every payload matches its schema, and arrives once.
    let ol = eventually("the OpenLineage COMPLETE of the deploy run", || {
        let r = openlineage.clone();
        async move {
            let got = r.received();
            let done = got.iter().any(|x| {
                x.body["eventType"] == "COMPLETE"
                    && x.body["job"]["name"].as_str().is_some_and(|n| n.ends_with(".lineage_pipelines.deploy_pipeline"))
            });
            Ok(done.then_some(got))
        }
    })
    .await?;
    let mut seen = HashSet::new();
    for r in &ol {
        ensure!(r.path == "/api/v1/lineage", "openlineage path {}", r.path);
        check_openlineage(&r.body)?;
        let id = (r.body["run"]["runId"].to_string(), r.body["eventType"].to_string());
        ensure!(seen.insert(id.clone()), "OpenLineage event sent twice: {id:?}");
    }
    let split_complete = ol
        .iter()
        .find(|r| {
            r.body["eventType"] == "COMPLETE"
                && r.body["job"]["name"].as_str().is_some_and(|n| n.ends_with(".lineage_pipelines.split"))
        })
        .context("COMPLETE of the split task")?;
    let (bucket_ns, key) = dataset_uri
        .trim_start_matches("s3://")
        .split_once('/')
        .map(|(b, k)| (format!("s3://{b}"), k.to_string()))
        .context("s3 uri")?;
    ensure!(
        split_complete.body["inputs"] == serde_json::json!([{"namespace": bucket_ns, "name": key}]),
        "{}",
        split_complete.body
    );
    ensure!(split_complete.body["outputs"].as_array().is_some_and(|o| o.len() == 2), "split writes two files");
    ensure!(split_complete.body["job"]["namespace"] == "aloft-e2e", "namespace from config");
    ensure!(
        split_complete.body["run"]["facets"]["parent"]["job"]["name"]
            == format!("{project}.{DOMAIN}.lineage_pipelines.training_pipeline"),
        "parent"
    );
    ensure!(*openlineage.refused.lock().unwrap() >= 2, "the first requests were refused and retried");

    let dh = eventually("the DataHub model and lineage aspects", || {
        let r = datahub.clone();
        async move {
            let got = r.received();
            let model = got.iter().any(|x| x.body["proposal"]["aspectName"] == "mlModelProperties");
            let upstream = got.iter().any(|x| x.body["proposal"]["aspectName"] == "upstreamLineage");
            let deploy_done =
                got.iter().filter(|x| x.body["proposal"]["aspectName"] == "dataJobInputOutput").count() >= 4;
            Ok((model && upstream && deploy_done).then_some(got))
        }
    })
    .await?;
    let mut bodies = HashSet::new();
    let dataset_urn =
        format!("urn:li:dataset:(urn:li:dataPlatform:s3,{},PROD)", dataset_uri.trim_start_matches("s3://"));
    let model_urn = format!("urn:li:dataset:(urn:li:dataPlatform:s3,{},PROD)", model_uri.trim_start_matches("s3://"));
    let mut checked = BTreeSet::new();
    for r in &dh {
        let value = check_datahub(r)?;
        ensure!(bodies.insert(r.body.to_string()), "DataHub proposal sent twice: {}", r.body);
        let p = &r.body["proposal"];
        match (p["aspectName"].as_str().unwrap_or_default(), p["entityUrn"].as_str().unwrap_or_default()) {
            ("upstreamLineage", urn) => {
                ensure!(urn == dataset_urn, "the dataset file is a copy of the dbt table: {urn}");
                ensure!(
                    value["upstreams"][0]["dataset"]
                        == "urn:li:dataset:(urn:li:dataPlatform:dbt,analytics.marts.customers,PROD)",
                    "{value}"
                );
                checked.insert("upstreamLineage");
            }
            ("dataJobInputOutput", urn) if urn.ends_with(",lineage_pipelines.train)") => {
                ensure!(
                    value["outputDatasets"] == serde_json::json!([model_urn]),
                    "train writes the model file: {value}"
                );
                checked.insert("train io");
            }
            ("dataJobInputOutput", urn) if urn.ends_with(",lineage_pipelines.package)") => {
                ensure!(
                    value["inputDatasets"] == serde_json::json!([model_urn]),
                    "package reads the model file: {value}"
                );
                checked.insert("package io");
            }
            ("mlModelProperties", urn) => {
                ensure!(urn == format!("urn:li:mlModel:(urn:li:dataPlatform:aloft,{project}.churn,PROD)"), "{urn}");
                ensure!(value["version"]["versionTag"] == train_name, "{value}");
                let dpi_of_run = dh.iter().find(|x| {
                    x.body["proposal"]["aspectName"] == "dataProcessInstanceProperties"
                        && x.body["proposal"]["aspect"]["value"]
                            .as_str()
                            .is_some_and(|v| v.contains(&format!("\"execution\":\"{train_run}\"")))
                });
                let dpi =
                    dpi_of_run.context("the training run's dataProcessInstance")?.body["proposal"]["entityUrn"].clone();
                ensure!(
                    value["trainingJobs"] == serde_json::json!([dpi]),
                    "trainingJobs names the training run: {value}"
                );
                checked.insert("model");
            }
            _ => {}
        }
    }
    ensure!(checked.len() == 4, "checked {checked:?}");
    ensure!(*datahub.refused.lock().unwrap() >= 2, "the first requests were refused and retried");
    let dead = lineage.app.store.outbox_counts(aloft_lineage::domain::graph::Target::DataHub).await?.dead;
    ensure!(dead == 0, "no payload given up");

    token.cancel();
    tokio::time::timeout(Duration::from_secs(20), lineage.task).await.context("lineage did not stop")???;
    s.stop().await
}
