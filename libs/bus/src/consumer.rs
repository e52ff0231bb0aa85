//! Pulling typed envelopes from a durable consumer, and settling each delivery.
//!
//! Delivery is at-least-once: a message not acknowledged within `ack_wait` (or nak'ed) comes back,
//! up to `max_deliver` times. Handlers must therefore be idempotent; [`Delivery::delivered`] tells
//! which attempt this is.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use aloft_proto::aloft::v1::Envelope;
use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::consumer::pull::Batch;
use async_nats::jetstream::message::{AckKind, Acker};
use futures::stream::{BoxStream, StreamExt};
use prost::Message as _;

use crate::error::{Error, Result};
use crate::trace::TraceContext;

/// Shortest wait worth a pull request; below it `fetch` returns what it has.
const MIN_PULL_WAIT: Duration = Duration::from_millis(10);

/// The execution a message is about (`project/domain/name`; empty for messages about none), the
/// key under which [`Consumer::process_by_key`] keeps one execution's messages in order.
pub fn execution_key(envelope: &Envelope) -> String {
    use aloft_proto::aloft::v1::envelope::Body;
    let node_exec = |n: Option<&aloft_proto::flyteidl::core::NodeExecutionIdentifier>| {
        n.and_then(|n| n.execution_id.as_ref()).cloned()
    };
    let id = match &envelope.body {
        Some(Body::Execute(cmd)) => cmd.execution_id.clone(),
        Some(Body::Abort(cmd)) => cmd.execution_id.clone(),
        Some(Body::Wake(cmd)) => cmd.execution_id.clone(),
        Some(Body::Signal(notice)) => notice.id.as_ref().and_then(|s| s.execution_id.clone()),
        Some(Body::TaskRun(run)) => node_exec(run.id.as_ref().and_then(|t| t.node_execution_id.as_ref())),
        Some(Body::WorkflowEvent(ev)) => ev.execution_id.clone(),
        Some(Body::NodeEvent(ev)) => node_exec(ev.id.as_ref()),
        Some(Body::TaskEvent(ev)) => node_exec(ev.parent_node_execution_id.as_ref()),
        Some(Body::SlaBreach(b)) => b.execution_id.clone(),
        None => None,
    };
    id.map(|id| format!("{}/{}/{}", id.project, id.domain, id.name)).unwrap_or_default()
}

/// A durable pull consumer on one stream.
pub struct Consumer {
    pub(crate) inner: PullConsumer,
    name: String,
    stream: String,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer").field("name", &self.name).field("stream", &self.stream).finish()
    }
}

impl Consumer {
    pub(crate) fn new(inner: PullConsumer, name: String, stream: String) -> Consumer {
        Consumer { inner, name, stream }
    }

    /// The durable name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The stream it reads.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// Pulls up to `max` messages: what is available now, or else the first to arrive within
    /// `wait` together with whatever is available right after it. Returns as soon as it has
    /// something, possibly nothing after `wait`. Undecodable messages are terminated and left out.
    pub async fn fetch(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let (_, mut out) = self.pull(self.inner.fetch().max_messages(max).messages()).await?;
        let deadline = Instant::now() + wait;
        while out.is_empty() {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining < MIN_PULL_WAIT {
                break;
            }
            // Wait for one message only: a waiting request for `max` would hold the first ones
            // back until it fills or expires, and with `wait` near `ack_wait` they would be
            // redelivered before the caller even saw them.
            let (pulled, first) = self.pull(self.inner.batch().max_messages(1).expires(remaining).messages()).await?;
            if pulled == 0 {
                break;
            }
            out = first;
            if !out.is_empty() && max > 1 {
                out.extend(self.pull(self.inner.fetch().max_messages(max - 1).messages()).await?.1);
            }
        }
        Ok(out)
    }

