//! The imperative shell: read what an event or request needs (run facts, LiteralMaps,
//! declarations), ask the pure core for mutations, store them in one transaction; and answer
//! graph queries by walking the stored edges level by level.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use aloft_blob::BlobStore;
use aloft_proto::aloft::v1::Envelope;
use aloft_proto::aloft::v1::envelope::Body;
use aloft_proto::flyteidl::core::{
    Identifier, LiteralMap, NodeExecutionIdentifier, ResourceType, WorkflowExecutionIdentifier,
};
use prost::Message;
use sha2::{Digest, Sha256};

use crate::adapters::admin::Admin;
use crate::adapters::store::{DeclarationRow, Direction, Store};
use crate::domain::capture::{self, RunInfo};
use crate::domain::declarations::{self, Declarations};
use crate::domain::export::Settings;
use crate::domain::graph::{Edge, EdgeKind, Mutation, Node, NodeKind, keys};
use crate::domain::links;
use crate::error::Error;

/// Default and largest walk depth.
pub const DEFAULT_DEPTH: u32 = 5;
/// Largest walk depth accepted.
pub const MAX_DEPTH: u32 = 100;
/// Default node limit of a walk.
pub const DEFAULT_MAX_NODES: usize = 10_000;

/// A subgraph answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Graph {
    /// The start node first, then breadth-first.
    pub nodes: Vec<Node>,
    /// Edges between returned nodes.
    pub edges: Vec<Edge>,
    /// A limit cut the walk short.
    pub truncated: bool,
}

/// The result of applying declarations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Current version (or, for a dry run, the one it would get).
    pub version: i64,
    /// Whether anything was stored.
    pub changed: bool,
    /// sha256 of the text.
    pub digest: String,
    /// Nodes contributed.
    pub nodes: i64,
    /// Edges contributed.
    pub edges: i64,
}

/// Parsed declarations by (project, version): stored versions never change.
type ParsedCache = HashMap<(String, i64), Arc<Declarations>>;

/// Shared state of the consumer, the exporter and the API.
#[derive(Clone)]
pub struct App {
    /// The graph's database.
    pub store: Store,
    blob: Option<BlobStore>,
    admin: Option<Admin>,
    settings: Settings,
    parsed: Arc<Mutex<ParsedCache>>,
    /// The last literal maps read, by URI. A task's inputs are read for its RUNNING event and
    /// again for its terminal one; what is at a URI never changes (written once per node or
    /// attempt), so the second read is served from here.
    recent: Arc<Mutex<std::collections::VecDeque<(String, LiteralMap)>>>,
}

/// How many literal maps [`App::literal_map`] remembers.
const RECENT_MAPS: usize = 64;

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").field("settings", &self.settings).finish_non_exhaustive()
    }
}

/// A node for a key with no row: edges may name nodes nobody wrote (a declared URI no run
/// touched yet), and the answer still shows them.
fn placeholder(key: &str) -> Node {
    let kind = NodeKind::of_key(key).unwrap_or(NodeKind::Dataset);
    let label = key.split_once(':').map(|(_, r)| r).unwrap_or(key);
    let label = match kind {
        NodeKind::Dataset => label.to_string(),
        _ => label.rsplit('/').next().unwrap_or(label).to_string(),
    };
    Node { key: key.into(), kind, project: String::new(), label, lookup: String::new(), attrs: Default::default() }
}

fn run_key_of(id: &WorkflowExecutionIdentifier) -> String {
    keys::run(&id.project, &id.domain, &id.name)
}

/// The inverse of [`keys::run`].
fn parse_run_key(key: &str) -> Option<WorkflowExecutionIdentifier> {
    let rest = key.strip_prefix("run:")?;
    let mut parts = rest.splitn(3, '/');
    Some(WorkflowExecutionIdentifier {
        project: parts.next()?.into(),
        domain: parts.next()?.into(),
        name: parts.next()?.into(),
        org: String::new(),
    })
}

impl App {
    /// The shell around a store; `blob` reads LiteralMaps, `admin` answers run facts.
    pub fn new(store: Store, blob: Option<BlobStore>, admin: Option<Admin>, settings: Settings) -> App {
        App { store, blob, admin, settings, parsed: Arc::default(), recent: Arc::default() }
    }

