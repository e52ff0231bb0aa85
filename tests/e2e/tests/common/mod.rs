//! Shared helpers of the end-to-end tests: an in-process metadata service on fresh storage, the
//! flytekit venv's commands, and fixture projects copied to a scratch directory.
//!
//! Everything here is safe to use from tests running in parallel: ports are chosen by the OS,
//! databases and projects get unique names, and nothing is written outside a temporary directory.

#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sqlx::Connection;
use tokio_util::sync::CancellationToken;

/// How long one flytekit command may take before the test gives up (they take 1-4 s).
pub const PYTHON_TIMEOUT: Duration = Duration::from_secs(180);

/// `tests/e2e/fixtures`.
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// Which database the metadata service runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    /// A SQLite file in the test's temporary directory.
    Sqlite,
    /// A fresh database on the dev Postgres server.
    Postgres,
}

/// A database created for one test.
pub struct TestDb {
    /// URL for `aloft_metadata::Config::database_url`.
    pub url: String,
    /// Postgres only: the database to drop at the end.
    pg_name: Option<String>,
}

impl TestDb {
    /// A new, empty database of the given kind; SQLite files go under `dir`.
    pub async fn create(kind: Db, dir: &Path) -> Result<TestDb> {
        match kind {
            Db::Sqlite => Ok(TestDb { url: format!("sqlite://{}", dir.join("metadata.db").display()), pg_name: None }),
            Db::Postgres => {
                let admin_url = &aloft_testkit::deps().database_url;
                let name = aloft_testkit::unique_name("e2e");
                let mut conn =
                    sqlx::PgConnection::connect(admin_url).await.with_context(|| "connecting to DATABASE_URL")?;
                sqlx::query(&format!("CREATE DATABASE \"{name}\"")).execute(&mut conn).await?;
                conn.close().await?;
                Ok(TestDb { url: with_database(admin_url, &name)?, pg_name: Some(name) })
            }
        }
    }

    /// Drops a Postgres database (`WITH (FORCE)`: connections still open are closed).
    pub async fn drop_db(self) -> Result<()> {
        if let Some(name) = self.pg_name {
            let mut conn = sqlx::PgConnection::connect(&aloft_testkit::deps().database_url).await?;
            sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).execute(&mut conn).await?;
            conn.close().await?;
        }
        Ok(())
    }
}

/// `url` with its database (path) replaced by `db`, keeping any query string.
fn with_database(url: &str, db: &str) -> Result<String> {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let Some(after_scheme) = base.find("://").map(|i| i + 3) else { bail!("DATABASE_URL {url:?} has no scheme") };
    let host_end = base[after_scheme..].find('/').map(|i| i + after_scheme).unwrap_or(base.len());
    let mut out = format!("{}/{db}", &base[..host_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    Ok(out)
}

/// A metadata service started in this process on port 0 with a local-directory store.
pub struct Metadata {
    /// The started service.
    pub running: aloft_metadata::Running,
    /// Cancels both servers.
    pub shutdown: CancellationToken,
    /// The store's root as configured: a directory for the local store, `s3://...` for S3.
    pub store_root: PathBuf,
    /// A test that fails early still stops the servers.
    _stop_on_drop: tokio_util::sync::DropGuard,
}

impl Metadata {
    /// Starts the service on `database_url`, storing blobs under `store_root`.
    pub async fn start(database_url: &str, store_root: &Path) -> Result<Metadata> {
        std::fs::create_dir_all(store_root)?;
        let storage = aloft_blob::BlobConfig::local(store_root.to_str().context("store path is not UTF-8")?);
        Self::start_with(Self::config(database_url, storage)).await
    }

    /// The test configuration: both listeners on port 0, projects created on first use, no bus.
    pub fn config(database_url: &str, storage: aloft_blob::BlobConfig) -> aloft_metadata::Config {
        let mut config = aloft_metadata::Config::default();
        config.grpc.listen = "127.0.0.1:0".into();
        config.http.listen = "127.0.0.1:0".into();
        config.database_url = database_url.to_string();
        config.storage = storage;
        config.projects.auto_create = true;
        config
    }

    /// Starts the service with `config` as given (for example with a bus or an S3 store).
    /// `store_root` is the storage root as configured (a directory only for a local store).
    pub async fn start_with(config: aloft_metadata::Config) -> Result<Metadata> {
        let store_root = PathBuf::from(&config.storage.root);
        let shutdown = CancellationToken::new();
        let running = aloft_metadata::start(config, shutdown.clone()).await.context("starting aloft-metadata")?;
        let _stop_on_drop = shutdown.clone().drop_guard();
        Ok(Metadata { running, shutdown, store_root, _stop_on_drop })
    }

    /// `127.0.0.1:PORT` of the gRPC side.
    pub fn endpoint(&self) -> String {
        self.running.grpc_addr.to_string()
    }

    /// Writes a flytekit config file pointing at this service (plaintext, no auth).
    pub fn write_flyte_config(&self, path: &Path) -> Result<()> {
        let yaml = format!("admin:\n  endpoint: dns:///{}\n  insecure: true\n", self.endpoint());
        std::fs::write(path, yaml)?;
        Ok(())
    }

    /// Stops both servers and waits for them.
    pub async fn stop(self) -> Result<()> {
        self.shutdown.cancel();
        self.running.task.await??;
        Ok(())
    }
}

/// Copies a directory tree, skipping Python caches.
pub fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        if name == "__pycache__" || name == ".pytest_cache" {
            continue;
        }
        let (src, dst) = (entry.path(), to.join(&name));
        if entry.file_type()?.is_dir() {
            copy_tree(&src, &dst)?;
        } else {
            std::fs::copy(&src, &dst).with_context(|| format!("copying {}", src.display()))?;
        }
    }
    Ok(())
}

