//! A whole Aloft control plane in the test process — metadata (with the bus), scheduler and
//! executor on one unique bus prefix and one store — plus the flytekit client pointed at it:
//! `pyflyte run --remote` on a copy of `fixtures/runs`, and `fixtures/check_execution.py`
//! (FlyteRemote) to read executions back.
//!
//! Included only by the test binaries that run workflows (`#[path]`), so the registry tests do not
//! depend on the scheduler and executor.

#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::Duration;

use aloft_blob::{BlobConfig, BlobKind, BlobStore};
use aloft_bus::BusConfig;
use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

use crate::common::{Db, Metadata, Output, TestDb, Venv, copy_tree, fixtures_dir};

/// The domain every execution runs in.
pub const DOMAIN: &str = "development";

/// Which store the three services share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// A directory in the test's temporary directory (plain absolute paths in literals).
    Local,
    /// A unique prefix in the dev S3 bucket (`s3://...` in literals, `FLYTE_AWS_*` in tasks).
    S3,
}

/// Services, client and scratch space of one test.
pub struct Stack {
    /// Metadata: the Flyte admin API the client talks to.
    pub metadata: Metadata,
    /// The store as configured for all three services.
    pub storage: BlobConfig,
    /// The same store, for the test's own checks.
    pub blob: BlobStore,
    /// The flytekit project every execution of this stack runs in (unique).
    pub project: String,
    /// The copy of `fixtures/runs` that `pyflyte run` bundles.
    pub workdir: PathBuf,
    /// Shared with the task processes (they run on this host): marker files, inputs.
    pub scratch: PathBuf,
    /// The flytekit venv with a private HOME.
    pub venv: Venv,
    /// The bus (unique prefixes) the services share; tests start more services on it.
    pub bus: BusConfig,
    db: TestDb,
    config_path: PathBuf,
    scheduler: aloft_scheduler::Running,
    executor: aloft_executor::Running,
    workers: CancellationToken,
    _stop_workers_on_drop: tokio_util::sync::DropGuard,
    /// Holds everything above on disk; removed at the end.
    pub tmp: TempDir,
}

/// Service logs on the test's output (shown by nextest when a test fails); `RUST_LOG` overrides.
fn init_logging() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new("warn,aloft_metadata=info,aloft_scheduler=info,aloft_executor=info")
        });
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().with_ansi(false).try_init();
    });
}

impl Stack {
    /// Starts metadata (SQLite), the scheduler and one executor on a fresh bus prefix and store.
    pub async fn start(store: Store) -> Result<Stack> {
        Self::start_on(store, Db::Sqlite).await
    }

    /// Like [`Stack::start`], with metadata on `db` (a fresh Postgres database is dropped by
    /// [`Stack::stop`]; a test that fails before leaves it behind, named `e2e_<random>`).
    pub async fn start_on(store: Store, db: Db) -> Result<Stack> {
        Self::start_configured(store, db, |_| {}).await
    }

