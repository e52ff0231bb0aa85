//! Launch-plan schedules against a real metadata service (SQLite, local store) and the real
//! nats-server of `scripts/dev-deps.sh`, with a clock the test moves by hand.
//!
//! The launch plan's workflow has a required datetime input `kickoff` and no default for it, so
//! an execution only exists if the scheduler passed the scheduled time; `x` has a default the
//! launch plan supplies. Each test has its own database, store and bus prefix (so its own
//! progress bucket), so tests run in parallel.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use aloft_bus::{Bus, BusConfig};
use aloft_proto::flyteidl::admin::{
    self, CronSchedule, FixedRate, FixedRateUnit, LaunchPlanMetadata, LaunchPlanState, Schedule,
    execution_metadata::ExecutionMode, schedule::ScheduleExpression,
};
use aloft_proto::flyteidl::core::{
    self, Binding, BindingData, Identifier, LiteralType, Node, NodeMetadata, OutputReference, ResourceType, SimpleType,
    TaskNode, TaskTemplate, TypedInterface, Variable, VariableMap, WorkflowTemplate, binding_data, literal_type, node,
    task_node,
};
use aloft_proto::flyteidl::service::admin_service_client::AdminServiceClient;
use aloft_scheduler::config::SchedulesConfig;
use aloft_scheduler::schedule::{self, CatchUp, ManualClock, fire::execution_name};
use anyhow::{Context as _, Result, bail, ensure};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

const PROJECT: &str = "flights";
const DOMAIN: &str = "production";
const MINUTE: i64 = 60;
/// Bound on waiting for the loops: generous for a loaded machine, short enough to catch a hang.
const BOUND: Duration = Duration::from_secs(20);

/// Metadata with a bus, a client to it, and the bus config replicas connect with.
struct Env {
    admin: AdminServiceClient<Channel>,
    endpoint: String,
    bus: BusConfig,
    shutdown: CancellationToken,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

impl Drop for Env {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Env {
    async fn start() -> Result<Env> {
        let ns = aloft_testkit::unique_name("sched");
        let bus = BusConfig {
            url: aloft_testkit::deps().nats_url.clone(),
            stream_prefix: ns.to_uppercase(),
            subject_prefix: ns,
            ..Default::default()
        };
        let (db, store) = (tempfile::tempdir()?, tempfile::tempdir()?);
        let mut config = aloft_metadata::Config::default();
        config.grpc.listen = "127.0.0.1:0".into();
        config.http.listen = "127.0.0.1:0".into();
        config.database_url = format!("sqlite://{}/metadata.db", db.path().display());
        config.storage = aloft_blob::BlobConfig::local(store.path().display().to_string());
        config.projects.auto_create = true;
        config.bus = Some(bus.clone());
        let shutdown = CancellationToken::new();
        let running = aloft_metadata::start(config, shutdown.clone()).await.context("starting metadata")?;
        let endpoint = running.grpc_addr.to_string();
        let channel = Channel::from_shared(format!("http://{endpoint}"))?.connect().await?;
        Ok(Env { admin: AdminServiceClient::new(channel), endpoint, bus, shutdown, _dirs: (db, store) })
    }

    fn schedules(&self, catch_up: CatchUp, max_catch_up: u32) -> SchedulesConfig {
        SchedulesConfig {
            enabled: true,
            poll_interval: Duration::from_millis(50),
            catch_up,
            max_catch_up,
            missed_after: Duration::from_secs(120),
        }
    }

    /// A replica's schedule runner: its own NATS connection, the shared clock.
    async fn runner(&self, config: &SchedulesConfig, clock: &ManualClock) -> Result<schedule::Runner> {
        let bus = Bus::connect(self.bus.clone()).await?;
        let admin = aloft_scheduler::admin_client(&self.endpoint)?;
        Ok(schedule::connect(config, &bus, admin, Arc::new(clock.clone())).await?)
    }

