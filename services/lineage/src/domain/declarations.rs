//! `lineage.yaml`: what a project declares about the world outside its runs — external sources,
//! pipelines with their infrastructure, models, endpoints, owners — parsed and validated, and
//! turned into graph nodes and edges.
//!
//! Validation collects every problem it can find, each as `<file>: <path>: <problem>` with the
//! path in the file's own terms (`models[1].trained_by`), so one round trip fixes them all. A
//! file that does not even deserialize reports the first structural problem with its line.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use super::graph::{Edge, EdgeKind, Mutation, Node, NodeKind, Origin, keys};

/// Largest accepted file: declarations are a page of YAML, not data.
pub const MAX_BYTES: usize = 1024 * 1024;

/// DataHub FabricType values, the only environments a URN may carry.
pub const ENVS: [&str; 10] = ["DEV", "TEST", "QA", "UAT", "EI", "PRE", "STG", "NON_PROD", "PROD", "CORP"];

/// One problem, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where in the file (`models[1].trained_by`; `.` for the whole document).
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// Every problem of one file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", render(.file, .problems))]
pub struct Invalid {
    /// The file name the errors are reported against.
    pub file: String,
    /// What is wrong, in file order as far as it is known.
    pub problems: Vec<Problem>,
}

fn render(file: &str, problems: &[Problem]) -> String {
    problems.iter().map(|p| format!("{file}: {}: {}", p.path, p.message)).collect::<Vec<_>>().join("\n")
}

