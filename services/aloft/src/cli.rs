//! Argument parsing and dispatch. Errors are printed as one line `aloft: <message>`; usage and
//! configuration errors exit with 2 (clap's own usage errors included), failures while running
//! with 1.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use crate::up::{self, UpOptions};

/// The `aloft` command line.
#[derive(Debug, Parser)]
#[command(name = "aloft", version, about = "Aloft: a Flyte-compatible ML pipeline platform")]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Run Aloft on this machine, in the foreground: all five services and nats-server.
    #[command(long_about = UP_ABOUT)]
    Up(UpArgs),
    /// Print the version.
    Version,
}

const UP_ABOUT: &str = "\
Run Aloft on this machine, in the foreground, until Ctrl-C.

Starts a nats-server child process (JetStream, stored in --data-dir) and the five services in this
process: metadata (the Flyte admin API with SQLite and a local blob store inside --data-dir),
scheduler, executor (tasks run as local processes in the Python environment of --python-venv),
notifier and lineage. Writes a ready flytekit config to <data-dir>/flytekit.yaml. Data is kept
across restarts.";

/// Flags of `aloft up`.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Folder for the database, the blob store and the generated flytekit config (created if
    /// missing).
    #[arg(long, default_value = "./aloft-data")]
    pub data_dir: PathBuf,
    /// Port of the Flyte admin gRPC API on 127.0.0.1. 30080 is where pyflyte looks when it has
    /// no config file; 0 picks a free port.
    #[arg(long, default_value_t = 30080)]
    pub port: u16,
    /// Port of the HTTP endpoint for signed upload/download URLs on 127.0.0.1; 0 picks a free
    /// port.
    #[arg(long, default_value_t = 30081)]
    pub http_port: u16,
    /// Port of the embedded nats-server on 127.0.0.1; 0 picks a free port.
    #[arg(long, default_value_t = 30222)]
    pub nats_port: u16,
    /// The nats-server binary (default: ALOFT_NATS_SERVER, PATH, then the one scripts/dev-deps.sh installs).
    #[arg(long)]
    pub nats_server: Option<PathBuf>,
    /// Python virtualenv with flytekit for running tasks (default: ALOFT_PYTHON_VENV, then the one
    /// scripts/dev-deps.sh creates).
    #[arg(long)]
    pub python_venv: Option<PathBuf>,
}

/// Parses the command line and runs the command; the body of `main`.
pub fn main() -> ExitCode {
    // clap prints help and version to stdout with status 0, and usage errors to stderr with 2.
    let cli = Cli::parse();
    match cli.command {
        Command::Version => {
            println!("aloft {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Up(args) => report(run_up(args)),
    }
}

fn run_up(args: UpArgs) -> Result<(), crate::Error> {
    let options = UpOptions {
        data_dir: args.data_dir,
        port: args.port,
        http_port: args.http_port,
        nats_port: args.nats_port,
        nats_server: args.nats_server,
        python_venv: args.python_venv,
    };
    options.check()?;
    aloft_runtime::telemetry::init(aloft_runtime::telemetry::LogFormat::Text);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(crate::Error::Runtime)?;
    runtime.block_on(up::up(options, aloft_runtime::shutdown_signal()))
}

fn report(outcome: Result<(), crate::Error>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("aloft: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_flytekit_sandbox() {
        let cli = Cli::try_parse_from(["aloft", "up"]).unwrap();
        let Command::Up(args) = cli.command else { panic!("not up") };
        assert_eq!(args.port, 30080);
        assert_eq!(args.http_port, 30081);
        assert_eq!(args.data_dir, PathBuf::from("./aloft-data"));
    }

    #[test]
    fn usage_errors_exit_with_2() {
        for argv in [&["aloft", "up", "--port", "http"][..], &["aloft", "frobnicate"], &["aloft"]] {
            let err = Cli::try_parse_from(argv).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{argv:?}");
        }
    }

    #[test]
    fn command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
