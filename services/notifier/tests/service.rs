//! The notifier against the real nats-server (`scripts/dev-deps.sh`): it starts, answers the
//! gRPC health check, holds its durable consumer on workflow events without pulling them, and stops
//! when its token is cancelled; an unreachable NATS fails start-up with the URL in the error.
//!
//! Each test uses its own stream and subject prefix from `unique_name`, so tests run in parallel
//! on one server.

use std::time::Duration;

use aloft_bus::{Bus, BusConfig, EventKind, StreamKind};
use aloft_notifier::config::HealthConfig;
use aloft_notifier::{CONSUMER, Config, HEALTH_SERVICE};
use aloft_proto::aloft::v1::Envelope;
use aloft_proto::aloft::v1::envelope::Body;
use aloft_proto::flyteidl::core::{NodeExecutionIdentifier, WorkflowExecutionIdentifier};
use aloft_proto::flyteidl::event::{NodeExecutionEvent, WorkflowExecutionEvent};
use anyhow::{Context as _, Result, ensure};
use tokio_util::sync::CancellationToken;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Bound on start-up and shutdown: generous for a loaded CI machine, short enough to catch a hang.
const BOUND: Duration = Duration::from_secs(10);

fn config() -> Config {
    let ns = aloft_testkit::unique_name("notif");
    Config {
        bus: BusConfig {
            url: aloft_testkit::deps().nats_url.clone(),
            stream_prefix: ns.to_uppercase(),
            subject_prefix: ns,
            ..Default::default()
        },
        health: HealthConfig { listen: "127.0.0.1:0".into() },
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
async fn serves_health_holds_its_consumer_without_pulling_and_stops() -> Result<()> {
    let config = config();
    // Events already in the stream when the notifier starts stay unconsumed; the node event is
    // not its business.
    let publisher = Bus::connect(config.bus.clone()).await?;
    publisher.ensure().await?;
    let exec = WorkflowExecutionIdentifier {
        project: "flytesnacks".into(),
        domain: "development".into(),
        name: "e1".into(),
        ..Default::default()
    };
    let workflow = WorkflowExecutionEvent { execution_id: Some(exec.clone()), ..Default::default() };
    let node = NodeExecutionEvent {
        id: Some(NodeExecutionIdentifier { node_id: "n0".into(), execution_id: Some(exec) }),
        ..Default::default()
    };
    publisher.publish(&envelope("wf-1", Body::WorkflowEvent(workflow))).await?;
    publisher.publish(&envelope("node-1", Body::NodeEvent(node))).await?;

    let token = CancellationToken::new();
    let running = tokio::time::timeout(BOUND, aloft_notifier::start(config.clone(), token.clone()))
        .await
        .context("start timed out")??;
    assert_eq!(running.stream, publisher.topology().stream_name(StreamKind::Events));
    assert_eq!(running.consumer, CONSUMER);

    assert_eq!(health(running.health_addr, "").await?, ServingStatus::Serving);
    assert_eq!(health(running.health_addr, HEALTH_SERVICE).await?, ServingStatus::Serving);

    // Give a (wrongly) pulling service time to take the events before looking.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let info = consumer_info(&config.bus, &running.stream, CONSUMER).await?;
    let topology = publisher.topology();
    assert_eq!(info.config.filter_subject, topology.events_filter(Some(EventKind::Workflow), None, None));
    assert_eq!(info.config.ack_policy, async_nats::jetstream::consumer::AckPolicy::Explicit);
    assert_eq!(info.num_pending, 1, "the workflow event waits for the notifier");
    assert_eq!(info.num_ack_pending, 0, "nothing was pulled");
    assert_eq!(info.delivered.consumer_sequence, 0, "nothing was delivered");

    token.cancel();
    tokio::time::timeout(BOUND, running.task).await.context("shutdown timed out")???;
    ensure!(health(running.health_addr, "").await.is_err(), "health still answers after shutdown");
    Ok(())
}

#[tokio::test]
async fn unreachable_nats_fails_naming_the_url() -> Result<()> {
    // A port that was free a moment ago: connecting is refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut config = config();
    config.bus.url = format!("nats://127.0.0.1:{closed}");
    config.bus.connect_timeout = Duration::from_secs(2);
    let outcome = tokio::time::timeout(BOUND, aloft_notifier::start(config.clone(), CancellationToken::new()))
        .await
        .context("start did not give up")?;
    let err = outcome.expect_err("start must fail without nats");
    let message = err.to_string();
    ensure!(message.contains(&config.bus.url), "error does not name the url: {message}");
    ensure!(!message.contains('\n'), "error is not one line: {message}");
    Ok(())
}
