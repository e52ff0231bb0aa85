//! Aloft scheduler: the state of running executions.
//!
//! Owns (as the architecture grows into it): which nodes of each running execution are ready,
//! done or retrying, kept in a JetStream key-value bucket updated with compare-and-set so any
//! replica can handle any event; launch-plan schedules. It consumes execute and abort commands
//! and task results, and publishes task runs and workflow/node events. Must not: run tasks, read
//! another service's database, or call another service directly.
//!
//! Today it runs workflows made of task nodes (any DAG, retries, failure policies, parallelism
//! limits, aborts); branch, sub-workflow, launch-plan, array, gate and dynamic nodes fail the
//! execution with a message saying so. See docs/execution-protocol.md for the messages.

pub mod app;
pub mod config;
pub mod domain;
pub mod error;
pub mod schedule;

use std::future::Future;
use std::net::SocketAddr;

use aloft_bus::{Bus, StreamKind};
use aloft_proto::flyteidl::service::admin_service_client::AdminServiceClient;
use aloft_runtime::Shutdown;
use tokio::task::JoinHandle;

pub use config::Config;
pub use error::Error;

/// Durable consumer on the commands stream. Every replica uses this one name, so each command
/// goes to exactly one replica.
pub const CONSUMER: &str = "scheduler";

/// Durable consumer of task events (results of attempts), shared by all replicas.
pub const EVENTS_CONSUMER: &str = "scheduler-task-events";

/// The name this service reports as SERVING on the gRPC health service (besides `""`, the
/// whole server).
pub const HEALTH_SERVICE: &str = "aloft.scheduler";

/// A started scheduler.
#[derive(Debug)]
pub struct Running {
    /// The health address actually bound (useful with port 0).
    pub health_addr: SocketAddr,
    /// Where `/metrics` is served (useful with port 0).
    pub metrics_addr: SocketAddr,
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
    let metrics_server = aloft_runtime::metrics::MetricsServer::bind(&config.metrics).await?;
    let metrics_addr = metrics_server.local_addr();

    let bus = Bus::connect(config.bus.clone()).await?;
    bus.ensure().await?;
    let filters = [bus.topology().execute_subject(), bus.topology().abort_subject(), bus.topology().wake_subject()];
    let consumer = bus.consumer(CONSUMER, &filters, StreamKind::Commands).await?;
    let (stream, consumer_name) = (consumer.stream().to_string(), consumer.name().to_string());

    let events = bus
        .consumer(
            EVENTS_CONSUMER,
            &[bus.topology().events_filter(Some(aloft_bus::EventKind::Task), None, None)],
            StreamKind::Events,
        )
        .await?;
    let blob = aloft_blob::BlobStore::from_config(&config.storage).await?;
    let kv = bus.kv_bucket("executions").await?;
    // Launch-plan schedules: every replica runs the loop; deterministic names keep it exactly-once.
    // Opened before anything is spawned, so a failure here leaves nothing running.
    let channel = metadata_channel(&config.metadata_endpoint)?;
    let admin = AdminServiceClient::new(channel.clone()).max_decoding_message_size(64 * 1024 * 1024);
    let signals = aloft_proto::flyteidl::service::signal_service_client::SignalServiceClient::new(channel);
    let schedules = match config.schedules.enabled {
        true => Some(
            schedule::connect(&config.schedules, &bus, admin.clone(), std::sync::Arc::new(schedule::SystemClock))
                .await?,
        ),
        false => None,
    };
    let cache = bus.kv_bucket("cache").await?;
    let app = app::App::new(
        bus.clone(),
        kv,
        blob,
        config.queue.clone(),
        config.system_retries,
        app::Metadata { admin, signals },
        cache,
    );
    // Metrics: gRPC (health) and the lag of both consumers; the execution KPIs come from
    // metadata's event sink.
    let mut registry = aloft_runtime::metrics::registry("scheduler");
    let grpc_metrics = aloft_runtime::metrics::GrpcMetrics::register(&mut registry);
    app.stages.register(&mut registry, "scheduler");
    let lag = aloft_bus::LagGauges::register(&mut registry);
    let probes = vec![consumer.lag_probe(), events.lag_probe()];
    let lag_task = aloft_bus::watch_lag(probes, lag, std::time::Duration::from_secs(5), shutdown.clone());
    let metrics_task = metrics_server.spawn(std::sync::Arc::new(registry), shutdown.clone());
    let commands_loop = tokio::spawn(consume(app.clone(), consumer, shutdown.clone()));
    let events_loop = tokio::spawn(consume(app, events, shutdown.clone()));
    let schedules_loop = schedules.map(|runner| tokio::spawn(runner.run(shutdown.clone())));

