//! Execution use cases: create, read, terminate, fetch data, and the event sink that keeps
//! executions, node executions and task attempts in step with what the scheduler and executors report.

// flyteidl marks several fields deprecated (spec.inputs, the UrlBlob halves of data responses,
// output URIs in closures) that flytekit 1.16 still reads or sends; we must keep filling them.
#![allow(deprecated)]

use aloft_proto::aloft::v1::{AbortCommand, Envelope, ExecuteCommand, envelope::Body};
use aloft_proto::flyteidl::admin::{
    self as admin, Execution, ExecutionClosure, ExecutionCreateRequest, ExecutionSpec, LaunchPlanClosure,
    LaunchPlanSpec, NodeExecution, NodeExecutionClosure, NodeExecutionMetaData, TaskExecution, TaskExecutionClosure,
    UrlBlob,
};
use aloft_proto::flyteidl::core::{
    self as core, Identifier, LiteralMap, NodeExecutionIdentifier, ResourceType, TaskExecutionIdentifier,
    WorkflowExecutionIdentifier, workflow_execution::Phase as WfPhase,
};
use aloft_proto::flyteidl::event::{NodeExecutionEvent, TaskExecutionEvent, WorkflowExecutionEvent};
use aloft_proto::flyteidl::service::{GetDataResponse, get_data_response};
use prost::Message;

use crate::adapters::store::{
    EXECUTION_COLUMNS, ExecutionRow, ListQuery, NODE_COLUMNS, NodeRow, TASK_COLUMNS, TaskRow,
};
use crate::app::{App, Page, decode, now_micros, timestamp};
use crate::domain::executions::{self as rules, NodeRecord, TaskRecord};
use crate::domain::{filters, ids};
use crate::error::{Error, Result};

/// How many times an event is re-applied when another writer changed the same record meanwhile.
const CONFLICT_RETRIES: usize = 20;

pub(crate) fn exec_display(id: &WorkflowExecutionIdentifier) -> String {
    format!("{}/{}/{}", id.project, id.domain, id.name)
}

pub(crate) fn validate_exec_id(
    id: Option<&WorkflowExecutionIdentifier>,
    what: &str,
) -> Result<WorkflowExecutionIdentifier> {
    let id = id.ok_or_else(|| Error::invalid(format!("{what}: missing execution id")))?;
    for (field, v) in [("project", &id.project), ("domain", &id.domain), ("name", &id.name)] {
        if v.is_empty() {
            return Err(Error::invalid(format!("{what}: id.{field} is empty")));
        }
    }
    Ok(id.clone())
}

fn node_id_parts(id: Option<&NodeExecutionIdentifier>, what: &str) -> Result<(WorkflowExecutionIdentifier, String)> {
    let id = id.ok_or_else(|| Error::invalid(format!("{what}: missing node execution id")))?;
    let exec = validate_exec_id(id.execution_id.as_ref(), what)?;
    if id.node_id.is_empty() {
        return Err(Error::invalid(format!("{what}: id.node_id is empty")));
    }
    Ok((exec, id.node_id.clone()))
}

impl App {
    pub(crate) fn bus(&self) -> Result<&aloft_bus::Bus> {
        self.bus
            .as_ref()
            .ok_or_else(|| Error::FailedPrecondition("executions need the bus: set config key `bus.url`".into()))
    }

    /// `R/metadata/<project>/<domain>/<name>`.
    pub fn execution_prefix(&self, id: &WorkflowExecutionIdentifier) -> String {
        self.blob.join(self.blob.root(), &format!("metadata/{}/{}/{}", id.project, id.domain, id.name))
    }

    async fn read_literal_map(&self, uri: &str) -> Result<(LiteralMap, i64)> {
        let bytes = self.blob.get(uri).await?;
        let map = LiteralMap::decode(bytes.as_ref())
            .map_err(|e| Error::Internal(format!("{uri} is not a LiteralMap: {e}")))?;
        Ok((map, bytes.len() as i64))
    }

    /// Reads a literal map for a data response; a missing file is "no data yet", not an error.
    async fn data(&self, uri: &str) -> Result<(Option<LiteralMap>, Option<UrlBlob>)> {
        if uri.is_empty() {
            return Ok((None, None));
        }
        match self.read_literal_map(uri).await {
            Ok((m, n)) => Ok((Some(m), Some(UrlBlob { url: uri.to_string(), bytes: n }))),
            Err(Error::Storage(e)) if e.is_not_found() => Ok((None, None)),
            Err(e) => Err(e),
        }
    }