    /// Registers `report(x: int, kickoff: datetime)`, a workflow around it and launch plan
    /// `name`/`version` with `schedule`, activates it and returns its id and activation time.
    async fn scheduled_launch_plan(
        &mut self,
        name: &str,
        version: &str,
        schedule: Schedule,
    ) -> Result<(Identifier, i64)> {
        let inputs = [("x", SimpleType::Integer), ("kickoff", SimpleType::Datetime)];
        let task = id(ResourceType::Task, "ticks.report", version);
        let interface =
            TypedInterface { inputs: Some(vars(&inputs)), outputs: Some(vars(&[("o0", SimpleType::Integer)])) };
        let template = TaskTemplate {
            id: Some(task.clone()),
            r#type: "python-task".into(),
            interface: Some(interface.clone()),
            metadata: Some(core::TaskMetadata::default()),
            target: Some(core::task_template::Target::Container(core::Container {
                image: "ghcr.io/example/img:1".into(),
                args: vec!["pyflyte-execute".into()],
                ..Default::default()
            })),
            ..Default::default()
        };
        let created = self
            .admin
            .create_task(admin::TaskCreateRequest {
                id: Some(task.clone()),
                spec: Some(admin::TaskSpec { template: Some(template), description: None }),
            })
            .await;
        // Several launch plans of one test share the task and workflow.
        ensure!(created.is_ok() || created.as_ref().is_err_and(|s| s.code() == tonic::Code::AlreadyExists));
        let wf = id(ResourceType::Workflow, "ticks.wf", version);
        let node = Node {
            id: "n0".into(),
            metadata: Some(NodeMetadata { name: "report".into(), ..Default::default() }),
            inputs: inputs.iter().map(|(v, _)| bind(v)).collect(),
            target: Some(node::Target::TaskNode(TaskNode {
                reference: Some(task_node::Reference::ReferenceId(task.clone())),
                overrides: None,
            })),
            ..Default::default()
        };
        let output = Binding {
            var: "o0".into(),
            binding: Some(BindingData {
                value: Some(binding_data::Value::Promise(OutputReference {
                    node_id: "n0".into(),
                    var: "o0".into(),
                    attr_path: vec![],
                })),
                union: None,
            }),
        };
        let workflow = WorkflowTemplate {
            id: Some(wf.clone()),
            interface: Some(interface),
            nodes: vec![node],
            outputs: vec![output],
            ..Default::default()
        };
        let created = self
            .admin
            .create_workflow(admin::WorkflowCreateRequest {
                id: Some(wf.clone()),
                spec: Some(admin::WorkflowSpec { template: Some(workflow), sub_workflows: vec![], description: None }),
            })
            .await;
        ensure!(created.is_ok() || created.as_ref().is_err_and(|s| s.code() == tonic::Code::AlreadyExists));

        let lp = id(ResourceType::LaunchPlan, name, version);
        let mut defaults = core::ParameterMap::default();
        defaults.parameters.insert(
            "x".into(),
            core::Parameter {
                var: Some(Variable { r#type: Some(simple(SimpleType::Integer)), ..Default::default() }),
                behavior: Some(core::parameter::Behavior::Default(int_literal(3))),
            },
        );
        let spec = admin::LaunchPlanSpec {
            workflow_id: Some(wf),
            entity_metadata: Some(LaunchPlanMetadata { schedule: Some(schedule), ..Default::default() }),
            default_inputs: Some(defaults),
            ..Default::default()
        };
        self.admin
            .create_launch_plan(admin::LaunchPlanCreateRequest { id: Some(lp.clone()), spec: Some(spec) })
            .await?;
        let activated = self.set_active(&lp, true).await?;
        Ok((lp, activated))
    }

    /// Activates or deactivates; returns the launch plan's `updated_at` (the activation time).
    async fn set_active(&mut self, lp: &Identifier, active: bool) -> Result<i64> {
        let state = if active { LaunchPlanState::Active } else { LaunchPlanState::Inactive };
        self.admin
            .update_launch_plan(admin::LaunchPlanUpdateRequest { id: Some(lp.clone()), state: state as i32 })
            .await?;
        let got = self.admin.get_launch_plan(admin::ObjectGetRequest { id: Some(lp.clone()) }).await?.into_inner();
        let closure = got.closure.context("launch plan without closure")?;
        ensure!(closure.state == state as i32, "launch plan state is {}", closure.state);
        Ok(closure.updated_at.context("launch plan without updated_at")?.seconds)
    }

    /// Every execution of the project and domain.
    async fn executions(&mut self) -> Result<Vec<admin::Execution>> {
        let mut all = Vec::new();
        let mut token = String::new();
        loop {
            let page = self
                .admin
                .list_executions(admin::ResourceListRequest {
                    id: Some(admin::NamedEntityIdentifier {
                        project: PROJECT.into(),
                        domain: DOMAIN.into(),
                        ..Default::default()
                    }),
                    limit: 100,
                    token,
                    ..Default::default()
                })
                .await?
                .into_inner();
            all.extend(page.executions);
            if page.token.is_empty() {
                return Ok(all);
            }
            token = page.token;
        }
    }

    async fn names(&mut self) -> Result<BTreeSet<String>> {
        Ok(self.executions().await?.into_iter().filter_map(|e| e.id.map(|id| id.name)).collect())
    }

    /// Waits until exactly `count` executions exist (never more, at any poll).
    async fn await_count(&mut self, count: usize) -> Result<()> {
        let deadline = tokio::time::Instant::now() + BOUND;
        loop {
            let n = self.executions().await?.len();
            ensure!(n <= count, "{n} executions, expected at most {count}");
            if n == count {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("{n} executions after {BOUND:?}, expected {count}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Checks one scheduled execution: its name, mode, scheduled time and inputs.
    async fn check_execution(&mut self, lp: &Identifier, scheduled: i64) -> Result<()> {
        let exec_id = core::WorkflowExecutionIdentifier {
            project: PROJECT.into(),
            domain: DOMAIN.into(),
            name: execution_name(lp, scheduled),
            org: String::new(),
        };
        let exec = self
            .admin
            .get_execution(admin::WorkflowExecutionGetRequest { id: Some(exec_id.clone()) })
            .await
            .with_context(|| format!("execution for {scheduled}"))?
            .into_inner();
        let spec = exec.spec.context("execution without spec")?;
        ensure!(spec.launch_plan.as_ref() == Some(lp), "launch plan {:?}", spec.launch_plan);
        let meta = spec.metadata.context("execution without metadata")?;
        ensure!(meta.mode == ExecutionMode::Scheduled as i32, "mode {}", meta.mode);
        ensure!(meta.scheduled_at.map(|t| (t.seconds, t.nanos)) == Some((scheduled, 0)), "{:?}", meta.scheduled_at);
        let data = self
            .admin
            .get_execution_data(admin::WorkflowExecutionGetDataRequest { id: Some(exec_id) })
            .await?
            .into_inner();
        let inputs = data.full_inputs.context("no inputs")?.literals;
        ensure!(inputs.get("x") == Some(&int_literal(3)), "x = {:?}", inputs.get("x"));
        let kickoff = datetime_of(inputs.get("kickoff").context("no kickoff input")?);
        ensure!(kickoff == Some((scheduled, 0)), "kickoff = {kickoff:?}, scheduled {scheduled}");
        Ok(())
    }
}

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

/// Binds a node input to the workflow input of the same name.
fn bind(var: &str) -> Binding {
    Binding {
        var: var.into(),
        binding: Some(BindingData {
            value: Some(binding_data::Value::Promise(OutputReference {
                node_id: String::new(),
                var: var.into(),
                attr_path: vec![],
            })),
            union: None,
        }),
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

fn datetime_of(l: &core::Literal) -> Option<(i64, i32)> {
    let Some(core::literal::Value::Scalar(s)) = &l.value else { return None };
    let Some(core::scalar::Value::Primitive(p)) = &s.value else { return None };
    let Some(core::primitive::Value::Datetime(t)) = &p.value else { return None };
    Some((t.seconds, t.nanos))
}

fn every_minute() -> Schedule {
    Schedule {
        kickoff_time_input_arg: "kickoff".into(),
        schedule_expression: Some(ScheduleExpression::Rate(FixedRate { value: 1, unit: FixedRateUnit::Minute as i32 })),
    }
}

fn cron(expr: &str, offset: &str) -> Schedule {
    Schedule {
        kickoff_time_input_arg: "kickoff".into(),
        schedule_expression: Some(ScheduleExpression::CronSchedule(CronSchedule {
            schedule: expr.into(),
            offset: offset.into(),
        })),
    }
}

/// A replica's loop running in the background.
struct Replica {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

async fn spawn(env: &Env, config: &SchedulesConfig, clock: &ManualClock) -> Result<Replica> {
    let stop = CancellationToken::new();
    let runner = env.runner(config, clock).await?;
    let task = tokio::spawn(runner.run(stop.clone()));
    Ok(Replica { stop, task })
}

impl Replica {
    /// A clean stop: cancel and wait.
    async fn stop(self) -> Result<()> {
        self.stop.cancel();
        Ok(tokio::time::timeout(BOUND, self.task).await.context("replica did not stop")??)
    }

    /// A crash: the task is dropped wherever it is, possibly between creating an execution and
    /// recording the progress.
    async fn crash(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// The "done when" of schedules: two replicas, a fixed rate of one minute, the clock moved ten
/// minutes one at a time, one replica crashing and another stopping and restarting on the way,
/// and a stretch with both down. Exactly one execution per scheduled time, none missing.
#[tokio::test]
async fn two_replicas_with_restarts_fire_each_time_exactly_once() -> Result<()> {
    let mut env = Env::start().await?;
    let (lp, activated) = env.scheduled_launch_plan("ticks.every_minute", "v1", every_minute()).await?;
    let clock = ManualClock::at(activated);
    let config = env.schedules(CatchUp::All, 100);
    let mut a = spawn(&env, &config, &clock).await?;
    let mut b = spawn(&env, &config, &clock).await?;

    // Nothing is due at the activation itself.
    tokio::time::sleep(Duration::from_millis(200)).await;
    env.await_count(0).await?;

    for minute in 1..=10usize {
        match minute {
            // A crashes while the third minute may be in flight, and comes back.
            3 => {
                clock.advance(MINUTE);
                a.crash().await;
                a = spawn(&env, &config, &clock).await?;
                env.await_count(minute).await?;
                continue;
            }
            // B stops cleanly and restarts.
            6 => {
                b.stop().await?;
                b = spawn(&env, &config, &clock).await?;
            }
            // Both down for two minutes (within missed_after: nothing counts as missed).
            8 => {
                a.stop().await?;
                b.crash().await;
                clock.advance(2 * MINUTE);
                tokio::time::sleep(Duration::from_millis(100)).await;
                env.await_count(minute - 1).await?;
                a = spawn(&env, &config, &clock).await?;
                b = spawn(&env, &config, &clock).await?;
                env.await_count(minute + 1).await?;
                continue;
            }
            9 => continue, // fired together with 8
            _ => {}
        }
        clock.advance(MINUTE);
        env.await_count(minute).await?;
    }
    // Let both replicas run a few more passes at the same time: still ten.
    tokio::time::sleep(Duration::from_millis(300)).await;
    env.await_count(10).await?;

    let expected: BTreeSet<String> = (1..=10).map(|k| execution_name(&lp, activated + k * MINUTE)).collect();
    assert_eq!(env.names().await?, expected);
    for k in 1..=10 {
        env.check_execution(&lp, activated + k * MINUTE).await?;
    }

    // Deactivation stops the firing, on both replicas.
    env.set_active(&lp, false).await?;
    clock.advance(5 * MINUTE);
    tokio::time::sleep(Duration::from_millis(300)).await;
    env.await_count(10).await?;
    a.stop().await?;
    b.stop().await?;
    Ok(())
}

/// Two replicas' passes at the same instant race on CreateExecution; exactly one creates.
#[tokio::test]
async fn concurrent_passes_create_once() -> Result<()> {
    let mut env = Env::start().await?;
    let (lp, activated) = env.scheduled_launch_plan("ticks.race", "v1", every_minute()).await?;
    let clock = ManualClock::at(activated);
    let config = env.schedules(CatchUp::All, 100);
    let (r1, r2) = (env.runner(&config, &clock).await?, env.runner(&config, &clock).await?);
    for round in 1..=5 {
        clock.advance(MINUTE);
        let (p1, p2) = tokio::join!(r1.pass(), r2.pass());
        let (p1, p2) = (p1?, p2?);
        assert_eq!((p1.schedules, p2.schedules), (1, 1));
        assert_eq!(p1.created + p2.created, 1, "round {round}: {p1:?} {p2:?}");
        assert_eq!(p1.failed + p2.failed, 0);
        env.await_count(round).await?;
    }
    // A pass with nothing due creates nothing.
    assert_eq!(r1.pass().await?.created, 0);
    env.check_execution(&lp, activated + 5 * MINUTE).await?;
    Ok(())
}

/// One cron launch plan, down for nine and a half minutes, fired under `catch_up`: returns the
/// scheduled times that got executions, as minutes after the first due time.
async fn catch_up_case(catch_up: CatchUp, max_catch_up: u32) -> Result<Vec<i64>> {
    let mut env = Env::start().await?;
    let (lp, activated) = env.scheduled_launch_plan("ticks.cron", "v1", cron("* * * * *", "")).await?;
    let first = (activated / MINUTE + 1) * MINUTE;
    // Due: first + 0..=9 minutes; missed_after is two minutes, so +8 and +9 are on time.
    let clock = ManualClock::at(first + 9 * MINUTE + 30);
    let runner = env.runner(&env.schedules(catch_up, max_catch_up), &clock).await?;
    let pass = runner.pass().await?;
    ensure!(pass.failed == 0, "{pass:?}");
    ensure!(pass.created as u64 + pass.skipped == 10, "{pass:?}");
    // Progress covers the skipped times: a second pass fires nothing more.
    ensure!(runner.pass().await?.created == 0, "second pass fired again");
    let mut fired = Vec::new();
    for m in 0..10 {
        if env.names().await?.contains(&execution_name(&lp, first + m * MINUTE)) {
            env.check_execution(&lp, first + m * MINUTE).await?;
            fired.push(m);
        }
    }
    ensure!(env.executions().await?.len() == fired.len(), "executions at times that are not on the schedule");
    Ok(fired)
}

#[tokio::test]
async fn catch_up_all_is_bounded() -> Result<()> {
    // +0..=+7 are missed: the three most recent of them, then the two on time.
    assert_eq!(catch_up_case(CatchUp::All, 3).await?, vec![5, 6, 7, 8, 9]);
    Ok(())
}

#[tokio::test]
async fn catch_up_latest_fires_only_the_newest() -> Result<()> {
    assert_eq!(catch_up_case(CatchUp::Latest, 3).await?, vec![9]);
    Ok(())
}

#[tokio::test]
async fn catch_up_none_fires_only_on_time() -> Result<()> {
    assert_eq!(catch_up_case(CatchUp::None, 3).await?, vec![8, 9]);
    Ok(())
}

/// A cron schedule with an offset, and a new version taking over: activating v2 deactivates v1,
/// which stops firing, while v2 fires from its own activation.
#[tokio::test]
async fn cron_offset_and_version_switch() -> Result<()> {
    let mut env = Env::start().await?;
    // Every five minutes, shifted by 90 seconds.
    let (v1, activated) = env.scheduled_launch_plan("ticks.offset", "v1", cron("*/5 * * * *", "PT1M30S")).await?;
    let first = ((activated - 90) / (5 * MINUTE) + 1) * 5 * MINUTE + 90;
    let clock = ManualClock::at(first);
    let runner = env.runner(&env.schedules(CatchUp::All, 10), &clock).await?;
    assert_eq!(runner.pass().await?.created, 1);
    env.check_execution(&v1, first).await?;
    clock.advance(5 * MINUTE - 1);
    assert_eq!(runner.pass().await?.created, 0, "fired before the time");
    clock.advance(1);
    assert_eq!(runner.pass().await?.created, 1);
    env.check_execution(&v1, first + 5 * MINUTE).await?;

    let (v2, activated2) = env.scheduled_launch_plan("ticks.offset", "v2", every_minute()).await?;
    let got = env.admin.get_launch_plan(admin::ObjectGetRequest { id: Some(v1.clone()) }).await?.into_inner();
    assert_eq!(got.closure.map(|c| c.state), Some(LaunchPlanState::Inactive as i32));
    // The real clock at v2's activation is behind the test clock; v2 catches up from there,
    // within the policy's bound, and v1 never fires again.
    clock.set(activated2.max(clock_now(&clock)) + 5 * MINUTE);
    let pass = runner.pass().await?;
    assert_eq!(pass.schedules, 1);
    let names = env.names().await?;
    assert!(!names.contains(&execution_name(&v1, first + 10 * MINUTE)));
    let v2_times: Vec<i64> =
        (1..=20).map(|k| activated2 + k * MINUTE).filter(|t| names.contains(&execution_name(&v2, *t))).collect();
    assert_eq!(v2_times.len(), pass.created);
    assert!(pass.created >= 5, "{pass:?}");
    env.check_execution(&v2, *v2_times.last().unwrap()).await?;
    Ok(())
}

/// The wiring: `aloft_scheduler::start` with `[schedules] enabled` runs the loop on the system
/// clock (an `@every 1s` schedule, so the test takes seconds), and stops with the service.
#[tokio::test]
async fn start_runs_the_loop_on_the_system_clock() -> Result<()> {
    let mut env = Env::start().await?;
    let (lp, activated) = env.scheduled_launch_plan("ticks.every_second", "v1", cron("@every 1s", "")).await?;
    let config = aloft_scheduler::Config {
        bus: env.bus.clone(),
        health: aloft_scheduler::config::HealthConfig { listen: "127.0.0.1:0".into() },
        storage: aloft_blob::BlobConfig::local(env._dirs.1.path().display().to_string()),
        schedules: SchedulesConfig { poll_interval: Duration::from_millis(100), ..env.schedules(CatchUp::Latest, 0) },
        metadata_endpoint: env.endpoint.clone(),
        ..Default::default()
    };
    let stop = CancellationToken::new();
    let running = aloft_scheduler::start(config, stop.clone()).await?;
    let deadline = tokio::time::Instant::now() + BOUND;
    while env.executions().await?.len() < 3 {
        ensure!(tokio::time::Instant::now() < deadline, "fewer than 3 executions after {BOUND:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    tokio::time::timeout(BOUND, running.task).await.context("scheduler did not stop")???;
    // Every execution is one of the schedule's seconds, each checked in full.
    let names = env.names().await?;
    let now = clock_now(&schedule::SystemClock);
    let times: Vec<i64> = (activated + 1..=now).filter(|t| names.contains(&execution_name(&lp, *t))).collect();
    assert_eq!(times.len(), names.len(), "executions not named by their scheduled second");
    for t in times {
        env.check_execution(&lp, t).await?;
    }
    Ok(())
}

fn clock_now(clock: &dyn aloft_scheduler::schedule::Clock) -> i64 {
    clock.now()
}