/// A scalar value of an infrastructure map (YAML `gpu: 1` and `gpu: "1"` mean the same).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
enum Scalar {
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

impl Scalar {
    fn into_string(self) -> String {
        match self {
            Scalar::Bool(b) => b.to_string(),
            Scalar::Int(i) => i.to_string(),
            Scalar::Float(f) => f.to_string(),
            Scalar::Text(s) => s,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping of owners, sources, pipelines, models and endpoints")]
struct RawFile {
    #[serde(default)]
    owners: Vec<String>,
    #[serde(default)]
    sources: Vec<RawSource>,
    #[serde(default)]
    pipelines: Vec<RawPipeline>,
    #[serde(default)]
    models: Vec<RawModel>,
    #[serde(default)]
    endpoints: Vec<RawEndpoint>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    name: String,
    platform: String,
    location: String,
    #[serde(default)]
    uri: Option<String>,
    #[serde(default)]
    env: Option<String>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    owners: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPipeline {
    name: String,
    workflow: String,
    #[serde(default)]
    project: Option<String>,
    #[serde(default)]
    domains: Vec<String>,
    #[serde(default)]
    sources: Vec<String>,
    #[serde(default)]
    infrastructure: BTreeMap<String, Scalar>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    owners: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    name: String,
    trained_by: String,
    artifact: String,
    #[serde(default)]
    platform: Option<String>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    owners: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEndpoint {
    name: String,
    model: String,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    deployed_by: Option<String>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    owners: Vec<String>,
}

/// An external table or file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// Name, unique in the file.
    pub name: String,
    /// Data platform (`dbt`, `snowflake`, `postgres`, `s3`, ...), as in DataHub URNs.
    pub platform: String,
    /// Where it lives on that platform (`db.schema.table`).
    pub location: String,
    /// The URI pipelines read it through; a dataset with exactly this URI is this source.
    pub uri: Option<String>,
    /// DataHub environment (FabricType); the exporter's default when unset.
    pub env: Option<String>,
    /// Free text.
    pub description: String,
    /// Owners; the file's owners when none are given.
    pub owners: Vec<String>,
}

/// A pipeline: the runs of one workflow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pipeline {
    /// Name, unique in the file.
    pub name: String,
    /// Project of the workflow (the declaring project unless given).
    pub project: String,
    /// Workflow name as registered (`module.function` for flytekit).
    pub workflow: String,
    /// Domains whose runs count; all when empty.
    pub domains: Vec<String>,
    /// Sources it reads without a URI in its inputs.
    pub sources: Vec<String>,
    /// Infrastructure facts (queue, cluster, GPU, ...).
    pub infrastructure: BTreeMap<String, String>,
    /// Free text.
    pub description: String,
    /// Owners.
    pub owners: Vec<String>,
}

/// A model trained by a pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Model {
    /// Name, unique in the file.
    pub name: String,
    /// The pipeline whose successful runs are its versions.
    pub trained_by: String,
    /// The workflow output holding the model file.
    pub artifact: String,
    /// DataHub ML platform (`aloft` unless given).
    pub platform: String,
    /// Free text.
    pub description: String,
    /// Owners.
    pub owners: Vec<String>,
}

/// Where a model is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Name, unique in the file.
    pub name: String,
    /// The model it serves.
    pub model: String,
    /// Its address.
    pub url: Option<String>,
    /// The pipeline whose successful runs deploy it.
    pub deployed_by: Option<String>,
    /// Free text.
    pub description: String,
    /// Owners.
    pub owners: Vec<String>,
}

/// A project's validated declarations.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Declarations {
    /// The declaring project.
    pub project: String,
    /// Stored version (0 before it is stored).
    pub version: i64,
    /// Default owners.
    pub owners: Vec<String>,
    /// External sources.
    pub sources: Vec<Source>,
    /// Pipelines.
    pub pipelines: Vec<Pipeline>,
    /// Models.
    pub models: Vec<Model>,
    /// Endpoints.
    pub endpoints: Vec<Endpoint>,
}

/// Whether `s` is a usable declared name: it ends up in node keys and DataHub URNs, where
/// commas, parentheses, slashes and `@` would break parsing.
pub fn is_valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Parses and validates `text` declared by `project`; `file` names it in errors.
pub fn parse(project: &str, file: &str, text: &str) -> Result<Declarations, Invalid> {
    let invalid = |path: &str, message: String| Invalid {
        file: file.to_string(),
        problems: vec![Problem { path: path.into(), message }],
    };
    if text.len() > MAX_BYTES {
        return Err(invalid(".", format!("is {} bytes; at most {MAX_BYTES} are accepted", text.len())));
    }
    if text.trim().is_empty() {
        return Err(invalid(".", "is empty; declare at least one of sources, pipelines, models, endpoints".into()));
    }
    // serde_yaml_ng already names the path (`models[0]: unknown field ...`) and the line; the
    // path becomes ours, so every message reads `<file>: <path>: <problem>`
    let raw: RawFile = serde_yaml_ng::from_str(text).map_err(|e| {
        let message = e.to_string();
        match message.split_once(": ") {
            Some((path, rest)) if is_yaml_path(path) => invalid(path, rest.to_string()),
            _ => invalid(".", message),
        }
    })?;
    validate(project, file, raw)
}

/// Whether `s` looks like a path serde_yaml_ng puts in front of its messages (`a.b[2].c`).
fn is_yaml_path(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '[' | ']'))
}

