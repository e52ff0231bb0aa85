//! `aloft-lineage`: the lineage service binary.

fn main() -> std::process::ExitCode {
    aloft_runtime::cli::run_service("aloft-lineage", aloft_lineage::run)
}
