//! The registry's storage on Postgres or SQLite, through sqlx's `Any` driver so one set of
//! queries serves both (`$n` placeholders work on both; DDL differs only in BYTEA/BLOB, hence two
//! migration folders).

use std::str::FromStr;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

use crate::domain::filters::{self, Column, Filter, Value};
use crate::error::{Error, Result};

// The lineage service's migrations (versions from 1001) may share this database's
// `_sqlx_migrations` table (see lineage's store): their rows are not ours to check.
static PG_MIGRATIONS: sqlx::migrate::Migrator =
    sqlx::migrate::Migrator { ignore_missing: true, ..sqlx::migrate!("./migrations/postgres") };
static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// One stored task, workflow or launch plan version.
#[derive(Debug, Clone)]
pub struct EntityRow {
    /// flyteidl ResourceType.
    pub resource_type: i32,
    /// Project.
    pub project: String,
    /// Domain.
    pub domain: String,
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// sha256 of the spec.
    pub digest: String,
    /// Encoded spec as sent.
    pub spec: Vec<u8>,
    /// Encoded closure.
    pub closure: Vec<u8>,
    /// Launch plan state.
    pub state: i32,
    /// Unix microseconds.
    pub created_at: i64,
    /// Unix microseconds.
    pub updated_at: i64,
}

/// One stored project.
#[derive(Debug, Clone)]
pub struct ProjectRow {
    /// Id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Encoded Labels.
    pub labels: Vec<u8>,
    /// Project state.
    pub state: i32,
    /// Unix microseconds.
    pub created_at: i64,
}

/// Result of an insert that must not overwrite.
#[derive(Debug)]
pub enum Insert {
    /// The row was written.
    Inserted,
    /// A row with this key exists; here it is.
    Exists(Box<EntityRow>),
}

/// Columns list requests may filter and sort on.
pub const ENTITY_COLUMNS: &[Column] = &[
    Column { field: "project", column: "project", integer: false },
    Column { field: "domain", column: "domain", integer: false },
    Column { field: "name", column: "name", integer: false },
    Column { field: "version", column: "version", integer: false },
    Column { field: "state", column: "state", integer: true },
    Column { field: "created_at", column: "created_at", integer: true },
    Column { field: "updated_at", column: "updated_at", integer: true },
];

/// Columns project lists may filter and sort on.
pub const PROJECT_COLUMNS: &[Column] = &[
    Column { field: "id", column: "id", integer: false },
    Column { field: "identifier", column: "id", integer: false },
    Column { field: "name", column: "name", integer: false },
    Column { field: "state", column: "state", integer: true },
    Column { field: "created_at", column: "created_at", integer: true },
];

/// A page of a list query.
#[derive(Debug, Clone)]
pub struct ListQuery<'a> {
    /// Filters from the request.
    pub filters: &'a [Filter],
    /// `ORDER BY` clause (already validated against the allow-list).
    pub order_by: String,
    /// Page size.
    pub limit: i64,
    /// Offset.
    pub offset: i64,
}

/// The database handle.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
}

const ENTITY_FIELDS: &str =
    "resource_type, project, domain, name, version, digest, spec, closure, state, created_at, updated_at";