fn validate(project: &str, file: &str, raw: RawFile) -> Result<Declarations, Invalid> {
    let mut problems = Vec::new();
    let mut problem = |path: String, message: String| problems.push(Problem { path, message });

    check_owners(&raw.owners, "owners", &mut problem);
    if raw.sources.is_empty() && raw.pipelines.is_empty() && raw.models.is_empty() && raw.endpoints.is_empty() {
        problem(".".into(), "declares nothing; declare at least one of sources, pipelines, models, endpoints".into());
    }

    let names = |what: &str, list: Vec<&str>, problem: &mut dyn FnMut(String, String)| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        for (i, name) in list.into_iter().enumerate() {
            if !is_valid_name(name) {
                problem(
                    format!("{what}[{i}].name"),
                    format!("{name:?} is not a valid name (letters, digits, '_', '-', '.'; at most 128)"),
                );
            } else if !seen.insert(name.to_string()) {
                problem(format!("{what}[{i}].name"), format!("duplicate name {name:?}"));
            }
        }
        seen
    };
    let sources = names("sources", raw.sources.iter().map(|s| s.name.as_str()).collect(), &mut problem);
    let pipelines = names("pipelines", raw.pipelines.iter().map(|s| s.name.as_str()).collect(), &mut problem);
    let models = names("models", raw.models.iter().map(|s| s.name.as_str()).collect(), &mut problem);
    names("endpoints", raw.endpoints.iter().map(|s| s.name.as_str()).collect(), &mut problem);

    for (i, s) in raw.sources.iter().enumerate() {
        if !is_valid_name(&s.platform) {
            problem(format!("sources[{i}].platform"), format!("{:?} is not a valid platform name", s.platform));
        }
        if s.location.trim().is_empty() || s.location.contains([',', '(', ')']) {
            problem(
                format!("sources[{i}].location"),
                format!("{:?} must be non-empty without ',', '(' or ')'", s.location),
            );
        }
        if let Some(uri) = &s.uri
            && !(uri.starts_with('/')
                || uri.split_once("://").is_some_and(|(scheme, rest)| {
                    !scheme.is_empty() && scheme.chars().all(|c| c.is_ascii_alphanumeric()) && !rest.is_empty()
                }))
        {
            problem(
                format!("sources[{i}].uri"),
                format!("{uri:?} is neither an absolute path nor a <scheme>://... URI"),
            );
        }
        if let Some(env) = &s.env
            && !ENVS.contains(&env.as_str())
        {
            problem(format!("sources[{i}].env"), format!("{env:?} is not one of {}", ENVS.join(", ")));
        }
        check_owners(&s.owners, &format!("sources[{i}].owners"), &mut problem);
    }
    for (i, p) in raw.pipelines.iter().enumerate() {
        if p.workflow.trim().is_empty() || p.workflow.contains(['/', '@', ' ']) {
            problem(format!("pipelines[{i}].workflow"), format!("{:?} is not a workflow name", p.workflow));
        }
        if let Some(pr) = &p.project
            && !is_valid_name(pr)
        {
            problem(format!("pipelines[{i}].project"), format!("{pr:?} is not a valid project"));
        }
        for (j, d) in p.domains.iter().enumerate() {
            if !is_valid_name(d) {
                problem(format!("pipelines[{i}].domains[{j}]"), format!("{d:?} is not a valid domain"));
            }
        }
        for (j, s) in p.sources.iter().enumerate() {
            if !sources.contains(s) {
                problem(format!("pipelines[{i}].sources[{j}]"), format!("unknown source {s:?}"));
            }
        }
        for (k, v) in &p.infrastructure {
            if let Scalar::Text(t) = v
                && t.is_empty()
            {
                problem(format!("pipelines[{i}].infrastructure.{k}"), "must not be empty".into());
            }
        }
        check_owners(&p.owners, &format!("pipelines[{i}].owners"), &mut problem);
    }
    for (i, m) in raw.models.iter().enumerate() {
        if !pipelines.contains(&m.trained_by) {
            problem(format!("models[{i}].trained_by"), format!("unknown pipeline {:?}", m.trained_by));
        }
        if m.artifact.trim().is_empty() {
            problem(format!("models[{i}].artifact"), "must name the workflow output holding the model".into());
        }
        if let Some(p) = &m.platform
            && !is_valid_name(p)
        {
            problem(format!("models[{i}].platform"), format!("{p:?} is not a valid platform name"));
        }
        check_owners(&m.owners, &format!("models[{i}].owners"), &mut problem);
    }
    for (i, e) in raw.endpoints.iter().enumerate() {
        if !models.contains(&e.model) {
            problem(format!("endpoints[{i}].model"), format!("unknown model {:?}", e.model));
        }
        if let Some(d) = &e.deployed_by
            && !pipelines.contains(d)
        {
            problem(format!("endpoints[{i}].deployed_by"), format!("unknown pipeline {d:?}"));
        }
        if let Some(u) = &e.url
            && !(u.starts_with("http://") || u.starts_with("https://") || u.starts_with("grpc://"))
        {
            problem(format!("endpoints[{i}].url"), format!("{u:?} is not an http(s):// or grpc:// URL"));
        }
        check_owners(&e.owners, &format!("endpoints[{i}].owners"), &mut problem);
    }
    if !problems.is_empty() {
        return Err(Invalid { file: file.to_string(), problems });
    }

    let owners_or = |o: Vec<String>| if o.is_empty() { raw.owners.clone() } else { o };
    Ok(Declarations {
        project: project.to_string(),
        version: 0,
        owners: raw.owners.clone(),
        sources: raw
            .sources
            .into_iter()
            .map(|s| Source {
                name: s.name,
                platform: s.platform,
                location: s.location,
                uri: s.uri,
                env: s.env,
                description: s.description,
                owners: owners_or(s.owners),
            })
            .collect(),
        pipelines: raw
            .pipelines
            .into_iter()
            .map(|p| Pipeline {
                name: p.name,
                project: p.project.unwrap_or_else(|| project.to_string()),
                workflow: p.workflow,
                domains: p.domains,
                sources: p.sources,
                infrastructure: p.infrastructure.into_iter().map(|(k, v)| (k, v.into_string())).collect(),
                description: p.description,
                owners: owners_or(p.owners),
            })
            .collect(),
        models: raw
            .models
            .into_iter()
            .map(|m| Model {
                name: m.name,
                trained_by: m.trained_by,
                artifact: m.artifact,
                platform: m.platform.unwrap_or_else(|| "aloft".into()),
                description: m.description,
                owners: owners_or(m.owners),
            })
            .collect(),
        endpoints: raw
            .endpoints
            .into_iter()
            .map(|e| Endpoint {
                name: e.name,
                model: e.model,
                url: e.url,
                deployed_by: e.deployed_by,
                description: e.description,
                owners: owners_or(e.owners),
            })
            .collect(),
    })
}

