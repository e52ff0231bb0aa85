//! Payload builders for the catalogs: DataHub MetadataChangeProposals (Rest.li
//! `ingestProposal` bodies) and OpenLineage 2-0-2 RunEvents. Pure; the URN and naming rules are
//! those of DataHub's `mce_builder` and the OpenLineage naming spec.
//!
//! Modelling (as DataHub's Airflow integration does it): a workflow is a dataFlow, a task a
//! dataJob in it, a run and each task attempt a dataProcessInstance (the attempt's parent
//! instance is the run); a declared model is an mlModel whose `trainingJobs` are its training runs.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// `producer` of every OpenLineage event and `_producer` of every facet.
pub const PRODUCER: &str = "https://github.com/aloft-ml/aloft/tree/main/services/lineage";
/// The RunEvent schema this service writes.
pub const OL_RUN_EVENT_SCHEMA: &str = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent";
const OL_PARENT_SCHEMA: &str = "https://openlineage.io/spec/facets/1-1-0/ParentRunFacet.json#/$defs/ParentRunFacet";
const OL_ERROR_SCHEMA: &str =
    "https://openlineage.io/spec/facets/1-0-1/ErrorMessageRunFacet.json#/$defs/ErrorMessageRunFacet";
const OL_JOB_TYPE_SCHEMA: &str = "https://openlineage.io/spec/facets/2-0-3/JobTypeJobFacet.json#/$defs/JobTypeJobFacet";
/// The actor DataHub audit stamps name when nobody in particular did it.
pub const DATAHUB_ACTOR: &str = "urn:li:corpuser:datahub";

/// How DataHub URNs are formed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataHubNames {
    /// FabricType of datasets and models (`PROD`, `DEV`, ...).
    pub env: String,
    /// The orchestrator name in dataFlow URNs.
    pub orchestrator: String,
    /// The cluster in dataFlow URNs.
    pub cluster: String,
}

/// How OpenLineage jobs are named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenLineageNames {
    /// Namespace of every job.
    pub namespace: String,
}

/// Which catalogs get payloads, and their naming.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Settings {
    /// DataHub, when configured.
    pub datahub: Option<DataHubNames>,
    /// OpenLineage, when configured.
    pub openlineage: Option<OpenLineageNames>,
}

/// Commas and parentheses delimit URN parts; percent-encode them (and `%` itself) in names.
pub fn sanitize(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        match c {
            '%' => out.push_str("%25"),
            ',' => out.push_str("%2C"),
            '(' => out.push_str("%28"),
            ')' => out.push_str("%29"),
            c => out.push(c),
        }
    }
    out
}

/// `urn:li:dataset:(urn:li:dataPlatform:<platform>,<name>,<env>)`.
pub fn dataset_urn(platform: &str, name: &str, env: &str) -> String {
    format!("urn:li:dataset:(urn:li:dataPlatform:{},{},{env})", sanitize(platform), sanitize(name))
}

/// The platform and name of a URI: `s3://b/k` is (`s3`, `b/k`), a local path (`file`, path),
/// any other `<scheme>://rest` (`<scheme>`, `rest`).
pub fn platform_and_name(uri: &str) -> (String, String) {
    match uri.split_once("://") {
        Some(("s3" | "s3a" | "s3n", rest)) => ("s3".into(), rest.trim_end_matches('/').into()),
        Some(("gs", rest)) => ("gcs".into(), rest.trim_end_matches('/').into()),
        Some(("file", rest)) => ("file".into(), rest.into()),
        Some((scheme, rest)) => (scheme.to_string(), rest.trim_end_matches('/').into()),
        None => ("file".into(), uri.trim_end_matches('/').into()),
    }
}

/// The DataHub URN of a dataset at `uri`.
pub fn uri_dataset_urn(uri: &str, env: &str) -> String {
    let (platform, name) = platform_and_name(uri);
    dataset_urn(&platform, &name, env)
}