    /// Drains one pull request: how many messages came, and the decodable ones.
    async fn pull<E>(
        &self,
        request: impl Future<Output = std::result::Result<Batch, E>>,
    ) -> Result<(usize, Vec<Delivery>)>
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        let mut batch = request.await.map_err(|e| self.pull_error(Box::new(e)))?;
        let (mut pulled, mut out) = (0, Vec::new());
        while let Some(message) = batch.next().await {
            let message = message.map_err(|e| self.pull_error(e))?;
            pulled += 1;
            if let Some(delivery) = Delivery::decode(message, &self.name).await {
                out.push(delivery);
            }
        }
        Ok((pulled, out))
    }

    /// A continuous stream of deliveries, kept topped up in the background. Undecodable messages
    /// are terminated and skipped. An `Err` item (e.g. missed heartbeats while the connection
    /// is down) is not the end: keep polling; the stream ends only when the consumer is gone.
    pub async fn messages(&self) -> Result<Deliveries> {
        let messages = self.inner.messages().await.map_err(|e| self.pull_error(Box::new(e)))?;
        let (name, stream) = (self.name.clone(), self.stream.clone());
        let inner = messages
            .filter_map(move |item| {
                let (name, stream) = (name.clone(), stream.clone());
                async move {
                    match item {
                        Ok(message) => Delivery::decode(message, &name).await.map(Ok),
                        Err(e) => Some(Err(Error::Pull { consumer: name, stream, source: Box::new(e) })),
                    }
                }
            })
            .boxed();
        Ok(Deliveries { inner })
    }

    fn pull_error(&self, source: Box<dyn std::error::Error + Send + Sync>) -> Error {
        Error::Pull { consumer: self.name.clone(), stream: self.stream.clone(), source }
    }
}

/// The stream returned by [`Consumer::messages`].
pub struct Deliveries {
    inner: BoxStream<'static, Result<Delivery>>,
}

impl Deliveries {
    /// The next delivery; `None` once the consumer is gone.
    pub async fn next(&mut self) -> Option<Result<Delivery>> {
        self.inner.next().await
    }
}

impl futures::Stream for Deliveries {
    type Item = Result<Delivery>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx)
    }
}

/// One delivered envelope and the means to settle it: exactly one of [`ack`](Delivery::ack),
/// [`nak`](Delivery::nak), [`nak_with_delay`](Delivery::nak_with_delay) or
/// [`term`](Delivery::term). Dropping it unsettled means redelivery after `ack_wait`.
pub struct Delivery {
    envelope: Envelope,
    subject: String,
    headers: HashMap<String, String>,
    trace: TraceContext,
    delivered: u64,
    stream_sequence: u64,
    acker: Arc<Acker>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("id", &self.envelope.id)
            .field("subject", &self.subject)
            .field("delivered", &self.delivered)
            .field("stream_sequence", &self.stream_sequence)
            .finish()
    }
}

impl Delivery {
    /// Decodes a message, or terminates it and returns `None` when it is not an envelope:
    /// redelivering a message that can never decode would only burn `max_deliver` attempts and
    /// block the consumer's ack-pending slots.
    async fn decode(message: async_nats::jetstream::Message, consumer: &str) -> Option<Delivery> {
        let (delivered, stream_sequence) = match message.info() {
            Ok(info) => (u64::try_from(info.delivered).unwrap_or(0), info.stream_sequence),
            Err(_) => (0, 0),
        };
        let (message, acker) = message.split();
        let subject = message.subject.to_string();
        match Envelope::decode(message.payload.clone()) {
            Ok(envelope) => {
                let headers = headers_map(message.headers.as_ref());
                let trace = TraceContext::from_map(&headers);
                Some(Delivery { envelope, subject, headers, trace, delivered, stream_sequence, acker: Arc::new(acker) })
            }
            Err(e) => {
                tracing::warn!(
                    %subject, stream_sequence, delivered, consumer, error = %e,
                    "terminating message that is not an aloft envelope"
                );
                if let Err(e) = acker.double_ack_with(AckKind::Term).await {
                    tracing::warn!(%subject, stream_sequence, consumer, error = %e, "cannot terminate undecodable message");
                }
                None
            }
        }
    }

