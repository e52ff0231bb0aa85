//! Registration rules for tasks, workflows and launch plans: what a valid spec is, when a
//! re-registration is identical, and what differs when it is not.

use aloft_proto::flyteidl::admin::{LaunchPlanSpec, TaskSpec, WorkflowSpec, schedule};
use aloft_proto::flyteidl::core::{Identifier, Parameter, ParameterMap, TypedInterface, parameter};
use prost::Message;
use sha2::{Digest, Sha256};

use crate::domain::ids::display;
use crate::error::{Error, Result};

/// Content digest of an encoded spec. Encodings are deterministic (ordered maps), so equal specs
/// have equal digests.
pub fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Names of the parts that differ between two versions of the same message, for
/// "already exists with a different definition" errors.
fn differing(parts: &[(&'static str, Vec<u8>, Vec<u8>)]) -> Vec<&'static str> {
    parts.iter().filter(|(_, a, b)| a != b).map(|(n, _, _)| *n).collect()
}

fn enc<M: Message>(m: &Option<M>) -> Vec<u8> {
    m.as_ref().map(|m| m.encode_to_vec()).unwrap_or_default()
}

/// The error for an identifier that exists with another definition.
pub fn conflict(kind: &str, id: &Identifier, parts: Vec<&'static str>) -> Error {
    let what = if parts.is_empty() { "its definition".to_string() } else { parts.join(", ") };
    Error::invalid(format!("{kind} {} already exists with a different structure: {what} differ", display(id)))
}

/// Checks a task spec against its identifier.
pub fn validate_task(id: &Identifier, spec: &TaskSpec) -> Result<()> {
    let t = spec
        .template
        .as_ref()
        .ok_or_else(|| Error::invalid(format!("task {}: spec.template is missing", display(id))))?;
    match &t.id {
        Some(tid) if tid == id => {}
        Some(tid) => {
            return Err(Error::invalid(format!(
                "task {}: spec.template.id {} does not match the request id",
                display(id),
                display(tid)
            )));
        }
        None => return Err(Error::invalid(format!("task {}: spec.template.id is missing", display(id)))),
    }
    if t.r#type.is_empty() {
        return Err(Error::invalid(format!("task {}: spec.template.type is empty", display(id))));
    }
    if t.interface.is_none() {
        return Err(Error::invalid(format!("task {}: spec.template.interface is missing", display(id))));
    }
    Ok(())
}

/// What differs between two task specs.
pub fn task_differences(a: &TaskSpec, b: &TaskSpec) -> Vec<&'static str> {
    let (ta, tb) = (a.template.clone().unwrap_or_default(), b.template.clone().unwrap_or_default());
    let mut parts = vec![
        ("type", ta.r#type.clone().into_bytes(), tb.r#type.clone().into_bytes()),
        ("interface", enc(&ta.interface), enc(&tb.interface)),
        ("metadata", enc(&ta.metadata), enc(&tb.metadata)),
        ("custom", enc(&ta.custom), enc(&tb.custom)),
        ("security_context", enc(&ta.security_context), enc(&tb.security_context)),
        ("config", format!("{:?}", ta.config).into_bytes(), format!("{:?}", tb.config).into_bytes()),
    ];
    match (&ta.target, &tb.target) {
        (Some(x), Some(y)) if x != y => parts.push(("container", vec![0], vec![1])),
        (None, Some(_)) | (Some(_), None) => parts.push(("container", vec![0], vec![1])),
        _ => {}
    }
    parts.push(("description", enc(&a.description), enc(&b.description)));
    differing(&parts)
}

/// Checks a workflow spec's identity before compiling it.
pub fn validate_workflow(id: &Identifier, spec: &WorkflowSpec) -> Result<()> {
    let t = spec
        .template
        .as_ref()
        .ok_or_else(|| Error::invalid(format!("workflow {}: spec.template is missing", display(id))))?;
    match &t.id {
        Some(tid) if tid == id => Ok(()),
        Some(tid) => Err(Error::invalid(format!(
            "workflow {}: spec.template.id {} does not match the request id",
            display(id),
            display(tid)
        ))),
        None => Err(Error::invalid(format!("workflow {}: spec.template.id is missing", display(id)))),
    }
}

/// Puts a workflow spec in canonical form before it is digested and stored: every node's
/// `upstream_node_ids` sorted and deduplicated. flytekit builds that list from a Python `set`
/// (`list(set(nodes))` in `flytekit/core/promise.py`), so unchanged code serializes it in varying
/// order; FlyteAdmin's compiler sorts it for the same reason (flytepropeller#323).
pub fn normalize_workflow(spec: &mut WorkflowSpec) {
    use aloft_proto::flyteidl::core::{Node, WorkflowTemplate, if_else_block, node::Target};
    fn node(n: &mut Node) {
        n.upstream_node_ids.sort();
        n.upstream_node_ids.dedup();
        match n.target.as_mut() {
            Some(Target::BranchNode(b)) => {
                let Some(ie) = b.if_else.as_mut() else { return };
                let cases = ie.case.iter_mut().map(|c| &mut **c).chain(ie.other.iter_mut());
                for then in cases.filter_map(|c| c.then_node.as_deref_mut()) {
                    node(then);
                }
                if let Some(if_else_block::Default::ElseNode(e)) = ie.default.as_mut() {
                    node(e);
                }
            }
            Some(Target::ArrayNode(a)) => {
                if let Some(sub) = a.node.as_deref_mut() {
                    node(sub);
                }
            }
            _ => {}
        }
    }
    fn template(t: &mut WorkflowTemplate) {
        t.nodes.iter_mut().for_each(node);
        if let Some(f) = t.failure_node.as_mut() {
            node(f);
        }
    }
    if let Some(t) = spec.template.as_mut() {
        template(t);
    }
    spec.sub_workflows.iter_mut().for_each(template);
}

/// What differs between two workflow specs.
pub fn workflow_differences(a: &WorkflowSpec, b: &WorkflowSpec) -> Vec<&'static str> {
    let (ta, tb) = (a.template.clone().unwrap_or_default(), b.template.clone().unwrap_or_default());
    let nodes =
        |t: &aloft_proto::flyteidl::core::WorkflowTemplate| t.nodes.iter().flat_map(|n| n.encode_to_vec()).collect();
    let outputs =
        |t: &aloft_proto::flyteidl::core::WorkflowTemplate| t.outputs.iter().flat_map(|n| n.encode_to_vec()).collect();
    let subs = |s: &WorkflowSpec| s.sub_workflows.iter().flat_map(|w| w.encode_to_vec()).collect();
    differing(&[
        ("interface", enc(&ta.interface), enc(&tb.interface)),
        ("nodes", nodes(&ta), nodes(&tb)),
        ("outputs", outputs(&ta), outputs(&tb)),
        ("metadata", enc(&ta.metadata), enc(&tb.metadata)),
        ("failure_node", enc(&ta.failure_node), enc(&tb.failure_node)),
        ("sub_workflows", subs(a), subs(b)),
        ("description", enc(&a.description), enc(&b.description)),
    ])
}

/// What differs between two launch plan specs.
pub fn launch_plan_differences(a: &LaunchPlanSpec, b: &LaunchPlanSpec) -> Vec<&'static str> {
    differing(&[
        ("workflow_id", enc(&a.workflow_id), enc(&b.workflow_id)),
        ("entity_metadata", enc(&a.entity_metadata), enc(&b.entity_metadata)),
        ("default_inputs", enc(&a.default_inputs), enc(&b.default_inputs)),
        ("fixed_inputs", enc(&a.fixed_inputs), enc(&b.fixed_inputs)),
        ("labels", enc(&a.labels), enc(&b.labels)),
        ("annotations", enc(&a.annotations), enc(&b.annotations)),
        ("raw_output_data_config", enc(&a.raw_output_data_config), enc(&b.raw_output_data_config)),
        ("security_context", enc(&a.security_context), enc(&b.security_context)),
        ("max_parallelism", a.max_parallelism.to_le_bytes().to_vec(), b.max_parallelism.to_le_bytes().to_vec()),
        ("envs", enc(&a.envs), enc(&b.envs)),
        ("overwrite_cache", vec![a.overwrite_cache as u8], vec![b.overwrite_cache as u8]),
    ])
}

