//! The graph model: node and edge kinds, node keys, and the mutations the pure core returns for
//! the shell to store.
//!
//! Nodes are identified by a stable text key whose first token is the kind (`dataset:<uri>`,
//! `run:<p>/<d>/<name>`, ...). Keys, not surrogate ids, are what edges reference, so an edge can
//! be written before the node at its other end exists (a declaration naming a dataset no run has
//! touched yet) and every writer computes the same key without reading the database first.

use std::collections::BTreeMap;

use aloft_proto::aloft::v1::{LineageEdgeKind, LineageNodeKind};

/// What a node stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NodeKind {
    /// A file, directory or structured dataset, by URI.
    Dataset,
    /// One workflow execution.
    Run,
    /// One attempt of one task node of a run (a cache hit counts as an attempt that ran nothing).
    TaskAttempt,
    /// A registered task version.
    TaskVersion,
    /// A registered workflow version.
    WorkflowVersion,
    /// A registered launch plan version.
    LaunchPlanVersion,
    /// Declared: an external table or file (dbt model, warehouse table).
    Source,
    /// Declared: a pipeline (a workflow with its infrastructure and owners).
    Pipeline,
    /// Declared: a model.
    Model,
    /// One trained version of a declared model (one successful run of its training pipeline).
    ModelVersion,
    /// Declared: where a model is served.
    Endpoint,
}

impl NodeKind {
    /// Every kind.
    pub const ALL: [NodeKind; 11] = [
        NodeKind::Dataset,
        NodeKind::Run,
        NodeKind::TaskAttempt,
        NodeKind::TaskVersion,
        NodeKind::WorkflowVersion,
        NodeKind::LaunchPlanVersion,
        NodeKind::Source,
        NodeKind::Pipeline,
        NodeKind::Model,
        NodeKind::ModelVersion,
        NodeKind::Endpoint,
    ];

    /// The name stored in the database and used in attributes.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeKind::Dataset => "dataset",
            NodeKind::Run => "run",
            NodeKind::TaskAttempt => "attempt",
            NodeKind::TaskVersion => "task",
            NodeKind::WorkflowVersion => "workflow",
            NodeKind::LaunchPlanVersion => "launch_plan",
            NodeKind::Source => "source",
            NodeKind::Pipeline => "pipeline",
            NodeKind::Model => "model",
            NodeKind::ModelVersion => "model_version",
            NodeKind::Endpoint => "endpoint",
        }
    }

    /// The inverse of [`NodeKind::as_str`].
    pub fn parse(s: &str) -> Option<NodeKind> {
        NodeKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The API enum.
    pub fn to_proto(self) -> LineageNodeKind {
        match self {
            NodeKind::Dataset => LineageNodeKind::Dataset,
            NodeKind::Run => LineageNodeKind::Run,
            NodeKind::TaskAttempt => LineageNodeKind::TaskAttempt,
            NodeKind::TaskVersion => LineageNodeKind::TaskVersion,
            NodeKind::WorkflowVersion => LineageNodeKind::WorkflowVersion,
            NodeKind::LaunchPlanVersion => LineageNodeKind::LaunchPlanVersion,
            NodeKind::Source => LineageNodeKind::Source,
            NodeKind::Pipeline => LineageNodeKind::Pipeline,
            NodeKind::Model => LineageNodeKind::Model,
            NodeKind::ModelVersion => LineageNodeKind::ModelVersion,
            NodeKind::Endpoint => LineageNodeKind::Endpoint,
        }
    }

    /// The kind a key names, for keys whose node row does not exist (yet). Model and model
    /// version keys share the `model:` prefix; a version has `@`.
    pub fn of_key(key: &str) -> Option<NodeKind> {
        let (prefix, rest) = key.split_once(':')?;
        Some(match prefix {
            "dataset" => NodeKind::Dataset,
            "run" => NodeKind::Run,
            "attempt" => NodeKind::TaskAttempt,
            "task" => NodeKind::TaskVersion,
            "workflow" => NodeKind::WorkflowVersion,
            "launch_plan" => NodeKind::LaunchPlanVersion,
            "source" => NodeKind::Source,
            "pipeline" => NodeKind::Pipeline,
            "model" if rest.contains('@') => NodeKind::ModelVersion,
            "model" => NodeKind::Model,
            "endpoint" => NodeKind::Endpoint,
            _ => return None,
        })
    }
}

