//! Task attempts end to end: the executor against the real nats-server, a local directory (or
//! the S3-compatible) store and the real flytekit venv of `scripts/dev-deps.sh`. Each test writes
//! a small flytekit module into a temp dir, publishes `TaskRunCommand`s shaped as the scheduler
//! sends them (templates as flytekit registers them, the protocol doc's blob layout), and reads
//! the task events from the EVENTS stream.
//!
//! Every test has its own stream/subject prefix and store root, so they run in parallel.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aloft_blob::{BlobConfig, BlobStore};
use aloft_bus::{Bus, BusConfig, Consumer, StreamKind};
use aloft_executor::config::HealthConfig;
use aloft_executor::{Config, Running};
use aloft_proto::aloft::v1::envelope::Body;
use aloft_proto::aloft::v1::{AbortCommand, Envelope, TaskRunCommand};
use aloft_proto::flyteidl::core::task_execution::Phase;
use aloft_proto::flyteidl::core::{
    self as flyte, DataLoadingConfig, Identifier, KeyValuePair, Literal, LiteralMap, LiteralType,
    NodeExecutionIdentifier, Primitive, ResourceType, Resources, Scalar, SimpleType, TaskExecutionIdentifier,
    TaskTemplate, TypedInterface, Variable, VariableMap, WorkflowExecutionIdentifier, literal, literal_type, primitive,
    resources, scalar, task_template,
};
use aloft_proto::flyteidl::event::{TaskExecutionEvent, task_execution_event};
use anyhow::{Context as _, Result, bail, ensure};
use prost::Message as _;
use tokio_util::sync::CancellationToken;

const PROJECT: &str = "flytesnacks";
const DOMAIN: &str = "development";
const NODE: &str = "n0";
const MODULE: &str = "aloft_exec_tasks";
/// Bound on one attempt: interpreter start and `import flytekit` take seconds on a busy 2-core box.
const ATTEMPT: Duration = Duration::from_secs(120);

const TASKS_PY: &str = r#"
import json
import os
import subprocess
import sys
import time

from flytekit import task
from flytekit.exceptions.user import FlyteRecoverableException


@task
def add_one(a: int) -> int:
    print(f"adding one to {a}")
    print("a warning on stderr", file=sys.stderr)
    return a + 1


@task
def boom(a: int) -> int:
    raise ValueError(f"boom at {a}")


@task
def flaky(a: int) -> int:
    raise FlyteRecoverableException(f"flaky at {a}")


def parent():
    """Who started this task process: the warm runtime's fork server, or the executor."""
    with open(f"/proc/{os.getppid()}/cmdline", "rb") as f:
        return "forkserver" if b"aloft_forkserver.py" in f.read() else "executor"


@task
def sleepy(a: int) -> int:
    child = subprocess.Popen(["sleep", "300"])
    path = os.path.join(os.environ["ALOFT_TEST_DIR"], os.environ["FLYTE_INTERNAL_EXECUTION_ID"] + ".pid")
    with open(path + ".parent", "w") as f:
        f.write(f"{os.getppid()} {parent()}")
    with open(path + ".tmp", "w") as f:
        f.write(str(child.pid))
    os.rename(path + ".tmp", path)
    print("sleeping", flush=True)
    time.sleep(300)
    return a


STATE = []


@task
def fingerprint(a: int) -> str:
    """What a task process looks like from inside, with the attempt's own paths and ids replaced,
    so that two attempts can be compared."""
    import logging
    import random
    import signal
    import tempfile
    import threading

    import flytekit.configuration.file as config_file
    import flytekit.core.data_persistence as dp

    STATE.append(a)
    scratch = os.path.dirname(os.environ["HOME"])
    execution = os.environ["FLYTE_INTERNAL_EXECUTION_ID"]

    def handler(h):
        return getattr(h, "__qualname__", str(h))

    found = {
        "parent": parent(),
        "state": list(STATE),
        "random": random.random(),
        "argv": sys.argv,
        "orig_argv": sys.orig_argv,
        "path": sys.path,
        "executable": sys.executable,
        "main": getattr(sys.modules["__main__"], "__file__", None),
        "cwd": os.getcwd(),
        "env": {k: v for k, v in os.environ.items() if k != "ALOFT_PYTHON_RUNTIME"},
        "tempdir": tempfile.gettempdir(),
        "flyte_tmp_parent": os.path.dirname(dp.flyte_tmp_dir),
        "default_s3_endpoint": dp.default_local_file_access_provider.data_config.s3.endpoint,
        "config_file": str(config_file.get_config_file(None)),
        "loggers": {
            name: [logging.getLogger(name).level] + [
                (type(h).__name__, type(h.formatter).__name__) for h in logging.getLogger(name).handlers
            ]
            for name in ("flytekit", "user_space", "developer", "")
        },
        "excepthook": getattr(sys.excepthook, "__module__", None),
        "signals": {s.name: handler(signal.getsignal(s)) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE, signal.SIGCHLD)},
        "stdio": [(f.fileno(), f.encoding, f.line_buffering, f.write_through) for f in (sys.stdout, sys.stderr)],
        "stdin": os.readlink("/proc/self/fd/0"),
        "own_group": os.getpgid(0) == os.getpid(),
        "threads": threading.active_count(),
        "flags": repr(sys.flags),
    }
    return json.dumps(found).replace(scratch, "<scratch>").replace(execution, "<exec>")


@task
def env_of(a: int) -> str:
    keys = [
        "FLYTE_INTERNAL_EXECUTION_ID", "FLYTE_INTERNAL_EXECUTION_PROJECT", "FLYTE_INTERNAL_EXECUTION_DOMAIN",
        "FLYTE_INTERNAL_EXECUTION_WORKFLOW", "FLYTE_INTERNAL_TASK_NAME", "FLYTE_INTERNAL_TASK_VERSION",
        "FLYTE_ATTEMPT_NUMBER", "FROM_TEMPLATE", "FROM_EXECUTION", "HOME", "TMPDIR", "PATH",
        "CARGO_PKG_NAME", "NEXTEST_RUN_ID", "CARGO_MANIFEST_DIR",
    ]
    found = {k: os.environ.get(k) for k in keys}
    found["cwd"] = os.getcwd()
    return json.dumps(found)
