//! Why an `aloft` command failed, and the exit code that goes with it.

use aloft_metadata::StartError;
use aloft_runtime::grpc::ServeError;

/// A failed command. Messages are one line and name the flag, path or address at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Flags that cannot work together, or a value clap could not check.
    #[error("{0}")]
    Usage(String),
    /// The data directory cannot be created or used.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The directory as given.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A port is taken or not bindable.
    #[error("cannot listen on {addr} ({flag}): {source}")]
    Listen {
        /// The address asked for.
        addr: String,
        /// The flag it came from.
        flag: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The embedded metadata service failed to start or stopped with an error.
    #[error("metadata: {0}")]
    Metadata(StartError),
    /// The generated flytekit config could not be written.
    #[error("cannot write {path}: {source}")]
    WriteConfig {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The nats-server child process could not be started.
    #[error("nats: {0}")]
    Nats(String),
    /// Another embedded service failed to start or stopped with an error.
    #[error("{service}: {message}")]
    Service {
        /// Which service.
        service: &'static str,
        /// What it said.
        message: String,
    },
    /// The async runtime could not be built.
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    /// A service of a running Aloft cannot be reached.
    #[error("cannot reach {service} at {endpoint}: {message} (is `aloft up` running? pass {flag} or set {env})")]
    Unreachable {
        /// Which one (`aloft`, `the notifier`).
        service: &'static str,
        /// The endpoint as given.
        endpoint: String,
        /// What the transport said.
        message: String,
        /// The flag that sets it.
        flag: &'static str,
        /// The environment variable that sets it.
        env: &'static str,
    },
    /// The named project, execution, node or attempt does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The server refused or failed a call; the message names what was asked for.
    #[error("{0}")]
    Remote(String),
    /// `executions watch` saw the execution end in a phase other than SUCCEEDED.
    #[error("execution {name} ended {phase}")]
    Ended {
        /// `project/domain/name`.
        name: String,
        /// The terminal phase.
        phase: String,
    },
    /// `aloft init` cannot create the project.
    #[error("{0}")]
    Init(String),
}

impl Error {
    /// 2 for what the person can fix in the command line (usage, configuration, data
    /// directory), 1 for failures while starting or running, and for `executions watch` 3 when
    /// the execution failed or timed out and 4 when it was aborted.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) | Error::DataDir { .. } => 2,
            Error::Ended { phase, .. } if phase == "ABORTED" => 4,
            Error::Ended { .. } => 3,
            _ => 1,
        }
    }
}

impl From<StartError> for Error {
    /// A taken port names the flag to change rather than the embedded service's config key,
    /// which the person never wrote.
    fn from(e: StartError) -> Self {
        match e {
            StartError::Serve(ServeError::Bind { addr, key, source }) => {
                Error::Listen { addr, flag: if key == "http.listen" { "--http-port" } else { "--port" }, source }
            }
            other => Error::Metadata(other),
        }
    }
}
