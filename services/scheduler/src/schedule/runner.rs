//! The schedule loop: list active launch plans with schedules from metadata, decide what is due
//! (pure, [`super::due`]), create the executions, then record progress in the bucket.
//!
//! Exactly once per (launch-plan version, scheduled time), with any number of replicas and
//! restarts, rests on two facts: the execution name is derived from both (metadata refuses a
//! second execution of that name with ALREADY_EXISTS, which counts as done), and progress moves
//! forward only after the execution exists (a crash in between fires again, and dedups by name,
//! rather than losing the time). Replicas do not coordinate otherwise; they race and agree.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aloft_bus::KvBucket;
use aloft_proto::flyteidl::admin::{self, LaunchPlan};
use aloft_proto::flyteidl::service::admin_service_client::AdminServiceClient;
use aloft_runtime::Shutdown;
use tonic::Code;
use tonic::transport::Channel;

use super::Clock;
use super::cadence::ScheduleSpec;
use super::due::{Policy, due};
use super::fire::{self, Progress};
use crate::config::SchedulesConfig;

/// Page size for listing projects and launch plans.
const PAGE: u32 = 100;

/// A failure of one schedule loop pass or of one launch plan's firing.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Metadata refused or could not be reached.
    #[error("metadata {call}: {status}")]
    Metadata {
        /// The admin call.
        call: &'static str,
        /// What it answered.
        status: tonic::Status,
    },
    /// The progress bucket failed.
    #[error(transparent)]
    Bus(#[from] aloft_bus::Error),
    /// A stored progress record does not decode.
    #[error("progress of {launch_plan} does not decode: {message}")]
    Corrupt {
        /// The launch plan, or the bucket key when unknown.
        launch_plan: String,
        /// The decode error.
        message: String,
    },
}

/// What one pass did, for tests and logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pass {
    /// Active launch plans with a schedule seen.
    pub schedules: usize,
    /// Executions this pass created.
    pub created: usize,
    /// Executions that already existed (another replica, or an earlier life, fired them).
    pub existing: usize,
    /// Due times skipped by the catch-up policy.
    pub skipped: u64,
    /// Launch plans whose firing failed this pass (retried next pass).
    pub failed: usize,
}

/// One replica's schedule loop.
pub struct Runner {
    admin: AdminServiceClient<Channel>,
    progress: KvBucket,
    clock: Arc<dyn Clock>,
    policy: Policy,
    poll_interval: Duration,
    /// Launch plans whose schedule was reported unusable, so the error is logged once, not every pass.
    reported: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner").field("progress", &self.progress).field("policy", &self.policy).finish()
    }
}

impl Runner {
    /// A runner on `admin` (metadata's AdminService) keeping progress in `progress`, reading the
    /// time from `clock`.
    pub fn new(
        admin: AdminServiceClient<Channel>,
        progress: KvBucket,
        config: &SchedulesConfig,
        clock: Arc<dyn Clock>,
    ) -> Runner {
        Runner {
            admin,
            progress,
            clock,
            policy: config.policy(),
            poll_interval: config.poll_interval,
            reported: Mutex::new(HashSet::new()),
        }
    }