fn check_owners(owners: &[String], path: &str, problem: &mut dyn FnMut(String, String)) {
    for (i, o) in owners.iter().enumerate() {
        if o.trim().is_empty() {
            problem(format!("{path}[{i}]"), "owner must not be empty".into());
        }
    }
}

impl Declarations {
    /// The pipeline called `name`.
    pub fn pipeline(&self, name: &str) -> Option<&Pipeline> {
        self.pipelines.iter().find(|p| p.name == name)
    }

    /// The nodes and edges these declarations contribute on their own (links to runs come from
    /// [`super::links`]).
    pub fn mutations(&self) -> Vec<Mutation> {
        let p = &self.project;
        let origin = Origin::Declared(p.clone());
        let mut out = Vec::new();
        let mut node = |key: String, kind: NodeKind, label: &str, attrs: Vec<(&str, String)>| {
            let attrs = attrs.into_iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| (k.to_string(), v)).collect();
            out.push(Mutation::Node(
                Node { key, kind, project: p.clone(), label: label.to_string(), lookup: String::new(), attrs },
                origin.clone(),
            ));
        };
        let version = self.version.to_string();
        for s in &self.sources {
            node(
                keys::source(p, &s.name),
                NodeKind::Source,
                &s.name,
                vec![
                    ("platform", s.platform.clone()),
                    ("location", s.location.clone()),
                    ("uri", s.uri.clone().unwrap_or_default()),
                    ("env", s.env.clone().unwrap_or_default()),
                    ("description", s.description.clone()),
                    ("owners", s.owners.join(",")),
                    ("declared_in", version.clone()),
                ],
            );
        }
        for pl in &self.pipelines {
            let mut attrs = vec![
                ("workflow", format!("{}/{}", pl.project, pl.workflow)),
                ("domains", pl.domains.join(",")),
                ("description", pl.description.clone()),
                ("owners", pl.owners.join(",")),
                ("declared_in", version.clone()),
            ];
            let infra: Vec<(String, String)> =
                pl.infrastructure.iter().map(|(k, v)| (format!("infrastructure.{k}"), v.clone())).collect();
            attrs.extend(infra.iter().map(|(k, v)| (k.as_str(), v.clone())));
            node(keys::pipeline(p, &pl.name), NodeKind::Pipeline, &pl.name, attrs);
        }
        for m in &self.models {
            node(
                keys::model(p, &m.name),
                NodeKind::Model,
                &m.name,
                vec![
                    ("trained_by", m.trained_by.clone()),
                    ("artifact", m.artifact.clone()),
                    ("platform", m.platform.clone()),
                    ("description", m.description.clone()),
                    ("owners", m.owners.join(",")),
                    ("declared_in", version.clone()),
                ],
            );
        }
        for e in &self.endpoints {
            node(
                keys::endpoint(p, &e.name),
                NodeKind::Endpoint,
                &e.name,
                vec![
                    ("model", e.model.clone()),
                    ("url", e.url.clone().unwrap_or_default()),
                    ("deployed_by", e.deployed_by.clone().unwrap_or_default()),
                    ("description", e.description.clone()),
                    ("owners", e.owners.join(",")),
                    ("declared_in", version.clone()),
                ],
            );
        }
        let mut edge = |from: String, kind: EdgeKind, to: String| {
            out.push(Mutation::Edge(Edge::new(from, kind, to), origin.clone()))
        };
        for s in &self.sources {
            if let Some(uri) = &s.uri {
                edge(keys::source(p, &s.name), EdgeKind::Materializes, keys::dataset(uri));
            }
        }
        for pl in &self.pipelines {
            for s in &pl.sources {
                edge(keys::source(p, s), EdgeKind::Feeds, keys::pipeline(p, &pl.name));
            }
        }
        for e in &self.endpoints {
            edge(keys::model(p, &e.model), EdgeKind::Serves, keys::endpoint(p, &e.name));
        }
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const GOOD: &str = r#"
owners: [ml-team@example.com]
sources:
  - name: customers
    platform: dbt
    location: analytics.marts.customers
    uri: s3://bucket/exports/customers.csv
pipelines:
  - name: churn-training
    workflow: lineage_pipelines.training_pipeline
    domains: [development]
    sources: [customers]
    infrastructure: {queue: default, gpus: 0}
  - name: churn-deploy
    workflow: lineage_pipelines.deploy_pipeline
models:
  - name: churn
    trained_by: churn-training
    artifact: model
endpoints:
  - name: churn-api
    model: churn
    url: https://churn.example.com/predict
    deployed_by: churn-deploy
    owners: [serving@example.com]
"#;

