//! Crash safety with the services as separate processes (the real binaries): 20 executions run
//! while the scheduler and the executor are killed with SIGKILL and restarted. Every execution must
//! still succeed with the right outputs, none may hang, and no task may run to completion twice.
//!
//! Tasks are shell commands (`sh -c`) so the test measures the platform, not Python start-up:
//! each sleeps, copies a prepared outputs.pb and appends its output prefix to a ledger file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use aloft_proto::flyteidl::admin::{self, ExecutionCreateRequest};
use aloft_proto::flyteidl::core::{
    self, Binding, BindingData, Identifier, Literal, LiteralMap, LiteralType, Node, NodeMetadata, OutputReference,
    ResourceType, SimpleType, TaskNode, TaskTemplate, TypedInterface, Variable, VariableMap, WorkflowTemplate,
    binding_data, literal_type, node, task_node, workflow_execution::Phase,
};
use aloft_proto::flyteidl::service::admin_service_client::AdminServiceClient;
use anyhow::{Context as _, Result, bail, ensure};
use prost::Message;
use tokio::process::{Child, Command};
use tonic::transport::Channel;

const PROJECT: &str = "faults";
const DOMAIN: &str = "development";
const EXECUTIONS: usize = 20;

fn bin_dir() -> PathBuf {
    // target/<profile>/deps/<this test> -> target/<profile>, where cargo puts the service binaries
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent().and_then(Path::parent).expect("target dir").to_path_buf()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Stack {
    dir: tempfile::TempDir,
    bus: String,
    grpc: u16,
}

impl Stack {
    fn new() -> Result<Stack> {
        let ns = aloft_testkit::unique_name("faults");
        let bus = format!(
            "[bus]\nurl = \"{}\"\nstream_prefix = \"{}\"\nsubject_prefix = \"{ns}\"\nack_wait = \"3s\"\n",
            aloft_testkit::deps().nats_url,
            ns.to_uppercase()
        );
        Ok(Stack { dir: tempfile::tempdir()?, bus, grpc: free_port() })
    }

    fn store(&self) -> String {
        self.dir.path().join("store").display().to_string()
    }

    fn write_config(&self, name: &str, body: &str) -> Result<PathBuf> {
        let path = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, format!("{body}\n{}\n[storage]\nroot = \"{}\"\n", self.bus, self.store()))?;
        Ok(path)
    }

    fn spawn(&self, binary: &str, config: &Path) -> Result<Child> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{binary}.log")))?;
        Command::new(bin_dir().join(binary))
            .arg("--config")
            .arg(config)
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {binary} (built by `cargo nextest run --workspace`?)"))
    }

    fn metadata(&self) -> Result<Child> {
        let db = self.dir.path().join("metadata.db");
        let cfg = self.write_config(
            "metadata",
            &format!(
                "database_url = \"sqlite://{}\"\n[grpc]\nlisten = \"127.0.0.1:{}\"\n[http]\nlisten = \"127.0.0.1:{}\"\n",
                db.display(),
                self.grpc,
                free_port()
            ),
        )?;
        self.spawn("aloft-metadata", &cfg)
    }

    fn scheduler(&self) -> Result<Child> {
        let cfg = self.write_config("scheduler", "[health]\nlisten = \"127.0.0.1:0\"\n")?;
        self.spawn("aloft-scheduler", &cfg)
    }

    fn executor(&self) -> Result<Child> {
        let cfg = self.write_config(
            "executor",
            &format!(
                "slots = 4\nscratch_dir = \"{}\"\n[health]\nlisten = \"127.0.0.1:0\"\n",
                self.dir.path().join("scratch").display()
            ),
        )?;
        self.spawn("aloft-executor", &cfg)
    }
}

