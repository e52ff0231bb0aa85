//! The scheduler driving real executions over the real bus: a stand-in executor (this test) pulls
//! task runs, computes `o0 = x + 1`, writes outputs.pb and reports task events, exactly as the
//! executor would; the test checks events, node inputs and workflow outputs.

use std::time::Duration;

use aloft_blob::BlobStore;
use aloft_bus::{Bus, BusConfig, EventKind, StreamKind};
use aloft_proto::aloft::v1::{Envelope, ExecuteCommand, envelope::Body};
use aloft_proto::flyteidl::admin::{ExecutionSpec, WorkflowSpec};
use aloft_proto::flyteidl::core::{
    self, Binding, BindingData, Identifier, Literal, LiteralMap, LiteralType, Node, NodeMetadata, OutputReference,
    ResourceType, SimpleType, TaskNode, TaskTemplate, TypedInterface, Variable, VariableMap,
    WorkflowExecutionIdentifier, WorkflowTemplate, binding_data, literal_type, node,
    task_execution::Phase as TaskPhase, task_node, workflow_execution::Phase as WfPhase,
};
use aloft_proto::flyteidl::event::{TaskExecutionEvent, task_execution_event};
use aloft_scheduler::Config;
use aloft_scheduler::config::HealthConfig;
use anyhow::{Context as _, Result, bail};
use prost::Message;
use tokio_util::sync::CancellationToken;

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

fn as_int(l: &Literal) -> i64 {
    match &l.value {
        Some(core::literal::Value::Scalar(s)) => match &s.value {
            Some(core::scalar::Value::Primitive(core::Primitive {
                value: Some(core::primitive::Value::Integer(v)),
            })) => *v,
            _ => panic!("not an int"),
        },
        _ => panic!("not a scalar"),
    }
}

