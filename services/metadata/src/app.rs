//! Use cases of the metadata service: validate (pure) -> load what is needed -> decide (pure)
//! -> persist. gRPC handlers call these; nothing here knows about tonic.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aloft_blob::BlobStore;
use aloft_proto::flyteidl::admin::{
    self as admin, LaunchPlan, LaunchPlanClosure, LaunchPlanSpec, LaunchPlanState, NamedEntityIdentifier, Project,
    Sort, Task, TaskClosure, TaskSpec, Workflow, WorkflowClosure, WorkflowSpec,
};
use aloft_proto::flyteidl::core::{self as core, CompiledTask, Identifier, ResourceType, TaskTemplate, TypedInterface};
use prost::Message;

use crate::adapters::store::{ENTITY_COLUMNS, EntityRow, Insert, ListQuery, PROJECT_COLUMNS, ProjectRow, Store};
use crate::config::Config;
use crate::domain::{filters, ids, refs, registry, upload};
use crate::error::{Error, Result};

/// The largest page a list call returns (responses must stay under flytekit's 20 MiB limit).
const MAX_PAGE: u32 = 1000;

/// Shared state of the service.
#[derive(Clone)]
pub struct App {
    /// Database.
    pub store: Store,
    /// Blob store.
    pub blob: BlobStore,
    /// Configuration.
    pub config: std::sync::Arc<Config>,
    /// Key signing our own upload/download URLs.
    pub signing_key: std::sync::Arc<Vec<u8>>,
    /// Base URL of our HTTP endpoint.
    pub public_http_url: String,
    /// The bus, when executions are enabled.
    pub bus: Option<aloft_bus::Bus>,
}

/// Current time in unix microseconds.
pub fn now_micros() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}

/// Unix microseconds as a protobuf timestamp.
pub fn timestamp(micros: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1000) as i32,
    }
}

/// Decodes a stored message; a failure means the database holds something we did not write.
pub(crate) fn decode<M: Message + Default>(bytes: &[u8], what: &str) -> Result<M> {
    M::decode(bytes).map_err(|e| Error::Internal(format!("stored {what} does not decode: {e}")))
}

/// One page of a list, and the token of the next.
pub struct Page<T> {
    /// Items.
    pub items: Vec<T>,
    /// Next token, empty at the end.
    pub token: String,
}

impl App {
    // ------------------------------------------------------------------ projects and domains

    /// Checks the domain is configured and the project exists (creating it when configured to).
    pub(crate) async fn ensure_scope_public(&self, project: &str, domain: &str) -> Result<()> {
        self.ensure_scope(project, domain).await
    }

    async fn ensure_scope(&self, project: &str, domain: &str) -> Result<()> {
        if !self.config.projects.domains.iter().any(|d| d == domain) {
            return Err(Error::invalid(format!(
                "domain `{domain}` is not one of {}",
                self.config.projects.domains.join(", ")
            )));
        }
        if self.store.get_project(project).await?.is_some() {
            return Ok(());
        }
        if !self.config.projects.auto_create {
            return Err(Error::not_found(format!("project `{project}` is not registered")));
        }
        let now = now_micros();
        let row = ProjectRow {
            id: project.to_string(),
            name: project.to_string(),
            description: String::new(),
            labels: admin::Labels::default().encode_to_vec(),
            state: admin::project::ProjectState::Active as i32,
            created_at: now,
        };
        self.store.insert_project(&row).await?;
        tracing::info!(project, "project created on first use");
        Ok(())
    }

    fn domains(&self) -> Vec<admin::Domain> {
        self.config.projects.domains.iter().map(|d| admin::Domain { id: d.clone(), name: d.clone() }).collect()
    }

    fn project_message(&self, row: ProjectRow) -> Result<Project> {
        Ok(Project {
            id: row.id,
            name: row.name,
            domains: self.domains(),
            description: row.description,
            labels: Some(decode(&row.labels, "project labels")?),
            state: row.state,
            org: String::new(),
        })
    }

