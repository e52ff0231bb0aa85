//! Who hears about a finished execution: the execution's or launch plan's notification rules,
//! plus the project's own policy from its labels. Pure: the caller fetched the spec, the launch
//! plan and the project labels.
//!
//! Precedence (see docs/adr/0008-notifier.md):
//! - the execution's `notification_overrides` replace the launch plan's rules; `disable_all`
//!   silences both;
//! - the project policy (`notify-<domain>` label, else the configured default for the domain) is
//!   the team's floor and applies even under `disable_all`: "always notify failures in
//!   production" must not be switched off by whoever launched the run;
//! - the same destination reached twice gets one message.

use std::collections::BTreeMap;

use aloft_proto::flyteidl::admin::{ExecutionSpec, LaunchPlan, Notification, execution_spec, notification};
use serde::{Deserialize, Serialize};

use super::notice::is_failure;

/// Project label naming the owning team.
pub const LABEL_TEAM: &str = "team";
/// Project label naming the team's Slack channel (a name without `#`, or a channel id).
pub const LABEL_CHANNEL: &str = "slack-channel";
/// Project label prefix of the per-domain policy: `notify-<domain>` = `failures|all|none`.
pub const LABEL_POLICY_PREFIX: &str = "notify-";

/// Where a message goes, as routed; [`Destination::key`] is the de-duplication key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "id")]
pub enum Destination {
    /// A channel: `#name` (lower case) or a channel id (`C0123ABCD`).
    Channel(String),
    /// A person, by Slack user id (`U0123ABCD`): a direct message from the app.
    User(String),
    /// A recipient that names nobody the notifier can reach (an email or `@handle` not in
    /// `slack.users`); recorded as a failed delivery so someone notices.
    Unresolved(String),
}

impl Destination {
    /// `channel:#ml-alerts`, `channel:C0123ABCD`, `user:U0123ABCD`, `recipient:alice@example.com`.
    pub fn key(&self) -> String {
        match self {
            Destination::Channel(c) => format!("channel:{c}"),
            Destination::User(u) => format!("user:{u}"),
            Destination::Unresolved(r) => format!("recipient:{r}"),
        }
    }
}

/// What a project wants to hear about in one domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// FAILED and TIMED_OUT.
    Failures,
    /// Every terminal phase.
    All,
    /// Nothing from the project policy (rules still apply).
    #[default]
    None,
}

impl Policy {
    /// `failures`, `all` or `none`.
    pub fn parse(text: &str) -> Option<Policy> {
        match text.trim().to_ascii_lowercase().as_str() {
            "failures" => Some(Policy::Failures),
            "all" => Some(Policy::All),
            "none" => Some(Policy::None),
            _ => None,
        }
    }

    fn wants(self, phase: &str) -> bool {
        match self {
            Policy::Failures => is_failure(phase),
            Policy::All => true,
            Policy::None => false,
        }
    }
}

/// The routing settings from the notifier's configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutingConfig {
    /// Policy per domain when the project has no `notify-<domain>` label.
    pub default_policy: BTreeMap<String, Policy>,
    /// Channel for project policies when the project has no `slack-channel` label.
    pub default_channel: Option<String>,
    /// People by email or `@handle` (lower case) -> Slack user id.
    pub users: BTreeMap<String, String>,
}

/// The notification rules in force for one execution.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Rules {
    /// `disable_all` was set on the execution.
    pub disabled: bool,
    /// The rules: the execution's overrides, else the launch plan's.
    pub notifications: Vec<Notification>,
    /// Where they came from: `execution`, `launch plan` or `none`.
    pub source: &'static str,
}

