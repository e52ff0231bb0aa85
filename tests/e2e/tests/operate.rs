//! Operating Aloft: what the services tell the people who run them, end to end with the real
//! `pyflyte run --remote`.
//!
//! - every service's `/metrics` after a succeeding, a failing and a retried run: the execution
//!   and task KPIs with their values, queue lag gauges, deliveries, export lag, gRPC requests;
//! - an SLA shorter than a sleeping task: the breach reaches the team's Slack channel while the
//!   execution still runs, and is counted;
//! - one trace: spans collected by an in-process OTLP receiver, one trace id spanning
//!   `CreateExecution` in metadata, the scheduler, the executor's attempt and metadata's event sink.

mod common;
#[path = "common/http_sink.rs"]
mod http_sink;
#[path = "common/stack.rs"]
mod stack;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use aloft_proto::flyteidl::admin::ExecutionTerminateRequest;
use aloft_proto::flyteidl::core::WorkflowExecutionIdentifier;
use anyhow::{Context, Result, bail, ensure};
use tokio_util::sync::CancellationToken;

use common::Db;
use stack::{DOMAIN, Stack, Store};

// ------------------------------------------------------------------------------------ helpers

/// One sample of a scrape: metric name, labels, value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the Prometheus/OpenMetrics text format (what our encoder writes: no escapes in
/// label values, no timestamps).
fn parse(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let (series, value) = match line.rsplit_once(' ') {
            Some(x) => x,
            None => continue,
        };
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let labels = labels
            .split("\",")
            .filter(|p| !p.is_empty())
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
            .collect();
        if let Ok(value) = value.parse() {
            out.push(Sample { name: name.to_string(), labels, value });
        }
    }
    out
}

/// The sum of `name` over the series whose labels include `with`.
fn sum(samples: &[Sample], name: &str, with: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name && with.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v)))
        .map(|s| s.value)
        .sum()
}

/// Whether a series of `name` with these labels exists.
fn has(samples: &[Sample], name: &str, with: &[(&str, &str)]) -> bool {
    samples.iter().any(|s| s.name == name && with.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v)))
}

async fn scrape(addr: SocketAddr) -> Result<Vec<Sample>> {
    let response = reqwest::get(format!("http://{addr}/metrics")).await.with_context(|| format!("scraping {addr}"))?;
    ensure!(response.status() == 200, "GET /metrics on {addr}: {}", response.status());
    let text = response.text().await?;
    Ok(parse(&text))
}

