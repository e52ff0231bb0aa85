//! `aloft up`: Aloft on one machine, in the foreground.
//!
//! All five services run in this one process, built from the same libraries and talking over the
//! same bus as a deployment: a `nats-server` child process with JetStream, SQLite and a local blob
//! store inside the data directory. A flytekit config pointing at it is written at each start.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::Error;

/// The generated flytekit config, inside the data directory.
pub const FLYTEKIT_CONFIG: &str = "flytekit.yaml";
/// The SQLite database of the metadata service, inside the data directory.
pub const DATABASE_FILE: &str = "metadata.db";
/// The local blob store root, inside the data directory.
pub const STORE_DIR: &str = "store";

/// Every server of `aloft up` listens on loopback only: there is no authentication, so nothing
/// should be reachable from other machines by default.
const HOST: &str = "127.0.0.1";

/// The port flytekit's no-config default (`Config.for_sandbox()`) points at.
const FLYTEKIT_DEFAULT_PORT: u16 = 30080;

/// What `aloft up` was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpOptions {
    /// Data directory as given (relative paths are relative to the current directory).
    pub data_dir: PathBuf,
    /// gRPC port (0: any free port).
    pub port: u16,
    /// HTTP port (0: any free port).
    pub http_port: u16,
    /// NATS port (0: any free port).
    pub nats_port: u16,
    /// The nats-server binary, if given.
    pub nats_server: Option<PathBuf>,
    /// The Python virtualenv with flytekit that tasks run in.
    pub python_venv: Option<PathBuf>,
}

impl UpOptions {
    /// Checks what can be checked without touching the machine.
    pub fn check(&self) -> Result<(), Error> {
        if self.port != 0 && self.port == self.http_port {
            return Err(Error::Usage(format!("--port and --http-port are both {}; they must differ", self.port)));
        }
        Ok(())
    }
}

/// Creates the data directory and returns its absolute path. Blob uris are absolute paths that
/// end up stored in the database and in Flyte literals, so they must not depend on the current
/// directory of a later `aloft up`.
pub fn prepare_data_dir(dir: &Path) -> Result<PathBuf, Error> {
    let shown = dir.display().to_string();
    let fail = |source| Error::DataDir { path: shown.clone(), source };
    std::fs::create_dir_all(dir).map_err(fail)?;
    let absolute = dir.canonicalize().map_err(fail)?;
    // The database URL treats `?` and `#` specially and percent-decodes `%`.
    let text = absolute.to_str().ok_or_else(|| fail(std::io::Error::other("the path is not valid UTF-8")))?;
    if let Some(c) = text.chars().find(|c| matches!(c, '?' | '#' | '%')) {
        return Err(fail(std::io::Error::other(format!(
            "the absolute path {text} contains `{c}`, which the database URL cannot carry"
        ))));
    }
    Ok(absolute)
}

/// The embedded metadata service's config for an absolute data directory.
pub fn metadata_config(data_dir: &Path, port: u16, http_port: u16) -> aloft_metadata::Config {
    let mut config = aloft_metadata::Config::default();
    config.grpc.listen = format!("{HOST}:{port}");
    config.http.listen = format!("{HOST}:{http_port}");
    config.database_url = format!("sqlite://{}", data_dir.join(DATABASE_FILE).display());
    config.storage = aloft_blob::BlobConfig::local(data_dir.join(STORE_DIR).display().to_string());
    config
}

/// A flytekit YAML config for the admin API at `grpc` (plaintext, no auth).
pub fn flytekit_yaml(grpc: SocketAddr) -> String {
    format!(
        "# Written by `aloft up` at each start: the Flyte admin API of this Aloft.\n\
         # Use it with `pyflyte --config <this file> ...` or FLYTECTL_CONFIG=<this file>.\n\
         admin:\n  endpoint: dns:///{grpc}\n  insecure: true\n"
    )
}

/// What `aloft up` prints once serving: where things are, what to run, and what is not there yet.
pub fn banner(grpc: SocketAddr, http: SocketAddr, data_dir: &Path, flytekit: &Path) -> String {
    let mut out = format!(
        "\naloft is up\n\
         \x20 grpc:            {grpc}   (Flyte admin API and data proxy)\n\
         \x20 http:            {http}   (signed upload/download URLs)\n\
         \x20 data directory:  {data}   ({DATABASE_FILE}, {STORE_DIR}/)\n\
         \x20 flytekit config: {flytekit}\n\
         \n\
         Register your workflows with:\n\
         \x20 pyflyte --config {flytekit} register <package or module>\n",
        data = data_dir.display(),
        flytekit = flytekit.display(),
    );
    if grpc.port() == FLYTEKIT_DEFAULT_PORT {
        out.push_str(
            "With no flytekit config file at all (none given, no ~/.flyte/config.yaml), pyflyte already\n\
             looks at localhost:30080, so plain `pyflyte register ...` works too.\n",
        );
    }
    out.push_str(
        "\nRun a workflow with:\n\
         \x20 pyflyte --config <flytekit config> run --remote --wait <file.py> <workflow> [--input value ...]\n\
         \nRunning: metadata, scheduler, executor (tasks run as local processes), notifier, lineage,\n\
         and nats-server. Ctrl-C stops aloft; the data directory is kept for the next `aloft up`.\n\n",
    );
    out
}