    /// A dynamic node's workflow: the scheduler compiles `futures.pb` into `futures_compiled.pb`
    /// next to it (flytekit maps the dynamic node's children through this closure).
    async fn dynamic_workflow(&self, spec_uri: &str) -> Result<Option<admin::DynamicWorkflowNodeMetadata>> {
        let Some(dir) = spec_uri.strip_suffix("/futures.pb") else { return Ok(None) };
        let uri = format!("{dir}/futures_compiled.pb");
        let bytes = match self.blob.get(&uri).await {
            Ok(b) => b,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let compiled = aloft_proto::flyteidl::core::CompiledWorkflowClosure::decode(bytes.as_ref())
            .map_err(|e| Error::Internal(format!("{uri} is not a compiled workflow: {e}")))?;
        let id = compiled.primary.as_ref().and_then(|p| p.template.as_ref()).and_then(|t| t.id.clone());
        Ok(Some(admin::DynamicWorkflowNodeMetadata {
            id,
            compiled_workflow: Some(compiled),
            dynamic_job_spec_uri: spec_uri.to_string(),
        }))
    }

    /// The task id of a single-task execution becomes a synthesized workflow and launch plan, as
    /// FlyteAdmin does; both are registered once and reused.
    async fn launch_plan_for_task(&self, task_id: &Identifier) -> Result<Identifier> {
        let task = self.get_task(Some(task_id.clone())).await?;
        let template = task.closure.and_then(|c| c.compiled_task).and_then(|c| c.template).unwrap_or_default();
        let spec = aloft_compiler::synthesize_task_workflow(&template);
        let wf_id = spec
            .template
            .as_ref()
            .and_then(|t| t.id.clone())
            .ok_or_else(|| Error::Internal("synthesized workflow has no id".into()))?;
        match self.create_workflow(Some(wf_id.clone()), Some(spec)).await {
            Ok(()) | Err(Error::AlreadyExists(_)) => {}
            Err(e) => return Err(e),
        }
        let mut params = core::ParameterMap::default();
        for (name, var) in template.interface.and_then(|i| i.inputs).map(|v| v.variables).unwrap_or_default() {
            params.parameters.insert(
                name,
                core::Parameter { var: Some(var), behavior: Some(core::parameter::Behavior::Required(true)) },
            );
        }
        let lp_id = Identifier { resource_type: ResourceType::LaunchPlan as i32, ..wf_id.clone() };
        let lp = LaunchPlanSpec { workflow_id: Some(wf_id), default_inputs: Some(params), ..Default::default() };
        match self.create_launch_plan(Some(lp_id.clone()), Some(lp)).await {
            Ok(()) | Err(Error::AlreadyExists(_)) => Ok(lp_id),
            Err(e) => Err(e),
        }
    }

    /// CreateExecution: resolve, merge inputs, store, publish the execute command.
    pub async fn create_execution(&self, req: ExecutionCreateRequest) -> Result<WorkflowExecutionIdentifier> {
        let bus = self.bus()?.clone();
        if req.project.is_empty() || req.domain.is_empty() {
            return Err(Error::invalid("CreateExecution: project and domain are required"));
        }
        let spec = req.spec.clone().ok_or_else(|| Error::invalid("CreateExecution: spec is missing"))?;
        let target =
            spec.launch_plan.clone().ok_or_else(|| Error::invalid("CreateExecution: spec.launch_plan is missing"))?;
        if !req.name.is_empty() && (!ids::is_valid_token(&req.name) || req.name.len() > 63) {
            return Err(Error::invalid(format!(
                "CreateExecution: name `{}` may only contain letters, digits, - and _ (at most 63)",
                req.name
            )));
        }
        let lp_id = match ResourceType::try_from(target.resource_type) {
            Ok(ResourceType::LaunchPlan) => {
                ids::validate(Some(&target), ResourceType::LaunchPlan, "CreateExecution: spec.launch_plan")?
            }
            Ok(ResourceType::Task) => {
                let task_id = ids::validate(Some(&target), ResourceType::Task, "CreateExecution: spec.launch_plan")?;
                self.launch_plan_for_task(&task_id).await?
            }
            _ => return Err(Error::invalid("CreateExecution: spec.launch_plan must be a launch plan or a task id")),
        };
        self.ensure_scope_public(&req.project, &req.domain).await?;
        let lp = self.get_launch_plan(Some(lp_id.clone())).await?;
        let lp_spec = lp.spec.clone().unwrap_or_default();
        let lp_closure: LaunchPlanClosure = lp.closure.clone().unwrap_or_default();
        let wf_id =
            lp_spec.workflow_id.clone().ok_or_else(|| Error::Internal("launch plan without workflow".into()))?;
        let workflow = self.get_workflow(Some(wf_id.clone())).await?;
        let compiled = workflow
            .closure
            .and_then(|c| c.compiled_workflow)
            .ok_or_else(|| Error::Internal("workflow without closure".into()))?;

        let given = req.inputs.clone().or_else(|| spec.inputs.clone()).unwrap_or_default();
        let inputs = rules::merge_inputs(
            &ids::display(&lp_id),
            &lp_closure.expected_inputs.clone().unwrap_or_default(),
            &lp_spec.fixed_inputs.clone().unwrap_or_default(),
            &given,
        )?;

        let name = if req.name.is_empty() {
            use rand::Rng;
            let mut rng = rand::rng();
            rules::generate_name(|n| rng.random_range(0..n))
        } else {
            req.name.clone()
        };
        let id = WorkflowExecutionIdentifier {
            project: req.project.clone(),
            domain: req.domain.clone(),
            name: name.clone(),
            org: String::new(),
        };
        if self.store.get_execution(&id.project, &id.domain, &id.name).await?.is_some() {
            return Err(Error::AlreadyExists(format!("execution {} already exists", exec_display(&id))));
        }
        let prefix = self.execution_prefix(&id);
        let inputs_uri = self.blob.join(&prefix, "inputs.pb");
        let closure_uri = self.blob.join(&prefix, "closure.pb");
        self.blob.put(&closure_uri, compiled.encode_to_vec()).await?;
        self.blob.put(&inputs_uri, inputs.encode_to_vec()).await?;

        let now = now_micros();
        let mut stored_spec = spec.clone();
        stored_spec.inputs = None; // kept in inputs_uri, merged
        let mode = stored_spec.metadata.as_ref().map(|m| m.mode).unwrap_or(0);
        let closure = ExecutionClosure {
            phase: WfPhase::Queued as i32,
            created_at: Some(timestamp(now)),
            updated_at: Some(timestamp(now)),
            workflow_id: Some(wf_id.clone()),
            ..Default::default()
        };
        let row = ExecutionRow {
            project: id.project.clone(),
            domain: id.domain.clone(),
            name: name.clone(),
            launch_plan: target.name.clone(),
            workflow: wf_id.name.clone(),
            phase: WfPhase::Queued as i32,
            mode,
            spec: stored_spec.encode_to_vec(),
            closure: closure.encode_to_vec(),
            inputs_uri: inputs_uri.clone(),
            created_at: now,
            updated_at: now,
            version: 0,
        };
        if !self.store.insert_execution(&row).await? {
            return Err(Error::AlreadyExists(format!("execution {} already exists", exec_display(&id))));
        }

        // The effective spec: what the request left empty comes from the launch plan.
        let mut effective = stored_spec;
        if effective.labels.as_ref().is_none_or(|l| l.values.is_empty()) {
            effective.labels = lp_spec.labels.clone();
        }
        if effective.annotations.as_ref().is_none_or(|a| a.values.is_empty()) {
            effective.annotations = lp_spec.annotations.clone();
        }
        if effective.envs.as_ref().is_none_or(|e| e.values.is_empty()) {
            effective.envs = lp_spec.envs.clone();
        }
        if effective.max_parallelism == 0 {
            effective.max_parallelism = lp_spec.max_parallelism;
        }
        if effective.raw_output_data_config.as_ref().is_none_or(|r| r.output_location_prefix.is_empty()) {
            effective.raw_output_data_config = lp_spec.raw_output_data_config.clone();
        }
        if !effective.overwrite_cache {
            effective.overwrite_cache = lp_spec.overwrite_cache;
        }
        let raw_base = effective
            .raw_output_data_config
            .as_ref()
            .map(|r| r.output_location_prefix.trim_end_matches('/').to_string())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| self.blob.join(self.blob.root(), "raw"));
        let command = Envelope {
            id: format!("exec/{}/{}/{}", id.project, id.domain, id.name),
            created_at: Some(timestamp(now)),
            source: "metadata".into(),
            body: Some(Body::Execute(ExecuteCommand {
                execution_id: Some(id.clone()),
                workflow_id: Some(wf_id),
                launch_plan_id: Some(lp_id),
                closure_uri,
                inputs_uri,
                metadata_prefix: prefix,
                raw_output_prefix: format!("{raw_base}/{}/{}/{}", id.project, id.domain, id.name),
                spec: Some(effective),
            })),
        };
        if let Err(e) = bus.publish(&command).await {
            // Never leave a QUEUED execution nobody will run: record why it could not start.
            tracing::error!(execution = %exec_display(&id), error = %e, "cannot publish execute command");
            let failed = WorkflowExecutionEvent {
                execution_id: Some(id.clone()),
                producer_id: "metadata".into(),
                phase: WfPhase::Failed as i32,
                occurred_at: Some(timestamp(now_micros())),
                output_result: Some(aloft_proto::flyteidl::event::workflow_execution_event::OutputResult::Error(
                    core::ExecutionError {
                        code: "SchedulingFailed".into(),
                        message: format!("the execution could not be handed to the scheduler: {e}"),
                        kind: core::execution_error::ErrorKind::System as i32,
                        ..Default::default()
                    },
                )),
            };
            self.apply_workflow_event(&failed).await?;
            return Err(Error::Internal(format!("execution {} could not be scheduled: {e}", exec_display(&id))));
        }
        tracing::info!(execution = %exec_display(&id), "execution created");
        Ok(id)
    }