"#;

enum Store {
    Local,
    S3,
}

struct Harness {
    config: Config,
    token: CancellationToken,
    running: Option<Running>,
    bus: Bus,
    events: Consumer,
    seen: Vec<TaskExecutionEvent>,
    store: BlobStore,
    /// The task module's directory; tasks write marker files here too.
    dir: tempfile::TempDir,
}

impl Harness {
    async fn start(store: Store, tweak: impl FnOnce(&mut Config)) -> Result<Harness> {
        let deps = aloft_testkit::deps();
        let ns = aloft_testkit::unique_name("exectask");
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join(format!("{MODULE}.py")), TASKS_PY)?;
        let storage = match store {
            Store::Local => BlobConfig::local(dir.path().join("store").to_string_lossy()),
            Store::S3 => BlobConfig {
                endpoint: Some(deps.s3_endpoint.clone()),
                region: Some(deps.s3_region.clone()),
                access_key: Some(deps.s3_access_key.clone()),
                secret_key: Some(deps.s3_secret_key.clone()),
                force_path_style: true,
                ..BlobConfig::s3(format!("s3://{}/{ns}", deps.s3_bucket))
            },
        };
        let mut config = Config {
            bus: BusConfig {
                url: deps.nats_url.clone(),
                stream_prefix: ns.to_uppercase(),
                subject_prefix: ns.clone(),
                ..Default::default()
            },
            health: HealthConfig { listen: "127.0.0.1:0".into() },
            storage,
            scratch_dir: dir.path().join("scratch").to_string_lossy().into_owned(),
            kill_grace: Duration::from_secs(2),
            ..Default::default()
        };
        config.python.venv = Some(deps.python_venv.to_string_lossy().into_owned());
        config.capacity.cpu = Some("2".into());
        config.capacity.memory = Some("4Gi".into());
        tweak(&mut config);