impl Store {
    /// Connects and applies migrations. SQLite files (and their folder) are created when missing.
    pub async fn connect(url: &str) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let sqlite = url.starts_with("sqlite:");
        let url = if sqlite { sqlite_url(url)? } else { url.to_string() };
        let opts = AnyConnectOptions::from_str(&url)
            .map_err(|e| Error::Internal(format!("database_url `{}`: {e}", redact(&url))))?;
        let pool = AnyPoolOptions::new()
            // SQLite allows one writer; more connections only add lock contention.
            .max_connections(if sqlite { 4 } else { 16 })
            .acquire_timeout(std::time::Duration::from_secs(10))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if sqlite {
                        sqlx::query("PRAGMA busy_timeout = 10000").execute(&mut *conn).await?;
                        sqlx::query("PRAGMA foreign_keys = ON").execute(&mut *conn).await?;
                    }
                    Ok(())
                })
            })
            .connect_with(opts)
            .await
            .map_err(|e| Error::Internal(format!("cannot connect to database {}: {e}", redact(&url))))?;
        if sqlite {
            sqlx::query("PRAGMA journal_mode = WAL").execute(&pool).await?;
            SQLITE_MIGRATIONS.run(&pool).await.map_err(|e| Error::Internal(format!("migrations: {e}")))?;
        } else {
            PG_MIGRATIONS.run(&pool).await.map_err(|e| Error::Internal(format!("migrations: {e}")))?;
        }
        Ok(Store { pool })
    }

    /// The pool, for services that add their own tables.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Inserts an entity version unless its key exists, in which case the stored row is returned.
    pub async fn insert_entity(&self, row: &EntityRow) -> Result<Insert> {
        let sql = format!(
            "INSERT INTO entities ({ENTITY_FIELDS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             ON CONFLICT DO NOTHING"
        );
        let done = sqlx::query(&sql)
            .bind(row.resource_type)
            .bind(&row.project)
            .bind(&row.domain)
            .bind(&row.name)
            .bind(&row.version)
            .bind(&row.digest)
            .bind(&row.spec)
            .bind(&row.closure)
            .bind(row.state)
            .bind(row.created_at)
            .bind(row.updated_at)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 1 {
            return Ok(Insert::Inserted);
        }
        match self.get_entity(row.resource_type, &row.project, &row.domain, &row.name, &row.version).await? {
            Some(existing) => Ok(Insert::Exists(Box::new(existing))),
            None => Err(Error::Internal("insert conflicted but no row exists".into())),
        }
    }

    /// One entity version.
    pub async fn get_entity(
        &self,
        rt: i32,
        project: &str,
        domain: &str,
        name: &str,
        version: &str,
    ) -> Result<Option<EntityRow>> {
        let sql = format!(
            "SELECT {ENTITY_FIELDS} FROM entities \
             WHERE resource_type = $1 AND project = $2 AND domain = $3 AND name = $4 AND version = $5"
        );
        let row = sqlx::query(&sql)
            .bind(rt)
            .bind(project)
            .bind(domain)
            .bind(name)
            .bind(version)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| entity_from_row(&r)).transpose()
    }

    /// A page of entity versions in a project/domain, optionally of one name.
    pub async fn list_entities(
        &self,
        rt: i32,
        project: &str,
        domain: &str,
        name: Option<&str>,
        q: &ListQuery<'_>,
    ) -> Result<Vec<EntityRow>> {
        let mut binds = vec![Value::Int(rt as i64), Value::Text(project.into()), Value::Text(domain.into())];
        let mut sql =
            format!("SELECT {ENTITY_FIELDS} FROM entities WHERE resource_type = $1 AND project = $2 AND domain = $3");
        if let Some(n) = name {
            binds.push(Value::Text(n.into()));
            sql.push_str(" AND name = $4");
        }
        let (cond, vals) = filters::to_sql(q.filters, ENTITY_COLUMNS, binds.len() + 1)?;
        sql.push_str(&cond);
        binds.extend(vals);
        // name last: the order must be total or offset pages repeat or skip rows at ties
        sql.push_str(&format!(" ORDER BY {}, version ASC, name ASC LIMIT {} OFFSET {}", q.order_by, q.limit, q.offset));
        let rows = bind_all(sqlx::query(&sql), &binds).fetch_all(&self.pool).await?;
        rows.iter().map(entity_from_row).collect()
    }

    /// A page of distinct entity names in a project/domain.
    pub async fn list_names(
        &self,
        rt: i32,
        project: &str,
        domain: &str,
        q: &ListQuery<'_>,
    ) -> Result<Vec<(String, i64)>> {
        let binds = vec![Value::Int(rt as i64), Value::Text(project.into()), Value::Text(domain.into())];
        let (cond, vals) = filters::to_sql(q.filters, ENTITY_COLUMNS, binds.len() + 1)?;
        let mut all = binds;
        all.extend(vals);
        // created_at of a name = its first registration, so a name's position is stable
        let order = q.order_by.replace("created_at", "MIN(created_at)");
        let sql = format!(
            "SELECT name, MIN(created_at) AS first_at FROM entities \
             WHERE resource_type = $1 AND project = $2 AND domain = $3{cond} \
             GROUP BY name ORDER BY {order}, name ASC LIMIT {} OFFSET {}",
            q.limit, q.offset
        );
        let rows = bind_all(sqlx::query(&sql), &all).fetch_all(&self.pool).await?;
        rows.iter().map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<i64, _>(1)?))).collect()
    }

    /// Makes one launch plan version ACTIVE and every other version of its name INACTIVE, or makes
    /// it INACTIVE, in one transaction. Returns false when the version does not exist.
    pub async fn set_launch_plan_state(
        &self,
        project: &str,
        domain: &str,
        name: &str,
        version: &str,
        active: bool,
        now: i64,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        if active {
            sqlx::query(
                "UPDATE entities SET state = 0, updated_at = $5 WHERE resource_type = 3 AND project = $1 \
                 AND domain = $2 AND name = $3 AND version <> $4 AND state = 1",
            )
            .bind(project)
            .bind(domain)
            .bind(name)
            .bind(version)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        let done = sqlx::query(
            "UPDATE entities SET state = $5, updated_at = $6 WHERE resource_type = 3 AND project = $1 \
             AND domain = $2 AND name = $3 AND version = $4",
        )
        .bind(project)
        .bind(domain)
        .bind(name)
        .bind(version)
        .bind(if active { 1i32 } else { 0i32 })
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        tx.commit().await?;
        Ok(true)
    }

    /// The active version of a launch plan name, if any.
    pub async fn active_launch_plan(&self, project: &str, domain: &str, name: &str) -> Result<Option<EntityRow>> {
        let sql = format!(
            "SELECT {ENTITY_FIELDS} FROM entities WHERE resource_type = 3 AND project = $1 AND domain = $2 \
             AND name = $3 AND state = 1"
        );
        let row = sqlx::query(&sql).bind(project).bind(domain).bind(name).fetch_optional(&self.pool).await?;
        row.map(|r| entity_from_row(&r)).transpose()
    }

    /// A page of active launch plans of a project/domain.
    pub async fn list_active_launch_plans(
        &self,
        project: &str,
        domain: &str,
        q: &ListQuery<'_>,
    ) -> Result<Vec<EntityRow>> {
        let sql = format!(
            "SELECT {ENTITY_FIELDS} FROM entities WHERE resource_type = 3 AND project = $1 AND domain = $2 \
             AND state = 1 ORDER BY {}, name ASC LIMIT {} OFFSET {}",
            q.order_by, q.limit, q.offset
        );
        let rows = sqlx::query(&sql).bind(project).bind(domain).fetch_all(&self.pool).await?;
        rows.iter().map(entity_from_row).collect()
    }

    /// Inserts a project; false when the id is taken.
    pub async fn insert_project(&self, p: &ProjectRow) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO projects (id, name, description, labels, state, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $6) ON CONFLICT DO NOTHING",
        )
        .bind(&p.id)
        .bind(&p.name)
        .bind(&p.description)
        .bind(&p.labels)
        .bind(p.state)
        .bind(p.created_at)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Updates a project's name, description, labels and state; false when it does not exist.
    pub async fn update_project(&self, p: &ProjectRow, now: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE projects SET name = $2, description = $3, labels = $4, state = $5, updated_at = $6 WHERE id = $1",
        )
        .bind(&p.id)
        .bind(&p.name)
        .bind(&p.description)
        .bind(&p.labels)
        .bind(p.state)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// One project.
    pub async fn get_project(&self, id: &str) -> Result<Option<ProjectRow>> {
        let row = sqlx::query("SELECT id, name, description, labels, state, created_at FROM projects WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| project_from_row(&r)).transpose()
    }

    /// A page of projects.
    pub async fn list_projects(&self, q: &ListQuery<'_>) -> Result<Vec<ProjectRow>> {
        let (cond, vals) = filters::to_sql(q.filters, PROJECT_COLUMNS, 1)?;
        let sql = format!(
            "SELECT id, name, description, labels, state, created_at FROM projects WHERE 1 = 1{cond} \
             ORDER BY {}, id ASC LIMIT {} OFFSET {}",
            q.order_by, q.limit, q.offset
        );
        let rows = bind_all(sqlx::query(&sql), &vals).fetch_all(&self.pool).await?;
        rows.iter().map(project_from_row).collect()
    }
}

