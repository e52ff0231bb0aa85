//! What the metadata service's admin API says about a run: the workflow and launch plan
//! versions and the parent node. Workflow events do not carry them (flyteidl's
//! `WorkflowExecutionEvent` has no workflow id), and this service reads no other service's
//! tables, so it asks `AdminService.GetExecution` once per run and keeps the answer in the graph.

use aloft_proto::flyteidl::admin::WorkflowExecutionGetRequest;
use aloft_proto::flyteidl::core::WorkflowExecutionIdentifier;
use aloft_proto::flyteidl::service::admin_service_client::AdminServiceClient;
use tonic::transport::{Channel, Endpoint};

use crate::domain::capture::RunInfo;
use crate::error::Error;

/// A lazily connected admin client.
#[derive(Clone, Debug)]
pub struct Admin {
    client: AdminServiceClient<Channel>,
    endpoint: String,
}

impl Admin {
    /// A client for `endpoint` (`http://host:port`); connects on first use, so the lineage
    /// service starts even while metadata is still starting.
    pub fn new(endpoint: &str, timeout: std::time::Duration) -> Result<Admin, Error> {
        let channel = Endpoint::from_shared(endpoint.to_string())
            .map_err(|e| Error::Config(format!("metadata.endpoint `{endpoint}`: {e}")))?
            .connect_timeout(timeout)
            .timeout(timeout)
            .tcp_nodelay(true)
            .connect_lazy();
        Ok(Admin { client: AdminServiceClient::new(channel), endpoint: endpoint.to_string() })
    }

    /// The run's facts; `Ok(None)` when metadata does not know the execution (its events then
    /// still build the graph, without workflow names).
    pub async fn run_info(&self, id: &WorkflowExecutionIdentifier) -> Result<Option<RunInfo>, Error> {
        let request = WorkflowExecutionGetRequest { id: Some(id.clone()) };
        match self.client.clone().get_execution(request).await {
            Ok(reply) => {
                let e = reply.into_inner();
                let spec = e.spec.unwrap_or_default();
                Ok(Some(RunInfo {
                    workflow: e.closure.and_then(|c| c.workflow_id),
                    launch_plan: spec.launch_plan,
                    parent: spec.metadata.and_then(|m| m.parent_node_execution),
                }))
            }
            Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
            Err(s) => Err(Error::Unavailable(format!(
                "metadata at {} (GetExecution {}/{}/{}): {}: {}",
                self.endpoint,
                id.project,
                id.domain,
                id.name,
                s.code(),
                s.message()
            ))),
        }
    }
}
