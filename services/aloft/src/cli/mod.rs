//! Argument parsing and dispatch. Errors are printed as one line `aloft: <message>`; usage and
//! configuration errors exit with 2 (clap's own usage errors included), failures while running
//! with 1; `executions watch` exits 3 when the execution failed or timed out and 4 when it was
//! aborted.

pub mod commands;
pub mod init;
pub mod literal;
pub mod remote;
pub mod render;
pub mod view;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use crate::up::{self, UpOptions};

/// The `aloft` command line.
#[derive(Debug, Parser)]
#[command(name = "aloft", version, about = "Aloft: a Flyte-compatible ML pipeline platform", after_help = EXIT_HELP)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

const EXIT_HELP: &str = "\
Exit status: 0 ok; 1 error (unreachable, not found, refused); 2 usage;
`executions watch`: 3 failed or timed out, 4 aborted.";

/// The subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Run Aloft on this machine, in the foreground: all five services and nats-server.
    #[command(long_about = UP_ABOUT)]
    Up(UpArgs),
    /// Create a new ML project (Python package, tests, CI, lineage.yaml) from the built-in template.
    Init(init::InitArgs),
    /// Projects: create (with owner team and Slack channel), list.
    #[command(subcommand)]
    Projects(ProjectsCommand),
    /// Executions: list, show, watch, terminate, relaunch.
    #[command(subcommand)]
    Executions(ExecutionsCommand),
    /// The log of one task attempt of a node.
    Logs(LogsArgs),
    /// Inputs of an execution, or of one of its nodes.
    Inputs(DataArgs),
    /// Outputs of an execution, or of one of its nodes.
    Outputs(DataArgs),
    /// Slack notifications sent (or pending, or failed) for an execution.
    Notifications(NotificationsArgs),
    /// Lineage of a run or of a model.
    #[command(subcommand)]
    Lineage(LineageCommand),
    /// Print the version.
    Version,
}

const UP_ABOUT: &str = "\
Run Aloft on this machine, in the foreground, until Ctrl-C.

Starts a nats-server child process (JetStream, stored in --data-dir) and the five services in this
process: metadata (the Flyte admin API with SQLite and a local blob store inside --data-dir),
scheduler, executor (tasks run as local processes in the Python environment of --python-venv),
notifier and lineage. Writes a ready flytekit config to <data-dir>/flytekit.yaml. Data is kept
across restarts. The admin port also answers plain HTTP: the console pages pyflyte links to
(http://localhost:30080/console/...).";

/// Flags of `aloft up`.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Folder for the database, the blob store and the generated flytekit config (created if
    /// missing).
    #[arg(long, default_value = "./aloft-data")]
    pub data_dir: PathBuf,
    /// Port of the Flyte admin gRPC API and the console on 127.0.0.1. 30080 is where pyflyte
    /// looks when it has no config file; 0 picks a free port.
    #[arg(long, default_value_t = 30080)]
    pub port: u16,
    /// Port of the HTTP endpoint for signed upload/download URLs on 127.0.0.1; 0 picks a free
    /// port.
    #[arg(long, default_value_t = 30081)]
    pub http_port: u16,
    /// Port of the embedded nats-server on 127.0.0.1; 0 picks a free port.
    #[arg(long, default_value_t = 30222)]
    pub nats_port: u16,
    /// Port of the notifier's gRPC API (what `aloft notifications` asks); 0 picks a free port.
    #[arg(long, default_value_t = 30083)]
    pub notifier_port: u16,
    /// Port of the lineage service's gRPC API (what `aloft lineage` asks); 0 picks a free port.
    #[arg(long, default_value_t = 30084)]
    pub lineage_port: u16,
    /// The nats-server binary (default: ALOFT_NATS_SERVER, PATH, then the one scripts/dev-deps.sh installs).
    #[arg(long)]
    pub nats_server: Option<PathBuf>,
    /// Python virtualenv with flytekit for running tasks (default: ALOFT_PYTHON_VENV, then the one
    /// scripts/dev-deps.sh creates).
    #[arg(long)]
    pub python_venv: Option<PathBuf>,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Tables and trees for people.
    Text,
    /// One JSON document (for scripts).
    Json,
}