    fn execution_message(row: &ExecutionRow) -> Result<Execution> {
        Ok(Execution {
            id: Some(WorkflowExecutionIdentifier {
                project: row.project.clone(),
                domain: row.domain.clone(),
                name: row.name.clone(),
                org: String::new(),
            }),
            spec: Some(decode(&row.spec, "execution spec")?),
            closure: Some(decode(&row.closure, "execution closure")?),
        })
    }

    async fn execution_row(&self, id: &WorkflowExecutionIdentifier) -> Result<ExecutionRow> {
        self.store
            .get_execution(&id.project, &id.domain, &id.name)
            .await?
            .ok_or_else(|| Error::not_found(format!("execution {} does not exist", exec_display(id))))
    }

    /// RelaunchExecution: the same launch plan, spec and inputs again, as a new execution
    /// (mode RELAUNCH, pointing back at the original).
    pub async fn relaunch_execution(
        &self,
        req: admin::ExecutionRelaunchRequest,
    ) -> Result<WorkflowExecutionIdentifier> {
        use admin::execution_metadata::ExecutionMode;
        self.rerun(req.id.as_ref(), &req.name, ExecutionMode::Relaunch, req.overwrite_cache, "RelaunchExecution").await
    }

    /// RecoverExecution: like a relaunch (mode RECOVERED); the scheduler reuses the outputs of
    /// the nodes that succeeded in the original and runs only the rest.
    pub async fn recover_execution(&self, req: admin::ExecutionRecoverRequest) -> Result<WorkflowExecutionIdentifier> {
        use admin::execution_metadata::ExecutionMode;
        self.rerun(req.id.as_ref(), &req.name, ExecutionMode::Recovered, false, "RecoverExecution").await
    }

