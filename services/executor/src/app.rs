//! The executor's running state and its two loops: pulling task runs (bounded by `slots`) and
//! listening for aborts on core NATS. Each pulled run is handled on its own task
//! (`attempt.rs`); this module owns admission, the registry of attempts held here, and shutdown.
//!
//! Shutdown: stop pulling; runs still waiting for capacity go back to the queue (nak) at once;
//! running attempts get `drain_timeout` to finish and publish their result; after it their
//! process groups are killed and their runs go back to the queue without a result.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aloft_blob::{BlobKind, BlobStore};
use aloft_bus::{Bus, Consumer, Delivery};
use aloft_proto::aloft::v1::Envelope;
use aloft_proto::aloft::v1::envelope::Body;
use futures::StreamExt;
use prost::Message as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::Config;
use crate::domain::admission::{Admission, Request, Resources};
use crate::domain::env::{Host, PASSTHROUGH, S3Access, base_env};
use crate::domain::ids::{AttemptId, ExecutionKey};
use crate::warm::WarmPython;

/// How long one pull waits for a task run before checking for shutdown again.
const FETCH_WAIT: Duration = Duration::from_secs(1);
/// Pause after a failed pull (NATS unreachable), so a dead connection does not spin.
const FETCH_RETRY: Duration = Duration::from_secs(1);
/// How long an abort is remembered, for task runs of that execution pulled after it.
const RECENT_ABORT_TTL: Duration = Duration::from_secs(15 * 60);
/// How many aborts are remembered at most.
const RECENT_ABORT_MAX: usize = 10_000;

/// What the attempt tasks share.
pub(crate) struct Executor {
    pub(crate) config: Config,
    pub(crate) bus: Bus,
    pub(crate) store: BlobStore,
    pub(crate) host: HostSettings,
    /// The warm Python runtime (started on the first Python task that may use it).
    pub(crate) warm: WarmPython,
    /// Stop taking work (and give back runs still waiting for capacity).
    pub(crate) shutdown: CancellationToken,
    /// The drain deadline passed: kill what still runs.
    pub(crate) hard_stop: CancellationToken,
    admission: Mutex<Admitting>,
    attempts: Mutex<HashMap<AttemptId, Arc<Controls>>>,
    aborted: Mutex<HashMap<ExecutionKey, (String, Instant)>>,
    /// Slots held by a task run (`aloft_executor_slots_in_use`; lib.rs registers it).
    pub(crate) slots_in_use: prometheus_client::metrics::gauge::Gauge,
    /// Time per step of an attempt (`aloft_executor_stage_seconds`).
    pub(crate) stages: aloft_runtime::metrics::Stages,
}

/// What every task's environment gets from the host, read once at start.
#[derive(Debug, Clone, Default)]
pub(crate) struct HostSettings {
    pub(crate) system_path: String,
    pub(crate) passthrough: Vec<(String, String)>,
    pub(crate) s3: Option<S3Access>,
}

impl HostSettings {
    /// From the executor's environment and storage config.
    pub(crate) fn from_env(config: &Config) -> Self {
        let s3 = (config.storage.kind == BlobKind::S3).then(|| S3Access {
            endpoint: config.storage.endpoint.clone(),
            access_key: config.storage.access_key.clone(),
            secret_key: config.storage.secret_key.clone(),
        });
        HostSettings {
            system_path: std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into()),
            passthrough: PASSTHROUGH.iter().filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v))).collect(),
            s3,
        }
    }
}

/// Admission ledger and the wake-ups of waiting runs, under one lock so a release cannot slip
/// between a run starting to wait and its wake-up being registered.
struct Admitting {
    ledger: Admission<AttemptId>,
    wakers: HashMap<AttemptId, oneshot::Sender<()>>,
}

/// The answer to asking for capacity.
pub(crate) enum Admit {
    /// Go.
    Now,
    /// Resolves when admitted.
    Wait(oneshot::Receiver<()>),
    /// Never fits here.
    TooLarge(String),
}

/// Releases an attempt's capacity (or its place in the queue) when dropped.
pub(crate) struct AdmissionGuard<'a> {
    executor: &'a Executor,
    id: AttemptId,
}

impl Drop for AdmissionGuard<'_> {
    fn drop(&mut self) {
        self.executor.release(&self.id);
    }
}

/// The abort switch of one attempt held here.
#[derive(Debug, Default)]
pub(crate) struct Controls {
    abort: CancellationToken,
    cause: Mutex<String>,
}

impl Controls {
    fn abort(&self, cause: &str) {
        let mut slot = self.cause.lock().expect("cause lock");
        if slot.is_empty() {
            *slot = cause.to_string();
        }
        drop(slot);
        self.abort.cancel();
    }

