//! `aloft-scheduler`: the scheduler service binary.

fn main() -> std::process::ExitCode {
    aloft_runtime::cli::run_service("aloft-scheduler", aloft_scheduler::run)
}
