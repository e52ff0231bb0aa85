//! The Aloft workflow compiler: turns a registered `WorkflowSpec` (or a dynamic task's
//! `DynamicJobSpec`) into the `CompiledWorkflowClosure` that FlyteAdmin stores and Propeller runs,
//! validating it the way flytepropeller's compiler does.
//!
//! Compilation adds the synthetic `start-node` and `end-node`, rewrites workflow-input promises to
//! `start-node`, fills every node's `upstream_node_ids` and the workflow's `connections`, checks
//! bindings against interfaces with [`types_castable`], rejects cycles, and gathers every task the
//! workflow references (at any depth) into the closure.
//!
//! This crate is pure and synchronous: registered tasks and launch plans come in through
//! [`Resolver`]; it performs no I/O and keeps no state between calls.

// Compile errors are built at most once per failed compilation, so their size (a few strings) costs
// nothing worth boxing them for.
#![allow(clippy::result_large_err)]

mod compile;
mod error;
mod synth;
mod types;

use aloft_proto::flyteidl::{admin, core};

pub use error::{CompileError, Site};
pub use synth::{TASK_WORKFLOW_NODE_ID, synthesize_task_workflow};
pub use types::{describe_type, types_castable};

/// The synthetic node whose outputs are the workflow inputs.
pub const START_NODE_ID: &str = "start-node";

/// The synthetic node whose inputs are the workflow outputs.
pub const END_NODE_ID: &str = "end-node";

/// Looks up registered entities the workflow references.
pub trait Resolver {
    /// The registered task with exactly this id.
    fn task(&self, id: &core::Identifier) -> Option<core::TaskTemplate>;
    /// The interface of the registered launch plan with exactly this id: its expected inputs and
    /// its workflow's outputs.
    fn launch_plan_interface(&self, id: &core::Identifier) -> Option<core::TypedInterface>;
}

/// Compiles a workflow spec as FlyteAdmin's `CreateWorkflow` does.
///
/// `primary` is the compiled template, `sub_workflows` one compiled workflow per distinct
/// `spec.sub_workflows` entry (in spec order), `tasks` every referenced task in first-reference
/// order with the id exactly as referenced, and `launch_plans` the referenced launch plans (id and
/// interface only).
pub fn compile_workflow(
    spec: &admin::WorkflowSpec,
    resolver: &dyn Resolver,
) -> Result<core::CompiledWorkflowClosure, CompileError> {
    let template = spec.template.as_ref().ok_or(CompileError::MissingTemplate)?;
    compile::compile(template, &spec.sub_workflows, &[], resolver)
}

/// Compiles the `DynamicJobSpec` a dynamic task returned, as the workflow Propeller runs under the
/// dynamic node `parent_node_id`.
///
/// The primary workflow has the id [`dynamic_workflow_id`]`(parent_node_id)`, `interface` (the
/// dynamic task's interface), `spec.nodes` and `spec.outputs`. Tasks come from `spec.tasks` first
/// (they need no registration), then from `resolver`; sub-workflows come from `spec.subworkflows`.
pub fn compile_dynamic(
    spec: &core::DynamicJobSpec,
    parent_node_id: &str,
    interface: &core::TypedInterface,
    resolver: &dyn Resolver,
) -> Result<core::CompiledWorkflowClosure, CompileError> {
    let template = core::WorkflowTemplate {
        id: Some(dynamic_workflow_id(parent_node_id)),
        interface: Some(interface.clone()),
        nodes: spec.nodes.clone(),
        outputs: spec.outputs.clone(),
        ..Default::default()
    };
    compile::compile(&template, &spec.subworkflows, &spec.tasks, resolver)
}

/// The id of the workflow compiled from a dynamic node's job spec: a `WORKFLOW` named
/// `dynamic_<parent node id>` (Propeller's naming) with empty project, domain and version, which
/// the caller may fill from the execution when it stores the closure.
pub fn dynamic_workflow_id(parent_node_id: &str) -> core::Identifier {
    core::Identifier {
        resource_type: core::ResourceType::Workflow as i32,
        name: format!("dynamic_{parent_node_id}"),
        ..Default::default()
    }
}