/// Where a running Aloft is, and how to print. Shared by every command that talks to it.
#[derive(Debug, Clone, clap::Args)]
pub struct Remote {
    /// The admin API of a running Aloft (host:port).
    #[arg(long, global = true, env = "ALOFT_ENDPOINT", default_value = "localhost:30080")]
    pub endpoint: String,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// Which project and domain an execution name is looked up in. An execution may also be given
/// whole as `project/domain/name`.
#[derive(Debug, Clone, clap::Args)]
pub struct Scope {
    /// Project of the execution.
    #[arg(short, long, env = "ALOFT_PROJECT", default_value = "flytesnacks")]
    pub project: String,
    /// Domain of the execution.
    #[arg(short, long, env = "ALOFT_DOMAIN", default_value = "development")]
    pub domain: String,
}

/// `aloft projects ...`.
#[derive(Debug, clap::Subcommand)]
pub enum ProjectsCommand {
    /// Register a project, with the ownership labels the notifier routes by.
    Create(ProjectCreateArgs),
    /// List every project with its team and Slack channel.
    List {
        #[command(flatten)]
        remote: Remote,
    },
}

/// Flags of `projects create`.
#[derive(Debug, clap::Args)]
pub struct ProjectCreateArgs {
    /// Project id: lower case letters, digits and `-` (what `pyflyte -p` takes).
    pub id: String,
    /// Display name (default: the id).
    #[arg(long)]
    pub name: Option<String>,
    /// Description.
    #[arg(long, default_value = "")]
    pub description: String,
    /// Owner team (label `team`: shown in Slack messages).
    #[arg(long)]
    pub team: Option<String>,
    /// The team's Slack channel, `ml-alerts` or a channel id (label `slack-channel`).
    #[arg(long)]
    pub slack_channel: Option<String>,
    /// More labels, `key=value` (repeatable), e.g. `notify-production=all`.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    #[command(flatten)]
    pub remote: Remote,
}

/// `aloft executions ...`.
#[derive(Debug, clap::Subcommand)]
pub enum ExecutionsCommand {
    /// List executions, newest first (every project and domain unless filtered).
    List(ListArgs),
    /// One execution: phase, inputs, and its nodes as a tree with phases, durations and cache status.
    Show(ExecArgs),
    /// Follow a running execution until it ends; the exit status says how it ended.
    Watch(WatchArgs),
    /// Stop a running execution.
    Terminate(TerminateArgs),
    /// Run an execution again: the same launch plan, version and inputs.
    Relaunch(ExecArgs),
}

/// Filters of `executions list`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Only this project.
    #[arg(short, long)]
    pub project: Option<String>,
    /// Only this domain.
    #[arg(short, long)]
    pub domain: Option<String>,
    /// Only this phase (e.g. running, succeeded, failed).
    #[arg(long)]
    pub phase: Option<String>,
    /// Only runs of this launch plan (its name).
    #[arg(long)]
    pub launch_plan: Option<String>,
    /// At most this many.
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
    #[command(flatten)]
    pub remote: Remote,
}

/// An execution.
#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// Execution name (or project/domain/name).
    pub execution: String,
    #[command(flatten)]
    pub scope: Scope,
    #[command(flatten)]
    pub remote: Remote,
}

/// Flags of `executions watch`.
#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    /// Execution name (or project/domain/name).
    pub execution: String,
    /// Seconds between polls.
    #[arg(long, default_value_t = 1.0)]
    pub interval: f64,
    #[command(flatten)]
    pub scope: Scope,
    #[command(flatten)]
    pub remote: Remote,
}

/// Flags of `executions terminate`.
#[derive(Debug, clap::Args)]
pub struct TerminateArgs {
    /// Execution name (or project/domain/name).
    pub execution: String,
    /// Why (recorded as the abort cause).
    #[arg(long, default_value = "terminated with the aloft CLI")]
    pub reason: String,
    #[command(flatten)]
    pub scope: Scope,
    #[command(flatten)]
    pub remote: Remote,
}

/// Flags of `logs`.
#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// Execution name (or project/domain/name).
    pub execution: String,
    /// Node id, as `executions show` lists it (e.g. n0, n2-0-n1).
    pub node: String,
    /// Attempt number, 0 for the first (default: the last attempt).
    #[arg(long)]
    pub attempt: Option<u32>,
    #[command(flatten)]
    pub scope: Scope,
    #[command(flatten)]
    pub remote: Remote,
}

/// Flags of `inputs` and `outputs`.
#[derive(Debug, clap::Args)]
pub struct DataArgs {
    /// Execution name (or project/domain/name).
    pub execution: String,
    /// A node id (default: the execution's own inputs or outputs).
    pub node: Option<String>,
    #[command(flatten)]
    pub scope: Scope,
    #[command(flatten)]
    pub remote: Remote,
}

/// Flags of `notifications`.
#[derive(Debug, clap::Args)]
pub struct NotificationsArgs {
    /// Execution name (or project/domain/name).
    pub execution: String,
    /// The notifier's gRPC API (`aloft up` prints it; default port 30083).
    #[arg(long, env = "ALOFT_NOTIFIER_ENDPOINT", default_value = "localhost:30083")]
    pub notifier: String,
    #[command(flatten)]
    pub scope: Scope,
    #[command(flatten)]
    pub remote: Remote,
}