    /// RegisterProject.
    pub async fn register_project(&self, p: Option<Project>) -> Result<()> {
        let p = p.ok_or_else(|| Error::invalid("RegisterProject: project is missing"))?;
        if !ids::is_valid_token(&p.id) {
            return Err(Error::invalid(format!(
                "RegisterProject: project.id `{}` may only contain letters, digits, - and _",
                p.id
            )));
        }
        if p.name.is_empty() {
            return Err(Error::invalid("RegisterProject: project.name is empty"));
        }
        let row = ProjectRow {
            id: p.id.clone(),
            name: p.name,
            description: p.description,
            labels: p.labels.unwrap_or_default().encode_to_vec(),
            state: p.state,
            created_at: now_micros(),
        };
        if !self.store.insert_project(&row).await? {
            return Err(Error::AlreadyExists(format!("project `{}` already exists", p.id)));
        }
        Ok(())
    }

    /// UpdateProject: name, description, labels and state.
    pub async fn update_project(&self, p: Project) -> Result<()> {
        if p.id.is_empty() {
            return Err(Error::invalid("UpdateProject: id is empty"));
        }
        let existing = self
            .store
            .get_project(&p.id)
            .await?
            .ok_or_else(|| Error::not_found(format!("project `{}` does not exist", p.id)))?;
        let row = ProjectRow {
            id: p.id,
            name: if p.name.is_empty() { existing.name } else { p.name },
            description: p.description,
            labels: p.labels.unwrap_or_default().encode_to_vec(),
            state: p.state,
            created_at: existing.created_at,
        };
        self.store.update_project(&row, now_micros()).await?;
        Ok(())
    }

    /// GetProject.
    pub async fn get_project(&self, id: &str) -> Result<Project> {
        let row = self
            .store
            .get_project(id)
            .await?
            .ok_or_else(|| Error::not_found(format!("project `{id}` does not exist")))?;
        self.project_message(row)
    }

    /// ListProjects.
    pub async fn list_projects(
        &self,
        limit: u32,
        token: &str,
        filters_text: &str,
        sort: Option<&Sort>,
    ) -> Result<Page<Project>> {
        let f = filters::parse(filters_text)?;
        let (limit, offset) = filters::page(limit, token, MAX_PAGE)?;
        let order_by = filters::order_by(sort, PROJECT_COLUMNS, "created_at ASC")?;
        let rows = self.store.list_projects(&ListQuery { filters: &f, order_by, limit, offset }).await?;
        let token = filters::next_token(offset, limit, rows.len());
        let items = rows.into_iter().map(|r| self.project_message(r)).collect::<Result<_>>()?;
        Ok(Page { items, token })
    }

    /// GetDomains.
    pub fn get_domains(&self) -> Vec<admin::Domain> {
        self.domains()
    }

    // ------------------------------------------------------------------ registry

    async fn insert(
        &self,
        kind: ResourceType,
        id: &Identifier,
        spec: Vec<u8>,
        closure: Vec<u8>,
        differences: impl FnOnce(&EntityRow) -> Result<Vec<&'static str>>,
    ) -> Result<()> {
        // A `pyflyte register` re-run sends every entity again: answer those from a read, so a
        // re-run never takes SQLite's single writer lock.
        if let Some(existing) =
            self.store.get_entity(kind as i32, &id.project, &id.domain, &id.name, &id.version).await?
        {
            return Err(if existing.digest == registry::digest(&spec) {
                Error::AlreadyExists(format!("{} {} already exists", ids::kind_name(kind), ids::display(id)))
            } else {
                registry::conflict(ids::kind_name(kind), id, differences(&existing)?)
            });
        }
        let now = now_micros();
        let row = EntityRow {
            resource_type: kind as i32,
            project: id.project.clone(),
            domain: id.domain.clone(),
            name: id.name.clone(),
            version: id.version.clone(),
            digest: registry::digest(&spec),
            spec,
            closure,
            state: 0,
            created_at: now,
            updated_at: now,
        };
        match self.store.insert_entity(&row).await? {
            Insert::Inserted => Ok(()),
            Insert::Exists(existing) if existing.digest == row.digest => {
                Err(Error::AlreadyExists(format!("{} {} already exists", ids::kind_name(kind), ids::display(id))))
            }
            Insert::Exists(existing) => Err(registry::conflict(ids::kind_name(kind), id, differences(&existing)?)),
        }
    }

    /// A stored entity or NOT_FOUND naming it.
    async fn entity(&self, kind: ResourceType, id: &Identifier) -> Result<EntityRow> {
        self.store
            .get_entity(kind as i32, &id.project, &id.domain, &id.name, &id.version)
            .await?
            .ok_or_else(|| Error::not_found(format!("{} {} does not exist", ids::kind_name(kind), ids::display(id))))
    }