    /// Runs passes every `poll_interval` until `shutdown`. A pass cut short by shutdown loses
    /// nothing: what it fired without recording is fired again by the next pass, and dedups.
    pub async fn run(self, shutdown: Shutdown) {
        tracing::info!(policy = ?self.policy, poll_interval = ?self.poll_interval, "schedules running");
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                result = self.pass() => match result {
                    Ok(pass) if pass.created > 0 || pass.failed > 0 || pass.skipped > 0 => {
                        tracing::info!(?pass, "schedule pass")
                    }
                    Ok(pass) => tracing::debug!(?pass, "schedule pass"),
                    Err(e) => tracing::warn!(error = %e, "schedule pass failed; retrying next interval"),
                },
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(self.poll_interval) => {}
            }
        }
        tracing::info!("schedules stopped");
    }

    /// One pass over every active scheduled launch plan, at the clock's current time. Listing
    /// failures end the pass; a failure on one launch plan is logged and the others go on.
    pub async fn pass(&self) -> Result<Pass, RunError> {
        let now = self.clock.now();
        let mut pass = Pass::default();
        for lp in self.scheduled_launch_plans().await? {
            pass.schedules += 1;
            if let Err(e) = self.fire(&lp, now, &mut pass).await {
                pass.failed += 1;
                let id = lp.id.as_ref().map(fire::display).unwrap_or_default();
                tracing::warn!(launch_plan = %id, error = %e, "cannot fire schedule; retrying next pass");
            }
        }
        Ok(pass)
    }

    /// Active launch plans with a schedule, in every project and domain. Deactivating a launch
    /// plan drops it from this list, which is what stops it firing.
    async fn scheduled_launch_plans(&self) -> Result<Vec<LaunchPlan>, RunError> {
        let mut admin = self.admin.clone();
        let mut scopes = Vec::new();
        let mut token = String::new();
        loop {
            let req = admin::ProjectListRequest { limit: PAGE, token: token.clone(), ..Default::default() };
            let page = admin
                .list_projects(req)
                .await
                .map_err(|status| RunError::Metadata { call: "ListProjects", status })?
                .into_inner();
            for p in page.projects {
                scopes.extend(p.domains.iter().map(|d| (p.id.clone(), d.id.clone())));
            }
            if page.token.is_empty() {
                break;
            }
            token = page.token;
        }
        let mut found = Vec::new();
        for (project, domain) in scopes {
            let mut token = String::new();
            loop {
                let req = admin::ActiveLaunchPlanListRequest {
                    project: project.clone(),
                    domain: domain.clone(),
                    limit: PAGE,
                    token: token.clone(),
                    ..Default::default()
                };
                let page = admin
                    .list_active_launch_plans(req)
                    .await
                    .map_err(|status| RunError::Metadata { call: "ListActiveLaunchPlans", status })?
                    .into_inner();
                found.extend(page.launch_plans.into_iter().filter(|lp| schedule_of(lp).is_some()));
                if page.token.is_empty() {
                    break;
                }
                token = page.token;
            }
        }
        Ok(found)
    }

    async fn fire(&self, lp: &LaunchPlan, now: i64, pass: &mut Pass) -> Result<(), RunError> {
        let (Some(id), Some(schedule)) = (lp.id.as_ref(), schedule_of(lp)) else { return Ok(()) };
        let name = fire::display(id);
        let spec = match ScheduleSpec::from_proto(schedule) {
            Ok(spec) => spec,
            Err(e) => {
                if self.reported.lock().map(|mut r| r.insert(name.clone())).unwrap_or(true) {
                    tracing::error!(launch_plan = %name, error = %e, "schedule cannot run; it will not fire");
                }
                return Ok(());
            }
        };
        // Times before the activation never fire: a schedule starts when it is switched on, and
        // a re-activation does not catch up the time it spent inactive.
        let activated =
            lp.closure.as_ref().and_then(|c| c.updated_at.or(c.created_at)).map(|t| t.seconds).unwrap_or(now);
        let key = fire::progress_key(id);
        let recorded = self.read_progress(&key, &name).await?.map(|(p, _)| p.handled_until);
        let from = recorded.map_or(activated, |r| r.max(activated));
        let decision = due(&spec.cadence, from, now, &self.policy);
        if decision.skipped > 0 {
            tracing::warn!(launch_plan = %name, skipped = decision.skipped, policy = ?self.policy.catch_up,
                "missed scheduled times not fired");
        }
        pass.skipped += decision.skipped;
        for t in &decision.fire {
            let req = fire::execution_request(id, &spec, *t);
            let execution = req.name.clone();
            match self.admin.clone().create_execution(req).await {
                Ok(_) => {
                    pass.created += 1;
                    tracing::info!(launch_plan = %name, %execution, scheduled_at = %super::calendar::format_utc(*t),
                        "scheduled execution created");
                }
                Err(status) if status.code() == Code::AlreadyExists => pass.existing += 1,
                // The launch plan itself cannot run (a required input without a default, a deleted
                // workflow): retrying cannot help, so the time counts as handled.
                Err(status)
                    if matches!(status.code(), Code::InvalidArgument | Code::NotFound | Code::FailedPrecondition) =>
                {
                    tracing::error!(launch_plan = %name, %execution, error = %status, "scheduled execution refused");
                }
                Err(status) => return Err(RunError::Metadata { call: "CreateExecution", status }),
            }
            self.advance(&key, &name, *t).await?;
        }
        if let Some(until) = decision.handled_until {
            self.advance(&key, &name, until).await?;
        }
        Ok(())
    }

    async fn read_progress(&self, key: &str, name: &str) -> Result<Option<(Progress, u64)>, RunError> {
        let Some(entry) = self.progress.get(key).await? else { return Ok(None) };
        let progress = serde_json::from_slice(&entry.value)
            .map_err(|e| RunError::Corrupt { launch_plan: name.to_string(), message: e.to_string() })?;
        Ok(Some((progress, entry.revision)))
    }

    /// Moves the recorded progress to `t` unless it is already there or beyond. Compare-and-set,
    /// so a replica with an older view can never move it back.
    async fn advance(&self, key: &str, name: &str, t: i64) -> Result<(), RunError> {
        let value: bytes::Bytes = serde_json::to_vec(&Progress { launch_plan: name.to_string(), handled_until: t })
            .map_err(|e| RunError::Corrupt { launch_plan: name.to_string(), message: e.to_string() })?
            .into();
        loop {
            let written = match self.read_progress(key, name).await? {
                Some((p, _)) if p.handled_until >= t => return Ok(()),
                Some((_, revision)) => self.progress.update(key, value.clone(), revision).await.map(drop),
                None => self.progress.create(key, value.clone()).await.map(drop),
            };
            match written {
                Ok(()) => return Ok(()),
                // Another replica wrote in between: read again and compare.
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

fn schedule_of(lp: &LaunchPlan) -> Option<&admin::Schedule> {
    lp.spec.as_ref()?.entity_metadata.as_ref()?.schedule.as_ref()
}
