//! Test servers that speak the notifier's external protocols, on 127.0.0.1 port 0:
//! - [`Slack`]: incoming webhooks (`POST /hooks/<name>`, plain-text answers) and the Web API
//!   (`POST /api/chat.postMessage`, JSON answers), each scriptable per webhook or channel
//!   (`ok`, JSON errors, 429 with Retry-After, 404, 410, 500);
//! - [`Lambda`]: the Lambda Invoke API (`POST /2015-03-31/functions/<name>/invocations`) with
//!   functions that answer, fail (`X-Amz-Function-Error`), hang or are throttled;
//! - [`Admin`]: metadata's admin API answering from executions the test describes (the
//!   end-to-end test in `tests/e2e/tests/notify.rs` uses the real metadata).
//!
//! Plus helpers to publish terminal workflow events and to query `NotifierService`.

#![allow(dead_code)] // each test binary uses a different subset

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aloft_bus::{Bus, BusConfig};
use aloft_notifier::Config;
use aloft_proto::aloft::v1::envelope::Body;
use aloft_proto::aloft::v1::notifier_service_client::NotifierServiceClient;
use aloft_proto::aloft::v1::{Envelope, ListDeliveriesRequest, NotificationDelivery};
use aloft_proto::flyteidl::admin::{
    self, Execution, ExecutionClosure, ExecutionMetadata, ExecutionSpec, LaunchPlan, LaunchPlanMetadata,
    LaunchPlanSpec, NodeExecution, NodeExecutionClosure, Notification, Project, SlackNotification,
};
use aloft_proto::flyteidl::core::{
    self, ExecutionError, Identifier, LiteralMap, NodeExecutionIdentifier, ResourceType, WorkflowExecutionIdentifier,
    workflow_execution::Phase,
};
use aloft_proto::flyteidl::event::{WorkflowExecutionEvent, workflow_execution_event::OutputResult};
use aloft_proto::flyteidl::service::admin_service_server::{AdminService, AdminServiceServer};
use anyhow::{Result, bail};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

/// Starts an axum router on port 0 for the rest of the test.
async fn serve(router: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind test server");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    addr
}

// ------------------------------------------------------------------------------------ Slack

/// One scripted answer.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Retry-After header.
    pub retry_after: Option<u64>,
    /// Body.
    pub body: String,
    /// How long to wait before answering (a hung Slack).
    pub delay: Duration,
}

impl Reply {
    /// A plain answer.
    pub fn new(status: u16, body: &str) -> Reply {
        Reply { status, retry_after: None, body: body.into(), delay: Duration::ZERO }
    }
    /// 429 with Retry-After.
    pub fn rate_limited(seconds: u64) -> Reply {
        Reply { status: 429, retry_after: Some(seconds), body: "rate_limited".into(), delay: Duration::ZERO }
    }
    /// `ok`, after `delay`.
    pub fn slow(delay: Duration) -> Reply {
        Reply { delay, ..Reply::new(200, "ok") }
    }
}

/// A request the Slack server received and what it answered.
#[derive(Debug, Clone)]
pub struct Received {
    /// `webhook:<name>` or `api:<channel>`.
    pub key: String,
    /// The JSON body.
    pub body: Value,
    /// The Authorization header (Web API).
    pub authorization: Option<String>,
    /// The status it answered.
    pub status: u16,
    /// Whether that answer meant "posted".
    pub ok: bool,
    /// When it arrived.
    pub at: Instant,
}

#[derive(Default)]
struct SlackState {
    scripts: HashMap<String, VecDeque<Reply>>,
    received: Vec<Received>,
    /// Keys of requests as they arrive, before any answer (a request cut off is here only).
    arrivals: Vec<String>,
}

/// A Slack-compatible HTTP server.
#[derive(Clone)]
pub struct Slack {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<Mutex<SlackState>>,
}

impl Slack {
    /// Starts the server; unscripted requests succeed (`ok`, or `{"ok":true,...}`).
    pub async fn start() -> Slack {
        let state = Arc::new(Mutex::new(SlackState::default()));
        let router = axum::Router::new()
            .route("/hooks/{name}", axum::routing::post(webhook))
            .route("/api/chat.postMessage", axum::routing::post(post_message))
            .with_state(state.clone());
        Slack { addr: serve(router).await, state }
    }

