//! Aloft notifier: tells the owning team in Slack when an execution finishes.
//!
//! Owns: reacting to terminal workflow events and SLA breaches (a durable consumer shared by all
//! replicas),
//! routing them by notification rules and project labels, enriching them with ownership and run
//! metadata read from metadata's admin API, the optional AWS Lambda enrichment hook, Slack
//! delivery (incoming webhook or bot token) with pacing and retries, and its own record of every
//! delivery and attempt (its `notifier_*` tables), served as `aloft.v1.NotifierService`.
//!
//! Must not: change executions, keep a copy of metadata's data, or read another service's
//! tables; and nothing else waits for it.

pub mod adapters;
pub mod app;
pub mod config;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod metrics;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use aloft_bus::{Bus, EventKind, StreamKind};
use aloft_proto::aloft::v1::notifier_service_server::NotifierServiceServer;
use aloft_runtime::Shutdown;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

pub use app::Stats;
pub use config::Config;
pub use error::Error;

use crate::adapters::lambda::LambdaHook;
use crate::adapters::metadata::MetadataClient;
use crate::adapters::slack::SlackClient;
use crate::adapters::store::Store;

/// Durable consumer on the events stream, filtered to workflow events (whether an event is
/// terminal is in its body, not its subject). Every replica uses this one name.
pub const CONSUMER: &str = "notifier";

/// The name this service reports as SERVING on the gRPC health service (besides `""`, the
/// whole server).
pub const HEALTH_SERVICE: &str = "aloft.notifier";

/// A started notifier.
#[derive(Debug)]
pub struct Running {
    /// The gRPC address actually bound (health and NotifierService; useful with port 0).
    pub health_addr: SocketAddr,
    /// Where `/metrics` is served (useful with port 0).
    pub metrics_addr: SocketAddr,
    /// The stream the durable consumer reads.
    pub stream: String,
    /// The durable consumer's name.
    pub consumer: String,
    /// This replica's id, as recorded with its claims and attempts.
    pub replica: String,
    /// What it did so far.
    pub stats: Arc<Stats>,
    /// Resolves once the server, the consumer and the sender have stopped and the NATS
    /// connection is drained.
    pub task: JoinHandle<Result<(), Error>>,
}

/// Binds the gRPC listener, opens the delivery database, connects to NATS and ensures the
/// durable consumer, then consumes events, sends deliveries and serves until `shutdown` is
/// cancelled. Start-up failures (port taken, database or NATS unreachable) are returned here,
/// before anything is served. Metadata and Slack are not contacted at start.
pub async fn start(config: Config, shutdown: Shutdown) -> Result<Running, Error> {
    let listener = aloft_runtime::grpc::bind(&config.health.listen, "health.listen").await?;
    let health_addr = listener.local_addr().map_err(Error::LocalAddr)?;
    let metrics_server = aloft_runtime::metrics::MetricsServer::bind(&config.metrics).await?;
    let metrics_addr = metrics_server.local_addr();
    let mut registry = aloft_runtime::metrics::registry("notifier");
    let grpc_metrics = aloft_runtime::metrics::GrpcMetrics::register(&mut registry);
    let metrics = metrics::Metrics::register(&mut registry);
    let lag = aloft_bus::LagGauges::register(&mut registry);

    let store = Store::connect(&config.database_url).await?;
    let metadata =
        MetadataClient::connect_lazy(&config.metadata.endpoint, config.metadata.timeout).map_err(Error::Metadata)?;
    let slack = SlackClient::new(
        &config.slack.api_url,
        config.slack.bot_token.clone(),
        config.slack.webhook_channels(),
        config.slack.timeout,
    )?;
    let routing = config.routing_config();
    let hook = if config.lambda.function.is_empty() {
        None
    } else {
        Some(LambdaHook::new(&config.lambda, routing.users.clone()).await)
    };

    let bus = Bus::connect(config.bus.clone()).await?;
    bus.ensure().await?;
    let filters = [
        bus.topology().events_filter(Some(EventKind::Workflow), None, None),
        bus.topology().events_filter(Some(EventKind::Sla), None, None),
    ];
    let consumer = bus.consumer(CONSUMER, &filters, StreamKind::Events).await?;
    let lag_task =
        aloft_bus::watch_lag(vec![consumer.lag_probe()], lag, std::time::Duration::from_secs(5), shutdown.clone());
    let (stream, consumer_name) = (consumer.stream().to_string(), consumer.name().to_string());

    let replica = format!("notifier-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let stats = Arc::new(Stats::with_metrics(metrics));
    let wake = Arc::new(Notify::new());
    let app = app::App {
        metadata,
        store: store.clone(),
        hook,
        routing,
        webhooks: config.slack.webhook_set(),
        bot: slack.has_bot(),
        console_url: config.console_url.clone(),
        settle_wait: config.metadata.settle_wait,
        stats: stats.clone(),
        wake: wake.clone(),
    };
    let sender = app::Sender {
        store: store.clone(),
        slack,
        replica: replica.clone(),
        config: config.delivery.clone(),
        wake,
        stats: stats.clone(),
    };

    let (reporter, mut routes) = aloft_runtime::grpc::health(&["aloft.v1.NotifierService"]);
    // Awaited here rather than left to a background task, so the first probe already sees it.
    reporter.set_service_status(HEALTH_SERVICE, tonic_health::ServingStatus::Serving).await;
    routes = routes.add_service(NotifierServiceServer::new(grpc::Notifier(store)));

    tracing::info!(
        %health_addr, %metrics_addr, url = %config.bus.url, %stream, consumer = %consumer_name, %replica,
        hook = !config.lambda.function.is_empty(), "notifier ready"
    );
    let consuming = tokio::spawn(app::consume(consumer, app, shutdown.clone(), config.bus.ack_wait));
    let sending = tokio::spawn(sender.run(shutdown.clone()));
    let metrics_task = metrics_server.spawn(Arc::new(registry), shutdown.clone());
    let task = tokio::spawn(async move {
        let served = aloft_runtime::grpc::serve_with(routes, listener, shutdown, Some(grpc_metrics)).await;
        let consumed = consuming.await;
        let sent = sending.await;
        let _ = metrics_task.await;
        lag_task.abort();
        if let Err(e) = bus.client().drain().await {
            tracing::warn!(error = %e, "cannot drain the nats connection");
        }
        tracing::info!("notifier stopped");
        consumed?;
        sent?;
        served.map_err(Error::from)
    });
    Ok(Running { health_addr, metrics_addr, stream, consumer: consumer_name, replica, stats, task })
}

/// Runs the notifier until `shutdown` resolves.
pub async fn run(config: Config, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), Error> {
    let token = aloft_runtime::shutdown::token_from(shutdown);
    let running = start(config, token).await?;
    running.task.await?
}
