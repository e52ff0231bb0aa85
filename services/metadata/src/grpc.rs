//! gRPC adapters: decode and validate -> app -> encode. No business logic here.

use aloft_proto::flyteidl::admin;
use aloft_proto::flyteidl::core::ResourceType;
use aloft_proto::flyteidl::service::{
    self as svc, admin_service_server::AdminService, data_proxy_service_server::DataProxyService,
    signal_service_server::SignalService,
};
use tonic::{Request, Response, Status};

use crate::app::App;

type R<T> = Result<Response<T>, Status>;

/// `flyteidl.service.AdminService`.
#[derive(Clone)]
pub struct Admin(pub App);

/// `flyteidl.service.DataProxyService`.
#[derive(Clone)]
pub struct DataProxy(pub App);

/// `flyteidl.service.SignalService`.
#[derive(Clone)]
pub struct Signals(pub App);

#[tonic::async_trait]
impl SignalService for Signals {
    async fn get_or_create_signal(&self, r: Request<admin::SignalGetOrCreateRequest>) -> R<admin::Signal> {
        Ok(Response::new(self.0.get_or_create_signal(r.into_inner()).await?))
    }

    async fn list_signals(&self, r: Request<admin::SignalListRequest>) -> R<admin::SignalList> {
        let page = self.0.list_signals(&r.into_inner()).await?;
        Ok(Response::new(admin::SignalList { signals: page.items, token: page.token }))
    }

    async fn set_signal(&self, r: Request<admin::SignalSetRequest>) -> R<admin::SignalSetResponse> {
        self.0.set_signal(r.into_inner()).await?;
        Ok(Response::new(admin::SignalSetResponse {}))
    }
}

#[tonic::async_trait]
impl AdminService for Admin {
    async fn create_task(&self, r: Request<admin::TaskCreateRequest>) -> R<admin::TaskCreateResponse> {
        let r = r.into_inner();
        self.0.create_task(r.id, r.spec).await?;
        Ok(Response::new(admin::TaskCreateResponse {}))
    }

    async fn get_task(&self, r: Request<admin::ObjectGetRequest>) -> R<admin::Task> {
        Ok(Response::new(self.0.get_task(r.into_inner().id).await?))
    }

    async fn list_task_ids(
        &self,
        r: Request<admin::NamedEntityIdentifierListRequest>,
    ) -> R<admin::NamedEntityIdentifierList> {
        let page = self.0.list_names(ResourceType::Task, &r.into_inner()).await?;
        Ok(Response::new(admin::NamedEntityIdentifierList { entities: page.items, token: page.token }))
    }

    async fn list_tasks(&self, r: Request<admin::ResourceListRequest>) -> R<admin::TaskList> {
        let page = self.0.list_entities(ResourceType::Task, &r.into_inner(), App::task_of).await?;
        Ok(Response::new(admin::TaskList { tasks: page.items, token: page.token }))
    }

    async fn create_workflow(&self, r: Request<admin::WorkflowCreateRequest>) -> R<admin::WorkflowCreateResponse> {
        let r = r.into_inner();
        self.0.create_workflow(r.id, r.spec).await?;
        Ok(Response::new(admin::WorkflowCreateResponse {}))
    }

    async fn get_workflow(&self, r: Request<admin::ObjectGetRequest>) -> R<admin::Workflow> {
        Ok(Response::new(self.0.get_workflow(r.into_inner().id).await?))
    }

    async fn list_workflow_ids(
        &self,
        r: Request<admin::NamedEntityIdentifierListRequest>,
    ) -> R<admin::NamedEntityIdentifierList> {
        let page = self.0.list_names(ResourceType::Workflow, &r.into_inner()).await?;
        Ok(Response::new(admin::NamedEntityIdentifierList { entities: page.items, token: page.token }))
    }

    async fn list_workflows(&self, r: Request<admin::ResourceListRequest>) -> R<admin::WorkflowList> {
        let page = self.0.list_entities(ResourceType::Workflow, &r.into_inner(), App::workflow_of).await?;
        Ok(Response::new(admin::WorkflowList { workflows: page.items, token: page.token }))
    }

    async fn create_launch_plan(
        &self,
        r: Request<admin::LaunchPlanCreateRequest>,
    ) -> R<admin::LaunchPlanCreateResponse> {
        let r = r.into_inner();
        self.0.create_launch_plan(r.id, r.spec).await?;
        Ok(Response::new(admin::LaunchPlanCreateResponse {}))
    }