    /// Answers the next requests for `key` (`webhook:<name>` or `api:<channel>`) with `replies`.
    pub fn script(&self, key: &str, replies: Vec<Reply>) {
        self.state.lock().unwrap().scripts.entry(key.to_string()).or_default().extend(replies);
    }

    /// Keys of every request that arrived, answered or not.
    pub fn arrivals(&self) -> Vec<String> {
        self.state.lock().unwrap().arrivals.clone()
    }

    /// The URL of webhook `name`.
    pub fn webhook_url(&self, name: &str) -> String {
        format!("http://{}/hooks/{name}", self.addr)
    }

    /// The Web API base URL.
    pub fn api_url(&self) -> String {
        format!("http://{}/api", self.addr)
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    /// Requests for `key` that were answered with success (messages Slack would show).
    pub fn posted(&self, key: &str) -> Vec<Received> {
        self.received().into_iter().filter(|r| r.key == key && r.ok).collect()
    }

    /// Waits until `done(received)` holds, at most `limit`.
    pub async fn wait_until(&self, limit: Duration, done: impl Fn(&[Received]) -> bool) -> Result<Vec<Received>> {
        let start = Instant::now();
        loop {
            let r = self.received();
            if done(&r) {
                return Ok(r);
            }
            if start.elapsed() > limit {
                let summary: Vec<String> = r.iter().map(|r| format!("{} -> {}", r.key, r.status)).collect();
                bail!("slack did not receive what was expected within {limit:?}; received: {summary:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn answer(
    state: &Arc<Mutex<SlackState>>,
    key: String,
    headers: &HeaderMap,
    body: Bytes,
    default: Reply,
) -> Response {
    let reply = {
        let mut s = state.lock().unwrap();
        s.arrivals.push(key.clone());
        s.scripts.get_mut(&key).and_then(|q| q.pop_front()).unwrap_or(default)
    };
    if !reply.delay.is_zero() {
        // a client that gives up (or dies) meanwhile drops this future: nothing is recorded
        tokio::time::sleep(reply.delay).await;
    }
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let ok = reply.status == 200 && (reply.body == "ok" || reply.body.contains("\"ok\":true"));
    state.lock().unwrap().received.push(Received {
        key,
        body: json,
        authorization: headers.get("authorization").and_then(|v| v.to_str().ok()).map(String::from),
        status: reply.status,
        ok,
        at: Instant::now(),
    });
    let mut response = (StatusCode::from_u16(reply.status).unwrap(), reply.body).into_response();
    if let Some(s) = reply.retry_after {
        response.headers_mut().insert("retry-after", s.to_string().parse().unwrap());
    }
    response
}

async fn webhook(
    State(state): State<Arc<Mutex<SlackState>>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    answer(&state, format!("webhook:{name}"), &headers, body, Reply::new(200, "ok")).await
}

async fn post_message(State(state): State<Arc<Mutex<SlackState>>>, headers: HeaderMap, body: Bytes) -> Response {
    let channel = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["channel"].as_str().map(String::from))
        .unwrap_or_default();
    let ts =
        format!("{}.000100", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs());
    let default = Reply::new(200, &format!(r#"{{"ok":true,"channel":"{channel}","ts":"{ts}"}}"#));
    answer(&state, format!("api:{channel}"), &headers, body, default).await
}

// ------------------------------------------------------------------------------------ Lambda

/// (function, payload) of every invocation.
type Invocations = Arc<Mutex<Vec<(String, Value)>>>;

/// A server for the Lambda Invoke API. Functions: `enrich` (adds a field and a block, moves the
/// message to `#ml-oncall`), `quiet` (suppresses), `broken` (function error), `slow` (answers
/// after 5 s), `throttled` (429 TooManyRequestsException).
#[derive(Clone)]
pub struct Lambda {
    /// Where it listens.
    pub addr: SocketAddr,
    invocations: Invocations,
}

impl Lambda {
    /// Starts the server.
    pub async fn start() -> Lambda {
        let invocations = Arc::new(Mutex::new(Vec::new()));
        let router = axum::Router::new()
            .route("/2015-03-31/functions/{name}/invocations", axum::routing::post(invoke))
            .with_state(invocations.clone());
        Lambda { addr: serve(router).await, invocations }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// (function, payload) of every invocation.
    pub fn invocations(&self) -> Vec<(String, Value)> {
        self.invocations.lock().unwrap().clone()
    }
}

async fn invoke(
    State(invocations): State<Invocations>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let payload: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    invocations.lock().unwrap().push((name.clone(), payload));
    assert!(
        headers.get("authorization").is_some_and(|a| a.to_str().unwrap_or("").starts_with("AWS4-HMAC-SHA256")),
        "invocations are SigV4-signed"
    );
    let json = |status: StatusCode, body: &str| (status, [("content-type", "application/json")], body.to_string());
    match name.as_str() {
        "enrich" => json(
            StatusCode::OK,
            r##"{"fields": {"Model": "churn-v3"}, "blocks": [{"type": "divider"}], "destination": "#ml-oncall"}"##,
        )
        .into_response(),
        "quiet" => json(StatusCode::OK, r#"{"suppress": true}"#).into_response(),
        "broken" => {
            let mut r =
                json(StatusCode::OK, r#"{"errorMessage":"boom","errorType":"Error","stackTrace":[]}"#).into_response();
            r.headers_mut().insert("x-amz-function-error", "Unhandled".parse().unwrap());
            r
        }
        "slow" => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            json(StatusCode::OK, "{}").into_response()
        }
        "throttled" => {
            let mut r = json(
                StatusCode::TOO_MANY_REQUESTS,
                r#"{"Reason":"ConcurrentInvocationLimitExceeded","Type":"User","message":"Rate Exceeded."}"#,
            )
            .into_response();
            r.headers_mut().insert("x-amzn-errortype", "TooManyRequestsException".parse().unwrap());
            r
        }
        _ => json(StatusCode::NOT_FOUND, r#"{"Type":"User","Message":"Function not found"}"#).into_response(),
    }
}

// ------------------------------------------------------------------------------------ metadata

/// What the admin server knows about one execution.
#[derive(Clone, Default)]
pub struct Run {
    /// GetExecution.
    pub execution: Execution,
    /// GetLaunchPlan.
    pub launch_plan: Option<LaunchPlan>,
    /// ListNodeExecutions.
    pub nodes: Vec<NodeExecution>,
    /// GetExecutionData.
    pub inputs: Option<LiteralMap>,
}

#[derive(Default)]
struct AdminState {
    runs: HashMap<String, Run>,
    projects: HashMap<String, BTreeMap<String, String>>,
}

/// Metadata's admin API, answering from [`Run`]s.
#[derive(Clone)]
pub struct Admin {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<Mutex<AdminState>>,
}

#[derive(Clone)]
struct AdminService_(Arc<Mutex<AdminState>>);

impl Admin {
    /// Starts the gRPC server.
    pub async fn start() -> Admin {
        let state = Arc::new(Mutex::new(AdminState::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = AdminServiceServer::new(AdminService_(state.clone()));
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await;
        });
        Admin { addr, state }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Adds or replaces an execution.
    pub fn put(&self, run: Run) {
        let id = run.execution.id.clone().unwrap_or_default();
        self.state.lock().unwrap().runs.insert(format!("{}/{}/{}", id.project, id.domain, id.name), run);
    }

    /// Sets a project's labels.
    pub fn project(&self, id: &str, labels: &[(&str, &str)]) {
        let labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        self.state.lock().unwrap().projects.insert(id.to_string(), labels);
    }
}

type Ans<T> = std::result::Result<tonic::Response<T>, tonic::Status>;

impl AdminService_ {
    fn run(&self, id: Option<&WorkflowExecutionIdentifier>) -> std::result::Result<Run, tonic::Status> {
        let id = id.cloned().unwrap_or_default();
        let key = format!("{}/{}/{}", id.project, id.domain, id.name);
        self.0
            .lock()
            .unwrap()
            .runs
            .get(&key)
            .cloned()
            .ok_or_else(|| tonic::Status::not_found(format!("{key} does not exist")))
    }
}

#[tonic::async_trait]
impl AdminService for AdminService_ {
    async fn get_execution(&self, r: tonic::Request<admin::WorkflowExecutionGetRequest>) -> Ans<Execution> {
        Ok(tonic::Response::new(self.run(r.into_inner().id.as_ref())?.execution))
    }

    async fn get_launch_plan(&self, r: tonic::Request<admin::ObjectGetRequest>) -> Ans<LaunchPlan> {
        let id = r.into_inner().id.unwrap_or_default();
        let found = self.0.lock().unwrap().runs.values().find_map(|run| {
            run.launch_plan.clone().filter(|lp| {
                lp.id.as_ref().is_some_and(|l| l.name == id.name && l.version == id.version && l.project == id.project)
            })
        });
        found.map(tonic::Response::new).ok_or_else(|| tonic::Status::not_found("no such launch plan"))
    }

    async fn get_project(&self, r: tonic::Request<admin::ProjectGetRequest>) -> Ans<Project> {
        let id = r.into_inner().id;
        let labels = self.0.lock().unwrap().projects.get(&id).cloned();
        match labels {
            Some(values) => Ok(tonic::Response::new(Project {
                id: id.clone(),
                name: id,
                labels: Some(admin::Labels { values }),
                ..Default::default()
            })),
            None => Err(tonic::Status::not_found("no such project")),
        }
    }

    async fn list_node_executions(
        &self,
        r: tonic::Request<admin::NodeExecutionListRequest>,
    ) -> Ans<admin::NodeExecutionList> {
        let run = self.run(r.into_inner().workflow_execution_id.as_ref())?;
        Ok(tonic::Response::new(admin::NodeExecutionList { node_executions: run.nodes, token: String::new() }))
    }

    async fn get_execution_data(
        &self,
        r: tonic::Request<admin::WorkflowExecutionGetDataRequest>,
    ) -> Ans<admin::WorkflowExecutionGetDataResponse> {
        let run = self.run(r.into_inner().id.as_ref())?;
        Ok(tonic::Response::new(admin::WorkflowExecutionGetDataResponse {
            full_inputs: run.inputs,
            ..Default::default()
        }))
    }
}

// ------------------------------------------------------------------------------------ runs and events

/// The project every run of these tests is in.
pub const PROJECT: &str = "ml";

/// An execution id in [`PROJECT`].
pub fn exec_id(domain: &str, name: &str) -> WorkflowExecutionIdentifier {
    WorkflowExecutionIdentifier {
        project: PROJECT.into(),
        domain: domain.into(),
        name: name.into(),
        org: String::new(),
    }
}

/// A Slack rule for `phases` to `recipients`.
pub fn slack_rule(phases: &[Phase], recipients: &[&str]) -> Notification {
    Notification {
        phases: phases.iter().map(|p| *p as i32).collect(),
        r#type: Some(admin::notification::Type::Slack(SlackNotification {
            recipients_email: recipients.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })),
    }
}

/// A finished run of `train.wf` from launch plan `train.lp` with `rules`; FAILED runs have a
/// failed node `n0` with a ValueError.
pub fn finished_run(id: &WorkflowExecutionIdentifier, phase: Phase, rules: Vec<Notification>) -> Run {
    let lp_id = Identifier {
        resource_type: ResourceType::LaunchPlan as i32,
        project: id.project.clone(),
        domain: id.domain.clone(),
        name: "train.lp".into(),
        version: "v1".into(),
        org: String::new(),
    };
    let error = ExecutionError {
        code: "USER:ValueError".into(),
        message: "ValueError: refusing x=7".into(),
        kind: core::execution_error::ErrorKind::User as i32,
        ..Default::default()
    };
    let failed = phase == Phase::Failed;
    Run {
        execution: Execution {
            id: Some(id.clone()),
            spec: Some(ExecutionSpec {
                launch_plan: Some(lp_id.clone()),
                metadata: Some(ExecutionMetadata { principal: "alice".into(), ..Default::default() }),
                ..Default::default()
            }),
            closure: Some(ExecutionClosure {
                phase: phase as i32,
                workflow_id: Some(Identifier { name: "train.wf".into(), version: "v1".into(), ..lp_id.clone() }),
                started_at: Some(prost_types::Timestamp { seconds: 1_700_000_000, nanos: 0 }),
                duration: Some(prost_types::Duration { seconds: 42, nanos: 0 }),
                output_result: failed.then(|| {
                    admin::execution_closure::OutputResult::Error(ExecutionError {
                        message: "[n0] ValueError: refusing x=7".into(),
                        ..error.clone()
                    })
                }),
                ..Default::default()
            }),
        },
        launch_plan: Some(LaunchPlan {
            id: Some(lp_id),
            spec: Some(LaunchPlanSpec {
                entity_metadata: Some(LaunchPlanMetadata { notifications: rules, ..Default::default() }),
                ..Default::default()
            }),
            closure: None,
        }),
        nodes: if failed {
            vec![NodeExecution {
                id: Some(NodeExecutionIdentifier { node_id: "n0".into(), execution_id: Some(id.clone()) }),
                closure: Some(NodeExecutionClosure {
                    phase: core::node_execution::Phase::Failed as i32,
                    output_result: Some(admin::node_execution_closure::OutputResult::Error(error)),
                    ..Default::default()
                }),
                ..Default::default()
            }]
        } else {
            Vec::new()
        },
        inputs: None,
    }
}

/// Publishes the terminal workflow event of `id` (envelope id as the scheduler makes it, plus
/// `suffix` to publish a second copy past the bus's de-duplication).
pub async fn publish_terminal(bus: &Bus, id: &WorkflowExecutionIdentifier, phase: Phase, suffix: &str) -> Result<()> {
    let envelope = Envelope {
        id: format!("wf/{}/{}/{}/{}{suffix}", id.project, id.domain, id.name, phase.as_str_name()),
        source: "test".into(),
        body: Some(Body::WorkflowEvent(WorkflowExecutionEvent {
            execution_id: Some(id.clone()),
            producer_id: "test".into(),
            phase: phase as i32,
            occurred_at: Some(prost_types::Timestamp { seconds: 1_700_000_042, nanos: 0 }),
            output_result: (phase == Phase::Failed).then(|| {
                OutputResult::Error(ExecutionError {
                    message: "[n0] ValueError: refusing x=7".into(),
                    ..Default::default()
                })
            }),
        })),
        ..Default::default()
    };
    bus.publish(&envelope).await?;
    Ok(())
}

/// A bus config on a unique stream and subject prefix.
pub fn bus_config() -> BusConfig {
    let ns = aloft_testkit::unique_name("notif");
    BusConfig {
        url: aloft_testkit::deps().nats_url.clone(),
        stream_prefix: ns.to_uppercase(),
        subject_prefix: ns,
        ..Default::default()
    }
}

/// A notifier config for these tests: port 0, SQLite in `dir`, the given servers, fast pacing
/// and retries so tests take seconds.
pub fn config(dir: &std::path::Path, bus: &BusConfig, admin: &Admin, slack: &Slack) -> Config {
    let mut c = Config { bus: bus.clone(), ..Config::default() };
    c.health.listen = "127.0.0.1:0".into();
    c.database_url = format!("sqlite://{}", dir.join("notifier.db").display());
    c.console_url = "https://aloft.example.com".into();
    c.metadata.endpoint = admin.endpoint();
    c.metadata.settle_wait = Duration::from_secs(2);
    c.slack.api_url = slack.api_url();
    c.slack.timeout = Duration::from_secs(3);
    c.delivery.lease = Duration::from_secs(6);
    c.delivery.backoff_base = Duration::from_millis(200);
    c.delivery.backoff_max = Duration::from_secs(1);
    c.delivery.poll_interval = Duration::from_millis(100);
    c.delivery.min_interval = Duration::from_millis(1000);
    c
}

/// `NotifierService.ListDeliveries` on a started notifier.
pub async fn deliveries(addr: SocketAddr, id: &WorkflowExecutionIdentifier) -> Result<Vec<NotificationDelivery>> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))?.connect().await?;
    let mut client = NotifierServiceClient::new(channel);
    Ok(client.list_deliveries(ListDeliveriesRequest { execution_id: Some(id.clone()) }).await?.into_inner().deliveries)
}

/// Waits until every delivery of `id` is settled (not pending) and there are `count` of them.
pub async fn settled(
    addr: SocketAddr,
    id: &WorkflowExecutionIdentifier,
    count: usize,
    limit: Duration,
) -> Result<Vec<NotificationDelivery>> {
    let start = Instant::now();
    loop {
        let d = deliveries(addr, id).await?;
        if d.len() == count && d.iter().all(|d| d.state != "pending") {
            return Ok(d);
        }
        if start.elapsed() > limit {
            bail!("deliveries of {} not settled within {limit:?}: {d:#?}", id.name);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
