//! Reading enrichment data from metadata's admin API (the notifier keeps no copy of it).

use std::collections::BTreeMap;
use std::time::Duration;

use aloft_proto::flyteidl::admin::{
    Execution, LaunchPlan, NodeExecution, NodeExecutionListRequest, ObjectGetRequest, ProjectGetRequest,
    WorkflowExecutionGetDataRequest, WorkflowExecutionGetRequest,
};
use aloft_proto::flyteidl::core::{Identifier, LiteralMap, ResourceType, WorkflowExecutionIdentifier};
use aloft_proto::flyteidl::service::admin_service_client::AdminServiceClient;
use tonic::transport::{Channel, Endpoint};

/// Why a metadata call did not answer what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    /// It does not exist (NOT_FOUND).
    #[error("not found: {0}")]
    NotFound(String),
    /// Metadata is unreachable, overloaded or failed; worth retrying later.
    #[error("metadata unavailable: {0}")]
    Unavailable(String),
}

impl From<tonic::Status> for MetadataError {
    fn from(s: tonic::Status) -> Self {
        match s.code() {
            tonic::Code::NotFound => MetadataError::NotFound(s.message().to_string()),
            code => MetadataError::Unavailable(format!("{code:?}: {}", s.message())),
        }
    }
}

/// The admin API client. Connects lazily: the notifier starts (and serves its own API) while
/// metadata is down, and its calls fail as `Unavailable` until it is back.
#[derive(Debug, Clone)]
pub struct MetadataClient {
    client: AdminServiceClient<Channel>,
}

type R<T> = Result<T, MetadataError>;

impl MetadataClient {
    /// A client for `endpoint` (`http://host:port`) with `timeout` per call.
    pub fn connect_lazy(endpoint: &str, timeout: Duration) -> Result<MetadataClient, String> {
        let channel = Endpoint::from_shared(endpoint.to_string())
            .map_err(|e| format!("metadata.endpoint `{endpoint}`: {e}"))?
            .connect_timeout(timeout)
            .timeout(timeout)
            .connect_lazy();
        Ok(MetadataClient { client: AdminServiceClient::new(channel).max_decoding_message_size(64 * 1024 * 1024) })
    }

    /// GetExecution.
    pub async fn execution(&self, id: &WorkflowExecutionIdentifier) -> R<Execution> {
        let req = WorkflowExecutionGetRequest { id: Some(id.clone()) };
        Ok(self.client.clone().get_execution(req).await?.into_inner())
    }

    /// GetLaunchPlan; `None` when it is gone.
    pub async fn launch_plan(&self, id: &Identifier) -> R<Option<LaunchPlan>> {
        let id = Identifier { resource_type: ResourceType::LaunchPlan as i32, ..id.clone() };
        match self.client.clone().get_launch_plan(ObjectGetRequest { id: Some(id) }).await {
            Ok(r) => Ok(Some(r.into_inner())),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
            Err(s) => Err(s.into()),
        }
    }

    /// GetProject's labels; none when the project is unknown.
    pub async fn project_labels(&self, project: &str) -> R<BTreeMap<String, String>> {
        let req = ProjectGetRequest { id: project.to_string(), ..Default::default() };
        match self.client.clone().get_project(req).await {
            Ok(r) => Ok(r.into_inner().labels.map(|l| l.values).unwrap_or_default()),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(BTreeMap::new()),
            Err(s) => Err(s.into()),
        }
    }

    /// ListNodeExecutions (top level, first page: enough to find the failing node).
    pub async fn nodes(&self, id: &WorkflowExecutionIdentifier) -> R<Vec<NodeExecution>> {
        let req =
            NodeExecutionListRequest { workflow_execution_id: Some(id.clone()), limit: 500, ..Default::default() };
        Ok(self.client.clone().list_node_executions(req).await?.into_inner().node_executions)
    }

    /// GetExecutionData's inputs.
    pub async fn inputs(&self, id: &WorkflowExecutionIdentifier) -> R<Option<LiteralMap>> {
        let req = WorkflowExecutionGetDataRequest { id: Some(id.clone()) };
        Ok(self.client.clone().get_execution_data(req).await?.into_inner().full_inputs)
    }
}