/// Checks a launch plan against its workflow's interface and computes its expected inputs:
/// every workflow input that is not fixed, with the launch plan's default when it has one,
/// required otherwise.
pub fn validate_launch_plan(id: &Identifier, spec: &LaunchPlanSpec, wf: &TypedInterface) -> Result<ParameterMap> {
    let lp = display(id);
    let wf_inputs = wf.inputs.as_ref().map(|v| v.variables.clone()).unwrap_or_default();
    let defaults = spec.default_inputs.as_ref().map(|p| p.parameters.clone()).unwrap_or_default();
    let fixed = spec.fixed_inputs.as_ref().map(|l| l.literals.clone()).unwrap_or_default();
    for (name, param) in &defaults {
        let wf_var = wf_inputs.get(name).ok_or_else(|| {
            Error::invalid(format!("launch plan {lp}: default input `{name}` is not an input of the workflow"))
        })?;
        if let (Some(pt), Some(wt)) = (param.var.as_ref().and_then(|v| v.r#type.as_ref()), wf_var.r#type.as_ref())
            && !aloft_compiler::types_castable(pt, wt)
        {
            {
                return Err(Error::invalid(format!(
                    "launch plan {lp}: default input `{name}` has type {} but the workflow expects {}",
                    aloft_compiler::describe_type(pt),
                    aloft_compiler::describe_type(wt)
                )));
            }
        }
    }
    for name in fixed.keys() {
        if !wf_inputs.contains_key(name) {
            return Err(Error::invalid(format!(
                "launch plan {lp}: fixed input `{name}` is not an input of the workflow"
            )));
        }
        if defaults.contains_key(name) {
            return Err(Error::invalid(format!(
                "launch plan {lp}: input `{name}` is both a default and a fixed input"
            )));
        }
    }
    if let Some(meta) = &spec.entity_metadata {
        if let Some(s) = &meta.schedule {
            validate_schedule(&lp, s, &wf_inputs)?;
        }
        for (i, n) in meta.notifications.iter().enumerate() {
            if n.phases.is_empty() {
                return Err(Error::invalid(format!("launch plan {lp}: notification {i} lists no phases")));
            }
            use aloft_proto::flyteidl::admin::notification::Type;
            let recipients = match &n.r#type {
                Some(Type::Email(e)) => &e.recipients_email,
                Some(Type::Slack(s)) => &s.recipients_email,
                Some(Type::PagerDuty(p)) => &p.recipients_email,
                None => return Err(Error::invalid(format!("launch plan {lp}: notification {i} has no type"))),
            };
            if recipients.is_empty() {
                return Err(Error::invalid(format!("launch plan {lp}: notification {i} has no recipients")));
            }
        }
    }
    let mut expected = ParameterMap::default();
    for (name, var) in &wf_inputs {
        if fixed.contains_key(name) {
            continue;
        }
        let param = defaults.get(name).cloned().unwrap_or_else(|| Parameter {
            var: Some(var.clone()),
            behavior: Some(parameter::Behavior::Required(true)),
        });
        expected.parameters.insert(name.clone(), param);
    }
    Ok(expected)
}

fn validate_schedule(
    lp: &str,
    s: &aloft_proto::flyteidl::admin::Schedule,
    wf_inputs: &std::collections::BTreeMap<String, aloft_proto::flyteidl::core::Variable>,
) -> Result<()> {
    // The legacy 6-field `cron_expression` is deprecated in flyteidl but older clients still send it.
    #[allow(deprecated)]
    match &s.schedule_expression {
        Some(schedule::ScheduleExpression::CronExpression(e)) => check_cron(lp, e, 6)?,
        Some(schedule::ScheduleExpression::CronSchedule(c)) => check_cron(lp, &c.schedule, 5)?,
        Some(schedule::ScheduleExpression::Rate(r)) => {
            if r.value == 0 {
                return Err(Error::invalid(format!("launch plan {lp}: schedule rate must be greater than zero")));
            }
        }
        None => return Err(Error::invalid(format!("launch plan {lp}: schedule has no expression"))),
    }
    if !s.kickoff_time_input_arg.is_empty() {
        use aloft_proto::flyteidl::core::{SimpleType, literal_type::Type};
        let var = wf_inputs.get(&s.kickoff_time_input_arg).ok_or_else(|| {
            Error::invalid(format!(
                "launch plan {lp}: kickoff_time_input_arg `{}` is not an input of the workflow",
                s.kickoff_time_input_arg
            ))
        })?;
        let is_datetime = matches!(
            var.r#type.as_ref().and_then(|t| t.r#type.as_ref()),
            Some(Type::Simple(x)) if *x == SimpleType::Datetime as i32
        );
        if !is_datetime {
            return Err(Error::invalid(format!(
                "launch plan {lp}: kickoff_time_input_arg `{}` must be a datetime input",
                s.kickoff_time_input_arg
            )));
        }
    }
    Ok(())
}

/// Light syntax check of a cron expression: `fields` fields of cron characters, or an `@` alias.
fn check_cron(lp: &str, expr: &str, fields: usize) -> Result<()> {
    const ALIASES: &[&str] = &["@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"];
    let e = expr.trim();
    // flytekit's CronSchedule also accepts the aliases without the `@` ("daily", "hourly")
    let with_at = format!("@{}", e.trim_start_matches('@'));
    if ALIASES.contains(&with_at.as_str()) || e.starts_with("@every ") {
        return Ok(());
    }
    let parts: Vec<&str> = e.split_whitespace().collect();
    let ok_chars = parts
        .iter()
        .all(|p| p.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '*' | '/' | ',' | '-' | '?' | '#')));
    if parts.len() != fields || !ok_chars {
        return Err(Error::invalid(format!(
            "launch plan {lp}: schedule `{expr}` is not a valid cron expression ({fields} fields or an @alias)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cron_check() {
        assert!(check_cron("lp", "*/5 * * * *", 5).is_ok());
        assert!(check_cron("lp", "@hourly", 5).is_ok());
        assert!(check_cron("lp", "daily", 5).is_ok());
        assert!(check_cron("lp", "0 0 * * * ?", 6).is_ok());
        assert_eq!(
            check_cron("lp", "every minute", 5).unwrap_err().to_string(),
            "launch plan lp: schedule `every minute` is not a valid cron expression (5 fields or an @alias)"
        );
    }

    #[test]
    fn digests_are_hex_sha256() {
        assert_eq!(digest(b"").len(), 64);
        assert_ne!(digest(b"a"), digest(b"b"));
    }
}
