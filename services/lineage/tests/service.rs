//! The lineage service against the real nats-server (`scripts/dev-deps.sh`): it starts, answers the
//! gRPC health check, consumes execution events published before it started into its graph, answers
//! the query API, and stops when its token is cancelled; an unreachable NATS fails start-up with the
//! URL in the error.
//!
//! Each test uses its own stream and subject prefix from `unique_name`, so tests run in parallel
//! on one server.

use std::time::Duration;

use aloft_bus::{Bus, BusConfig, StreamKind};
use aloft_lineage::config::HealthConfig;
use aloft_lineage::{CONSUMER, Config, HEALTH_SERVICE};
use aloft_proto::aloft::v1::Envelope;
use aloft_proto::aloft::v1::envelope::Body;
use aloft_proto::aloft::v1::lineage_service_client::LineageServiceClient;
use aloft_proto::aloft::v1::{LineageEdgeKind, LineageGraphRequest};
use aloft_proto::flyteidl::core::{NodeExecutionIdentifier, WorkflowExecutionIdentifier};
use aloft_proto::flyteidl::event::{
    NodeExecutionEvent, WorkflowExecutionEvent, WorkflowNodeMetadata, node_execution_event,
};
use anyhow::{Context as _, Result, ensure};
use tokio_util::sync::CancellationToken;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Bound on start-up and shutdown: generous for a loaded CI machine, short enough to catch a hang.
const BOUND: Duration = Duration::from_secs(10);

fn config(dir: &std::path::Path) -> Config {
    let ns = aloft_testkit::unique_name("lin");
    let mut c = Config {
        bus: BusConfig {
            url: aloft_testkit::deps().nats_url.clone(),
            stream_prefix: ns.to_uppercase(),
            subject_prefix: ns,
            ..Default::default()
        },
        health: HealthConfig { listen: "127.0.0.1:0".into() },
        database_url: format!("sqlite://{}", dir.join("lineage.db").display()),
        storage: aloft_blob::BlobConfig::local(dir.join("store").to_str().expect("utf-8 path")),
        ..Config::default()
    };
    // nothing listens there: these tests publish no event that needs the admin API
    c.metadata.endpoint = "http://127.0.0.1:9".into();
    c
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
async fn serves_health_consumes_events_and_stops() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let config = config(dir.path());
    // Events already in the stream when the lineage service starts stay unconsumed.
    let publisher = Bus::connect(config.bus.clone()).await?;
    publisher.ensure().await?;
    let exec = WorkflowExecutionIdentifier {
        project: "flytesnacks".into(),
        domain: "development".into(),
        name: "e1".into(),
        ..Default::default()
    };
    let workflow = WorkflowExecutionEvent { execution_id: Some(exec.clone()), ..Default::default() };
    // a node event that launched a child execution: the only part of it the graph needs
    let node = NodeExecutionEvent {
        id: Some(NodeExecutionIdentifier { node_id: "n0".into(), execution_id: Some(exec) }),
        target_metadata: Some(node_execution_event::TargetMetadata::WorkflowNodeMetadata(WorkflowNodeMetadata {
            execution_id: Some(WorkflowExecutionIdentifier {
                project: "flytesnacks".into(),
                domain: "development".into(),
                name: "child1".into(),
                ..Default::default()
            }),
        })),
        ..Default::default()
    };
    let _ = workflow;
    publisher.publish(&envelope("node-1", Body::NodeEvent(node))).await?;

    let token = CancellationToken::new();
    let running = tokio::time::timeout(BOUND, aloft_lineage::start(config.clone(), token.clone()))
        .await
        .context("start timed out")??;
    assert_eq!(running.stream, publisher.topology().stream_name(StreamKind::Events));
    assert_eq!(running.consumer, CONSUMER);

    assert_eq!(health(running.health_addr, "").await?, ServingStatus::Serving);
    assert_eq!(health(running.health_addr, HEALTH_SERVICE).await?, ServingStatus::Serving);

    let info = consumer_info(&config.bus, &running.stream, CONSUMER).await?;
    let topology = publisher.topology();
    assert_eq!(info.config.filter_subject, topology.events_filter(None, None, None));
    assert_eq!(info.config.ack_policy, async_nats::jetstream::consumer::AckPolicy::Explicit);

    // The event published before start is consumed: the child run hangs off its parent.
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", running.health_addr))?.connect().await?;
    let mut api = LineageServiceClient::new(channel);
    let started = std::time::Instant::now();
    let graph = loop {
        match api
            .downstream(LineageGraphRequest { node: "run:flytesnacks/development/e1".into(), depth: 1, max_nodes: 0 })
            .await
        {
            Ok(g) => break g.into_inner(),
            Err(s) if s.code() == tonic::Code::NotFound && started.elapsed() < BOUND => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(s) => return Err(s.into()),
        }
    };
    let keys: Vec<&str> = graph.nodes.iter().map(|n| n.key.as_str()).collect();
    assert_eq!(keys, ["run:flytesnacks/development/e1", "run:flytesnacks/development/child1"]);
    assert_eq!(graph.edges[0].kind, LineageEdgeKind::Child as i32);
    let info = consumer_info(&config.bus, &running.stream, CONSUMER).await?;
    assert_eq!(info.num_pending, 0, "the event was taken");
    assert_eq!(info.num_ack_pending, 0, "and acknowledged");
    let missing = api
        .upstream(LineageGraphRequest { node: "dataset:/nowhere".into(), depth: 1, max_nodes: 0 })
        .await
        .expect_err("unknown node");
    assert_eq!(missing.code(), tonic::Code::NotFound);
    assert_eq!(missing.message(), "node \"dataset:/nowhere\" is not in the lineage graph");

    token.cancel();
    tokio::time::timeout(BOUND, running.task).await.context("shutdown timed out")???;
    ensure!(health(running.health_addr, "").await.is_err(), "health still answers after shutdown");
    Ok(())
}

#[tokio::test]
async fn unreachable_nats_fails_naming_the_url() -> Result<()> {
    // A port that was free a moment ago: connecting is refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let dir = tempfile::tempdir()?;
    let mut config = config(dir.path());
    config.bus.url = format!("nats://127.0.0.1:{closed}");
    config.bus.connect_timeout = Duration::from_secs(2);
    let outcome = tokio::time::timeout(BOUND, aloft_lineage::start(config.clone(), CancellationToken::new()))
        .await
        .context("start did not give up")?;
    let err = outcome.expect_err("start must fail without nats");
    let message = err.to_string();
    ensure!(message.contains(&config.bus.url), "error does not name the url: {message}");
    ensure!(!message.contains('\n'), "error is not one line: {message}");
    Ok(())
}