    async fn rerun(
        &self,
        id: Option<&WorkflowExecutionIdentifier>,
        name: &str,
        mode: admin::execution_metadata::ExecutionMode,
        overwrite_cache: bool,
        what: &str,
    ) -> Result<WorkflowExecutionIdentifier> {
        let original = validate_exec_id(id, what)?;
        let row = self.execution_row(&original).await?;
        let mut spec: admin::ExecutionSpec = decode(&row.spec, "execution spec")?;
        let (inputs, _) = self.read_literal_map(&row.inputs_uri).await?;
        let principal = spec.metadata.as_ref().map(|m| m.principal.clone()).unwrap_or_default();
        spec.metadata = Some(admin::ExecutionMetadata {
            mode: mode as i32,
            principal,
            reference_execution: Some(original.clone()),
            ..Default::default()
        });
        spec.overwrite_cache |= overwrite_cache;
        self.create_execution(admin::ExecutionCreateRequest {
            project: original.project.clone(),
            domain: original.domain.clone(),
            name: name.to_string(),
            spec: Some(spec),
            inputs: Some(inputs),
            org: String::new(),
        })
        .await
    }

    /// GetExecution.
    pub async fn get_execution(&self, id: Option<WorkflowExecutionIdentifier>) -> Result<Execution> {
        let id = validate_exec_id(id.as_ref(), "GetExecution")?;
        Self::execution_message(&self.execution_row(&id).await?)
    }

    /// ListExecutions.
    pub async fn list_executions(&self, req: &admin::ResourceListRequest) -> Result<Page<Execution>> {
        let scope = ids::validate_named(req.id.as_ref(), false, "ListExecutions")?;
        let mut f = filters::parse(&req.filters)?;
        if !scope.name.is_empty() {
            f.push(filters::Filter { op: filters::Op::Eq, field: "name".into(), values: vec![scope.name.clone()] });
        }
        let (limit, offset) = filters::page(req.limit, &req.token, 1000)?;
        let order_by = filters::order_by(req.sort_by.as_ref(), EXECUTION_COLUMNS, "created_at DESC")?;
        let rows = self
            .store
            .list_executions(&scope.project, &scope.domain, &ListQuery { filters: &f, order_by, limit, offset })
            .await?;
        let token = filters::next_token(offset, limit, rows.len());
        Ok(Page { items: rows.iter().map(Self::execution_message).collect::<Result<_>>()?, token })
    }