    /// Applies one bus envelope. Malformed events are `InvalidArgument` (dropped by the caller);
    /// anything else is worth a retry.
    pub async fn handle(&self, envelope: &Envelope) -> Result<(), Error> {
        let mutations = match &envelope.body {
            Some(Body::WorkflowEvent(ev)) => {
                let id = ev
                    .execution_id
                    .as_ref()
                    .ok_or_else(|| Error::InvalidArgument("workflow event without execution id".into()))?;
                let (info, mut m) = self.run_info(id).await?;
                let outputs = match capture::workflow_event_output(ev) {
                    Some(uri) => self.literal_map(&uri).await?,
                    None => None,
                };
                let declarations = self.current_declarations().await?;
                let decl_refs: Vec<Declarations> = declarations.iter().map(|d| (**d).clone()).collect();
                m.extend(capture::workflow_event(
                    &envelope.id,
                    ev,
                    &info,
                    outputs.as_ref(),
                    &self.settings,
                    &decl_refs,
                ));
                m
            }
            Some(Body::TaskEvent(ev)) => {
                let exec = ev
                    .parent_node_execution_id
                    .as_ref()
                    .and_then(|n| n.execution_id.as_ref())
                    .ok_or_else(|| Error::InvalidArgument("task event without node execution id".into()))?;
                let (input_uri, output_uri) = capture::task_event_needs(ev);
                if input_uri.is_none() && output_uri.is_none() && !is_capturable_task(ev) {
                    return Ok(());
                }
                let (info, mut m) = self.run_info(exec).await?;
                let inputs = match input_uri {
                    Some(u) => self.literal_map(&u).await?,
                    None => None,
                };
                let outputs = match output_uri {
                    Some(u) => self.literal_map(&u).await?,
                    None => None,
                };
                m.extend(capture::task_event(
                    &envelope.id,
                    ev,
                    &info,
                    inputs.as_ref(),
                    outputs.as_ref(),
                    &self.settings,
                ));
                m
            }
            Some(Body::NodeEvent(ev)) => {
                let (input_uri, output_uri) = capture::node_event_needs(ev);
                let inputs = match input_uri {
                    Some(u) => self.literal_map(&u).await?,
                    None => None,
                };
                let outputs = match output_uri {
                    Some(u) => self.literal_map(&u).await?,
                    None => None,
                };
                capture::node_event(&envelope.id, ev, inputs.as_ref(), outputs.as_ref())
            }
            // commands never reach the events stream; nothing to record
            _ => Vec::new(),
        };
        if mutations.is_empty() {
            return Ok(());
        }
        self.store.apply(&mutations).await
    }

    /// The run's facts: from its node once known, else from the admin API (stored with the
    /// returned mutations so the API is asked once per run).
    async fn run_info(&self, id: &WorkflowExecutionIdentifier) -> Result<(RunInfo, Vec<Mutation>), Error> {
        let key = run_key_of(id);
        if self.store.run_info_known(&key).await? {
            let node = self.store.nodes(std::slice::from_ref(&key)).await?.into_iter().next();
            return Ok((node.map(|n| info_from_node(&n, id)).unwrap_or_default(), Vec::new()));
        }
        let Some(admin) = &self.admin else { return Ok((RunInfo::default(), Vec::new())) };
        let info = match admin.run_info(id).await? {
            Some(i) => i,
            None => {
                tracing::warn!(run = %key, "metadata does not know this execution; its runs get no workflow name");
                RunInfo::default()
            }
        };
        let workflow = info.workflow.as_ref().map(|w| w.name.clone()).unwrap_or_default();
        let lookup = if workflow.is_empty() { String::new() } else { format!("{}/{workflow}", id.project) };
        let mut attrs: std::collections::BTreeMap<String, String> =
            [("workflow_known".to_string(), "1".to_string())].into();
        attrs.insert("domain".into(), id.domain.clone());
        for (k, v) in [
            ("workflow", workflow),
            ("workflow_version", info.workflow.as_ref().map(|w| w.version.clone()).unwrap_or_default()),
            ("launch_plan", info.launch_plan.as_ref().map(|w| w.name.clone()).unwrap_or_default()),
            ("launch_plan_version", info.launch_plan.as_ref().map(|w| w.version.clone()).unwrap_or_default()),
            ("parent", info.parent.as_ref().and_then(|p| p.execution_id.as_ref()).map(run_key_of).unwrap_or_default()),
        ] {
            if !v.is_empty() {
                attrs.insert(k.into(), v);
            }
        }
        let node =
            Node { key, kind: NodeKind::Run, project: id.project.clone(), label: id.name.clone(), lookup, attrs };
        Ok((info, vec![Mutation::Node(node, crate::domain::graph::Origin::Event)]))
    }