/// The rules in force: an execution's overrides replace its launch plan's.
pub fn rules(spec: Option<&ExecutionSpec>, launch_plan: Option<&LaunchPlan>) -> Rules {
    match spec.and_then(|s| s.notification_overrides.as_ref()) {
        Some(execution_spec::NotificationOverrides::DisableAll(true)) => {
            Rules { disabled: true, notifications: Vec::new(), source: "execution" }
        }
        Some(execution_spec::NotificationOverrides::Notifications(list)) => {
            Rules { disabled: false, notifications: list.notifications.clone(), source: "execution" }
        }
        _ => {
            let from_lp = launch_plan
                .and_then(|lp| lp.spec.as_ref())
                .and_then(|s| s.entity_metadata.as_ref())
                .map(|m| m.notifications.clone())
                .unwrap_or_default();
            let source = if from_lp.is_empty() { "none" } else { "launch plan" };
            Rules { disabled: false, notifications: from_lp, source }
        }
    }
}

/// One destination and why it was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Where.
    pub destination: Destination,
    /// Why (`launch plan rule`, `project policy notify-production=failures`), for the record.
    pub reasons: Vec<String>,
}

/// Destinations for one terminal phase, and notes on what could not be honoured.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Routing {
    /// In a stable order (rules first, then the project policy), without duplicates.
    pub routes: Vec<Route>,
    /// Things an operator may want to know (a bad label value, a policy with no channel).
    pub notes: Vec<String>,
}

impl Routing {
    fn add(&mut self, destination: Destination, reason: String) {
        match self.routes.iter_mut().find(|r| r.destination == destination) {
            Some(r) => {
                if !r.reasons.contains(&reason) {
                    r.reasons.push(reason)
                }
            }
            None => self.routes.push(Route { destination, reasons: vec![reason] }),
        }
    }
}

/// Routes one terminal `phase` (its name and flyteidl number) of an execution in `domain`.
pub fn route(
    phase: &str,
    phase_code: i32,
    domain: &str,
    rules: &Rules,
    project_labels: &BTreeMap<String, String>,
    config: &RoutingConfig,
) -> Routing {
    let mut out = Routing::default();
    if !rules.disabled {
        for n in &rules.notifications {
            if !n.phases.contains(&phase_code) {
                continue;
            }
            match &n.r#type {
                Some(notification::Type::Slack(slack)) => {
                    for r in &slack.recipients_email {
                        if let Some(d) = parse_recipient(r, &config.users) {
                            out.add(d, format!("{} rule", rules.source));
                        }
                    }
                }
                Some(notification::Type::Email(_)) => out.notes.push("email notifications are not delivered".into()),
                Some(notification::Type::PagerDuty(_)) => {
                    out.notes.push("pagerduty notifications are not delivered".into())
                }
                None => {}
            }
        }
    }

    let label = format!("{LABEL_POLICY_PREFIX}{domain}");
    let (policy, policy_source) = match project_labels.get(&label) {
        Some(v) => match Policy::parse(v) {
            Some(p) => (p, format!("{label}={v}")),
            None => {
                out.notes.push(format!("project label {label}={v:?} is not failures, all or none; using the default"));
                default_policy(domain, config)
            }
        },
        None => default_policy(domain, config),
    };
    if policy.wants(phase) {
        match project_channel(project_labels, config) {
            Some(d) => out.add(d, format!("project policy {policy_source}")),
            None => out.notes.push(format!(
                "project policy {policy_source} wants {phase} but the project has no {LABEL_CHANNEL} label and no \
                 slack.default_channel is set"
            )),
        }
    }
    out
}

/// The project's team channel: its `slack-channel` label, else `routing.default_channel`, as a
/// destination (None when neither is set or the text is not a channel or user).
pub fn project_channel(project_labels: &BTreeMap<String, String>, config: &RoutingConfig) -> Option<Destination> {
    project_labels
        .get(LABEL_CHANNEL)
        .filter(|c| !c.trim().is_empty())
        .cloned()
        .or_else(|| config.default_channel.clone())
        .and_then(|c| parse_recipient(&c, &config.users))
}

fn default_policy(domain: &str, config: &RoutingConfig) -> (Policy, String) {
    let p = config.default_policy.get(domain).copied().unwrap_or_default();
    (p, format!("default for {domain}: {}", policy_name(p)))
}