/// `urn:li:dataFlow:(<orchestrator>,<project>.<domain>.<workflow>,<cluster>)`.
pub fn flow_urn(n: &DataHubNames, project: &str, domain: &str, workflow: &str) -> String {
    format!(
        "urn:li:dataFlow:({},{},{})",
        sanitize(&n.orchestrator),
        sanitize(&format!("{project}.{domain}.{workflow}")),
        n.cluster
    )
}

/// `urn:li:dataJob:(<flow urn>,<task>)`.
pub fn job_urn(flow: &str, task: &str) -> String {
    format!("urn:li:dataJob:({flow},{})", sanitize(task))
}

/// `urn:li:dataProcessInstance:<id>`, the id a digest of the node key (stable across replays).
pub fn instance_urn(node_key: &str) -> String {
    format!("urn:li:dataProcessInstance:{}", &hex::encode(Sha256::digest(node_key.as_bytes()))[..32])
}

/// `urn:li:mlModel:(urn:li:dataPlatform:<platform>,<project>.<name>,<env>)`.
pub fn model_urn(platform: &str, project: &str, name: &str, env: &str) -> String {
    format!(
        "urn:li:mlModel:(urn:li:dataPlatform:{},{},{env})",
        sanitize(platform),
        sanitize(&format!("{project}.{name}"))
    )
}

/// A deterministic UUID (version 5 layout, SHA-256 based) for an OpenLineage runId, so the START
/// and the COMPLETE of one run carry the same id on every replica and every replay.
pub fn run_uuid(node_key: &str) -> String {
    let d = Sha256::digest(node_key.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// One Rest.li `ingestProposal` body. The aspect travels as a JSON *string* (GMS rejects an
/// object there with `Field "value" is required`).
pub fn proposal(entity_type: &str, urn: &str, aspect_name: &str, aspect: &Value) -> Value {
    json!({
        "proposal": {
            "entityType": entity_type,
            "entityUrn": urn,
            "changeType": "UPSERT",
            "aspectName": aspect_name,
            "aspect": {"contentType": "application/json", "value": aspect.to_string()},
        },
        "async": "false",
    })
}

/// An OpenLineage dataset `{namespace, name}` for a URI, as the naming spec has it: S3 is
/// `s3://<bucket>` + key, a local file `file` + absolute path.
pub fn ol_dataset(uri: &str) -> Value {
    let (namespace, name) = match uri.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('/') {
            Some((authority, path)) => (format!("{scheme}://{authority}"), path.to_string()),
            None => (format!("{scheme}://{rest}"), "/".to_string()),
        },
        None => ("file".to_string(), uri.to_string()),
    };
    json!({"namespace": namespace, "name": name})
}

/// What an OpenLineage RunEvent is about.
#[derive(Debug, Clone)]
pub struct OlRun<'a> {
    /// START, COMPLETE, FAIL, ABORT.
    pub event_type: &'a str,
    /// RFC 3339.
    pub event_time: &'a str,
    /// The run's node key (its runId is derived from it).
    pub run_key: &'a str,
    /// Job name.
    pub job: &'a str,
    /// `DAG` for a workflow run, `TASK` for a task attempt.
    pub job_type: &'a str,
    /// The parent run: node key and job name.
    pub parent: Option<(&'a str, &'a str)>,
    /// Input URIs.
    pub inputs: &'a [String],
    /// Output URIs.
    pub outputs: &'a [String],
    /// Error message of a failed run.
    pub error: Option<&'a str>,
}

