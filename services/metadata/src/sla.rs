//! SLAs of executions: a maximum duration or a completion deadline, declared on the execution,
//! its launch plan or its project, and a periodic sweep that finds unfinished executions past
//! theirs while they still run, counts each breach once (`aloft_sla_breaches_total`) and
//! announces it on the bus (`aloft.v1.SlaBreach`, for the notifier).
//!
//! Declarations (first found wins, per kind: execution, then launch plan, then project):
//!
//! | where | key | value |
//! |---|---|---|
//! | execution or launch plan, label or annotation | `aloft.sla/max-duration` | `30m`, `2h 30m` (humantime) |
//! | execution or launch plan, label or annotation | `aloft.sla/deadline` | `06:30` or `0630` (UTC) |
//! | project label | `sla-max-duration` | as above |
//! | project label | `sla-deadline` | `0630` (labels cannot hold `:`) |
//!
//! A maximum duration counts from the execution's creation (queue time included: it is what the
//! people waiting see). A deadline is the first such time of day (UTC) after the creation. An
//! unparsable value is logged and ignored.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use aloft_bus::Bus;
use aloft_proto::aloft::v1::{Envelope, SlaBreach, envelope::Body};
use aloft_proto::flyteidl::admin::{ExecutionSpec, LaunchPlanSpec};
use aloft_proto::flyteidl::core::{Identifier, ResourceType, WorkflowExecutionIdentifier};
use prost::Message as _;
use serde::{Deserialize, Serialize};
use sqlx::Row as _;
use tokio::task::JoinHandle;

use crate::app::{App, now_micros, timestamp};
use crate::error::{Error, Result};
use crate::metrics::{Metrics, SlaLabels};

/// Execution/launch-plan label or annotation: the longest an execution may take.
pub const KEY_MAX_DURATION: &str = "aloft.sla/max-duration";
/// Execution/launch-plan label or annotation: the UTC time of day it must be finished by.
pub const KEY_DEADLINE: &str = "aloft.sla/deadline";
/// Project label: the longest an execution of the project may take.
pub const PROJECT_MAX_DURATION: &str = "sla-max-duration";
/// Project label: the UTC time of day executions of the project must be finished by.
pub const PROJECT_DEADLINE: &str = "sla-deadline";

/// The sweep (`[sla]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlaConfig {
    /// Sweep unfinished executions for breaches (needs the bus).
    pub enabled: bool,
    /// How often.
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
    /// At most this many unfinished executions per sweep, oldest first.
    pub batch: u32,
}

impl Default for SlaConfig {
    fn default() -> Self {
        SlaConfig { enabled: true, sweep_interval: Duration::from_secs(15), batch: 1000 }
    }
}

impl SlaConfig {
    /// Checks the values, naming the keys.
    pub fn validate(&self) -> std::result::Result<(), aloft_runtime::ConfigError> {
        if self.sweep_interval.is_zero() {
            return Err(aloft_runtime::ConfigError::invalid("sla.sweep_interval", "must be greater than zero"));
        }
        if self.batch == 0 {
            return Err(aloft_runtime::ConfigError::invalid("sla.batch", "must be at least 1"));
        }
        Ok(())
    }
}

/// Which SLA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A longest duration.
    MaxDuration,
    /// A time of day to be finished by.
    Deadline,
}

impl Kind {
    /// `max_duration` or `deadline`: the metric label and the bus field.
    pub fn label(self) -> &'static str {
        match self {
            Kind::MaxDuration => "max_duration",
            Kind::Deadline => "deadline",
        }
    }
}

/// The rule itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Finished at most this long after creation.
    MaxDuration(Duration),
    /// Finished by this minute of the day (UTC), the first one after creation.
    Deadline {
        /// Minutes after midnight UTC.
        minute_of_day: u32,
    },
}