/// What an edge means; it always points from what was used to what was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EdgeKind {
    /// dataset -> attempt.
    Consumed,
    /// attempt -> dataset.
    Produced,
    /// attempt -> run.
    PartOf,
    /// task version -> attempt.
    Executed,
    /// workflow or launch plan version -> run.
    InstanceOf,
    /// parent run -> child run.
    Child,
    /// attempt that produced a cached value -> attempt that reused it.
    CachedFrom,
    /// source -> dataset.
    Materializes,
    /// source -> pipeline.
    Feeds,
    /// pipeline -> run.
    Ran,
    /// run -> model version.
    Trained,
    /// dataset -> model version.
    Artifact,
    /// model version -> model.
    VersionOf,
    /// model -> endpoint.
    Serves,
    /// run -> endpoint.
    Deployed,
}

impl EdgeKind {
    /// Every kind.
    pub const ALL: [EdgeKind; 15] = [
        EdgeKind::Consumed,
        EdgeKind::Produced,
        EdgeKind::PartOf,
        EdgeKind::Executed,
        EdgeKind::InstanceOf,
        EdgeKind::Child,
        EdgeKind::CachedFrom,
        EdgeKind::Materializes,
        EdgeKind::Feeds,
        EdgeKind::Ran,
        EdgeKind::Trained,
        EdgeKind::Artifact,
        EdgeKind::VersionOf,
        EdgeKind::Serves,
        EdgeKind::Deployed,
    ];

    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            EdgeKind::Consumed => "consumed",
            EdgeKind::Produced => "produced",
            EdgeKind::PartOf => "part_of",
            EdgeKind::Executed => "executed",
            EdgeKind::InstanceOf => "instance_of",
            EdgeKind::Child => "child",
            EdgeKind::CachedFrom => "cached_from",
            EdgeKind::Materializes => "materializes",
            EdgeKind::Feeds => "feeds",
            EdgeKind::Ran => "ran",
            EdgeKind::Trained => "trained",
            EdgeKind::Artifact => "artifact",
            EdgeKind::VersionOf => "version_of",
            EdgeKind::Serves => "serves",
            EdgeKind::Deployed => "deployed",
        }
    }

    /// The inverse of [`EdgeKind::as_str`].
    pub fn parse(s: &str) -> Option<EdgeKind> {
        EdgeKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The API enum.
    pub fn to_proto(self) -> LineageEdgeKind {
        match self {
            EdgeKind::Consumed => LineageEdgeKind::Consumed,
            EdgeKind::Produced => LineageEdgeKind::Produced,
            EdgeKind::PartOf => LineageEdgeKind::PartOf,
            EdgeKind::Executed => LineageEdgeKind::Executed,
            EdgeKind::InstanceOf => LineageEdgeKind::InstanceOf,
            EdgeKind::Child => LineageEdgeKind::Child,
            EdgeKind::CachedFrom => LineageEdgeKind::CachedFrom,
            EdgeKind::Materializes => LineageEdgeKind::Materializes,
            EdgeKind::Feeds => LineageEdgeKind::Feeds,
            EdgeKind::Ran => LineageEdgeKind::Ran,
            EdgeKind::Trained => LineageEdgeKind::Trained,
            EdgeKind::Artifact => LineageEdgeKind::Artifact,
            EdgeKind::VersionOf => LineageEdgeKind::VersionOf,
            EdgeKind::Serves => LineageEdgeKind::Serves,
            EdgeKind::Deployed => LineageEdgeKind::Deployed,
        }
    }
}

/// One node as written and read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Stable key (see the module header).
    pub key: String,
    /// Kind.
    pub kind: NodeKind,
    /// Project it belongs to ("" for datasets, which belong to no project).
    pub project: String,
    /// Short display name.
    pub label: String,
    /// Lookup column: for runs `<project>/<workflow name>`, so declarations find the runs of a
    /// workflow without scanning; empty otherwise.
    pub lookup: String,
    /// Attributes, written with overwrite.
    pub attrs: BTreeMap<String, String>,
}

/// One edge.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Edge {
    /// Upstream node key.
    pub from: String,
    /// Downstream node key.
    pub to: String,
    /// Meaning.
    pub kind: EdgeKind,
}

impl Edge {
    /// `from -kind-> to`.
    pub fn new(from: impl Into<String>, kind: EdgeKind, to: impl Into<String>) -> Edge {
        Edge { from: from.into(), to: to.into(), kind }
    }
}

/// Who wrote a row: events (never removed) or one project's declarations (replaced as a whole
/// when the project applies a new version).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Origin {
    /// Captured from execution events.
    Event,
    /// Derived from the declarations of this project.
    Declared(String),
}

impl Origin {
    /// The stored form: `event` or `decl:<project>`.
    pub fn as_string(&self) -> String {
        match self {
            Origin::Event => "event".into(),
            Origin::Declared(p) => format!("decl:{p}"),
        }
    }
}

/// Where an export goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// DataHub GMS, one MetadataChangeProposal per request.
    DataHub,
    /// An OpenLineage HTTP endpoint (Marquez), one RunEvent per request.
    OpenLineage,
}