    async fn get_launch_plan(&self, r: Request<admin::ObjectGetRequest>) -> R<admin::LaunchPlan> {
        Ok(Response::new(self.0.get_launch_plan(r.into_inner().id).await?))
    }

    async fn get_active_launch_plan(&self, r: Request<admin::ActiveLaunchPlanRequest>) -> R<admin::LaunchPlan> {
        Ok(Response::new(self.0.get_active_launch_plan(r.into_inner().id).await?))
    }

    async fn list_active_launch_plans(
        &self,
        r: Request<admin::ActiveLaunchPlanListRequest>,
    ) -> R<admin::LaunchPlanList> {
        let page = self.0.list_active_launch_plans(&r.into_inner()).await?;
        Ok(Response::new(admin::LaunchPlanList { launch_plans: page.items, token: page.token }))
    }

    async fn list_launch_plan_ids(
        &self,
        r: Request<admin::NamedEntityIdentifierListRequest>,
    ) -> R<admin::NamedEntityIdentifierList> {
        let page = self.0.list_names(ResourceType::LaunchPlan, &r.into_inner()).await?;
        Ok(Response::new(admin::NamedEntityIdentifierList { entities: page.items, token: page.token }))
    }

    async fn list_launch_plans(&self, r: Request<admin::ResourceListRequest>) -> R<admin::LaunchPlanList> {
        let page = self.0.list_entities(ResourceType::LaunchPlan, &r.into_inner(), App::launch_plan_of).await?;
        Ok(Response::new(admin::LaunchPlanList { launch_plans: page.items, token: page.token }))
    }

    async fn update_launch_plan(
        &self,
        r: Request<admin::LaunchPlanUpdateRequest>,
    ) -> R<admin::LaunchPlanUpdateResponse> {
        let r = r.into_inner();
        self.0.update_launch_plan(r.id, r.state).await?;
        Ok(Response::new(admin::LaunchPlanUpdateResponse {}))
    }

    async fn register_project(&self, r: Request<admin::ProjectRegisterRequest>) -> R<admin::ProjectRegisterResponse> {
        self.0.register_project(r.into_inner().project).await?;
        Ok(Response::new(admin::ProjectRegisterResponse {}))
    }

    async fn update_project(&self, r: Request<admin::Project>) -> R<admin::ProjectUpdateResponse> {
        self.0.update_project(r.into_inner()).await?;
        Ok(Response::new(admin::ProjectUpdateResponse {}))
    }

    async fn get_project(&self, r: Request<admin::ProjectGetRequest>) -> R<admin::Project> {
        Ok(Response::new(self.0.get_project(&r.into_inner().id).await?))
    }

    async fn list_projects(&self, r: Request<admin::ProjectListRequest>) -> R<admin::Projects> {
        let r = r.into_inner();
        let page = self.0.list_projects(r.limit, &r.token, &r.filters, r.sort_by.as_ref()).await?;
        Ok(Response::new(admin::Projects { projects: page.items, token: page.token }))
    }

    async fn get_domains(&self, _r: Request<admin::GetDomainRequest>) -> R<admin::GetDomainsResponse> {
        Ok(Response::new(admin::GetDomainsResponse { domains: self.0.get_domains() }))
    }

    async fn list_named_entities(&self, r: Request<admin::NamedEntityListRequest>) -> R<admin::NamedEntityList> {
        let page = self.0.list_named_entities(&r.into_inner()).await?;
        Ok(Response::new(admin::NamedEntityList { entities: page.items, token: page.token }))
    }

    async fn get_named_entity(&self, r: Request<admin::NamedEntityGetRequest>) -> R<admin::NamedEntity> {
        Ok(Response::new(self.0.get_named_entity(&r.into_inner()).await?))
    }

    async fn create_execution(&self, r: Request<admin::ExecutionCreateRequest>) -> R<admin::ExecutionCreateResponse> {
        let id = self.0.create_execution(r.into_inner()).await?;
        Ok(Response::new(admin::ExecutionCreateResponse { id: Some(id) }))
    }

    async fn relaunch_execution(
        &self,
        r: Request<admin::ExecutionRelaunchRequest>,
    ) -> R<admin::ExecutionCreateResponse> {
        let id = self.0.relaunch_execution(r.into_inner()).await?;
        Ok(Response::new(admin::ExecutionCreateResponse { id: Some(id) }))
    }