fn bind_all<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    values: &'q [Value],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    for v in values {
        q = match v {
            Value::Text(s) => q.bind(s.as_str()),
            Value::Int(i) => q.bind(*i),
        };
    }
    q
}

fn entity_from_row(r: &AnyRow) -> Result<EntityRow> {
    Ok(EntityRow {
        resource_type: r.try_get(0)?,
        project: r.try_get(1)?,
        domain: r.try_get(2)?,
        name: r.try_get(3)?,
        version: r.try_get(4)?,
        digest: r.try_get(5)?,
        spec: r.try_get(6)?,
        closure: r.try_get(7)?,
        state: r.try_get(8)?,
        created_at: r.try_get(9)?,
        updated_at: r.try_get(10)?,
    })
}

fn project_from_row(r: &AnyRow) -> Result<ProjectRow> {
    Ok(ProjectRow {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        description: r.try_get(2)?,
        labels: r.try_get(3)?,
        state: r.try_get(4)?,
        created_at: r.try_get(5)?,
    })
}

/// `sqlite://relative/or/absolute/path.db` -> a URL that creates the file, after creating its folder.
fn sqlite_url(url: &str) -> Result<String> {
    let rest = url.trim_start_matches("sqlite:").trim_start_matches("//");
    if rest.is_empty() || rest == ":memory:" {
        return Ok("sqlite::memory:".into());
    }
    let path = rest.split('?').next().unwrap_or(rest);
    if let Some(dir) = std::path::Path::new(path).parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::Internal(format!("cannot create {}: {e}", dir.display())))?;
    }
    Ok(if rest.contains('?') { format!("sqlite://{rest}") } else { format!("sqlite://{rest}?mode=rwc") })
}