fn policy_name(p: Policy) -> &'static str {
    match p {
        Policy::Failures => "failures",
        Policy::All => "all",
        Policy::None => "none",
    }
}

/// Slack ids are upper-case letters and digits, starting with a type letter.
fn is_slack_id(s: &str, kinds: &[char]) -> bool {
    s.len() >= 8 && s.starts_with(kinds) && s.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

/// A recipient from a notification rule, a project label or a hook answer:
/// - `#name` or a bare `name` -> the channel `#name`; `C…`/`G…`/`D…` ids -> that channel;
/// - `U…`/`W…` ids, also as `@U…` -> a direct message to that person;
/// - an email or `@handle` -> the person `slack.users` maps it to, else unresolved.
///
/// Empty text names nobody.
pub fn parse_recipient(text: &str, users: &BTreeMap<String, String>) -> Option<Destination> {
    let t = text.trim();
    if t.is_empty() {
        return None;
    }
    let lookup = |key: &str| users.get(&key.to_lowercase()).cloned();
    Some(if let Some(name) = t.strip_prefix('#') {
        Destination::Channel(format!("#{}", name.to_lowercase()))
    } else if let Some(handle) = t.strip_prefix('@') {
        if is_slack_id(handle, &['U', 'W']) {
            Destination::User(handle.to_string())
        } else {
            lookup(t).map(Destination::User).unwrap_or_else(|| Destination::Unresolved(t.to_string()))
        }
    } else if is_slack_id(t, &['C', 'G', 'D']) {
        Destination::Channel(t.to_string())
    } else if is_slack_id(t, &['U', 'W']) {
        Destination::User(t.to_string())
    } else if t.contains('@') {
        lookup(t).map(Destination::User).unwrap_or_else(|| Destination::Unresolved(t.to_string()))
    } else {
        Destination::Channel(format!("#{}", t.to_lowercase()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aloft_proto::flyteidl::admin::{
        LaunchPlanMetadata, LaunchPlanSpec, NotificationList, SlackNotification, notification,
    };
    use aloft_proto::flyteidl::core::workflow_execution::Phase;

    fn slack(phases: &[Phase], to: &[&str]) -> Notification {
        Notification {
            phases: phases.iter().map(|p| *p as i32).collect(),
            r#type: Some(notification::Type::Slack(SlackNotification {
                recipients_email: to.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            })),
        }
    }

    fn lp(notifications: Vec<Notification>) -> LaunchPlan {
        LaunchPlan {
            spec: Some(LaunchPlanSpec {
                entity_metadata: Some(LaunchPlanMetadata { notifications, ..Default::default() }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn keys(r: &Routing) -> Vec<String> {
        r.routes.iter().map(|r| r.destination.key()).collect()
    }

    fn config() -> RoutingConfig {
        RoutingConfig {
            default_policy: [("production".to_string(), Policy::Failures)].into(),
            default_channel: None,
            users: [("alice@example.com".to_string(), "U0ALICE01".to_string())].into(),
        }
    }

    #[test]
    fn recipients_map_to_channels_and_people() {
        let users = config().users;
        let p = |s| parse_recipient(s, &users);
        assert_eq!(p("#ML-Alerts"), Some(Destination::Channel("#ml-alerts".into())));
        assert_eq!(p("ml-alerts"), Some(Destination::Channel("#ml-alerts".into())));
        assert_eq!(p("C0123ABCD"), Some(Destination::Channel("C0123ABCD".into())));
        assert_eq!(p("U0123ABCD"), Some(Destination::User("U0123ABCD".into())));
        assert_eq!(p("@U0123ABCD"), Some(Destination::User("U0123ABCD".into())));
        assert_eq!(p("Alice@Example.com"), Some(Destination::User("U0ALICE01".into())));
        assert_eq!(p("bob@example.com"), Some(Destination::Unresolved("bob@example.com".into())));
        assert_eq!(p("@bob"), Some(Destination::Unresolved("@bob".into())));
        assert_eq!(p("  "), None);
    }

    #[test]
    fn launch_plan_rules_match_their_phases() {
        let rules = rules(None, Some(&lp(vec![slack(&[Phase::Failed], &["#oncall", "alice@example.com"])])));
        assert_eq!(rules.source, "launch plan");
        let failed = route("FAILED", Phase::Failed as i32, "development", &rules, &labels(&[]), &config());
        assert_eq!(keys(&failed), vec!["channel:#oncall", "user:U0ALICE01"]);
        let ok = route("SUCCEEDED", Phase::Succeeded as i32, "development", &rules, &labels(&[]), &config());
        assert!(ok.routes.is_empty());
    }

    #[test]
    fn execution_overrides_replace_launch_plan_rules() {
        let spec = ExecutionSpec {
            notification_overrides: Some(execution_spec::NotificationOverrides::Notifications(NotificationList {
                notifications: vec![slack(&[Phase::Succeeded], &["#mine"])],
            })),
            ..Default::default()
        };
        let rules = rules(Some(&spec), Some(&lp(vec![slack(&[Phase::Succeeded], &["#theirs"])])));
        let r = route("SUCCEEDED", Phase::Succeeded as i32, "development", &rules, &labels(&[]), &config());
        assert_eq!(keys(&r), vec!["channel:#mine"]);
        assert_eq!(r.routes[0].reasons, vec!["execution rule"]);
    }

    #[test]
    fn disable_all_silences_rules_but_not_the_project_floor() {
        let spec = ExecutionSpec {
            notification_overrides: Some(execution_spec::NotificationOverrides::DisableAll(true)),
            ..Default::default()
        };
        let rules = rules(Some(&spec), Some(&lp(vec![slack(&[Phase::Failed], &["#theirs"])])));
        let project = labels(&[("slack-channel", "ml-team")]);
        let dev = route("FAILED", Phase::Failed as i32, "development", &rules, &project, &config());
        assert!(dev.routes.is_empty(), "{dev:?}");
        let prod = route("FAILED", Phase::Failed as i32, "production", &rules, &project, &config());
        assert_eq!(keys(&prod), vec!["channel:#ml-team"]);
        assert_eq!(prod.routes[0].reasons, vec!["project policy default for production: failures"]);
    }

    #[test]
    fn project_labels_set_the_policy_and_duplicates_merge() {
        let rules = rules(None, Some(&lp(vec![slack(&[Phase::Succeeded], &["#ml-team"])])));
        let project = labels(&[("slack-channel", "ml-team"), ("notify-development", "all")]);
        let r = route("SUCCEEDED", Phase::Succeeded as i32, "development", &rules, &project, &config());
        assert_eq!(keys(&r), vec!["channel:#ml-team"]);
        assert_eq!(r.routes[0].reasons, vec!["launch plan rule", "project policy notify-development=all"]);
        let quiet = labels(&[("slack-channel", "ml-team"), ("notify-production", "none")]);
        let r = route("FAILED", Phase::Failed as i32, "production", &Rules::default(), &quiet, &config());
        assert!(r.routes.is_empty(), "the label overrides the configured default");
    }

    #[test]
    fn bad_labels_and_missing_channels_are_noted() {
        let project = labels(&[("notify-production", "sometimes")]);
        let r = route("FAILED", Phase::Failed as i32, "production", &Rules::default(), &project, &config());
        assert!(r.routes.is_empty());
        assert_eq!(r.notes.len(), 2, "{:?}", r.notes);
        let mut with_default = config();
        with_default.default_channel = Some("#platform".into());
        let r = route("TIMED_OUT", Phase::TimedOut as i32, "production", &Rules::default(), &project, &with_default);
        assert_eq!(keys(&r), vec!["channel:#platform"]);
        let r = route("ABORTED", Phase::Aborted as i32, "production", &Rules::default(), &project, &with_default);
        assert!(r.routes.is_empty(), "an abort is not a failure");
    }
}