    /// CreateTask.
    pub async fn create_task(&self, id: Option<Identifier>, spec: Option<TaskSpec>) -> Result<()> {
        let id = ids::validate(id.as_ref(), ResourceType::Task, "CreateTask")?;
        let spec = spec.ok_or_else(|| Error::invalid(format!("task {}: spec is missing", ids::display(&id))))?;
        registry::validate_task(&id, &spec)?;
        self.ensure_scope(&id.project, &id.domain).await?;
        let closure = CompiledTask { template: spec.template.clone() }.encode_to_vec();
        let encoded = spec.encode_to_vec();
        self.insert(ResourceType::Task, &id, encoded, closure, |old| {
            Ok(registry::task_differences(&decode::<TaskSpec>(&old.spec, "task spec")?, &spec))
        })
        .await
    }

    fn task_message(row: &EntityRow) -> Result<Task> {
        let spec: TaskSpec = decode(&row.spec, "task spec")?;
        Ok(Task {
            id: Some(identifier(ResourceType::Task, row)),
            closure: Some(TaskClosure {
                compiled_task: Some(decode(&row.closure, "compiled task")?),
                created_at: Some(timestamp(row.created_at)),
            }),
            short_description: spec.description.map(|d| d.short_description).unwrap_or_default(),
        })
    }

    /// GetTask.
    pub async fn get_task(&self, id: Option<Identifier>) -> Result<Task> {
        let id = ids::validate(id.as_ref(), ResourceType::Task, "GetTask")?;
        Self::task_message(&self.entity(ResourceType::Task, &id).await?)
    }

    /// ListTasks / ListWorkflows / ListLaunchPlans: versions within a project/domain (and name).
    pub async fn list_entities<T>(
        &self,
        kind: ResourceType,
        req: &admin::ResourceListRequest,
        to_message: fn(&EntityRow) -> Result<T>,
    ) -> Result<Page<T>> {
        let what = format!("list {}s", ids::kind_name(kind));
        let scope = ids::validate_named(req.id.as_ref(), false, &what)?;
        let f = filters::parse(&req.filters)?;
        let (limit, offset) = filters::page(req.limit, &req.token, MAX_PAGE)?;
        let order_by = filters::order_by(req.sort_by.as_ref(), ENTITY_COLUMNS, "created_at DESC")?;
        let name = (!scope.name.is_empty()).then_some(scope.name.as_str());
        let rows = self
            .store
            .list_entities(
                kind as i32,
                &scope.project,
                &scope.domain,
                name,
                &ListQuery { filters: &f, order_by, limit, offset },
            )
            .await?;
        let token = filters::next_token(offset, limit, rows.len());
        Ok(Page { items: rows.iter().map(to_message).collect::<Result<_>>()?, token })
    }

    /// ListTaskIds / ListWorkflowIds / ListLaunchPlanIds: distinct names.
    pub async fn list_names(
        &self,
        kind: ResourceType,
        req: &admin::NamedEntityIdentifierListRequest,
    ) -> Result<Page<NamedEntityIdentifier>> {
        if req.project.is_empty() || req.domain.is_empty() {
            return Err(Error::invalid("list ids: project and domain are required"));
        }
        let f = filters::parse(&req.filters)?;
        let (limit, offset) = filters::page(req.limit, &req.token, MAX_PAGE)?;
        let order_by = filters::order_by(req.sort_by.as_ref(), ENTITY_COLUMNS, "created_at DESC")?;
        let names = self
            .store
            .list_names(kind as i32, &req.project, &req.domain, &ListQuery { filters: &f, order_by, limit, offset })
            .await?;
        let token = filters::next_token(offset, limit, names.len());
        let items = names
            .into_iter()
            .map(|(name, _)| NamedEntityIdentifier {
                project: req.project.clone(),
                domain: req.domain.clone(),
                name,
                org: String::new(),
            })
            .collect();
        Ok(Page { items, token })
    }