/// Scrapes `addr` until `check` passes (gauges are refreshed every few seconds), at most 30 s;
/// fails with the last scrape and the check's error.
async fn scrape_until(addr: SocketAddr, what: &str, check: impl Fn(&[Sample]) -> Result<()>) -> Result<Vec<Sample>> {
    let start = Instant::now();
    loop {
        let samples = scrape(addr).await?;
        match check(&samples) {
            Ok(()) => return Ok(samples),
            Err(e) if start.elapsed() > Duration::from_secs(30) => {
                let dump: Vec<String> =
                    samples.iter().map(|s| format!("{} {:?} {}", s.name, s.labels, s.value)).collect();
                bail!("{what} /metrics on {addr}: {e}\n{}", dump.join("\n"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

fn expect(samples: &[Sample], name: &str, with: &[(&str, &str)], want: f64) -> Result<()> {
    let got = sum(samples, name, with);
    ensure!(got == want, "{name}{with:?} = {got}, expected {want}");
    Ok(())
}

/// A notifier on the stack's bus and database, posting `ml-alerts` to `webhook`.
async fn notifier(s: &Stack, webhook: &str, token: &CancellationToken) -> Result<aloft_notifier::Running> {
    let mut config = aloft_notifier::Config { bus: s.bus.clone(), ..Default::default() };
    config.health.listen = "127.0.0.1:0".into();
    config.database_url = s.database_url().to_string();
    config.metadata.endpoint = format!("http://{}", s.metadata.endpoint());
    config.slack.webhooks = Some([("ml-alerts".to_string(), format!("{webhook}/services/T0/B0/ops"))].into());
    aloft_notifier::start(config, token.clone()).await.context("starting aloft-notifier")
}

// -------------------------------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_serves_its_kpis_after_an_end_to_end_run() -> Result<()> {
    let s = Stack::start(Store::Local).await?;
    let (sink, received) = http_sink::http_sink().await?;
    s.register_project(&[("team", "ml-platform"), ("slack-channel", "ml-alerts"), ("notify-development", "all")])
        .await?;
    let token = CancellationToken::new();
    let notifier = notifier(&s, &sink, &token).await?;
    let mut lineage_config = aloft_lineage::Config { bus: s.bus.clone(), ..Default::default() };
    lineage_config.health.listen = "127.0.0.1:0".into();
    lineage_config.database_url = format!("sqlite://{}", s.tmp.path().join("lineage.db").display());
    lineage_config.storage = s.storage.clone();
    lineage_config.metadata.endpoint = format!("http://{}", s.metadata.endpoint());
    lineage_config.export.openlineage.url = format!("{sink}/api/v1/lineage");
    lineage_config.export.poll_interval = Duration::from_millis(100);
    let lineage = aloft_lineage::start(lineage_config, token.clone()).await.context("starting aloft-lineage")?;

    // A success, a user failure, and a task that fails once and succeeds on its retry.
    let scratch = s.scratch_str()?.to_string();
    let retry_args = ["--marker_dir", scratch.as_str()];
    let (ok, bad, retried) = tokio::join!(
        s.run_ok("ok1", "hello.py", "hello", &[]),
        s.pyflyte_run("bad1", true, "notify.py", "scoring", &["--rows", "60"]),
        s.run_ok("retry1", "failures.py", "recovers", &retry_args),
    );
    ok?;
    retried?;
    let bad = bad?;
    ensure!(!bad.status.success(), "the failing run must fail\n{}", bad.dump());
    let p = s.project.as_str();

    // metadata: the KPIs from its event sink, gRPC requests, its consumer's lag.
    let md = scrape_until(s.metadata_metrics(), "metadata", |m| {
        expect(m, "aloft_executions_started_total", &[("project", p), ("domain", DOMAIN)], 3.0)?;
        expect(m, "aloft_executions_finished_total", &[("project", p), ("phase", "SUCCEEDED")], 2.0)?;
        expect(m, "aloft_executions_finished_total", &[("project", p), ("phase", "FAILED")], 1.0)?;
        expect(m, "aloft_executions_failed_total", &[("project", p), ("kind", "user")], 1.0)?;
        expect(m, "aloft_execution_duration_seconds_count", &[("project", p)], 3.0)?;
        expect(m, "aloft_execution_queue_seconds_count", &[("project", p)], 3.0)?;
        expect(m, "aloft_task_retries_total", &[("project", p)], 1.0)?;
        // hello: greet; scoring: prepare, score (fails); recovers: flaky twice
        expect(m, "aloft_task_attempts_total", &[("project", p), ("phase", "SUCCEEDED")], 3.0)?;
        expect(m, "aloft_task_attempts_total", &[("project", p), ("phase", "FAILED")], 1.0)?;
        expect(m, "aloft_task_attempts_total", &[("project", p), ("phase", "RETRYABLE_FAILED")], 1.0)?;
        expect(m, "aloft_task_attempt_duration_seconds_count", &[("project", p)], 5.0)?;
        ensure!(has(m, "aloft_jetstream_consumer_pending_messages", &[("consumer", "metadata-events")]), "lag");
        Ok(())
    })
    .await?;
    // The launch plan label names what was run; `pyflyte run` registers a launch plan per workflow.
    let lps: Vec<&str> = md
        .iter()
        .filter(|x| {
            x.name == "aloft_executions_started_total" && x.labels.get("project").map(String::as_str) == Some(p)
        })
        .map(|x| x.labels["launch_plan"].as_str())
        .collect();
    ensure!(lps.iter().any(|lp| lp.ends_with("hello")), "launch plans {lps:?}");
    let durations = sum(&md, "aloft_execution_duration_seconds_sum", &[("project", p)]);
    ensure!(durations > 0.0 && durations < 600.0, "iteration time sum {durations}");
    let creates = sum(
        &md,
        "aloft_grpc_server_requests_total",
        &[("service", "flyteidl.service.AdminService"), ("method", "CreateExecution"), ("code", "OK")],
    );
    ensure!(creates == 3.0, "CreateExecution OK = {creates}");
    ensure!(
        sum(&md, "aloft_grpc_server_request_duration_seconds_count", &[("method", "GetExecution")]) >= 3.0,
        "flytekit polled GetExecution"
    );
    ensure!(has(&md, "aloft_build_info", &[("service", "metadata")]), "build info");

    // scheduler and executor: their consumers' lag, the executor's slots (all free again).
    scrape_until(s.scheduler_metrics(), "scheduler", |m| {
        expect(m, "aloft_build_info", &[("service", "scheduler")], 1.0)?;
        for consumer in ["scheduler", "scheduler-task-events"] {
            expect(m, "aloft_jetstream_consumer_pending_messages", &[("consumer", consumer)], 0.0)?;
            expect(m, "aloft_jetstream_consumer_ack_pending_messages", &[("consumer", consumer)], 0.0)?;
            ensure!(has(m, "aloft_jetstream_consumer_pending_messages", &[("consumer", consumer)]), "{consumer}");
        }
        Ok(())
    })
    .await?;
    scrape_until(s.executor_metrics(), "executor", |m| {
        expect(m, "aloft_executor_slots", &[], f64::from(aloft_executor::Config::default().slots))?;
        expect(m, "aloft_executor_slots_in_use", &[], 0.0)?;
        ensure!(has(m, "aloft_jetstream_consumer_pending_messages", &[("consumer", "executor-default")]), "lag");
        expect(m, "aloft_jetstream_consumer_ack_pending_messages", &[("consumer", "executor-default")], 0.0)
    })
    .await?;

    // notifier: three deliveries recorded and sent to the channel.
    scrape_until(notifier.metrics_addr, "notifier", |m| {
        expect(m, "aloft_notifier_deliveries_total", &[("state", "pending")], 3.0)?;
        expect(m, "aloft_notifier_delivery_attempts_total", &[("outcome", "delivered")], 3.0)?;
        expect(m, "aloft_notifier_delivery_attempts_total", &[("outcome", "failed")], 0.0)?;
        ensure!(has(m, "aloft_jetstream_consumer_pending_messages", &[("consumer", "notifier")]), "lag");
        Ok(())
    })
    .await?;
    let slack = received.lock().unwrap().iter().filter(|(path, _)| path.starts_with("/services/")).count();
    ensure!(slack == 3, "slack got {slack} messages");

    // lineage: everything exported, nothing waits.
    scrape_until(lineage.metrics_addr, "lineage", |m| {
        ensure!(
            sum(m, "aloft_lineage_exports_total", &[("backend", "openlineage"), ("outcome", "sent")]) > 0.0,
            "sent"
        );
        expect(m, "aloft_lineage_export_pending", &[("backend", "openlineage")], 0.0)?;
        expect(m, "aloft_lineage_export_lag_seconds", &[("backend", "openlineage")], 0.0)
    })
    .await?;

    token.cancel();
    notifier.task.await??;
    lineage.task.await??;
    s.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sla_shorter_than_a_sleeping_task_is_reported_while_it_runs() -> Result<()> {
    let s = Stack::start_configured(Store::Local, Db::Sqlite, |c| {
        c.sla.sweep_interval = Duration::from_millis(500);
    })
    .await?;
    let (webhook, received) = http_sink::http_sink().await?;
    // The project's SLA: 3 s from creation; its channel; notifications of finished runs off.
    s.register_project(&[("slack-channel", "ml-alerts"), ("sla-max-duration", "3s"), ("notify-development", "none")])
        .await?;
    let token = CancellationToken::new();
    let notifier = notifier(&s, &webhook, &token).await?;

    let marker = s.scratch.join("sleeper-started");
    let out = s
        .pyflyte_run(
            "slow1",
            false,
            "failures.py",
            "long_running",
            &["--marker_dir", s.scratch_str()?, "--seconds", "120"],
        )
        .await?;
    ensure!(out.status.success(), "pyflyte run failed\n{}", out.dump());
    stack::wait_for_file(&marker, Duration::from_secs(60)).await?;

    let start = Instant::now();
    let message = loop {
        if let Some((_, body)) = received.lock().unwrap().first().cloned() {
            break body;
        }
        ensure!(start.elapsed() < Duration::from_secs(40), "no breach message within 40 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Still running: the task has not written its end marker, and metadata says RUNNING.
    ensure!(!s.scratch.join("sleeper-finished").exists(), "the task finished already");
    let id = WorkflowExecutionIdentifier {
        project: s.project.clone(),
        domain: DOMAIN.into(),
        name: "slow1".into(),
        org: String::new(),
    };
    let mut admin = s.admin().await?;
    let execution = admin
        .get_execution(aloft_proto::flyteidl::admin::WorkflowExecutionGetRequest { id: Some(id.clone()) })
        .await?
        .into_inner();
    let phase = execution.closure.map(|c| c.phase).unwrap_or_default();
    ensure!(phase == aloft_proto::flyteidl::core::workflow_execution::Phase::Running as i32, "phase {phase}");

    let text = message["text"].as_str().unwrap_or("");
    ensure!(
        text == format!("SLA breached: {}/{DOMAIN}/slow1 is still running (maximum duration 3s)", s.project),
        "message text: {message:#}"
    );
    let summary = message["blocks"][1]["text"]["text"].as_str().unwrap_or("");
    ensure!(summary.contains("(maximum duration 3s, set on the project)"), "{summary}");

    let p = s.project.as_str();
    scrape_until(s.metadata_metrics(), "metadata", |m| {
        expect(m, "aloft_sla_breaches_total", &[("project", p), ("sla", "max_duration")], 1.0)
    })
    .await?;
    scrape_until(notifier.metrics_addr, "notifier", |m| {
        expect(m, "aloft_notifier_delivery_attempts_total", &[("outcome", "delivered")], 1.0)
    })
    .await?;
    // Later sweeps see the breach recorded: still one message.
    tokio::time::sleep(Duration::from_secs(2)).await;
    ensure!(received.lock().unwrap().len() == 1, "one breach message: {:#?}", received.lock().unwrap());

    admin
        .terminate_execution(ExecutionTerminateRequest { id: Some(id), cause: "test over".into() })
        .await
        .context("terminating the sleeping execution")?;
    token.cancel();
    notifier.task.await??;
    s.stop().await
}

// ----------------------------------------------------------------------------------- tracing

mod otlp {
    use std::sync::{Arc, Mutex};

    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
    use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
    use opentelemetry_proto::tonic::common::v1::any_value::Value;

    /// A span as received: trace id (hex), name, string attributes.
    #[derive(Debug, Clone)]
    pub struct Received {
        pub trace_id: String,
        pub name: String,
        pub attributes: Vec<(String, String)>,
    }

    #[derive(Clone, Default)]
    pub struct Receiver {
        pub spans: Arc<Mutex<Vec<Received>>>,
    }

    #[tonic::async_trait]
    impl TraceService for Receiver {
        async fn export(
            &self,
            request: tonic::Request<ExportTraceServiceRequest>,
        ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
            let mut out = self.spans.lock().unwrap();
            for rs in request.into_inner().resource_spans {
                for ss in rs.scope_spans {
                    for span in ss.spans {
                        let attributes = span
                            .attributes
                            .iter()
                            .filter_map(|kv| match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                                Some(Value::StringValue(s)) => Some((kv.key.clone(), s.clone())),
                                _ => None,
                            })
                            .collect();
                        let trace_id = span.trace_id.iter().map(|b| format!("{b:02x}")).collect();
                        out.push(Received { trace_id, name: span.name, attributes });
                    }
                }
            }
            Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
        }
    }

    /// Serves OTLP/gRPC on a free loopback port.
    pub async fn start() -> anyhow::Result<(String, Receiver)> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let receiver = Receiver::default();
        let service = TraceServiceServer::new(receiver.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        Ok((endpoint, receiver))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_spans_every_service_of_an_execution() -> Result<()> {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    // The services' telemetry as `aloft-*` binaries set it up, exporting to this test. Each
    // test runs in its own process (nextest), so the global subscriber is this test's.
    let (endpoint, receiver) = otlp::start().await?;
    aloft_runtime::telemetry::install_propagator();
    let provider = aloft_runtime::telemetry::tracer_provider("aloft-e2e", Some(&endpoint))?;
    tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new("info"))
        .with(aloft_runtime::telemetry::layer(&provider))
        .try_init()
        .context("installing the tracing subscriber")?;

    let s = Stack::start(Store::Local).await?;
    s.run_ok("traced1", "hello.py", "hello", &[]).await?;
    // The sink applies the last events just after pyflyte saw the end.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let flushed = tokio::task::spawn_blocking(move || provider.force_flush()).await?;
    flushed.context("flushing spans")?;

    let spans = receiver.spans.lock().unwrap().clone();
    let attr = |span: &otlp::Received, key: &str| {
        span.attributes.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()).unwrap_or_default()
    };
    let create = spans
        .iter()
        .find(|sp| sp.name == "flyteidl.service.AdminService/CreateExecution")
        .with_context(|| format!("no CreateExecution span among {} spans", spans.len()))?;
    let trace: Vec<&otlp::Received> = spans.iter().filter(|sp| sp.trace_id == create.trace_id).collect();
    let names: Vec<String> = trace.iter().map(|sp| sp.name.clone()).collect();
    eprintln!("trace {}: {names:?}", create.trace_id);
    let consumer = |name: &str| trace.iter().any(|sp| attr(sp, "messaging.consumer.group.name") == name);
    ensure!(consumer("scheduler"), "the scheduler's execute command is in the trace: {names:?}");
    ensure!(consumer("scheduler-task-events"), "the scheduler's task events are in the trace: {names:?}");
    ensure!(names.iter().any(|n| n == "attempt"), "the executor's attempt is in the trace: {names:?}");
    ensure!(consumer("metadata-events"), "metadata's event sink is in the trace: {names:?}");
    // The attempt's span says which task it ran, under the same trace as the request.
    ensure!(
        trace.iter().any(|sp| sp.name == "attempt" && attr(sp, "attempt").contains("traced1")),
        "the attempt of traced1: {trace:#?}"
    );
    s.stop().await
}

/// docker-compose.yml and the Kubernetes overlays point metadata, notifier and lineage at one
/// Postgres database: every service's migrations must run there, in any order and again at each
/// restart. (sqlx keeps metadata's and lineage's versions in the same table.)
#[tokio::test]
async fn services_share_one_postgres_database() -> Result<()> {
    let url = aloft_testkit::fresh_postgres_url("shared").await;
    for round in 0..2 {
        aloft_lineage::adapters::store::Store::connect(&url)
            .await
            .with_context(|| format!("lineage, round {round}"))?;
        aloft_metadata::adapters::store::Store::connect(&url)
            .await
            .with_context(|| format!("metadata, round {round}"))?;
        aloft_notifier::adapters::store::Store::connect(&url)
            .await
            .with_context(|| format!("notifier, round {round}"))?;
    }
    Ok(())
}
