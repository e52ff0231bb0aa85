//! Registry list calls at 50,000 registered entities, through the real service and gRPC, on SQLite
//! (a temporary file) and on Postgres (a fresh database next to the one `scripts/dev-deps.sh`
//! runs).
//!
//! Flyte's admin is known for 0.7-1 s list calls on large registries; ours must stay in
//! milliseconds. This is a benchmark, not a timed test: it prints median and p95 latencies and
//! never fails on a number.
//!
//! The calls go through a second listener serving the started service's own `App` with
//! TCP_NODELAY (see `serve_nodelay` for why); a few are repeated through `start`'s listener.
//!
//! Run: `scripts/dev-deps.sh && cargo bench -p aloft-metadata --bench registry_lists`
//!
//! Knobs (environment):
//! * `ALOFT_BENCH_BACKENDS` — `sqlite,postgres` (default both)
//! * `ALOFT_BENCH_SCALE`    — multiplies the entity counts (default 1.0 = 50,000 entities)
//! * `ALOFT_BENCH_ITERS`    — measured calls per query (default 200; 20 warm-up calls first)
//! * `ALOFT_BENCH_CONCURRENCY` — registrations in flight while populating (default 16)
//! * `ALOFT_BENCH_KEEP=1`   — keep the SQLite file / Postgres database and print where they are
//!   (for `EXPLAIN`); otherwise both are deleted at the end
//! * `ALOFT_BENCH_EXTRA_SQL` — `;`-separated statements run on the database after populating and
//!   before measuring, to try an index through the real calls, e.g.
//!   `CREATE INDEX entities_by_version ON entities (resource_type, project, domain, version, created_at)`
//!
//! Data, shaped like a project registered with `pyflyte register` 10 times (one version per run):
//! per run, 3,000 task names, 1,000 workflows (each calling two of that run's tasks, so they
//! compile) and 1,000 launch plans (one per workflow) — 30,000 task versions, 10,000 workflow
//! versions and 10,000 launch plan versions in one project/domain.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aloft_proto::flyteidl::admin::{self, LaunchPlanSpec, NamedEntityIdentifier, Sort, TaskSpec, WorkflowSpec, sort};
use aloft_proto::flyteidl::core::{
    self, Binding, BindingData, Identifier, LiteralType, Node, NodeMetadata, OutputReference, ResourceType, SimpleType,
    TaskNode, TaskTemplate, TypedInterface, Variable, VariableMap, WorkflowTemplate, binding_data, literal_type, node,
    task_node,
};
use aloft_proto::flyteidl::service::admin_service_client::AdminServiceClient;
use anyhow::{Context, bail, ensure};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

const PROJECT: &str = "flytesnacks";
const DOMAIN: &str = "development";
const ROUNDS: usize = 10;
const TASK_NAMES: usize = 3_000;
const WORKFLOW_NAMES: usize = 1_000;
const WARMUP: usize = 20;
/// Calls also measured through the listener `aloft_metadata::start` binds.
const SHIPPED: [&str; 3] = ["a", "c", "f"];

// ------------------------------------------------------------------ knobs

struct Knobs {
    backends: Vec<Backend>,
    task_names: usize,
    workflow_names: usize,
    iters: usize,
    concurrency: usize,
    keep: bool,
    extra_sql: Vec<String>,
}

