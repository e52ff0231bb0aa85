//! The two loops of the notifier.
//!
//! - [`App::handle`]: a terminal workflow event -> gather facts from metadata -> decide routes
//!   -> ask the hook -> record one delivery per destination (idempotent) -> ack. Fast and
//!   repeatable: a redelivered event finds its deliveries recorded and adds nothing.
//! - [`Sender::run`]: due deliveries -> take the channel's slot -> claim (lease) -> post ->
//!   classify Slack's answer -> record the attempt and the new state. Any replica sends any
//!   delivery; a dead replica's claims expire and are taken over.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aloft_bus::{Consumer, Handled};
use aloft_proto::aloft::v1::{Envelope, SlaBreach, envelope::Body};
use aloft_proto::flyteidl::core::WorkflowExecutionIdentifier;
use aloft_proto::flyteidl::event::{WorkflowExecutionEvent, workflow_execution_event::OutputResult};
use aloft_runtime::Shutdown;
use rand::Rng;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;

use crate::adapters::lambda::LambdaHook;
use crate::adapters::metadata::{MetadataClient, MetadataError};
use crate::adapters::slack::SlackClient;
use crate::adapters::store::{AttemptResult, Due, Finish, NewDelivery, Store, StoreError, now_micros};
use crate::config::DeliveryConfig;
use crate::domain::hook::{HookOutcome, HookRequest};
use crate::domain::notice::{Facts, Notice, is_failure, terminal_phase};
use crate::domain::routing::{self, RoutingConfig};
use crate::domain::sla;
use crate::domain::slack::{Outcome, Target, backoff, classify};
use crate::domain::{default_message, plan};

/// How long an event waits before it is retried when metadata or the database is down.
const RETRY_EVENT_AFTER: Duration = Duration::from_secs(5);

/// Counters of what the notifier did since it started (hook outcomes by label, deliveries
/// recorded by state, and attempt outcomes), for tests and the Prometheus metrics.
#[derive(Debug, Default)]
pub struct Stats {
    counts: Mutex<BTreeMap<String, u64>>,
    metrics: Option<crate::metrics::Metrics>,
}

impl Stats {
    /// Counters that also feed `metrics`.
    pub fn with_metrics(metrics: crate::metrics::Metrics) -> Stats {
        Stats { counts: Mutex::default(), metrics: Some(metrics) }
    }

    fn add(&self, name: &str) {
        *self.counts.lock().unwrap_or_else(|p| p.into_inner()).entry(name.to_string()).or_default() += 1;
        if let Some(m) = &self.metrics {
            m.count(name);
        }
    }

    /// `hook.<label>` for hook outcomes; `delivery.delivered`, `delivery.rate_limited`,
    /// `delivery.retry`, `delivery.failed` for attempts.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// One counter.
    pub fn get(&self, name: &str) -> u64 {
        self.snapshot().get(name).copied().unwrap_or(0)
    }
}

/// The event side: facts, routes, hook, records.
#[derive(Clone)]
pub struct App {
    /// Metadata's admin API.
    pub metadata: MetadataClient,
    /// Delivery records.
    pub store: Store,
    /// The Lambda hook, when configured.
    pub hook: Option<LambdaHook>,
    /// Routing defaults.
    pub routing: RoutingConfig,
    /// Channels with a webhook.
    pub webhooks: BTreeSet<String>,
    /// Whether a bot token is configured.
    pub bot: bool,
    /// Console base URL for links.
    pub console_url: String,
    /// How long to wait for metadata to show the terminal phase.
    pub settle_wait: Duration,
    /// Counters.
    pub stats: Arc<Stats>,
    /// Wakes the sender when new deliveries are recorded.
    pub wake: Arc<Notify>,
}

