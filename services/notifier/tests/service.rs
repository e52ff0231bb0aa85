//! The notifier as a service against the real nats-server (`scripts/dev-deps.sh`): it starts,
//! answers the gRPC health check for itself and its query API, consumes its durable consumer on
//! workflow events (and only those), and stops when its token is cancelled; an unreachable NATS
//! or database fails start-up with the URL in the error.

mod common;

use std::time::Duration;

use aloft_bus::{Bus, EventKind, StreamKind};
use aloft_notifier::{CONSUMER, Config, HEALTH_SERVICE};
use aloft_proto::aloft::v1::Envelope;
use aloft_proto::aloft::v1::envelope::Body;
use aloft_proto::flyteidl::core::workflow_execution::Phase;
use aloft_proto::flyteidl::core::{NodeExecutionIdentifier, WorkflowExecutionIdentifier};
use aloft_proto::flyteidl::event::NodeExecutionEvent;
use anyhow::{Context as _, Result, ensure};
use tokio_util::sync::CancellationToken;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Bound on start-up and shutdown: generous for a loaded CI machine, short enough to catch a hang.
const BOUND: Duration = Duration::from_secs(15);

async fn health(addr: std::net::SocketAddr, service: &str) -> Result<ServingStatus> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))?.connect().await?;
    let reply = HealthClient::new(channel).check(HealthCheckRequest { service: service.into() }).await?.into_inner();
    Ok(reply.status())
}

async fn consumer_info(config: &Config, stream: &str) -> Result<async_nats::jetstream::consumer::Info> {
    let js = async_nats::jetstream::new(async_nats::connect(&config.bus.url).await?);
    Ok(js.get_stream(stream).await?.consumer_info(CONSUMER).await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_health_consumes_workflow_events_only_and_stops() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (admin, slack) = (common::Admin::start().await, common::Slack::start().await);
    let config = common::config(dir.path(), &common::bus_config(), &admin, &slack);
    let publisher = Bus::connect(config.bus.clone()).await?;
    publisher.ensure().await?;
    // Published before the notifier starts: the durable consumer starts from the oldest event.
    let exec = WorkflowExecutionIdentifier {
        project: "p".into(),
        domain: "development".into(),
        name: "e1".into(),
        ..Default::default()
    };
    common::publish_terminal(&publisher, &exec, Phase::Running, "").await?;
    let node = NodeExecutionEvent {
        id: Some(NodeExecutionIdentifier { node_id: "n0".into(), execution_id: Some(exec.clone()) }),
        ..Default::default()
    };
    let node = Envelope {
        id: "node-1".into(),
        source: "test".into(),
        body: Some(Body::NodeEvent(node)),
        ..Default::default()
    };
    publisher.publish(&node).await?;

    let token = CancellationToken::new();
    let running = tokio::time::timeout(BOUND, aloft_notifier::start(config.clone(), token.clone()))
        .await
        .context("start timed out")??;
    assert_eq!(running.stream, publisher.topology().stream_name(StreamKind::Events));
    assert_eq!(running.consumer, CONSUMER);
    for service in ["", HEALTH_SERVICE, "aloft.v1.NotifierService"] {
        assert_eq!(health(running.health_addr, service).await?, ServingStatus::Serving, "{service:?}");
    }

    let topology = publisher.topology();
    let start = std::time::Instant::now();
    loop {
        let info = consumer_info(&config, &running.stream).await?;
        assert_eq!(
            info.config.filter_subjects,
            [
                topology.events_filter(Some(EventKind::Workflow), None, None),
                topology.events_filter(Some(EventKind::Sla), None, None)
            ]
        );
        assert_eq!(info.config.ack_policy, async_nats::jetstream::consumer::AckPolicy::Explicit);
        if info.num_pending == 0 && info.num_ack_pending == 0 && info.delivered.consumer_sequence == 1 {
            break; // the workflow event was taken and acked; the node event never reached it
        }
        ensure!(start.elapsed() < BOUND, "the workflow event was not consumed: {info:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    token.cancel();
    tokio::time::timeout(BOUND, running.task).await.context("shutdown timed out")???;
    ensure!(health(running.health_addr, "").await.is_err(), "health still answers after shutdown");
    Ok(())
}

#[tokio::test]
async fn unreachable_nats_fails_naming_the_url() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (admin, slack) = (common::Admin::start().await, common::Slack::start().await);
    // A port that was free a moment ago: connecting is refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut config = common::config(dir.path(), &common::bus_config(), &admin, &slack);
    config.bus.url = format!("nats://127.0.0.1:{closed}");
    config.bus.connect_timeout = Duration::from_secs(2);
    let outcome = tokio::time::timeout(BOUND, aloft_notifier::start(config.clone(), CancellationToken::new()))
        .await
        .context("start did not give up")?;
    let message = outcome.expect_err("start must fail without nats").to_string();
    ensure!(message.contains(&config.bus.url), "error does not name the url: {message}");
    ensure!(!message.contains('\n'), "error is not one line: {message}");
    Ok(())
}

#[tokio::test]
async fn unreachable_database_fails_naming_it_without_the_password() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (admin, slack) = (common::Admin::start().await, common::Slack::start().await);
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut config = common::config(dir.path(), &common::bus_config(), &admin, &slack);
    config.database_url = format!("postgres://aloft:hunter2@127.0.0.1:{closed}/notifier");
    let outcome = tokio::time::timeout(BOUND, aloft_notifier::start(config, CancellationToken::new()))
        .await
        .context("start did not give up")?;
    let message = outcome.expect_err("start must fail without its database").to_string();
    ensure!(message.contains(&format!("127.0.0.1:{closed}")), "error does not name the database: {message}");
    ensure!(!message.contains("hunter2"), "error shows the password: {message}");
    Ok(())
}
