//! SLA breaches (`aloft.v1.SlaBreach`, announced by metadata while the execution still runs):
//! who hears about them and what the message says. Pure, like the rest of `domain`.
//!
//! A breach goes to the project's team channel (`slack-channel` label, else
//! `routing.default_channel`) whatever the `notify-<domain>` policy says about finished
//! executions: a late pipeline is what the owning team must hear about while it can still act.
//! Its delivery is keyed (execution, [`PHASE`], destination), so each execution gets one breach
//! message per destination, however many SLAs it breaks and however often the event arrives.

use std::collections::BTreeMap;

use aloft_proto::aloft::v1::SlaBreach;
use serde_json::json;

use super::message::{MAX_HEADER, MAX_SECTION, Message};
use super::notice::execution_link;
use super::routing::{Destination, LABEL_CHANNEL, LABEL_TEAM, Routing, RoutingConfig, project_channel};
use super::text::{escape, human_duration, truncate};

/// The pseudo-phase breach deliveries are recorded under.
pub const PHASE: &str = "SLA_BREACHED";

/// Where a breach of an execution of a project with these labels goes.
pub fn route(
    project_labels: &BTreeMap<String, String>,
    config: &RoutingConfig,
) -> (Option<Destination>, Option<String>) {
    match project_channel(project_labels, config) {
        Some(d) => (Some(d), None),
        None => (
            None,
            Some(format!("sla breach: the project has no {LABEL_CHANNEL} label and no routing.default_channel is set")),
        ),
    }
}

/// The same, as a [`Routing`] for the delivery loop.
pub fn routing(project_labels: &BTreeMap<String, String>, config: &RoutingConfig) -> Routing {
    let (destination, note) = route(project_labels, config);
    let mut out = Routing::default();
    if let Some(d) = destination {
        out.routes.push(super::routing::Route { destination: d, reasons: vec!["project channel (sla breach)".into()] });
    }
    out.notes.extend(note);
    out
}

fn rfc3339(t: &Option<prost_types::Timestamp>) -> String {
    t.as_ref()
        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, 0))
        .map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// The Slack message for a breach.
pub fn message(breach: &SlaBreach, project_labels: &BTreeMap<String, String>, console_url: &str) -> Message {
    let id = breach.execution_id.clone().unwrap_or_default();
    let name = format!("{}/{}/{}", id.project, id.domain, id.name);
    let link = execution_link(console_url, &id);
    let subject =
        breach.launch_plan.as_ref().map(|lp| lp.name.clone()).filter(|n| !n.is_empty()).unwrap_or(id.name.clone());
    let running_for = match (&breach.created_at, &breach.detected_at) {
        (Some(c), Some(d)) => Some(human_duration(u64::try_from(d.seconds - c.seconds).unwrap_or(0))),
        _ => None,
    };
    let rule = match breach.sla.as_str() {
        "max_duration" => format!("maximum duration {}", breach.declared),
        "deadline" => format!("deadline {} UTC", breach.declared),
        other => format!("{other} {}", breach.declared),
    };
    let declared_by = breach.declared_by.replace('_', " ");
    let mut summary = format!("*<{link}|{}>* is still running", escape(&name));
    if let Some(r) = &running_for {
        summary.push_str(&format!(" after {r}"));
    }
    summary.push_str(&format!(": it broke its SLA ({}, set on the {declared_by}).", escape(&rule)));
    let field = |title: &str, value: &str| {
        let value = if value.is_empty() { "—" } else { value };
        json!({ "type": "mrkdwn", "text": format!("*{}*\n{}", escape(title), escape(value)) })
    };
    let owner = project_labels.get(LABEL_TEAM).cloned().unwrap_or_default();
    let blocks = vec![
        json!({ "type": "header", "text": { "type": "plain_text", "emoji": true,
            "text": truncate(&format!(":alarm_clock: SLA breached: {subject}"), MAX_HEADER) } }),
        json!({ "type": "section", "text": { "type": "mrkdwn", "text": truncate(&summary, MAX_SECTION) } }),
        json!({ "type": "section", "fields": [
            field("Project", &id.project),
            field("Domain", &id.domain),
            field("Launch plan", breach.launch_plan.as_ref().map(|l| l.name.as_str()).unwrap_or("")),
            field("Owner", &owner),
            field("Created", &rfc3339(&breach.created_at)),
            field("Due", &rfc3339(&breach.due_at)),
        ] }),
        json!({ "type": "actions", "elements": [
            { "type": "button", "text": { "type": "plain_text", "text": "Open execution" }, "url": link }
        ] }),
    ];
    let text = truncate(&format!("SLA breached: {name} is still running ({rule})"), super::message::MAX_TEXT);
    Message { text, blocks }
}

#[cfg(test)]
mod tests {
    use aloft_proto::flyteidl::core::{Identifier, WorkflowExecutionIdentifier};

    use super::*;

    fn breach() -> SlaBreach {
        SlaBreach {
            execution_id: Some(WorkflowExecutionIdentifier {
                project: "ml".into(),
                domain: "production".into(),
                name: "abc".into(),
                org: String::new(),
            }),
            sla: "max_duration".into(),
            declared_by: "launch_plan".into(),
            declared: "30m".into(),
            created_at: Some(prost_types::Timestamp { seconds: 1_704_067_200, nanos: 0 }),
            detected_at: Some(prost_types::Timestamp { seconds: 1_704_067_200 + 1815, nanos: 0 }),
            due_at: Some(prost_types::Timestamp { seconds: 1_704_067_200 + 1800, nanos: 0 }),
            launch_plan: Some(Identifier { name: "train.daily".into(), ..Default::default() }),
            ..Default::default()
        }
    }

    #[test]
    fn breaches_go_to_the_project_channel() {
        let labels = BTreeMap::from([(LABEL_CHANNEL.to_string(), "ML-Alerts".to_string())]);
        let config = RoutingConfig::default();
        assert_eq!(route(&labels, &config), (Some(Destination::Channel("#ml-alerts".into())), None));
        let (none, note) = route(&BTreeMap::new(), &config);
        assert!(none.is_none() && note.is_some());
        let fallback = RoutingConfig { default_channel: Some("#ops".into()), ..Default::default() };
        assert_eq!(route(&BTreeMap::new(), &fallback).0, Some(Destination::Channel("#ops".into())));
    }

    #[test]
    fn the_message_says_what_was_due() {
        let labels = BTreeMap::from([(LABEL_TEAM.to_string(), "ml-platform".to_string())]);
        let m = message(&breach(), &labels, "http://console");
        assert_eq!(m.text, "SLA breached: ml/production/abc is still running (maximum duration 30m)");
        let body = m.body(None).to_string();
        assert!(body.contains(":alarm_clock: SLA breached: train.daily"), "{body}");
        assert!(
            body.contains(
                "is still running after 30m 15s: it broke its SLA (maximum duration 30m, set on the launch plan)."
            ),
            "{body}"
        );
        assert!(body.contains("2024-01-01T00:30:00Z"), "{body}");
        assert!(body.contains("ml-platform"), "{body}");
        assert!(body.contains("http://console/console/projects/ml/domains/production/executions/abc"), "{body}");
    }
}