/// One SLA in force for an execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declared {
    /// The rule.
    pub rule: Rule,
    /// `execution`, `launch_plan` or `project`.
    pub source: &'static str,
    /// The value as written.
    pub text: String,
}

impl Declared {
    /// Which kind of SLA.
    pub fn kind(&self) -> Kind {
        match self.rule {
            Rule::MaxDuration(_) => Kind::MaxDuration,
            Rule::Deadline { .. } => Kind::Deadline,
        }
    }

    /// When an execution created at `created_at` (unix microseconds) must be finished.
    pub fn due_at(&self, created_at: i64) -> i64 {
        match self.rule {
            Rule::MaxDuration(d) => created_at.saturating_add(i64::try_from(d.as_micros()).unwrap_or(i64::MAX)),
            Rule::Deadline { minute_of_day } => {
                const DAY: i64 = 86_400_000_000;
                let day_start = created_at.div_euclid(DAY) * DAY;
                let due = day_start + i64::from(minute_of_day) * 60_000_000;
                if due > created_at { due } else { due + DAY }
            }
        }
    }
}

/// `30m`, `1h 30m`: a positive duration.
pub fn parse_max_duration(text: &str) -> std::result::Result<Duration, String> {
    match humantime::parse_duration(text.trim()) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err(format!("`{text}` is not a positive duration")),
        Err(e) => Err(format!("`{text}` is not a duration like 30m or 2h: {e}")),
    }
}

/// `06:30` or `0630` (UTC): minutes after midnight.
pub fn parse_deadline(text: &str) -> std::result::Result<u32, String> {
    let t = text.trim();
    let (h, m) = match t.split_once(':') {
        Some((h, m)) => (h, m),
        None if t.len() == 4 => t.split_at(2),
        None => return Err(format!("`{text}` is not a UTC time of day like 06:30 or 0630")),
    };
    let digits = |s: &str| s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(h) || !digits(m) {
        return Err(format!("`{text}` is not a UTC time of day like 06:30 or 0630"));
    }
    let (h, m): (u32, u32) = (h.parse().unwrap_or(99), m.parse().unwrap_or(99));
    if h > 23 || m > 59 {
        return Err(format!("`{text}` is not a time of day (00:00 to 23:59)"));
    }
    Ok(h * 60 + m)
}

/// Labels and annotations of one level, merged (labels first).
#[derive(Debug, Clone, Default)]
pub struct Level {
    /// Keys and values.
    pub values: BTreeMap<String, String>,
}

/// The SLAs in force, from the execution's, launch plan's and project's declarations, with a
/// note for each value that does not parse.
pub fn declared(execution: &Level, launch_plan: &Level, project: &Level) -> (Vec<Declared>, Vec<String>) {
    let mut out = Vec::new();
    let mut notes = Vec::new();
    let levels = [
        ("execution", execution, KEY_MAX_DURATION, KEY_DEADLINE),
        ("launch_plan", launch_plan, KEY_MAX_DURATION, KEY_DEADLINE),
        ("project", project, PROJECT_MAX_DURATION, PROJECT_DEADLINE),
    ];
    let mut found_max = false;
    let mut found_deadline = false;
    for (source, level, max_key, deadline_key) in levels {
        if !found_max && let Some(text) = level.values.get(max_key) {
            match parse_max_duration(text) {
                Ok(d) => {
                    out.push(Declared { rule: Rule::MaxDuration(d), source, text: text.clone() });
                    found_max = true;
                }
                Err(e) => notes.push(format!("{source} {max_key}: {e}")),
            }
        }
        if !found_deadline && let Some(text) = level.values.get(deadline_key) {
            match parse_deadline(text) {
                Ok(m) => {
                    out.push(Declared { rule: Rule::Deadline { minute_of_day: m }, source, text: text.clone() });
                    found_deadline = true;
                }
                Err(e) => notes.push(format!("{source} {deadline_key}: {e}")),
            }
        }
    }
    (out, notes)
}