#[derive(Debug, thiserror::Error)]
enum HandleError {
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl App {
    /// Decides what to do with one envelope from the workflow-events consumer.
    pub async fn handle(&self, envelope: &Envelope) -> Handled {
        if let Some(Body::SlaBreach(breach)) = &envelope.body {
            return self.handle_breach(&envelope.id, breach).await;
        }
        let Some(Body::WorkflowEvent(event)) = &envelope.body else { return Handled::Done };
        let Some(phase) = terminal_phase(event.phase) else { return Handled::Done };
        let Some(id) =
            event.execution_id.clone().filter(|i| !i.project.is_empty() && !i.domain.is_empty() && !i.name.is_empty())
        else {
            return Handled::Drop("workflow event without a complete execution id".into());
        };
        let execution = format!("{}/{}/{}", id.project, id.domain, id.name);
        match self.notify(&envelope.id, event, &id, phase).await {
            Ok(created) => {
                tracing::info!(%execution, phase, created, "terminal event handled");
                Handled::Done
            }
            Err(HandleError::Metadata(MetadataError::NotFound(m))) => {
                Handled::Drop(format!("execution {execution} is unknown to metadata: {m}"))
            }
            Err(e) => Handled::Retry(format!("execution {execution}: {e}"), RETRY_EVENT_AFTER),
        }
    }

    /// An SLA breach: one message per destination to the project's channel, recorded under the
    /// pseudo-phase `SLA_BREACHED` (exactly once, like terminal phases). The Lambda hook is for
    /// finished executions and is not asked.
    async fn handle_breach(&self, event_id: &str, breach: &SlaBreach) -> Handled {
        let Some(id) =
            breach.execution_id.clone().filter(|i| !i.project.is_empty() && !i.domain.is_empty() && !i.name.is_empty())
        else {
            return Handled::Drop("sla breach without a complete execution id".into());
        };
        let execution = format!("{}/{}/{}", id.project, id.domain, id.name);
        let labels = match self.metadata.project_labels(&id.project).await {
            Ok(l) => l,
            Err(e) => return Handled::Retry(format!("execution {execution}: {e}"), RETRY_EVENT_AFTER),
        };
        let routing = sla::routing(&labels, &self.routing);
        for note in &routing.notes {
            tracing::info!(%execution, note, "routing note");
        }
        let message = sla::message(breach, &labels, &self.console_url);
        let mut created = 0;
        for route in &routing.routes {
            let key = route.destination.key();
            let target = crate::domain::slack::resolve(&route.destination, &self.webhooks, self.bot);
            let (state, target, last_error) = match target {
                Ok(t) => ("pending", t.key(), String::new()),
                Err(e) => ("failed", String::new(), e),
            };
            let delivery = NewDelivery {
                project: id.project.clone(),
                domain: id.domain.clone(),
                execution: id.name.clone(),
                phase: sla::PHASE.to_string(),
                destination: key,
                target,
                payload: message.body(None).to_string(),
                state: state.to_string(),
                hook: HookOutcome::Disabled.label().to_string(),
                reasons: route.reasons.join("; "),
                event_id: event_id.to_string(),
                last_error,
            };
            match self.store.insert(&delivery, now_micros()).await {
                Ok(true) => {
                    created += 1;
                    self.stats.add(&format!("recorded.{state}"));
                }
                Ok(false) => {}
                Err(e) => return Handled::Retry(format!("execution {execution}: {e}"), RETRY_EVENT_AFTER),
            }
        }
        if created > 0 {
            self.wake.notify_one();
        }
        tracing::info!(%execution, sla = %breach.sla, created, "sla breach handled");
        Handled::Done
    }

    async fn notify(
        &self,
        event_id: &str,
        event: &WorkflowExecutionEvent,
        id: &WorkflowExecutionIdentifier,
        phase: &str,
    ) -> Result<usize, HandleError> {
        let facts = self.gather(event_id, event, id, phase).await?;
        let notice = Notice::build(&facts, phase, &self.console_url);
        let rules = routing::rules(facts.spec(), facts.launch_plan.as_ref());
        let routing = routing::route(phase, event.phase, &id.domain, &rules, &facts.project_labels, &self.routing);
        for note in &routing.notes {
            tracing::info!(execution = %id.name, project = %id.project, note, "routing note");
        }
        let mut created = 0;
        for route in &routing.routes {
            let key = route.destination.key();
            if self.store.exists(&id.project, &id.domain, &id.name, phase, &key).await? {
                continue;
            }
            let outcome = match &self.hook {
                None => HookOutcome::Disabled,
                Some(hook) => {
                    let idempotency_key = format!("{}/{}/{}/{phase}/{key}", id.project, id.domain, id.name);
                    let message = default_message(&notice);
                    let request = HookRequest {
                        idempotency_key: &idempotency_key,
                        notice: &notice,
                        destination: key.clone(),
                        message: &message,
                    };
                    let payload = serde_json::to_vec(&request).unwrap_or_default();
                    hook.invoke(payload).await
                }
            };
            self.stats.add(&format!("hook.{}", outcome.label()));
            match &outcome {
                HookOutcome::FunctionError(d) | HookOutcome::Error(d) => {
                    tracing::warn!(destination = %key, hook = outcome.label(), detail = %d, "hook failed; sending the built-in message")
                }
                HookOutcome::Timeout | HookOutcome::Throttled => {
                    tracing::warn!(destination = %key, hook = outcome.label(), "hook failed; sending the built-in message")
                }
                _ => {}
            }
            let planned = plan(&notice, &route.destination, &outcome, &self.webhooks, self.bot);
            let (state, target, last_error) = match (&planned.target, planned.suppressed) {
                (_, true) => ("suppressed", String::new(), String::new()),
                (Ok(t), false) => ("pending", t.key(), String::new()),
                (Err(e), false) => ("failed", String::new(), e.clone()),
            };
            let delivery = NewDelivery {
                project: id.project.clone(),
                domain: id.domain.clone(),
                execution: id.name.clone(),
                phase: phase.to_string(),
                destination: planned.destination.clone(),
                target,
                payload: planned.message.body(None).to_string(),
                state: state.to_string(),
                hook: planned.hook.to_string(),
                reasons: route.reasons.join("; "),
                event_id: event_id.to_string(),
                last_error,
            };
            if self.store.insert(&delivery, now_micros()).await? {
                created += 1;
                self.stats.add(&format!("recorded.{state}"));
                if state == "failed" {
                    tracing::warn!(destination = %key, error = %delivery.last_error, "notification cannot be delivered");
                }
            }
        }
        if created > 0 {
            self.wake.notify_one();
        }
        Ok(created)
    }

    /// What metadata knows. Its event sink reads the same event as we do, so the execution may
    /// not show the terminal phase yet: poll briefly, then go with what there is (the event
    /// itself carries the phase and the error).
    async fn gather(
        &self,
        event_id: &str,
        event: &WorkflowExecutionEvent,
        id: &WorkflowExecutionIdentifier,
        phase: &str,
    ) -> Result<Facts, MetadataError> {
        let deadline = Instant::now() + self.settle_wait;
        let execution = loop {
            match self.metadata.execution(id).await {
                Ok(e) if e.closure.as_ref().is_some_and(|c| terminal_phase(c.phase).is_some()) => break e,
                Ok(e) if Instant::now() >= deadline => {
                    tracing::warn!(execution = %id.name, "metadata does not show the terminal phase yet; notifying from the event");
                    break e;
                }
                // Executions are recorded before they run, so NOT_FOUND is final only after the wait.
                Err(MetadataError::NotFound(m)) if Instant::now() >= deadline => {
                    return Err(MetadataError::NotFound(m));
                }
                Err(MetadataError::Unavailable(m)) => return Err(MetadataError::Unavailable(m)),
                _ => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        };
        let launch_plan = match execution.spec.as_ref().and_then(|s| s.launch_plan.as_ref()) {
            Some(lp) => self.metadata.launch_plan(lp).await?,
            None => None,
        };
        let project_labels = self.metadata.project_labels(&id.project).await?;
        let nodes = if is_failure(phase) { self.metadata.nodes(id).await? } else { Vec::new() };
        // Inputs only decorate the message; a failure to read them must not hold it back.
        let inputs = match self.metadata.inputs(id).await {
            Ok(i) => i,
            Err(e) => {
                tracing::info!(execution = %id.name, error = %e, "inputs unavailable for the notification");
                None
            }
        };
        let event_error = match &event.output_result {
            Some(OutputResult::Error(e)) => Some(e.clone()),
            _ => None,
        };
        Ok(Facts {
            event_id: event_id.to_string(),
            execution_id: id.clone(),
            phase: event.phase,
            event_error,
            occurred_at: event.occurred_at,
            execution: Some(execution),
            launch_plan,
            project_labels,
            nodes,
            inputs,
        })
    }
}

/// Pulls terminal workflow events until `shutdown`, settling each as [`App::handle`] decides.
/// Heartbeats keep a slow event (metadata lagging, a slow hook) from being redelivered to
/// another replica meanwhile; an event interrupted by shutdown is nak'ed so another replica
/// takes it at once.
pub async fn consume(consumer: Consumer, app: App, shutdown: Shutdown, ack_wait: Duration) {
    let heartbeat = (ack_wait / 3).max(Duration::from_millis(100));
    'outer: loop {
        let fetched = tokio::select! {
            _ = shutdown.cancelled() => break,
            b = consumer.fetch(8, Duration::from_secs(1)) => b,
        };
        let deliveries = match fetched {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "fetch failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let mut deliveries = deliveries.into_iter();
        while let Some(d) = deliveries.next() {
            let alive = d.keep_alive(heartbeat);
            let handled = tokio::select! {
                h = app.handle(d.envelope()) => h,
                _ = shutdown.cancelled() => {
                    drop(alive);
                    let _ = d.nak().await;
                    for rest in deliveries { let _ = rest.nak().await; }
                    break 'outer;
                }
            };
            drop(alive);
            let id = d.envelope().id.clone();
            let settled = match handled {
                Handled::Done => d.ack().await,
                Handled::Drop(reason) => {
                    tracing::error!(%reason, %id, "event cannot be applied; dropped");
                    d.term().await
                }
                Handled::Retry(reason, delay) => {
                    tracing::warn!(%reason, %id, "event not handled; retrying later");
                    d.nak_with_delay(delay).await
                }
            };
            if let Err(e) = settled {
                tracing::warn!(error = %e, %id, "cannot settle event; it will be redelivered and found recorded");
            }
        }
    }
    tracing::info!("event consumer stopped");
}

/// The delivery side.
#[derive(Clone)]
pub struct Sender {
    /// Delivery records.
    pub store: Store,
    /// Slack.
    pub slack: SlackClient,
    /// This replica's id, recorded with its claims and attempts.
    pub replica: String,
    /// Pacing, retries, leases.
    pub config: DeliveryConfig,
    /// Woken when deliveries are recorded.
    pub wake: Arc<Notify>,
    /// Counters.
    pub stats: Arc<Stats>,
}

impl Sender {
    /// Sends due deliveries until `shutdown`, then lets sends in flight finish within
    /// `drain_timeout` (an unfinished one keeps its lease and is taken over after it expires).
    pub async fn run(self, shutdown: Shutdown) {
        let permits = Arc::new(Semaphore::new(self.config.concurrency));
        let mut sends = JoinSet::new();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(self.config.poll_interval) => {}
            }
            while sends.try_join_next().is_some() {}
            if let Err(e) = self.dispatch(&permits, &mut sends).await {
                tracing::warn!(error = %e, "cannot look for due deliveries; retrying");
            }
        }
        let drained =
            tokio::time::timeout(self.config.drain_timeout, async { while sends.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::warn!("sends still in flight at shutdown; their leases expire and another replica sends them");
            sends.abort_all();
        }
        tracing::info!(replica = %self.replica, "sender stopped");
    }

    async fn dispatch(&self, permits: &Arc<Semaphore>, sends: &mut JoinSet<()>) -> Result<(), StoreError> {
        let now = now_micros();
        let due = self.store.due(now, (self.config.concurrency * 4) as i64).await?;
        let mut busy = BTreeSet::new();
        for d in due {
            let Ok(permit) = permits.clone().try_acquire_owned() else { break };
            let Some(target) = Target::parse(&d.target) else {
                // Only a database edited by hand gets here; fail it visibly rather than loop.
                if let Some(attempt) = self.store.claim(&d.id, &self.replica, now, self.lease()).await? {
                    let result = AttemptResult { http_status: 0, detail: format!("unknown target `{}`", d.target) };
                    self.store.finish(&d.id, &self.replica, attempt, now, &Finish::Failed, &result).await?;
                }
                continue;
            };
            let channel = target.rate_key();
            if busy.contains(&channel) {
                continue;
            }
            if !self.store.take_channel(&channel, now, self.config.min_interval.as_micros() as i64).await? {
                busy.insert(channel);
                continue;
            }
            busy.insert(channel);
            let Some(attempt) = self.store.claim(&d.id, &self.replica, now, self.lease()).await? else { continue };
            let me = self.clone();
            sends.spawn(async move {
                me.send(d, target, attempt).await;
                drop(permit);
            });
        }
        Ok(())
    }

    fn lease(&self) -> i64 {
        self.config.lease.as_micros() as i64
    }

    async fn send(&self, d: Due, target: Target, attempt: u32) {
        let body: serde_json::Value = serde_json::from_str(&d.payload).unwrap_or_default();
        let answer = self.slack.post(&target, &body).await;
        let outcome = classify(target.transport, answer.as_ref().map_err(|e| e.as_str()));
        let now = now_micros();
        let result = match &answer {
            Ok(a) => AttemptResult { http_status: a.status, detail: crate::domain::text::truncate(a.body.trim(), 500) },
            Err(e) => AttemptResult { http_status: 0, detail: e.clone() },
        };
        let (finish, counter, detail) = match &outcome {
            Outcome::Delivered { ts } => {
                (Finish::Delivered { ts: ts.clone().unwrap_or_default() }, "delivered", String::new())
            }
            Outcome::RateLimited { after } => {
                let until = now + after.as_micros() as i64;
                if let Err(e) = self.store.hold_channel(&target.rate_key(), until).await {
                    tracing::warn!(error = %e, "cannot record the channel's Retry-After");
                }
                (
                    Finish::Retry { at: until, counts: false, outcome: "rate_limited" },
                    "rate_limited",
                    format!("rate limited for {after:?}"),
                )
            }
            Outcome::Retry { reason } if d.failures + 1 >= self.config.max_attempts => {
                (Finish::Failed, "failed", format!("gave up after {} failed attempts: {reason}", d.failures + 1))
            }
            Outcome::Retry { reason } => {
                let jitter: f64 = rand::rng().random();
                let wait = backoff(d.failures + 1, self.config.backoff_base, self.config.backoff_max, jitter);
                (
                    Finish::Retry { at: now + wait.as_micros() as i64, counts: true, outcome: "retry" },
                    "retry",
                    reason.clone(),
                )
            }
            Outcome::Permanent { reason } => (Finish::Failed, "failed", reason.clone()),
        };
        self.stats.add(&format!("delivery.{counter}"));
        // What we concluded (which includes Slack's answer), or Slack's answer when delivered.
        let record =
            AttemptResult { detail: if detail.is_empty() { result.detail.clone() } else { detail.clone() }, ..result };
        match self.store.finish(&d.id, &self.replica, attempt, now, &finish, &record).await {
            Ok(true) => tracing::info!(target = %target.key(), attempt, outcome = counter, %detail, "slack attempt"),
            Ok(false) => {
                tracing::warn!(target = %target.key(), attempt, "lease lost while sending; another replica took over")
            }
            Err(e) => {
                tracing::warn!(target = %target.key(), attempt, error = %e, "cannot record the outcome; the lease will expire")
            }
        }
    }
}
