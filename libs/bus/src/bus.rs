//! The connected bus: stream setup, typed publish, durable consumers and key-value buckets.

use std::sync::Arc;

use aloft_proto::aloft::v1::Envelope;
use async_nats::jetstream::{self, consumer, message::PublishMessage, stream};
use prost::Message as _;

use crate::config::BusConfig;
use crate::consumer::Consumer;
use crate::error::{Error, Result};
use crate::kv::KvBucket;
use crate::topology::{Retention, StreamKind, StreamSpec, Topology, is_valid_name, message_id};
use crate::trace::TraceContext;

/// Header carrying the envelope id; the server drops a second message with the same id inside
/// the stream's duplicate window.
pub const MSG_ID_HEADER: &str = "Nats-Msg-Id";

/// A connection to NATS JetStream shaped by a [`BusConfig`]. Cheap to clone; clones share the
/// connection.
#[derive(Clone)]
pub struct Bus {
    js: jetstream::Context,
    config: Arc<BusConfig>,
    topology: Arc<Topology>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus").field("url", &self.config.url).field("topology", &self.topology).finish()
    }
}

/// The server's answer to a publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// Subject the envelope was sent to.
    pub subject: String,
    /// Stream that stored it.
    pub stream: String,
    /// Its sequence in that stream (for a duplicate: the sequence of the original).
    pub sequence: u64,
    /// True when the server had already stored a message with this id inside the duplicate
    /// window and dropped this one.
    pub duplicate: bool,
}

/// A message sent with [`Bus::send`] whose storage is not confirmed yet.
pub struct Unconfirmed {
    ack: jetstream::context::PublishAckFuture,
    id: String,
    subject: String,
}

impl std::fmt::Debug for Unconfirmed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unconfirmed").field("id", &self.id).field("subject", &self.subject).finish_non_exhaustive()
    }
}

impl Unconfirmed {
    /// Waits for the PubAck: only it says the message is stored (and whether it was a duplicate).
    pub async fn confirm(self) -> Result<Published> {
        let Unconfirmed { ack, id, subject } = self;
        let ack =
            ack.await.map_err(|e| Error::Publish { id: id.clone(), subject: subject.clone(), source: Box::new(e) })?;
        tracing::debug!(%subject, id, stream = %ack.stream, sequence = ack.sequence, duplicate = ack.duplicate, "published");
        Ok(Published { subject, stream: ack.stream, sequence: ack.sequence, duplicate: ack.duplicate })
    }
}

impl Bus {
    /// Validates the config and connects, failing within `connect_timeout` (with the URL in the
    /// error) when the server is unreachable. Does not create streams: call [`Bus::ensure`].
    pub async fn connect(config: BusConfig) -> Result<Bus> {
        config.validate()?;
        let options = async_nats::ConnectOptions::new()
            .name(format!("aloft-{}", config.subject_prefix))
            .connection_timeout(config.connect_timeout);
        // The client's own timeout covers one TCP + handshake attempt; this outer bound also
        // covers name resolution and several resolved addresses, so startup can never hang.
        let client = match tokio::time::timeout(config.connect_timeout, options.connect(config.url.as_str())).await {
            Err(_) => {
                return Err(Error::ConnectTimeout { url: config.url.clone(), timeout: config.connect_timeout });
            }
            Ok(Err(e)) => {
                return Err(Error::Connect { url: config.url.clone(), source: Box::new(e) });
            }
            Ok(Ok(client)) => client,
        };
        let topology = Topology::new(&config);
        tracing::debug!(url = %config.url, stream_prefix = %config.stream_prefix, "connected to nats");
        Ok(Bus { js: jetstream::new(client), config: Arc::new(config), topology: Arc::new(topology) })
    }

    /// The configuration this bus was connected with.
    pub fn config(&self) -> &BusConfig {
        &self.config
    }

    /// Stream names and subjects.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// The underlying NATS client, for what the bus does not wrap (core request/reply, raw
    /// publishes in tests).
    pub fn client(&self) -> async_nats::Client {
        self.js.client()
    }

    /// Creates the COMMANDS, TASKS and EVENTS streams, or updates them to the current config.
    /// Idempotent: every service calls it at startup, in any order.
    pub async fn ensure(&self) -> Result<()> {
        for spec in self.topology.stream_specs() {
            let name = spec.name.clone();
            self.js
                .create_or_update_stream(stream_config(spec))
                .await
                .map_err(|e| Error::Stream { stream: name.clone(), source: Box::new(e) })?;
            tracing::debug!(stream = %name, "stream ensured");
        }
        Ok(())
    }

