//! `aloft.v1.LineageService`: decode and check the request, call the app, encode the answer.

use aloft_proto::aloft::v1::lineage_service_server::LineageService;
use aloft_proto::aloft::v1::{
    ApplyDeclarationsRequest, ApplyDeclarationsResponse, DeclarationsVersion, GetDeclarationsRequest,
    GetDeclarationsResponse, LineageEdge, LineageGraph, LineageGraphRequest, LineageNode, ModelTrainingDataRequest,
    ModelTrainingDataResponse, RunLineageRequest, RunsUsingDatasetRequest, RunsUsingDatasetResponse,
};
use tonic::{Request, Response, Status};

use crate::adapters::store::Direction;
use crate::app::{App, Graph};
use crate::domain::graph::Node;
use crate::error::Error;

/// The service implementation.
#[derive(Debug, Clone)]
pub struct Lineage(pub App);

/// A node as the API shows it.
pub fn node_message(n: &Node) -> LineageNode {
    LineageNode {
        key: n.key.clone(),
        kind: n.kind.to_proto() as i32,
        project: n.project.clone(),
        label: n.label.clone(),
        attributes: n
            .attrs
            .iter()
            .filter(|(k, _)| k.as_str() != "workflow_known")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

fn graph_message(g: Graph) -> LineageGraph {
    LineageGraph {
        nodes: g.nodes.iter().map(node_message).collect(),
        edges: g
            .edges
            .iter()
            .map(|e| LineageEdge { from: e.from.clone(), to: e.to.clone(), kind: e.kind.to_proto() as i32 })
            .collect(),
        truncated: g.truncated,
    }
}

fn timestamp(micros: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1000) as i32,
    }
}

fn required<'a>(value: &'a str, field: &str) -> Result<&'a str, Status> {
    if value.trim().is_empty() {
        return Err(Error::InvalidArgument(format!("{field} is required")).into());
    }
    Ok(value)
}

impl Lineage {
    async fn walk(&self, r: LineageGraphRequest, direction: Direction) -> Result<Response<LineageGraph>, Status> {
        let node = required(&r.node, "node")?;
        let g = self.0.walk(node, direction, r.depth, r.max_nodes as usize, &[]).await?;
        Ok(Response::new(graph_message(g)))
    }
}

#[tonic::async_trait]
impl LineageService for Lineage {
    async fn apply_declarations(
        &self,
        request: Request<ApplyDeclarationsRequest>,
    ) -> Result<Response<ApplyDeclarationsResponse>, Status> {
        let r = request.into_inner();
        let project = required(&r.project, "project")?;
        let a = self.0.apply_declarations(project, &r.file_name, &r.yaml, r.dry_run).await?;
        Ok(Response::new(ApplyDeclarationsResponse {
            version: a.version,
            changed: a.changed,
            digest: a.digest,
            nodes: a.nodes,
            edges: a.edges,
        }))
    }

    async fn get_declarations(
        &self,
        request: Request<GetDeclarationsRequest>,
    ) -> Result<Response<GetDeclarationsResponse>, Status> {
        let r = request.into_inner();
        let project = required(&r.project, "project")?;
        let version = (r.version != 0).then_some(r.version);
        let row = self.0.store.declarations(project, version).await?.ok_or_else(|| {
            Error::NotFound(match version {
                Some(v) => format!("project {project:?} has no declarations version {v}"),
                None => format!("project {project:?} has no declarations"),
            })
        })?;
        let versions = self.0.store.declaration_versions(project).await?;
        Ok(Response::new(GetDeclarationsResponse {
            project: row.project,
            version: row.version,
            yaml: row.yaml,
            file_name: row.file_name,
            digest: row.digest,
            applied_at: Some(timestamp(row.applied_at)),
            versions: versions
                .into_iter()
                .map(|(version, digest, at)| DeclarationsVersion { version, digest, applied_at: Some(timestamp(at)) })
                .collect(),
        }))
    }

    async fn upstream(&self, request: Request<LineageGraphRequest>) -> Result<Response<LineageGraph>, Status> {
        self.walk(request.into_inner(), Direction::Upstream).await
    }

    async fn downstream(&self, request: Request<LineageGraphRequest>) -> Result<Response<LineageGraph>, Status> {
        self.walk(request.into_inner(), Direction::Downstream).await
    }

    async fn run_lineage(&self, request: Request<RunLineageRequest>) -> Result<Response<LineageGraph>, Status> {
        let id =
            request.into_inner().execution.ok_or_else(|| Error::InvalidArgument("execution is required".into()))?;
        required(&id.project, "execution.project")?;
        required(&id.domain, "execution.domain")?;
        required(&id.name, "execution.name")?;
        Ok(Response::new(graph_message(self.0.run_lineage(&id).await?)))
    }

    async fn runs_using_dataset(
        &self,
        request: Request<RunsUsingDatasetRequest>,
    ) -> Result<Response<RunsUsingDatasetResponse>, Status> {
        let r = request.into_inner();
        let uri = required(&r.uri, "uri")?;
        let (dataset, runs, attempts) = self.0.runs_using_dataset(uri).await?;
        Ok(Response::new(RunsUsingDatasetResponse {
            dataset: Some(node_message(&dataset)),
            runs: runs.iter().map(node_message).collect(),
            attempts: attempts.iter().map(node_message).collect(),
        }))
    }

    async fn model_training_data(
        &self,
        request: Request<ModelTrainingDataRequest>,
    ) -> Result<Response<ModelTrainingDataResponse>, Status> {
        let r = request.into_inner();
        let project = required(&r.project, "project")?;
        let model = required(&r.model, "model")?;
        let (mv, runs, datasets, sources) = self.0.model_training_data(project, model, &r.version).await?;
        Ok(Response::new(ModelTrainingDataResponse {
            model_version: Some(node_message(&mv)),
            runs: runs.iter().map(node_message).collect(),
            datasets: datasets.iter().map(node_message).collect(),
            sources: sources.iter().map(node_message).collect(),
        }))
    }
}
