//! Aloft executor: runs task attempts.
//!
//! Owns: pulling task runs from its queue's work queue (`<p>.task.run.<queue>`), admitting them
//! against `slots` and its CPU/memory capacity, running each attempt as a host process in its
//! own process group and scratch directory (template substitution, environment, timeout, abort),
//! deciding the result from the files the task wrote (never the exit code alone), publishing
//! the attempt's task events, and only then acknowledging the run. Raw-container tasks get their
//! inputs written to and outputs read from files, as Flyte's CoPilot does.
//!
//! Must not: decide what runs next or whether a failed attempt is retried (the scheduler does),
//! or read another service's database. The protocol is `docs/execution-protocol.md`.

mod app;
mod attempt;
pub mod config;
pub mod domain;
pub mod error;
mod raw_container;
pub mod runner;
pub mod warm;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use aloft_blob::BlobStore;
use aloft_bus::{Bus, StreamKind};
use aloft_runtime::Shutdown;
use prometheus_client::metrics::gauge::Gauge;
use tokio::task::JoinHandle;

use crate::domain::admission::Resources;
use crate::domain::quantity;

pub use config::Config;
pub use error::Error;

/// The name this service reports as SERVING on the gRPC health service (besides `""`, the
/// whole server).
pub const HEALTH_SERVICE: &str = "aloft.executor";

/// The durable consumer of a queue: `executor-<queue>`. Every replica serving the queue uses
/// this name, so each task run goes to exactly one of them; different queues have disjoint
/// filters, as the work-queue stream requires.
pub fn consumer_name(queue: &str) -> String {
    format!("executor-{queue}")
}

/// The core NATS subject aborts are heard on: `<subject_prefix>.ctl.abort`.
pub fn abort_subject(subject_prefix: &str) -> String {
    format!("{subject_prefix}.ctl.abort")
}

/// A started executor.
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
    /// The capacity attempts are admitted against.
    pub capacity: Resources,
    /// Resolves once the health server has stopped, held attempts are drained and the NATS
    /// connection is closed.
    pub task: JoinHandle<Result<(), Error>>,
}

/// Binds the health listener, connects to NATS, ensures the topology and the durable consumer of
/// `config.queue`, opens the blob store, subscribes to aborts, then runs task attempts and serves
/// health until `shutdown` is cancelled. Start-up failures (port taken, NATS unreachable, bad
/// storage, missing venv) are returned here, before anything is pulled or served.
pub async fn start(config: Config, shutdown: Shutdown) -> Result<Running, Error> {
    let listener = aloft_runtime::grpc::bind(&config.health.listen, "health.listen").await?;
    let health_addr = listener.local_addr().map_err(Error::LocalAddr)?;
    let metrics_server = aloft_runtime::metrics::MetricsServer::bind(&config.metrics).await?;
    let metrics_addr = metrics_server.local_addr();
    let capacity = capacity(&config)?;
    check_host(&config).await?;
    let store = BlobStore::from_config(&config.storage).await?;

    let bus = Bus::connect(config.bus.clone()).await?;
    bus.ensure().await?;
    let filters = [bus.topology().task_run_subject(&config.queue)?];
    let consumer = bus.consumer(&consumer_name(&config.queue), &filters, StreamKind::Tasks).await?;
    let (stream, consumer_name) = (consumer.stream().to_string(), consumer.name().to_string());
    // Subscribed before pulling: an abort must not slip past a run being started.
    let subject = abort_subject(&config.bus.subject_prefix);
    let aborts = bus
        .client()
        .subscribe(subject.clone())
        .await
        .map_err(|source| Error::Subscribe { subject: subject.clone(), source })?;

    let (reporter, routes) = aloft_runtime::grpc::health(&[]);
    // Awaited here rather than left to a background task, so the first probe already sees it.
    reporter.set_service_status(HEALTH_SERVICE, tonic_health::ServingStatus::Serving).await;

    tracing::info!(
        %health_addr, url = %config.bus.url, queue = %config.queue, %stream, consumer = %consumer_name,
        slots = config.slots, %capacity, storage = %store.root(), abort_subject = %subject, "executor ready"
    );
    let mut registry = aloft_runtime::metrics::registry("executor");
    let grpc_metrics = aloft_runtime::metrics::GrpcMetrics::register(&mut registry);
    let lag = aloft_bus::LagGauges::register(&mut registry);
    let lag_task = aloft_bus::watch_lag(vec![consumer.lag_probe()], lag, Duration::from_secs(5), shutdown.clone());
    let slots: Gauge = Gauge::default();
    slots.set(i64::from(config.slots));
    registry.register("executor_slots", "Task runs this executor holds at most (config `slots`)", slots);
    let executor = Arc::new(app::Executor::new(config, bus.clone(), store, capacity, shutdown.clone()));
    registry.register(
        "executor_slots_in_use",
        "Slots holding a task run (waiting for capacity or running)",
        executor.slots_in_use.clone(),
    );
    executor.stages.register(&mut registry, "executor");
    let metrics_task = metrics_server.spawn(Arc::new(registry), shutdown.clone());
    let worker = tokio::spawn(executor.run(consumer, aborts));
    let task = tokio::spawn(async move {
        let served = aloft_runtime::grpc::serve_with(routes, listener, shutdown.clone(), Some(grpc_metrics)).await;
        // A failed health server stops the executor too: a probe-less executor is invisible.
        shutdown.cancel();
        let worked = worker.await;
        lag_task.abort();
        let _ = metrics_task.await;
        if let Err(e) = bus.client().drain().await {
            tracing::warn!(error = %e, "cannot drain the nats connection");
        }
        tracing::info!("executor stopped");
        worked?;
        served.map_err(Error::from)
    });
    Ok(Running { health_addr, metrics_addr, stream, consumer: consumer_name, capacity, task })
}

