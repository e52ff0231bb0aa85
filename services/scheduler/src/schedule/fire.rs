//! What firing a scheduled time means: the execution's deterministic name, the CreateExecution
//! request, and the progress record kept per launch-plan version.

use aloft_proto::flyteidl::admin::{self, ExecutionCreateRequest, ExecutionSpec, execution_metadata::ExecutionMode};
use aloft_proto::flyteidl::core::{self, Identifier, ResourceType};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::cadence::ScheduleSpec;

/// Reported as the principal of scheduled executions.
pub const PRINCIPAL: &str = "aloft-scheduler";

fn digest(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// The execution name for `launch_plan` fired at `scheduled` (Unix seconds): the same on every
/// replica and after every restart, so metadata's unique name makes the firing exactly-once.
/// Shaped like Flyte's generated names (20 characters, a lowercase letter first, then
/// `[0-9a-f]`); 76 bits of SHA-256 make a collision between two firings negligible.
pub fn execution_name(launch_plan: &Identifier, scheduled: i64) -> String {
    let id = launch_plan;
    let hash = digest(&format!("{}:{}:{}:{}:{scheduled}", id.project, id.domain, id.name, id.version));
    format!("s{}", &hash[..19])
}

/// The progress key of a launch-plan version in the bucket (keys allow only `[-/_=.a-zA-Z0-9]`,
/// and names and versions may hold anything, so the key is a digest; the value names the plan).
pub fn progress_key(launch_plan: &Identifier) -> String {
    let id = launch_plan;
    format!("lp.{}", &digest(&format!("{}:{}:{}:{}", id.project, id.domain, id.name, id.version))[..32])
}

/// `project/domain/name/version`, for logs and the progress record.
pub fn display(launch_plan: &Identifier) -> String {
    let id = launch_plan;
    format!("{}/{}/{}/{}", id.project, id.domain, id.name, id.version)
}

/// What the bucket keeps per launch-plan version: every scheduled time up to `handled_until`
/// has an execution or was skipped by the catch-up policy. Only ever moves forward.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Progress {
    /// `project/domain/name/version`, so the bucket can be read by a person.
    pub launch_plan: String,
    /// Unix seconds of the newest scheduled time handled.
    pub handled_until: i64,
}

/// The request that fires `launch_plan` for `scheduled`: mode SCHEDULED, `scheduled_at`, and the
/// scheduled time as the kickoff input. The other inputs are left to metadata, which merges the
/// launch plan's defaults and fixed inputs exactly as for a manual run.
pub fn execution_request(launch_plan: &Identifier, spec: &ScheduleSpec, scheduled: i64) -> ExecutionCreateRequest {
    let at = prost_types::Timestamp { seconds: scheduled, nanos: 0 };
    let mut inputs = core::LiteralMap::default();
    if let Some(arg) = &spec.kickoff_arg {
        inputs.literals.insert(arg.clone(), datetime_literal(at));
    }
    ExecutionCreateRequest {
        project: launch_plan.project.clone(),
        domain: launch_plan.domain.clone(),
        name: execution_name(launch_plan, scheduled),
        spec: Some(ExecutionSpec {
            launch_plan: Some(Identifier { resource_type: ResourceType::LaunchPlan as i32, ..launch_plan.clone() }),
            metadata: Some(admin::ExecutionMetadata {
                mode: ExecutionMode::Scheduled as i32,
                principal: PRINCIPAL.into(),
                scheduled_at: Some(at),
                ..Default::default()
            }),
            ..Default::default()
        }),
        inputs: Some(inputs),
        org: launch_plan.org.clone(),
    }
}

fn datetime_literal(at: prost_types::Timestamp) -> core::Literal {
    core::Literal {
        value: Some(core::literal::Value::Scalar(Box::new(core::Scalar {
            value: Some(core::scalar::Value::Primitive(core::Primitive {
                value: Some(core::primitive::Value::Datetime(at)),
            })),
        }))),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::cadence::Cadence;

    fn lp(version: &str) -> Identifier {
        Identifier {
            resource_type: ResourceType::LaunchPlan as i32,
            project: "marketplace".into(),
            domain: "production".into(),
            name: "pipeline.nightly".into(),
            version: version.into(),
            org: String::new(),
        }
    }

    #[test]
    fn names_are_deterministic_flyte_shaped_and_distinct() {
        let a = execution_name(&lp("v1"), 1_700_000_000);
        assert_eq!(a, execution_name(&lp("v1"), 1_700_000_000));
        assert_eq!(a.len(), 20);
        assert!(a.starts_with('s') && a[1..].bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        assert_ne!(a, execution_name(&lp("v1"), 1_700_000_060));
        assert_ne!(a, execution_name(&lp("v2"), 1_700_000_000));
        // Pinned: a change of scheme would fire every time again after an upgrade.
        assert_eq!(a, "s370c4b4236facd36d0c");
    }

    #[test]
    fn progress_record_format_is_stable() {
        let p = Progress { launch_plan: display(&lp("v1")), handled_until: 1_700_000_000 };
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(json, r#"{"launch_plan":"marketplace/production/pipeline.nightly/v1","handled_until":1700000000}"#);
        assert_eq!(serde_json::from_str::<Progress>(&json).unwrap(), p);
        let key = progress_key(&lp("v1"));
        assert!(key.starts_with("lp.") && key.len() == 35);
        assert_ne!(key, progress_key(&lp("v2")));
    }

    #[test]
    fn request_is_scheduled_with_kickoff() {
        let spec = ScheduleSpec { cadence: Cadence::Every { seconds: 60 }, kickoff_arg: Some("kickoff".into()) };
        let req = execution_request(&lp("v1"), &spec, 1_700_000_000);
        assert_eq!((req.project.as_str(), req.domain.as_str()), ("marketplace", "production"));
        assert_eq!(req.name, execution_name(&lp("v1"), 1_700_000_000));
        let spec_sent = req.spec.unwrap();
        assert_eq!(spec_sent.launch_plan, Some(lp("v1")));
        let meta = spec_sent.metadata.unwrap();
        assert_eq!(meta.mode, ExecutionMode::Scheduled as i32);
        assert_eq!(meta.scheduled_at, Some(prost_types::Timestamp { seconds: 1_700_000_000, nanos: 0 }));
        let inputs = req.inputs.unwrap().literals;
        assert_eq!(inputs.len(), 1);
        assert_eq!(inputs["kickoff"], datetime_literal(prost_types::Timestamp { seconds: 1_700_000_000, nanos: 0 }));
        let without = ScheduleSpec { kickoff_arg: None, ..spec };
        assert!(execution_request(&lp("v1"), &without, 1).inputs.unwrap().literals.is_empty());
    }
}