    /// The decoded envelope.
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// The subject it was published on.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// All message headers (first value of each), including `Nats-Msg-Id` and trace context.
    pub fn headers(&self) -> &HashMap<String, String> {
        &self.headers
    }

    /// W3C trace context sent by the publisher (empty when none was).
    pub fn trace(&self) -> &TraceContext {
        &self.trace
    }

    /// Makes `span` continue the publisher's trace (call it right after creating the span, before
    /// entering it), and fills its `trace_id` field if it declares one; what the handler then
    /// publishes carries the same trace.
    pub fn continue_trace(&self, span: &tracing::Span) {
        aloft_runtime::telemetry::continue_trace(span, &self.headers);
    }

    /// A `consume` span for handling this delivery, continuing the publisher's trace.
    pub fn span(&self, consumer: &str) -> tracing::Span {
        let span = tracing::info_span!(
            "consume",
            otel.name = %format!("{consumer} process"),
            otel.kind = "consumer",
            messaging.system = "nats",
            messaging.destination.name = %self.subject,
            messaging.consumer.group.name = %consumer,
            messaging.message.id = %self.envelope.id,
            delivered = self.delivered,
            trace_id = tracing::field::Empty,
        );
        self.continue_trace(&span);
        span
    }

    /// Which delivery this is: 1 the first time, higher after a nak or an expired `ack_wait`.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// The message's sequence number in its stream.
    pub fn stream_sequence(&self) -> u64 {
        self.stream_sequence
    }

    /// Done: the message is not delivered again (and leaves a work-queue stream). Waits for the
    /// server to confirm, so a returned `Ok` means it will not come back.
    pub async fn ack(self) -> Result<()> {
        self.settle(AckKind::Ack, "ack").await
    }

    /// Not now: redeliver as soon as possible.
    pub async fn nak(self) -> Result<()> {
        self.settle(AckKind::Nak(None), "nak").await
    }

    /// Not now: redeliver after `delay` (counts as a delivery towards `max_deliver`).
    pub async fn nak_with_delay(self, delay: Duration) -> Result<()> {
        self.settle(AckKind::Nak(Some(delay)), "nak").await
    }

    /// Never: stop redelivering without treating it as processed (bad command, permanent failure).
    pub async fn term(self) -> Result<()> {
        self.settle(AckKind::Term, "term").await
    }

    /// Still working: restarts this message's `ack_wait` timer. Long work sends it every
    /// `ack_wait / 3` or so, or uses [`Delivery::keep_alive`].
    pub async fn in_progress(&self) -> Result<()> {
        self.settle(AckKind::Progress, "in_progress").await
    }

    /// Sends [`Delivery::in_progress`] every `every` in a background task until the returned
    /// guard is dropped. Drop it before settling the delivery.
    pub fn keep_alive(&self, every: Duration) -> KeepAlive {
        let acker = Arc::clone(&self.acker);
        let (subject, stream_sequence) = (self.subject.clone(), self.stream_sequence);
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The first tick is immediate; the message was only just delivered.
            ticks.tick().await;
            loop {
                ticks.tick().await;
                // A missed heartbeat is not fatal: the next one may get through before ack_wait.
                if let Err(e) = acker.ack_with(AckKind::Progress).await {
                    tracing::warn!(%subject, stream_sequence, error = %e, "cannot send in-progress heartbeat");
                }
            }
        });
        KeepAlive { task }
    }

    async fn settle(&self, kind: AckKind, action: &'static str) -> Result<()> {
        self.acker.double_ack_with(kind).await.map_err(|source| Error::Ack {
            action,
            subject: self.subject.clone(),
            stream_sequence: self.stream_sequence,
            source,
        })
    }
}

