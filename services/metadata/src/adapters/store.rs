//! The registry's storage on Postgres or SQLite, through sqlx's `Any` driver so one set of
//! queries serves both (`$n` placeholders work on both; DDL differs only in BYTEA/BLOB, hence two
//! migration folders).

use std::str::FromStr;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

use crate::domain::filters::{self, Column, Filter, Value};
use crate::error::{Error, Result};

static PG_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");
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
    pub async fn get_entity(&self, rt: i32, project: &str, domain: &str, name: &str, version: &str) -> Result<Option<EntityRow>> {
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
        let mut sql = format!("SELECT {ENTITY_FIELDS} FROM entities WHERE resource_type = $1 AND project = $2 AND domain = $3");
        if let Some(n) = name {
            binds.push(Value::Text(n.into()));
            sql.push_str(" AND name = $4");
        }
        let (cond, vals) = filters::to_sql(q.filters, ENTITY_COLUMNS, binds.len() + 1)?;
        sql.push_str(&cond);
        binds.extend(vals);
        sql.push_str(&format!(" ORDER BY {}, version ASC LIMIT {} OFFSET {}", q.order_by, q.limit, q.offset));
        let rows = bind_all(sqlx::query(&sql), &binds).fetch_all(&self.pool).await?;
        rows.iter().map(entity_from_row).collect()
    }

    /// A page of distinct entity names in a project/domain.
    pub async fn list_names(&self, rt: i32, project: &str, domain: &str, q: &ListQuery<'_>) -> Result<Vec<(String, i64)>> {
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
    pub async fn set_launch_plan_state(&self, project: &str, domain: &str, name: &str, version: &str, active: bool, now: i64) -> Result<bool> {
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
    pub async fn list_active_launch_plans(&self, project: &str, domain: &str, q: &ListQuery<'_>) -> Result<Vec<EntityRow>> {
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