/// The declared SLAs an execution created at `created_at` has broken by `now`, with when each
/// was due.
pub fn breached(declared: &[Declared], created_at: i64, now: i64) -> Vec<(Declared, i64)> {
    declared.iter().map(|d| (d.clone(), d.due_at(created_at))).filter(|(_, due)| now > *due).collect()
}

/// The bus message announcing a breach.
pub fn breach_envelope(
    id: &WorkflowExecutionIdentifier,
    launch_plan: Option<Identifier>,
    phase: i32,
    created_at: i64,
    breach: &(Declared, i64),
    now: i64,
) -> Envelope {
    let (declared, due) = breach;
    let kind = declared.kind().label();
    Envelope {
        id: format!("sla/{}/{}/{}/{kind}", id.project, id.domain, id.name),
        created_at: Some(timestamp(now)),
        source: "metadata".into(),
        body: Some(Body::SlaBreach(SlaBreach {
            execution_id: Some(id.clone()),
            sla: kind.into(),
            declared_by: declared.source.into(),
            max_duration: match declared.rule {
                Rule::MaxDuration(d) => prost_types::Duration::try_from(d).ok(),
                Rule::Deadline { .. } => None,
            },
            due_at: Some(timestamp(*due)),
            created_at: Some(timestamp(created_at)),
            detected_at: Some(timestamp(now)),
            launch_plan,
            phase,
            declared: declared.text.clone(),
        })),
    }
}

/// Phases of executions that are not finished (flyteidl WorkflowExecution.Phase: UNDEFINED,
/// QUEUED, RUNNING, SUCCEEDING, FAILING, ABORTING).
const UNFINISHED: &str = "0, 1, 2, 3, 5, 9";

/// Starts the sweep; it stops at `shutdown`.
pub fn spawn(
    app: App,
    bus: Bus,
    metrics: Metrics,
    config: SlaConfig,
    shutdown: aloft_runtime::Shutdown,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(config.sweep_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = ticks.tick() => {}
            }
            match sweep(&app, &bus, &metrics, config.batch, now_micros()).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(breaches = n, "sla breaches announced"),
                Err(e) => tracing::warn!(error = %e, "sla sweep failed; retrying at the next one"),
            }
        }
    })
}

/// One sweep: the oldest `batch` unfinished executions, each checked against its SLAs; every
/// breach not seen before is announced, then recorded and counted. Returns how many were new.
pub async fn sweep(app: &App, bus: &Bus, metrics: &Metrics, batch: u32, now: i64) -> Result<usize> {
    let sql = format!(
        "SELECT project, domain, name, launch_plan, phase, spec, created_at FROM executions \
         WHERE phase IN ({UNFINISHED}) ORDER BY created_at ASC LIMIT {batch}"
    );
    let rows = sqlx::query(&sql).fetch_all(app.store.pool()).await?;
    let mut launch_plans: HashMap<Identifier, Level> = HashMap::new();
    let mut projects: HashMap<String, Level> = HashMap::new();
    let mut new = 0;
    for r in rows {
        let id = WorkflowExecutionIdentifier {
            project: r.try_get(0)?,
            domain: r.try_get(1)?,
            name: r.try_get(2)?,
            org: String::new(),
        };
        let lp_name: String = r.try_get(3)?;
        let phase: i32 = r.try_get(4)?;
        let spec_bytes: Vec<u8> = r.try_get(5)?;
        let created_at: i64 = r.try_get(6)?;
        let spec = ExecutionSpec::decode(spec_bytes.as_slice()).unwrap_or_default();
        let execution = level(spec.labels.map(|l| l.values), spec.annotations.map(|a| a.values));
        let launch_plan =
            match spec.launch_plan.clone().filter(|lp| lp.resource_type == ResourceType::LaunchPlan as i32) {
                Some(lp) => match launch_plans.get(&lp) {
                    Some(l) => l.clone(),
                    None => {
                        let l = launch_plan_level(app, &lp).await?;
                        launch_plans.insert(lp, l.clone());
                        l
                    }
                },
                None => Level::default(),
            };
        let project = match projects.get(&id.project) {
            Some(l) => l.clone(),
            None => {
                let l = project_level(app, &id.project).await?;
                projects.insert(id.project.clone(), l.clone());
                l
            }
        };
        let (slas, notes) = declared(&execution, &launch_plan, &project);
        for note in notes {
            tracing::debug!(execution = %id.name, project = %id.project, note, "sla declaration ignored");
        }
        for breach in breached(&slas, created_at, now) {
            let kind = breach.0.kind().label();
            if recorded(app, &id, kind).await? {
                continue;
            }
            // Announce first: a crash before the record means announcing again, which the
            // stream's duplicate window and the notifier's delivery keys absorb.
            let envelope = breach_envelope(&id, spec.launch_plan.clone(), phase, created_at, &breach, now);
            bus.publish(&envelope).await.map_err(|e| Error::Internal(format!("cannot announce sla breach: {e}")))?;
            if record(app, &id, kind, breach.1, now).await? {
                new += 1;
                metrics
                    .sla_breaches
                    .get_or_create(&SlaLabels {
                        project: id.project.clone(),
                        domain: id.domain.clone(),
                        launch_plan: lp_name.clone(),
                        sla: kind.into(),
                    })
                    .inc();
                tracing::warn!(
                    execution = %id.name, project = %id.project, domain = %id.domain, sla = kind,
                    declared = %breach.0.text, declared_by = breach.0.source, "sla breached"
                );
            }
        }
    }
    Ok(new)
}

