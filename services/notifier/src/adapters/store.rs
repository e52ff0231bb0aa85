//! The delivery records on Postgres or SQLite through sqlx's `Any` driver.
//!
//! Exactly once per (execution, phase, destination): a row is inserted once (a unique key), and
//! a replica sends it only after claiming it with a compare-and-set on `lease_until`; a replica
//! that dies mid-send leaves a lease that expires, and the next claim takes over. Per-channel
//! pacing is a row per channel whose `next_send_at` is moved forward with the same kind of
//! compare-and-set, so all replicas share one rate.
//!
//! Migrations run with our own version table (`notifier_schema_migrations`), not sqlx's
//! `_sqlx_migrations`: the notifier may share metadata's database, and two sqlx migrators on one
//! table each fail on the other's versions.

use std::str::FromStr;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

use crate::config::redact_url;

/// The database failed or holds something unexpected.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Connecting, migrating or a query failed.
    #[error("database {context}: {source}")]
    Sql {
        /// What was being done.
        context: String,
        /// The driver's error.
        source: sqlx::Error,
    },
    /// The URL is unusable (or the SQLite folder cannot be created).
    #[error("database_url `{url}`: {message}")]
    Url {
        /// The URL without its password.
        url: String,
        /// Why.
        message: String,
    },
}

type Result<T> = std::result::Result<T, StoreError>;

fn sql(context: &str) -> impl FnOnce(sqlx::Error) -> StoreError + '_ {
    move |source| StoreError::Sql { context: context.to_string(), source }
}

/// `(version, description, sql)`; statements end with `;` at the end of a line.
const MIGRATIONS: &[(i64, &str, &str)] = &[(1, "deliveries", include_str!("../../migrations/0001_deliveries.sql"))];

/// A message to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    /// Project.
    pub project: String,
    /// Domain.
    pub domain: String,
    /// Execution name.
    pub execution: String,
    /// Terminal phase name.
    pub phase: String,
    /// Routed destination key.
    pub destination: String,
    /// `Target::key`, or empty when there is none.
    pub target: String,
    /// Slack body JSON.
    pub payload: String,
    /// `pending`, `failed` (no target) or `suppressed`.
    pub state: String,
    /// Hook outcome label.
    pub hook: String,
    /// Why it was routed here.
    pub reasons: String,
    /// Envelope id.
    pub event_id: String,
    /// Set for `failed`: why.
    pub last_error: String,
}

/// A pending delivery that is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// Row id.
    pub id: String,
    /// Target key.
    pub target: String,
    /// Slack body JSON.
    pub payload: String,
    /// Failures so far.
    pub failures: u32,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finish {
    /// Slack took it.
    Delivered {
        /// Message timestamp (Web API).
        ts: String,
    },
    /// Try again at `at`; `counts` when it is a failure towards giving up (not a 429).
    Retry {
        /// When, unix microseconds.
        at: i64,
        /// Counts towards `max_attempts`.
        counts: bool,
        /// `retry` or `rate_limited`.
        outcome: &'static str,
    },
    /// Never.
    Failed,
}

/// The answer and detail of one attempt, for the record.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AttemptResult {
    /// HTTP status, 0 without an answer.
    pub http_status: u16,
    /// Slack's answer or the error.
    pub detail: String,
}

/// A recorded delivery with its attempts, for the query API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    /// Project.
    pub project: String,
    /// Domain.
    pub domain: String,
    /// Execution.
    pub execution: String,
    /// Phase.
    pub phase: String,
    /// Destination key.
    pub destination: String,
    /// Target key.
    pub target: String,
    /// State.
    pub state: String,
    /// Hook outcome.
    pub hook: String,
    /// Attempts.
    pub attempts: u32,
    /// Last error.
    pub last_error: String,
    /// Slack ts.
    pub slack_ts: String,
    /// Body.
    pub payload: String,
    /// Unix microseconds.
    pub created_at: i64,
    /// Unix microseconds.
    pub updated_at: i64,
    /// Every attempt, in order.
    pub attempt_log: Vec<AttemptRecord>,
}