    /// Resolves with the cause once the attempt's execution is aborted.
    pub(crate) async fn aborted(&self) -> String {
        self.abort.cancelled().await;
        self.cause.lock().expect("cause lock").clone()
    }

    /// The cause if already aborted.
    pub(crate) fn abort_cause(&self) -> Option<String> {
        self.abort.is_cancelled().then(|| self.cause.lock().expect("cause lock").clone())
    }
}

impl Executor {
    pub(crate) fn new(
        config: Config,
        bus: Bus,
        store: BlobStore,
        capacity: Resources,
        shutdown: CancellationToken,
    ) -> Self {
        let host = HostSettings::from_env(&config);
        let warm = WarmPython::new(
            config.python_runtime,
            &config.scratch_dir,
            base_env(&Host {
                venv: config.python.venv.as_deref(),
                system_path: &host.system_path,
                home: "",
                tmpdir: "",
                s3: None,
                passthrough: &host.passthrough,
                admin: None,
            }),
        );
        Executor {
            config,
            bus,
            store,
            host,
            warm,
            shutdown,
            hard_stop: CancellationToken::new(),
            admission: Mutex::new(Admitting { ledger: Admission::new(capacity), wakers: HashMap::new() }),
            attempts: Mutex::new(HashMap::new()),
            aborted: Mutex::new(HashMap::new()),
            slots_in_use: Default::default(),
            stages: Default::default(),
        }
    }

    /// Pulls task runs until shutdown, then drains. Aborts are heard from `aborts` meanwhile.
    pub(crate) async fn run(self: Arc<Self>, consumer: Consumer, aborts: async_nats::Subscriber) {
        let listener = tokio::spawn(Arc::clone(&self).listen(aborts));
        let tracker = TaskTracker::new();
        let slots = Arc::new(Semaphore::new(self.config.slots as usize));
        loop {
            let permit = tokio::select! {
                permit = Arc::clone(&slots).acquire_owned() => permit.expect("the slot semaphore is never closed"),
                _ = self.shutdown.cancelled() => break,
            };
            if self.shutdown.is_cancelled() {
                break;
            }
            match consumer.fetch(1, FETCH_WAIT).await {
                Ok(deliveries) => {
                    if let Some(delivery) = deliveries.into_iter().next() {
                        tracker.spawn(Arc::clone(&self).handle(delivery, permit));
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot pull task runs; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(FETCH_RETRY) => {}
                        _ = self.shutdown.cancelled() => break,
                    }
                }
            }
        }
        tracker.close();
        let held = tracker.len();
        if held > 0 {
            tracing::info!(attempts = held, drain_timeout = ?self.config.drain_timeout, "draining attempts");
        }
        if tokio::time::timeout(self.config.drain_timeout, tracker.wait()).await.is_err() {
            tracing::warn!(attempts = tracker.len(), "drain timeout passed; killing the attempts still running");
            self.hard_stop.cancel();
            tracker.wait().await;
        }
        self.warm.stop().await;
        listener.abort();
    }

    /// One delivery, from decoding to settling. The slot is held until it is settled.
    async fn handle(self: Arc<Self>, delivery: Delivery, _slot: OwnedSemaphorePermit) {
        let _in_use = InUse::take(&self.slots_in_use);
        let cmd = match &delivery.envelope().body {
            Some(Body::TaskRun(cmd)) => cmd.clone(),
            _ => {
                tracing::warn!(id = %delivery.envelope().id, subject = delivery.subject(), "terminating a message that is not a task run");
                settle(delivery, Settle::Term).await;
                return;
            }
        };
        let id = match AttemptId::from_command(&cmd) {
            Ok(id) => id,
            Err(e) => {
                tracing::warn!(id = %delivery.envelope().id, error = %e, "terminating an unusable task run");
                settle(delivery, Settle::Term).await;
                return;
            }
        };
        // from the scheduler's publish to here: bus, then waiting for a free slot
        self.stages.since_stamp("run_hop", delivery.envelope().created_at);
        let span = tracing::info_span!(
            "attempt", attempt = %id, delivered = delivery.delivered(), trace_id = tracing::field::Empty
        );
        // The attempt (and the events it publishes) continues the scheduler's trace.
        delivery.continue_trace(&span);
        async move {
            let Some(controls) = self.register(&id) else {
                // A redelivery of a run still running here (its heartbeats were late): the
                // running one settles the message.
                tracing::info!("already running here; leaving the redelivery");
                return;
            };
            let every = (self.config.bus.ack_wait / 3).max(Duration::from_millis(100));
            let keep_alive = delivery.keep_alive(every);
            let outcome = self.attempt(&cmd, &id, &controls, delivery.delivered()).await;
            self.deregister(&id);
            drop(keep_alive);
            settle(delivery, outcome).await;
        }
        .instrument(span)
        .await
    }

