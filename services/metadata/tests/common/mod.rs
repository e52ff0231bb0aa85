//! Shared fixtures: start the service on port 0 against SQLite or a fresh Postgres database, and
//! build realistic flyteidl specs tersely.
#![allow(dead_code)]

use aloft_metadata::Config;
use aloft_proto::flyteidl::admin::{self, LaunchPlanSpec, TaskSpec, WorkflowSpec};
use aloft_proto::flyteidl::core::{
    self, Binding, BindingData, Identifier, LiteralType, Node, NodeMetadata, OutputReference, ResourceType, SimpleType,
    TaskNode, TaskTemplate, TypedInterface, Variable, VariableMap, WorkflowTemplate, binding_data, literal_type, node,
    task_node,
};
use aloft_proto::flyteidl::service::admin_service_client::AdminServiceClient;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// A running metadata service and a client to it.
pub struct Env {
    pub client: AdminServiceClient<Channel>,
    pub dataproxy: aloft_proto::flyteidl::service::data_proxy_service_client::DataProxyServiceClient<Channel>,
    pub http: std::net::SocketAddr,
    pub store_dir: tempfile::TempDir,
    pub shutdown: CancellationToken,
    _db_dir: tempfile::TempDir,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

#[derive(Clone, Copy, Debug)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub async fn start(backend: Backend, tweak: impl FnOnce(&mut Config)) -> Env {
    let db_dir = tempfile::tempdir().unwrap();
    let store_dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.grpc.listen = "127.0.0.1:0".into();
    config.http.listen = "127.0.0.1:0".into();
    config.database_url = match backend {
        Backend::Sqlite => format!("sqlite://{}/metadata.db", db_dir.path().display()),
        Backend::Postgres => aloft_testkit::fresh_postgres_url("meta").await,
    };
    config.storage = aloft_blob::BlobConfig { root: store_dir.path().display().to_string(), ..Default::default() };
    tweak(&mut config);
    let shutdown = CancellationToken::new();
    let running = aloft_metadata::start(config, shutdown.clone()).await.expect("metadata starts");
    let url = format!("http://{}", running.grpc_addr);
    let channel = Channel::from_shared(url).unwrap().connect().await.unwrap();
    Env {
        client: AdminServiceClient::new(channel.clone()),
        dataproxy: aloft_proto::flyteidl::service::data_proxy_service_client::DataProxyServiceClient::new(channel),
        http: running.http_addr,
        store_dir,
        shutdown,
        _db_dir: db_dir,
    }
}

/// Runs an async test body once per backend.
#[macro_export]
macro_rules! both_backends {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;
            #[tokio::test]
            async fn sqlite() {
                ($body)(common::Backend::Sqlite).await
            }
            #[tokio::test]
            async fn postgres() {
                ($body)(common::Backend::Postgres).await
            }
        }
    };
}

pub const PROJECT: &str = "marketplace";
pub const DOMAIN: &str = "development";

pub fn id(kind: ResourceType, name: &str, version: &str) -> Identifier {
    Identifier {
        resource_type: kind as i32,
        project: PROJECT.into(),
        domain: DOMAIN.into(),
        name: name.into(),
        version: version.into(),
        org: String::new(),
    }
}