/// Guard of a [`Delivery::keep_alive`] heartbeat task; dropping it stops the heartbeats.
#[derive(Debug)]
pub struct KeepAlive {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for KeepAlive {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn headers_map(headers: Option<&async_nats::HeaderMap>) -> HashMap<String, String> {
    headers
        .map(|h| {
            h.iter()
                .filter_map(|(name, values)| values.first().map(|v| (name.to_string(), v.as_str().to_string())))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_map_keeps_first_values() {
        let mut h = async_nats::HeaderMap::new();
        h.insert("Nats-Msg-Id", "a");
        h.append("traceparent", "t1");
        h.append("traceparent", "t2");
        let map = headers_map(Some(&h));
        assert_eq!(map["Nats-Msg-Id"], "a");
        assert_eq!(map["traceparent"], "t1");
        assert!(headers_map(None).is_empty());
    }
}

/// What a handler decided about one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    /// Applied: ack it.
    Done,
    /// Can never be applied (malformed, or refers to something corrupt): terminate it, with why.
    Drop(String),
    /// Not applied now (a dependency is down): redeliver after the delay, with why.
    Retry(String, Duration),
}

impl Consumer {
    /// Pulls batches of up to `batch` messages until `shutdown` is cancelled, and settles each one
    /// as `handle` decides, one after another. A batch in hand is finished even if shutdown
    /// arrives meanwhile; a failed fetch is retried after a short pause. At-least-once: a message
    /// is acked only after its handler returned [`Handled::Done`].
    pub async fn process<F, Fut>(&self, batch: usize, shutdown: &aloft_runtime::Shutdown, handle: F)
    where
        F: FnMut(Envelope) -> Fut,
        Fut: std::future::Future<Output = Handled>,
    {
        self.process_by_key(batch, 1, shutdown, |_| String::new(), handle).await
    }

    /// [`Consumer::process`], with the messages of a batch that have different keys handled
    /// concurrently (up to `concurrency` keys at once) and those with the same key in order.
    /// A scheduler keyed by execution applies one execution's events in order while a hundred
    /// executions progress side by side, instead of each waiting for all the others' events.
    pub async fn process_by_key<K, F, Fut>(
        &self,
        batch: usize,
        concurrency: usize,
        shutdown: &aloft_runtime::Shutdown,
        key: K,
        mut handle: F,
    ) where
        K: Fn(&Envelope) -> String,
        F: FnMut(Envelope) -> Fut,
        Fut: std::future::Future<Output = Handled>,
    {
        loop {
            let fetched = tokio::select! {
                _ = shutdown.cancelled() => break,
                b = self.fetch(batch, Duration::from_secs(1)) => b,
            };
            let deliveries = match fetched {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(error = %e, consumer = self.name(), "fetch failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            // Futures are lazy: creating them all now runs nothing; each group polls its own in
            // order.
            let mut groups: Vec<(String, Vec<(Delivery, _)>)> = Vec::new();
            for d in deliveries {
                let k = key(d.envelope());
                let work = handle(d.envelope().clone());
                match groups.iter_mut().find(|(g, _)| *g == k) {
                    Some((_, items)) => items.push((d, work)),
                    None => groups.push((k, vec![(d, work)])),
                }
            }
            futures::stream::iter(groups)
                .for_each_concurrent(concurrency.max(1), |(_, items)| async move {
                    for (d, work) in items {
                        self.settle(d, work).await;
                    }
                })
                .await;
        }
    }

    async fn settle(&self, d: Delivery, work: impl std::future::Future<Output = Handled>) {
        let id = d.envelope().id.clone();
        let span = d.span(self.name());
        match tracing::Instrument::instrument(work, span).await {
            Handled::Done => {
                if let Err(e) = d.ack().await {
                    tracing::warn!(error = %e, %id, "ack failed; the message will be redelivered and found done");
                }
            }
            Handled::Drop(reason) => {
                tracing::error!(%reason, %id, consumer = self.name(), "message cannot be applied; dropped");
                let _ = d.term().await;
            }
            Handled::Retry(reason, delay) => {
                tracing::warn!(%reason, %id, consumer = self.name(), "message not applied; retrying later");
                let _ = d.nak_with_delay(delay).await;
            }
        }
    }
}
