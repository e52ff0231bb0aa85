//! Aloft lineage: the lineage graph.
//!
//! Owns (as the architecture grows into it): the graph of datasets, pipelines, tasks, models,
//! endpoints and runs, built from execution and task events and from lineage declarations
//! registered with projects; the `LineageService` query API (upstream, downstream, by run, by
//! model); emissions to DataHub and OpenLineage. Must not: change executions, or read another
//! service's database.
//!
//! What it does today is only its infrastructure: connect to NATS, ensure the bus topology,
//! create its durable consumer on all execution events, and serve the gRPC health check. It does
//! not pull events yet: acknowledging events without recording them would leave permanent holes
//! in the graph, whereas an untouched durable keeps its position, so the lineage service that
//! arrives with the graph starts from the oldest event still retained.

pub mod config;
pub mod error;

use std::future::Future;
use std::net::SocketAddr;

use aloft_bus::{Bus, StreamKind};
use aloft_runtime::Shutdown;
use tokio::task::JoinHandle;

pub use config::Config;
pub use error::Error;

/// Durable consumer on the events stream, over workflow, node and task events of every project
/// and domain. Every replica uses this one name.
pub const CONSUMER: &str = "lineage";

/// The name this service reports as SERVING on the gRPC health service (besides `""`, the
/// whole server).
pub const HEALTH_SERVICE: &str = "aloft.lineage";

/// A started lineage service.
#[derive(Debug)]
pub struct Running {
    /// The health address actually bound (useful with port 0).
    pub health_addr: SocketAddr,
    /// The stream the durable consumer reads.
    pub stream: String,
    /// The durable consumer's name.
    pub consumer: String,
    /// Resolves once the health server has stopped and the NATS connection is drained.
    pub task: JoinHandle<Result<(), Error>>,
}

/// Binds the health listener, connects to NATS, ensures the topology and the durable consumer,
/// then serves health until `shutdown` is cancelled. Start-up failures (port taken, NATS
/// unreachable, stream refused) are returned here, before anything is served.
pub async fn start(config: Config, shutdown: Shutdown) -> Result<Running, Error> {
    let listener = aloft_runtime::grpc::bind(&config.health.listen, "health.listen").await?;
    let health_addr = listener.local_addr().map_err(Error::LocalAddr)?;

    let bus = Bus::connect(config.bus.clone()).await?;
    bus.ensure().await?;
    let filters = [bus.topology().events_filter(None, None, None)];
    let consumer = bus.consumer(CONSUMER, &filters, StreamKind::Events).await?;
    let (stream, consumer_name) = (consumer.stream().to_string(), consumer.name().to_string());

    let (reporter, routes) = aloft_runtime::grpc::health(&[]);
    // Awaited here rather than left to a background task, so the first probe already sees it.
    reporter.set_service_status(HEALTH_SERVICE, tonic_health::ServingStatus::Serving).await;

    tracing::info!(
        %health_addr, url = %config.bus.url, %stream, consumer = %consumer_name,
        "lineage ready (events are not pulled yet)"
    );
    let task = tokio::spawn(async move {
        let served = aloft_runtime::grpc::serve(routes, listener, shutdown).await;
        // The consumer is only held, never pulled from, so its position is unchanged for the
        // next start.
        drop(consumer);
        if let Err(e) = bus.client().drain().await {
            tracing::warn!(error = %e, "cannot drain the nats connection");
        }
        tracing::info!("lineage stopped");
        served.map_err(Error::from)
    });
    Ok(Running { health_addr, stream, consumer: consumer_name, task })
}

/// Runs the lineage service until `shutdown` resolves.
pub async fn run(config: Config, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), Error> {
    let token = aloft_runtime::shutdown::token_from(shutdown);
    let running = start(config, token).await?;
    running.task.await?
}