/// An OpenLineage 2-0-2 RunEvent.
pub fn ol_run_event(n: &OpenLineageNames, r: &OlRun<'_>) -> Value {
    let mut run_facets = serde_json::Map::new();
    if let Some((parent_key, parent_job)) = r.parent {
        run_facets.insert(
            "parent".into(),
            json!({
                "_producer": PRODUCER, "_schemaURL": OL_PARENT_SCHEMA,
                "run": {"runId": run_uuid(parent_key)},
                "job": {"namespace": n.namespace, "name": parent_job},
            }),
        );
    }
    if let Some(message) = r.error {
        run_facets.insert(
            "errorMessage".into(),
            json!({"_producer": PRODUCER, "_schemaURL": OL_ERROR_SCHEMA, "message": message, "programmingLanguage": "python"}),
        );
    }
    json!({
        "eventType": r.event_type,
        "eventTime": r.event_time,
        "producer": PRODUCER,
        "schemaURL": OL_RUN_EVENT_SCHEMA,
        "run": {"runId": run_uuid(r.run_key), "facets": run_facets},
        "job": {
            "namespace": n.namespace,
            "name": r.job,
            "facets": {"jobType": {
                "_producer": PRODUCER, "_schemaURL": OL_JOB_TYPE_SCHEMA,
                "processingType": "BATCH", "integration": "ALOFT", "jobType": r.job_type,
            }},
        },
        "inputs": r.inputs.iter().map(|u| ol_dataset(u)).collect::<Vec<_>>(),
        "outputs": r.outputs.iter().map(|u| ol_dataset(u)).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urns_follow_datahub_formats() {
        assert_eq!(
            uri_dataset_urn("s3://bucket/raw/customers.csv", "PROD"),
            "urn:li:dataset:(urn:li:dataPlatform:s3,bucket/raw/customers.csv,PROD)"
        );
        assert_eq!(
            uri_dataset_urn("/data/x(1),y", "DEV"),
            "urn:li:dataset:(urn:li:dataPlatform:file,/data/x%281%29%2Cy,DEV)"
        );
        let n = DataHubNames { env: "PROD".into(), orchestrator: "aloft".into(), cluster: "prod".into() };
        let flow = flow_urn(&n, "p", "development", "wf.train");
        assert_eq!(flow, "urn:li:dataFlow:(aloft,p.development.wf.train,prod)");
        assert_eq!(
            job_urn(&flow, "wf.split"),
            "urn:li:dataJob:(urn:li:dataFlow:(aloft,p.development.wf.train,prod),wf.split)"
        );
        assert_eq!(model_urn("aloft", "p", "churn", "PROD"), "urn:li:mlModel:(urn:li:dataPlatform:aloft,p.churn,PROD)");
        assert!(instance_urn("run:p/d/e").starts_with("urn:li:dataProcessInstance:"));
        assert_eq!(instance_urn("run:p/d/e").len(), "urn:li:dataProcessInstance:".len() + 32);
    }

    #[test]
    fn run_ids_are_stable_uuids() {
        let a = run_uuid("run:p/d/e");
        assert_eq!(a, run_uuid("run:p/d/e"));
        assert_ne!(a, run_uuid("run:p/d/f"));
        let parts: Vec<&str> = a.split('-').collect();
        assert_eq!(parts.iter().map(|p| p.len()).collect::<Vec<_>>(), vec![8, 4, 4, 4, 12]);
        assert!(parts[2].starts_with('5'));
        assert!(matches!(parts[3].chars().next(), Some('8' | '9' | 'a' | 'b')));
    }

    #[test]
    fn openlineage_datasets_split_namespace_and_name() {
        assert_eq!(ol_dataset("s3://bucket/a/b.csv"), json!({"namespace": "s3://bucket", "name": "a/b.csv"}));
        assert_eq!(ol_dataset("/tmp/x.csv"), json!({"namespace": "file", "name": "/tmp/x.csv"}));
    }

    #[test]
    fn proposals_carry_the_aspect_as_a_string() {
        let p = proposal("dataJob", "urn:li:dataJob:(x,y)", "dataJobInputOutput", &json!({"inputDatasets": []}));
        assert_eq!(p["proposal"]["aspect"]["value"], "{\"inputDatasets\":[]}");
        assert_eq!(p["async"], "false");
    }
}