    /// Deletes every stream and KV bucket of this topology's prefix (tests and short-lived
    /// environments clean up with it; never called by the services). Returns how many were deleted.
    pub async fn teardown(&self) -> Result<usize> {
        use futures::TryStreamExt;
        let prefix = format!("{}_", self.topology.stream_prefix());
        let kv_prefix = format!("KV_{prefix}");
        let names: Vec<String> = self
            .js
            .stream_names()
            .try_collect()
            .await
            .map_err(|e| Error::Stream { stream: format!("{prefix}*"), source: Box::new(e) })?;
        let mut deleted = 0;
        for name in names.into_iter().filter(|n| n.starts_with(&prefix) || n.starts_with(&kv_prefix)) {
            self.js
                .delete_stream(&name)
                .await
                .map_err(|e| Error::Stream { stream: name.clone(), source: Box::new(e) })?;
            deleted += 1;
        }
        Ok(deleted)
    }

    /// Publishes an envelope on the subject its body implies and waits for the server to store
    /// it. Republishing the same envelope id is safe: the server reports a duplicate and keeps
    /// one copy.
    pub async fn publish(&self, envelope: &Envelope) -> Result<Published> {
        self.publish_with_trace(envelope, &TraceContext::default()).await
    }

    /// [`Bus::publish`], carrying a W3C trace context in the `traceparent`/`tracestate` headers.
    /// An empty context means the current span's (so [`Bus::publish`] passes on the trace of
    /// the request or message being handled).
    pub async fn publish_with_trace(&self, envelope: &Envelope, trace: &TraceContext) -> Result<Published> {
        self.send_with_trace(envelope, trace).await?.confirm().await
    }

    /// Sends `envelope` without waiting for the server to store it: the first half of
    /// [`Bus::publish`]. Messages sent one after another on this bus are stored in that order, so
    /// a handler that publishes several can send them all and then [`Unconfirmed::confirm`] each,
    /// paying one round trip instead of one per message. Nothing is known to be stored before
    /// its confirmation.
    pub async fn send(&self, envelope: &Envelope) -> Result<Unconfirmed> {
        self.send_with_trace(envelope, &TraceContext::default()).await
    }

    async fn send_with_trace(&self, envelope: &Envelope, trace: &TraceContext) -> Result<Unconfirmed> {
        let subject = self.topology.subject_for(envelope)?;
        let id = message_id(envelope)?;
        let mut message = PublishMessage::build().payload(envelope.encode_to_vec().into()).message_id(id);
        let current;
        let trace = if trace.is_empty() {
            current = TraceContext::from_map(&aloft_runtime::telemetry::current_headers());
            &current
        } else {
            trace
        };
        for (name, value) in trace.to_headers() {
            message = message.header(name, value);
        }
        let ack = self.js.send_publish(subject.clone(), message).await.map_err(|e| Error::Publish {
            id: id.to_string(),
            subject: subject.clone(),
            source: Box::new(e),
        })?;
        Ok(Unconfirmed { ack, id: id.to_string(), subject })
    }

    /// Creates (or updates to this config) the durable pull consumer `name` on a stream and
    /// returns a handle to pull from. Every process pulling from the same durable shares its
    /// messages: that is how a service scales out.
    ///
    /// `filter_subjects` narrows the consumer (empty: the whole stream); each must lie inside the
    /// stream. On the work-queue streams (commands, tasks) two different durables must not have
    /// overlapping filters; the server refuses the second.
    ///
    /// Every consumer acks explicitly, starts from the first message still in the stream, and
    /// gives a message up after `max_deliver` deliveries.
    pub async fn consumer(&self, name: &str, filter_subjects: &[String], kind: StreamKind) -> Result<Consumer> {
        let stream = self.topology.stream_name(kind);
        if !is_valid_name(name) {
            return Err(Error::Config(format!(
                "consumer name {name:?} on stream {stream} must be non-empty letters, digits, '_' or '-'"
            )));
        }
        self.topology.check_filters(kind, filter_subjects)?;
        let config = consumer_config(name, filter_subjects, kind, &self.config);
        let consumer_error = |e: Box<dyn std::error::Error + Send + Sync>| Error::Consumer {
            consumer: name.to_string(),
            stream: stream.clone(),
            source: e,
        };
        // Create-or-update: the same call with the same config is a no-op, a changed ack_wait or
        // filter is applied in place, keeping the consumer's position.
        let inner = self
            .js
            .create_consumer_on_stream(config, stream.as_str())
            .await
            .map_err(|e| consumer_error(Box::new(e)))?;
        tracing::debug!(consumer = name, %stream, ?filter_subjects, "consumer ensured");
        Ok(Consumer::new(inner, name.to_string(), stream))
    }