/// Hides a password in a database URL for messages.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

/// One stored execution.
#[derive(Debug, Clone)]
pub struct ExecutionRow {
    /// Project.
    pub project: String,
    /// Domain.
    pub domain: String,
    /// Name.
    pub name: String,
    /// Launch plan (or task) name.
    pub launch_plan: String,
    /// Workflow name.
    pub workflow: String,
    /// Phase.
    pub phase: i32,
    /// Execution mode.
    pub mode: i32,
    /// Encoded ExecutionSpec.
    pub spec: Vec<u8>,
    /// Encoded ExecutionClosure.
    pub closure: Vec<u8>,
    /// Where the merged inputs are.
    pub inputs_uri: String,
    /// Unix microseconds.
    pub created_at: i64,
    /// Unix microseconds.
    pub updated_at: i64,
    /// Optimistic-concurrency version.
    pub version: i64,
}

/// Columns execution lists may filter and sort on.
pub const EXECUTION_COLUMNS: &[Column] = &[
    Column { field: "name", column: "name", integer: false },
    Column { field: "phase", column: "phase", integer: true },
    Column { field: "mode", column: "mode", integer: true },
    Column { field: "launch_plan", column: "launch_plan", integer: false },
    Column { field: "workflow", column: "workflow", integer: false },
    Column { field: "created_at", column: "created_at", integer: true },
    Column { field: "updated_at", column: "updated_at", integer: true },
];

/// Columns node-execution lists may filter and sort on.
pub const NODE_COLUMNS: &[Column] = &[
    Column { field: "node_id", column: "node_id", integer: false },
    Column { field: "phase", column: "phase", integer: true },
    Column { field: "created_at", column: "created_at", integer: true },
    Column { field: "updated_at", column: "updated_at", integer: true },
];

/// Columns task-execution lists may filter and sort on.
pub const TASK_COLUMNS: &[Column] = &[
    Column { field: "retry_attempt", column: "retry_attempt", integer: true },
    Column { field: "phase", column: "phase", integer: true },
    Column { field: "created_at", column: "created_at", integer: true },
    Column { field: "updated_at", column: "updated_at", integer: true },
];

const EXECUTION_FIELDS: &str = "project, domain, name, launch_plan, workflow, phase, mode, spec, closure, inputs_uri, created_at, updated_at, version";