    /// GetExecutionData: inputs and (once succeeded) outputs inline, so clients need no store access.
    pub async fn get_execution_data(
        &self,
        id: Option<WorkflowExecutionIdentifier>,
    ) -> Result<admin::WorkflowExecutionGetDataResponse> {
        let id = validate_exec_id(id.as_ref(), "GetExecutionData")?;
        let row = self.execution_row(&id).await?;
        let (full_inputs, inputs) = self.data(&row.inputs_uri).await?;
        let closure: ExecutionClosure = decode(&row.closure, "execution closure")?;
        #[allow(deprecated)]
        let outputs_uri = match &closure.output_result {
            Some(admin::execution_closure::OutputResult::Outputs(b)) => match &b.data {
                Some(admin::literal_map_blob::Data::Uri(u)) => u.clone(),
                _ => String::new(),
            },
            _ => String::new(),
        };
        let (full_outputs, outputs) = self.data(&outputs_uri).await?;
        Ok(admin::WorkflowExecutionGetDataResponse { outputs, inputs, full_inputs, full_outputs })
    }

    /// TerminateExecution: records the cause and asks the scheduler to abort.
    pub async fn terminate_execution(&self, id: Option<WorkflowExecutionIdentifier>, cause: String) -> Result<()> {
        let id = validate_exec_id(id.as_ref(), "TerminateExecution")?;
        let row = self.execution_row(&id).await?;
        if rules::wf_terminal(row.phase) {
            return Err(Error::FailedPrecondition(format!(
                "execution {} has already finished ({})",
                exec_display(&id),
                WfPhase::try_from(row.phase).map(|p| p.as_str_name()).unwrap_or("UNKNOWN")
            )));
        }
        let cause = if cause.is_empty() { "terminated by user".to_string() } else { cause };
        let cmd = Envelope {
            id: format!("abort/{}/{}/{}", id.project, id.domain, id.name),
            created_at: Some(timestamp(now_micros())),
            source: "metadata".into(),
            body: Some(Body::Abort(AbortCommand {
                execution_id: Some(id.clone()),
                cause: cause.clone(),
                principal: String::new(),
            })),
        };
        self.bus()?.publish(&cmd).await.map_err(|e| Error::Internal(format!("cannot publish abort: {e}")))?;
        // Remember the cause now; the ABORTED phase arrives with the scheduler's event.
        for _ in 0..CONFLICT_RETRIES {
            let mut row = self.execution_row(&id).await?;
            let mut closure: ExecutionClosure = decode(&row.closure, "execution closure")?;
            #[allow(deprecated)]
            {
                closure.output_result =
                    Some(admin::execution_closure::OutputResult::AbortMetadata(admin::AbortMetadata {
                        cause: cause.clone(),
                        principal: String::new(),
                    }));
            }
            row.closure = closure.encode_to_vec();
            row.updated_at = now_micros();
            if self.store.update_execution(&row).await? {
                return Ok(());
            }
        }
        Err(Error::Internal("execution kept changing while terminating it".into()))
    }

    // ------------------------------------------------------------------ node executions

    fn node_message(exec: &WorkflowExecutionIdentifier, row: &NodeRow) -> Result<NodeExecution> {
        let mut closure: NodeExecutionClosure = decode(&row.closure, "node closure")?;
        closure.phase = row.phase;
        if closure.created_at.is_none() {
            closure.created_at = Some(timestamp(row.created_at));
        }
        Ok(NodeExecution {
            id: Some(NodeExecutionIdentifier { node_id: row.node_id.clone(), execution_id: Some(exec.clone()) }),
            input_uri: row.input_uri.clone(),
            closure: Some(closure),
            metadata: Some(decode::<NodeExecutionMetaData>(&row.metadata, "node metadata")?),
        })
    }

    async fn node_row(&self, exec: &WorkflowExecutionIdentifier, node_id: &str) -> Result<NodeRow> {
        self.store.get_node(&exec.project, &exec.domain, &exec.name, node_id).await?.ok_or_else(|| {
            Error::not_found(format!("node execution {node_id} of execution {} does not exist", exec_display(exec)))
        })
    }

    /// ListNodeExecutions: top level (`unique_parent_id` empty) or the children of one node.
    pub async fn list_node_executions(&self, req: &admin::NodeExecutionListRequest) -> Result<Page<NodeExecution>> {
        let exec = validate_exec_id(req.workflow_execution_id.as_ref(), "ListNodeExecutions")?;
        self.execution_row(&exec).await?;
        let f = filters::parse(&req.filters)?;
        let (limit, offset) = filters::page(req.limit, &req.token, 1000)?;
        let order_by = filters::order_by(req.sort_by.as_ref(), NODE_COLUMNS, "created_at ASC")?;
        let rows = self
            .store
            .list_nodes(
                &exec.project,
                &exec.domain,
                &exec.name,
                &req.unique_parent_id,
                &ListQuery { filters: &f, order_by, limit, offset },
            )
            .await?;
        let token = filters::next_token(offset, limit, rows.len());
        Ok(Page { items: rows.iter().map(|r| Self::node_message(&exec, r)).collect::<Result<_>>()?, token })
    }