    let (reporter, routes) = aloft_runtime::grpc::health(&[]);
    // Awaited here rather than left to a background task, so the first probe already sees it.
    reporter.set_service_status(HEALTH_SERVICE, tonic_health::ServingStatus::Serving).await;

    tracing::info!(
        %health_addr, url = %config.bus.url, %stream, consumer = %consumer_name,
        "scheduler ready"
    );
    let task = tokio::spawn(async move {
        let served = aloft_runtime::grpc::serve_with(routes, listener, shutdown, Some(grpc_metrics)).await;
        // Both loops finish the message in hand before returning.
        let _ = commands_loop.await;
        let _ = events_loop.await;
        lag_task.abort();
        let _ = metrics_task.await;
        if let Some(schedules_loop) = schedules_loop {
            let _ = schedules_loop.await;
        }
        if let Err(e) = bus.client().drain().await {
            tracing::warn!(error = %e, "cannot drain the nats connection");
        }
        tracing::info!("scheduler stopped");
        served.map_err(Error::from)
    });
    Ok(Running { health_addr, metrics_addr, stream, consumer: consumer_name, task })
}

/// Pulls messages and applies them until `shutdown`. A message is acked only after its effects and
/// the new state are stored; a failure naks it with a delay, so it is retried, not lost.
async fn consume(app: app::App, consumer: aloft_bus::Consumer, shutdown: Shutdown) {
    use aloft_bus::Handled;
    use aloft_proto::aloft::v1::envelope::Body;
    consumer
        .process_by_key(32, CONCURRENCY, &shutdown, aloft_bus::execution_key, |envelope| {
            let app = app.clone();
            async move {
                let result = match &envelope.body {
                    Some(Body::Execute(cmd)) => app.execute(cmd).await,
                    Some(Body::Abort(cmd)) => app.abort(cmd).await,
                    Some(Body::TaskEvent(ev)) => {
                        // from the executor's publish to this handler: bus, then this loop's queue
                        app.stages.since_stamp("event_hop", envelope.created_at);
                        app.task_event(ev).await
                    }
                    Some(Body::Signal(notice)) => app.signal(notice).await,
                    Some(Body::Wake(wake)) => app.wake(wake).await,
                    _ => Ok(()),
                };
                match result {
                    Ok(()) => Handled::Done,
                    Err(error::Error::NotYet(delay)) => Handled::Retry("not due yet".into(), delay),
                    Err(error::Error::Corrupt(m)) => Handled::Drop(m),
                    Err(e) => Handled::Retry(e.to_string(), std::time::Duration::from_secs(1)),
                }
            }
        })
        .await;
}

/// How many executions one scheduler loop advances at once. Each step is mostly waiting on the
/// bus, the state bucket and the store, so a few in flight keep both cores busy; one execution's
/// messages stay in order (and the state's compare-and-set catches anything else).
const CONCURRENCY: usize = 16;

/// A lazy channel to metadata, with timeouts so a hung metadata delays work (the message is
/// retried) instead of stopping a loop.
pub fn metadata_channel(endpoint: &str) -> Result<tonic::transport::Channel, aloft_runtime::grpc::ServeError> {
    let invalid =
        || aloft_runtime::grpc::ServeError::Address { addr: endpoint.to_string(), key: "metadata_endpoint".into() };
    Ok(tonic::transport::Endpoint::from_shared(format!("http://{endpoint}"))
        .map_err(|_| invalid())?
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(30))
        .connect_lazy())
}

/// Metadata's admin API on a lazy channel (see [`metadata_channel`]).
pub fn admin_client(
    endpoint: &str,
) -> Result<AdminServiceClient<tonic::transport::Channel>, aloft_runtime::grpc::ServeError> {
    Ok(AdminServiceClient::new(metadata_channel(endpoint)?).max_decoding_message_size(64 * 1024 * 1024))
}

/// Runs the scheduler until `shutdown` resolves.
pub async fn run(config: Config, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), Error> {
    let token = aloft_runtime::shutdown::token_from(shutdown);
    let running = start(config, token).await?;
    running.task.await?
}