/// `aloft lineage ...`.
#[derive(Debug, clap::Subcommand)]
pub enum LineageCommand {
    /// What a run consumed and produced, its versions, parent and child runs, models it trained.
    Run(LineageRunArgs),
    /// The runs and data a model version was trained from.
    Model(LineageModelArgs),
    /// Validate and store a project's lineage.yaml (sources, pipelines, models, endpoints).
    Apply(LineageApplyArgs),
}

/// Flags of `lineage apply`.
#[derive(Debug, clap::Args)]
pub struct LineageApplyArgs {
    /// The lineage.yaml file.
    pub file: PathBuf,
    /// Project it declares.
    #[arg(short, long, env = "ALOFT_PROJECT", default_value = "flytesnacks")]
    pub project: String,
    /// Only validate; store nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub service: LineageRemote,
    #[command(flatten)]
    pub remote: Remote,
}

/// Where the lineage service is.
#[derive(Debug, Clone, clap::Args)]
pub struct LineageRemote {
    /// The lineage service's gRPC API (`aloft up` prints it; default port 30084).
    #[arg(long, env = "ALOFT_LINEAGE_ENDPOINT", default_value = "localhost:30084")]
    pub lineage: String,
}

/// Flags of `lineage run`.
#[derive(Debug, clap::Args)]
pub struct LineageRunArgs {
    /// Execution name (or project/domain/name).
    pub execution: String,
    #[command(flatten)]
    pub service: LineageRemote,
    #[command(flatten)]
    pub scope: Scope,
    #[command(flatten)]
    pub remote: Remote,
}

/// Flags of `lineage model`.
#[derive(Debug, clap::Args)]
pub struct LineageModelArgs {
    /// Model name, as declared in lineage.yaml.
    pub name: String,
    /// Model version (default: the newest).
    #[arg(long, default_value = "")]
    pub version: String,
    /// Project of the model.
    #[arg(short, long, env = "ALOFT_PROJECT", default_value = "flytesnacks")]
    pub project: String,
    #[command(flatten)]
    pub service: LineageRemote,
    #[command(flatten)]
    pub remote: Remote,
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
        Command::Init(args) => report(init::run(&args)),
        other => report(block_on(commands::run(other))),
    }
}

fn block_on<F: std::future::Future<Output = Result<(), crate::Error>>>(f: F) -> Result<(), crate::Error> {
    // One thread: a command makes a handful of calls, and starts in a few milliseconds.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(crate::Error::Runtime)?;
    runtime.block_on(f)
}

fn run_up(args: UpArgs) -> Result<(), crate::Error> {
    let options = UpOptions {
        data_dir: args.data_dir,
        port: args.port,
        http_port: args.http_port,
        nats_port: args.nats_port,
        notifier_port: args.notifier_port,
        lineage_port: args.lineage_port,
        nats_server: args.nats_server,
        python_venv: args.python_venv,
    };
    options.check()?;
    init_up_logging();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(crate::Error::Runtime)?;
    runtime.block_on(up::up(options, aloft_runtime::shutdown_signal()))
}

/// `aloft up` logs for a person at a terminal: colours only on a terminal (a log file stays
/// plain text), no module paths, and the NATS client's per-connection chatter (five services,
/// five connections) only as warnings. `ALOFT_LOG` / `RUST_LOG` override the filter.
fn init_up_logging() {
    use std::io::IsTerminal as _;
    let filter = std::env::var("ALOFT_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "info,async_nats=warn".to_string());
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,async_nats=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::stdout().is_terminal())
        .try_init();
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
        for argv in [
            &["aloft", "up", "--port", "http"][..],
            &["aloft", "frobnicate"],
            &["aloft"],
            &["aloft", "executions", "list", "--output", "yaml"],
            &["aloft", "logs", "exec-only"],
        ] {
            let err = Cli::try_parse_from(argv).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{argv:?}");
        }
    }

    #[test]
    fn remote_flags_and_scope_defaults() {
        let cli = Cli::try_parse_from(["aloft", "executions", "show", "x", "--endpoint", "h:1", "-o", "json"]).unwrap();
        let Command::Executions(ExecutionsCommand::Show(args)) = cli.command else { panic!("not show") };
        assert_eq!((args.remote.endpoint.as_str(), args.remote.output), ("h:1", Output::Json));
        assert_eq!(args.scope.domain, "development");
    }

    #[test]
    fn command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
