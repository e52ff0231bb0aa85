//! `aloft`: the command line for people (`aloft up`, `aloft version`).

fn main() -> std::process::ExitCode {
    aloft::cli::main()
}