fn knobs() -> anyhow::Result<Knobs> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    let backends = match var("ALOFT_BENCH_BACKENDS") {
        None => vec![Backend::Sqlite, Backend::Postgres],
        Some(v) => v
            .split(',')
            .map(|b| match b.trim() {
                "sqlite" => Ok(Backend::Sqlite),
                "postgres" => Ok(Backend::Postgres),
                other => bail!("ALOFT_BENCH_BACKENDS: unknown backend `{other}` (sqlite, postgres)"),
            })
            .collect::<anyhow::Result<_>>()?,
    };
    let scale: f64 =
        var("ALOFT_BENCH_SCALE").map(|v| v.parse()).transpose().context("ALOFT_BENCH_SCALE")?.unwrap_or(1.0);
    let iters = var("ALOFT_BENCH_ITERS").map(|v| v.parse()).transpose().context("ALOFT_BENCH_ITERS")?.unwrap_or(200);
    let concurrency =
        var("ALOFT_BENCH_CONCURRENCY").map(|v| v.parse()).transpose().context("ALOFT_BENCH_CONCURRENCY")?.unwrap_or(16);
    ensure!(iters > 0 && concurrency > 0, "ALOFT_BENCH_ITERS and ALOFT_BENCH_CONCURRENCY must be positive");
    // at least 110 task names so that the 100-task re-registration and page 2 exist
    let task_names = ((TASK_NAMES as f64 * scale).round() as usize).max(110);
    let workflow_names = ((WORKFLOW_NAMES as f64 * scale).round() as usize).clamp(2, task_names / 2);
    let extra_sql = var("ALOFT_BENCH_EXTRA_SQL")
        .map(|v| v.split(';').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect())
        .unwrap_or_default();
    let keep = var("ALOFT_BENCH_KEEP").is_some_and(|v| v == "1");
    Ok(Knobs { backends, task_names, workflow_names, iters, concurrency, keep, extra_sql })
}

// ------------------------------------------------------------------ the service

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    fn label(self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "Postgres",
        }
    }
}

struct Service {
    /// Through the listener `aloft_metadata::start` bound (as shipped).
    shipped: AdminServiceClient<Channel>,
    /// Through a second listener serving the same `App` with TCP_NODELAY on accepted sockets.
    client: AdminServiceClient<Channel>,
    running: aloft_metadata::Running,
    shutdown: CancellationToken,
    database_url: String,
    db_dir: tempfile::TempDir,
    _store_dir: tempfile::TempDir,
}

/// Starts the service on port 0 the way the integration tests do (tests/common/mod.rs).
async fn start(backend: Backend) -> anyhow::Result<Service> {
    let db_dir = tempfile::Builder::new().prefix("aloft-bench-").tempdir()?;
    let store_dir = tempfile::tempdir()?;
    let mut config = aloft_metadata::Config::default();
    config.grpc.listen = "127.0.0.1:0".into();
    config.http.listen = "127.0.0.1:0".into();
    config.database_url = match backend {
        Backend::Sqlite => format!("sqlite://{}/metadata.db", db_dir.path().display()),
        Backend::Postgres => aloft_testkit::fresh_postgres_url("bench").await,
    };
    config.storage = aloft_blob::BlobConfig { root: store_dir.path().display().to_string(), ..Default::default() };
    let database_url = config.database_url.clone();
    let shutdown = CancellationToken::new();
    let running = aloft_metadata::start(config, shutdown.clone()).await.context("metadata starts")?;
    let shipped = connect(running.grpc_addr).await?;
    let client = connect(serve_nodelay(running.app.clone(), shutdown.clone()).await?).await?;
    Ok(Service { shipped, client, running, shutdown, database_url, db_dir, _store_dir: store_dir })
}

async fn connect(addr: std::net::SocketAddr) -> anyhow::Result<AdminServiceClient<Channel>> {
    let channel = Channel::from_shared(format!("http://{addr}"))?.tcp_nodelay(true).connect().await?;
    Ok(AdminServiceClient::new(channel).max_decoding_message_size(64 * 1024 * 1024))
}

/// Serves the service's own `App` and admin handlers on another port, with TCP_NODELAY set on
/// accepted sockets. `aloft_runtime::grpc::serve` hands tonic a plain `TcpListenerStream`, and
/// tonic ignores its `tcp_nodelay` setting for custom incoming streams, so on the shipped
/// listener Nagle's algorithm holds the tail of each response until the client ACKs; a tonic
/// client delays that ACK (40 ms on Linux), so every unary call it makes costs >= 40 ms whatever
/// the database does (a grpcio client, as flytekit uses, measured unaffected: 0.4 ms per
/// GetDomains against `aloft-metadata`). Measuring here shows what the handlers and queries cost; the shipped listener
/// is measured too, for contrast.
async fn serve_nodelay(
    app: aloft_metadata::app::App,
    shutdown: CancellationToken,
) -> anyhow::Result<std::net::SocketAddr> {
    use aloft_proto::flyteidl::service::admin_service_server::AdminServiceServer;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let admin = AdminServiceServer::new(aloft_metadata::grpc::Admin(app))
        .max_decoding_message_size(64 * 1024 * 1024)
        .max_encoding_message_size(20 * 1024 * 1024);
    tokio::spawn(async move {
        let served = tonic::transport::Server::builder()
            .accept_http1(false)
            .add_service(admin)
            .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
            .await;
        if let Err(e) = served {
            eprintln!("nodelay listener failed: {e}");
        }
    });
    Ok(addr)
}

