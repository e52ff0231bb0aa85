//! The scheduler against the real nats-server (`scripts/dev-deps.sh`): it starts, answers the
//! gRPC health check and stops when its token is cancelled; an unreachable NATS fails start-up with
//! the URL in the error. Scheduling itself is tested in `scheduling.rs`.
//!
//! Each test uses its own stream and subject prefix from `unique_name`, so tests run in parallel
//! on one server.

use std::time::Duration;

use aloft_bus::BusConfig;
use aloft_scheduler::config::HealthConfig;
use aloft_scheduler::{CONSUMER, Config, HEALTH_SERVICE};
use anyhow::{Context as _, Result, ensure};
use tokio_util::sync::CancellationToken;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Bound on start-up and shutdown: generous for a loaded CI machine, short enough to catch a hang.
const BOUND: Duration = Duration::from_secs(10);

fn config() -> (Config, tempfile::TempDir) {
    let ns = aloft_testkit::unique_name("sched");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Config {
        bus: BusConfig {
            url: aloft_testkit::deps().nats_url.clone(),
            stream_prefix: ns.to_uppercase(),
            subject_prefix: ns,
            ..Default::default()
        },
        health: HealthConfig { listen: "127.0.0.1:0".into() },
        storage: aloft_blob::BlobConfig::local(dir.path().display().to_string()),
        ..Default::default()
    };
    (config, dir)
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
async fn serves_health_and_stops() -> Result<()> {
    let (config, _dir) = config();
    let token = CancellationToken::new();
    let running = tokio::time::timeout(BOUND, aloft_scheduler::start(config.clone(), token.clone()))
        .await
        .context("start timed out")??;
    assert_eq!(running.consumer, CONSUMER);
    assert_eq!(health(running.health_addr, "").await?, ServingStatus::Serving);
    assert_eq!(health(running.health_addr, HEALTH_SERVICE).await?, ServingStatus::Serving);
    let info = consumer_info(&config.bus, &running.stream, CONSUMER).await?;
    assert_eq!(info.config.ack_policy, async_nats::jetstream::consumer::AckPolicy::Explicit);
    token.cancel();
    tokio::time::timeout(BOUND, running.task).await.context("shutdown timed out")???;
    ensure!(health(running.health_addr, "").await.is_err(), "health still answers after shutdown");
    Ok(())
}

#[tokio::test]
async fn replicas_share_one_durable() -> Result<()> {
    let (config, _dir) = config();
    let token = CancellationToken::new();
    let first = aloft_scheduler::start(config.clone(), token.clone()).await?;
    let second = aloft_scheduler::start(config.clone(), token.clone()).await?;
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
async fn unreachable_nats_fails_naming_the_url() -> Result<()> {
    // A port that was free a moment ago: connecting is refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let (mut config, _dir) = config();
    config.bus.url = format!("nats://127.0.0.1:{closed}");
    config.bus.connect_timeout = Duration::from_secs(2);
    let outcome = tokio::time::timeout(BOUND, aloft_scheduler::start(config.clone(), CancellationToken::new()))
        .await
        .context("start did not give up")?;
    let err = outcome.expect_err("start must fail without nats");
    let message = err.to_string();
    ensure!(message.contains(&config.bus.url), "error does not name the url: {message}");
    ensure!(!message.contains('\n'), "error is not one line: {message}");
    Ok(())
}