fn vars(names: &[&str]) -> VariableMap {
    VariableMap {
        variables: names
            .iter()
            .map(|n| {
                (
                    n.to_string(),
                    Variable {
                        r#type: Some(LiteralType {
                            r#type: Some(literal_type::Type::Simple(SimpleType::Integer as i32)),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                )
            })
            .collect(),
    }
}

fn id(kind: ResourceType, name: &str) -> Identifier {
    Identifier {
        resource_type: kind as i32,
        project: "p".into(),
        domain: "development".into(),
        name: name.into(),
        version: "v1".into(),
        org: String::new(),
    }
}

fn promise(node: &str, var: &str) -> Option<BindingData> {
    Some(BindingData {
        value: Some(binding_data::Value::Promise(OutputReference {
            node_id: node.into(),
            var: var.into(),
            attr_path: vec![],
        })),
        union: None,
    })
}

/// `wf(x) -> o0`: a = inc(x), b = inc(x), c = add(a, b) (fan-out, fan-in), flaky node f = inc(c).
fn closure() -> core::CompiledWorkflowClosure {
    let task = |name: &str, inputs: &[&str], retries: u32| TaskTemplate {
        id: Some(id(ResourceType::Task, name)),
        r#type: "python-task".into(),
        interface: Some(TypedInterface { inputs: Some(vars(inputs)), outputs: Some(vars(&["o0"])) }),
        metadata: Some(core::TaskMetadata { retries: Some(core::RetryStrategy { retries }), ..Default::default() }),
        ..Default::default()
    };
    let tasks = vec![task("inc", &["x"], 0), task("add", &["x", "y"], 0), task("flaky", &["x"], 1)];
    let node = |nid: &str, t: &str, inputs: Vec<Binding>| Node {
        id: nid.into(),
        metadata: Some(NodeMetadata { name: t.into(), ..Default::default() }),
        inputs,
        target: Some(node::Target::TaskNode(TaskNode {
            reference: Some(task_node::Reference::ReferenceId(id(ResourceType::Task, t))),
            overrides: None,
        })),
        ..Default::default()
    };
    let spec = WorkflowSpec {
        template: Some(WorkflowTemplate {
            id: Some(id(ResourceType::Workflow, "wf")),
            interface: Some(TypedInterface { inputs: Some(vars(&["x"])), outputs: Some(vars(&["o0"])) }),
            nodes: vec![
                node("a", "inc", vec![Binding { var: "x".into(), binding: promise("", "x") }]),
                node("b", "inc", vec![Binding { var: "x".into(), binding: promise("", "x") }]),
                node(
                    "c",
                    "add",
                    vec![
                        Binding { var: "x".into(), binding: promise("a", "o0") },
                        Binding { var: "y".into(), binding: promise("b", "o0") },
                    ],
                ),
                node("f", "flaky", vec![Binding { var: "x".into(), binding: promise("c", "o0") }]),
            ],
            outputs: vec![Binding { var: "o0".into(), binding: promise("f", "o0") }],
            ..Default::default()
        }),
        ..Default::default()
    };
    struct R(Vec<TaskTemplate>);
    impl aloft_compiler::Resolver for R {
        fn task(&self, id: &Identifier) -> Option<TaskTemplate> {
            self.0.iter().find(|t| t.id.as_ref() == Some(id)).cloned()
        }
        fn launch_plan_interface(&self, _: &Identifier) -> Option<TypedInterface> {
            None
        }
    }
    aloft_compiler::compile_workflow(&spec, &R(tasks)).expect("compiles")
}

struct Env {
    config: Config,
    bus: Bus,
    blob: BlobStore,
    _dir: tempfile::TempDir,
}

async fn env() -> Result<Env> {
    let ns = aloft_testkit::unique_name("sched");
    let dir = tempfile::tempdir()?;
    let config = Config {
        bus: BusConfig {
            url: aloft_testkit::deps().nats_url.clone(),
            stream_prefix: ns.to_uppercase(),
            subject_prefix: ns,
            ack_wait: Duration::from_secs(5),
            ..Default::default()
        },
        health: HealthConfig { listen: "127.0.0.1:0".into() },
        storage: aloft_blob::BlobConfig::local(dir.path().display().to_string()),
        ..Default::default()
    };
    let bus = Bus::connect(config.bus.clone()).await?;
    bus.ensure().await?;
    let blob = BlobStore::from_config(&config.storage).await?;
    Ok(Env { config, bus, blob, _dir: dir })
}

async fn submit(env: &Env, name: &str, x: i64) -> Result<WorkflowExecutionIdentifier> {
    submit_closure(env, name, x, closure()).await
}

async fn submit_closure(
    env: &Env,
    name: &str,
    x: i64,
    closure: core::CompiledWorkflowClosure,
) -> Result<WorkflowExecutionIdentifier> {
    let exec = WorkflowExecutionIdentifier {
        project: "p".into(),
        domain: "development".into(),
        name: name.into(),
        org: String::new(),
    };
    let prefix = env.blob.join(env.blob.root(), &format!("metadata/p/development/{name}"));
    env.blob.put(&format!("{prefix}/closure.pb"), closure.encode_to_vec()).await?;
    env.blob
        .put(
            &format!("{prefix}/inputs.pb"),
            LiteralMap { literals: [("x".to_string(), int(x))].into() }.encode_to_vec(),
        )
        .await?;
    let cmd = ExecuteCommand {
        execution_id: Some(exec.clone()),
        workflow_id: Some(id(ResourceType::Workflow, "wf")),
        launch_plan_id: Some(id(ResourceType::LaunchPlan, "wf")),
        closure_uri: format!("{prefix}/closure.pb"),
        inputs_uri: format!("{prefix}/inputs.pb"),
        metadata_prefix: prefix.clone(),
        raw_output_prefix: env.blob.join(env.blob.root(), &format!("raw/p/development/{name}")),
        spec: Some(ExecutionSpec { max_parallelism: 1, ..Default::default() }),
    };
    env.bus
        .publish(&Envelope {
            id: format!("exec/p/development/{name}"),
            source: "test".into(),
            body: Some(Body::Execute(cmd)),
            ..Default::default()
        })
        .await?;
    Ok(exec)
}

/// Plays the executor: runs every task run it gets. `flaky` fails its first attempt recoverably.
async fn stand_in_executor(env: &Env, stop: CancellationToken) -> Result<tokio::task::JoinHandle<Result<u32>>> {
    let subject = env.bus.topology().task_run_subject("default")?;
    let consumer = env.bus.consumer("test-executor", &[subject], StreamKind::Tasks).await?;
    let (bus, blob) = (env.bus.clone(), env.blob.clone());
    Ok(tokio::spawn(async move {
        let mut runs = 0;
        while !stop.is_cancelled() {
            for d in consumer.fetch(8, Duration::from_millis(300)).await? {
                let Some(Body::TaskRun(run)) = d.envelope().body.clone() else { continue };
                runs += 1;
                let tid = run.id.clone().unwrap();
                let inputs = LiteralMap::decode(blob.get(&run.inputs_uri).await?.as_ref())?;
                let sum: i64 = inputs.literals.values().map(as_int).sum();
                let task = tid.task_id.clone().unwrap().name;
                let mut ev = TaskExecutionEvent {
                    task_id: tid.task_id.clone(),
                    parent_node_execution_id: tid.node_execution_id.clone(),
                    retry_attempt: tid.retry_attempt,
                    producer_id: "test".into(),
                    ..Default::default()
                };
                if task == "flaky" && tid.retry_attempt == 0 {
                    ev.phase = TaskPhase::RetryableFailed as i32;
                    ev.output_result = Some(task_execution_event::OutputResult::Error(core::ExecutionError {
                        code: "USER:Flaky".into(),
                        message: "try again".into(),
                        kind: core::execution_error::ErrorKind::User as i32,
                        ..Default::default()
                    }));
                } else {
                    let out = format!("{}/outputs.pb", run.output_prefix);
                    blob.put(&out, LiteralMap { literals: [("o0".to_string(), int(sum + 1))].into() }.encode_to_vec())
                        .await?;
                    ev.phase = TaskPhase::Succeeded as i32;
                    ev.output_result = Some(task_execution_event::OutputResult::OutputUri(out));
                }
                let n = tid.node_execution_id.unwrap();
                let e = n.execution_id.unwrap();
                bus.publish(&Envelope {
                    id: format!(
                        "task/{}/{}/{}/{}/{}/{}",
                        e.project, e.domain, e.name, n.node_id, tid.retry_attempt, ev.phase
                    ),
                    source: "test".into(),
                    body: Some(Body::TaskEvent(ev)),
                    ..Default::default()
                })
                .await?;
                d.ack().await?;
            }
        }
        Ok(runs)
    }))
}

/// Waits for the terminal workflow event of `exec`.
async fn wait_for_end(env: &Env, exec: &WorkflowExecutionIdentifier, consumer_name: &str) -> Result<i32> {
    let filter = env.bus.topology().events_filter(Some(EventKind::Workflow), None, None);
    let consumer = env.bus.consumer(consumer_name, &[filter], StreamKind::Events).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while tokio::time::Instant::now() < deadline {
        for d in consumer.fetch(16, Duration::from_millis(500)).await? {
            if let Some(Body::WorkflowEvent(ev)) = &d.envelope().body
                && ev.execution_id.as_ref() == Some(exec)
                && matches!(WfPhase::try_from(ev.phase), Ok(WfPhase::Succeeded | WfPhase::Failed | WfPhase::Aborted))
            {
                return Ok(ev.phase);
            }
            d.ack().await?;
        }
    }
    bail!("execution {} did not finish", exec.name)
}

#[tokio::test]
async fn fan_out_fan_in_with_a_retry() -> Result<()> {
    let env = env().await?;
    let token = CancellationToken::new();
    let running = aloft_scheduler::start(env.config.clone(), token.clone()).await?;
    let exec_stop = CancellationToken::new();
    let executor = stand_in_executor(&env, exec_stop.clone()).await?;
    let exec = submit(&env, "run1", 1).await?;
    let phase = wait_for_end(&env, &exec, "watch1").await?;
    assert_eq!(phase, WfPhase::Succeeded as i32);
    // a = b = 2, c = 2 + 2 + 1 = 5, f = 6 (after one failed attempt)
    let outputs = LiteralMap::decode(
        env.blob.get(&env.blob.join(env.blob.root(), "metadata/p/development/run1/outputs.pb")).await?.as_ref(),
    )?;
    assert_eq!(as_int(&outputs.literals["o0"]), 6);
    let c_inputs = LiteralMap::decode(
        env.blob.get(&env.blob.join(env.blob.root(), "metadata/p/development/run1/c/data/inputs.pb")).await?.as_ref(),
    )?;
    assert_eq!((as_int(&c_inputs.literals["x"]), as_int(&c_inputs.literals["y"])), (2, 2));
    exec_stop.cancel();
    assert_eq!(executor.await??, 5, "four nodes, one retried");
    token.cancel();
    tokio::time::timeout(Duration::from_secs(10), running.task).await.context("shutdown")???;
    Ok(())
}

#[tokio::test]
async fn a_new_replica_finishes_what_a_stopped_one_started() -> Result<()> {
    let env = env().await?;
    // The first scheduler starts the execution; no executor runs yet, so it stops mid-way.
    let first = CancellationToken::new();
    let running = aloft_scheduler::start(env.config.clone(), first.clone()).await?;
    let exec = submit(&env, "run2", 10).await?;
    tokio::time::sleep(Duration::from_millis(800)).await;
    first.cancel();
    tokio::time::timeout(Duration::from_secs(10), running.task).await.context("shutdown")???;
    // A second replica and the executor arrive: the execution completes from the stored state.
    let second = CancellationToken::new();
    let running = aloft_scheduler::start(env.config.clone(), second.clone()).await?;
    let exec_stop = CancellationToken::new();
    let executor = stand_in_executor(&env, exec_stop.clone()).await?;
    assert_eq!(wait_for_end(&env, &exec, "watch2").await?, WfPhase::Succeeded as i32);
    let outputs = LiteralMap::decode(
        env.blob.get(&env.blob.join(env.blob.root(), "metadata/p/development/run2/outputs.pb")).await?.as_ref(),
    )?;
    assert_eq!(as_int(&outputs.literals["o0"]), 24);
    exec_stop.cancel();
    assert_eq!(executor.await??, 5, "no attempt ran twice");
    second.cancel();
    tokio::time::timeout(Duration::from_secs(10), running.task).await.context("shutdown")???;
    Ok(())
}

#[tokio::test]
async fn a_binding_that_cannot_be_resolved_fails_the_execution() -> Result<()> {
    let env = env().await?;
    let token = CancellationToken::new();
    let running = aloft_scheduler::start(env.config.clone(), token.clone()).await?;
    let exec_stop = CancellationToken::new();
    let executor = stand_in_executor(&env, exec_stop.clone()).await?;
    // c reads `a.o0[5]`, but a's o0 is an integer: only known once a has run.
    let mut bad = closure();
    let nodes = &mut bad.primary.as_mut().unwrap().template.as_mut().unwrap().nodes;
    let c = nodes.iter_mut().find(|n| n.id == "c").unwrap();
    if let Some(binding_data::Value::Promise(p)) = c.inputs[0].binding.as_mut().unwrap().value.as_mut() {
        p.attr_path = vec![core::PromiseAttribute { value: Some(core::promise_attribute::Value::IntValue(5)) }];
    }
    let exec = submit_closure(&env, "run3", 1, bad).await?;
    assert_eq!(wait_for_end(&env, &exec, "watch3").await?, WfPhase::Failed as i32, "it must fail, not hang");
    exec_stop.cancel();
    assert_eq!(executor.await??, 2, "a and b ran; c never started");
    // The stored state agrees with the events: later inputs must not find c still running.
    let kv = env.bus.kv_bucket("executions").await?;
    let entry = kv.get("p.development.run3").await?.context("state stored")?;
    let stored: serde_json::Value = serde_json::from_slice(&entry.value)?;
    assert_eq!(stored["state"]["status"], "Failed", "{stored}");
    assert_eq!(stored["state"]["nodes"]["c"]["status"], "Failed", "{stored}");
    token.cancel();
    tokio::time::timeout(Duration::from_secs(10), running.task).await.context("shutdown")???;
    Ok(())
}