    /// Like [`Stack::start_on`], with `configure` applied to metadata's configuration last (for
    /// example a shorter SLA sweep).
    pub async fn start_configured(
        store: Store,
        db: Db,
        configure: impl FnOnce(&mut aloft_metadata::Config),
    ) -> Result<Stack> {
        init_logging();
        let tmp = tempfile::tempdir()?;
        let deps = aloft_testkit::deps();
        let id = aloft_testkit::unique_name("e2e");
        let bus = BusConfig {
            url: deps.nats_url.clone(),
            stream_prefix: id.to_uppercase(),
            subject_prefix: id.clone(),
            ..BusConfig::default()
        };
        let storage = match store {
            Store::Local => {
                let root = tmp.path().join("store");
                std::fs::create_dir_all(&root)?;
                BlobConfig::local(root.to_str().context("temporary path is not UTF-8")?)
            }
            Store::S3 => BlobConfig {
                kind: BlobKind::S3,
                root: format!("s3://{}/{id}", deps.s3_bucket),
                endpoint: Some(deps.s3_endpoint.clone()),
                region: Some(deps.s3_region.clone()),
                access_key: Some(deps.s3_access_key.clone()),
                secret_key: Some(deps.s3_secret_key.clone()),
                force_path_style: true,
                ..BlobConfig::local("/unused")
            },
        };
        let blob = BlobStore::from_config(&storage).await.context("opening the test store")?;

        let db = TestDb::create(db, tmp.path()).await?;
        let mut md_config = Metadata::config(&db.url, storage.clone());
        md_config.bus = Some(bus.clone());
        configure(&mut md_config);
        let shared_bus = bus.clone();
        let metadata = Metadata::start_with(md_config).await?;

        let workers = CancellationToken::new();
        let scheduler = aloft_scheduler::start(
            aloft_scheduler::Config {
                bus: bus.clone(),
                health: aloft_scheduler::config::HealthConfig { listen: "127.0.0.1:0".into() },
                storage: storage.clone(),
                metadata_endpoint: metadata.endpoint(),
                ..aloft_scheduler::Config::default()
            },
            workers.clone(),
        )
        .await
        .context("starting aloft-scheduler")?;

        let scratch_root = tmp.path().join("executor");
        std::fs::create_dir_all(&scratch_root)?;
        let venv_dir = deps.python_venv.to_str().context("venv path is not UTF-8")?.to_string();
        let executor = aloft_executor::start(
            aloft_executor::Config {
                bus,
                health: aloft_executor::config::HealthConfig { listen: "127.0.0.1:0".into() },
                storage: storage.clone(),
                python: aloft_executor::config::PythonConfig { venv: Some(venv_dir) },
                // ALOFT_E2E_PYTHON_RUNTIME=cold runs the suite on the cold path (default: warm).
                python_runtime: match std::env::var("ALOFT_E2E_PYTHON_RUNTIME").as_deref() {
                    Ok("cold") => aloft_executor::config::Runtime::Cold,
                    Ok("warm") | Err(_) => aloft_executor::config::Runtime::Warm,
                    Ok(other) => bail!("ALOFT_E2E_PYTHON_RUNTIME={other}: expected warm or cold"),
                },
                // eager workflows start their sub-executions here from inside the task
                admin_endpoint: Some(metadata.endpoint()),
                scratch_dir: scratch_root.to_str().context("temporary path is not UTF-8")?.into(),
                kill_grace: Duration::from_secs(2),
                drain_timeout: Duration::from_secs(2),
                ..aloft_executor::Config::default()
            },
            workers.clone(),
        )
        .await
        .context("starting aloft-executor")?;

        let config_path = tmp.path().join("flyte.yaml");
        metadata.write_flyte_config(&config_path)?;
        let workdir = tmp.path().join("project");
        copy_tree(&fixtures_dir().join("runs"), &workdir)?;
        let scratch = tmp.path().join("scratch");
        std::fs::create_dir_all(&scratch)?;
        let venv = Venv::new(&tmp.path().join("home"))?;
        let _stop_workers_on_drop = workers.clone().drop_guard();
        Ok(Stack {
            metadata,
            storage,
            blob,
            project: aloft_testkit::unique_name("runs"),
            workdir,
            scratch,
            venv,
            bus: shared_bus,
            db,
            config_path,
            scheduler,
            executor,
            workers,
            _stop_workers_on_drop,
            tmp,
        })
    }

    /// `pyflyte --config <cfg> run --remote --project P --domain development --name <name>
    /// [--wait --poll-interval 1] <file> <entity> <args...>` in the fixture copy.
    pub async fn pyflyte_run(&self, name: &str, wait: bool, file: &str, entity: &str, args: &[&str]) -> Result<Output> {
        self.pyflyte_run_with(name, wait, &[], file, entity, args).await
    }