    /// GetNodeExecution.
    pub async fn get_node_execution(&self, id: Option<NodeExecutionIdentifier>) -> Result<NodeExecution> {
        let (exec, node) = node_id_parts(id.as_ref(), "GetNodeExecution")?;
        Self::node_message(&exec, &self.node_row(&exec, &node).await?)
    }

    /// GetNodeExecutionData.
    pub async fn get_node_execution_data(
        &self,
        id: Option<NodeExecutionIdentifier>,
    ) -> Result<admin::NodeExecutionGetDataResponse> {
        let (exec, node) = node_id_parts(id.as_ref(), "GetNodeExecutionData")?;
        let row = self.node_row(&exec, &node).await?;
        let closure: NodeExecutionClosure = decode(&row.closure, "node closure")?;
        #[allow(deprecated)]
        let out_uri = match &closure.output_result {
            Some(admin::node_execution_closure::OutputResult::OutputUri(u)) => u.clone(),
            _ => String::new(),
        };
        let (full_inputs, inputs) = self.data(&row.input_uri).await?;
        let (full_outputs, outputs) = self.data(&out_uri).await?;
        let dynamic_workflow = self.dynamic_workflow(&closure.dynamic_job_spec_uri).await?;
        Ok(admin::NodeExecutionGetDataResponse {
            inputs,
            outputs,
            full_inputs,
            full_outputs,
            dynamic_workflow,
            flyte_urls: None,
        })
    }

    // ------------------------------------------------------------------ task executions

    fn attempt_message(exec: &WorkflowExecutionIdentifier, row: &TaskRow) -> Result<TaskExecution> {
        let mut closure: TaskExecutionClosure = decode(&row.closure, "task closure")?;
        closure.phase = row.phase;
        Ok(TaskExecution {
            id: Some(TaskExecutionIdentifier {
                task_id: Some(decode(&row.task_id, "task id")?),
                node_execution_id: Some(NodeExecutionIdentifier {
                    node_id: row.node_id.clone(),
                    execution_id: Some(exec.clone()),
                }),
                retry_attempt: row.retry_attempt as u32,
            }),
            input_uri: row.input_uri.clone(),
            closure: Some(closure),
            is_parent: false,
        })
    }

    /// ListTaskExecutions: the attempts of one node.
    pub async fn list_task_executions(&self, req: &admin::TaskExecutionListRequest) -> Result<Page<TaskExecution>> {
        let (exec, node) = node_id_parts(req.node_execution_id.as_ref(), "ListTaskExecutions")?;
        let f = filters::parse(&req.filters)?;
        let (limit, offset) = filters::page(req.limit, &req.token, 1000)?;
        let order_by = filters::order_by(req.sort_by.as_ref(), TASK_COLUMNS, "created_at ASC")?;
        // A map task's sub-tasks run as child nodes `<node>-<index>`; like Flyte, their attempts are
        // listed as the array node's task executions.
        let is_array = match self.store.get_node(&exec.project, &exec.domain, &exec.name, &node).await? {
            Some(row) => decode::<admin::NodeExecutionMetaData>(&row.metadata, "node metadata")?.is_array,
            None => false,
        };
        let rows = self
            .store
            .list_task_executions(
                &exec.project,
                &exec.domain,
                &exec.name,
                &node,
                is_array,
                &ListQuery { filters: &f, order_by, limit, offset },
            )
            .await?;
        let token = filters::next_token(offset, limit, rows.len());
        Ok(Page { items: rows.iter().map(|r| Self::attempt_message(&exec, r)).collect::<Result<_>>()?, token })
    }

    async fn task_row(
        &self,
        id: Option<&TaskExecutionIdentifier>,
        what: &str,
    ) -> Result<(WorkflowExecutionIdentifier, TaskRow)> {
        let id = id.ok_or_else(|| Error::invalid(format!("{what}: missing task execution id")))?;
        let (exec, node) = node_id_parts(id.node_execution_id.as_ref(), what)?;
        let row = self
            .store
            .get_task_execution(&exec.project, &exec.domain, &exec.name, &node, id.retry_attempt as i32)
            .await?
            .ok_or_else(|| {
                Error::not_found(format!(
                    "attempt {} of node {node} of execution {} does not exist",
                    id.retry_attempt,
                    exec_display(&exec)
                ))
            })?;
        Ok((exec, row))
    }