    /// Reads and decodes a LiteralMap; a missing blob is `None` (the event is still recorded,
    /// without its data), a store failure an error worth retrying.
    async fn literal_map(&self, uri: &str) -> Result<Option<LiteralMap>, Error> {
        let Some(blob) = &self.blob else { return Ok(None) };
        if let Some((_, map)) = self.recent.lock().expect("literal map cache").iter().find(|(u, _)| u == uri) {
            return Ok(Some(map.clone()));
        }
        match blob.get(uri).await {
            Ok(bytes) => {
                let map = LiteralMap::decode(bytes.as_ref())
                    .map_err(|e| Error::InvalidArgument(format!("{uri} is not a LiteralMap: {e}")))?;
                let mut recent = self.recent.lock().expect("literal map cache");
                if recent.len() >= RECENT_MAPS {
                    recent.pop_front();
                }
                recent.push_back((uri.to_string(), map.clone()));
                Ok(Some(map))
            }
            Err(e) if e.is_not_found() => {
                tracing::warn!(%uri, "literal map not found; recorded without its data");
                Ok(None)
            }
            Err(e) => Err(Error::Storage(format!("reading {uri}: {e}"))),
        }
    }

    /// The newest declarations of every project, parsed once per version.
    pub async fn current_declarations(&self) -> Result<Vec<Arc<Declarations>>, Error> {
        let rows = self.store.all_current_declarations().await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let cache_key = (r.project.clone(), r.version);
            if let Some(d) = self.parsed.lock().expect("declarations cache").get(&cache_key) {
                out.push(d.clone());
                continue;
            }
            // stored text was valid when applied; if a newer parser refuses it, skip it loudly
            // rather than stop capturing every run
            match declarations::parse(&r.project, &r.file_name, &r.yaml) {
                Ok(mut d) => {
                    d.version = r.version;
                    let d = Arc::new(d);
                    self.parsed.lock().expect("declarations cache").insert(cache_key, d.clone());
                    out.push(d);
                }
                Err(e) => {
                    tracing::error!(project = %r.project, version = r.version, error = %e, "stored declarations no longer parse")
                }
            }
        }
        Ok(out)
    }

    /// Validates and stores a project's declarations as its next version, linking them to the
    /// runs already captured. Invalid text changes nothing.
    pub async fn apply_declarations(
        &self,
        project: &str,
        file: &str,
        yaml: &str,
        dry_run: bool,
    ) -> Result<Applied, Error> {
        if !declarations::is_valid_name(project) {
            return Err(Error::InvalidArgument(format!("project: {project:?} is not a valid project name")));
        }
        let file = if file.is_empty() { "lineage.yaml" } else { file };
        let mut d = declarations::parse(project, file, yaml).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let digest = hex::encode(Sha256::digest(yaml.as_bytes()));
        let latest = self.store.declarations(project, None).await?;
        if let Some(l) = &latest
            && l.digest == digest
        {
            let (nodes, edges) = counts(&d.mutations());
            return Ok(Applied { version: l.version, changed: false, digest, nodes, edges });
        }
        d.version = latest.as_ref().map(|l| l.version).unwrap_or(0) + 1;
        let mut mutations = d.mutations();
        mutations.extend(links::declaration_exports(&d, &self.settings));
        for run in self.store.runs_of_workflows(&links::workflow_lookups(&d)).await? {
            mutations.extend(links::link_run(&d, &run, &self.settings));
        }
        let (nodes, edges) = counts(&mutations);
        if dry_run {
            return Ok(Applied { version: d.version, changed: false, digest, nodes, edges });
        }
        let row = DeclarationRow {
            project: project.into(),
            version: d.version,
            digest: digest.clone(),
            file_name: file.into(),
            yaml: yaml.into(),
            applied_at: now_micros(),
        };
        self.store.replace_declarations(&row, &mutations).await?;
        tracing::info!(%project, version = d.version, nodes, edges, "declarations applied");
        Ok(Applied { version: d.version, changed: true, digest, nodes, edges })
    }

    /// Walks from `start` breadth-first, at most `depth` edges and `max_nodes` nodes. Edges of
    /// the kinds in `skip_from_start` are not followed out of the start node.
    pub async fn walk(
        &self,
        start: &str,
        direction: Direction,
        depth: u32,
        max_nodes: usize,
        skip_from_start: &[EdgeKind],
    ) -> Result<Graph, Error> {
        let depth = if depth == 0 { DEFAULT_DEPTH } else { depth };
        if depth > MAX_DEPTH {
            return Err(Error::InvalidArgument(format!("depth: {depth} is more than {MAX_DEPTH}")));
        }
        let max_nodes = if max_nodes == 0 { DEFAULT_MAX_NODES } else { max_nodes };
        if !self.exists(start).await? {
            return Err(Error::NotFound(format!("node {start:?} is not in the lineage graph")));
        }
        let mut order = vec![start.to_string()];
        let mut seen: HashSet<String> = [start.to_string()].into();
        let mut edges: BTreeSet<Edge> = BTreeSet::new();
        let mut frontier = vec![start.to_string()];
        let mut truncated = false;
        let mut first = true;
        for _ in 0..depth {
            if frontier.is_empty() {
                break;
            }
            let mut next = Vec::new();
            for e in self.store.edges(&frontier, direction).await? {
                if first && skip_from_start.contains(&e.kind) {
                    continue;
                }
                let other = match direction {
                    Direction::Upstream => e.from.clone(),
                    Direction::Downstream => e.to.clone(),
                };
                if !seen.contains(&other) {
                    if order.len() >= max_nodes {
                        truncated = true;
                        continue;
                    }
                    seen.insert(other.clone());
                    order.push(other.clone());
                    next.push(other);
                }
                edges.insert(e);
            }
            first = false;
            frontier = next;
        }
        if !frontier.is_empty() && !truncated {
            // the depth ran out: say so only if there was more to see
            truncated = self.store.edges(&frontier, direction).await?.iter().any(|e| {
                let other = if direction == Direction::Upstream { &e.from } else { &e.to };
                !seen.contains(other)
            });
        }
        let nodes = self.nodes_in_order(&order).await?;
        Ok(Graph { nodes, edges: edges.into_iter().collect(), truncated })
    }

    async fn exists(&self, key: &str) -> Result<bool, Error> {
        let k = [key.to_string()];
        Ok(!self.store.nodes(&k).await?.is_empty()
            || !self.store.edges(&k, Direction::Upstream).await?.is_empty()
            || !self.store.edges(&k, Direction::Downstream).await?.is_empty())
    }

    async fn nodes_in_order(&self, keys: &[String]) -> Result<Vec<Node>, Error> {
        let mut found: HashMap<String, Node> =
            self.store.nodes(keys).await?.into_iter().map(|n| (n.key.clone(), n)).collect();
        Ok(keys.iter().map(|k| found.remove(k).unwrap_or_else(|| placeholder(k))).collect())
    }

    /// One run: itself, its attempts with what each consumed and produced, its versions, its
    /// parent and children, cache sources, and what it trained or deployed.
    pub async fn run_lineage(&self, id: &WorkflowExecutionIdentifier) -> Result<Graph, Error> {
        let run = run_key_of(id);
        if !self.exists(&run).await? {
            return Err(Error::NotFound(format!(
                "run {}/{}/{} is not in the lineage graph",
                id.project, id.domain, id.name
            )));
        }
        let mut edges: BTreeSet<Edge> = BTreeSet::new();
        let around_run: Vec<Edge> = self
            .store
            .edges(std::slice::from_ref(&run), Direction::Upstream)
            .await?
            .into_iter()
            .chain(self.store.edges(std::slice::from_ref(&run), Direction::Downstream).await?)
            .collect();
        let attempts: Vec<String> =
            around_run.iter().filter(|e| e.kind == EdgeKind::PartOf).map(|e| e.from.clone()).collect();
        edges.extend(around_run);
        edges.extend(self.store.edges(&attempts, Direction::Upstream).await?);
        edges.extend(self.store.edges(&attempts, Direction::Downstream).await?);
        let mut order = vec![run.clone()];
        let mut seen: HashSet<String> = [run].into();
        for e in &edges {
            for k in [&e.from, &e.to] {
                if seen.insert(k.clone()) {
                    order.push(k.clone());
                }
            }
        }
        Ok(Graph { nodes: self.nodes_in_order(&order).await?, edges: edges.into_iter().collect(), truncated: false })
    }

    /// The runs (and attempts) that consumed the dataset at `uri`, newest first.
    pub async fn runs_using_dataset(&self, uri: &str) -> Result<(Node, Vec<Node>, Vec<Node>), Error> {
        let key = keys::dataset(uri);
        if !self.exists(&key).await? {
            return Err(Error::NotFound(format!("dataset {uri:?} is not in the lineage graph")));
        }
        let dataset = self.nodes_in_order(std::slice::from_ref(&key)).await?.remove(0);
        let attempts: Vec<String> = self
            .store
            .edges(std::slice::from_ref(&key), Direction::Downstream)
            .await?
            .into_iter()
            .filter(|e| e.kind == EdgeKind::Consumed)
            .map(|e| e.to)
            .collect();
        let mut runs: Vec<String> = self
            .store
            .edges(&attempts, Direction::Downstream)
            .await?
            .into_iter()
            .filter(|e| e.kind == EdgeKind::PartOf)
            .map(|e| e.to)
            .collect();
        runs.sort();
        runs.dedup();
        let mut runs = self.nodes_in_order(&runs).await?;
        runs.sort_by(|a, b| b.attrs.get("started_at").cmp(&a.attrs.get("started_at")).then(a.key.cmp(&b.key)));
        Ok((dataset, runs, self.nodes_in_order(&attempts).await?))
    }

    /// The model version (newest when `version` is empty), the runs that trained it, and the
    /// datasets and sources upstream of it (not its own artifact).
    pub async fn model_training_data(
        &self,
        project: &str,
        model: &str,
        version: &str,
    ) -> Result<(Node, Vec<Node>, Vec<Node>, Vec<Node>), Error> {
        let key = if version.is_empty() {
            self.store
                .latest_model_version(&keys::model(project, model))
                .await?
                .ok_or_else(|| Error::NotFound(format!("model {project}/{model} has no trained version")))?
        } else {
            keys::model_version(project, model, version)
        };
        let g = self.walk(&key, Direction::Upstream, MAX_DEPTH, DEFAULT_MAX_NODES, &[EdgeKind::Artifact]).await?;
        let runs: HashSet<&String> =
            g.edges.iter().filter(|e| e.kind == EdgeKind::Trained && e.to == key).map(|e| &e.from).collect();
        let mut it = g.nodes.iter();
        let mv = it.next().cloned().ok_or_else(|| Error::NotFound(format!("model version {key:?} does not exist")))?;
        // the artifact is upstream too when the training run evaluates it; it is not training data
        let artifacts: HashSet<String> =
            mv.attrs.get("artifact").map(|a| a.lines().map(keys::dataset).collect()).unwrap_or_default();
        let (mut r, mut d, mut s) = (Vec::new(), Vec::new(), Vec::new());
        for n in it {
            match n.kind {
                NodeKind::Run if runs.contains(&n.key) => r.push(n.clone()),
                NodeKind::Dataset if !artifacts.contains(&n.key) => d.push(n.clone()),
                NodeKind::Source => s.push(n.clone()),
                _ => {}
            }
        }
        Ok((mv, r, d, s))
    }
}

