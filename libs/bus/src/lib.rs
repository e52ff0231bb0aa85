//! The Aloft event bus on NATS JetStream: the topology as code, typed publish of
//! [`Envelope`](aloft_proto::aloft::v1::Envelope)s, durable pull consumers with explicit
//! settlement, and compare-and-set key-value buckets.
//!
//! Delivery is at-least-once. Publishing is deduplicated by envelope id (`Nats-Msg-Id`) inside the
//! stream's duplicate window, so a publisher may always retry; consumers must be idempotent,
//! because a message whose ack was lost comes back.
//!
//! This crate owns the wire shape of the bus (stream names, subjects, headers). It must not hold
//! business logic: which command to send or how to react to an event belongs to the services.

mod bus;
mod config;
mod consumer;
mod error;
mod kv;
mod lag;
mod topology;
mod trace;

pub use bus::{Bus, MSG_ID_HEADER, Published, Unconfirmed};
pub use config::BusConfig;
pub use consumer::{Consumer, Deliveries, Delivery, Handled, KeepAlive, execution_key};
pub use error::{BoxError, Error, Result};
pub use kv::{KvBucket, KvEntry};
pub use lag::{LagGauges, LagLabels, LagProbe, watch_lag};
pub use topology::{
    EventKind, Retention, StreamKind, StreamSpec, Topology, is_valid_name, is_valid_subject_prefix, message_id,
    subject_is_subset, subject_token,
};
pub use trace::{TRACEPARENT, TRACESTATE, TraceContext, is_valid_traceparent};