/// A stored node execution.
#[derive(Debug, Clone)]
pub struct NodeRow {
    /// Node id.
    pub node_id: String,
    /// Parent node id.
    pub parent_id: String,
    /// Phase.
    pub phase: i32,
    /// Input URI.
    pub input_uri: String,
    /// Encoded NodeExecutionClosure.
    pub closure: Vec<u8>,
    /// Encoded NodeExecutionMetaData.
    pub metadata: Vec<u8>,
    /// Newest applied event, unix microseconds.
    pub occurred_at: i64,
    /// Unix microseconds.
    pub created_at: i64,
    /// Optimistic-concurrency version.
    pub version: i64,
}

/// A stored task attempt.
#[derive(Debug, Clone)]
pub struct TaskRow {
    /// Node id.
    pub node_id: String,
    /// Attempt.
    pub retry_attempt: i32,
    /// Encoded task Identifier.
    pub task_id: Vec<u8>,
    /// Phase.
    pub phase: i32,
    /// Phase version.
    pub phase_version: i32,
    /// Input URI.
    pub input_uri: String,
    /// Encoded TaskExecutionClosure.
    pub closure: Vec<u8>,
    /// Newest applied event, unix microseconds.
    pub occurred_at: i64,
    /// Unix microseconds.
    pub created_at: i64,
    /// Optimistic-concurrency version.
    pub version: i64,
}

impl Store {
    /// Inserts an execution; false when the name is taken.
    pub async fn insert_execution(&self, e: &ExecutionRow) -> Result<bool> {
        let sql = format!(
            "INSERT INTO executions ({EXECUTION_FIELDS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 0) \
             ON CONFLICT DO NOTHING"
        );
        let done = sqlx::query(&sql)
            .bind(&e.project)
            .bind(&e.domain)
            .bind(&e.name)
            .bind(&e.launch_plan)
            .bind(&e.workflow)
            .bind(e.phase)
            .bind(e.mode)
            .bind(&e.spec)
            .bind(&e.closure)
            .bind(&e.inputs_uri)
            .bind(e.created_at)
            .bind(e.updated_at)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// One execution.
    pub async fn get_execution(&self, project: &str, domain: &str, name: &str) -> Result<Option<ExecutionRow>> {
        let sql = format!("SELECT {EXECUTION_FIELDS} FROM executions WHERE project = $1 AND domain = $2 AND name = $3");
        let row = sqlx::query(&sql).bind(project).bind(domain).bind(name).fetch_optional(&self.pool).await?;
        row.map(|r| execution_from_row(&r)).transpose()
    }

    /// Writes a new phase and closure if nobody changed the row since `version` was read.
    pub async fn update_execution(&self, e: &ExecutionRow) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE executions SET phase = $4, closure = $5, updated_at = $6, version = version + 1 \
             WHERE project = $1 AND domain = $2 AND name = $3 AND version = $7",
        )
        .bind(&e.project)
        .bind(&e.domain)
        .bind(&e.name)
        .bind(e.phase)
        .bind(&e.closure)
        .bind(e.updated_at)
        .bind(e.version)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// A page of executions of a project/domain.
    pub async fn list_executions(&self, project: &str, domain: &str, q: &ListQuery<'_>) -> Result<Vec<ExecutionRow>> {
        let (cond, vals) = filters::to_sql(q.filters, EXECUTION_COLUMNS, 3)?;
        let sql = format!(
            "SELECT {EXECUTION_FIELDS} FROM executions WHERE project = $1 AND domain = $2{cond} \
             ORDER BY {}, name ASC LIMIT {} OFFSET {}",
            q.order_by, q.limit, q.offset
        );
        let mut binds = vec![Value::Text(project.into()), Value::Text(domain.into())];
        binds.extend(vals);
        let rows = bind_all(sqlx::query(&sql), &binds).fetch_all(&self.pool).await?;
        rows.iter().map(execution_from_row).collect()
    }

    /// One node execution.
    pub async fn get_node(
        &self,
        project: &str,
        domain: &str,
        execution: &str,
        node_id: &str,
    ) -> Result<Option<NodeRow>> {
        let row = sqlx::query(
            "SELECT node_id, parent_id, phase, input_uri, closure, metadata, occurred_at, created_at, version \
             FROM node_executions WHERE project = $1 AND domain = $2 AND execution = $3 AND node_id = $4",
        )
        .bind(project)
        .bind(domain)
        .bind(execution)
        .bind(node_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| node_from_row(&r)).transpose()
    }