fn level(labels: Option<BTreeMap<String, String>>, annotations: Option<BTreeMap<String, String>>) -> Level {
    let mut values = BTreeMap::new();
    // labels win over annotations with the same key
    for (k, v) in annotations.into_iter().flatten().chain(labels.into_iter().flatten()) {
        values.insert(k, v);
    }
    Level { values }
}

async fn launch_plan_level(app: &App, lp: &Identifier) -> Result<Level> {
    let row =
        app.store.get_entity(ResourceType::LaunchPlan as i32, &lp.project, &lp.domain, &lp.name, &lp.version).await?;
    Ok(match row {
        Some(row) => {
            let spec = LaunchPlanSpec::decode(row.spec.as_slice()).unwrap_or_default();
            level(spec.labels.map(|l| l.values), spec.annotations.map(|a| a.values))
        }
        None => Level::default(),
    })
}

async fn project_level(app: &App, project: &str) -> Result<Level> {
    Ok(match app.store.get_project(project).await? {
        Some(row) => {
            let labels = aloft_proto::flyteidl::admin::Labels::decode(row.labels.as_slice()).unwrap_or_default();
            Level { values: labels.values }
        }
        None => Level::default(),
    })
}

async fn recorded(app: &App, id: &WorkflowExecutionIdentifier, sla: &str) -> Result<bool> {
    let row =
        sqlx::query("SELECT 1 FROM sla_breaches WHERE project = $1 AND domain = $2 AND execution = $3 AND sla = $4")
            .bind(&id.project)
            .bind(&id.domain)
            .bind(&id.name)
            .bind(sla)
            .fetch_optional(app.store.pool())
            .await?;
    Ok(row.is_some())
}