/// Replaces exactly one occurrence of `from` in a file.
pub fn edit_file(path: &Path, from: &str, to: &str) -> Result<()> {
    let text = std::fs::read_to_string(path)?;
    if text.matches(from).count() != 1 {
        bail!("{} must contain {from:?} exactly once", path.display());
    }
    std::fs::write(path, text.replacen(from, to, 1))?;
    Ok(())
}

/// What a finished command printed.
#[derive(Debug)]
pub struct Output {
    /// Exit status.
    pub status: std::process::ExitStatus,
    /// stdout.
    pub stdout: String,
    /// stderr.
    pub stderr: String,
    /// Wall time.
    pub elapsed: Duration,
}

impl Output {
    /// stdout and stderr together, for assertions on messages wherever flytekit printed them.
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }

    /// A readable dump for assertion messages.
    pub fn dump(&self) -> String {
        format!("exit: {}\n--- stdout ---\n{}\n--- stderr ---\n{}", self.status, self.stdout, self.stderr)
    }
}

/// The flytekit virtualenv: runs its commands with a private HOME and nothing inherited that
/// could point flytekit at another backend.
pub struct Venv {
    root: PathBuf,
    home: PathBuf,
}

impl Venv {
    /// The dev venv (`ALOFT_PYTHON_VENV`), with `home` as HOME for every command.
    pub fn new(home: &Path) -> Result<Venv> {
        let root = aloft_testkit::deps().python_venv.clone();
        if !root.join("bin/pyflyte").is_file() {
            bail!("{} has no bin/pyflyte: run scripts/dev-deps.sh", root.display());
        }
        std::fs::create_dir_all(home)?;
        Ok(Venv { root, home: home.to_path_buf() })
    }

    /// Absolute path of a venv executable.
    pub fn bin(&self, name: &str) -> PathBuf {
        self.root.join("bin").join(name)
    }

    /// Runs a venv executable (`pyflyte`, `python`) with `args` in `cwd`.
    pub async fn run(&self, program: &str, args: &[&str], cwd: &Path) -> Result<Output> {
        self.run_for(program, args, cwd, PYTHON_TIMEOUT).await
    }

    /// [`Venv::run`] with its own time limit (for commands that wait on long executions).
    pub async fn run_for(&self, program: &str, args: &[&str], cwd: &Path, limit: Duration) -> Result<Output> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![self.root.join("bin")];
        paths.extend(std::env::split_paths(&path));
        let mut cmd = tokio::process::Command::new(self.bin(program));
        cmd.args(args)
            .current_dir(cwd)
            .env("PATH", std::env::join_paths(paths)?)
            .env("HOME", &self.home)
            .env("VIRTUAL_ENV", &self.root)
            // keep the copied fixture free of __pycache__ and rich's output unwrapped
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("COLUMNS", "400")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for var in ["FLYTECTL_CONFIG", "FLYTE_PLATFORM_URL", "FLYTE_PLATFORM_INSECURE", "PYTHONPATH", "PYTHONHOME"] {
            cmd.env_remove(var);
        }
        let started = Instant::now();
        let child = cmd.spawn().with_context(|| format!("spawning {}", self.bin(program).display()))?;
        let out = tokio::time::timeout(limit, child.wait_with_output())
            .await
            .with_context(|| format!("{program} {args:?} did not finish within {limit:?}"))??;
        Ok(Output {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            elapsed: started.elapsed(),
        })
    }
}