    /// Creates (or opens) the key-value bucket `<stream_prefix>_<name>`, for state that must
    /// survive a crash and be updated with compare-and-set.
    pub async fn kv_bucket(&self, name: &str) -> Result<KvBucket> {
        let bucket = self.topology.kv_bucket_name(name)?;
        let store = self
            .js
            .create_or_update_key_value(jetstream::kv::Config {
                bucket: bucket.clone(),
                description: format!("aloft {name} state"),
                // Compare-and-set only needs the latest revision; older ones are dead weight.
                history: 1,
                storage: stream::StorageType::File,
                num_replicas: self.config.replicas,
                ..Default::default()
            })
            .await
            .map_err(|e| Error::Kv { bucket: bucket.clone(), key: None, source: Box::new(e) })?;
        Ok(KvBucket::new(bucket, store))
    }
}

/// The async-nats stream config for a spec.
fn stream_config(spec: StreamSpec) -> stream::Config {
    stream::Config {
        name: spec.name,
        description: Some(spec.description),
        subjects: spec.subjects,
        retention: match spec.retention {
            Retention::WorkQueue => stream::RetentionPolicy::WorkQueue,
            Retention::Limits => stream::RetentionPolicy::Limits,
        },
        max_age: spec.max_age,
        duplicate_window: spec.duplicate_window,
        storage: stream::StorageType::File,
        num_replicas: spec.replicas,
        discard: stream::DiscardPolicy::Old,
        ..Default::default()
    }
}

/// The async-nats pull consumer config for a durable.
fn consumer_config(name: &str, filters: &[String], kind: StreamKind, config: &BusConfig) -> consumer::pull::Config {
    let (filter_subject, filter_subjects) = match filters {
        // A single filter goes in `filter_subject`, which servers before 2.10 also understand.
        [one] => (one.clone(), Vec::new()),
        many => (String::new(), many.to_vec()),
    };
    consumer::pull::Config {
        durable_name: Some(name.to_string()),
        description: Some(format!("aloft {} consumer", kind.suffix().to_lowercase())),
        deliver_policy: consumer::DeliverPolicy::All,
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: config.ack_wait,
        max_deliver: i64::from(config.max_deliver),
        filter_subject,
        filter_subjects,
        replay_policy: consumer::ReplayPolicy::Instant,
        num_replicas: config.replicas,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn consumer_config_is_explicit_ack_and_bounded() {
        let cfg = BusConfig { ack_wait: Duration::from_secs(3), max_deliver: 4, ..Default::default() };
        let one = consumer_config("sched", &["aloft.cmd.execute".into()], StreamKind::Commands, &cfg);
        assert_eq!(one.durable_name.as_deref(), Some("sched"));
        assert_eq!(one.ack_policy, consumer::AckPolicy::Explicit);
        assert_eq!(one.deliver_policy, consumer::DeliverPolicy::All);
        assert_eq!(one.ack_wait, Duration::from_secs(3));
        assert_eq!(one.max_deliver, 4);
        assert_eq!(one.filter_subject, "aloft.cmd.execute");
        assert!(one.filter_subjects.is_empty());
        let two = consumer_config("x", &["a.b".into(), "a.c".into()], StreamKind::Events, &cfg);
        assert_eq!(two.filter_subject, "");
        assert_eq!(two.filter_subjects, ["a.b", "a.c"]);
        let none = consumer_config("x", &[], StreamKind::Events, &cfg);
        assert!(none.filter_subject.is_empty() && none.filter_subjects.is_empty());
    }

    #[test]
    fn stream_config_maps_retention() {
        let topo = Topology::new(&BusConfig::default());
        let cmd = stream_config(topo.stream_spec(StreamKind::Commands));
        assert_eq!(cmd.retention, stream::RetentionPolicy::WorkQueue);
        assert_eq!(cmd.max_age, Duration::ZERO);
        let evt = stream_config(topo.stream_spec(StreamKind::Events));
        assert_eq!(evt.retention, stream::RetentionPolicy::Limits);
        assert_eq!(evt.max_age, Duration::from_secs(7 * 86400));
        assert_eq!(evt.duplicate_window, Duration::from_secs(120));
    }
}