/// The Python environment tasks run in: the flag, `ALOFT_PYTHON_VENV`, then the venv that
/// `scripts/dev-deps.sh` creates.
pub fn find_python_venv(flag: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = flag {
        return Some(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("ALOFT_PYTHON_VENV") {
        return Some(PathBuf::from(p));
    }
    let home = std::env::var_os("HOME")?;
    let dev = PathBuf::from(home).join(".cache/aloft/dev-deps/venv-flytekit-1.16.31");
    dev.join("bin/pyflyte-execute").is_file().then_some(dev)
}

/// The bus settings every embedded service shares.
pub fn bus_config(url: &str) -> aloft_bus::BusConfig {
    aloft_bus::BusConfig { url: url.to_string(), ..Default::default() }
}

fn service_error(service: &'static str) -> impl Fn(String) -> Error {
    move |message| Error::Service { service, message }
}

/// Runs `aloft up` until `shutdown` resolves: starts nats-server and the five services, writes
/// the flytekit config, prints the banner and waits; then stops everything, nats-server last.
pub async fn up(options: UpOptions, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), Error> {
    options.check()?;
    let data_dir = prepare_data_dir(&options.data_dir)?;
    let nats_bin = crate::nats::find_nats_server(options.nats_server.as_deref())?;
    let venv = find_python_venv(options.python_venv.as_deref());
    let nats = crate::nats::Nats::start(&nats_bin, &data_dir, options.nats_port).await?;
    let token = aloft_runtime::shutdown::token_from(shutdown);
    let result = run_services(&options, &data_dir, &nats.url, venv, token.clone()).await;
    token.cancel();
    nats.stop().await;
    result
}

async fn run_services(
    options: &UpOptions,
    data_dir: &Path,
    nats_url: &str,
    venv: Option<PathBuf>,
    token: aloft_runtime::Shutdown,
) -> Result<(), Error> {
    let bus = bus_config(nats_url);
    let storage = aloft_blob::BlobConfig::local(data_dir.join(STORE_DIR).display().to_string());
    let mut config = metadata_config(data_dir, options.port, options.http_port);
    config.bus = Some(bus.clone());
    let running = aloft_metadata::start(config, token.clone()).await?;

    let loopback_any = "127.0.0.1:0".to_string();
    let scheduler = aloft_scheduler::Config {
        bus: bus.clone(),
        storage: storage.clone(),
        health: aloft_scheduler::config::HealthConfig { listen: loopback_any.clone() },
        ..Default::default()
    };
    let scheduler = aloft_scheduler::start(scheduler, token.clone())
        .await
        .map_err(|e| service_error("scheduler")(e.to_string()))?;

    let executor = aloft_executor::Config {
        bus: bus.clone(),
        storage: storage.clone(),
        health: aloft_executor::config::HealthConfig { listen: loopback_any.clone() },
        scratch_dir: data_dir.join("scratch").display().to_string(),
        python: aloft_executor::config::PythonConfig { venv: venv.as_ref().map(|v| v.display().to_string()) },
        ..Default::default()
    };
    let executor =
        aloft_executor::start(executor, token.clone()).await.map_err(|e| service_error("executor")(e.to_string()))?;

    let notifier = aloft_notifier::Config {
        bus: bus.clone(),
        health: aloft_notifier::config::HealthConfig { listen: loopback_any.clone() },
    };
    let notifier =
        aloft_notifier::start(notifier, token.clone()).await.map_err(|e| service_error("notifier")(e.to_string()))?;

    let lineage = aloft_lineage::Config { bus, health: aloft_lineage::config::HealthConfig { listen: loopback_any } };
    let lineage =
        aloft_lineage::start(lineage, token.clone()).await.map_err(|e| service_error("lineage")(e.to_string()))?;

    let flytekit = data_dir.join(FLYTEKIT_CONFIG);
    // (the services above are stopped by `token` if writing the config fails)
    if let Err(e) = write_atomically(&flytekit, &flytekit_yaml(running.grpc_addr)) {
        // Without the file the person has nothing to point pyflyte at: stop rather than serve.
        token.cancel();
        let _ = running.task.await;
        return Err(e);
    }
    print!("{}", banner(running.grpc_addr, running.http_addr, data_dir, &flytekit));
    if venv.is_none() {
        println!("warning: no Python environment with flytekit found (pass --python-venv or run scripts/dev-deps.sh);");
        println!("         tasks will only find pyflyte-execute if it is on PATH.\n");
    }

    // Any service stopping on its own (an error) stops the others.
    let (meta, sched, exec, notif, lin) = tokio::join!(
        async {
            let r = running.task.await;
            token.cancel();
            r
        },
        async {
            let r = scheduler.task.await;
            token.cancel();
            r
        },
        async {
            let r = executor.task.await;
            token.cancel();
            r
        },
        async {
            let r = notifier.task.await;
            token.cancel();
            r
        },
        async {
            let r = lineage.task.await;
            token.cancel();
            r
        },
    );
    let flat = |name: &'static str, r: Result<Result<(), String>, tokio::task::JoinError>| match r {
        Ok(Ok(())) => Ok(()),
        Ok(Err(m)) => Err(Error::Service { service: name, message: m }),
        Err(e) => Err(Error::Service { service: name, message: e.to_string() }),
    };
    match meta {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(Error::Metadata(e)),
        Err(e) => return Err(Error::Metadata(aloft_metadata::StartError::Join(e))),
    }
    flat("scheduler", sched.map(|r| r.map_err(|e| e.to_string())))?;
    flat("executor", exec.map(|r| r.map_err(|e| e.to_string())))?;
    flat("notifier", notif.map(|r| r.map_err(|e| e.to_string())))?;
    flat("lineage", lin.map(|r| r.map_err(|e| e.to_string())))?;
    tracing::info!("aloft stopped");
    Ok(())
}

/// Writes through a temporary file and a rename, so a reader (a person's pyflyte, a test waiting
/// for the file) never sees half a config.
fn write_atomically(path: &Path, contents: &str) -> Result<(), Error> {
    let fail = |source| Error::WriteConfig { path: path.display().to_string(), source };
    let tmp = path.with_extension("yaml.tmp");
    std::fs::write(&tmp, contents).map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_lives_inside_the_data_dir_on_loopback() {
        let c = metadata_config(Path::new("/srv/aloft"), 30080, 30081);
        assert_eq!(c.grpc.listen, "127.0.0.1:30080");
        assert_eq!(c.http.listen, "127.0.0.1:30081");
        assert_eq!(c.database_url, "sqlite:///srv/aloft/metadata.db");
        assert_eq!(c.storage, aloft_blob::BlobConfig::local("/srv/aloft/store"));
        use aloft_runtime::Validate;
        c.validate().unwrap();
    }

    #[test]
    fn flytekit_config_points_at_the_bound_address() {
        let yaml = flytekit_yaml("127.0.0.1:30080".parse().unwrap());
        assert!(yaml.ends_with("admin:\n  endpoint: dns:///127.0.0.1:30080\n  insecure: true\n"), "{yaml}");
    }

    #[test]
    fn banner_mentions_the_no_config_default_only_on_its_port() {
        let (data, file) = (Path::new("/d"), Path::new("/d/flytekit.yaml"));
        let http = "127.0.0.1:30081".parse().unwrap();
        let default = banner("127.0.0.1:30080".parse().unwrap(), http, data, file);
        assert!(default.contains("pyflyte --config /d/flytekit.yaml register"));
        assert!(default.contains("localhost:30080"));
        assert!(default.contains("Running: metadata, scheduler, executor"));
        let other = banner("127.0.0.1:40000".parse().unwrap(), http, data, file);
        assert!(!other.contains("localhost:30080"));
    }

    #[test]
    fn same_port_twice_is_a_usage_error() {
        let options = UpOptions {
            data_dir: "d".into(),
            port: 5000,
            http_port: 5000,
            nats_port: 0,
            nats_server: None,
            python_venv: None,
        };
        let err = options.check().unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert_eq!(err.to_string(), "--port and --http-port are both 5000; they must differ");
        UpOptions { port: 0, http_port: 0, ..options }.check().unwrap();
    }

    #[test]
    fn data_dir_is_made_absolute_and_a_file_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = prepare_data_dir(&tmp.path().join("a/b")).unwrap();
        assert!(dir.is_absolute() && dir.is_dir());
        let file = tmp.path().join("file");
        std::fs::write(&file, "x").unwrap();
        let err = prepare_data_dir(&file).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().starts_with(&format!("data directory {}: ", file.display())), "{err}");
        let odd = tmp.path().join("what?");
        let err = prepare_data_dir(&odd).unwrap_err();
        assert!(err.to_string().contains("contains `?`"), "{err}");
    }
}