/// Records a breach; false when another sweep (or replica) recorded it first.
async fn record(app: &App, id: &WorkflowExecutionIdentifier, sla: &str, due_at: i64, now: i64) -> Result<bool> {
    let done = sqlx::query(
        "INSERT INTO sla_breaches (project, domain, execution, sla, due_at, detected_at) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
    )
    .bind(&id.project)
    .bind(&id.domain)
    .bind(&id.name)
    .bind(sla)
    .bind(due_at)
    .bind(now)
    .execute(app.store.pool())
    .await?;
    Ok(done.rows_affected() == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lvl(pairs: &[(&str, &str)]) -> Level {
        Level { values: pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect() }
    }

    #[test]
    fn parses_durations_and_times_of_day() {
        assert_eq!(parse_max_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_max_duration(" 1h 30m "), Ok(Duration::from_secs(5400)));
        assert!(parse_max_duration("0s").is_err());
        assert!(parse_max_duration("soon").is_err());
        assert_eq!(parse_deadline("06:30"), Ok(390));
        assert_eq!(parse_deadline("0630"), Ok(390));
        assert_eq!(parse_deadline("23:59"), Ok(1439));
        for bad in ["24:00", "6:30", "0660", "630", "06-30", ""] {
            assert!(parse_deadline(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn execution_beats_launch_plan_beats_project_per_kind() {
        let (d, notes) = declared(
            &lvl(&[(KEY_MAX_DURATION, "5s")]),
            &lvl(&[(KEY_MAX_DURATION, "1h"), (KEY_DEADLINE, "bad")]),
            &lvl(&[(PROJECT_MAX_DURATION, "2h"), (PROJECT_DEADLINE, "0630")]),
        );
        assert_eq!(
            d,
            vec![
                Declared { rule: Rule::MaxDuration(Duration::from_secs(5)), source: "execution", text: "5s".into() },
                Declared { rule: Rule::Deadline { minute_of_day: 390 }, source: "project", text: "0630".into() },
            ]
        );
        assert_eq!(notes.len(), 1);
        assert!(notes[0].starts_with("launch_plan aloft.sla/deadline: `bad`"), "{notes:?}");
        // project keys do not apply on executions, and the reverse
        let (d, _) =
            declared(&lvl(&[(PROJECT_MAX_DURATION, "1m")]), &Level::default(), &lvl(&[(KEY_MAX_DURATION, "1m")]));
        assert!(d.is_empty());
    }

    #[test]
    fn due_times_and_breaches() {
        const S: i64 = 1_000_000;
        let max = Declared { rule: Rule::MaxDuration(Duration::from_secs(30)), source: "project", text: "30s".into() };
        assert_eq!(max.due_at(100 * S), 130 * S);
        // 2024-01-01T05:00Z created, deadline 06:30 the same day; 07:00 created: the next day's
        let day = 1_704_067_200 * S;
        let deadline = Declared { rule: Rule::Deadline { minute_of_day: 390 }, source: "project", text: "0630".into() };
        assert_eq!(deadline.due_at(day + 5 * 3600 * S), day + 390 * 60 * S);
        assert_eq!(deadline.due_at(day + 7 * 3600 * S), day + 86_400 * S + 390 * 60 * S);
        assert_eq!(deadline.due_at(day + 390 * 60 * S), day + 86_400 * S + 390 * 60 * S);
        let slas = [max.clone(), deadline];
        assert!(breached(&slas, day, day + 30 * S).is_empty());
        assert_eq!(breached(&slas, day, day + 31 * S), vec![(max, day + 30 * S)]);
    }

    #[test]
    fn breach_message_is_keyed_per_execution_and_sla() {
        let id = WorkflowExecutionIdentifier {
            project: "p".into(),
            domain: "d".into(),
            name: "n".into(),
            org: String::new(),
        };
        let d = Declared { rule: Rule::MaxDuration(Duration::from_secs(5)), source: "execution", text: "5s".into() };
        let env = breach_envelope(&id, None, 2, 1_000_000, &(d, 6_000_000), 7_000_000);
        assert_eq!(env.id, "sla/p/d/n/max_duration");
        let Some(Body::SlaBreach(b)) = env.body else { panic!() };
        assert_eq!((b.sla.as_str(), b.declared_by.as_str(), b.phase), ("max_duration", "execution", 2));
        assert_eq!(b.max_duration.map(|d| d.seconds), Some(5));
        assert_eq!(b.due_at.map(|t| t.seconds), Some(6));
    }
}