/// The configured capacity, or the host's CPU count and total memory.
fn capacity(config: &Config) -> Result<Resources, Error> {
    let invalid = |key: &'static str, e: domain::SpecError| Error::Host { key, message: e.to_string() };
    let cpu_millis = match &config.capacity.cpu {
        Some(cpu) => quantity::cpu_millis(cpu).map_err(|e| invalid("capacity.cpu", e))?,
        None => std::thread::available_parallelism().map(|n| n.get() as u64 * 1000).unwrap_or(1000),
    };
    let memory_bytes = match &config.capacity.memory {
        Some(memory) => quantity::memory_bytes(memory).map_err(|e| invalid("capacity.memory", e))?,
        None => host_memory().unwrap_or_else(|| {
            tracing::warn!("cannot read the host's memory size; memory requests are not limited");
            u64::MAX
        }),
    };
    Ok(Resources { cpu_millis, memory_bytes })
}

/// `MemTotal` from `/proc/meminfo`.
fn host_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The venv has a `bin`, and the scratch directory can be created.
async fn check_host(config: &Config) -> Result<(), Error> {
    if let Some(venv) = &config.python.venv {
        let bin = std::path::Path::new(venv).join("bin");
        if !tokio::fs::metadata(&bin).await.map(|m| m.is_dir()).unwrap_or(false) {
            return Err(Error::Host { key: "python.venv", message: format!("{} is not a directory", bin.display()) });
        }
    }
    tokio::fs::create_dir_all(&config.scratch_dir).await.map_err(|e| Error::Host {
        key: "scratch_dir",
        message: format!("cannot create {}: {e}", config.scratch_dir),
    })?;
    // Tasks a crashed executor on this host left running would otherwise finish (or run again
    // after redelivery) unobserved.
    let reaped = runner::reap_stale_groups(&groups_dir(&config.scratch_dir));
    if reaped > 0 {
        tracing::warn!(groups = reaped, "killed task processes left running by a previous executor");
    }
    // Fork servers of a previous executor on this scratch directory died with it (their input
    // closed); their directories are left over.
    let warm = warm_dir(&config.scratch_dir);
    if let Err(e) = tokio::fs::remove_dir_all(&warm).await
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %warm.display(), error = %e, "cannot clear the previous warm runtime's files");
    }
    Ok(())
}

/// Where running task process groups are recorded, under the scratch directory.
pub fn groups_dir(scratch_dir: &str) -> std::path::PathBuf {
    std::path::Path::new(scratch_dir).join(".groups")
}

/// Where the warm Python runtime's fork servers keep their script, `HOME` and `TMPDIR`, under the
/// scratch directory (one subdirectory per server).
pub fn warm_dir(scratch_dir: &str) -> std::path::PathBuf {
    std::path::Path::new(scratch_dir).join(".warm-python")
}

/// Runs the executor until `shutdown` resolves.
pub async fn run(config: Config, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), Error> {
    let token = aloft_runtime::shutdown::token_from(shutdown);
    let running = start(config, token).await?;
    running.task.await?
}