    /// Inserts a node execution (`version` None) or updates it if unchanged since `version`.
    /// False when another writer got there first (the caller re-reads and re-applies).
    pub async fn put_node(&self, project: &str, domain: &str, execution: &str, n: &NodeRow, now: i64) -> Result<bool> {
        let done = if n.version < 0 {
            sqlx::query(
                "INSERT INTO node_executions (project, domain, execution, node_id, parent_id, phase, input_uri, closure, \
                 metadata, occurred_at, created_at, updated_at, version) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11, 0) ON CONFLICT DO NOTHING",
            )
            .bind(project)
            .bind(domain)
            .bind(execution)
            .bind(&n.node_id)
            .bind(&n.parent_id)
            .bind(n.phase)
            .bind(&n.input_uri)
            .bind(&n.closure)
            .bind(&n.metadata)
            .bind(n.occurred_at)
            .bind(now)
            .execute(&self.pool)
            .await?
        } else {
            sqlx::query(
                "UPDATE node_executions SET phase = $5, input_uri = $6, closure = $7, metadata = $8, occurred_at = $9, \
                 updated_at = $10, version = version + 1 \
                 WHERE project = $1 AND domain = $2 AND execution = $3 AND node_id = $4 AND version = $11",
            )
            .bind(project)
            .bind(domain)
            .bind(execution)
            .bind(&n.node_id)
            .bind(n.phase)
            .bind(&n.input_uri)
            .bind(&n.closure)
            .bind(&n.metadata)
            .bind(n.occurred_at)
            .bind(now)
            .bind(n.version)
            .execute(&self.pool)
            .await?
        };
        Ok(done.rows_affected() == 1)
    }

    /// A page of node executions under `parent_id` ('' = top level).
    pub async fn list_nodes(
        &self,
        project: &str,
        domain: &str,
        execution: &str,
        parent_id: &str,
        q: &ListQuery<'_>,
    ) -> Result<Vec<NodeRow>> {
        let (cond, vals) = filters::to_sql(q.filters, NODE_COLUMNS, 5)?;
        let sql = format!(
            "SELECT node_id, parent_id, phase, input_uri, closure, metadata, occurred_at, created_at, version \
             FROM node_executions WHERE project = $1 AND domain = $2 AND execution = $3 AND parent_id = $4{cond} \
             ORDER BY {}, node_id ASC LIMIT {} OFFSET {}",
            q.order_by, q.limit, q.offset
        );
        let mut binds = vec![
            Value::Text(project.into()),
            Value::Text(domain.into()),
            Value::Text(execution.into()),
            Value::Text(parent_id.into()),
        ];
        binds.extend(vals);
        let rows = bind_all(sqlx::query(&sql), &binds).fetch_all(&self.pool).await?;
        rows.iter().map(node_from_row).collect()
    }