impl Target {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Target::DataHub => "datahub",
            Target::OpenLineage => "openlineage",
        }
    }

    /// The inverse of [`Target::as_str`].
    pub fn parse(s: &str) -> Option<Target> {
        match s {
            "datahub" => Some(Target::DataHub),
            "openlineage" => Some(Target::OpenLineage),
            _ => None,
        }
    }
}

/// One payload for one catalog. `key` is unique per (target, event), so storing the same
/// mutation twice queues it once.
#[derive(Debug, Clone, PartialEq)]
pub struct Export {
    /// Catalog.
    pub target: Target,
    /// De-duplication key.
    pub key: String,
    /// The JSON body to send.
    pub body: serde_json::Value,
}

/// A change to the stored graph. Applying a list twice leaves the graph as applying it once.
#[derive(Debug, Clone, PartialEq)]
pub enum Mutation {
    /// Create the node unless its key exists; its attributes are written either way.
    Node(Node, Origin),
    /// Set one attribute; with `only_if_absent`, an existing value wins (a late RUNNING event
    /// must not overwrite SUCCEEDED).
    Attr {
        /// Node key.
        key: String,
        /// Attribute name.
        name: String,
        /// Value.
        value: String,
        /// Keep an existing value.
        only_if_absent: bool,
    },
    /// Add the edge unless it exists.
    Edge(Edge, Origin),
    /// Queue a payload for a catalog unless its key is queued already.
    Export(Export),
}

/// Node keys.
pub mod keys {
    /// `dataset:<uri>`.
    pub fn dataset(uri: &str) -> String {
        format!("dataset:{uri}")
    }
    /// `run:<project>/<domain>/<name>`.
    pub fn run(project: &str, domain: &str, name: &str) -> String {
        format!("run:{project}/{domain}/{name}")
    }
    /// `attempt:<project>/<domain>/<execution>/<node>/<retry>`.
    pub fn attempt(project: &str, domain: &str, execution: &str, node: &str, retry: u32) -> String {
        format!("attempt:{project}/{domain}/{execution}/{node}/{retry}")
    }
    /// `task:<project>/<domain>/<name>@<version>` (and `workflow:`, `launch_plan:`).
    pub fn entity(prefix: &str, project: &str, domain: &str, name: &str, version: &str) -> String {
        format!("{prefix}:{project}/{domain}/{name}@{version}")
    }
    /// `source:<project>/<name>`.
    pub fn source(project: &str, name: &str) -> String {
        format!("source:{project}/{name}")
    }
    /// `pipeline:<project>/<name>`.
    pub fn pipeline(project: &str, name: &str) -> String {
        format!("pipeline:{project}/{name}")
    }
    /// `model:<project>/<name>`.
    pub fn model(project: &str, name: &str) -> String {
        format!("model:{project}/{name}")
    }
    /// `model:<project>/<name>@<version>`.
    pub fn model_version(project: &str, name: &str, version: &str) -> String {
        format!("model:{project}/{name}@{version}")
    }
    /// `endpoint:<project>/<name>`.
    pub fn endpoint(project: &str, name: &str) -> String {
        format!("endpoint:{project}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_their_names() {
        for k in NodeKind::ALL {
            assert_eq!(NodeKind::parse(k.as_str()), Some(k));
        }
        for k in EdgeKind::ALL {
            assert_eq!(EdgeKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(NodeKind::parse("nope"), None);
        assert_eq!(Target::parse(Target::DataHub.as_str()), Some(Target::DataHub));
    }

    #[test]
    fn every_key_names_its_kind() {
        let cases = [
            (keys::dataset("s3://b/k"), NodeKind::Dataset),
            (keys::run("p", "d", "e"), NodeKind::Run),
            (keys::attempt("p", "d", "e", "n0", 1), NodeKind::TaskAttempt),
            (keys::entity("task", "p", "d", "t", "v"), NodeKind::TaskVersion),
            (keys::entity("workflow", "p", "d", "w", "v"), NodeKind::WorkflowVersion),
            (keys::entity("launch_plan", "p", "d", "w", "v"), NodeKind::LaunchPlanVersion),
            (keys::source("p", "s"), NodeKind::Source),
            (keys::pipeline("p", "s"), NodeKind::Pipeline),
            (keys::model("p", "m"), NodeKind::Model),
            (keys::model_version("p", "m", "e1"), NodeKind::ModelVersion),
            (keys::endpoint("p", "x"), NodeKind::Endpoint),
        ];
        for (key, kind) in cases {
            assert_eq!(NodeKind::of_key(&key), Some(kind), "{key}");
        }
        assert_eq!(NodeKind::of_key("what:ever"), None);
        assert_eq!(NodeKind::of_key("nocolon"), None);
    }
}