    /// GetTaskExecution.
    pub async fn get_task_execution(&self, id: Option<TaskExecutionIdentifier>) -> Result<TaskExecution> {
        let (exec, row) = self.task_row(id.as_ref(), "GetTaskExecution").await?;
        Self::attempt_message(&exec, &row)
    }

    /// GetTaskExecutionData.
    pub async fn get_task_execution_data(
        &self,
        id: Option<TaskExecutionIdentifier>,
    ) -> Result<admin::TaskExecutionGetDataResponse> {
        let (_, row) = self.task_row(id.as_ref(), "GetTaskExecutionData").await?;
        let closure: TaskExecutionClosure = decode(&row.closure, "task closure")?;
        #[allow(deprecated)]
        let out_uri = match &closure.output_result {
            Some(admin::task_execution_closure::OutputResult::OutputUri(u)) => u.clone(),
            _ => String::new(),
        };
        let (full_inputs, inputs) = self.data(&row.input_uri).await?;
        let (full_outputs, outputs) = self.data(&out_uri).await?;
        Ok(admin::TaskExecutionGetDataResponse { inputs, outputs, full_inputs, full_outputs, flyte_urls: None })
    }

    /// DataProxyService.GetData for `flyte://v1/...` URLs (`pyflyte fetch`).
    pub async fn get_data(&self, url: &str) -> Result<GetDataResponse> {
        let u = rules::parse_flyte_url(url)?;
        let exec = WorkflowExecutionIdentifier {
            project: u.project.clone(),
            domain: u.domain.clone(),
            name: u.execution.clone(),
            org: String::new(),
        };
        let (inputs, outputs, deck) = match u.attempt {
            None => {
                let d = self
                    .get_node_execution_data(Some(NodeExecutionIdentifier {
                        node_id: u.node_id.clone(),
                        execution_id: Some(exec.clone()),
                    }))
                    .await?;
                let n = self.node_row(&exec, &u.node_id).await?;
                let c: NodeExecutionClosure = decode(&n.closure, "node closure")?;
                (d.full_inputs, d.full_outputs, c.deck_uri)
            }
            Some(attempt) => {
                let (_, row) = self
                    .task_row(
                        Some(&TaskExecutionIdentifier {
                            task_id: None,
                            node_execution_id: Some(NodeExecutionIdentifier {
                                node_id: u.node_id.clone(),
                                execution_id: Some(exec.clone()),
                            }),
                            retry_attempt: attempt,
                        }),
                        "GetData",
                    )
                    .await?;
                let id = TaskExecutionIdentifier {
                    task_id: Some(decode(&row.task_id, "task id")?),
                    node_execution_id: Some(NodeExecutionIdentifier {
                        node_id: u.node_id.clone(),
                        execution_id: Some(exec.clone()),
                    }),
                    retry_attempt: attempt,
                };
                let d = self.get_task_execution_data(Some(id)).await?;
                (d.full_inputs, d.full_outputs, String::new())
            }
        };
        let map = match u.kind {
            'i' => inputs,
            'o' => outputs,
            _ => {
                if deck.is_empty() {
                    return Err(Error::not_found(format!("{url}: no deck was written")));
                }
                let (signed, expires) = self.signed_download(&deck, None).await?;
                return Ok(GetDataResponse {
                    data: Some(get_data_response::Data::PreSignedUrls(aloft_proto::flyteidl::service::PreSignedUrLs {
                        signed_url: vec![signed],
                        expires_at: Some(prost_types::Timestamp { seconds: expires, nanos: 0 }),
                    })),
                });
            }
        };
        let map = map.ok_or_else(|| Error::not_found(format!("{url}: no data yet")))?;
        Ok(GetDataResponse {
            data: Some(match u.var {
                None => get_data_response::Data::LiteralMap(map),
                Some(var) => get_data_response::Data::Literal(
                    map.literals
                        .get(&var)
                        .cloned()
                        .ok_or_else(|| Error::not_found(format!("{url}: no variable `{var}`")))?,
                ),
            }),
        })
    }

    // ------------------------------------------------------------------ event sink

    /// Applies one bus envelope (events only; anything else is ignored).
    pub async fn apply_envelope(&self, env: &Envelope) -> Result<()> {
        match &env.body {
            Some(Body::WorkflowEvent(e)) => self.apply_workflow_event(e).await,
            Some(Body::NodeEvent(e)) => self.apply_node_event(e).await,
            Some(Body::TaskEvent(e)) => self.apply_task_event(e).await,
            _ => Ok(()),
        }
    }