    /// One task attempt.
    pub async fn get_task_execution(
        &self,
        project: &str,
        domain: &str,
        execution: &str,
        node_id: &str,
        attempt: i32,
    ) -> Result<Option<TaskRow>> {
        let row = sqlx::query(
            "SELECT node_id, retry_attempt, task_id, phase, phase_version, input_uri, closure, occurred_at, created_at, version \
             FROM task_executions WHERE project = $1 AND domain = $2 AND execution = $3 AND node_id = $4 AND retry_attempt = $5",
        )
        .bind(project)
        .bind(domain)
        .bind(execution)
        .bind(node_id)
        .bind(attempt)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| task_from_row(&r)).transpose()
    }

    /// Inserts (`version` < 0) or updates a task attempt with the same concurrency rule as nodes.
    pub async fn put_task_execution(
        &self,
        project: &str,
        domain: &str,
        execution: &str,
        t: &TaskRow,
        now: i64,
    ) -> Result<bool> {
        let done = if t.version < 0 {
            sqlx::query(
                "INSERT INTO task_executions (project, domain, execution, node_id, retry_attempt, task_id, phase, phase_version, \
                 input_uri, closure, occurred_at, created_at, updated_at, version) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12, 0) ON CONFLICT DO NOTHING",
            )
            .bind(project)
            .bind(domain)
            .bind(execution)
            .bind(&t.node_id)
            .bind(t.retry_attempt)
            .bind(&t.task_id)
            .bind(t.phase)
            .bind(t.phase_version)
            .bind(&t.input_uri)
            .bind(&t.closure)
            .bind(t.occurred_at)
            .bind(now)
            .execute(&self.pool)
            .await?
        } else {
            sqlx::query(
                "UPDATE task_executions SET phase = $6, phase_version = $7, input_uri = $8, closure = $9, occurred_at = $10, \
                 updated_at = $11, version = version + 1 \
                 WHERE project = $1 AND domain = $2 AND execution = $3 AND node_id = $4 AND retry_attempt = $5 AND version = $12",
            )
            .bind(project)
            .bind(domain)
            .bind(execution)
            .bind(&t.node_id)
            .bind(t.retry_attempt)
            .bind(t.phase)
            .bind(t.phase_version)
            .bind(&t.input_uri)
            .bind(&t.closure)
            .bind(t.occurred_at)
            .bind(now)
            .bind(t.version)
            .execute(&self.pool)
            .await?
        };
        Ok(done.rows_affected() == 1)
    }

    /// Marks every node execution and task attempt of an execution that has not finished as
    /// ABORTED (used when the execution is aborted: the attempts' own ABORTED events may arrive
    /// later, and a reader must not see a running attempt under an aborted execution).
    pub async fn abort_unfinished(&self, project: &str, domain: &str, execution: &str, now: i64) -> Result<()> {
        // node phases: SUCCEEDED 3, FAILED 5, ABORTED 6, SKIPPED 7, TIMED_OUT 8, RECOVERED 10
        sqlx::query(
            "UPDATE node_executions SET phase = 6, updated_at = $4, version = version + 1 \
             WHERE project = $1 AND domain = $2 AND execution = $3 AND phase NOT IN (3, 5, 6, 7, 8, 10)",
        )
        .bind(project)
        .bind(domain)
        .bind(execution)
        .bind(now)
        .execute(&self.pool)
        .await?;
        // task phases: SUCCEEDED 3, ABORTED 4, FAILED 5, RETRYABLE_FAILED 8
        sqlx::query(
            "UPDATE task_executions SET phase = 4, updated_at = $4, version = version + 1 \
             WHERE project = $1 AND domain = $2 AND execution = $3 AND phase NOT IN (3, 4, 5, 8)",
        )
        .bind(project)
        .bind(domain)
        .bind(execution)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A page of the attempts of one node.
    pub async fn list_task_executions(
        &self,
        project: &str,
        domain: &str,
        execution: &str,
        node_id: &str,
        children: bool,
        q: &ListQuery<'_>,
    ) -> Result<Vec<TaskRow>> {
        let (cond, vals) = filters::to_sql(q.filters, TASK_COLUMNS, 5)?;
        // `children`: the attempts of the node's child nodes (an array node's sub-tasks)
        let node = if children {
            "node_id IN (SELECT node_id FROM node_executions \
             WHERE project = $1 AND domain = $2 AND execution = $3 AND parent_id = $4)"
        } else {
            "node_id = $4"
        };
        let sql = format!(
            "SELECT node_id, retry_attempt, task_id, phase, phase_version, input_uri, closure, occurred_at, created_at, version \
             FROM task_executions WHERE project = $1 AND domain = $2 AND execution = $3 AND {node}{cond} \
             ORDER BY {}, node_id ASC, retry_attempt ASC LIMIT {} OFFSET {}",
            q.order_by, q.limit, q.offset
        );
        let mut binds = vec![
            Value::Text(project.into()),
            Value::Text(domain.into()),
            Value::Text(execution.into()),
            Value::Text(node_id.into()),
        ];
        binds.extend(vals);
        let rows = bind_all(sqlx::query(&sql), &binds).fetch_all(&self.pool).await?;
        rows.iter().map(task_from_row).collect()
    }
}

fn execution_from_row(r: &AnyRow) -> Result<ExecutionRow> {
    Ok(ExecutionRow {
        project: r.try_get(0)?,
        domain: r.try_get(1)?,
        name: r.try_get(2)?,
        launch_plan: r.try_get(3)?,
        workflow: r.try_get(4)?,
        phase: r.try_get(5)?,
        mode: r.try_get(6)?,
        spec: r.try_get(7)?,
        closure: r.try_get(8)?,
        inputs_uri: r.try_get(9)?,
        created_at: r.try_get(10)?,
        updated_at: r.try_get(11)?,
        version: r.try_get(12)?,
    })
}

