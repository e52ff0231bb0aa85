//! Aloft lineage: the lineage graph.
//!
//! Owns the graph of datasets, runs, task attempts, task/workflow/launch-plan versions and the
//! declared sources, pipelines, models and endpoints; builds it from execution events (its own
//! durable consumer on the events stream) and from each project's `lineage.yaml`; serves the
//! `LineageService` queries; exports to DataHub and OpenLineage through an outbox in its own
//! database. Must not: change executions, read another service's database (it asks metadata's
//! admin API which workflow a run is), or make an execution wait for a catalog.

pub mod adapters;
pub mod app;
pub mod config;
pub mod domain;
pub mod error;
pub mod exporter;
pub mod grpc;
pub mod metrics;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use aloft_bus::{Bus, Handled, StreamKind};
use aloft_proto::aloft::v1::lineage_service_server::LineageServiceServer;
use aloft_runtime::Shutdown;
use tokio::task::JoinHandle;

pub use config::Config;
pub use error::Error;

/// Durable consumer on the events stream, over workflow, node and task events of every project
/// and domain. Every replica uses this one name.
pub const CONSUMER: &str = "lineage";

/// The name this service reports as SERVING on the gRPC health service (besides `""`, the
/// whole server, and `aloft.v1.LineageService`).
pub const HEALTH_SERVICE: &str = "aloft.lineage";

/// Events pulled per batch.
const BATCH: usize = 32;
/// Redelivery delay when a dependency (database, store, metadata) failed.
const RETRY_DELAY: Duration = Duration::from_secs(2);

/// A started lineage service.
#[derive(Debug)]
pub struct Running {
    /// The gRPC address actually bound (useful with port 0): `LineageService` and health.
    pub health_addr: SocketAddr,
    /// Where `/metrics` is served (useful with port 0).
    pub metrics_addr: SocketAddr,
    /// The stream the durable consumer reads.
    pub stream: String,
    /// The durable consumer's name.
    pub consumer: String,
    /// The application, for embedding and tests.
    pub app: app::App,
    /// Resolves once the server, the consumer and the exporter have stopped and the NATS
    /// connection is drained.
    pub task: JoinHandle<Result<(), Error>>,
}

/// Binds the listener, opens the database (migrating it), the blob store and NATS, then consumes
/// events, drains the export outbox and serves gRPC until `shutdown` is cancelled. Start-up
/// failures (port taken, database or NATS unreachable) are returned here, before anything runs.
pub async fn start(config: Config, shutdown: Shutdown) -> Result<Running, Error> {
    let listener = aloft_runtime::grpc::bind(&config.health.listen, "health.listen").await?;
    let health_addr = listener.local_addr().map_err(Error::LocalAddr)?;
    let metrics_server = aloft_runtime::metrics::MetricsServer::bind(&config.metrics).await?;
    let metrics_addr = metrics_server.local_addr();
    let mut registry = aloft_runtime::metrics::registry("lineage");
    let grpc_metrics = aloft_runtime::metrics::GrpcMetrics::register(&mut registry);
    let lag = aloft_bus::LagGauges::register(&mut registry);
    let export_metrics = metrics::Metrics::register(&mut registry);

    let store = adapters::store::Store::connect(&config.database_url).await?;
    let blob = aloft_blob::BlobStore::from_config(&config.storage).await.map_err(|e| Error::Storage(e.to_string()))?;
    let admin = adapters::admin::Admin::new(&config.metadata.endpoint, config.metadata.timeout)?;
    let settings = config.export.settings();
    let app = app::App::new(store.clone(), Some(blob), Some(admin), settings);

    let bus = Bus::connect(config.bus.clone()).await?;
    bus.ensure().await?;
    let filters = [bus.topology().events_filter(None, None, None)];
    let consumer = bus.consumer(CONSUMER, &filters, StreamKind::Events).await?;
    let (stream, consumer_name) = (consumer.stream().to_string(), consumer.name().to_string());
    let lag_task = aloft_bus::watch_lag(vec![consumer.lag_probe()], lag, Duration::from_secs(5), shutdown.clone());
    let targets: Vec<_> = [
        config.export.datahub_on().map(|_| domain::graph::Target::DataHub),
        config.export.openlineage_on().map(|_| domain::graph::Target::OpenLineage),
    ]
    .into_iter()
    .flatten()
    .collect();
    let backlog_task = metrics::watch_backlog(
        store.clone(),
        targets,
        export_metrics.clone(),
        Duration::from_secs(5),
        shutdown.clone(),
    );

    let exporter = if config.export.datahub_on().is_some() || config.export.openlineage_on().is_some() {
        let sender = adapters::sender::Sender::new(
            config.export.timeout,
            config.export.datahub_on().cloned(),
            config.export.openlineage_on().cloned(),
        )
        .map_err(Error::Config)?;
        Some(tokio::spawn(exporter::run(
            store.clone(),
            sender,
            config.export.clone(),
            Some(export_metrics),
            shutdown.clone(),
        )))
    } else {
        None
    };

    let consumer_app = app.clone();
    let consumer_shutdown = shutdown.clone();
    let consumer_task = tokio::spawn(async move {
        consumer
            .process(BATCH, &consumer_shutdown, |envelope| {
                let app = consumer_app.clone();
                async move {
                    match app.handle(&envelope).await {
                        Ok(()) => Handled::Done,
                        Err(Error::InvalidArgument(m) | Error::Corrupt(m)) => {
                            Handled::Drop(format!("malformed event: {m}"))
                        }
                        Err(e) => Handled::Retry(e.to_string(), RETRY_DELAY),
                    }
                }
            })
            .await;
        tracing::info!("lineage consumer stopped");
    });

    let (reporter, routes) = aloft_runtime::grpc::health(&["aloft.v1.LineageService"]);
    // Awaited here rather than left to a background task, so the first probe already sees it.
    reporter.set_service_status(HEALTH_SERVICE, tonic_health::ServingStatus::Serving).await;
    let routes = routes.add_service(LineageServiceServer::new(grpc::Lineage(app.clone())));

    tracing::info!(
        %health_addr, %metrics_addr, url = %config.bus.url, %stream, consumer = %consumer_name,
        datahub = config.export.datahub_on().is_some(), openlineage = config.export.openlineage_on().is_some(),
        "lineage ready"
    );
    let metrics_task = metrics_server.spawn(std::sync::Arc::new(registry), shutdown.clone());
    let task = tokio::spawn(async move {
        let served = aloft_runtime::grpc::serve_with(routes, listener, shutdown, Some(grpc_metrics)).await;
        consumer_task.await?;
        lag_task.abort();
        let _ = backlog_task.await;
        let _ = metrics_task.await;
        if let Some(e) = exporter {
            e.await?;
        }
        if let Err(e) = bus.client().drain().await {
            tracing::warn!(error = %e, "cannot drain the nats connection");
        }
        store.close().await;
        tracing::info!("lineage stopped");
        served.map_err(Error::from)
    });
    Ok(Running { health_addr, metrics_addr, stream, consumer: consumer_name, app, task })
}

/// Runs the lineage service until `shutdown` resolves.
pub async fn run(config: Config, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), Error> {
    let token = aloft_runtime::shutdown::token_from(shutdown);
    let running = start(config, token).await?;
    running.task.await?
}