    /// Asks for capacity; the guard gives it back (or leaves the queue) when dropped.
    pub(crate) fn admit(&self, id: &AttemptId, need: Resources) -> (AdmissionGuard<'_>, Admit) {
        let mut a = self.admission.lock().expect("admission lock");
        let answer = match a.ledger.request(id.clone(), need) {
            Request::Admitted => Admit::Now,
            Request::TooLarge(why) => Admit::TooLarge(why),
            Request::Waiting => {
                let (tx, rx) = oneshot::channel();
                a.wakers.insert(id.clone(), tx);
                Admit::Wait(rx)
            }
        };
        (AdmissionGuard { executor: self, id: id.clone() }, answer)
    }

    fn release(&self, id: &AttemptId) {
        let mut a = self.admission.lock().expect("admission lock");
        a.wakers.remove(id);
        for admitted in a.ledger.release(id) {
            if let Some(waker) = a.wakers.remove(&admitted) {
                // A dropped receiver means that run gave up; its guard releases it again.
                let _ = waker.send(());
            }
        }
    }

    /// Registers an attempt held here; `None` if it already is. A run of an execution aborted
    /// recently starts aborted.
    fn register(&self, id: &AttemptId) -> Option<Arc<Controls>> {
        let mut attempts = self.attempts.lock().expect("attempts lock");
        if attempts.contains_key(id) {
            return None;
        }
        let controls = Arc::new(Controls::default());
        if let Some((cause, _)) = self.aborted.lock().expect("aborted lock").get(&id.execution) {
            controls.abort(cause);
        }
        attempts.insert(id.clone(), Arc::clone(&controls));
        Some(controls)
    }

    fn deregister(&self, id: &AttemptId) {
        self.attempts.lock().expect("attempts lock").remove(id);
    }

    /// Aborts every attempt of `execution` held here, and remembers the abort for runs of it
    /// pulled later.
    pub(crate) fn abort(&self, execution: &ExecutionKey, cause: &str) {
        {
            let mut aborted = self.aborted.lock().expect("aborted lock");
            let now = Instant::now();
            aborted.retain(|_, (_, at)| now.duration_since(*at) < RECENT_ABORT_TTL);
            if aborted.len() >= RECENT_ABORT_MAX
                && let Some(oldest) = aborted.iter().min_by_key(|(_, (_, at))| *at).map(|(k, _)| k.clone())
            {
                aborted.remove(&oldest);
            }
            aborted.insert(execution.clone(), (cause.to_string(), now));
        }
        let attempts = self.attempts.lock().expect("attempts lock");
        let mut hit = 0;
        for (id, controls) in attempts.iter() {
            if &id.execution == execution {
                controls.abort(cause);
                hit += 1;
            }
        }
        tracing::info!(execution = %execution, attempts = hit, %cause, "abort received");
    }

    /// Core NATS abort messages: `Envelope{body: Abort}` on `<subject_prefix>.ctl.abort`.
    async fn listen(self: Arc<Self>, mut aborts: async_nats::Subscriber) {
        while let Some(message) = aborts.next().await {
            match Envelope::decode(message.payload) {
                Ok(Envelope { body: Some(Body::Abort(abort)), .. }) => match &abort.execution_id {
                    Some(exec) => {
                        let cause = if abort.cause.is_empty() { "execution aborted" } else { abort.cause.as_str() };
                        self.abort(&ExecutionKey::of(exec), cause);
                    }
                    None => tracing::warn!("ignoring an abort without execution_id"),
                },
                Ok(other) => {
                    tracing::warn!(id = %other.id, "ignoring a message on the abort subject that is not an abort")
                }
                Err(e) => tracing::warn!(error = %e, "ignoring an undecodable message on the abort subject"),
            }
        }
    }
}

/// One slot counted in use until dropped.
struct InUse(prometheus_client::metrics::gauge::Gauge);

impl InUse {
    fn take(gauge: &prometheus_client::metrics::gauge::Gauge) -> InUse {
        gauge.inc();
        InUse(gauge.clone())
    }
}

impl Drop for InUse {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// How a delivery is settled once its attempt is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settle {
    /// The terminal event is published.
    Ack,
    /// Not run (shutdown): back to the queue now.
    Nak,
    /// Unusable: never redeliver.
    Term,
    /// Unsettled: redelivered after `ack_wait` (the result could not be published).
    Leave,
}

async fn settle(delivery: Delivery, how: Settle) {
    let result = match how {
        Settle::Ack => delivery.ack().await,
        Settle::Nak => delivery.nak().await,
        Settle::Term => delivery.term().await,
        Settle::Leave => return,
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, settle = ?how, "cannot settle the task run; it will be redelivered");
    }
}
