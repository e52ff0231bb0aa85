//! The notifier's I/O: metadata's admin API, Slack over HTTP, the Lambda hook, and its own
//! delivery records.

pub mod lambda;
pub mod metadata;
pub mod slack;
pub mod store;