fn node_from_row(r: &AnyRow) -> Result<NodeRow> {
    Ok(NodeRow {
        node_id: r.try_get(0)?,
        parent_id: r.try_get(1)?,
        phase: r.try_get(2)?,
        input_uri: r.try_get(3)?,
        closure: r.try_get(4)?,
        metadata: r.try_get(5)?,
        occurred_at: r.try_get(6)?,
        created_at: r.try_get(7)?,
        version: r.try_get(8)?,
    })
}

fn task_from_row(r: &AnyRow) -> Result<TaskRow> {
    Ok(TaskRow {
        node_id: r.try_get(0)?,
        retry_attempt: r.try_get(1)?,
        task_id: r.try_get(2)?,
        phase: r.try_get(3)?,
        phase_version: r.try_get(4)?,
        input_uri: r.try_get(5)?,
        closure: r.try_get(6)?,
        occurred_at: r.try_get(7)?,
        created_at: r.try_get(8)?,
        version: r.try_get(9)?,
    })
}

/// One signal of an execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignalRow {
    /// Signal id.
    pub signal_id: String,
    /// Encoded LiteralType.
    pub type_: Vec<u8>,
    /// Encoded Literal; empty until set.
    pub value: Vec<u8>,
    /// Unix microseconds when the value was set; 0 while unset.
    pub set_at: i64,
}

fn signal_from_row(r: &sqlx::any::AnyRow) -> Result<SignalRow> {
    Ok(SignalRow { signal_id: r.try_get(0)?, type_: r.try_get(1)?, value: r.try_get(2)?, set_at: r.try_get(3)? })
}

impl Store {
    /// The signal, created (unset, of `type_`) if it does not exist yet.
    pub async fn get_or_create_signal(
        &self,
        exec: (&str, &str, &str),
        signal_id: &str,
        type_: &[u8],
        now: i64,
    ) -> Result<SignalRow> {
        sqlx::query(
            "INSERT INTO signals (project, domain, execution, signal_id, type, value, created_at, set_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 0) ON CONFLICT DO NOTHING",
        )
        .bind(exec.0)
        .bind(exec.1)
        .bind(exec.2)
        .bind(signal_id)
        .bind(type_)
        .bind(Vec::<u8>::new())
        .bind(now)
        .execute(&self.pool)
        .await?;
        self.get_signal(exec, signal_id).await?.ok_or_else(|| {
            crate::error::Error::Internal(format!("signal {signal_id} vanished right after it was created"))
        })
    }

    /// One signal.
    pub async fn get_signal(&self, exec: (&str, &str, &str), signal_id: &str) -> Result<Option<SignalRow>> {
        let row = sqlx::query(
            "SELECT signal_id, type, value, set_at FROM signals \
             WHERE project = $1 AND domain = $2 AND execution = $3 AND signal_id = $4",
        )
        .bind(exec.0)
        .bind(exec.1)
        .bind(exec.2)
        .bind(signal_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| signal_from_row(&r)).transpose()
    }

    /// A page of an execution's signals, oldest first.
    pub async fn list_signals(&self, exec: (&str, &str, &str), limit: i64, offset: i64) -> Result<Vec<SignalRow>> {
        let sql = format!(
            "SELECT signal_id, type, value, set_at FROM signals WHERE project = $1 AND domain = $2 AND execution = $3 \
             ORDER BY created_at ASC, signal_id ASC LIMIT {limit} OFFSET {offset}"
        );
        let rows = sqlx::query(&sql).bind(exec.0).bind(exec.1).bind(exec.2).fetch_all(&self.pool).await?;
        rows.iter().map(signal_from_row).collect()
    }

    /// Sets an unset signal's value; false if it was already set (or does not exist).
    pub async fn set_signal(&self, exec: (&str, &str, &str), signal_id: &str, value: &[u8], now: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE signals SET value = $5, set_at = $6 \
             WHERE project = $1 AND domain = $2 AND execution = $3 AND signal_id = $4 AND set_at = 0",
        )
        .bind(exec.0)
        .bind(exec.1)
        .bind(exec.2)
        .bind(signal_id)
        .bind(value)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
