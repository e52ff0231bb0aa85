//! `aloft-notifier`: the notifier service binary.

fn main() -> std::process::ExitCode {
    aloft_runtime::cli::run_service("aloft-notifier", aloft_notifier::run)
}