pub fn simple(t: SimpleType) -> LiteralType {
    LiteralType { r#type: Some(literal_type::Type::Simple(t as i32)), ..Default::default() }
}

pub fn vars(v: &[(&str, SimpleType)]) -> VariableMap {
    VariableMap {
        variables: v
            .iter()
            .map(|(n, t)| (n.to_string(), Variable { r#type: Some(simple(*t)), ..Default::default() }))
            .collect(),
    }
}

pub fn interface(inputs: &[(&str, SimpleType)], outputs: &[(&str, SimpleType)]) -> TypedInterface {
    TypedInterface { inputs: Some(vars(inputs)), outputs: Some(vars(outputs)) }
}

/// A python task `name` with integer input `x` and integer output `o0`, like flytekit registers.
pub fn task_spec(name: &str, version: &str) -> TaskSpec {
    TaskSpec {
        template: Some(TaskTemplate {
            id: Some(id(ResourceType::Task, name, version)),
            r#type: "python-task".into(),
            interface: Some(interface(&[("x", SimpleType::Integer)], &[("o0", SimpleType::Integer)])),
            metadata: Some(core::TaskMetadata {
                retries: Some(core::RetryStrategy { retries: 1 }),
                ..Default::default()
            }),
            target: Some(core::task_template::Target::Container(core::Container {
                image: "ghcr.io/example/img:1".into(),
                args: vec!["pyflyte-execute".into(), "--inputs".into(), "{{.input}}".into()],
                ..Default::default()
            })),
            ..Default::default()
        }),
        description: None,
    }
}

pub fn promise(node_id: &str, var: &str) -> BindingData {
    BindingData {
        value: Some(binding_data::Value::Promise(OutputReference {
            node_id: node_id.into(),
            var: var.into(),
            attr_path: vec![],
        })),
        union: None,
    }
}

pub fn bind(var: &str, data: BindingData) -> Binding {
    Binding { var: var.into(), binding: Some(data) }
}

pub fn task_node(node_id: &str, task: &Identifier, inputs: Vec<Binding>) -> Node {
    Node {
        id: node_id.into(),
        metadata: Some(NodeMetadata { name: task.name.clone(), ..Default::default() }),
        inputs,
        target: Some(node::Target::TaskNode(TaskNode {
            reference: Some(task_node::Reference::ReferenceId(task.clone())),
            overrides: None,
        })),
        ..Default::default()
    }
}

/// `wf(x: int) -> int`: n0 = t1(x), n1 = t2(n0.o0), output o0 = n1.o0.
pub fn workflow_spec(name: &str, version: &str, t1: &Identifier, t2: &Identifier) -> WorkflowSpec {
    WorkflowSpec {
        template: Some(WorkflowTemplate {
            id: Some(id(ResourceType::Workflow, name, version)),
            interface: Some(interface(&[("x", SimpleType::Integer)], &[("o0", SimpleType::Integer)])),
            nodes: vec![
                task_node("n0", t1, vec![bind("x", promise("", "x"))]),
                task_node("n1", t2, vec![bind("x", promise("n0", "o0"))]),
            ],
            outputs: vec![bind("o0", promise("n1", "o0"))],
            ..Default::default()
        }),
        sub_workflows: vec![],
        description: None,
    }
}

pub fn int_literal(v: i64) -> core::Literal {
    core::Literal {
        value: Some(core::literal::Value::Scalar(Box::new(core::Scalar {
            value: Some(core::scalar::Value::Primitive(core::Primitive {
                value: Some(core::primitive::Value::Integer(v)),
            })),
        }))),
        ..Default::default()
    }
}

pub fn launch_plan_spec(wf: &Identifier, default_x: Option<i64>) -> LaunchPlanSpec {
    let mut params = core::ParameterMap::default();
    params.parameters.insert(
        "x".into(),
        core::Parameter {
            var: Some(Variable { r#type: Some(simple(SimpleType::Integer)), ..Default::default() }),
            behavior: Some(match default_x {
                Some(v) => core::parameter::Behavior::Default(int_literal(v)),
                None => core::parameter::Behavior::Required(true),
            }),
        },
    );
    LaunchPlanSpec { workflow_id: Some(wf.clone()), default_inputs: Some(params), ..Default::default() }
}

/// Registers t1, t2 and wf at `version`, and a launch plan named like the workflow.
pub async fn register_basics(env: &mut Env, version: &str) -> (Identifier, Identifier, Identifier, Identifier) {
    let t1 = id(ResourceType::Task, "pipeline.t1", version);
    let t2 = id(ResourceType::Task, "pipeline.t2", version);
    for t in [&t1, &t2] {
        env.client
            .create_task(admin::TaskCreateRequest { id: Some(t.clone()), spec: Some(task_spec(&t.name, version)) })
            .await
            .unwrap();
    }
    let wf = id(ResourceType::Workflow, "pipeline.wf", version);
    env.client
        .create_workflow(admin::WorkflowCreateRequest {
            id: Some(wf.clone()),
            spec: Some(workflow_spec(&wf.name, version, &t1, &t2)),
        })
        .await
        .unwrap();
    let lp = id(ResourceType::LaunchPlan, "pipeline.wf", version);
    env.client
        .create_launch_plan(admin::LaunchPlanCreateRequest {
            id: Some(lp.clone()),
            spec: Some(launch_plan_spec(&wf, Some(3))),
        })
        .await
        .unwrap();
    (t1, t2, wf, lp)
}