    fn errors(text: &str) -> String {
        parse("proj", "lineage.yaml", text).unwrap_err().to_string()
    }

    #[test]
    fn a_complete_file_parses_with_defaults_resolved() {
        let d = parse("proj", "lineage.yaml", GOOD).unwrap();
        assert_eq!(d.sources[0].owners, vec!["ml-team@example.com"]);
        assert_eq!(d.endpoints[0].owners, vec!["serving@example.com"]);
        assert_eq!(d.pipelines[0].project, "proj");
        assert_eq!(d.pipelines[0].infrastructure["gpus"], "0");
        assert_eq!(d.models[0].platform, "aloft");
        let edges: Vec<Edge> = d
            .mutations()
            .into_iter()
            .filter_map(|m| match m {
                Mutation::Edge(e, _) => Some(e),
                _ => None,
            })
            .collect();
        assert_eq!(
            edges,
            vec![
                Edge::new("source:proj/customers", EdgeKind::Materializes, "dataset:s3://bucket/exports/customers.csv"),
                Edge::new("source:proj/customers", EdgeKind::Feeds, "pipeline:proj/churn-training"),
                Edge::new("model:proj/churn", EdgeKind::Serves, "endpoint:proj/churn-api"),
            ]
        );
    }

    /// At least ten broken files, each with the exact message a user sees.
    #[test]
    fn bad_files_get_precise_errors() {
        let cases: Vec<(String, &str)> = vec![
            ("".into(), "lineage.yaml: .: is empty; declare at least one of sources, pipelines, models, endpoints"),
            (
                "owners: []\n".into(),
                "lineage.yaml: .: declares nothing; declare at least one of sources, pipelines, models, endpoints",
            ),
            (
                GOOD.replace("trained_by: churn-training", "trained_by: x"),
                "lineage.yaml: models[0].trained_by: unknown pipeline \"x\"",
            ),
            (
                GOOD.replace("model: churn\n    url", "model: nope\n    url"),
                "lineage.yaml: endpoints[0].model: unknown model \"nope\"",
            ),
            (
                GOOD.replace("deployed_by: churn-deploy", "deployed_by: ghost"),
                "lineage.yaml: endpoints[0].deployed_by: unknown pipeline \"ghost\"",
            ),
            (
                GOOD.replace("sources: [customers]", "sources: [orders]"),
                "lineage.yaml: pipelines[0].sources[0]: unknown source \"orders\"",
            ),
            (
                GOOD.replace("name: churn-deploy", "name: churn-training"),
                "lineage.yaml: pipelines[1].name: duplicate name \"churn-training\"\n\
                 lineage.yaml: endpoints[0].deployed_by: unknown pipeline \"churn-deploy\"",
            ),
            (
                GOOD.replace("location: analytics.marts.customers", "location: \"a,b\""),
                "lineage.yaml: sources[0].location: \"a,b\" must be non-empty without ',', '(' or ')'",
            ),
            (
                GOOD.replace("uri: s3://bucket/exports/customers.csv", "uri: exports/customers.csv"),
                "lineage.yaml: sources[0].uri: \"exports/customers.csv\" is neither an absolute path nor a <scheme>://... URI",
            ),
            (
                GOOD.replace("platform: dbt", "platform: dbt\n    env: PRODUCTION"),
                "lineage.yaml: sources[0].env: \"PRODUCTION\" is not one of DEV, TEST, QA, UAT, EI, PRE, STG, NON_PROD, PROD, CORP",
            ),
            (
                GOOD.replace("name: churn-api", "name: churn api"),
                "lineage.yaml: endpoints[0].name: \"churn api\" is not a valid name (letters, digits, '_', '-', '.'; at most 128)",
            ),
            (
                GOOD.replace("url: https://churn.example.com/predict", "url: churn.example.com"),
                "lineage.yaml: endpoints[0].url: \"churn.example.com\" is not an http(s):// or grpc:// URL",
            ),
            (
                GOOD.replace("owners: [serving@example.com]", "owners: [\"\"]"),
                "lineage.yaml: endpoints[0].owners[0]: owner must not be empty",
            ),
        ];
        for (text, expected) in &cases {
            assert_eq!(&errors(text), expected, "for\n{text}");
        }
        assert!(cases.len() >= 10);
    }