    /// ListNamedEntities: the names of one kind, as the console lists them.
    pub async fn list_named_entities(&self, req: &admin::NamedEntityListRequest) -> Result<Page<admin::NamedEntity>> {
        let kind = named_kind(req.resource_type)?;
        let ids = self
            .list_names(
                kind,
                &admin::NamedEntityIdentifierListRequest {
                    project: req.project.clone(),
                    domain: req.domain.clone(),
                    limit: req.limit,
                    token: req.token.clone(),
                    sort_by: req.sort_by.clone(),
                    filters: req.filters.clone(),
                    org: String::new(),
                },
            )
            .await?;
        let items = ids.items.into_iter().map(|id| named_entity(kind, id)).collect();
        Ok(Page { items, token: ids.token })
    }

    /// GetNamedEntity: NOT_FOUND unless at least one version of the name is registered.
    pub async fn get_named_entity(&self, req: &admin::NamedEntityGetRequest) -> Result<admin::NamedEntity> {
        let kind = named_kind(req.resource_type)?;
        let id = ids::validate_named(req.id.as_ref(), true, "GetNamedEntity")?;
        let q = ListQuery { filters: &[], order_by: "created_at DESC".into(), limit: 1, offset: 0 };
        let rows = self.store.list_entities(kind as i32, &id.project, &id.domain, Some(&id.name), &q).await?;
        if rows.is_empty() {
            return Err(Error::not_found(format!(
                "{} {}/{}/{} does not exist",
                ids::kind_name(kind),
                id.project,
                id.domain,
                id.name
            )));
        }
        Ok(named_entity(kind, id))
    }

    /// Task templates for the compiler, by identifier; NOT an error when missing (the compiler names them).
    async fn load_tasks(&self, wanted: &[Identifier]) -> Result<HashMap<Identifier, TaskTemplate>> {
        let mut out = HashMap::new();
        for id in wanted {
            if let Some(row) =
                self.store.get_entity(ResourceType::Task as i32, &id.project, &id.domain, &id.name, &id.version).await?
            {
                let ct: CompiledTask = decode(&row.closure, "compiled task")?;
                if let Some(t) = ct.template {
                    out.insert(id.clone(), t);
                }
            }
        }
        Ok(out)
    }

    /// Interfaces of launch plans referenced by workflow nodes.
    async fn load_launch_plan_interfaces(&self, wanted: &[Identifier]) -> Result<HashMap<Identifier, TypedInterface>> {
        let mut out = HashMap::new();
        for id in wanted {
            if let Some(row) = self
                .store
                .get_entity(ResourceType::LaunchPlan as i32, &id.project, &id.domain, &id.name, &id.version)
                .await?
            {
                let closure: LaunchPlanClosure = decode(&row.closure, "launch plan closure")?;
                let inputs = closure.expected_inputs.unwrap_or_default();
                let interface = TypedInterface {
                    inputs: Some(core::VariableMap {
                        variables: inputs.parameters.into_iter().filter_map(|(k, p)| p.var.map(|v| (k, v))).collect(),
                    }),
                    outputs: closure.expected_outputs,
                };
                out.insert(id.clone(), interface);
            }
        }
        Ok(out)
    }

    /// CreateWorkflow: compile, then store the spec as sent and the compiled closure.
    pub async fn create_workflow(&self, id: Option<Identifier>, spec: Option<WorkflowSpec>) -> Result<()> {
        let id = ids::validate(id.as_ref(), ResourceType::Workflow, "CreateWorkflow")?;
        let mut spec =
            spec.ok_or_else(|| Error::invalid(format!("workflow {}: spec is missing", ids::display(&id))))?;
        registry::normalize_workflow(&mut spec);
        registry::validate_workflow(&id, &spec)?;
        self.ensure_scope(&id.project, &id.domain).await?;
        let encoded = spec.encode_to_vec();
        // The cheap, common case first: an identical re-registration needs no compilation.
        if let Some(existing) =
            self.store.get_entity(ResourceType::Workflow as i32, &id.project, &id.domain, &id.name, &id.version).await?
        {
            if existing.digest == registry::digest(&encoded) {
                return Err(Error::AlreadyExists(format!("workflow {} already exists", ids::display(&id))));
            }
            let old: WorkflowSpec = decode(&existing.spec, "workflow spec")?;
            return Err(registry::conflict("workflow", &id, registry::workflow_differences(&old, &spec)));
        }
        let r = refs::collect(&spec);
        let resolver = Loaded {
            tasks: self.load_tasks(&r.tasks).await?,
            launch_plans: self.load_launch_plan_interfaces(&r.launch_plans).await?,
        };
        let compiled = aloft_compiler::compile_workflow(&spec, &resolver)?;
        self.insert(ResourceType::Workflow, &id, encoded, compiled.encode_to_vec(), |old| {
            Ok(registry::workflow_differences(&decode::<WorkflowSpec>(&old.spec, "workflow spec")?, &spec))
        })
        .await
    }

