//! Compile errors: one variant per rule, every message names the workflow and the offending element.

use std::fmt;

/// Where a binding lives: a node's input or one of the workflow's outputs (the end-node's inputs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Site {
    /// Input `input` of node `node`.
    Node {
        /// The node id as it appears in the compiled template (branch children are `<branch>-<child>`).
        node: String,
        /// The input variable.
        input: String,
    },
    /// Output `output` of the workflow being compiled.
    Output {
        /// The workflow output variable.
        output: String,
    },
}

impl Site {
    pub(crate) fn node(node: &str, input: &str) -> Self {
        Site::Node { node: node.to_owned(), input: input.to_owned() }
    }

    pub(crate) fn output(output: &str) -> Self {
        Site::Output { output: output.to_owned() }
    }

    fn undeclared(&self) -> String {
        match self {
            Site::Node { node, input } => {
                format!("node {node} has no input {input}, but it is bound")
            }
            Site::Output { output } => {
                format!("the workflow has no output {output}, but it is bound")
            }
        }
    }
}

impl fmt::Display for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Site::Node { node, input } => write!(f, "node {node} input {input}"),
            Site::Output { output } => write!(f, "output {output}"),
        }
    }
}

/// Why a workflow spec (or dynamic job spec) does not compile.
///
/// Compilation stops at the first error, found in a deterministic order: node ids, then each node in
/// declaration order (interface, then bindings), then the workflow outputs, the failure node, cycles,
/// and finally sub-workflows nobody references. Workflows are named `project/domain/name@version`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    /// `WorkflowSpec.template` is absent.
    #[error("workflow spec has no template")]
    MissingTemplate,

    /// A required field is absent or empty.
    #[error("workflow {workflow}: {location} is missing {field}")]
    MissingField {
        /// The workflow being compiled.
        workflow: String,
        /// What lacks the field, e.g. `node n1` or `branch node n2 case 1`.
        location: String,
        /// The field, e.g. `task_node.reference_id`.
        field: &'static str,
    },

    /// Two nodes of one workflow share an id.
    #[error("workflow {workflow}: duplicate node id {node}")]
    DuplicateNodeId {
        /// The workflow being compiled.
        workflow: String,
        /// The repeated id.
        node: String,
    },

    /// A node uses one of the ids the compiler adds itself.
    #[error("workflow {workflow}: node id {node} is reserved")]
    ReservedNodeId {
        /// The workflow being compiled.
        workflow: String,
        /// `start-node` or `end-node`.
        node: String,
    },

    /// An explicit `upstream_node_ids` entry names no node of the workflow.
    #[error("workflow {workflow}: node {node} depends on unknown node {upstream}")]
    UnknownUpstreamNode {
        /// The workflow being compiled.
        workflow: String,
        /// The dependent node.
        node: String,
        /// The missing upstream id.
        upstream: String,
    },

    /// A promise names a node that does not exist in the workflow.
    #[error("workflow {workflow}: {site} is bound to unknown node {upstream}")]
    BindingToUnknownNode {
        /// The workflow being compiled.
        workflow: String,
        /// The binding.
        site: Site,
        /// The missing producer id.
        upstream: String,
    },

    /// A promise names a variable its producer does not output.
    #[error("workflow {workflow}: {site} is bound to {} but {}", source_name(.upstream, .var), missing_output(.upstream, .var))]
    UnknownOutputVariable {
        /// The workflow being compiled.
        workflow: String,
        /// The binding.
        site: Site,
        /// The producer (`start-node` for workflow inputs).
        upstream: String,
        /// The variable the producer lacks.
        var: String,
    },

    /// A required input (or workflow output) has no binding.
    #[error("workflow {workflow}: {site} is required but not bound")]
    UnboundInput {
        /// The workflow being compiled.
        workflow: String,
        /// The unbound variable.
        site: Site,
    },

    /// A binding targets a variable the node's interface (or the workflow's outputs) does not declare.
    #[error("workflow {workflow}: {}", .site.undeclared())]
    UnknownInput {
        /// The workflow being compiled.
        workflow: String,
        /// The binding.
        site: Site,
    },

    /// The same variable is bound twice.
    #[error("workflow {workflow}: {site} is bound more than once")]
    DuplicateBinding {
        /// The workflow being compiled.
        workflow: String,
        /// The variable bound twice.
        site: Site,
    },

    /// The bound value's type cannot be cast to the declared type.
    #[error("workflow {workflow}: {site} expects {expected} but is bound to {source_desc} of type {actual}")]
    TypeMismatch {
        /// The workflow being compiled.
        workflow: String,
        /// The binding.
        site: Site,
        /// What the value comes from: `n0.o0`, `workflow input a`, `a literal`, ...
        source_desc: String,
        /// The declared type, readable (see [`describe_type`](crate::describe_type)).
        expected: String,
        /// The provided type, readable.
        actual: String,
    },

    /// A string literal bound to an enum input is not one of the enum's values.
    #[error("workflow {workflow}: {site} expects {expected} but is bound to the literal {value:?}")]
    InvalidEnumValue {
        /// The workflow being compiled.
        workflow: String,
        /// The binding.
        site: Site,
        /// The enum type, readable.
        expected: String,
        /// The literal.
        value: String,
    },

    /// The dependency graph has a cycle.
    #[error("workflow {workflow}: cycle detected through node {node} ({})", .path.join(" -> "))]
    Cycle {
        /// The workflow being compiled.
        workflow: String,
        /// A node on the cycle.
        node: String,
        /// The cycle, first and last element equal.
        path: Vec<String>,
    },

    /// A task node references a task that is neither registered nor shipped in the dynamic job spec.
    #[error("workflow {workflow}: node {node} references task {task} which is not registered")]
    UnknownTask {
        /// The workflow being compiled.
        workflow: String,
        /// The task node.
        node: String,
        /// `project/domain/name@version`.
        task: String,
    },

    /// A workflow node references a sub-workflow absent from the spec's sub-workflows.
    #[error(
        "workflow {workflow}: node {node} references sub-workflow {sub_workflow} which is not among the spec's sub-workflows"
    )]
    UnknownSubWorkflow {
        /// The workflow being compiled.
        workflow: String,
        /// The workflow node.
        node: String,
        /// `project/domain/name@version`.
        sub_workflow: String,
    },

    /// A sub-workflow contains itself, directly or through other sub-workflows.
    #[error("workflow {workflow}: node {node} references sub-workflow {sub_workflow} which contains itself")]
    RecursiveSubWorkflow {
        /// The workflow being compiled.
        workflow: String,
        /// The workflow node closing the loop.
        node: String,
        /// `project/domain/name@version`.
        sub_workflow: String,
    },

    /// The spec lists two different templates under one sub-workflow id.
    #[error("sub-workflow {sub_workflow} is defined more than once with different templates")]
    DuplicateSubWorkflow {
        /// `project/domain/name@version`.
        sub_workflow: String,
    },

    /// A workflow node references a launch plan that is not registered.
    #[error("workflow {workflow}: node {node} references launch plan {launch_plan} which is not registered")]
    UnknownLaunchPlan {
        /// The workflow being compiled.
        workflow: String,
        /// The workflow node.
        node: String,
        /// `project/domain/name@version`.
        launch_plan: String,
    },

    /// A branch node has no `if_else` or no first case.
    #[error("workflow {workflow}: branch node {node} has no cases")]
    BranchWithoutCases {
        /// The workflow being compiled.
        workflow: String,
        /// The branch node.
        node: String,
    },

    /// A branch node has neither an else node nor an else error.
    #[error("workflow {workflow}: branch node {node} has neither an else node nor an else error")]
    BranchWithoutDefault {
        /// The workflow being compiled.
        workflow: String,
        /// The branch node.
        node: String,
    },

    /// A branch condition reads a variable that is not one of the branch node's inputs.
    #[error("workflow {workflow}: branch node {node} condition reads {var} which is not one of its inputs")]
    UnknownConditionVariable {
        /// The workflow being compiled.
        workflow: String,
        /// The branch node.
        node: String,
        /// The operand variable.
        var: String,
    },

    /// A gate node has no condition (approve, signal or sleep).
    #[error("workflow {workflow}: gate node {node} has no condition")]
    GateWithoutCondition {
        /// The workflow being compiled.
        workflow: String,
        /// The gate node.
        node: String,
    },

    /// A signal gate's type is absent or malformed.
    #[error("workflow {workflow}: gate node {node} waits for signal {signal:?} with a missing or invalid type")]
    GateSignalType {
        /// The workflow being compiled.
        workflow: String,
        /// The gate node.
        node: String,
        /// The signal id.
        signal: String,
    },
}

fn source_name(upstream: &str, var: &str) -> String {
    if upstream == crate::START_NODE_ID { format!("workflow input {var}") } else { format!("{upstream}.{var}") }
}

fn missing_output(upstream: &str, var: &str) -> String {
    if upstream == crate::START_NODE_ID {
        format!("the workflow has no input {var}")
    } else {
        format!("node {upstream} has no output {var}")
    }
}

pub(crate) fn promise_source(upstream: &str, var: &str) -> String {
    source_name(upstream, var)
}