    async fn recover_execution(&self, r: Request<admin::ExecutionRecoverRequest>) -> R<admin::ExecutionCreateResponse> {
        let id = self.0.recover_execution(r.into_inner()).await?;
        Ok(Response::new(admin::ExecutionCreateResponse { id: Some(id) }))
    }

    async fn get_execution(&self, r: Request<admin::WorkflowExecutionGetRequest>) -> R<admin::Execution> {
        Ok(Response::new(self.0.get_execution(r.into_inner().id).await?))
    }

    async fn list_executions(&self, r: Request<admin::ResourceListRequest>) -> R<admin::ExecutionList> {
        let page = self.0.list_executions(&r.into_inner()).await?;
        Ok(Response::new(admin::ExecutionList { executions: page.items, token: page.token }))
    }

    async fn get_execution_data(
        &self,
        r: Request<admin::WorkflowExecutionGetDataRequest>,
    ) -> R<admin::WorkflowExecutionGetDataResponse> {
        Ok(Response::new(self.0.get_execution_data(r.into_inner().id).await?))
    }

    async fn terminate_execution(
        &self,
        r: Request<admin::ExecutionTerminateRequest>,
    ) -> R<admin::ExecutionTerminateResponse> {
        let r = r.into_inner();
        self.0.terminate_execution(r.id, r.cause).await?;
        Ok(Response::new(admin::ExecutionTerminateResponse {}))
    }

    async fn get_node_execution(&self, r: Request<admin::NodeExecutionGetRequest>) -> R<admin::NodeExecution> {
        Ok(Response::new(self.0.get_node_execution(r.into_inner().id).await?))
    }

    async fn list_node_executions(&self, r: Request<admin::NodeExecutionListRequest>) -> R<admin::NodeExecutionList> {
        let page = self.0.list_node_executions(&r.into_inner()).await?;
        Ok(Response::new(admin::NodeExecutionList { node_executions: page.items, token: page.token }))
    }

    async fn get_node_execution_data(
        &self,
        r: Request<admin::NodeExecutionGetDataRequest>,
    ) -> R<admin::NodeExecutionGetDataResponse> {
        Ok(Response::new(self.0.get_node_execution_data(r.into_inner().id).await?))
    }

    async fn get_task_execution(&self, r: Request<admin::TaskExecutionGetRequest>) -> R<admin::TaskExecution> {
        Ok(Response::new(self.0.get_task_execution(r.into_inner().id).await?))
    }

    async fn list_task_executions(&self, r: Request<admin::TaskExecutionListRequest>) -> R<admin::TaskExecutionList> {
        let page = self.0.list_task_executions(&r.into_inner()).await?;
        Ok(Response::new(admin::TaskExecutionList { task_executions: page.items, token: page.token }))
    }

    async fn get_task_execution_data(
        &self,
        r: Request<admin::TaskExecutionGetDataRequest>,
    ) -> R<admin::TaskExecutionGetDataResponse> {
        Ok(Response::new(self.0.get_task_execution_data(r.into_inner().id).await?))
    }

    async fn get_version(&self, _r: Request<admin::GetVersionRequest>) -> R<admin::GetVersionResponse> {
        Ok(Response::new(admin::GetVersionResponse {
            control_plane_version: Some(admin::Version {
                build: "aloft".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                build_time: String::new(),
            }),
        }))
    }
}

#[tonic::async_trait]
impl DataProxyService for DataProxy {
    async fn create_upload_location(
        &self,
        r: Request<svc::CreateUploadLocationRequest>,
    ) -> R<svc::CreateUploadLocationResponse> {
        Ok(Response::new(self.0.create_upload_location(&r.into_inner()).await?))
    }

    async fn get_data(&self, r: Request<svc::GetDataRequest>) -> R<svc::GetDataResponse> {
        Ok(Response::new(self.0.get_data(&r.into_inner().flyte_url).await?))
    }

    async fn create_download_location(
        &self,
        r: Request<svc::CreateDownloadLocationRequest>,
    ) -> R<svc::CreateDownloadLocationResponse> {
        let r = r.into_inner();
        let (signed_url, expires_at) = self.0.signed_download(&r.native_url, r.expires_in.as_ref()).await?;
        Ok(Response::new(svc::CreateDownloadLocationResponse {
            signed_url,
            expires_at: Some(prost_types::Timestamp { seconds: expires_at, nanos: 0 }),
        }))
    }
}