fn int_type() -> LiteralType {
    LiteralType { r#type: Some(literal_type::Type::Simple(SimpleType::Integer as i32)), ..Default::default() }
}

fn vars(names: &[&str]) -> VariableMap {
    VariableMap {
        variables: names
            .iter()
            .map(|n| (n.to_string(), Variable { r#type: Some(int_type()), ..Default::default() }))
            .collect(),
    }
}

fn int(v: i64) -> Literal {
    Literal {
        value: Some(core::literal::Value::Scalar(Box::new(core::Scalar {
            value: Some(core::scalar::Value::Primitive(core::Primitive {
                value: Some(core::primitive::Value::Integer(v)),
            })),
        }))),
        ..Default::default()
    }
}

fn id(kind: ResourceType, name: &str) -> Identifier {
    Identifier {
        resource_type: kind as i32,
        project: PROJECT.into(),
        domain: DOMAIN.into(),
        name: name.into(),
        version: "v1".into(),
        org: String::new(),
    }
}

async fn register(client: &mut AdminServiceClient<Channel>, dir: &Path) -> Result<Identifier> {
    let outputs = dir.join("outputs.pb");
    std::fs::write(&outputs, LiteralMap { literals: [("o0".to_string(), int(42))].into() }.encode_to_vec())?;
    let ledger = dir.join("ledger.txt");
    let script =
        format!("sleep 1 && cp {} \"$1/outputs.pb\" && echo \"$1\" >> {}", outputs.display(), ledger.display());
    let task = TaskTemplate {
        id: Some(id(ResourceType::Task, "step")),
        r#type: "shell".into(),
        interface: Some(TypedInterface { inputs: Some(vars(&["x"])), outputs: Some(vars(&["o0"])) }),
        target: Some(core::task_template::Target::Container(core::Container {
            image: "host".into(),
            command: vec!["sh".into(), "-c".into(), script, "step".into()],
            args: vec!["{{.outputPrefix}}".into()],
            ..Default::default()
        })),
        ..Default::default()
    };
    client
        .create_task(admin::TaskCreateRequest {
            id: task.id.clone(),
            spec: Some(admin::TaskSpec { template: Some(task), description: None }),
        })
        .await?;
    let promise = |n: &str, v: &str| {
        Some(BindingData {
            value: Some(binding_data::Value::Promise(OutputReference {
                node_id: n.into(),
                var: v.into(),
                attr_path: vec![],
            })),
            union: None,
        })
    };
    let step = |nid: &str, from: (&str, &str)| Node {
        id: nid.into(),
        metadata: Some(NodeMetadata { name: "step".into(), ..Default::default() }),
        inputs: vec![Binding { var: "x".into(), binding: promise(from.0, from.1) }],
        target: Some(node::Target::TaskNode(TaskNode {
            reference: Some(task_node::Reference::ReferenceId(id(ResourceType::Task, "step"))),
            overrides: None,
        })),
        ..Default::default()
    };
    let wf = id(ResourceType::Workflow, "chain");
    client
        .create_workflow(admin::WorkflowCreateRequest {
            id: Some(wf.clone()),
            spec: Some(admin::WorkflowSpec {
                template: Some(WorkflowTemplate {
                    id: Some(wf.clone()),
                    interface: Some(TypedInterface { inputs: Some(vars(&["x"])), outputs: Some(vars(&["o0"])) }),
                    nodes: vec![step("n0", ("", "x")), step("n1", ("n0", "o0")), step("n2", ("n1", "o0"))],
                    outputs: vec![Binding { var: "o0".into(), binding: promise("n2", "o0") }],
                    ..Default::default()
                }),
                ..Default::default()
            }),
        })
        .await?;
    let lp = id(ResourceType::LaunchPlan, "chain");
    let mut params = core::ParameterMap::default();
    params.parameters.insert(
        "x".into(),
        core::Parameter {
            var: Some(Variable { r#type: Some(int_type()), ..Default::default() }),
            behavior: Some(core::parameter::Behavior::Default(int(1))),
        },
    );
    client
        .create_launch_plan(admin::LaunchPlanCreateRequest {
            id: Some(lp.clone()),
            spec: Some(admin::LaunchPlanSpec {
                workflow_id: Some(wf),
                default_inputs: Some(params),
                ..Default::default()
            }),
        })
        .await?;
    Ok(lp)
}

async fn connect(port: u16) -> Result<AdminServiceClient<Channel>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(ch) = Channel::from_shared(format!("http://127.0.0.1:{port}"))?.connect().await {
            return Ok(AdminServiceClient::new(ch));
        }
        ensure!(tokio::time::Instant::now() < deadline, "metadata did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn phases(client: &mut AdminServiceClient<Channel>, names: &[String]) -> Result<HashMap<String, i32>> {
    let mut out = HashMap::new();
    for n in names {
        let ex = client
            .get_execution(admin::WorkflowExecutionGetRequest {
                id: Some(core::WorkflowExecutionIdentifier {
                    project: PROJECT.into(),
                    domain: DOMAIN.into(),
                    name: n.clone(),
                    org: String::new(),
                }),
            })
            .await?
            .into_inner();
        out.insert(n.clone(), ex.closure.map(|c| c.phase).unwrap_or_default());
    }
    Ok(out)
}

#[tokio::test]
async fn executions_survive_sigkill_of_scheduler_and_executor() -> Result<()> {
    let stack = Stack::new()?;
    let _metadata = stack.metadata()?;
    let mut client = connect(stack.grpc).await?;
    let mut scheduler = stack.scheduler()?;
    let mut executor = stack.executor()?;
    let lp = register(&mut client, stack.dir.path()).await?;

    let mut names = Vec::new();
    for i in 0..EXECUTIONS {
        let name = format!("run{i:02}");
        let spec = admin::ExecutionSpec { launch_plan: Some(lp.clone()), ..Default::default() };
        client
            .create_execution(ExecutionCreateRequest {
                project: PROJECT.into(),
                domain: DOMAIN.into(),
                name: name.clone(),
                spec: Some(spec),
                inputs: None,
                org: String::new(),
            })
            .await?;
        names.push(name);
    }

    // Let some work finish, then kill both in the middle of it.
    let ledger = stack.dir.path().join("ledger.txt");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while std::fs::read_to_string(&ledger).map(|s| s.lines().count()).unwrap_or(0) < 8 {
        ensure!(tokio::time::Instant::now() < deadline, "no progress before the crash");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    scheduler.start_kill()?;
    executor.start_kill()?;
    scheduler.wait().await?;
    executor.wait().await?;
    let done_before = std::fs::read_to_string(&ledger)?.lines().count();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _scheduler = stack.scheduler()?;
    let _executor = stack.executor()?;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    loop {
        let p = phases(&mut client, &names).await?;
        if p.values().all(|ph| *ph == Phase::Succeeded as i32) {
            break;
        }
        if let Some((n, ph)) = p
            .iter()
            .find(|(_, ph)| matches!(Phase::try_from(**ph), Ok(Phase::Failed | Phase::Aborted | Phase::TimedOut)))
        {
            bail!("{n} ended {ph:?}; logs in {}", stack.dir.path().display());
        }
        if tokio::time::Instant::now() > deadline {
            let logs = stack.dir.keep();
            bail!("not all executions finished: {p:?} (kept {})", logs.display());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    for n in &names {
        let data = client
            .get_execution_data(admin::WorkflowExecutionGetDataRequest {
                id: Some(core::WorkflowExecutionIdentifier {
                    project: PROJECT.into(),
                    domain: DOMAIN.into(),
                    name: n.clone(),
                    org: String::new(),
                }),
            })
            .await?
            .into_inner();
        assert_eq!(data.full_outputs.context("outputs")?.literals["o0"], int(42), "{n}");
    }
    let ledger = std::fs::read_to_string(&ledger)?;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for line in ledger.lines() {
        // <store>/metadata/<p>/<d>/<exec>/<node>/data/<attempt>: count completions per node
        let node_key = line.rsplit_once("/data/").map(|(k, _)| k.to_string()).unwrap_or_else(|| line.to_string());
        *seen.entry(node_key).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, c)| **c > 1).collect();
    assert!(twice.is_empty(), "tasks ran to completion twice: {twice:?}");
    assert_eq!(seen.len(), EXECUTIONS * 3, "every node completed once");
    assert!(done_before < EXECUTIONS * 3, "the crash happened mid-way ({done_before} done before it)");
    Ok(())
}
