//! The gRPC edge of the commands: connecting to a running Aloft, mapping gRPC errors to one-line
//! messages, and gathering the views (an execution with its whole node tree) from the admin API.

use std::time::Duration;

use aloft_proto::aloft::v1::lineage_service_client::LineageServiceClient;
use aloft_proto::aloft::v1::notifier_service_client::NotifierServiceClient;
use aloft_proto::flyteidl::service::admin_service_client::AdminServiceClient;
use aloft_proto::flyteidl::service::data_proxy_service_client::DataProxyServiceClient;
use aloft_proto::flyteidl::{admin, core, service};
use tonic::transport::Channel;

use super::view::{AttemptView, ExecutionDetail, ExecutionView, NodeView};
use crate::Error;

/// Per call; a local Aloft answers in milliseconds, so a long wait means something is wrong.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// A page of a list call.
const PAGE: u32 = 500;

/// Which service an endpoint belongs to, for error messages that name the flag to change.
#[derive(Debug, Clone, Copy)]
pub enum Service {
    /// The admin API (metadata).
    Admin,
    /// `aloft.v1.NotifierService`.
    Notifier,
    /// `aloft.v1.LineageService`.
    Lineage,
}

impl Service {
    fn names(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Service::Admin => ("aloft", "--endpoint", "ALOFT_ENDPOINT"),
            Service::Notifier => ("the notifier", "--notifier", "ALOFT_NOTIFIER_ENDPOINT"),
            Service::Lineage => ("the lineage service", "--lineage", "ALOFT_LINEAGE_ENDPOINT"),
        }
    }
}

/// `host:port`, `dns:///host:port` (flytekit's form) or `http://host:port` as a tonic URI.
pub fn endpoint_uri(endpoint: &str) -> Result<String, Error> {
    let bare = endpoint.trim().trim_start_matches("dns:///").trim_start_matches("http://").trim_end_matches('/');
    if endpoint.trim().starts_with("https://") {
        return Err(Error::Usage(format!("endpoint {endpoint}: TLS is not supported; use host:port of a local Aloft")));
    }
    match bare.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(format!("http://{bare}")),
        _ => Err(Error::Usage(format!("endpoint `{endpoint}` is not host:port"))),
    }
}

/// A lazily connected channel: the first call reports an unreachable server with the flag to fix.
pub fn channel(endpoint: &str) -> Result<Channel, Error> {
    let uri = endpoint_uri(endpoint)?;
    let ep = Channel::from_shared(uri).map_err(|e| Error::Usage(format!("endpoint `{endpoint}`: {e}")))?;
    Ok(ep.connect_timeout(Duration::from_secs(5)).timeout(CALL_TIMEOUT).connect_lazy())
}

/// Turns a failed call into a one-line error: NOT_FOUND names the thing, UNAVAILABLE the endpoint.
pub fn status(service: Service, endpoint: &str, what: &str) -> impl Fn(tonic::Status) -> Error {
    let (name, flag, env) = service.names();
    let endpoint = endpoint.to_string();
    let what = what.to_string();
    move |s: tonic::Status| match s.code() {
        tonic::Code::NotFound => Error::NotFound(format!("{what} not found")),
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => Error::Unreachable {
            service: name,
            endpoint: endpoint.clone(),
            message: first_line(s.message()),
            flag,
            env,
        },
        tonic::Code::Unimplemented => Error::Remote(format!(
            "{what}: {name} at {endpoint} does not implement this call ({})",
            first_line(s.message())
        )),
        _ => Error::Remote(format!("{what}: {}", first_line(s.message()))),
    }
}

fn first_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or_default().trim();
    if line.is_empty() { "no details".into() } else { line.to_string() }
}

/// The admin API and data proxy of one Aloft.
#[derive(Clone)]
pub struct Admin {
    /// As given (for messages).
    pub endpoint: String,
    admin: AdminServiceClient<Channel>,
    proxy: DataProxyServiceClient<Channel>,
}

/// `project/domain/name` of an execution.
pub fn exec_id(project: &str, domain: &str, name: &str) -> core::WorkflowExecutionIdentifier {
    core::WorkflowExecutionIdentifier {
        project: project.into(),
        domain: domain.into(),
        name: name.into(),
        org: String::new(),
    }
}

fn show(id: &core::WorkflowExecutionIdentifier) -> String {
    format!("execution {}/{}/{}", id.project, id.domain, id.name)
}