    async fn apply_workflow_event(&self, ev: &WorkflowExecutionEvent) -> Result<()> {
        let id = validate_exec_id(ev.execution_id.as_ref(), "workflow event")?;
        for _ in 0..CONFLICT_RETRIES {
            let Some(mut row) = self.store.get_execution(&id.project, &id.domain, &id.name).await? else {
                tracing::warn!(execution = %exec_display(&id), "event for an unknown execution dropped");
                return Ok(());
            };
            let mut closure: ExecutionClosure = decode(&row.closure, "execution closure")?;
            // an abort cause recorded by TerminateExecution stays unless the event carries an error
            if !rules::apply_workflow_event(&mut closure, ev) {
                return Ok(());
            }
            row.phase = closure.phase;
            row.closure = closure.encode_to_vec();
            row.updated_at = now_micros();
            if self.store.update_execution(&row).await? {
                if row.phase == WfPhase::Aborted as i32 {
                    self.store.abort_unfinished(&id.project, &id.domain, &id.name, row.updated_at).await?;
                }
                return Ok(());
            }
        }
        Err(Error::Internal(format!("execution {} kept changing while applying an event", exec_display(&id))))
    }

    async fn apply_node_event(&self, ev: &NodeExecutionEvent) -> Result<()> {
        let (exec, node) = node_id_parts(ev.id.as_ref(), "node event")?;
        for _ in 0..CONFLICT_RETRIES {
            let existing = self.store.get_node(&exec.project, &exec.domain, &exec.name, &node).await?;
            let record = match &existing {
                Some(row) => Some(NodeRecord {
                    parent_id: row.parent_id.clone(),
                    input_uri: row.input_uri.clone(),
                    closure: {
                        let mut c: NodeExecutionClosure = decode(&row.closure, "node closure")?;
                        c.phase = row.phase;
                        c
                    },
                    metadata: decode(&row.metadata, "node metadata")?,
                    occurred_at: row.occurred_at,
                }),
                None => None,
            };
            let Some(next) = rules::apply_node_event(record.as_ref(), ev) else { return Ok(()) };
            let row = NodeRow {
                node_id: node.clone(),
                parent_id: next.parent_id,
                phase: next.closure.phase,
                input_uri: next.input_uri,
                closure: next.closure.encode_to_vec(),
                metadata: next.metadata.encode_to_vec(),
                occurred_at: next.occurred_at,
                created_at: existing.as_ref().map(|r| r.created_at).unwrap_or(0),
                version: existing.as_ref().map(|r| r.version).unwrap_or(-1),
            };
            if self.store.put_node(&exec.project, &exec.domain, &exec.name, &row, now_micros()).await? {
                return Ok(());
            }
        }
        Err(Error::Internal(format!("node {node} of {} kept changing while applying an event", exec_display(&exec))))
    }

    async fn apply_task_event(&self, ev: &TaskExecutionEvent) -> Result<()> {
        let (exec, node) = node_id_parts(ev.parent_node_execution_id.as_ref(), "task event")?;
        let task_id = ev.task_id.clone().unwrap_or_default();
        for _ in 0..CONFLICT_RETRIES {
            let existing = self
                .store
                .get_task_execution(&exec.project, &exec.domain, &exec.name, &node, ev.retry_attempt as i32)
                .await?;
            let record = match &existing {
                Some(row) => Some(TaskRecord {
                    input_uri: row.input_uri.clone(),
                    phase_version: row.phase_version as u32,
                    closure: {
                        let mut c: TaskExecutionClosure = decode(&row.closure, "task closure")?;
                        c.phase = row.phase;
                        c
                    },
                    occurred_at: row.occurred_at,
                }),
                None => None,
            };
            let Some(next) = rules::apply_task_event(record.as_ref(), ev) else { return Ok(()) };
            let row = TaskRow {
                node_id: node.clone(),
                retry_attempt: ev.retry_attempt as i32,
                task_id: task_id.encode_to_vec(),
                phase: next.closure.phase,
                phase_version: next.phase_version as i32,
                input_uri: next.input_uri,
                closure: next.closure.encode_to_vec(),
                occurred_at: next.occurred_at,
                created_at: existing.as_ref().map(|r| r.created_at).unwrap_or(0),
                version: existing.as_ref().map(|r| r.version).unwrap_or(-1),
            };
            if self.store.put_task_execution(&exec.project, &exec.domain, &exec.name, &row, now_micros()).await? {
                return Ok(());
            }
        }
        Err(Error::Internal(format!("attempt {} of {node} kept changing while applying an event", ev.retry_attempt)))
    }
}

/// ExecutionSpec default for tests and callers that build requests.
pub fn manual_spec(launch_plan: Identifier) -> ExecutionSpec {
    ExecutionSpec {
        launch_plan: Some(launch_plan),
        metadata: Some(admin::ExecutionMetadata {
            mode: admin::execution_metadata::ExecutionMode::Manual as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}
