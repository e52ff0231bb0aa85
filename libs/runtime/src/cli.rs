//! The command line every service binary shares, and the `main` body that goes with it, so a
//! service's `main.rs` is a call to [`run_service`].

use std::future::Future;
use std::path::PathBuf;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::telemetry::{self, LogFormat};
use crate::{Validate, config};

/// Flags common to all service binaries.
#[derive(Debug, clap::Parser)]
pub struct ServiceArgs {
    /// TOML configuration file (keys can also be set as ALOFT_<SECTION>__<KEY>).
    #[arg(long, short, env = "ALOFT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print the effective configuration and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Log format: text or json.
    #[arg(long, default_value = "text", value_parser = parse_format)]
    pub log_format: LogFormat,
}

fn parse_format(s: &str) -> Result<LogFormat, String> {
    match s {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        other => Err(format!("unknown log format `{other}` (text or json)")),
    }
}

/// Parses flags, loads and validates `C`, starts logging and runs `run(config, shutdown_signal)`
/// on a Tokio runtime. Any start-up error is printed as one line and exits with status 2; a
/// service error exits with status 1. Never a panic or a backtrace for bad input.
pub fn run_service<C, F, Fut, E>(name: &str, run: F) -> std::process::ExitCode
where
    C: Serialize + DeserializeOwned + Default + Validate,
    F: FnOnce(C, std::pin::Pin<Box<dyn Future<Output = ()> + Send>>) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    use clap::Parser;
    let args = ServiceArgs::parse();
    let cfg: C = match config::load(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{name}: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    if args.print_config {
        print!("{}", config::to_toml(&cfg));
        return std::process::ExitCode::SUCCESS;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{name}: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    // Inside the runtime: an OTLP exporter runs its batches on it.
    let telemetry = match rt.block_on(async { telemetry::init(name, args.log_format) }) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{name}: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let result = rt.block_on(run(cfg, Box::pin(crate::shutdown_signal())));
    // Last, from this thread while the runtime still runs the exporter: flush the spans.
    telemetry.shutdown();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{name} stopped: {e}");
            eprintln!("{name}: {e}");
            std::process::ExitCode::from(1)
        }
    }
}