    /// [`Stack::pyflyte_run`] with more `pyflyte run` options (`--env K=V`, ...) before the file.
    pub async fn pyflyte_run_with(
        &self,
        name: &str,
        wait: bool,
        options: &[&str],
        file: &str,
        entity: &str,
        args: &[&str],
    ) -> Result<Output> {
        let config = self.config_path.to_str().context("config path is not UTF-8")?;
        let mut argv =
            vec!["--config", config, "run", "--remote", "--project", &self.project, "--domain", DOMAIN, "--name", name];
        if wait {
            argv.extend(["--wait", "--poll-interval", "1"]);
        }
        argv.extend(options);
        argv.extend([file, entity]);
        argv.extend(args);
        self.venv.run("pyflyte", &argv, &self.workdir).await
    }

    /// Like [`Stack::pyflyte_run`] with `--wait`, and the run must have exited 0.
    pub async fn run_ok(&self, name: &str, file: &str, entity: &str, args: &[&str]) -> Result<Output> {
        self.run_ok_with(name, &[], file, entity, args).await
    }

    /// [`Stack::run_ok`] with more `pyflyte run` options.
    pub async fn run_ok_with(
        &self,
        name: &str,
        options: &[&str],
        file: &str,
        entity: &str,
        args: &[&str],
    ) -> Result<Output> {
        let out = self.pyflyte_run_with(name, true, options, file, entity, args).await?;
        ensure!(out.status.success(), "pyflyte run {file} {entity} ({name}) failed\n{}", out.dump());
        ensure!(
            out.stdout.contains(&format!("Execution {name} has succeeded")) || out.all().contains("succeeded"),
            "pyflyte run --wait did not report success\n{}",
            out.dump()
        );
        Ok(out)
    }

    /// `check_execution.py <command> ...`: what FlyteRemote sees of execution `name`, as JSON.
    pub async fn remote(&self, command: &str, name: &str, extra: &[&str]) -> Result<Value> {
        let script = fixtures_dir().join("check_execution.py");
        let endpoint = self.metadata.endpoint();
        let mut argv = vec![
            script.to_str().context("fixture path is not UTF-8")?,
            command,
            "--endpoint",
            &endpoint,
            "--project",
            &self.project,
            "--domain",
            DOMAIN,
            "--name",
            name,
        ];
        argv.extend(extra);
        // `--timeout S` given to the checker bounds it; the process gets a minute more
        let limit = extra
            .iter()
            .position(|a| *a == "--timeout")
            .and_then(|i| extra.get(i + 1)?.parse::<u64>().ok())
            .map(|s| Duration::from_secs(s + 60))
            .unwrap_or(crate::common::PYTHON_TIMEOUT);
        let out = self.venv.run_for("python", &argv, self.tmp.path(), limit).await?;
        ensure!(out.status.success(), "check_execution.py {command} {name} failed\n{}", out.dump());
        // shown by nextest when the test fails: the facts the assertions were made on
        eprintln!("check_execution.py {command} {name} ({:.1} s):\n{}", out.elapsed.as_secs_f64(), out.stdout);
        serde_json::from_str(&out.stdout).with_context(|| format!("checker output is not JSON\n{}", out.dump()))
    }

    /// A client of metadata's admin API.
    pub async fn admin(
        &self,
    ) -> Result<aloft_proto::flyteidl::service::admin_service_client::AdminServiceClient<tonic::transport::Channel>>
    {
        let channel = tonic::transport::Channel::from_shared(format!("http://{}", self.metadata.endpoint()))?;
        Ok(aloft_proto::flyteidl::service::admin_service_client::AdminServiceClient::new(channel.connect().await?))
    }

