//! How declarations attach to captured runs. One pure function serves both directions: a run
//! event asks it with the current declarations, and applying declarations asks it for every run
//! already captured of the workflows they name, so the graph does not depend on which came first.
//!
//! The rule:
//! - a pipeline matches the runs of its workflow (same project, same name, one of its domains)
//!   and gets a `ran` edge to each;
//! - a model's versions are the successful runs of its `trained_by` pipeline whose output named
//!   by `artifact` holds a file, directory or dataset: version = execution name, with edges
//!   `run -trained-> version`, `artifact dataset -artifact-> version`, `version -version_of-> model`;
//! - an endpoint with `deployed_by` gets a `deployed` edge from every successful run of that
//!   pipeline (the model it serves is linked by `serves` in the declarations themselves).
//!
//! Everything here has the declaring project's origin, so applying a new version replaces it.

use std::collections::BTreeMap;

use serde_json::json;

use super::declarations::{Declarations, Pipeline};
use super::export::{self, Settings};
use super::graph::{Edge, EdgeKind, Export, Mutation, Node, NodeKind, Origin, Target, keys};

/// What linking needs to know about a run (from its workflow events, or its stored node).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RunFacts {
    /// Node key.
    pub key: String,
    /// Project.
    pub project: String,
    /// Domain.
    pub domain: String,
    /// Execution name.
    pub name: String,
    /// Workflow name.
    pub workflow: String,
    /// Whether it succeeded.
    pub succeeded: bool,
    /// When it ended (RFC 3339), or empty.
    pub ended_at: String,
    /// Workflow outputs that hold data: output name -> URIs.
    pub outputs: BTreeMap<String, Vec<String>>,
}

fn matches(p: &Pipeline, run: &RunFacts) -> bool {
    p.project == run.project && p.workflow == run.workflow && (p.domains.is_empty() || p.domains.contains(&run.domain))
}

/// The mutations linking `run` to the declarations of one project.
pub fn link_run(d: &Declarations, run: &RunFacts, settings: &Settings) -> Vec<Mutation> {
    let origin = Origin::Declared(d.project.clone());
    let mut out = Vec::new();
    for p in d.pipelines.iter().filter(|p| matches(p, run)) {
        out.push(Mutation::Edge(
            Edge::new(keys::pipeline(&d.project, &p.name), EdgeKind::Ran, &run.key),
            origin.clone(),
        ));
        if !run.succeeded {
            continue;
        }
        for m in d.models.iter().filter(|m| m.trained_by == p.name) {
            let Some(uris) = run.outputs.get(&m.artifact).filter(|u| !u.is_empty()) else { continue };
            let mv = keys::model_version(&d.project, &m.name, &run.name);
            let mut attrs: BTreeMap<String, String> = [
                ("model".to_string(), m.name.clone()),
                ("version".to_string(), run.name.clone()),
                ("run".to_string(), run.key.clone()),
                ("artifact".to_string(), uris.join("\n")),
            ]
            .into();
            if !run.ended_at.is_empty() {
                attrs.insert("trained_at".into(), run.ended_at.clone());
            }
            out.push(Mutation::Node(
                Node {
                    key: mv.clone(),
                    kind: NodeKind::ModelVersion,
                    project: d.project.clone(),
                    label: format!("{}@{}", m.name, run.name),
                    lookup: keys::model(&d.project, &m.name),
                    attrs,
                },
                origin.clone(),
            ));
            out.push(Mutation::Edge(Edge::new(&run.key, EdgeKind::Trained, &mv), origin.clone()));
            for u in uris {
                out.push(Mutation::Edge(Edge::new(keys::dataset(u), EdgeKind::Artifact, &mv), origin.clone()));
            }
            out.push(Mutation::Edge(
                Edge::new(&mv, EdgeKind::VersionOf, keys::model(&d.project, &m.name)),
                origin.clone(),
            ));
            if let Some(dh) = &settings.datahub {
                let urn = export::model_urn(&m.platform, &d.project, &m.name, &dh.env);
                let aspect = json!({
                    "name": format!("{}.{}", d.project, m.name),
                    "description": m.description,
                    "version": {"versionTag": run.name},
                    "trainingJobs": [export::instance_urn(&run.key)],
                    "customProperties": {
                        "artifact": uris.join(","),
                        "trained_by": p.name,
                        "owners": m.owners.join(","),
                    },
                });
                let body = export::proposal("mlModel", &urn, "mlModelProperties", &aspect);
                out.push(Mutation::Export(Export {
                    target: Target::DataHub,
                    // keyed by content: a replay or an unrelated change to the file sends
                    // nothing, a change to this model's description or owners sends it again
                    key: format!("{mv}#{}", digest(&body)),
                    body,
                }));
            }
        }
        for e in d.endpoints.iter().filter(|e| e.deployed_by.as_deref() == Some(p.name.as_str())) {
            out.push(Mutation::Edge(
                Edge::new(&run.key, EdgeKind::Deployed, keys::endpoint(&d.project, &e.name)),
                origin.clone(),
            ));
        }
    }
    out
}

