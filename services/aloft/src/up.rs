//! `aloft up`: Aloft on one machine, in the foreground.
//!
//! Today this runs the metadata service embedded, with SQLite and a local blob store inside the
//! data directory, and writes a flytekit config that points at it. The scheduler, executor,
//! notifier and lineage services join as their processing logic arrives (with a `nats-server`
//! child process for the bus); until then executions cannot run, and `up` says so rather than
//! accepting work it would never do.

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
        "\nRunning: metadata (registry, projects and domains, data proxy).\n\
         Not started yet: scheduler, executor, notifier, lineage. Registering works; executions\n\
         (`pyflyte run --remote`) are not available yet.\n\
         Ctrl-C stops aloft; the data directory is kept for the next `aloft up`.\n\n",
    );
    out
}

/// Runs `aloft up` until `shutdown` resolves: starts the metadata service, writes the flytekit
/// config, prints the banner and waits.
pub async fn up(options: UpOptions, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), Error> {
    options.check()?;
    let data_dir = prepare_data_dir(&options.data_dir)?;
    let token = aloft_runtime::shutdown::token_from(shutdown);
    let config = metadata_config(&data_dir, options.port, options.http_port);
    let running = aloft_metadata::start(config, token.clone()).await?;

    let flytekit = data_dir.join(FLYTEKIT_CONFIG);
    if let Err(e) = write_atomically(&flytekit, &flytekit_yaml(running.grpc_addr)) {
        // Without the file the person has nothing to point pyflyte at: stop rather than serve.
        token.cancel();
        let _ = running.task.await;
        return Err(e);
    }
    print!("{}", banner(running.grpc_addr, running.http_addr, &data_dir, &flytekit));

    match running.task.await {
        Ok(Ok(())) => {
            tracing::info!("aloft stopped");
            Ok(())
        }
        Ok(Err(e)) => Err(Error::Metadata(e)),
        Err(e) => Err(Error::Metadata(aloft_metadata::StartError::Join(e))),
    }
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
        assert!(default.contains("Not started yet: scheduler, executor"));
        let other = banner("127.0.0.1:40000".parse().unwrap(), http, data, file);
        assert!(!other.contains("localhost:30080"));
    }

    #[test]
    fn same_port_twice_is_a_usage_error() {
        let options = UpOptions { data_dir: "d".into(), port: 5000, http_port: 5000 };
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
