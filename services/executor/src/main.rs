//! `aloft-executor`: the executor service binary.

fn main() -> std::process::ExitCode {
    aloft_runtime::cli::run_service("aloft-executor", aloft_executor::run)
}