    #[test]
    fn structural_errors_name_the_path_and_line() {
        let e = errors(&GOOD.replace("    artifact: model", "    artifact: model\n    colour: blue"));
        assert!(e.starts_with("lineage.yaml: models[0]: unknown field `colour`, expected one of"), "{e}");
        assert!(e.ends_with("at line 20 column 5"), "{e}");
        let e = errors(&GOOD.replace("    trained_by: churn-training\n", ""));
        assert!(e.starts_with("lineage.yaml: models[0]: missing field `trained_by`"), "{e}");
        let e = errors("sources: {name: x}\n");
        assert!(e.starts_with("lineage.yaml: sources: invalid type: map, expected a sequence"), "{e}");
        let e = errors("sources: [\n");
        assert!(e.starts_with("lineage.yaml: .: "), "{e}");
        let e = errors("- a\n- b\n");
        assert!(e.starts_with("lineage.yaml: .: invalid type: sequence, expected a mapping of owners, sources, pipelines, models and endpoints"), "{e}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = GOOD
            .replace("trained_by: churn-training", "trained_by: x")
            .replace("model: churn\n    url", "model: y\n    url");
        let err = parse("proj", "team/lineage.yaml", &text).unwrap_err();
        assert_eq!(err.problems.len(), 2);
        assert_eq!(
            err.to_string(),
            "team/lineage.yaml: models[0].trained_by: unknown pipeline \"x\"\n\
             team/lineage.yaml: endpoints[0].model: unknown model \"y\""
        );
    }

    #[test]
    fn oversized_files_are_refused_before_parsing() {
        let text = format!("owners: [a]\n#{}\n", "x".repeat(MAX_BYTES));
        assert_eq!(
            errors(&text),
            format!("lineage.yaml: .: is {} bytes; at most {MAX_BYTES} are accepted", text.len())
        );
    }
}