impl Admin {
    /// A client of the admin API at `endpoint`.
    pub fn new(endpoint: &str) -> Result<Admin, Error> {
        let ch = channel(endpoint)?;
        Ok(Admin {
            endpoint: endpoint.to_string(),
            admin: AdminServiceClient::new(ch.clone())
                .max_decoding_message_size(64 * 1024 * 1024)
                .max_encoding_message_size(64 * 1024 * 1024),
            proxy: DataProxyServiceClient::new(ch),
        })
    }

    fn err(&self, what: &str) -> impl Fn(tonic::Status) -> Error {
        status(Service::Admin, &self.endpoint, what)
    }

    /// Every project, sorted by id.
    pub async fn projects(&self) -> Result<Vec<admin::Project>, Error> {
        let mut out = Vec::new();
        let mut token = String::new();
        loop {
            let page = self
                .admin
                .clone()
                .list_projects(admin::ProjectListRequest { limit: PAGE, token, ..Default::default() })
                .await
                .map_err(self.err("projects"))?
                .into_inner();
            out.extend(page.projects);
            if page.token.is_empty() {
                break;
            }
            token = page.token;
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// One project.
    pub async fn project(&self, id: &str) -> Result<admin::Project, Error> {
        let req = admin::ProjectGetRequest { id: id.into(), ..Default::default() };
        Ok(self.admin.clone().get_project(req).await.map_err(self.err(&format!("project {id}")))?.into_inner())
    }

    /// Registers a new project.
    pub async fn register_project(&self, project: admin::Project) -> Result<(), Error> {
        let what = format!("project {}", project.id);
        self.admin
            .clone()
            .register_project(admin::ProjectRegisterRequest { project: Some(project) })
            .await
            .map_err(self.err(&what))?;
        Ok(())
    }

    /// The domains every project has.
    pub async fn domains(&self) -> Result<Vec<String>, Error> {
        let r = self.admin.clone().get_domains(admin::GetDomainRequest {}).await.map_err(self.err("domains"))?;
        Ok(r.into_inner().domains.into_iter().map(|d| d.id).collect())
    }

    /// Executions of one project and domain matching `filters` (admin filter syntax), newest first.
    pub async fn executions(
        &self,
        project: &str,
        domain: &str,
        filters: &str,
        limit: u32,
    ) -> Result<Vec<admin::Execution>, Error> {
        let req = admin::ResourceListRequest {
            id: Some(admin::NamedEntityIdentifier {
                project: project.into(),
                domain: domain.into(),
                ..Default::default()
            }),
            limit,
            filters: filters.into(),
            sort_by: Some(admin::Sort {
                key: "created_at".into(),
                direction: admin::sort::Direction::Descending as i32,
            }),
            ..Default::default()
        };
        let what = format!("executions of {project}/{domain}");
        Ok(self.admin.clone().list_executions(req).await.map_err(self.err(&what))?.into_inner().executions)
    }

    /// One execution.
    pub async fn execution(&self, id: &core::WorkflowExecutionIdentifier) -> Result<admin::Execution, Error> {
        let req = admin::WorkflowExecutionGetRequest { id: Some(id.clone()) };
        Ok(self.admin.clone().get_execution(req).await.map_err(self.err(&show(id)))?.into_inner())
    }

    /// Asks the scheduler to stop an execution.
    pub async fn terminate(&self, id: &core::WorkflowExecutionIdentifier, cause: &str) -> Result<(), Error> {
        let req = admin::ExecutionTerminateRequest { id: Some(id.clone()), cause: cause.into() };
        self.admin.clone().terminate_execution(req).await.map_err(self.err(&show(id)))?;
        Ok(())
    }

    /// Starts the same launch plan with the same inputs again; returns the new execution's id.
    pub async fn relaunch(
        &self,
        id: &core::WorkflowExecutionIdentifier,
    ) -> Result<core::WorkflowExecutionIdentifier, Error> {
        let req = admin::ExecutionRelaunchRequest { id: Some(id.clone()), ..Default::default() };
        let r = self.admin.clone().relaunch_execution(req).await.map_err(self.err(&show(id)))?.into_inner();
        r.id.ok_or_else(|| Error::Remote(format!("{}: relaunch answered without an id", show(id))))
    }

    /// Nodes directly under `parent` (top level when empty), in the server's order.
    async fn nodes(
        &self,
        id: &core::WorkflowExecutionIdentifier,
        parent: &str,
    ) -> Result<Vec<admin::NodeExecution>, Error> {
        let mut out = Vec::new();
        let mut token = String::new();
        loop {
            let req = admin::NodeExecutionListRequest {
                workflow_execution_id: Some(id.clone()),
                limit: PAGE,
                token,
                unique_parent_id: parent.into(),
                ..Default::default()
            };
            let page = self.admin.clone().list_node_executions(req).await.map_err(self.err(&show(id)))?.into_inner();
            out.extend(page.node_executions);
            if page.token.is_empty() {
                break;
            }
            token = page.token;
        }
        Ok(out)
    }

    /// The attempts of one node, oldest first.
    pub async fn attempts(
        &self,
        id: &core::WorkflowExecutionIdentifier,
        node: &str,
    ) -> Result<Vec<admin::TaskExecution>, Error> {
        let req = admin::TaskExecutionListRequest {
            node_execution_id: Some(core::NodeExecutionIdentifier {
                node_id: node.into(),
                execution_id: Some(id.clone()),
            }),
            limit: PAGE,
            ..Default::default()
        };
        let what = format!("node {node} of {}", show(id));
        let mut list =
            self.admin.clone().list_task_executions(req).await.map_err(self.err(&what))?.into_inner().task_executions;
        list.sort_by_key(|t| t.id.as_ref().map(|i| i.retry_attempt).unwrap_or_default());
        Ok(list)
    }

    /// One node execution (NOT_FOUND names the node).
    pub async fn node(
        &self,
        id: &core::WorkflowExecutionIdentifier,
        node: &str,
    ) -> Result<admin::NodeExecution, Error> {
        let req = admin::NodeExecutionGetRequest {
            id: Some(core::NodeExecutionIdentifier { node_id: node.into(), execution_id: Some(id.clone()) }),
        };
        let what = format!("node {node} of {}", show(id));
        Ok(self.admin.clone().get_node_execution(req).await.map_err(self.err(&what))?.into_inner())
    }

    /// The execution with its whole node tree: children through `unique_parent_id`, attempts
    /// through ListTaskExecutions.
    pub async fn detail(&self, id: &core::WorkflowExecutionIdentifier) -> Result<ExecutionDetail, Error> {
        let execution = ExecutionView::from_proto(&self.execution(id).await?);
        let nodes = self.tree(id, "").await?;
        Ok(ExecutionDetail { execution, nodes })
    }

    /// Depth first; boxed because it recurses.
    fn tree<'a>(
        &'a self,
        id: &'a core::WorkflowExecutionIdentifier,
        parent: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<NodeView>, Error>> + Send + 'a>> {
        Box::pin(async move {
            let mut out = Vec::new();
            for n in self.nodes(id, parent).await? {
                let mut view = NodeView::from_proto(&n);
                if view.is_bookkeeping() {
                    out.push(view);
                    continue;
                }
                if n.metadata.as_ref().is_some_and(|m| m.is_parent_node) {
                    view.children = self.tree(id, &view.id).await?;
                } else {
                    view.attempts = self.attempts(id, &view.id).await?.iter().map(AttemptView::from_proto).collect();
                    view.task = view.attempts.last().map(|a| a.task.clone()).unwrap_or_default();
                }
                out.push(view);
            }
            out.sort_by(|a, b| {
                let key = |n: &NodeView| (n.started_at.is_none(), n.started_at.unwrap_or_default());
                key(a).partial_cmp(&key(b)).unwrap_or(std::cmp::Ordering::Equal)
            });
            Ok(out)
        })
    }

    /// Inputs and outputs of an execution.
    pub async fn execution_data(
        &self,
        id: &core::WorkflowExecutionIdentifier,
    ) -> Result<(Option<core::LiteralMap>, Option<core::LiteralMap>), Error> {
        let req = admin::WorkflowExecutionGetDataRequest { id: Some(id.clone()) };
        let r = self.admin.clone().get_execution_data(req).await.map_err(self.err(&show(id)))?.into_inner();
        Ok((r.full_inputs, r.full_outputs))
    }

    /// Inputs and outputs of one node.
    pub async fn node_data(
        &self,
        id: &core::WorkflowExecutionIdentifier,
        node: &str,
    ) -> Result<(Option<core::LiteralMap>, Option<core::LiteralMap>), Error> {
        let req = admin::NodeExecutionGetDataRequest {
            id: Some(core::NodeExecutionIdentifier { node_id: node.into(), execution_id: Some(id.clone()) }),
        };
        let what = format!("node {node} of {}", show(id));
        let r = self.admin.clone().get_node_execution_data(req).await.map_err(self.err(&what))?.into_inner();
        Ok((r.full_inputs, r.full_outputs))
    }

    /// The bytes at a blob URI of this deployment, through a signed download URL from the data
    /// proxy (the same way flytekit downloads).
    pub async fn download(&self, uri: &str) -> Result<Vec<u8>, Error> {
        let req = service::CreateDownloadLocationRequest { native_url: uri.into(), ..Default::default() };
        // Deprecated in flyteidl for CreateDownloadLink, but it is the one metadata serves.
        #[allow(deprecated)]
        let signed =
            self.proxy.clone().create_download_location(req).await.map_err(self.err(uri))?.into_inner().signed_url;
        let fail = |e: String| Error::Remote(format!("cannot download {uri}: {e}"));
        let resp = reqwest::Client::new().get(&signed).send().await.map_err(|e| fail(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(fail(format!("HTTP {}", resp.status())));
        }
        Ok(resp.bytes().await.map_err(|e| fail(e.to_string()))?.to_vec())
    }
}

/// Every delivery the notifier recorded for an execution.
pub async fn deliveries(
    endpoint: &str,
    id: &core::WorkflowExecutionIdentifier,
) -> Result<Vec<aloft_proto::aloft::v1::NotificationDelivery>, Error> {
    let mut client = NotifierServiceClient::new(channel(endpoint)?);
    let req = aloft_proto::aloft::v1::ListDeliveriesRequest { execution_id: Some(id.clone()) };
    let r = client.list_deliveries(req).await.map_err(status(Service::Notifier, endpoint, &show(id)))?;
    Ok(r.into_inner().deliveries)
}

/// The lineage graph of one run.
pub async fn run_lineage(
    endpoint: &str,
    id: &core::WorkflowExecutionIdentifier,
) -> Result<aloft_proto::aloft::v1::LineageGraph, Error> {
    let mut client = LineageServiceClient::new(channel(endpoint)?);
    let req = aloft_proto::aloft::v1::RunLineageRequest { execution: Some(id.clone()) };
    Ok(client.run_lineage(req).await.map_err(status(Service::Lineage, endpoint, &show(id)))?.into_inner())
}

/// Validates and stores a project's lineage.yaml. INVALID_ARGUMENT lists every problem, one per
/// line, so it is passed on whole.
pub async fn apply_declarations(
    endpoint: &str,
    project: &str,
    yaml: &str,
    file_name: &str,
    dry_run: bool,
) -> Result<aloft_proto::aloft::v1::ApplyDeclarationsResponse, Error> {
    let mut client = LineageServiceClient::new(channel(endpoint)?);
    let req = aloft_proto::aloft::v1::ApplyDeclarationsRequest {
        project: project.into(),
        yaml: yaml.into(),
        file_name: file_name.into(),
        dry_run,
    };
    match client.apply_declarations(req).await {
        Ok(r) => Ok(r.into_inner()),
        Err(s) if s.code() == tonic::Code::InvalidArgument => Err(Error::Remote(s.message().trim().to_string())),
        Err(s) => Err(status(Service::Lineage, endpoint, &format!("lineage of project {project}"))(s)),
    }
}

/// What a model version was trained on.
pub async fn model_lineage(
    endpoint: &str,
    project: &str,
    model: &str,
    version: &str,
) -> Result<aloft_proto::aloft::v1::ModelTrainingDataResponse, Error> {
    let mut client = LineageServiceClient::new(channel(endpoint)?);
    let req = aloft_proto::aloft::v1::ModelTrainingDataRequest {
        project: project.into(),
        model: model.into(),
        version: version.into(),
    };
    let what = if version.is_empty() {
        format!("model {project}/{model}")
    } else {
        format!("model {project}/{model}@{version}")
    };
    Ok(client.model_training_data(req).await.map_err(status(Service::Lineage, endpoint, &what))?.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_in_every_form_flytekit_users_write() {
        for e in ["localhost:30080", "dns:///localhost:30080", "http://localhost:30080/"] {
            assert_eq!(endpoint_uri(e).unwrap(), "http://localhost:30080", "{e}");
        }
        assert_eq!(endpoint_uri("localhost").unwrap_err().to_string(), "endpoint `localhost` is not host:port");
        assert!(endpoint_uri("https://x:1").unwrap_err().to_string().contains("TLS"));
    }

    #[test]
    fn not_found_and_unavailable_are_one_line_naming_the_thing_or_the_flag() {
        let map = status(Service::Admin, "localhost:1", "execution p/d/x");
        let e = map(tonic::Status::not_found("row missing\ndetails"));
        assert_eq!(e.to_string(), "execution p/d/x not found");
        let e = map(tonic::Status::unavailable("tcp connect error"));
        assert_eq!(
            e.to_string(),
            "cannot reach aloft at localhost:1: tcp connect error (is `aloft up` running? pass --endpoint or set ALOFT_ENDPOINT)"
        );
        let e = map(tonic::Status::invalid_argument("bad\nmore"));
        assert_eq!(e.to_string(), "execution p/d/x: bad");
    }
}