fn is_capturable_task(ev: &aloft_proto::flyteidl::event::TaskExecutionEvent) -> bool {
    use aloft_proto::flyteidl::core::task_execution::Phase;
    matches!(
        Phase::try_from(ev.phase).unwrap_or(Phase::Undefined),
        Phase::Running | Phase::Succeeded | Phase::Failed | Phase::Aborted | Phase::RetryableFailed
    )
}

fn info_from_node(n: &Node, id: &WorkflowExecutionIdentifier) -> RunInfo {
    let a = |k: &str| n.attrs.get(k).cloned().unwrap_or_default();
    let ident = |rt: ResourceType, name: String, version: String| {
        (!name.is_empty()).then(|| Identifier {
            resource_type: rt as i32,
            project: id.project.clone(),
            domain: id.domain.clone(),
            name,
            version,
            org: String::new(),
        })
    };
    RunInfo {
        workflow: ident(ResourceType::Workflow, a("workflow"), a("workflow_version")),
        launch_plan: ident(ResourceType::LaunchPlan, a("launch_plan"), a("launch_plan_version")),
        parent: parse_run_key(&a("parent"))
            .map(|e| NodeExecutionIdentifier { node_id: String::new(), execution_id: Some(e) }),
    }
}

fn counts(m: &[Mutation]) -> (i64, i64) {
    let nodes = m.iter().filter(|m| matches!(m, Mutation::Node(..))).count() as i64;
    let edges = m.iter().filter(|m| matches!(m, Mutation::Edge(..))).count() as i64;
    (nodes, edges)
}

fn now_micros() -> i64 {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    d.as_micros() as i64
}