/// One recorded attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    /// 1-based.
    pub attempt: u32,
    /// Replica id.
    pub replica: String,
    /// Unix microseconds.
    pub started_at: i64,
    /// Unix microseconds, 0 while in flight.
    pub finished_at: i64,
    /// Outcome word.
    pub outcome: String,
    /// HTTP status.
    pub http_status: u16,
    /// Detail.
    pub detail: String,
}

/// The database handle.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
}

impl Store {
    /// Connects and applies the notifier's migrations. SQLite files (and their folder) are
    /// created when missing.
    pub async fn connect(url: &str) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let sqlite = url.starts_with("sqlite:");
        let url = if sqlite { sqlite_url(url)? } else { url.to_string() };
        let opts = AnyConnectOptions::from_str(&url)
            .map_err(|e| StoreError::Url { url: redact_url(&url), message: e.to_string() })?;
        let pool = AnyPoolOptions::new()
            .max_connections(if sqlite { 4 } else { 8 })
            .acquire_timeout(std::time::Duration::from_secs(10))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if sqlite {
                        sqlx::query("PRAGMA busy_timeout = 10000").execute(&mut *conn).await?;
                    }
                    Ok(())
                })
            })
            .connect_with(opts)
            .await
            .map_err(|source| StoreError::Sql { context: format!("connecting to {}", redact_url(&url)), source })?;
        if sqlite {
            sqlx::query("PRAGMA journal_mode = WAL").execute(&pool).await.map_err(sql("enabling WAL"))?;
        }
        let store = Store { pool };
        // Replicas starting together race on CREATE TABLE IF NOT EXISTS in Postgres (a unique
        // violation in the catalog); the loser simply tries again and finds everything there.
        let mut tries = 0;
        loop {
            match store.migrate().await {
                Ok(()) => return Ok(store),
                Err(e) if tries < 3 => {
                    tries += 1;
                    tracing::warn!(error = %e, "migration attempt failed; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(200 * tries)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn migrate(&self) -> Result<()> {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS notifier_schema_migrations \
             (version BIGINT NOT NULL PRIMARY KEY, description TEXT NOT NULL, applied_at BIGINT NOT NULL)",
        )
        .execute(&self.pool)
        .await
        .map_err(sql("creating notifier_schema_migrations"))?;
        for (version, description, text) in MIGRATIONS {
            let applied = sqlx::query("SELECT version FROM notifier_schema_migrations WHERE version = $1")
                .bind(*version)
                .fetch_optional(&self.pool)
                .await
                .map_err(sql("reading notifier_schema_migrations"))?;
            if applied.is_some() {
                continue;
            }
            let context = format!("migration {version} ({description})");
            let mut tx = self.pool.begin().await.map_err(sql(&context))?;
            for statement in statements(text) {
                sqlx::query(&statement).execute(&mut *tx).await.map_err(sql(&context))?;
            }
            sqlx::query(
                "INSERT INTO notifier_schema_migrations (version, description, applied_at) VALUES ($1, $2, $3) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(*version)
            .bind(*description)
            .bind(now_micros())
            .execute(&mut *tx)
            .await
            .map_err(sql(&context))?;
            tx.commit().await.map_err(sql(&context))?;
            tracing::info!(version, description, "notifier migration applied");
        }
        Ok(())
    }

    /// Whether this (execution, phase, destination) is already recorded.
    pub async fn exists(
        &self,
        project: &str,
        domain: &str,
        execution: &str,
        phase: &str,
        destination: &str,
    ) -> Result<bool> {
        let row = sqlx::query(
            "SELECT id FROM notifier_deliveries \
             WHERE project = $1 AND domain = $2 AND execution = $3 AND phase = $4 AND destination = $5",
        )
        .bind(project)
        .bind(domain)
        .bind(execution)
        .bind(phase)
        .bind(destination)
        .fetch_optional(&self.pool)
        .await
        .map_err(sql("reading a delivery"))?;
        Ok(row.is_some())
    }

    /// Records a delivery unless its key exists; true when this call created it.
    pub async fn insert(&self, d: &NewDelivery, now: i64) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO notifier_deliveries (id, project, domain, execution, phase, destination, target, payload, \
             state, hook, reasons, event_id, attempts, failures, next_attempt_at, lease_owner, lease_until, \
             last_error, slack_ts, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 0, 0, $13, '', 0, $14, '', $13, $13) \
             ON CONFLICT DO NOTHING",
        )
        .bind(uuid::Uuid::new_v4().simple().to_string())
        .bind(&d.project)
        .bind(&d.domain)
        .bind(&d.execution)
        .bind(&d.phase)
        .bind(&d.destination)
        .bind(&d.target)
        .bind(&d.payload)
        .bind(&d.state)
        .bind(&d.hook)
        .bind(&d.reasons)
        .bind(&d.event_id)
        .bind(now)
        .bind(&d.last_error)
        .execute(&self.pool)
        .await
        .map_err(sql("recording a delivery"))?;
        Ok(done.rows_affected() == 1)
    }

    /// Pending deliveries due at `now` that nobody holds, oldest first.
    pub async fn due(&self, now: i64, limit: i64) -> Result<Vec<Due>> {
        let rows = sqlx::query(
            "SELECT id, target, payload, failures FROM notifier_deliveries \
             WHERE state = 'pending' AND next_attempt_at <= $1 AND lease_until <= $1 \
             ORDER BY next_attempt_at, created_at LIMIT $2",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(sql("listing due deliveries"))?;
        rows.iter()
            .map(|r| {
                Ok(Due {
                    id: r.try_get("id").map_err(sql("reading a due delivery"))?,
                    target: r.try_get("target").map_err(sql("reading a due delivery"))?,
                    payload: r.try_get("payload").map_err(sql("reading a due delivery"))?,
                    failures: r.try_get::<i64, _>("failures").map_err(sql("reading a due delivery"))? as u32,
                })
            })
            .collect()
    }

    /// Takes the channel's next send slot if it is free at `now`, moving it to `now + interval`.
    /// False: someone posted there too recently (or Slack asked us to wait).
    pub async fn take_channel(&self, channel: &str, now: i64, interval_micros: i64) -> Result<bool> {
        let next = now + interval_micros;
        let inserted =
            sqlx::query("INSERT INTO notifier_channels (channel, next_send_at) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                .bind(channel)
                .bind(next)
                .execute(&self.pool)
                .await
                .map_err(sql("pacing a channel"))?;
        if inserted.rows_affected() == 1 {
            return Ok(true);
        }
        let moved =
            sqlx::query("UPDATE notifier_channels SET next_send_at = $1 WHERE channel = $2 AND next_send_at <= $3")
                .bind(next)
                .bind(channel)
                .bind(now)
                .execute(&self.pool)
                .await
                .map_err(sql("pacing a channel"))?;
        Ok(moved.rows_affected() == 1)
    }

    /// Nobody posts to `channel` before `until` (Slack's Retry-After).
    pub async fn hold_channel(&self, channel: &str, until: i64) -> Result<()> {
        sqlx::query("UPDATE notifier_channels SET next_send_at = $1 WHERE channel = $2 AND next_send_at < $1")
            .bind(until)
            .bind(channel)
            .execute(&self.pool)
            .await
            .map_err(sql("holding a channel"))?;
        Ok(())
    }

    /// Claims a due delivery for `replica` until `now + lease`; returns the attempt number, or
    /// `None` when another replica got it first. An earlier attempt still marked in flight was
    /// cut short (its replica died or lost its lease) and is marked `interrupted`.
    pub async fn claim(&self, id: &str, replica: &str, now: i64, lease_micros: i64) -> Result<Option<u32>> {
        let claimed = sqlx::query(
            "UPDATE notifier_deliveries SET lease_owner = $1, lease_until = $2, attempts = attempts + 1, updated_at = $3 \
             WHERE id = $4 AND state = 'pending' AND next_attempt_at <= $3 AND lease_until <= $3",
        )
        .bind(replica)
        .bind(now + lease_micros)
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(sql("claiming a delivery"))?;
        if claimed.rows_affected() != 1 {
            return Ok(None);
        }
        let row = sqlx::query("SELECT attempts FROM notifier_deliveries WHERE id = $1")
            .bind(id)
            .fetch_one(&self.pool)
            .await
            .map_err(sql("claiming a delivery"))?;
        let attempt: i64 = row.try_get("attempts").map_err(sql("claiming a delivery"))?;
        sqlx::query(
            "UPDATE notifier_attempts SET outcome = 'interrupted', finished_at = $1 \
             WHERE delivery_id = $2 AND outcome = 'in_flight'",
        )
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(sql("recording an attempt"))?;
        sqlx::query(
            "INSERT INTO notifier_attempts (delivery_id, attempt, replica, started_at, finished_at, outcome, \
             http_status, detail) VALUES ($1, $2, $3, $4, 0, 'in_flight', 0, '') ON CONFLICT DO NOTHING",
        )
        .bind(id)
        .bind(attempt)
        .bind(replica)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(sql("recording an attempt"))?;
        Ok(Some(attempt as u32))
    }

    /// Lets go of a claim without an attempt (the channel was busy after all).
    pub async fn release(&self, id: &str, replica: &str, attempt: u32) -> Result<()> {
        sqlx::query(
            "UPDATE notifier_deliveries SET lease_until = 0, lease_owner = '', attempts = attempts - 1 \
             WHERE id = $1 AND lease_owner = $2 AND attempts = $3",
        )
        .bind(id)
        .bind(replica)
        .bind(attempt as i64)
        .execute(&self.pool)
        .await
        .map_err(sql("releasing a delivery"))?;
        sqlx::query("DELETE FROM notifier_attempts WHERE delivery_id = $1 AND attempt = $2 AND outcome = 'in_flight'")
            .bind(id)
            .bind(attempt as i64)
            .execute(&self.pool)
            .await
            .map_err(sql("releasing a delivery"))?;
        Ok(())
    }

    /// Records how attempt `attempt` ended. False when the lease was lost meanwhile (another
    /// replica took over); the attempt is recorded either way.
    pub async fn finish(
        &self,
        id: &str,
        replica: &str,
        attempt: u32,
        now: i64,
        finish: &Finish,
        result: &AttemptResult,
    ) -> Result<bool> {
        let (state, next_at, add_failure, ts, outcome) = match finish {
            Finish::Delivered { ts } => ("delivered", now, 0, ts.as_str(), "delivered"),
            Finish::Retry { at, counts, outcome } => ("pending", *at, i64::from(*counts), "", *outcome),
            Finish::Failed => ("failed", now, 1, "", "failed"),
        };
        let last_error = if matches!(finish, Finish::Delivered { .. }) { "" } else { result.detail.as_str() };
        let updated = sqlx::query(
            "UPDATE notifier_deliveries SET state = $1, next_attempt_at = $2, failures = failures + $3, \
             slack_ts = $4, last_error = $5, lease_owner = '', lease_until = 0, updated_at = $6 \
             WHERE id = $7 AND lease_owner = $8 AND attempts = $9 AND state = 'pending'",
        )
        .bind(state)
        .bind(next_at)
        .bind(add_failure)
        .bind(ts)
        .bind(last_error)
        .bind(now)
        .bind(id)
        .bind(replica)
        .bind(attempt as i64)
        .execute(&self.pool)
        .await
        .map_err(sql("recording a delivery outcome"))?;
        sqlx::query(
            "UPDATE notifier_attempts SET outcome = $1, finished_at = $2, http_status = $3, detail = $4 \
             WHERE delivery_id = $5 AND attempt = $6",
        )
        .bind(outcome)
        .bind(now)
        .bind(i64::from(result.http_status))
        .bind(&result.detail)
        .bind(id)
        .bind(attempt as i64)
        .execute(&self.pool)
        .await
        .map_err(sql("recording an attempt"))?;
        Ok(updated.rows_affected() == 1)
    }

    /// Every delivery of one execution with its attempts, oldest first.
    pub async fn list(&self, project: &str, domain: &str, execution: &str) -> Result<Vec<DeliveryRecord>> {
        let rows = sqlx::query(
            "SELECT id, project, domain, execution, phase, destination, target, state, hook, attempts, last_error, \
             slack_ts, payload, created_at, updated_at FROM notifier_deliveries \
             WHERE project = $1 AND domain = $2 AND execution = $3 ORDER BY created_at, destination",
        )
        .bind(project)
        .bind(domain)
        .bind(execution)
        .fetch_all(&self.pool)
        .await
        .map_err(sql("listing deliveries"))?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let id: String = get(r, "id")?;
            let attempts = sqlx::query(
                "SELECT attempt, replica, started_at, finished_at, outcome, http_status, detail \
                 FROM notifier_attempts WHERE delivery_id = $1 ORDER BY attempt",
            )
            .bind(&id)
            .fetch_all(&self.pool)
            .await
            .map_err(sql("listing attempts"))?;
            let attempt_log = attempts
                .iter()
                .map(|a| {
                    Ok(AttemptRecord {
                        attempt: get::<i64>(a, "attempt")? as u32,
                        replica: get(a, "replica")?,
                        started_at: get(a, "started_at")?,
                        finished_at: get(a, "finished_at")?,
                        outcome: get(a, "outcome")?,
                        http_status: get::<i64>(a, "http_status")? as u16,
                        detail: get(a, "detail")?,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            out.push(DeliveryRecord {
                project: get(r, "project")?,
                domain: get(r, "domain")?,
                execution: get(r, "execution")?,
                phase: get(r, "phase")?,
                destination: get(r, "destination")?,
                target: get(r, "target")?,
                state: get(r, "state")?,
                hook: get(r, "hook")?,
                attempts: get::<i64>(r, "attempts")? as u32,
                last_error: get(r, "last_error")?,
                slack_ts: get(r, "slack_ts")?,
                payload: get(r, "payload")?,
                created_at: get(r, "created_at")?,
                updated_at: get(r, "updated_at")?,
                attempt_log,
            });
        }
        Ok(out)
    }
}

fn get<T>(row: &AnyRow, column: &str) -> Result<T>
where
    T: for<'r> sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    row.try_get(column).map_err(|source| StoreError::Sql { context: format!("reading column {column}"), source })
}

/// The statements of a migration file: split at `;` ending a line, comments dropped.
fn statements(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let code = match line.find("--") {
            Some(i) => &line[..i],
            None => line,
        };
        if code.trim().is_empty() {
            continue;
        }
        current.push_str(code.trim_end());
        current.push('\n');
        if code.trim_end().ends_with(';') {
            out.push(current.trim().trim_end_matches(';').to_string());
            current.clear();
        }
    }
    if !current.trim().is_empty() {
        out.push(current.trim().to_string());
    }
    out
}

/// `sqlite://path` with the file created when missing (and its folder).
fn sqlite_url(url: &str) -> Result<String> {
    let rest = url.trim_start_matches("sqlite:").trim_start_matches("//");
    if rest.is_empty() || rest == ":memory:" {
        return Ok("sqlite::memory:".into());
    }
    let path = rest.split('?').next().unwrap_or(rest);
    if let Some(dir) = std::path::Path::new(path).parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Url {
            url: url.to_string(),
            message: format!("cannot create {}: {e}", dir.display()),
        })?;
    }
    Ok(if rest.contains('?') { format!("sqlite://{rest}") } else { format!("sqlite://{rest}?mode=rwc") })
}

/// Current time in unix microseconds.
pub fn now_micros() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migration_statements_split_at_line_ends() {
        let s = statements(MIGRATIONS[0].2);
        assert_eq!(s.len(), 4, "three tables and an index: {s:#?}");
        assert!(s.iter().all(|s| !s.contains("--") && !s.ends_with(';')));
        assert!(s[0].starts_with("CREATE TABLE IF NOT EXISTS notifier_deliveries"));
    }
}