/// Payloads the declarations themselves produce: a source read through a URI makes that
/// dataset a copy of the source (`upstreamLineage`), which is how DataHub links a model's
/// training data back to a dbt or warehouse table.
pub fn declaration_exports(d: &Declarations, settings: &Settings) -> Vec<Mutation> {
    let Some(dh) = &settings.datahub else { return Vec::new() };
    let mut out = Vec::new();
    for s in &d.sources {
        let env = s.env.clone().unwrap_or_else(|| dh.env.clone());
        let Some(uri) = &s.uri else { continue };
        let aspect = json!({
            "upstreams": [{
                "dataset": export::dataset_urn(&s.platform, &s.location, &env),
                "type": "COPY",
                "auditStamp": {"time": 0, "actor": export::DATAHUB_ACTOR},
            }],
        });
        let body = export::proposal("dataset", &export::uri_dataset_urn(uri, &dh.env), "upstreamLineage", &aspect);
        out.push(Mutation::Export(Export {
            target: Target::DataHub,
            key: format!("{}#{}", keys::source(&d.project, &s.name), digest(&body)),
            body,
        }));
    }
    out
}

fn digest(body: &serde_json::Value) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(body.to_string().as_bytes())[..12])
}

/// The names of the workflows a project's pipelines follow, as run lookups (`<project>/<workflow>`).
pub fn workflow_lookups(d: &Declarations) -> Vec<String> {
    let mut v: Vec<String> = d.pipelines.iter().map(|p| format!("{}/{}", p.project, p.workflow)).collect();
    v.sort();
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::declarations;

    fn decls() -> Declarations {
        let mut d = declarations::parse("proj", "lineage.yaml", declarations::tests::GOOD).unwrap();
        d.version = 3;
        d
    }

    fn run(workflow: &str, succeeded: bool) -> RunFacts {
        RunFacts {
            key: "run:proj/development/e1".into(),
            project: "proj".into(),
            domain: "development".into(),
            name: "e1".into(),
            workflow: workflow.into(),
            succeeded,
            ended_at: "2024-01-01T00:00:00.000Z".into(),
            outputs: [("model".to_string(), vec!["s3://b/raw/model.pkl".to_string()])].into(),
        }
    }

    fn edges(m: &[Mutation]) -> Vec<Edge> {
        m.iter()
            .filter_map(|m| match m {
                Mutation::Edge(e, _) => Some(e.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_successful_training_run_is_a_model_version() {
        let m = link_run(&decls(), &run("lineage_pipelines.training_pipeline", true), &Settings::default());
        assert_eq!(
            edges(&m),
            vec![
                Edge::new("pipeline:proj/churn-training", EdgeKind::Ran, "run:proj/development/e1"),
                Edge::new("run:proj/development/e1", EdgeKind::Trained, "model:proj/churn@e1"),
                Edge::new("dataset:s3://b/raw/model.pkl", EdgeKind::Artifact, "model:proj/churn@e1"),
                Edge::new("model:proj/churn@e1", EdgeKind::VersionOf, "model:proj/churn"),
            ]
        );
        assert!(m.iter().all(
            |m| !matches!(m, Mutation::Edge(_, o) | Mutation::Node(_, o) if *o != Origin::Declared("proj".into()))
        ));
    }

    #[test]
    fn failed_runs_and_other_domains_train_nothing() {
        let m = link_run(&decls(), &run("lineage_pipelines.training_pipeline", false), &Settings::default());
        assert_eq!(
            edges(&m),
            vec![Edge::new("pipeline:proj/churn-training", EdgeKind::Ran, "run:proj/development/e1")]
        );
        let mut r = run("lineage_pipelines.training_pipeline", true);
        r.domain = "production".into();
        assert!(link_run(&decls(), &r, &Settings::default()).is_empty());
        assert!(link_run(&decls(), &run("other.workflow", true), &Settings::default()).is_empty());
    }

    #[test]
    fn deploy_runs_reach_the_endpoint() {
        let m = link_run(&decls(), &run("lineage_pipelines.deploy_pipeline", true), &Settings::default());
        assert_eq!(
            edges(&m),
            vec![
                Edge::new("pipeline:proj/churn-deploy", EdgeKind::Ran, "run:proj/development/e1"),
                Edge::new("run:proj/development/e1", EdgeKind::Deployed, "endpoint:proj/churn-api"),
            ]
        );
    }
}
