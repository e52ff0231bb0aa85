//! Dev-only helpers for integration tests: where the real dependencies started by
//! `scripts/dev-deps.sh` listen, and unique names so tests can share one server and run in parallel.
//!
//! Never a dependency of non-test code.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

/// Connection settings of the running development dependencies.
#[derive(Debug, Clone)]
pub struct DevDeps {
    /// `nats://127.0.0.1:PORT`, JetStream enabled.
    pub nats_url: String,
    /// HTTP endpoint of the S3-compatible server.
    pub s3_endpoint: String,
    /// S3 access key.
    pub s3_access_key: String,
    /// S3 secret key.
    pub s3_secret_key: String,
    /// S3 region.
    pub s3_region: String,
    /// A bucket that exists.
    pub s3_bucket: String,
    /// Postgres URL of a database that exists; tests create their own databases next to it.
    pub database_url: String,
    /// The Python virtualenv with flytekit installed.
    pub python_venv: PathBuf,
}

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("workspace root exists")
}

/// Reads the settings from the environment, falling back to `.dev-deps/env` written by
/// `scripts/dev-deps.sh`, so `cargo nextest run` works without sourcing anything.
///
/// Panics with the command to run when the dependencies were never started: a test that needs a
/// real server must not silently pass without one.
pub fn deps() -> &'static DevDeps {
    static DEPS: OnceLock<DevDeps> = OnceLock::new();
    DEPS.get_or_init(|| {
        let file = std::env::var_os("ALOFT_DEV_DEPS_ENV")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace_root().join(".dev-deps/env"));
        let from_file = std::fs::read_to_string(&file).map(|s| parse_env_file(&s)).unwrap_or_default();
        let get = |key: &str| -> String {
            std::env::var(key).ok().or_else(|| from_file.get(key).cloned()).unwrap_or_else(|| {
                panic!("{key} is not set and {} has no value for it: run scripts/dev-deps.sh first", file.display())
            })
        };
        DevDeps {
            nats_url: get("NATS_URL"),
            s3_endpoint: get("AWS_ENDPOINT_URL"),
            s3_access_key: get("AWS_ACCESS_KEY_ID"),
            s3_secret_key: get("AWS_SECRET_ACCESS_KEY"),
            s3_region: get("AWS_REGION"),
            s3_bucket: get("S3_BUCKET"),
            database_url: get("DATABASE_URL"),
            python_venv: PathBuf::from(get("ALOFT_PYTHON_VENV")),
        }
    })
}

/// `prefix` followed by 12 random hex characters: unique per call, valid as a database, stream or
/// bucket-prefix name.
pub fn unique_name(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}_{}", &id[..12])
}

/// Creates an empty Postgres database with a unique name next to the dev one and returns its URL,
/// so each test gets its own schema and tests run in parallel.
pub async fn fresh_postgres_url(prefix: &str) -> String {
    use sqlx::Connection;
    let base = &deps().database_url;
    let name = unique_name(prefix);
    let mut conn = sqlx::PgConnection::connect(base)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {base}: {e} (run scripts/dev-deps.sh)"));
    sqlx::query(&format!("CREATE DATABASE \"{name}\"")).execute(&mut conn).await.expect("create test database");
    let (head, _) = base.rsplit_once('/').expect("database url has a path");
    format!("{head}/{name}")
}

/// Parses `export KEY=VALUE` / `KEY=VALUE` lines (several assignments per line allowed), ignoring
/// comments. Values are taken literally: the file is written by our own script without quoting.
fn parse_env_file(text: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        for assignment in line.split_whitespace() {
            if let Some((k, v)) = assignment.split_once('=') {
                out.insert(k.to_string(), v.to_string());
            }
        }
    }
    out
}

/// Whether a benchmark binary (`harness = false`) was started by `cargo bench`, which passes
/// `--bench`. Test runners start bench targets too (nextest lists their tests with `--list`,
/// `cargo test --all-targets` runs them bare); such a binary has no tests and should not measure
/// for minutes, so it returns at once when this is false (saying how to run it, except when
/// listed).
pub fn benchmark_requested(how_to_run: &str) -> bool {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--bench") {
        return true;
    }
    if !args.iter().any(|a| a == "--list") {
        eprintln!("this is a benchmark: run it with `{how_to_run}`");
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exports_with_several_assignments() {
        let env = parse_env_file("# comment\nexport A=1\nexport B=x C=y\nD=nats://h:1\n");
        assert_eq!(env["A"], "1");
        assert_eq!(env["B"], "x");
        assert_eq!(env["C"], "y");
        assert_eq!(env["D"], "nats://h:1");
    }

    #[test]
    fn unique_names_differ() {
        assert_ne!(unique_name("t"), unique_name("t"));
        assert!(unique_name("db").starts_with("db_"));
    }
}