// ------------------------------------------------------------------ specs (as tests/common/mod.rs)

fn id(kind: ResourceType, name: &str, version: &str) -> Identifier {
    Identifier {
        resource_type: kind as i32,
        project: PROJECT.into(),
        domain: DOMAIN.into(),
        name: name.into(),
        version: version.into(),
        org: String::new(),
    }
}

fn simple(t: SimpleType) -> LiteralType {
    LiteralType { r#type: Some(literal_type::Type::Simple(t as i32)), ..Default::default() }
}

fn vars(v: &[(&str, SimpleType)]) -> VariableMap {
    VariableMap {
        variables: v
            .iter()
            .map(|(n, t)| (n.to_string(), Variable { r#type: Some(simple(*t)), ..Default::default() }))
            .collect(),
    }
}

fn interface(inputs: &[(&str, SimpleType)], outputs: &[(&str, SimpleType)]) -> TypedInterface {
    TypedInterface { inputs: Some(vars(inputs)), outputs: Some(vars(outputs)) }
}

/// A python task with integer input `x` and integer output `o0`, like flytekit registers.
fn task_spec(name: &str, version: &str) -> TaskSpec {
    TaskSpec {
        template: Some(TaskTemplate {
            id: Some(id(ResourceType::Task, name, version)),
            r#type: "python-task".into(),
            interface: Some(interface(&[("x", SimpleType::Integer)], &[("o0", SimpleType::Integer)])),
            metadata: Some(core::TaskMetadata {
                retries: Some(core::RetryStrategy { retries: 1 }),
                ..Default::default()
            }),
            target: Some(core::task_template::Target::Container(core::Container {
                image: "ghcr.io/example/img:1".into(),
                args: vec![
                    "pyflyte-execute".into(),
                    "--inputs".into(),
                    "{{.input}}".into(),
                    "--output-prefix".into(),
                    "{{.outputPrefix}}".into(),
                    "--resolver".into(),
                    "flytekit.core.python_auto_container.default_task_resolver".into(),
                    "--".into(),
                    "task-module".into(),
                    name.rsplit_once('.').map_or(name, |(m, _)| m).into(),
                    "task-name".into(),
                    name.rsplit('.').next().unwrap_or(name).into(),
                ],
                ..Default::default()
            })),
            ..Default::default()
        }),
        description: None,
    }
}

fn promise(node_id: &str, var: &str) -> BindingData {
    BindingData {
        value: Some(binding_data::Value::Promise(OutputReference {
            node_id: node_id.into(),
            var: var.into(),
            attr_path: vec![],
        })),
        union: None,
    }
}

fn bind(var: &str, data: BindingData) -> Binding {
    Binding { var: var.into(), binding: Some(data) }
}

fn task_node(node_id: &str, task: &Identifier, inputs: Vec<Binding>) -> Node {
    Node {
        id: node_id.into(),
        metadata: Some(NodeMetadata { name: task.name.clone(), ..Default::default() }),
        inputs,
        target: Some(node::Target::TaskNode(TaskNode {
            reference: Some(task_node::Reference::ReferenceId(task.clone())),
            overrides: None,
        })),
        ..Default::default()
    }
}

/// `wf(x: int) -> int`: n0 = t1(x), n1 = t2(n0.o0), output o0 = n1.o0.
fn workflow_spec(name: &str, version: &str, t1: &Identifier, t2: &Identifier) -> WorkflowSpec {
    WorkflowSpec {
        template: Some(WorkflowTemplate {
            id: Some(id(ResourceType::Workflow, name, version)),
            interface: Some(interface(&[("x", SimpleType::Integer)], &[("o0", SimpleType::Integer)])),
            nodes: vec![
                task_node("n0", t1, vec![bind("x", promise("", "x"))]),
                task_node("n1", t2, vec![bind("x", promise("n0", "o0"))]),
            ],
            outputs: vec![bind("o0", promise("n1", "o0"))],
            ..Default::default()
        }),
        sub_workflows: vec![],
        description: None,
    }
}

fn int_literal(v: i64) -> core::Literal {
    core::Literal {
        value: Some(core::literal::Value::Scalar(Box::new(core::Scalar {
            value: Some(core::scalar::Value::Primitive(core::Primitive {
                value: Some(core::primitive::Value::Integer(v)),
            })),
        }))),
        ..Default::default()
    }
}

fn launch_plan_spec(wf: &Identifier, default_x: i64) -> LaunchPlanSpec {
    let mut params = core::ParameterMap::default();
    params.parameters.insert(
        "x".into(),
        core::Parameter {
            var: Some(Variable { r#type: Some(simple(SimpleType::Integer)), ..Default::default() }),
            behavior: Some(core::parameter::Behavior::Default(int_literal(default_x))),
        },
    );
    LaunchPlanSpec { workflow_id: Some(wf.clone()), default_inputs: Some(params), ..Default::default() }
}

// ------------------------------------------------------------------ the data set

/// Version of registration run `r`, shaped like pyflyte's (a digest), so versions do not sort by age.
fn version(r: usize) -> String {
    let h = (r as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    format!("{h:016x}")
}

fn task_name(i: usize) -> String {
    format!("workflows.module_{:03}.task_{i:05}", i / 25)
}

fn workflow_name(i: usize) -> String {
    format!("workflows.module_{:03}.wf_{i:05}", i / 10)
}

/// The two tasks workflow `i` calls.
fn workflow_tasks(i: usize, task_names: usize) -> (usize, usize) {
    ((2 * i) % task_names, (2 * i + 1) % task_names)
}

/// Runs `f(0..n)` with at most `concurrency` calls in flight.
async fn bounded<F, Fut>(n: usize, concurrency: usize, f: F) -> anyhow::Result<()>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let f = Arc::new(f);
    let next = Arc::new(AtomicUsize::new(0));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..concurrency.min(n.max(1)) {
        let (f, next) = (f.clone(), next.clone());
        set.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return anyhow::Ok(());
                }
                f(i).await?;
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    Ok(())
}

#[derive(Default)]
struct Populate {
    tasks: (usize, Duration),
    workflows: (usize, Duration),
    launch_plans: (usize, Duration),
}

impl Populate {
    fn total(&self) -> (usize, Duration) {
        (self.tasks.0 + self.workflows.0 + self.launch_plans.0, self.tasks.1 + self.workflows.1 + self.launch_plans.1)
    }
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

/// Registers everything through gRPC, run by run: that run's tasks, then its workflows, then its
/// launch plans (each phase waits for the previous one, as the references require).
async fn populate(client: &AdminServiceClient<Channel>, k: &Knobs) -> anyhow::Result<Populate> {
    let mut p = Populate::default();
    let (tn, wn) = (k.task_names, k.workflow_names);
    for r in 0..ROUNDS {
        let v = Arc::new(version(r));

        let t0 = Instant::now();
        let (c, vv) = (client.clone(), v.clone());
        bounded(tn, k.concurrency, move |i| {
            let (mut c, v) = (c.clone(), vv.clone());
            async move {
                let name = task_name(i);
                let tid = id(ResourceType::Task, &name, &v);
                c.create_task(admin::TaskCreateRequest { id: Some(tid), spec: Some(task_spec(&name, &v)) })
                    .await
                    .with_context(|| format!("CreateTask {name}@{v}"))?;
                Ok(())
            }
        })
        .await?;
        p.tasks.0 += tn;
        p.tasks.1 += t0.elapsed();

        let t0 = Instant::now();
        let (c, vv) = (client.clone(), v.clone());
        bounded(wn, k.concurrency, move |i| {
            let (mut c, v) = (c.clone(), vv.clone());
            async move {
                let name = workflow_name(i);
                let (a, b) = workflow_tasks(i, tn);
                let (t1, t2) = (id(ResourceType::Task, &task_name(a), &v), id(ResourceType::Task, &task_name(b), &v));
                let wid = id(ResourceType::Workflow, &name, &v);
                c.create_workflow(admin::WorkflowCreateRequest {
                    id: Some(wid),
                    spec: Some(workflow_spec(&name, &v, &t1, &t2)),
                })
                .await
                .with_context(|| format!("CreateWorkflow {name}@{v}"))?;
                Ok(())
            }
        })
        .await?;
        p.workflows.0 += wn;
        p.workflows.1 += t0.elapsed();

        let t0 = Instant::now();
        let (c, vv) = (client.clone(), v.clone());
        bounded(wn, k.concurrency, move |i| {
            let (mut c, v) = (c.clone(), vv.clone());
            async move {
                let name = workflow_name(i);
                let wf = id(ResourceType::Workflow, &name, &v);
                let lp = id(ResourceType::LaunchPlan, &name, &v);
                c.create_launch_plan(admin::LaunchPlanCreateRequest {
                    id: Some(lp),
                    spec: Some(launch_plan_spec(&wf, i as i64)),
                })
                .await
                .with_context(|| format!("CreateLaunchPlan {name}@{v}"))?;
                Ok(())
            }
        })
        .await?;
        p.launch_plans.0 += wn;
        p.launch_plans.1 += t0.elapsed();

        let (n, d) = p.total();
        eprintln!("  run {}/{ROUNDS}: {n} entities in {:.1} s ({:.0}/s)", r + 1, d.as_secs_f64(), rate(n, d));
    }
    Ok(p)
}

// ------------------------------------------------------------------ measuring

#[derive(Clone, Copy)]
struct Stats {
    median: Duration,
    p95: Duration,
    min: Duration,
    max: Duration,
    n: usize,
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort();
    let n = samples.len();
    let pick = |q: f64| samples[((q * n as f64).ceil() as usize).clamp(1, n) - 1];
    Stats { median: pick(0.5), p95: pick(0.95), min: samples[0], max: samples[n - 1], n }
}

/// Calls `call(i)` WARMUP times, then `iters` times timing each call.
async fn measure<F, Fut>(iters: usize, mut call: F) -> anyhow::Result<Stats>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    for i in 0..WARMUP {
        call(i).await?;
    }
    let mut samples = Vec::with_capacity(iters);
    for i in 0..iters {
        let t = Instant::now();
        call(WARMUP + i).await?;
        samples.push(t.elapsed());
    }
    Ok(stats(samples))
}

fn scope(name: &str) -> Option<NamedEntityIdentifier> {
    Some(NamedEntityIdentifier {
        project: PROJECT.into(),
        domain: DOMAIN.into(),
        name: name.into(),
        org: String::new(),
    })
}

fn newest_first() -> Option<Sort> {
    Some(Sort { key: "created_at".into(), direction: sort::Direction::Descending as i32 })
}

struct Row {
    key: &'static str,
    what: &'static str,
    stats: Stats,
}

/// Measures the calls whose key is in `only` (all when `None`).
async fn queries(
    client: &AdminServiceClient<Channel>,
    k: &Knobs,
    iters: usize,
    only: Option<&[&str]>,
) -> anyhow::Result<Vec<Row>> {
    let want = |key: &str| only.is_none_or(|o| o.contains(&key));
    let mut rows = Vec::new();
    let (tn, wn) = (k.task_names, k.workflow_names);
    let (oldest, newest) = (version(0), version(ROUNDS - 1));
    // spread the named lookups over many names so one hot row does not flatter the numbers
    let pick = |i: usize, n: usize| (i * 7919) % n;

    if want("a") {
        let c = client.clone();
        let stats = measure(iters, |i| {
            let mut c = c.clone();
            let (name, newest) = (task_name(pick(i, tn)), newest.clone());
            async move {
                let req = admin::ResourceListRequest {
                    id: scope(&name),
                    limit: 1,
                    sort_by: newest_first(),
                    ..Default::default()
                };
                let got = c.list_tasks(req).await?.into_inner().tasks;
                ensure!(got.len() == 1 && got[0].id.as_ref().unwrap().version == newest, "latest of {name}: {got:?}");
                Ok(())
            }
        })
        .await?;
        rows.push(Row { key: "a", what: "ListTasks name, limit 1, created_at DESC (fetch_task latest)", stats });
    }

    for (key, what, v) in [
        ("b1", "ListTasks project, eq(version,newest), limit 100 (list_tasks_by_version)", newest.clone()),
        ("b2", "ListTasks project, eq(version,oldest), limit 100 (list_tasks_by_version)", oldest.clone()),
    ] {
        if !want(key) {
            continue;
        }
        let c = client.clone();
        let stats = measure(iters, |_| {
            let (mut c, v) = (c.clone(), v.clone());
            async move {
                let req = admin::ResourceListRequest {
                    id: scope(""),
                    limit: 100,
                    filters: format!("eq(version,{v})"),
                    ..Default::default()
                };
                let got = c.list_tasks(req).await?.into_inner().tasks;
                ensure!(
                    got.len() == 100 && got.iter().all(|t| t.id.as_ref().unwrap().version == v),
                    "by version: {} tasks",
                    got.len()
                );
                Ok(())
            }
        })
        .await?;
        rows.push(Row { key, what, stats });
    }

    for (key, what, offset) in [
        ("c", "ListTasks project, first page of 100", 0usize),
        ("d", "ListTasks project, page at offset 10,000, limit 100", 10_000usize.min(tn * ROUNDS - 100)),
    ] {
        if !want(key) {
            continue;
        }
        let c = client.clone();
        let stats = measure(iters, |_| {
            let mut c = c.clone();
            async move {
                let token = if offset == 0 { String::new() } else { offset.to_string() };
                let req = admin::ResourceListRequest { id: scope(""), limit: 100, token, ..Default::default() };
                let got = c.list_tasks(req).await?.into_inner();
                ensure!(
                    got.tasks.len() == 100 && got.token == (offset + 100).to_string(),
                    "page at {offset}: {}",
                    got.tasks.len()
                );
                Ok(())
            }
        })
        .await?;
        rows.push(Row { key, what, stats });
    }

    if want("e") {
        let c = client.clone();
        let stats = measure(iters, |_| {
            let mut c = c.clone();
            async move {
                let req = admin::NamedEntityIdentifierListRequest {
                    project: PROJECT.into(),
                    domain: DOMAIN.into(),
                    limit: 100,
                    ..Default::default()
                };
                let got = c.list_task_ids(req).await?.into_inner();
                ensure!(got.entities.len() == 100, "ListTaskIds: {}", got.entities.len());
                Ok(())
            }
        })
        .await?;
        rows.push(Row { key: "e", what: "ListTaskIds project, first page of 100", stats });
    }

    if want("f") {
        let c = client.clone();
        let stats = measure(iters, |i| {
            let mut c = c.clone();
            let tid = id(ResourceType::Task, &task_name(pick(i, tn)), &version(i % ROUNDS));
            async move {
                let got = c.get_task(admin::ObjectGetRequest { id: Some(tid.clone()) }).await?.into_inner();
                ensure!(got.id == Some(tid), "GetTask");
                Ok(())
            }
        })
        .await?;
        rows.push(Row { key: "f", what: "GetTask", stats });
    }

    if want("g") {
        // activate the newest version of 50 launch plans (and, before it, an older one: the switch
        // must deactivate it), then read them back round-robin
        let active: Vec<usize> = (0..50.min(wn)).map(|i| pick(i, wn)).collect();
        for &w in &active {
            for v in [version(0), newest.clone()] {
                let lp = id(ResourceType::LaunchPlan, &workflow_name(w), &v);
                let mut c = client.clone();
                c.update_launch_plan(admin::LaunchPlanUpdateRequest {
                    id: Some(lp),
                    state: admin::LaunchPlanState::Active as i32,
                })
                .await
                .context("UpdateLaunchPlan")?;
            }
        }
        let c = client.clone();
        let stats = measure(iters, |i| {
            let mut c = c.clone();
            let (name, newest) = (workflow_name(active[i % active.len()]), newest.clone());
            async move {
                let got =
                    c.get_active_launch_plan(admin::ActiveLaunchPlanRequest { id: scope(&name) }).await?.into_inner();
                ensure!(got.id.as_ref().unwrap().version == newest, "active launch plan of {name}");
                Ok(())
            }
        })
        .await?;
        rows.push(Row { key: "g", what: "GetActiveLaunchPlan", stats });
    }

    if want("h") {
        // `pyflyte register` run again on an unchanged project: every CreateTask is ALREADY_EXISTS.
        // Sequential, as flytekit's registration loop; one sample = 100 calls.
        let c = client.clone();
        let stats = measure(iters.div_ceil(10).max(5), |i| {
            let c = c.clone();
            let v = version(i % ROUNDS);
            async move {
                for j in 0..100 {
                    let name = task_name((i * 100 + j) % tn);
                    let req = admin::TaskCreateRequest {
                        id: Some(id(ResourceType::Task, &name, &v)),
                        spec: Some(task_spec(&name, &v)),
                    };
                    match c.clone().create_task(req).await {
                        Err(s) if s.code() == tonic::Code::AlreadyExists => {}
                        other => bail!("re-registering {name}@{v}: expected ALREADY_EXISTS, got {other:?}"),
                    }
                }
                Ok(())
            }
        })
        .await?;
        rows.push(Row { key: "h", what: "CreateTask x100 sequential, all ALREADY_EXISTS (per 100)", stats });
    }

    Ok(rows)
}

// ------------------------------------------------------------------ one backend

struct Report {
    backend: Backend,
    db_version: String,
    populate: Populate,
    rows: Vec<Row>,
    shipped: Vec<Row>,
    /// 1-minute load average before and after measuring (the machine may be shared).
    load: (String, String),
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(String::from))
        .unwrap_or_else(|| "?".into())
}

async fn run_backend(backend: Backend, k: &Knobs) -> anyhow::Result<Report> {
    let svc = start(backend).await?;
    let pool = svc.running.app.store.pool().clone();
    let measured = populate_and_measure(&svc, backend, k).await;

    svc.shutdown.cancel();
    let Service { running, database_url, db_dir, .. } = svc;
    let stopped = running.task.await;
    pool.close().await;
    if k.keep {
        if backend == Backend::Sqlite {
            let _ = db_dir.keep(); // the SQLite file stays for EXPLAIN QUERY PLAN
        }
        eprintln!("{}: kept {}", backend.label(), redact(&database_url));
    } else if backend == Backend::Postgres {
        // also after a failure: a 50 MB database per failed run adds up
        drop_database(&database_url).await?;
    }
    let report = measured?;
    stopped??;
    Ok(report)
}

async fn populate_and_measure(svc: &Service, backend: Backend, k: &Knobs) -> anyhow::Result<Report> {
    let pool = svc.running.app.store.pool();
    let db_version: String = match backend {
        Backend::Sqlite => sqlx::query_scalar("SELECT 'SQLite ' || sqlite_version()").fetch_one(pool).await?,
        Backend::Postgres => sqlx::query_scalar("SELECT version()").fetch_one(pool).await?,
    };
    eprintln!("{}: {db_version}; database {}", backend.label(), redact(&svc.database_url));

    let populate = populate(&svc.client, k).await?;
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM entities").fetch_one(pool).await?;
    let (n, _) = populate.total();
    ensure!(count as usize == n, "{count} rows stored, {n} registered");
    for stmt in &k.extra_sql {
        eprintln!("{}: ALOFT_BENCH_EXTRA_SQL: {stmt}", backend.label());
        sqlx::query(stmt).execute(pool).await.with_context(|| format!("ALOFT_BENCH_EXTRA_SQL: {stmt}"))?;
    }
    if backend == Backend::Postgres {
        // what autovacuum's analyze would have done by now on a long-lived registry
        sqlx::query("ANALYZE entities").execute(pool).await?;
    }

    eprintln!("{}: measuring ({} calls per query after {WARMUP} warm-up calls)", backend.label(), k.iters);
    let load_before = loadavg();
    let rows = queries(&svc.client, k, k.iters, None).await?;
    let shipped_iters = k.iters.min(50);
    eprintln!("{}: measuring through start()'s own listener ({shipped_iters} calls per query)", backend.label());
    let shipped = queries(&svc.shipped, k, shipped_iters, Some(&SHIPPED)).await?;
    Ok(Report { backend, db_version, populate, rows, shipped, load: (load_before, loadavg()) })
}

async fn drop_database(url: &str) -> anyhow::Result<()> {
    use sqlx::Connection;
    let (_, name) = url.rsplit_once('/').context("database url has a path")?;
    let mut conn = sqlx::PgConnection::connect(&aloft_testkit::deps().database_url).await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).execute(&mut conn).await?;
    Ok(())
}

fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

// ------------------------------------------------------------------ output

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

fn table(reports: &[Report], rows: impl Fn(&Report) -> &Vec<Row>) {
    let mut header = String::from("| | call |");
    let mut rule = String::from("|---|---|");
    for r in reports {
        header.push_str(&format!(" {0} median | {0} p95 |", r.backend.label()));
        rule.push_str("---:|---:|");
    }
    println!("{header}");
    println!("{rule}");
    for (i, row) in rows(&reports[0]).iter().enumerate() {
        let mut line = format!("| {} | {} |", row.key, row.what);
        for r in reports {
            let s = rows(r)[i].stats;
            line.push_str(&format!(" {} | {} |", ms(s.median), ms(s.p95)));
        }
        println!("{line}");
    }
}

fn print(reports: &[Report], k: &Knobs) {
    let (n, _) = reports[0].populate.total();
    println!();
    println!(
        "Registry list calls at {n} entities ({} task names x {ROUNDS} versions, {} workflows and {} launch plans x {ROUNDS})",
        k.task_names, k.workflow_names, k.workflow_names
    );
    println!();
    if !k.extra_sql.is_empty() {
        println!("NOT THE SHIPPED SCHEMA: ALOFT_BENCH_EXTRA_SQL ran before measuring:");
        for stmt in &k.extra_sql {
            println!("    {stmt};");
        }
        println!();
    }
    println!("Populating through gRPC, {} in flight:", k.concurrency);
    println!();
    println!("| backend | tasks/s | workflows/s | launch plans/s | all: entities/s | all: time |");
    println!("|---|---:|---:|---:|---:|---:|");
    for r in reports {
        let p = &r.populate;
        let (n, d) = p.total();
        println!(
            "| {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1} s |",
            r.backend.label(),
            rate(p.tasks.0, p.tasks.1),
            rate(p.workflows.0, p.workflows.1),
            rate(p.launch_plans.0, p.launch_plans.1),
            rate(n, d),
            d.as_secs_f64()
        );
    }
    println!();
    println!(
        "Latency in ms through gRPC with TCP_NODELAY (median / p95 over {} calls after {WARMUP} warm-up calls; (h) is per 100 calls):",
        k.iters
    );
    println!();
    table(reports, |r| &r.rows);
    println!();
    println!(
        "The same calls through the listener aloft_metadata::start binds (no TCP_NODELAY; {} calls):",
        k.iters.min(50)
    );
    println!();
    table(reports, |r| &r.shipped);
    println!();
    for r in reports {
        println!(
            "{}: {}; 1-min load average {} before measuring, {} after",
            r.backend.label(),
            r.db_version,
            r.load.0,
            r.load.1
        );
        for row in &r.rows {
            let s = row.stats;
            println!("  {:>2}: n={} min {} ms, max {} ms", row.key, s.n, ms(s.min), ms(s.max));
        }
    }
}

fn main() -> anyhow::Result<()> {
    if !aloft_testkit::benchmark_requested("cargo bench -p aloft-metadata --bench registry_lists") {
        return Ok(());
    }
    let k = knobs()?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let mut reports = Vec::new();
        for &b in &k.backends {
            eprintln!("{}: populating", b.label());
            reports.push(run_backend(b, &k).await.with_context(|| b.label())?);
        }
        print(&reports, &k);
        Ok(())
    })
}