    fn workflow_message(row: &EntityRow) -> Result<Workflow> {
        let spec: WorkflowSpec = decode(&row.spec, "workflow spec")?;
        Ok(Workflow {
            id: Some(identifier(ResourceType::Workflow, row)),
            closure: Some(WorkflowClosure {
                compiled_workflow: Some(decode(&row.closure, "compiled workflow")?),
                created_at: Some(timestamp(row.created_at)),
            }),
            short_description: spec.description.map(|d| d.short_description).unwrap_or_default(),
        })
    }

    /// GetWorkflow.
    pub async fn get_workflow(&self, id: Option<Identifier>) -> Result<Workflow> {
        let id = ids::validate(id.as_ref(), ResourceType::Workflow, "GetWorkflow")?;
        Self::workflow_message(&self.entity(ResourceType::Workflow, &id).await?)
    }

    /// CreateLaunchPlan: the workflow must exist; inputs are checked against its interface.
    pub async fn create_launch_plan(&self, id: Option<Identifier>, spec: Option<LaunchPlanSpec>) -> Result<()> {
        let id = ids::validate(id.as_ref(), ResourceType::LaunchPlan, "CreateLaunchPlan")?;
        let spec = spec.ok_or_else(|| Error::invalid(format!("launch plan {}: spec is missing", ids::display(&id))))?;
        let wf_id = ids::validate(
            spec.workflow_id.as_ref(),
            ResourceType::Workflow,
            &format!("launch plan {}: workflow_id", ids::display(&id)),
        )?;
        self.ensure_scope(&id.project, &id.domain).await?;
        let wf_row = self
            .store
            .get_entity(ResourceType::Workflow as i32, &wf_id.project, &wf_id.domain, &wf_id.name, &wf_id.version)
            .await?
            .ok_or_else(|| {
                Error::invalid(format!(
                    "launch plan {}: workflow {} is not registered",
                    ids::display(&id),
                    ids::display(&wf_id)
                ))
            })?;
        let compiled: core::CompiledWorkflowClosure = decode(&wf_row.closure, "compiled workflow")?;
        let interface = compiled.primary.and_then(|p| p.template).and_then(|t| t.interface).unwrap_or_default();
        let expected_inputs = registry::validate_launch_plan(&id, &spec, &interface)?;
        let now = now_micros();
        let closure = LaunchPlanClosure {
            state: LaunchPlanState::Inactive as i32,
            expected_inputs: Some(expected_inputs),
            expected_outputs: interface.outputs,
            created_at: Some(timestamp(now)),
            updated_at: Some(timestamp(now)),
        };
        let encoded = spec.encode_to_vec();
        self.insert(ResourceType::LaunchPlan, &id, encoded, closure.encode_to_vec(), |old| {
            Ok(registry::launch_plan_differences(&decode::<LaunchPlanSpec>(&old.spec, "launch plan spec")?, &spec))
        })
        .await
    }

    fn launch_plan_message(row: &EntityRow) -> Result<LaunchPlan> {
        let mut closure: LaunchPlanClosure = decode(&row.closure, "launch plan closure")?;
        // state and updated_at live in columns (they change); the rest of the closure is immutable
        closure.state = row.state;
        closure.updated_at = Some(timestamp(row.updated_at));
        closure.created_at = Some(timestamp(row.created_at));
        Ok(LaunchPlan {
            id: Some(identifier(ResourceType::LaunchPlan, row)),
            spec: Some(decode(&row.spec, "launch plan spec")?),
            closure: Some(closure),
        })
    }

    /// GetLaunchPlan.
    pub async fn get_launch_plan(&self, id: Option<Identifier>) -> Result<LaunchPlan> {
        let id = ids::validate(id.as_ref(), ResourceType::LaunchPlan, "GetLaunchPlan")?;
        Self::launch_plan_message(&self.entity(ResourceType::LaunchPlan, &id).await?)
    }

