//! Aloft metadata: the Flyte admin API that flytekit talks to.
//!
//! Owns the registry (tasks, compiled workflows, launch plans), projects and domains, and the data
//! proxy (upload locations and signed URLs); it is the only service that reads or writes its
//! database. Must not: run anything, or block on another service.
//!
//! Also derives the execution and task KPIs from the events it stores, and sweeps unfinished
//! executions for SLA breaches; both are served as Prometheus metrics on the HTTP side
//! (`/metrics`).

pub mod adapters;
pub mod app;
pub mod config;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod http;
pub mod metrics;
pub mod runs;
pub mod signals;
mod sink;
pub mod sla;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use aloft_proto::flyteidl::service::admin_service_server::AdminServiceServer;
use aloft_proto::flyteidl::service::data_proxy_service_server::DataProxyServiceServer;
use aloft_proto::flyteidl::service::signal_service_server::SignalServiceServer;
use aloft_runtime::Shutdown;
use tokio::task::JoinHandle;

pub use config::Config;

/// Why the service could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The database is unreachable or its migrations failed.
    #[error("database_url: {0}")]
    Database(error::Error),
    /// The blob store is misconfigured or unreachable.
    #[error("storage: {0}")]
    Storage(aloft_blob::BlobError),
    /// A listener could not be bound, or a server failed.
    #[error(transparent)]
    Serve(#[from] aloft_runtime::grpc::ServeError),
    /// The HTTP server failed.
    #[error("http server: {0}")]
    Http(std::io::Error),
    /// The bus is unreachable or misconfigured.
    #[error("bus: {0}")]
    Bus(aloft_bus::Error),
    /// A server task panicked.
    #[error("server task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// A started service: where it listens, and the task to await.
pub struct Running {
    /// The gRPC address actually bound (useful with port 0).
    pub grpc_addr: SocketAddr,
    /// The HTTP address actually bound.
    pub http_addr: SocketAddr,
    /// The application state (for embedding and tests).
    pub app: app::App,
    /// Resolves when both servers have stopped.
    pub task: JoinHandle<Result<(), StartError>>,
}

/// Connects to the database and store, binds both listeners and starts serving until `shutdown`
/// is cancelled. Errors before serving (bad URL, port in use, database down) are returned here.
pub async fn start(config: Config, shutdown: Shutdown) -> Result<Running, StartError> {
    let store = adapters::store::Store::connect(&config.database_url).await.map_err(StartError::Database)?;
    let blob = aloft_blob::BlobStore::from_config(&config.storage).await.map_err(StartError::Storage)?;
    let bus = match &config.bus {
        Some(b) => {
            let bus = aloft_bus::Bus::connect(b.clone()).await.map_err(StartError::Bus)?;
            bus.ensure().await.map_err(StartError::Bus)?;
            Some(bus)
        }
        None => None,
    };
    let grpc_listener = aloft_runtime::grpc::bind(&config.grpc.listen, "grpc.listen").await?;
    let http_listener = aloft_runtime::grpc::bind(&config.http.listen, "http.listen").await?;
    let grpc_addr = grpc_listener.local_addr().map_err(StartError::Http)?;
    let http_addr = http_listener.local_addr().map_err(StartError::Http)?;
    let signing_key = if config.http.signing_key.is_empty() {
        use rand::RngCore;
        let mut k = vec![0u8; 32];
        rand::rng().fill_bytes(&mut k);
        k
    } else {
        config.http.signing_key.clone().into_bytes()
    };
    let app = app::App {
        store,
        blob,
        public_http_url: config.public_http_url(http_addr),
        config: Arc::new(config),
        signing_key: Arc::new(signing_key),
        bus,
    };
    let mut registry = aloft_runtime::metrics::registry("metadata");
    let grpc_metrics = aloft_runtime::metrics::GrpcMetrics::register(&mut registry);
    let kpis = metrics::Metrics::register(&mut registry);
    let lag = aloft_bus::LagGauges::register(&mut registry);
    let registry = Arc::new(registry);
    let sink_task = match &app.bus {
        Some(bus) => Some(
            sink::spawn(app.clone(), bus.clone(), kpis.clone(), lag, shutdown.clone())
                .await
                .map_err(StartError::Bus)?,
        ),
        None => None,
    };
    let sla_task = match &app.bus {
        Some(bus) if app.config.sla.enabled => {
            Some(sla::spawn(app.clone(), bus.clone(), kpis, app.config.sla.clone(), shutdown.clone()))
        }
        _ => None,
    };

    let (_health, mut routes) = aloft_runtime::grpc::health(&[
        "flyteidl.service.AdminService",
        "flyteidl.service.DataProxyService",
        "flyteidl.service.SignalService",
    ]);
    routes = routes
        .add_service(
            AdminServiceServer::new(grpc::Admin(app.clone()))
                .max_decoding_message_size(64 * 1024 * 1024)
                .max_encoding_message_size(20 * 1024 * 1024),
        )
        .add_service(DataProxyServiceServer::new(grpc::DataProxy(app.clone())))
        .add_service(SignalServiceServer::new(grpc::Signals(app.clone())));
    let grpc_task =
        tokio::spawn(aloft_runtime::grpc::serve_with(routes, grpc_listener, shutdown.clone(), Some(grpc_metrics)));
    let router = http::router(app.clone()).merge(aloft_runtime::metrics::router(registry));
    let http_shutdown = shutdown.clone();
    let http_task = tokio::spawn(async move {
        axum::serve(http_listener, router).with_graceful_shutdown(http_shutdown.cancelled_owned()).await
    });
    tracing::info!(%grpc_addr, %http_addr, "metadata serving");
    let task = tokio::spawn(async move {
        let (g, h) = tokio::join!(grpc_task, http_task);
        if let Some(sink) = sink_task {
            sink.await?;
        }
        if let Some(sla) = sla_task {
            sla.await?;
        }
        g??;
        h?.map_err(StartError::Http)?;
        Ok(())
    });
    Ok(Running { grpc_addr, http_addr, app, task })
}

/// Runs the service until `shutdown` resolves.
pub async fn run(config: Config, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), StartError> {
    let token = aloft_runtime::shutdown::token_from(shutdown);
    let running = start(config, token).await?;
    running.task.await?
}
