//! The lineage service's own tables on Postgres or SQLite, through sqlx's `Any` driver (one set of
//! queries; one migration folder per backend, as in the metadata service).
//!
//! The database must be the lineage service's own: sqlx keeps one migrations table per database,
//! so two services migrating the same database would each see the other's migrations as unknown.

use std::collections::BTreeMap;
use std::str::FromStr;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, Row, Transaction};

use crate::domain::graph::{Edge, EdgeKind, Mutation, Node, NodeKind, Origin, Target};
use crate::domain::links::RunFacts;
use crate::error::Error;

// Metadata, notifier and lineage may share one Postgres database (docker-compose.yml does), and
// sqlx keeps every migrator's versions in the same `_sqlx_migrations` table: lineage's versions
// start at 1001 so they never collide with metadata's, and each migrator ignores the other's rows.
// (SQLite files are per service, so those keep their numbers.)
static PG_MIGRATIONS: sqlx::migrate::Migrator =
    sqlx::migrate::Migrator { ignore_missing: true, ..sqlx::migrate!("./migrations/postgres") };
static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// How many keys go into one `IN (...)` list (SQLite allows 32,766 parameters; Postgres 65,535).
const CHUNK: usize = 500;

/// One stored declarations version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclarationRow {
    /// Project.
    pub project: String,
    /// Version, from 1.
    pub version: i64,
    /// sha256 of the text.
    pub digest: String,
    /// File name as given.
    pub file_name: String,
    /// The text.
    pub yaml: String,
    /// Unix microseconds.
    pub applied_at: i64,
}

/// One queued payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    /// Catalog.
    pub target: Target,
    /// De-duplication key.
    pub key: String,
    /// JSON body.
    pub payload: String,
    /// Failed sends so far.
    pub attempts: i64,
    /// Not before (unix microseconds).
    pub next_at: i64,
}

/// Counts of the outbox by state, for tests and logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboxCounts {
    /// Waiting to be sent.
    pub pending: i64,
    /// Sent.
    pub sent: i64,
    /// Given up on.
    pub dead: i64,
}

/// Which way a walk goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Towards what a node was made from (follow edges backwards).
    Upstream,
    /// Towards what was made from it.
    Downstream,
}

/// The database handle.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

/// `url` without a password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// `sqlite://path` with `mode=rwc`, so a missing file is created.
fn sqlite_url(url: &str) -> Result<String, Error> {
    let path = url.trim_start_matches("sqlite://").trim_start_matches("sqlite:");
    let (file, query) = path.split_once('?').unwrap_or((path, ""));
    if file.is_empty() {
        return Err(Error::Database(format!("database_url `{url}` names no file")));
    }
    if file != ":memory:"
        && let Some(dir) = std::path::Path::new(file).parent().filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir).map_err(|e| Error::Database(format!("creating {}: {e}", dir.display())))?;
    }
    let mode = if query.contains("mode=") { String::new() } else { "mode=rwc".to_string() };
    let query = [query, &mode].iter().filter(|q| !q.is_empty()).cloned().collect::<Vec<_>>().join("&");
    Ok(format!("sqlite://{file}?{query}"))
}

fn now_micros() -> i64 {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    d.as_micros() as i64
}