    /// Registers the stack's project with `labels` (team, Slack channel, notification policy...).
    pub async fn register_project(&self, labels: &[(&str, &str)]) -> Result<()> {
        use aloft_proto::flyteidl::admin::{Labels, Project, ProjectRegisterRequest};
        self.admin()
            .await?
            .register_project(ProjectRegisterRequest {
                project: Some(Project {
                    id: self.project.clone(),
                    name: self.project.clone(),
                    labels: Some(Labels {
                        values: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                    }),
                    ..Default::default()
                }),
            })
            .await
            .context("registering the project with its labels")?;
        Ok(())
    }

    /// FlyteRemote: fetch, `sync(sync_nodes=True)`, report.
    pub async fn inspect(&self, name: &str) -> Result<Value> {
        self.remote("inspect", name, &[]).await
    }

    /// `pyflyte --config <cfg> fetch <flyte_url>` (DataProxyService.GetData).
    pub async fn pyflyte_fetch(&self, flyte_url: &str) -> Result<Output> {
        let config = self.config_path.to_str().context("config path is not UTF-8")?;
        self.venv.run("pyflyte", &["--config", config, "fetch", flyte_url], self.tmp.path()).await
    }

    /// A file in the fixture copy (for inputs uploaded by `pyflyte run`).
    pub fn write_input(&self, name: &str, content: &str) -> Result<PathBuf> {
        let path = self.workdir.join(name);
        std::fs::write(&path, content)?;
        Ok(path)
    }

    /// Where the scheduler serves `/metrics`.
    pub fn scheduler_metrics(&self) -> std::net::SocketAddr {
        self.scheduler.metrics_addr
    }

    /// Where the executor serves `/metrics`.
    pub fn executor_metrics(&self) -> std::net::SocketAddr {
        self.executor.metrics_addr
    }

    /// Where metadata serves `/metrics` (its HTTP side).
    pub fn metadata_metrics(&self) -> std::net::SocketAddr {
        self.metadata.running.http_addr
    }

    /// The metadata database's URL (other services may keep their own tables in it).
    pub fn database_url(&self) -> &str {
        &self.db.url
    }

    /// Where the shared scratch directory is, as a task input.
    pub fn scratch_str(&self) -> Result<&str> {
        self.scratch.to_str().context("scratch path is not UTF-8")
    }

    /// Stops the executor and scheduler, then metadata; fails if any of them failed.
    pub async fn stop(self) -> Result<()> {
        self.workers.cancel();
        let ex = self.executor.task.await.context("executor task")?;
        let sc = self.scheduler.task.await.context("scheduler task")?;
        let md = self.metadata.stop().await;
        // the test's streams and buckets go too, so a long test session does not pile them up
        let torn_down = match aloft_bus::Bus::connect(self.bus.clone()).await {
            Ok(bus) => bus.teardown().await.map(|_| ()).map_err(anyhow::Error::from),
            Err(e) => Err(e.into()),
        };
        let dropped = self.db.drop_db().await;
        // the local store goes away with the temporary directory; the S3 prefix is emptied here
        let emptied = match self.storage.kind {
            BlobKind::S3 => empty_prefix(&self.blob, &format!("{}/", self.storage.root)).await,
            BlobKind::Local => Ok(()),
        };
        ex.context("aloft-executor stopped with an error")?;
        sc.context("aloft-scheduler stopped with an error")?;
        md.context("aloft-metadata stopped with an error")?;
        torn_down.context("deleting the test's streams")?;
        dropped.context("dropping the test database")?;
        emptied.context("emptying the test's S3 prefix")
    }
}

/// Deletes every object under `prefix`.
async fn empty_prefix(blob: &BlobStore, prefix: &str) -> Result<()> {
    for uri in blob.list(prefix).await? {
        blob.delete(&uri).await.with_context(|| format!("deleting {uri}"))?;
    }
    Ok(())
}

/// Waits until `path` exists (a task wrote its marker), at most `limit`.
pub async fn wait_for_file(path: &Path, limit: Duration) -> Result<()> {
    let started = std::time::Instant::now();
    while !path.exists() {
        if started.elapsed() > limit {
            bail!("{} did not appear within {limit:?}", path.display());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}
