//! Pure decisions of the executor: no I/O, no clocks, no async. The adapters (`runner`,
//! `attempt`, `raw_container`, `app`) gather the facts, call these and perform what they return.

pub mod admission;
pub mod env;
pub mod events;
pub mod ids;
pub mod outcome;
pub mod quantity;
pub mod raw_io;
pub mod template;
pub mod text;
pub mod warm;

use aloft_proto::flyteidl::core::{Container, TaskTemplate, task_template};

/// The task's container, when it has one (not a pod template, SQL or plugin task).
pub fn container(task: &TaskTemplate) -> Option<&Container> {
    match &task.target {
        Some(task_template::Target::Container(c)) => Some(c),
        _ => None,
    }
}

/// The task as sent cannot run (bad resource quantity, unknown template input, missing
/// container, unparsable raw-container output): a user error, never retried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SpecError(String);

impl SpecError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        SpecError(message.into())
    }

    /// The same error with `what: ` in front.
    pub fn context(self, what: &str) -> Self {
        SpecError(format!("{what}: {}", self.0))
    }
}