fn placeholders(start: usize, n: usize) -> String {
    (start..start + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

impl Store {
    /// Connects and applies migrations. SQLite files (and their folder) are created when missing.
    pub async fn connect(url: &str) -> Result<Store, Error> {
        sqlx::any::install_default_drivers();
        let sqlite = url.starts_with("sqlite:");
        let url = if sqlite { sqlite_url(url)? } else { url.to_string() };
        let opts = AnyConnectOptions::from_str(&url)
            .map_err(|e| Error::Database(format!("database_url `{}`: {e}", redact(&url))))?;
        let pool = AnyPoolOptions::new()
            // SQLite allows one writer; more connections only add lock contention.
            .max_connections(if sqlite { 4 } else { 16 })
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
            .map_err(|e| Error::Database(format!("cannot connect to {}: {e}", redact(&url))))?;
        let migrated = if sqlite {
            sqlx::query("PRAGMA journal_mode = WAL").execute(&pool).await?;
            SQLITE_MIGRATIONS.run(&pool).await
        } else {
            PG_MIGRATIONS.run(&pool).await
        };
        migrated.map_err(|e| Error::Database(format!("migrations on {}: {e}", redact(&url))))?;
        Ok(Store { pool })
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Applies mutations in one transaction.
    pub async fn apply(&self, mutations: &[Mutation]) -> Result<(), Error> {
        let mut tx = self.pool.begin().await?;
        apply_in(&mut tx, mutations).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Stores a new declarations version and replaces everything the project's previous version
    /// contributed with `mutations`, atomically. Returns false (and changes nothing) when the
    /// newest stored version already has this digest.
    pub async fn replace_declarations(&self, row: &DeclarationRow, mutations: &[Mutation]) -> Result<bool, Error> {
        let mut tx = self.pool.begin().await?;
        let latest: Option<(i64, String)> = sqlx::query(
            "SELECT version, digest FROM lineage_declarations WHERE project = $1 ORDER BY version DESC LIMIT 1",
        )
        .bind(&row.project)
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| Ok::<_, sqlx::Error>((r.try_get(0)?, r.try_get(1)?)))
        .transpose()?;
        let expected = latest.as_ref().map(|(v, _)| v + 1).unwrap_or(1);
        if expected != row.version {
            return Err(Error::Conflict(format!(
                "declarations of project {:?} changed meanwhile (now at version {}); apply again",
                row.project,
                expected - 1
            )));
        }
        let inserted = sqlx::query(
            "INSERT INTO lineage_declarations (project, version, digest, file_name, yaml, applied_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        )
        .bind(&row.project)
        .bind(row.version)
        .bind(&row.digest)
        .bind(&row.file_name)
        .bind(&row.yaml)
        .bind(row.applied_at)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() != 1 {
            return Err(Error::Conflict(format!(
                "declarations of project {:?} version {} were applied concurrently; apply again",
                row.project, row.version
            )));
        }
        let origin = Origin::Declared(row.project.clone()).as_string();
        sqlx::query(
            "DELETE FROM lineage_attrs WHERE node_key IN (SELECT node_key FROM lineage_nodes WHERE origin = $1)",
        )
        .bind(&origin)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM lineage_nodes WHERE origin = $1").bind(&origin).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM lineage_edges WHERE origin = $1").bind(&origin).execute(&mut *tx).await?;
        apply_in(&mut tx, mutations).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The newest declarations version of a project, or a given one.
    pub async fn declarations(&self, project: &str, version: Option<i64>) -> Result<Option<DeclarationRow>, Error> {
        let q = match version {
            Some(v) => sqlx::query(
                "SELECT project, version, digest, file_name, yaml, applied_at FROM lineage_declarations \
                 WHERE project = $1 AND version = $2",
            )
            .bind(project)
            .bind(v),
            None => sqlx::query(
                "SELECT project, version, digest, file_name, yaml, applied_at FROM lineage_declarations \
                 WHERE project = $1 ORDER BY version DESC LIMIT 1",
            )
            .bind(project),
        };
        q.fetch_optional(&self.pool).await?.map(|r| declaration_row(&r)).transpose()
    }

    /// Every version of a project, oldest first (without the text).
    pub async fn declaration_versions(&self, project: &str) -> Result<Vec<(i64, String, i64)>, Error> {
        let rows = sqlx::query(
            "SELECT version, digest, applied_at FROM lineage_declarations WHERE project = $1 ORDER BY version",
        )
        .bind(project)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?))).collect()
    }

    /// The newest declarations of every project.
    pub async fn all_current_declarations(&self) -> Result<Vec<DeclarationRow>, Error> {
        let rows = sqlx::query(
            "SELECT d.project, d.version, d.digest, d.file_name, d.yaml, d.applied_at FROM lineage_declarations d \
             WHERE d.version = (SELECT MAX(version) FROM lineage_declarations m WHERE m.project = d.project) \
             ORDER BY d.project",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(declaration_row).collect()
    }

    /// Whether the run node has its admin facts (a `workflow` attribute, possibly empty).
    pub async fn run_info_known(&self, run_key: &str) -> Result<bool, Error> {
        let row = sqlx::query("SELECT 1 FROM lineage_attrs WHERE node_key = $1 AND name = 'workflow_known'")
            .bind(run_key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    /// Nodes by key, with their attributes; keys with no row are left out.
    pub async fn nodes(&self, keys: &[String]) -> Result<Vec<Node>, Error> {
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(CHUNK) {
            let sql = format!(
                "SELECT node_key, kind, project, label, lookup FROM lineage_nodes WHERE node_key IN ({})",
                placeholders(1, chunk.len())
            );
            let mut q = sqlx::query(&sql);
            for k in chunk {
                q = q.bind(k);
            }
            let rows = q.fetch_all(&self.pool).await?;
            let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
            for r in rows {
                let n = node_row(&r)?;
                nodes.insert(n.key.clone(), n);
            }
            let sql = format!(
                "SELECT node_key, name, value FROM lineage_attrs WHERE node_key IN ({})",
                placeholders(1, chunk.len())
            );
            let mut q = sqlx::query(&sql);
            for k in chunk {
                q = q.bind(k);
            }
            for r in q.fetch_all(&self.pool).await? {
                let key: String = r.try_get(0)?;
                if let Some(n) = nodes.get_mut(&key) {
                    n.attrs.insert(r.try_get(1)?, r.try_get(2)?);
                }
            }
            // keep the caller's order
            for k in chunk {
                if let Some(n) = nodes.remove(k) {
                    out.push(n);
                }
            }
        }
        Ok(out)
    }

    /// Edges touching `keys` on the given side: for upstream, edges into them; for downstream,
    /// edges out of them.
    pub async fn edges(&self, keys: &[String], direction: Direction) -> Result<Vec<Edge>, Error> {
        let column = match direction {
            Direction::Upstream => "to_key",
            Direction::Downstream => "from_key",
        };
        let mut out = Vec::new();
        for chunk in keys.chunks(CHUNK) {
            let sql = format!(
                "SELECT from_key, to_key, kind FROM lineage_edges WHERE {column} IN ({})",
                placeholders(1, chunk.len())
            );
            let mut q = sqlx::query(&sql);
            for k in chunk {
                q = q.bind(k);
            }
            for r in q.fetch_all(&self.pool).await? {
                let kind: String = r.try_get(2)?;
                let kind =
                    EdgeKind::parse(&kind).ok_or_else(|| Error::Database(format!("unknown edge kind {kind:?}")))?;
                out.push(Edge { from: r.try_get(0)?, to: r.try_get(1)?, kind });
            }
        }
        Ok(out)
    }

    /// Run nodes whose lookup is one of `lookups` (`<project>/<workflow>`), as linking facts.
    pub async fn runs_of_workflows(&self, lookups: &[String]) -> Result<Vec<RunFacts>, Error> {
        let mut keys = Vec::new();
        for chunk in lookups.chunks(CHUNK) {
            let sql = format!(
                "SELECT node_key FROM lineage_nodes WHERE kind = 'run' AND lookup IN ({})",
                placeholders(1, chunk.len())
            );
            let mut q = sqlx::query(&sql);
            for l in chunk {
                q = q.bind(l);
            }
            for r in q.fetch_all(&self.pool).await? {
                keys.push(r.try_get::<String, _>(0)?);
            }
        }
        Ok(self.nodes(&keys).await?.iter().map(run_facts).collect())
    }

    /// The newest version node of a model (by `lookup` = the model key).
    pub async fn latest_model_version(&self, model_key: &str) -> Result<Option<String>, Error> {
        let row = sqlx::query(
            "SELECT node_key FROM lineage_nodes WHERE kind = 'model_version' AND lookup = $1 \
             ORDER BY created_at DESC, node_key DESC LIMIT 1",
        )
        .bind(model_key)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    /// Up to `limit` pending payloads of one target in send order.
    pub async fn pending(&self, target: Target, limit: i64) -> Result<Vec<OutboxRow>, Error> {
        let rows = sqlx::query(
            "SELECT event_key, payload, attempts, next_at FROM lineage_outbox \
             WHERE target = $1 AND state = 'pending' ORDER BY seq, event_key LIMIT $2",
        )
        .bind(target.as_str())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(OutboxRow {
                    target,
                    key: r.try_get(0)?,
                    payload: r.try_get(1)?,
                    attempts: r.try_get::<i64, _>(2).or_else(|_| r.try_get::<i32, _>(2).map(i64::from))?,
                    next_at: r.try_get(3)?,
                })
            })
            .collect()
    }

    /// Takes a payload for `lease_micros` unless another drainer holds it; true when taken.
    pub async fn claim(&self, row: &OutboxRow, now: i64, lease_micros: i64) -> Result<bool, Error> {
        let done = sqlx::query(
            "UPDATE lineage_outbox SET lease_until = $1 \
             WHERE target = $2 AND event_key = $3 AND state = 'pending' AND lease_until <= $4",
        )
        .bind(now + lease_micros)
        .bind(row.target.as_str())
        .bind(&row.key)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records the result of one send: sent, retry at `next_at`, or dead.
    pub async fn settle(&self, row: &OutboxRow, outcome: Settle<'_>) -> Result<(), Error> {
        let now = now_micros();
        let (state, attempts, next_at, error, sent_at) = match outcome {
            Settle::Sent => ("sent", row.attempts, row.next_at, "", now),
            Settle::Retry { next_at, error } => ("pending", row.attempts + 1, next_at, error, 0),
            Settle::Dead { error } => ("dead", row.attempts + 1, row.next_at, error, 0),
        };
        sqlx::query(
            "UPDATE lineage_outbox SET state = $1, attempts = $2, next_at = $3, last_error = $4, sent_at = $5, \
             lease_until = 0 WHERE target = $6 AND event_key = $7",
        )
        .bind(state)
        .bind(attempts)
        .bind(next_at)
        .bind(error)
        .bind(sent_at)
        .bind(row.target.as_str())
        .bind(&row.key)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// How many payloads of one target wait, and when the oldest of them was queued (unix
    /// microseconds): the export lag. Both read through the pending index.
    pub async fn outbox_backlog(&self, target: Target) -> Result<(i64, Option<i64>), Error> {
        let count = sqlx::query("SELECT COUNT(*) FROM lineage_outbox WHERE target = $1 AND state = 'pending'")
            .bind(target.as_str())
            .fetch_one(&self.pool)
            .await?;
        let oldest = sqlx::query(
            "SELECT created_at FROM lineage_outbox WHERE target = $1 AND state = 'pending' ORDER BY seq LIMIT 1",
        )
        .bind(target.as_str())
        .fetch_optional(&self.pool)
        .await?;
        Ok((count.try_get(0)?, oldest.map(|r| r.try_get(0)).transpose()?))
    }

    /// Outbox counts of one target.
    pub async fn outbox_counts(&self, target: Target) -> Result<OutboxCounts, Error> {
        let rows = sqlx::query("SELECT state, COUNT(*) FROM lineage_outbox WHERE target = $1 GROUP BY state")
            .bind(target.as_str())
            .fetch_all(&self.pool)
            .await?;
        let mut c = OutboxCounts::default();
        for r in rows {
            let state: String = r.try_get(0)?;
            let n: i64 = r.try_get(1)?;
            match state.as_str() {
                "pending" => c.pending = n,
                "sent" => c.sent = n,
                _ => c.dead = n,
            }
        }
        Ok(c)
    }

    /// Bulk insert for benchmarks and tests: nodes and edges with origin `event`, in
    /// transactions of `batch` rows.
    pub async fn bulk_load(&self, nodes: &[Node], edges: &[Edge], batch: usize) -> Result<(), Error> {
        let muts: Vec<Mutation> = nodes
            .iter()
            .map(|n| Mutation::Node(n.clone(), Origin::Event))
            .chain(edges.iter().map(|e| Mutation::Edge(e.clone(), Origin::Event)))
            .collect();
        for chunk in muts.chunks(batch.max(1)) {
            self.apply(chunk).await?;
        }
        Ok(())
    }
}

/// How a send ended.
#[derive(Debug, Clone, Copy)]
pub enum Settle<'a> {
    /// Accepted by the catalog.
    Sent,
    /// Try again at `next_at` (unix microseconds).
    Retry {
        /// When.
        next_at: i64,
        /// Why it failed.
        error: &'a str,
    },
    /// Never again.
    Dead {
        /// Why.
        error: &'a str,
    },
}

async fn apply_in(tx: &mut Transaction<'_, Any>, mutations: &[Mutation]) -> Result<(), Error> {
    let now = now_micros();
    for (i, m) in mutations.iter().enumerate() {
        match m {
            Mutation::Node(n, origin) => {
                sqlx::query(
                    "INSERT INTO lineage_nodes (node_key, kind, project, label, lookup, origin, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) \
                     ON CONFLICT (node_key) DO UPDATE SET lookup = excluded.lookup \
                     WHERE excluded.lookup <> '' AND lineage_nodes.lookup = ''",
                )
                .bind(&n.key)
                .bind(n.kind.as_str())
                .bind(&n.project)
                .bind(&n.label)
                .bind(&n.lookup)
                .bind(origin.as_string())
                .bind(now)
                .execute(&mut **tx)
                .await?;
                for (name, value) in &n.attrs {
                    set_attr(tx, &n.key, name, value, false).await?;
                }
            }
            Mutation::Attr { key, name, value, only_if_absent } => {
                set_attr(tx, key, name, value, *only_if_absent).await?
            }
            Mutation::Edge(e, origin) => {
                sqlx::query(
                    "INSERT INTO lineage_edges (from_key, to_key, kind, origin, created_at) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(&e.from)
                .bind(&e.to)
                .bind(e.kind.as_str())
                .bind(origin.as_string())
                .bind(now)
                .execute(&mut **tx)
                .await?;
            }
            Mutation::Export(x) => {
                sqlx::query(
                    "INSERT INTO lineage_outbox (target, event_key, seq, payload, state, attempts, next_at, lease_until, \
                     last_error, created_at, sent_at) VALUES ($1, $2, $3, $4, 'pending', 0, $5, 0, '', $5, 0) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(x.target.as_str())
                .bind(&x.key)
                .bind(now * 1000 + i as i64)
                .bind(x.body.to_string())
                .bind(now)
                .execute(&mut **tx)
                .await?;
            }
        }
    }
    Ok(())
}

async fn set_attr(
    tx: &mut Transaction<'_, Any>,
    key: &str,
    name: &str,
    value: &str,
    only_if_absent: bool,
) -> Result<(), Error> {
    let sql = if only_if_absent {
        "INSERT INTO lineage_attrs (node_key, name, value) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"
    } else {
        "INSERT INTO lineage_attrs (node_key, name, value) VALUES ($1, $2, $3) \
         ON CONFLICT (node_key, name) DO UPDATE SET value = excluded.value"
    };
    sqlx::query(sql).bind(key).bind(name).bind(value).execute(&mut **tx).await?;
    Ok(())
}

fn node_row(r: &AnyRow) -> Result<Node, Error> {
    let kind: String = r.try_get(1)?;
    Ok(Node {
        key: r.try_get(0)?,
        kind: NodeKind::parse(&kind).ok_or_else(|| Error::Database(format!("unknown node kind {kind:?}")))?,
        project: r.try_get(2)?,
        label: r.try_get(3)?,
        lookup: r.try_get(4)?,
        attrs: BTreeMap::new(),
    })
}

fn declaration_row(r: &AnyRow) -> Result<DeclarationRow, Error> {
    Ok(DeclarationRow {
        project: r.try_get(0)?,
        version: r.try_get(1)?,
        digest: r.try_get(2)?,
        file_name: r.try_get(3)?,
        yaml: r.try_get(4)?,
        applied_at: r.try_get(5)?,
    })
}

/// A stored run node as linking facts.
pub fn run_facts(n: &Node) -> RunFacts {
    let a = |k: &str| n.attrs.get(k).cloned().unwrap_or_default();
    let execution = n.label.clone();
    RunFacts {
        key: n.key.clone(),
        project: n.project.clone(),
        domain: a("domain"),
        name: execution,
        workflow: a("workflow"),
        succeeded: a("phase") == "SUCCEEDED",
        ended_at: a("ended_at"),
        outputs: n
            .attrs
            .iter()
            .filter_map(|(k, v)| {
                k.strip_prefix("output.").map(|name| (name.to_string(), v.lines().map(String::from).collect()))
            })
            .collect(),
    }
}
