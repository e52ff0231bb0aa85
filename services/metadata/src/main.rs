//! `aloft-metadata`: the admin API service.

fn main() -> std::process::ExitCode {
    aloft_runtime::cli::run_service("aloft-metadata", aloft_metadata::run)
}
