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
    /// The notifier's gRPC port (0: any free port).
    pub notifier_port: u16,
    /// The lineage service's gRPC port (0: any free port).
    pub lineage_port: u16,
    /// The nats-server binary, if given.
    pub nats_server: Option<PathBuf>,
    /// The Python virtualenv with flytekit that tasks run in.
    pub python_venv: Option<PathBuf>,
}

impl UpOptions {
    /// Checks what can be checked without touching the machine.
    pub fn check(&self) -> Result<(), Error> {
        let ports = [
            ("--port", self.port),
            ("--http-port", self.http_port),
            ("--nats-port", self.nats_port),
            ("--notifier-port", self.notifier_port),
            ("--lineage-port", self.lineage_port),
        ];
        for (i, (a, pa)) in ports.iter().enumerate() {
            for (b, pb) in &ports[i + 1..] {
                if *pa != 0 && pa == pb {
                    return Err(Error::Usage(format!("{a} and {b} are both {pa}; they must differ")));
                }
            }
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

/// The embedded metadata service's config for an absolute data directory. Its gRPC server listens
/// on a free loopback port behind the front door (see `front`), which owns `--port`.
pub fn metadata_config(data_dir: &Path, http_port: u16) -> aloft_metadata::Config {
    let mut config = aloft_metadata::Config::default();
    config.grpc.listen = format!("{HOST}:0");
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

/// Where `aloft up` serves, for the banner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addresses {
    /// The front door: admin gRPC API and console.
    pub grpc: SocketAddr,
    /// Signed upload/download URLs.
    pub http: SocketAddr,
    /// `aloft.v1.NotifierService`.
    pub notifier: SocketAddr,
    /// `aloft.v1.LineageService`.
    pub lineage: SocketAddr,
}

/// What `aloft up` prints once serving: where things are, what to run, and what is not there yet.
pub fn banner(at: &Addresses, data_dir: &Path, flytekit: &Path) -> String {
    let Addresses { grpc, http, notifier, lineage } = at;
    // The CLI's defaults are the default ports; other ports need flags, so say which.
    let cli_flags = {
        let mut f = String::new();
        if grpc.port() != FLYTEKIT_DEFAULT_PORT {
            f.push_str(&format!(" --endpoint {grpc}"));
        }
        f
    };
    let mut out = format!(
        "\naloft is up\n\
         \x20 grpc:            {grpc}   (Flyte admin API and data proxy)\n\
         \x20 console:         http://{grpc}/console\n\
         \x20 http:            {http}   (signed upload/download URLs)\n\
         \x20 notifier:        {notifier}   (aloft notifications --notifier {notifier})\n\
         \x20 lineage:         {lineage}   (aloft lineage ... --lineage {lineage})\n\
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
    out.push_str(&format!(
        "\nRun a workflow with:\n\
         \x20 pyflyte --config <flytekit config> run --remote --wait <file.py> <workflow> [--input value ...]\n\
         Then look at it with:\n\
         \x20 aloft executions list{cli_flags}\n\
         \x20 aloft executions show <execution>{cli_flags}\n\
         \nRunning: metadata, scheduler, executor (tasks run as local processes), notifier, lineage,\n\
         and nats-server. Ctrl-C stops aloft; the data directory is kept for the next `aloft up`.\n\n",
    ));
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
    // The front door binds first so a taken --port fails before anything else starts.
    let front_addr = format!("{HOST}:{}", options.port);
    let front = tokio::net::TcpListener::bind(&front_addr).await.map_err(|source| Error::Listen {
        addr: front_addr.clone(),
        flag: "--port",
        source,
    })?;
    let public = front.local_addr().map_err(|source| Error::Listen { addr: front_addr, flag: "--port", source })?;
    let mut config = metadata_config(data_dir, options.http_port);
    config.bus = Some(bus.clone());
    let running = aloft_metadata::start(config, token.clone()).await?;
    let console = crate::console::router(crate::console::Console {
        admin: crate::cli::remote::Admin::new(&running.grpc_addr.to_string())?,
    });
    let console_listener = tokio::net::TcpListener::bind((HOST, 0)).await.map_err(|source| Error::Listen {
        addr: format!("{HOST}:0"),
        flag: "--port",
        source,
    })?;
    let console_addr = console_listener.local_addr().map_err(|source| Error::Listen {
        addr: format!("{HOST}:0"),
        flag: "--port",
        source,
    })?;
    let console_task = tokio::spawn({
        let token = token.clone();
        async move { axum::serve(console_listener, console).with_graceful_shutdown(token.cancelled_owned()).await }
    });
    let front_task = tokio::spawn(crate::front::serve(front, running.grpc_addr, console_addr, token.clone()));

    let loopback_any = "127.0.0.1:0".to_string();
    let scheduler = aloft_scheduler::Config {
        bus: bus.clone(),
        storage: storage.clone(),
        health: aloft_scheduler::config::HealthConfig { listen: loopback_any.clone() },
        // launch-plan nodes and schedules reach the embedded admin API
        metadata_endpoint: running.grpc_addr.to_string(),
        schedules: aloft_scheduler::config::SchedulesConfig { enabled: true, ..Default::default() },
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
        // eager workflows start their sub-executions from inside their task
        admin_endpoint: Some(running.grpc_addr.to_string()),
        ..Default::default()
    };
    let executor =
        aloft_executor::start(executor, token.clone()).await.map_err(|e| service_error("executor")(e.to_string()))?;

    // Slack destinations come from ALOFT_SLACK__* (the notifier's own keys); without them the
    // notifier still records what it would have sent.
    let notifier = aloft_notifier::Config {
        bus: bus.clone(),
        health: aloft_notifier::config::HealthConfig { listen: format!("{HOST}:{}", options.notifier_port) },
        database_url: format!("sqlite://{}", data_dir.join("notifier.db").display()),
        metadata: aloft_notifier::config::MetadataConfig {
            endpoint: format!("http://{}", running.grpc_addr),
            ..Default::default()
        },
        // the same base pyflyte prints links with (the admin endpoint, where the console is)
        console_url: format!("http://{public}"),
        ..Default::default()
    };
    let notifier =
        aloft_notifier::start(notifier, token.clone()).await.map_err(|e| service_error("notifier")(e.to_string()))?;

    // Interim wiring until the lineage service lands (the lead owns this block).
    let lineage = aloft_lineage::Config {
        bus,
        health: aloft_lineage::config::HealthConfig { listen: format!("{HOST}:{}", options.lineage_port) },
        database_url: format!("sqlite://{}", data_dir.join("lineage.db").display()),
        storage: storage.clone(),
        metadata: aloft_lineage::config::MetadataConfig {
            endpoint: format!("http://{}", running.grpc_addr),
            ..Default::default()
        },
        ..Default::default()
    };
    let lineage =
        aloft_lineage::start(lineage, token.clone()).await.map_err(|e| service_error("lineage")(e.to_string()))?;

    let flytekit = data_dir.join(FLYTEKIT_CONFIG);
    // (the services above are stopped by `token` if writing the config fails)
    if let Err(e) = write_atomically(&flytekit, &flytekit_yaml(public)) {
        // Without the file the person has nothing to point pyflyte at: stop rather than serve.
        token.cancel();
        let _ = running.task.await;
        return Err(e);
    }
    let addresses = Addresses {
        grpc: public,
        http: running.http_addr,
        notifier: notifier.health_addr,
        lineage: lineage.health_addr,
    };
    print!("{}", banner(&addresses, data_dir, &flytekit));
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
    // Both stop on the same token; the front door leaves open connections a short drain.
    let _ = front_task.await;
    match console_task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(Error::Service { service: "console", message: e.to_string() }),
        Err(e) => return Err(Error::Service { service: "console", message: e.to_string() }),
    }
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
        let c = metadata_config(Path::new("/srv/aloft"), 30081);
        assert_eq!(c.grpc.listen, "127.0.0.1:0");
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
        let at = Addresses {
            grpc: "127.0.0.1:30080".parse().unwrap(),
            http: "127.0.0.1:30081".parse().unwrap(),
            notifier: "127.0.0.1:30083".parse().unwrap(),
            lineage: "127.0.0.1:30084".parse().unwrap(),
        };
        let default = banner(&at, data, file);
        assert!(default.contains("pyflyte --config /d/flytekit.yaml register"));
        assert!(default.contains("localhost:30080"));
        assert!(default.contains("console:         http://127.0.0.1:30080/console\n"));
        assert!(default.contains("aloft executions list\n"), "{default}");
        assert!(default.contains("Running: metadata, scheduler, executor"));
        let other = banner(&Addresses { grpc: "127.0.0.1:40000".parse().unwrap(), ..at }, data, file);
        assert!(!other.contains("localhost:30080"));
        assert!(other.contains("aloft executions list --endpoint 127.0.0.1:40000\n"), "{other}");
    }

    #[test]
    fn same_port_twice_is_a_usage_error() {
        let options = UpOptions {
            data_dir: "d".into(),
            port: 5000,
            http_port: 5000,
            nats_port: 0,
            notifier_port: 0,
            lineage_port: 0,
            nats_server: None,
            python_venv: None,
        };
        let err = options.check().unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert_eq!(err.to_string(), "--port and --http-port are both 5000; they must differ");
        let clash = UpOptions { http_port: 0, lineage_port: 5000, ..options.clone() }.check().unwrap_err();
        assert_eq!(clash.to_string(), "--port and --lineage-port are both 5000; they must differ");
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
