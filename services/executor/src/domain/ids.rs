//! Which attempt a task run is, from its `TaskExecutionIdentifier`.

use aloft_proto::aloft::v1::TaskRunCommand;
use aloft_proto::flyteidl::core::WorkflowExecutionIdentifier;

use super::SpecError;

/// One execution: `(project, domain, name)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExecutionKey {
    /// Project.
    pub project: String,
    /// Domain.
    pub domain: String,
    /// Execution name.
    pub name: String,
}

impl ExecutionKey {
    /// The key of a flyteidl execution id.
    pub fn of(id: &WorkflowExecutionIdentifier) -> Self {
        ExecutionKey { project: id.project.clone(), domain: id.domain.clone(), name: id.name.clone() }
    }
}

impl std::fmt::Display for ExecutionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.project, self.domain, self.name)
    }
}

/// One attempt of one node of one execution.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AttemptId {
    /// The execution.
    pub execution: ExecutionKey,
    /// The node id (Flyte's unique id inside sub-structures).
    pub node_id: String,
    /// The retry attempt, 0-based.
    pub attempt: u32,
}

impl AttemptId {
    /// The attempt a command runs; refused when the ids it needs are missing, since no event
    /// could be addressed without them.
    pub fn from_command(cmd: &TaskRunCommand) -> Result<AttemptId, SpecError> {
        let id = cmd.id.as_ref().ok_or_else(|| SpecError::new("task run has no id"))?;
        let node =
            id.node_execution_id.as_ref().ok_or_else(|| SpecError::new("task run id has no node_execution_id"))?;
        let exec = node
            .execution_id
            .as_ref()
            .ok_or_else(|| SpecError::new("task run id has no node_execution_id.execution_id"))?;
        for (field, value) in [
            ("execution_id.project", &exec.project),
            ("execution_id.domain", &exec.domain),
            ("execution_id.name", &exec.name),
            ("node_id", &node.node_id),
        ] {
            if value.is_empty() {
                return Err(SpecError::new(format!("task run id has an empty {field}")));
            }
        }
        if id.task_id.is_none() {
            return Err(SpecError::new("task run id has no task_id"));
        }
        if cmd.task.is_none() {
            return Err(SpecError::new("task run has no task template"));
        }
        Ok(AttemptId { execution: ExecutionKey::of(exec), node_id: node.node_id.clone(), attempt: id.retry_attempt })
    }

    /// A name safe for a directory: `<project>-<domain>-<name>-<node>-<attempt>`, characters
    /// other than letters, digits, `-`, `_` and `.` replaced by `_`.
    pub fn slug(&self) -> String {
        let raw = format!(
            "{}-{}-{}-{}-{}",
            self.execution.project, self.execution.domain, self.execution.name, self.node_id, self.attempt
        );
        raw.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' }).collect()
    }
}

impl std::fmt::Display for AttemptId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.execution, self.node_id, self.attempt)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use aloft_proto::flyteidl::core::{
        Identifier, NodeExecutionIdentifier, ResourceType, TaskExecutionIdentifier, TaskTemplate,
    };

    use super::*;

    /// A command for attempt 1 of node `n0` of `proj/dev/exec1`.
    pub(crate) fn command() -> TaskRunCommand {
        TaskRunCommand {
            id: Some(TaskExecutionIdentifier {
                task_id: Some(Identifier {
                    resource_type: ResourceType::Task as i32,
                    project: "proj".into(),
                    domain: "dev".into(),
                    name: "wf.t1".into(),
                    version: "v1".into(),
                    org: String::new(),
                }),
                node_execution_id: Some(NodeExecutionIdentifier {
                    node_id: "n0".into(),
                    execution_id: Some(WorkflowExecutionIdentifier {
                        project: "proj".into(),
                        domain: "dev".into(),
                        name: "exec1".into(),
                        org: String::new(),
                    }),
                }),
                retry_attempt: 1,
            }),
            task: Some(TaskTemplate { r#type: "python-task".into(), ..Default::default() }),
            inputs_uri: "/data/metadata/proj/dev/exec1/n0/data/inputs.pb".into(),
            output_prefix: "/data/metadata/proj/dev/exec1/n0/data/1".into(),
            raw_output_prefix: "/data/raw/proj/dev/exec1/n0/1".into(),
            checkpoint_prefix: "/data/raw/proj/dev/exec1/n0/1/_flytecheckpoints".into(),
            queue: "default".into(),
            array_index: -1,
            ..Default::default()
        }
    }

    #[test]
    fn ids_come_from_the_command() {
        let id = AttemptId::from_command(&command()).unwrap();
        assert_eq!(id.to_string(), "proj/dev/exec1/n0/1");
        assert_eq!(id.slug(), "proj-dev-exec1-n0-1");
        let odd = AttemptId { node_id: "n0/../x y".into(), ..id };
        assert_eq!(odd.slug(), "proj-dev-exec1-n0_.._x_y-1");
    }

    #[test]
    fn missing_ids_are_named() {
        let mut c = command();
        c.id.as_mut().unwrap().node_execution_id.as_mut().unwrap().node_id.clear();
        assert_eq!(AttemptId::from_command(&c).unwrap_err().to_string(), "task run id has an empty node_id");
        let mut c = command();
        c.task = None;
        assert_eq!(AttemptId::from_command(&c).unwrap_err().to_string(), "task run has no task template");
        assert_eq!(AttemptId::from_command(&TaskRunCommand::default()).unwrap_err().to_string(), "task run has no id");
    }
}
