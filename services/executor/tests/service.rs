//! The executor against the real nats-server (`scripts/dev-deps.sh`): it starts, answers the
//! gRPC health check, pulls only its own queue's task runs through the shared durable consumer,
//! and stops when its token is cancelled; an unreachable NATS fails start-up with the URL in the
//! error. Running tasks is covered by `tests/tasks.rs`.
//!
//! Each test uses its own stream and subject prefix from `unique_name`, so tests run in parallel
//! on one server.

use std::time::Duration;

use aloft_bus::{Bus, BusConfig, StreamKind};
use aloft_executor::config::HealthConfig;
use aloft_executor::{Config, HEALTH_SERVICE, consumer_name};
use aloft_proto::aloft::v1::envelope::Body;
use aloft_proto::aloft::v1::{Envelope, TaskRunCommand};
use anyhow::{Context as _, Result, ensure};
use tokio_util::sync::CancellationToken;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Bound on start-up and shutdown: generous for a loaded CI machine, short enough to catch a hang.
const BOUND: Duration = Duration::from_secs(10);

fn config() -> Config {
    let ns = aloft_testkit::unique_name("exec");
    // Outlives every executor started from it; grouped under one directory so runs do not
    // scatter /tmp (these tests never run a task, so the directories stay empty).
    let data = std::env::temp_dir().join("aloft-executor-tests").join(&ns);
    Config {
        bus: BusConfig {
            url: aloft_testkit::deps().nats_url.clone(),
            stream_prefix: ns.to_uppercase(),
            subject_prefix: ns,
            ..Default::default()
        },
        health: HealthConfig { listen: "127.0.0.1:0".into() },
        queue: "gpu".into(),
        slots: 2,
        storage: aloft_blob::BlobConfig::local(data.join("store").to_string_lossy()),
        scratch_dir: data.join("scratch").to_string_lossy().into_owned(),
        ..Default::default()
    }
}

fn envelope(id: &str, body: Body) -> Envelope {
    Envelope { id: id.into(), source: "test".into(), body: Some(body), ..Default::default() }
}

async fn health(addr: std::net::SocketAddr, service: &str) -> Result<ServingStatus> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))?.connect().await?;
    let reply = HealthClient::new(channel).check(HealthCheckRequest { service: service.into() }).await?.into_inner();
    Ok(reply.status())
}

async fn consumer_info(bus: &BusConfig, stream: &str, consumer: &str) -> Result<async_nats::jetstream::consumer::Info> {
    let js = async_nats::jetstream::new(async_nats::connect(&bus.url).await?);
    let stream = js.get_stream(stream).await?;
    Ok(stream.consumer_info(consumer).await?)
}

#[tokio::test]
async fn serves_health_pulls_only_its_queue_and_stops() -> Result<()> {
    let config = config();
    // A run for its queue that cannot be run (no ids) is terminated, not redelivered forever;
    // the run for another queue is not its business and stays in the work queue.
    let publisher = Bus::connect(config.bus.clone()).await?;
    publisher.ensure().await?;
    for (id, queue) in [("run-gpu", "gpu"), ("run-default", "default")] {
        publisher
            .publish(&envelope(id, Body::TaskRun(TaskRunCommand { queue: queue.into(), ..Default::default() })))
            .await?;
    }

    let token = CancellationToken::new();
    let running = tokio::time::timeout(BOUND, aloft_executor::start(config.clone(), token.clone()))
        .await
        .context("start timed out")??;
    assert_eq!(running.stream, publisher.topology().stream_name(StreamKind::Tasks));
    assert_eq!(running.consumer, "executor-gpu");

    assert_eq!(health(running.health_addr, "").await?, ServingStatus::Serving);
    assert_eq!(health(running.health_addr, HEALTH_SERVICE).await?, ServingStatus::Serving);

    let topology = publisher.topology();
    let deadline = tokio::time::Instant::now() + BOUND;
    let info = loop {
        let info = consumer_info(&config.bus, &running.stream, &consumer_name(&config.queue)).await?;
        if info.delivered.consumer_sequence >= 1 && info.num_ack_pending == 0 {
            break info;
        }
        ensure!(tokio::time::Instant::now() < deadline, "the gpu run was not settled: {info:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(info.config.filter_subject, topology.task_run_subject("gpu")?);
    assert_eq!(info.config.ack_policy, async_nats::jetstream::consumer::AckPolicy::Explicit);
    assert_eq!(info.num_pending, 0, "the gpu run was taken");
    assert_eq!(info.delivered.consumer_sequence, 1, "and delivered once: terminated, not redelivered");
    let js = async_nats::jetstream::new(async_nats::connect(&config.bus.url).await?);
    let stream = js.get_stream(&running.stream).await?;
    stream
        .get_last_raw_message_by_subject(&topology.task_run_subject("default")?)
        .await
        .context("the default-queue run is still waiting")?;

    token.cancel();
    tokio::time::timeout(BOUND, running.task).await.context("shutdown timed out")???;
    ensure!(health(running.health_addr, "").await.is_err(), "health still answers after shutdown");
    Ok(())
}

#[tokio::test]
async fn replicas_share_one_durable() -> Result<()> {
    let config = config();
    let token = CancellationToken::new();
    let first = aloft_executor::start(config.clone(), token.clone()).await?;
    let second = aloft_executor::start(config.clone(), token.clone()).await?;
    assert_ne!(first.health_addr, second.health_addr);
    let js = async_nats::jetstream::new(async_nats::connect(&config.bus.url).await?);
    let mut stream = js.get_stream(&first.stream).await?;
    assert_eq!(stream.info().await?.state.consumer_count, 1);
    token.cancel();
    for running in [first, second] {
        tokio::time::timeout(BOUND, running.task).await.context("shutdown timed out")???;
    }
    Ok(())
}

#[tokio::test]
async fn queues_have_their_own_durables() -> Result<()> {
    let gpu = config();
    let cpu = Config { queue: "cpu".into(), ..gpu.clone() };
    let token = CancellationToken::new();
    let a = aloft_executor::start(gpu.clone(), token.clone()).await?;
    let b = aloft_executor::start(cpu, token.clone()).await?;
    assert_eq!((a.consumer.as_str(), b.consumer.as_str()), ("executor-gpu", "executor-cpu"));
    let js = async_nats::jetstream::new(async_nats::connect(&gpu.bus.url).await?);
    let mut stream = js.get_stream(&a.stream).await?;
    assert_eq!(stream.info().await?.state.consumer_count, 2);
    token.cancel();
    for running in [a, b] {
        tokio::time::timeout(BOUND, running.task).await.context("shutdown timed out")???;
    }
    Ok(())
}

#[tokio::test]
async fn unreachable_nats_fails_naming_the_url() -> Result<()> {
    // A port that was free a moment ago: connecting is refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut config = config();
    config.bus.url = format!("nats://127.0.0.1:{closed}");
    config.bus.connect_timeout = Duration::from_secs(2);
    let outcome = tokio::time::timeout(BOUND, aloft_executor::start(config.clone(), CancellationToken::new()))
        .await
        .context("start did not give up")?;
    let err = outcome.expect_err("start must fail without nats");
    let message = err.to_string();
    ensure!(message.contains(&config.bus.url), "error does not name the url: {message}");
    ensure!(!message.contains('\n'), "error is not one line: {message}");
    Ok(())
}