        let bus = Bus::connect(config.bus.clone()).await?;
        bus.ensure().await?;
        let filter = bus.topology().events_filter(Some(aloft_bus::EventKind::Task), None, None);
        let events = bus.consumer("test-events", &[filter], StreamKind::Events).await?;
        let store = BlobStore::from_config(&config.storage).await?;
        let token = CancellationToken::new();
        let running = aloft_executor::start(config.clone(), token.clone()).await?;
        Ok(Harness { config, token, running: Some(running), bus, events, seen: Vec::new(), store, dir })
    }

    fn exec_id(name: &str) -> WorkflowExecutionIdentifier {
        WorkflowExecutionIdentifier {
            project: PROJECT.into(),
            domain: DOMAIN.into(),
            name: name.into(),
            org: String::new(),
        }
    }

    /// A command for attempt `attempt` of node `n0` of execution `exec`, with its inputs written
    /// where the scheduler would write them.
    async fn command(
        &self,
        exec: &str,
        attempt: u32,
        task: TaskTemplate,
        inputs: &LiteralMap,
    ) -> Result<TaskRunCommand> {
        let root = self.store.root();
        let m = aloft_blob::join(root, &format!("metadata/{PROJECT}/{DOMAIN}/{exec}"));
        let data = aloft_blob::join(&m, &format!("{NODE}/data"));
        let raw = aloft_blob::join(root, &format!("raw/{PROJECT}/{DOMAIN}/{exec}/{NODE}/{attempt}"));
        let inputs_uri = aloft_blob::join(&data, "inputs.pb");
        self.store.put(&inputs_uri, inputs.encode_to_vec()).await?;
        let mut env = BTreeMap::new();
        env.insert("FLYTE_INTERNAL_EXECUTION_WORKFLOW".to_string(), format!("{MODULE}.wf"));
        env.insert("PYTHONPATH".to_string(), self.dir.path().to_string_lossy().into_owned());
        env.insert("ALOFT_TEST_DIR".to_string(), self.dir.path().to_string_lossy().into_owned());
        Ok(TaskRunCommand {
            id: Some(TaskExecutionIdentifier {
                task_id: task.id.clone(),
                node_execution_id: Some(NodeExecutionIdentifier {
                    node_id: NODE.into(),
                    execution_id: Some(Self::exec_id(exec)),
                }),
                retry_attempt: attempt,
            }),
            task: Some(task),
            inputs_uri,
            output_prefix: aloft_blob::join(&data, &attempt.to_string()),
            checkpoint_prefix: aloft_blob::join(&raw, "_flytecheckpoints"),
            raw_output_prefix: raw,
            prev_checkpoint_prefix: String::new(),
            env,
            timeout: None,
            array_index: -1,
            queue: self.config.queue.clone(),
        })
    }

    async fn publish(&self, cmd: &TaskRunCommand) -> Result<()> {
        let id = cmd.id.as_ref().unwrap();
        let node = id.node_execution_id.as_ref().unwrap();
        let exec = node.execution_id.as_ref().unwrap();
        let envelope = Envelope {
            id: format!("run/{}/{}/{}/{}/{}", exec.project, exec.domain, exec.name, node.node_id, id.retry_attempt),
            source: "test".into(),
            body: Some(Body::TaskRun(cmd.clone())),
            ..Default::default()
        };
        self.bus.publish(&envelope).await?;
        Ok(())
    }

    async fn abort(&self, exec: &str, cause: &str) -> Result<()> {
        let envelope = Envelope {
            id: format!("abort/{PROJECT}/{DOMAIN}/{exec}"),
            source: "test".into(),
            body: Some(Body::Abort(AbortCommand {
                execution_id: Some(Self::exec_id(exec)),
                cause: cause.into(),
                principal: "test".into(),
            })),
            ..Default::default()
        };
        let client = self.bus.client();
        client
            .publish(aloft_executor::abort_subject(&self.config.bus.subject_prefix), envelope.encode_to_vec().into())
            .await?;
        client.flush().await?;
        Ok(())
    }

    /// The first event (seen before or arriving within `limit`) matching `pred`.
    async fn event(
        &mut self,
        limit: Duration,
        pred: impl Fn(&TaskExecutionEvent) -> bool,
    ) -> Result<TaskExecutionEvent> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(e) = self.seen.iter().find(|e| pred(e)) {
                return Ok(e.clone());
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                bail!(
                    "no matching event within {limit:?}; seen: {:#?}",
                    self.seen.iter().map(summary).collect::<Vec<_>>()
                );
            }
            for delivery in self.events.fetch(10, left.min(Duration::from_secs(1))).await? {
                let envelope = delivery.envelope().clone();
                delivery.ack().await?;
                match envelope.body {
                    Some(Body::TaskEvent(e)) => {
                        let expected = format!(
                            "task/{PROJECT}/{DOMAIN}/{}/{NODE}/{}/{}/{}",
                            exec_name(&e),
                            e.retry_attempt,
                            Phase::try_from(e.phase).unwrap().as_str_name(),
                            e.phase_version
                        );
                        ensure!(envelope.id == expected, "event id {} is not {expected}", envelope.id);
                        ensure!(envelope.source == "executor");
                        self.seen.push(e)
                    }
                    other => bail!("not a task event: {other:?}"),
                }
            }
        }
    }

    /// The terminal event of execution `exec`.
    async fn terminal(&mut self, exec: &str) -> Result<TaskExecutionEvent> {
        self.event(ATTEMPT, |e| {
            exec_name(e) == exec
                && [Phase::Succeeded, Phase::Failed, Phase::RetryableFailed, Phase::Aborted]
                    .contains(&Phase::try_from(e.phase).unwrap())
        })
        .await
    }

    async fn running(&mut self, exec: &str) -> Result<TaskExecutionEvent> {
        self.event(ATTEMPT, |e| exec_name(e) == exec && e.phase == Phase::Running as i32).await
    }

    /// Waits for the marker file `sleepy` writes with its child's pid.
    async fn child_pid(&self, exec: &str) -> Result<i32> {
        let path = self.dir.path().join(format!("{exec}.pid"));
        let deadline = tokio::time::Instant::now() + ATTEMPT;
        loop {
            if let Ok(text) = std::fs::read_to_string(&path) {
                return Ok(text.trim().parse()?);
            }
            ensure!(tokio::time::Instant::now() < deadline, "the task never wrote {}", path.display());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `<pid> forkserver|executor`: the parent of the `sleepy` task of `exec`.
    async fn parent_of(&self, exec: &str) -> Result<(i32, String)> {
        self.child_pid(exec).await?;
        let text = std::fs::read_to_string(self.dir.path().join(format!("{exec}.pid.parent")))?;
        let (pid, who) = text.split_once(' ').context("pid and parent")?;
        Ok((pid.parse()?, who.to_string()))
    }

    /// Runs the `fingerprint` task as execution `exec` (with extra task environment) and returns
    /// what it saw.
    async fn fingerprint(&mut self, exec: &str, env: &[(&str, &str)]) -> Result<serde_json::Value> {
        let mut cmd =
            self.command(exec, 0, python_task("fingerprint", SimpleType::String), &inputs(&[("a", int(1))])).await?;
        cmd.env.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self.publish(&cmd).await?;
        let done = self.terminal(exec).await?;
        let log =
            String::from_utf8_lossy(&self.store.get(&format!("{}/task.log", cmd.output_prefix)).await?).into_owned();
        ensure!(done.phase == Phase::Succeeded as i32, "{}\n{log}", summary(&done));
        let outputs = LiteralMap::decode(self.store.get(&format!("{}/outputs.pb", cmd.output_prefix)).await?)?;
        match primitive_of(&outputs.literals["o0"]) {
            Some(primitive::Value::StringValue(json)) => Ok(serde_json::from_str(json)?),
            other => bail!("fingerprint returned {other:?}"),
        }
    }

    async fn stop(mut self) -> Result<()> {
        self.token.cancel();
        let running = self.running.take().unwrap();
        tokio::time::timeout(Duration::from_secs(30), running.task).await.context("shutdown timed out")???;
        Ok(())
    }
}

fn exec_name(e: &TaskExecutionEvent) -> String {
    e.parent_node_execution_id
        .as_ref()
        .and_then(|n| n.execution_id.as_ref())
        .map(|x| x.name.clone())
        .unwrap_or_default()
}

fn summary(e: &TaskExecutionEvent) -> String {
    let detail = match &e.output_result {
        Some(task_execution_event::OutputResult::Error(err)) => format!("{}: {}", err.code, err.message),
        Some(task_execution_event::OutputResult::OutputUri(u)) => u.clone(),
        _ => String::new(),
    };
    format!("{} {} {detail}", exec_name(e), Phase::try_from(e.phase).unwrap().as_str_name())
}

fn error_of(e: &TaskExecutionEvent) -> &flyte::ExecutionError {
    match &e.output_result {
        Some(task_execution_event::OutputResult::Error(err)) => err,
        other => panic!("no error in {other:?}"),
    }
}

fn int(i: i64) -> Literal {
    Literal {
        value: Some(literal::Value::Scalar(Box::new(Scalar {
            value: Some(scalar::Value::Primitive(Primitive { value: Some(primitive::Value::Integer(i)) })),
        }))),
        ..Default::default()
    }
}

fn primitive_of(l: &Literal) -> Option<&primitive::Value> {
    match &l.value {
        Some(literal::Value::Scalar(s)) => match &s.value {
            Some(scalar::Value::Primitive(p)) => p.value.as_ref(),
            _ => None,
        },
        _ => None,
    }
}

fn inputs(pairs: &[(&str, Literal)]) -> LiteralMap {
    LiteralMap { literals: pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect() }
}

fn vars(pairs: &[(&str, SimpleType)]) -> VariableMap {
    VariableMap {
        variables: pairs
            .iter()
            .map(|(k, t)| {
                let ty = LiteralType { r#type: Some(literal_type::Type::Simple(*t as i32)), ..Default::default() };
                (k.to_string(), Variable { r#type: Some(ty), ..Default::default() })
            })
            .collect(),
    }
}

fn resources(cpu: &str, memory: &str) -> Resources {
    let entry = |name: resources::ResourceName, value: &str| resources::ResourceEntry {
        name: name as i32,
        value: value.into(),
    };
    Resources {
        requests: vec![entry(resources::ResourceName::Cpu, cpu), entry(resources::ResourceName::Memory, memory)],
        limits: vec![],
    }
}

/// The template flytekit registers for `@task def <name>(a: int) -> <output>` (without fast
/// registration).
fn python_task(name: &str, output: SimpleType) -> TaskTemplate {
    let args = [
        "pyflyte-execute",
        "--inputs",
        "{{.input}}",
        "--output-prefix",
        "{{.outputPrefix}}",
        "--raw-output-data-prefix",
        "{{.rawOutputDataPrefix}}",
        "--checkpoint-path",
        "{{.checkpointOutputPrefix}}",
        "--prev-checkpoint",
        "{{.prevCheckpointPrefix}}",
        "--resolver",
        "flytekit.core.python_auto_container.default_task_resolver",
        "--",
        "task-module",
        MODULE,
        "task-name",
        name,
    ];
    TaskTemplate {
        id: Some(Identifier {
            resource_type: ResourceType::Task as i32,
            project: PROJECT.into(),
            domain: DOMAIN.into(),
            name: format!("{MODULE}.{name}"),
            version: "v1".into(),
            org: String::new(),
        }),
        r#type: "python-task".into(),
        metadata: Some(flyte::TaskMetadata::default()),
        interface: Some(TypedInterface {
            inputs: Some(vars(&[("a", SimpleType::Integer)])),
            outputs: Some(vars(&[("o0", output)])),
        }),
        target: Some(task_template::Target::Container(flyte::Container {
            image: "cr.flyte.org/flyteorg/flytekit:py3.11-1.16.31".into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            resources: Some(resources("500m", "256Mi")),
            env: vec![KeyValuePair { key: "FROM_TEMPLATE".into(), value: "yes".into() }],
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// A raw container running `sh -c <script>`, with data config paths `input_path`/`output_path`.
fn raw_task(script: &str, input_path: &Path, output_path: &Path, outputs: &[(&str, SimpleType)]) -> TaskTemplate {
    TaskTemplate {
        id: Some(Identifier {
            resource_type: ResourceType::Task as i32,
            project: PROJECT.into(),
            domain: DOMAIN.into(),
            name: "raw".into(),
            version: "v1".into(),
            org: String::new(),
        }),
        r#type: "raw-container".into(),
        interface: Some(TypedInterface {
            inputs: Some(vars(&[("x", SimpleType::Integer)])),
            outputs: Some(vars(outputs)),
        }),
        target: Some(task_template::Target::Container(flyte::Container {
            image: "alpine:3.20".into(),
            command: vec!["sh".into(), "-c".into()],
            args: vec![script.into()],
            data_config: Some(DataLoadingConfig {
                enabled: true,
                input_path: input_path.to_string_lossy().into_owned(),
                output_path: output_path.to_string_lossy().into_owned(),
                ..Default::default()
            }),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn alive(pid: i32) -> bool {
    // A killed orphan may linger as a zombie until init reaps it; that is dead enough.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'),
        Err(_) => false,
    }
}

async fn dies(pid: i32) -> bool {
    for _ in 0..100 {
        if !alive(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Whether the scratch directory empties (it is deleted just after the terminal event).
async fn scratch_empties(config: &Config) -> bool {
    for _ in 0..100 {
        // Only the (empty) record of running process groups and the warm runtime's files may remain.
        let groups = aloft_executor::groups_dir(&config.scratch_dir);
        let warm = aloft_executor::warm_dir(&config.scratch_dir);
        let left = std::fs::read_dir(PathBuf::from(&config.scratch_dir))
            .map(|d| d.flatten().filter(|e| e.path() != groups && e.path() != warm).count())
            .unwrap_or(0);
        let records = std::fs::read_dir(&groups).map(|d| d.count()).unwrap_or(0);
        if left == 0 && records == 0 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn python_task_succeeds_with_outputs_and_log() -> Result<()> {
    let mut h = Harness::start(Store::Local, |_| {}).await?;
    let cmd = h.command("ok1", 0, python_task("add_one", SimpleType::Integer), &inputs(&[("a", int(41))])).await?;
    h.publish(&cmd).await?;

    let running = h.running("ok1").await?;
    let log_uri = format!("{}/task.log", cmd.output_prefix);
    assert_eq!(running.phase_version, 0);
    assert_eq!(running.producer_id, "executor");
    assert_eq!(running.task_type, "python-task");
    assert_eq!(running.retry_attempt, 0);
    assert_eq!(running.task_id, cmd.id.as_ref().unwrap().task_id);
    assert_eq!(running.parent_node_execution_id, cmd.id.as_ref().unwrap().node_execution_id);
    assert_eq!(running.input_value, Some(task_execution_event::InputValue::InputUri(cmd.inputs_uri.clone())));
    assert!(running.occurred_at.is_some());
    assert_eq!(running.logs.len(), 1);
    assert_eq!((running.logs[0].name.as_str(), running.logs[0].uri.as_str()), ("task.log", log_uri.as_str()));

    let done = h.terminal("ok1").await?;
    assert_eq!(done.phase, Phase::Succeeded as i32, "{}", summary(&done));
    let output_uri = format!("{}/outputs.pb", cmd.output_prefix);
    assert_eq!(done.output_result, Some(task_execution_event::OutputResult::OutputUri(output_uri.clone())));
    let outputs = LiteralMap::decode(h.store.get(&output_uri).await?)?;
    assert_eq!(primitive_of(&outputs.literals["o0"]), Some(&primitive::Value::Integer(42)));

    let log = String::from_utf8(h.store.get(&log_uri).await?.to_vec())?;
    assert!(log.contains("adding one to 41"), "the task's print is in the log: {log}");
    assert!(log.contains("a warning on stderr"), "stderr is in the same log: {log}");
    assert!(scratch_empties(&h.config).await, "the scratch directory is deleted");
    h.stop().await
}

#[tokio::test]
async fn task_environment_follows_the_protocol() -> Result<()> {
    let mut h = Harness::start(Store::Local, |_| {}).await?;
    let mut cmd = h.command("env1", 2, python_task("env_of", SimpleType::String), &inputs(&[("a", int(1))])).await?;
    cmd.env.insert("FROM_EXECUTION".into(), "yes".into());
    h.publish(&cmd).await?;
    let done = h.terminal("env1").await?;
    assert_eq!(done.phase, Phase::Succeeded as i32, "{}", summary(&done));
    assert_eq!(done.retry_attempt, 2);
    let outputs = LiteralMap::decode(h.store.get(&format!("{}/outputs.pb", cmd.output_prefix)).await?)?;
    let Some(primitive::Value::StringValue(json)) = primitive_of(&outputs.literals["o0"]) else { bail!("no string") };
    let env: BTreeMap<String, Option<String>> = serde_json::from_str(json)?;
    let get = |k: &str| env.get(k).cloned().flatten().unwrap_or_default();
    assert_eq!(get("FLYTE_INTERNAL_EXECUTION_ID"), "env1");
    assert_eq!(get("FLYTE_INTERNAL_EXECUTION_PROJECT"), PROJECT);
    assert_eq!(get("FLYTE_INTERNAL_EXECUTION_DOMAIN"), DOMAIN);
    assert_eq!(get("FLYTE_INTERNAL_EXECUTION_WORKFLOW"), format!("{MODULE}.wf"));
    assert_eq!(get("FLYTE_INTERNAL_TASK_NAME"), format!("{MODULE}.env_of"));
    assert_eq!(get("FLYTE_INTERNAL_TASK_VERSION"), "v1");
    assert_eq!(get("FLYTE_ATTEMPT_NUMBER"), "2");
    assert_eq!(get("FROM_TEMPLATE"), "yes");
    assert_eq!(get("FROM_EXECUTION"), "yes", "execution envs pass");
    // The test runner's own variables (like any secret of the executor's) do not leak into tasks.
    let runner_vars = ["CARGO_PKG_NAME", "NEXTEST_RUN_ID", "CARGO_MANIFEST_DIR"];
    ensure!(runner_vars.iter().any(|k| std::env::var(k).is_ok()), "none of {runner_vars:?} is set here");
    for k in runner_vars {
        assert_eq!(get(k), "", "{k} leaked into the task");
    }
    let venv_bin = format!("{}/bin", aloft_testkit::deps().python_venv.display());
    assert!(get("PATH").starts_with(&venv_bin), "venv first on PATH: {}", get("PATH"));
    let scratch = &h.config.scratch_dir;
    assert!(get("HOME").starts_with(scratch.as_str()), "HOME in the scratch dir: {}", get("HOME"));
    assert!(get("TMPDIR").starts_with(scratch.as_str()), "TMPDIR in the scratch dir: {}", get("TMPDIR"));
    assert!(get("cwd").starts_with(scratch.as_str()) && get("cwd").contains("env1"), "cwd: {}", get("cwd"));
    h.stop().await
}

#[tokio::test]
async fn raising_task_fails_with_the_python_message() -> Result<()> {
    let mut h = Harness::start(Store::Local, |_| {}).await?;
    let cmd = h.command("boom1", 0, python_task("boom", SimpleType::Integer), &inputs(&[("a", int(7))])).await?;
    h.publish(&cmd).await?;
    let done = h.terminal("boom1").await?;
    assert_eq!(done.phase, Phase::Failed as i32, "{}", summary(&done));
    let err = error_of(&done);
    assert!(err.message.contains("boom at 7"), "{}", err.message);
    assert!(err.code.contains("ValueError") || err.message.contains("ValueError"), "{err:?}");
    assert_eq!(err.kind, flyte::execution_error::ErrorKind::User as i32);
    assert_eq!(err.error_uri, format!("{}/error.pb", cmd.output_prefix));
    assert!(h.store.exists(&format!("{}/task.log", cmd.output_prefix)).await?);
    h.stop().await
}

#[tokio::test]
async fn recoverable_exception_is_retryable() -> Result<()> {
    let mut h = Harness::start(Store::Local, |_| {}).await?;
    let cmd = h.command("flaky1", 0, python_task("flaky", SimpleType::Integer), &inputs(&[("a", int(3))])).await?;
    h.publish(&cmd).await?;
    let done = h.terminal("flaky1").await?;
    assert_eq!(done.phase, Phase::RetryableFailed as i32, "{}", summary(&done));
    let err = error_of(&done);
    assert!(err.message.contains("flaky at 3"), "{}", err.message);
    assert_eq!(err.kind, flyte::execution_error::ErrorKind::User as i32);
    h.stop().await
}

#[tokio::test]
async fn timeout_kills_the_process_group() -> Result<()> {
    let mut h = Harness::start(Store::Local, |_| {}).await?;
    let mut cmd = h.command("slow1", 0, python_task("sleepy", SimpleType::Integer), &inputs(&[("a", int(1))])).await?;
    // Long enough for the interpreter to start and the task to spawn its child on a busy box.
    cmd.timeout = Some(prost_types::Duration { seconds: 15, nanos: 0 });
    h.publish(&cmd).await?;
    let child = h.child_pid("slow1").await?;
    assert!(alive(child), "the child sleep runs while the task runs");
    assert_eq!(h.parent_of("slow1").await?.1, "forkserver", "Python tasks run warm by default");
    let done = h.terminal("slow1").await?;
    assert_eq!(done.phase, Phase::RetryableFailed as i32, "{}", summary(&done));
    let err = error_of(&done);
    assert_eq!(err.code, "Timeout");
    assert_eq!(err.kind, flyte::execution_error::ErrorKind::User as i32, "a timeout counts against the task's retries");
    assert!(dies(child).await, "the task's child sleep survived the timeout");
    let log = String::from_utf8(h.store.get(&format!("{}/task.log", cmd.output_prefix)).await?.to_vec())?;
    assert!(log.contains("sleeping"), "{log}");
    h.stop().await
}

#[tokio::test]
async fn abort_kills_the_attempt_and_reports_aborted() -> Result<()> {
    let mut h = Harness::start(Store::Local, |_| {}).await?;
    let cmd = h.command("abort1", 0, python_task("sleepy", SimpleType::Integer), &inputs(&[("a", int(1))])).await?;
    h.publish(&cmd).await?;
    h.running("abort1").await?;
    let child = h.child_pid("abort1").await?;
    assert_eq!(h.parent_of("abort1").await?.1, "forkserver", "Python tasks run warm by default");
    h.abort("abort1", "stopped by a test").await?;
    let done = h.terminal("abort1").await?;
    assert_eq!(done.phase, Phase::Aborted as i32, "{}", summary(&done));
    assert_eq!(done.reasons[0].reason, "stopped by a test");
    assert!(dies(child).await, "the task's child sleep survived the abort");

    // A run of an aborted execution pulled later is aborted without running.
    let late = h.command("abort1", 1, python_task("add_one", SimpleType::Integer), &inputs(&[("a", int(1))])).await?;
    h.publish(&late).await?;
    let done = h.event(ATTEMPT, |e| exec_name(e) == "abort1" && e.retry_attempt == 1).await?;
    assert_eq!(done.phase, Phase::Aborted as i32, "{}", summary(&done));
    h.stop().await
}

#[tokio::test]
async fn raw_container_reads_input_files_and_writes_outputs() -> Result<()> {
    let mut h = Harness::start(Store::Local, |_| {}).await?;
    let in_dir = h.dir.path().join("var/inputs");
    let out_dir = h.dir.path().join("var/outputs");
    let script = format!(
        "test \"$(cat {i}/x)\" = \"{{{{.inputs.x}}}}\" && test -s {i}/inputs.pb \
         && tr -d ' \\n' < {i}/inputs.json | grep -qx '{{\"x\":41}}' \
         && echo $(( $(cat {i}/x) + 1 )) > {o}/y && echo raw done",
        i = in_dir.display(),
        o = out_dir.display()
    );
    let task = raw_task(&script, &in_dir, &out_dir, &[("y", SimpleType::Integer)]);
    let cmd = h.command("raw1", 0, task, &inputs(&[("x", int(41))])).await?;
    h.publish(&cmd).await?;
    let done = h.terminal("raw1").await?;
    assert_eq!(done.phase, Phase::Succeeded as i32, "{}", summary(&done));
    assert_eq!(done.task_type, "raw-container");
    let outputs = LiteralMap::decode(h.store.get(&format!("{}/outputs.pb", cmd.output_prefix)).await?)?;
    assert_eq!(primitive_of(&outputs.literals["y"]), Some(&primitive::Value::Integer(42)));
    // The absolute data directories were placed under the attempt's scratch directory, not the host's.
    assert!(!in_dir.exists() && !out_dir.exists(), "raw-container directories leaked onto the host");
    let log = String::from_utf8(h.store.get(&format!("{}/task.log", cmd.output_prefix)).await?.to_vec())?;
    assert_eq!(log, "raw done\n");

    // An output that is not written is the command's (user) error, reported from error.pb.
    let task = raw_task("true", &in_dir, &out_dir, &[("y", SimpleType::Integer)]);
    let cmd = h.command("raw2", 0, task, &inputs(&[("x", int(1))])).await?;
    h.publish(&cmd).await?;
    let done = h.terminal("raw2").await?;
    assert_eq!(done.phase, Phase::Failed as i32, "{}", summary(&done));
    let err = error_of(&done);
    assert_eq!(err.code, "OutputUploadFailed");
    assert!(err.message.contains("output `y`"), "{}", err.message);
    h.stop().await
}

#[tokio::test]
async fn failures_without_error_document_are_retryable_system_errors() -> Result<()> {
    let mut h = Harness::start(Store::Local, |_| {}).await?;
    let dir = h.dir.path().to_path_buf();
    let task = raw_task("echo about to fail; exit 3", &dir.join("i"), &dir.join("o"), &[("y", SimpleType::Integer)]);
    let cmd = h.command("exit3", 0, task, &inputs(&[("x", int(1))])).await?;
    h.publish(&cmd).await?;
    let done = h.terminal("exit3").await?;
    assert_eq!(done.phase, Phase::RetryableFailed as i32, "{}", summary(&done));
    let err = error_of(&done);
    assert_eq!(err.code, "ProcessFailed");
    assert_eq!(err.kind, flyte::execution_error::ErrorKind::System as i32);
    assert!(err.message.contains("status 3") && err.message.contains("about to fail"), "{}", err.message);

    let mut task = raw_task("true", &dir.join("i"), &dir.join("o"), &[]);
    if let Some(task_template::Target::Container(c)) = &mut task.target {
        c.command = vec!["no-such-program-aloft".into()];
        c.args.clear();
    }
    let cmd = h.command("nostart", 0, task, &inputs(&[("x", int(1))])).await?;
    h.publish(&cmd).await?;
    let done = h.terminal("nostart").await?;
    assert_eq!(done.phase, Phase::RetryableFailed as i32, "{}", summary(&done));
    assert!(error_of(&done).message.contains("cannot start `no-such-program-aloft`"), "{}", summary(&done));
    h.stop().await
}

#[tokio::test]
async fn admission_refuses_oversized_tasks_and_queues_the_rest() -> Result<()> {
    let mut h = Harness::start(Store::Local, |c| {
        c.capacity.cpu = Some("1".into());
        c.slots = 3;
    })
    .await?;
    assert_eq!(h.running.as_ref().unwrap().capacity.cpu_millis, 1000);
    let dir = h.dir.path().to_path_buf();
    let mut big = raw_task("true", &dir.join("i"), &dir.join("o"), &[]);
    if let Some(task_template::Target::Container(c)) = &mut big.target {
        c.resources = Some(resources("2", "1Gi"));
    }
    let cmd = h.command("big", 0, big, &inputs(&[("x", int(1))])).await?;
    h.publish(&cmd).await?;
    let done = h.terminal("big").await?;
    assert_eq!(done.phase, Phase::Failed as i32, "{}", summary(&done));
    let err = error_of(&done);
    assert_eq!(err.code, "ResourcesExceedCapacity");
    assert!(err.message.contains("cpu 2") && err.message.contains("cpu 1"), "{}", err.message);
    assert!(!h.seen.iter().any(|e| exec_name(e) == "big" && e.phase == Phase::Running as i32), "it never ran");

    // Two tasks of one full CPU each: the second starts only after the first is done.
    for name in ["first", "second"] {
        let mut task = raw_task("sleep 1", &dir.join(name).join("i"), &dir.join(name).join("o"), &[]);
        if let Some(task_template::Target::Container(c)) = &mut task.target {
            c.resources = Some(resources("1", "100Mi"));
        }
        let cmd = h.command(name, 0, task, &inputs(&[("x", int(1))])).await?;
        h.publish(&cmd).await?;
    }
    let first_done = h.terminal("first").await?;
    let second_running = h.running("second").await?;
    let second_done = h.terminal("second").await?;
    assert_eq!(first_done.phase, Phase::Succeeded as i32, "{}", summary(&first_done));
    assert_eq!(second_done.phase, Phase::Succeeded as i32, "{}", summary(&second_done));
    let at = |e: &TaskExecutionEvent| {
        let t = e.occurred_at.unwrap();
        (t.seconds, t.nanos)
    };
    assert!(at(&second_running) >= at(&first_done), "the second ran while the first held the CPU");
    h.stop().await
}

#[tokio::test]
async fn python_task_with_the_s3_store() -> Result<()> {
    let mut h = Harness::start(Store::S3, |_| {}).await?;
    let cmd = h.command("s3ok", 0, python_task("add_one", SimpleType::Integer), &inputs(&[("a", int(1))])).await?;
    assert!(cmd.output_prefix.starts_with("s3://"));
    h.publish(&cmd).await?;
    let done = h.terminal("s3ok").await?;
    let log = h.store.get(&format!("{}/task.log", cmd.output_prefix)).await;
    let log = log.map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    assert_eq!(done.phase, Phase::Succeeded as i32, "{}\n{log}", summary(&done));
    let outputs = LiteralMap::decode(h.store.get(&format!("{}/outputs.pb", cmd.output_prefix)).await?)?;
    assert_eq!(primitive_of(&outputs.literals["o0"]), Some(&primitive::Value::Integer(2)));
    assert!(log.contains("adding one to 1"), "{log}");
    h.stop().await
}

#[tokio::test]
async fn fast_registered_task_runs_from_its_bundle() -> Result<()> {
    let mut h = Harness::start(Store::Local, |c| c.keep_scratch = true).await?;
    // The bundle `pyflyte register` uploads, at the native url it bakes into the args.
    let bundle_dir = tempfile::tempdir()?;
    std::fs::write(bundle_dir.path().join(format!("{MODULE}.py")), TASKS_PY)?;
    let bundle = h.store.root().to_string() + "/uploads/fastabc123.tar.gz";
    std::fs::create_dir_all(Path::new(&bundle).parent().unwrap())?;
    let tar = std::process::Command::new("tar")
        .args(["-czf", &bundle, "-C"])
        .arg(bundle_dir.path())
        .arg(format!("{MODULE}.py"))
        .status()?;
    ensure!(tar.success(), "tar failed");

    let mut task = python_task("add_one", SimpleType::Integer);
    if let Some(task_template::Target::Container(c)) = &mut task.target {
        let fast = ["pyflyte-fast-execute", "--additional-distribution", &bundle, "--dest-dir", "/root", "--"];
        c.args = fast.iter().map(|s| s.to_string()).chain(c.args.clone()).collect();
    }
    let mut cmd = h.command("fast1", 0, task, &inputs(&[("a", int(9))])).await?;
    // The code comes from the bundle only.
    cmd.env.remove("PYTHONPATH");
    h.publish(&cmd).await?;
    let done = h.terminal("fast1").await?;
    let log = String::from_utf8_lossy(&h.store.get(&format!("{}/task.log", cmd.output_prefix)).await?).into_owned();
    assert_eq!(done.phase, Phase::Succeeded as i32, "{}\n{log}", summary(&done));
    let outputs = LiteralMap::decode(h.store.get(&format!("{}/outputs.pb", cmd.output_prefix)).await?)?;
    assert_eq!(primitive_of(&outputs.literals["o0"]), Some(&primitive::Value::Integer(10)));
    // `--dest-dir /root` was pointed at the attempt's scratch directory (kept for this check).
    let kept: Vec<PathBuf> = std::fs::read_dir(&h.config.scratch_dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .filter(|p| p != &aloft_executor::groups_dir(&h.config.scratch_dir))
        .filter(|p| p != &aloft_executor::warm_dir(&h.config.scratch_dir))
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(
        kept[0].join("work").join(format!("{MODULE}.py")).exists(),
        "the bundle was not extracted into the scratch dir"
    );
    h.stop().await
}

#[tokio::test]
async fn long_attempts_are_kept_alive() -> Result<()> {
    let mut h = Harness::start(Store::Local, |c| c.bus.ack_wait = Duration::from_secs(1)).await?;
    let dir = h.dir.path().to_path_buf();
    let task = raw_task("sleep 4", &dir.join("i"), &dir.join("o"), &[]);
    let cmd = h.command("long1", 0, task, &inputs(&[("x", int(1))])).await?;
    h.publish(&cmd).await?;
    let done = h.terminal("long1").await?;
    assert_eq!(done.phase, Phase::Succeeded as i32, "{}", summary(&done));
    let js = async_nats::jetstream::new(h.bus.client());
    let stream = js.get_stream(h.bus.topology().stream_name(StreamKind::Tasks)).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let info = loop {
        let info = stream.consumer_info(aloft_executor::consumer_name(&h.config.queue)).await?;
        if info.num_ack_pending == 0 || tokio::time::Instant::now() > deadline {
            break info;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(info.num_ack_pending, 0, "acknowledged after the terminal event");
    assert_eq!(info.num_redelivered, 0, "heartbeats kept a 4s attempt from being redelivered after 1s");
    assert_eq!(info.delivered.consumer_sequence, 1);
    h.stop().await
}

#[tokio::test]
async fn shutdown_hands_running_attempts_back_to_the_queue() -> Result<()> {
    let mut h = Harness::start(Store::Local, |c| {
        c.drain_timeout = Duration::from_millis(500);
        c.kill_grace = Duration::from_millis(500);
    })
    .await?;
    let dir = h.dir.path().to_path_buf();
    let marker = dir.join("starts");
    let script = format!("echo started >> {}; exec sleep 300", marker.display());
    let task = raw_task(&script, &dir.join("i"), &dir.join("o"), &[]);
    let cmd = h.command("drain1", 0, task, &inputs(&[("x", int(1))])).await?;
    h.publish(&cmd).await?;
    h.running("drain1").await?;
    let starts = || std::fs::read_to_string(&marker).unwrap_or_default().lines().count();
    let deadline = tokio::time::Instant::now() + ATTEMPT;
    while starts() < 1 {
        ensure!(tokio::time::Instant::now() < deadline, "the task never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Stopping kills the attempt after the drain timeout, publishes no result and naks the run.
    let config = h.config.clone();
    h.token.cancel();
    let running = h.running.take().unwrap();
    tokio::time::timeout(Duration::from_secs(10), running.task).await.context("shutdown timed out")???;
    let none = h.event(Duration::from_secs(1), |e| exec_name(e) == "drain1" && e.phase != Phase::Running as i32).await;
    assert!(none.is_err(), "no terminal event after an interrupted attempt");

    // The next executor of the queue runs it again.
    let token = CancellationToken::new();
    let next = aloft_executor::start(config, token.clone()).await?;
    let deadline = tokio::time::Instant::now() + ATTEMPT;
    while starts() < 2 {
        ensure!(tokio::time::Instant::now() < deadline, "the interrupted run was not run again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    h.abort("drain1", "done testing").await?;
    let done = h.terminal("drain1").await?;
    assert_eq!(done.phase, Phase::Aborted as i32, "{}", summary(&done));
    token.cancel();
    tokio::time::timeout(Duration::from_secs(10), next.task).await.context("shutdown timed out")???;
    Ok(())
}

/// The warm runtime is an optimisation nobody may notice: a task forked by it sees what a task
/// started as a fresh `pyflyte-execute` sees (environment, paths, flytekit's settings read from the
/// environment such as its S3 endpoint, logging, signals, stdio), and nothing a previous attempt
/// left behind.
#[tokio::test]
async fn warm_attempts_look_like_cold_ones_and_share_nothing() -> Result<()> {
    let mut h = Harness::start(Store::S3, |_| {}).await?;
    let warm1 = h.fingerprint("fpw1", &[]).await?;
    let warm2 = h.fingerprint("fpw2", &[]).await?;
    // The per-task override.
    let cold = h.fingerprint("fpc1", &[("ALOFT_PYTHON_RUNTIME", "cold")]).await?;
    assert_eq!(warm1["parent"], "forkserver");
    assert_eq!(warm2["parent"], "forkserver");
    assert_eq!(cold["parent"], "executor");
    assert_eq!(warm2["state"], serde_json::json!([1]), "module state of the first attempt leaked into the second");
    assert_ne!(warm1["random"], warm2["random"], "forked children must not share a random state");
    assert_eq!(warm1["default_s3_endpoint"], serde_json::json!(h.config.storage.endpoint));
    let same = |v: &serde_json::Value| {
        let mut v = v.clone();
        let o = v.as_object_mut().unwrap();
        for k in ["parent", "random"] {
            o.remove(k);
        }
        v
    };
    let (warm, cold) = (same(&warm2), same(&cold));
    for (key, value) in cold.as_object().unwrap() {
        assert_eq!(&warm[key], value, "`{key}` differs between the warm and the cold runtime");
    }
    assert_eq!(warm, cold);
    h.stop().await?;

    // The executor's default.
    let mut h = Harness::start(Store::Local, |c| c.python_runtime = aloft_executor::config::Runtime::Cold).await?;
    assert_eq!(h.fingerprint("fpc2", &[]).await?["parent"], "executor");
    assert_eq!(h.fingerprint("fpw3", &[("ALOFT_PYTHON_RUNTIME", "warm")]).await?["parent"], "forkserver");
    h.stop().await
}

/// If the fork server dies under a running task, the task's group is killed and the attempt is a
/// retryable system failure; the next Python task starts a new server.
#[tokio::test]
async fn losing_the_warm_runtime_fails_the_attempt_and_the_next_one_restarts_it() -> Result<()> {
    let mut h = Harness::start(Store::Local, |_| {}).await?;
    let cmd = h.command("lost1", 0, python_task("sleepy", SimpleType::Integer), &inputs(&[("a", int(1))])).await?;
    h.publish(&cmd).await?;
    let child = h.child_pid("lost1").await?;
    let (server, who) = h.parent_of("lost1").await?;
    assert_eq!(who, "forkserver");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(server), nix::sys::signal::Signal::SIGKILL)?;
    let done = h.terminal("lost1").await?;
    assert_eq!(done.phase, Phase::RetryableFailed as i32, "{}", summary(&done));
    let err = error_of(&done);
    assert_eq!(err.code, "ProcessFailed");
    assert!(err.message.contains("warm Python runtime stopped"), "{}", err.message);
    assert!(dies(child).await, "the task's child survived its lost attempt");
    assert_eq!(h.fingerprint("lost2", &[]).await?["parent"], "forkserver");
    h.stop().await
}