    /// UpdateLaunchPlan: ACTIVE deactivates the previously active version of the same name.
    pub async fn update_launch_plan(&self, id: Option<Identifier>, state: i32) -> Result<()> {
        let id = ids::validate(id.as_ref(), ResourceType::LaunchPlan, "UpdateLaunchPlan")?;
        let active = match LaunchPlanState::try_from(state) {
            Ok(LaunchPlanState::Active) => true,
            Ok(LaunchPlanState::Inactive) => false,
            Err(_) => return Err(Error::invalid(format!("UpdateLaunchPlan: unknown state {state}"))),
        };
        if !self
            .store
            .set_launch_plan_state(&id.project, &id.domain, &id.name, &id.version, active, now_micros())
            .await?
        {
            return Err(Error::not_found(format!("launch plan {} does not exist", ids::display(&id))));
        }
        Ok(())
    }

    /// GetActiveLaunchPlan.
    pub async fn get_active_launch_plan(&self, id: Option<NamedEntityIdentifier>) -> Result<LaunchPlan> {
        let id = ids::validate_named(id.as_ref(), true, "GetActiveLaunchPlan")?;
        let row = self.store.active_launch_plan(&id.project, &id.domain, &id.name).await?.ok_or_else(|| {
            Error::not_found(format!("launch plan {}/{}/{} has no active version", id.project, id.domain, id.name))
        })?;
        Self::launch_plan_message(&row)
    }

    /// ListActiveLaunchPlans.
    pub async fn list_active_launch_plans(&self, req: &admin::ActiveLaunchPlanListRequest) -> Result<Page<LaunchPlan>> {
        if req.project.is_empty() || req.domain.is_empty() {
            return Err(Error::invalid("ListActiveLaunchPlans: project and domain are required"));
        }
        let (limit, offset) = filters::page(req.limit, &req.token, MAX_PAGE)?;
        let order_by = filters::order_by(req.sort_by.as_ref(), ENTITY_COLUMNS, "created_at DESC")?;
        let rows = self
            .store
            .list_active_launch_plans(&req.project, &req.domain, &ListQuery { filters: &[], order_by, limit, offset })
            .await?;
        let token = filters::next_token(offset, limit, rows.len());
        Ok(Page { items: rows.iter().map(Self::launch_plan_message).collect::<Result<_>>()?, token })
    }

    /// Message builders for list calls.
    pub fn task_of(row: &EntityRow) -> Result<Task> {
        Self::task_message(row)
    }
    /// Message builder.
    pub fn workflow_of(row: &EntityRow) -> Result<Workflow> {
        Self::workflow_message(row)
    }
    /// Message builder.
    pub fn launch_plan_of(row: &EntityRow) -> Result<LaunchPlan> {
        Self::launch_plan_message(row)
    }

    // ------------------------------------------------------------------ data proxy

    fn expiry(&self, asked: Option<&prost_types::Duration>) -> Duration {
        let asked = asked.map(|d| Duration::from_secs(d.seconds.max(0) as u64)).filter(|d| !d.is_zero());
        asked.unwrap_or(self.config.data_proxy.default_expiry).min(self.config.data_proxy.max_expiry)
    }

    /// CreateUploadLocation.
    pub async fn create_upload_location(
        &self,
        req: &aloft_proto::flyteidl::service::CreateUploadLocationRequest,
    ) -> Result<aloft_proto::flyteidl::service::CreateUploadLocationResponse> {
        let random: String = {
            use rand::Rng;
            let mut rng = rand::rng();
            (0..20).map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[rng.random_range(0..36)])).collect()
        };
        let target = upload::upload_target(req, &self.config.data_proxy.upload_prefix, &random)?;
        let native_url = self.blob.join(self.blob.root(), &target.key);
        // Both name and root given and the object exists with other content: refuse to overwrite.
        if !req.filename.is_empty()
            && !req.filename_root.is_empty()
            && let (Some(want), Some(have)) = (target.md5, self.blob.md5(&native_url).await?)
            && hex::encode(want) != have
        {
            return Err(Error::AlreadyExists(format!("{native_url} already exists with different content")));
        }
        let expires_in = self.expiry(req.expires_in.as_ref());
        let expires_at = now_micros() / 1_000_000 + expires_in.as_secs() as i64;
        let signed_url = match self.blob.presign_put(&native_url, target.md5, expires_in).await? {
            Some(url) => url,
            None => {
                self.signed_http_url("PUT", &target.key, expires_at, target.md5.map(hex::encode).unwrap_or_default())
            }
        };
        let mut headers = std::collections::BTreeMap::new();
        if let Some(m) = target.md5 {
            use base64::Engine;
            headers.insert("Content-MD5".to_string(), base64::engine::general_purpose::STANDARD.encode(m));
        }
        Ok(aloft_proto::flyteidl::service::CreateUploadLocationResponse {
            signed_url,
            native_url,
            expires_at: Some(prost_types::Timestamp { seconds: expires_at, nanos: 0 }),
            headers,
        })
    }

    /// A signed URL for a native URL the client may download (CreateDownloadLocation / Link).
    pub async fn signed_download(
        &self,
        native_url: &str,
        expires: Option<&prost_types::Duration>,
    ) -> Result<(String, i64)> {
        if native_url.is_empty() {
            return Err(Error::invalid("native_url is empty"));
        }
        let key = self
            .key_of(native_url)
            .ok_or_else(|| Error::invalid(format!("{native_url} is not in this deployment's store")))?;
        if !self.blob.exists(native_url).await? {
            return Err(Error::not_found(format!("{native_url} does not exist")));
        }
        let expires_in = self.expiry(expires);
        let expires_at = now_micros() / 1_000_000 + expires_in.as_secs() as i64;
        let url = match self.blob.presign_get(native_url, expires_in).await? {
            Some(u) => u,
            None => self.signed_http_url("GET", &key, expires_at, String::new()),
        };
        Ok((url, expires_at))
    }

    /// The key of a URI under the store's root, if it is inside it.
    fn key_of(&self, uri: &str) -> Option<String> {
        let root = self.blob.root().trim_end_matches('/');
        uri.strip_prefix(root)?
            .strip_prefix('/')
            .filter(|k| !k.is_empty() && !k.split('/').any(|s| s == ".."))
            .map(str::to_string)
    }

    fn signed_http_url(&self, method: &str, key: &str, expires_at: i64, md5_hex: String) -> String {
        let sig = upload::sign(&self.signing_key, method, key, expires_at, &md5_hex);
        let mut url =
            url::Url::parse(&format!("{}/data/", self.public_http_url)).expect("public url validated at start");
        url.path_segments_mut().expect("http url").pop_if_empty().extend(key.split('/'));
        url.query_pairs_mut()
            .append_pair("expires", &expires_at.to_string())
            .append_pair("md5", &md5_hex)
            .append_pair("sig", &sig);
        url.to_string()
    }
}

/// The entity kinds named entities exist for.
fn named_kind(rt: i32) -> Result<ResourceType> {
    match ResourceType::try_from(rt) {
        Ok(k @ (ResourceType::Task | ResourceType::Workflow | ResourceType::LaunchPlan)) => Ok(k),
        _ => {
            Err(Error::invalid(format!("resource_type {rt} has no named entities (use TASK, WORKFLOW or LAUNCH_PLAN)")))
        }
    }
}

fn named_entity(kind: ResourceType, id: NamedEntityIdentifier) -> admin::NamedEntity {
    admin::NamedEntity {
        resource_type: kind as i32,
        id: Some(id),
        metadata: Some(admin::NamedEntityMetadata {
            description: String::new(),
            state: admin::NamedEntityState::NamedEntityActive as i32,
        }),
    }
}

/// Identifier of a stored row.
fn identifier(kind: ResourceType, row: &EntityRow) -> Identifier {
    Identifier {
        resource_type: kind as i32,
        project: row.project.clone(),
        domain: row.domain.clone(),
        name: row.name.clone(),
        version: row.version.clone(),
        org: String::new(),
    }
}

/// The compiler's view of the registry: what was loaded for this workflow.
struct Loaded {
    tasks: HashMap<Identifier, TaskTemplate>,
    launch_plans: HashMap<Identifier, TypedInterface>,
}

impl aloft_compiler::Resolver for Loaded {
    fn task(&self, id: &Identifier) -> Option<TaskTemplate> {
        self.tasks.get(id).cloned()
    }
    fn launch_plan_interface(&self, id: &Identifier) -> Option<TypedInterface> {
        self.launch_plans.get(id).cloned()
    }
}
