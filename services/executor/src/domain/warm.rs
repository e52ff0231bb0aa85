//! The rules of the warm Python runtime (ADR 0011): which attempts may run in a child forked from
//! the fork server instead of a fresh `pyflyte-execute` process, and the server's wire format.
//!
//! An attempt runs warm only if the result is indistinguishable from the cold path: the program is
//! one of flytekit's entry points run by the server's own interpreter, and every environment
//! variable the server's interpreter or its imports consumed at start-up has the same value in the
//! task's environment (or is one the child re-reads after taking the task's environment).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The task environment variable (template `container.env` or the execution's `envs`) choosing the
/// runtime of one task: `warm` or `cold`. It is also the executor's own variable for its default
/// (`python_runtime` in the config file).
pub const RUNTIME_VAR: &str = "ALOFT_PYTHON_RUNTIME";

/// The console scripts the fork server runs in-process (any other program runs cold).
pub const ENTRIES: [&str; 3] = ["pyflyte-execute", "pyflyte-fast-execute", "pyflyte-map-execute"];

/// How Python task attempts are run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// In a child of the fork server when possible, else cold.
    #[default]
    Warm,
    /// A fresh process per attempt, always.
    Cold,
}

impl std::fmt::Display for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Runtime::Warm => "warm",
            Runtime::Cold => "cold",
        })
    }
}

/// The runtime asked for: the task's `ALOFT_PYTHON_RUNTIME` if it is `warm` or `cold` (any case),
/// else the executor's default. An unknown value is returned as the error, with the default, so
/// the caller can say it ignored it.
pub fn requested(default: Runtime, env: &BTreeMap<String, String>) -> Result<Runtime, (Runtime, String)> {
    match env.get(RUNTIME_VAR).map(|v| v.trim().to_ascii_lowercase()) {
        None => Ok(default),
        Some(v) if v == "warm" => Ok(Runtime::Warm),
        Some(v) if v == "cold" => Ok(Runtime::Cold),
        Some(_) => Err((default, format!("{RUNTIME_VAR}={} is neither warm nor cold", env[RUNTIME_VAR]))),
    }
}

/// The flytekit entry point a program names (`pyflyte-execute`, or a path ending in it).
pub fn entry_of(program: &str) -> Option<&'static str> {
    let name = Path::new(program).file_name()?.to_str()?;
    ENTRIES.iter().copied().find(|e| *e == name)
}

/// The interpreter of a script from its first line (`#!/venv/bin/python`), when it is a plain
/// absolute path without arguments (what pip writes for console scripts).
pub fn shebang_interpreter(first_line: &[u8]) -> Option<&str> {
    let line = first_line.strip_prefix(b"#!")?;
    let line = std::str::from_utf8(line).ok()?.trim_end_matches(['\r', '\n']);
    (line.starts_with('/') && !line.contains(char::is_whitespace)).then_some(line)
}

/// What the fork server reported when it became ready, plus the environment it was started with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerFacts {
    /// The interpreter it runs (`#!` of the console scripts it may serve).
    pub interpreter: String,
    /// The environment it was started with.
    pub env: BTreeMap<String, String>,
    /// Variables read (by name) while flytekit and the other preloaded modules were imported.
    pub import_keys: BTreeSet<String>,
    /// Variables a child re-reads after taking the task's environment: they may differ.
    pub reinit_keys: BTreeSet<String>,
    /// Prefixes of such variables (flytekit's configuration entries, `FSSPEC_*`).
    pub reinit_prefixes: Vec<String>,
    /// Prefixes of variables consumed at interpreter or C-library start (`PYTHON*`, `LC_*`, ...),
    /// which no import records: they must match too.
    pub start_prefixes: Vec<String>,
}

/// Why a task with this environment must not run in this server, if it must not: the first
/// variable consumed at start-up whose value differs between the server and the task.
pub fn env_mismatch(facts: &ServerFacts, task: &BTreeMap<String, String>) -> Option<String> {
    let exempt = |k: &str| facts.reinit_keys.contains(k) || facts.reinit_prefixes.iter().any(|p| k.starts_with(p));
    let at_start = |k: &str| facts.start_prefixes.iter().any(|p| k.starts_with(p));
    let candidates = facts
        .import_keys
        .iter()
        .map(String::as_str)
        .chain(facts.env.keys().map(String::as_str).filter(|k| at_start(k)))
        .chain(task.keys().map(String::as_str).filter(|k| at_start(k)));
    for key in candidates {
        if exempt(key) {
            continue;
        }
        let (ours, theirs) = (facts.env.get(key), task.get(key));
        if ours != theirs {
            let show = |v: Option<&String>| v.map_or_else(|| "unset".to_string(), |v| format!("`{v}`"));
            return Some(format!(
                "{key} is consumed when the interpreter starts or flytekit is imported, and the task sets it to {} \
                 (the warm runtime has {})",
                show(theirs),
                show(ours)
            ));
        }
    }
    None
}

/// One attempt for the server: the cold path's command line (the console script resolved as
/// `execvp` would), its whole environment, working directory and log file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Request<'a> {
    /// Matches the replies to this request.
    pub id: u64,
    /// `[script, args...]`.
    pub argv: Vec<String>,
    /// The whole environment (nothing is inherited from the server).
    pub env: &'a BTreeMap<String, String>,
    /// Working directory.
    pub cwd: &'a str,
    /// File receiving stdout and stderr (appended).
    pub log: &'a str,
}

impl Request<'_> {
    /// The JSON line sent to the server.
    pub fn to_line(&self) -> String {
        let mut line = serde_json::to_string(self).expect("a request always serialises");
        line.push('\n');
        line
    }
}

/// A line from the server.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reply {
    /// Imports done; serving.
    Ready {
        /// The server's pid.
        pid: u32,
        /// Python version.
        python: String,
        /// flytekit version.
        flytekit: String,
        /// See [`ServerFacts::import_keys`].
        import_keys: BTreeSet<String>,
        /// See [`ServerFacts::reinit_keys`].
        reinit_keys: BTreeSet<String>,
        /// See [`ServerFacts::reinit_prefixes`].
        reinit_prefixes: Vec<String>,
        /// See [`ServerFacts::start_prefixes`].
        start_prefixes: Vec<String>,
    },
    /// The server cannot serve (an import failed, flytekit lacks what it resets); it exits.
    Failed {
        /// Why.
        message: String,
    },
    /// The attempt's process runs.
    Started {
        /// The request.
        id: u64,
        /// Its pid, which is also its process group id.
        pid: u32,
        /// Its start time in clock ticks after boot (`/proc/<pid>/stat` field 22), if readable.
        start: Option<u64>,
    },
    /// The attempt could not be started (its log cannot be opened, no working directory).
    Refused {
        /// The request.
        id: u64,
        /// Why, worded like the cold path's start failures.
        message: String,
    },
    /// The attempt's process ended and was reaped.
    Exited {
        /// The request.
        id: u64,
        /// Its exit status, unless a signal killed it.
        code: Option<i32>,
        /// The signal that killed it.
        signal: Option<i32>,
    },
}

/// Parses one line from the server.
pub fn parse_reply(line: &str) -> Result<Reply, String> {
    serde_json::from_str(line.trim()).map_err(|e| format!("unreadable reply from the warm runtime ({e}): {line}"))
}

/// The start time (clock ticks after boot) in the text of `/proc/<pid>/stat`: field 22, counted
/// after the command name in parentheses (which may itself contain spaces and parentheses).
pub fn stat_start_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn the_task_variable_overrides_the_default() {
        assert_eq!(requested(Runtime::Warm, &map(&[])), Ok(Runtime::Warm));
        assert_eq!(requested(Runtime::Cold, &map(&[])), Ok(Runtime::Cold));
        assert_eq!(requested(Runtime::Warm, &map(&[(RUNTIME_VAR, "cold")])), Ok(Runtime::Cold));
        assert_eq!(requested(Runtime::Cold, &map(&[(RUNTIME_VAR, " Warm ")])), Ok(Runtime::Warm));
        assert_eq!(
            requested(Runtime::Cold, &map(&[(RUNTIME_VAR, "hot")])),
            Err((Runtime::Cold, "ALOFT_PYTHON_RUNTIME=hot is neither warm nor cold".into()))
        );
    }

    #[test]
    fn only_flytekit_entry_points_are_served() {
        assert_eq!(entry_of("pyflyte-execute"), Some("pyflyte-execute"));
        assert_eq!(entry_of("/venv/bin/pyflyte-fast-execute"), Some("pyflyte-fast-execute"));
        assert_eq!(entry_of("pyflyte-map-execute"), Some("pyflyte-map-execute"));
        assert_eq!(entry_of("python"), None);
        assert_eq!(entry_of("pyflyte-execute-custom"), None);
        assert_eq!(entry_of("sh"), None);
    }

    #[test]
    fn shebangs_name_a_plain_interpreter() {
        assert_eq!(shebang_interpreter(b"#!/venv/bin/python\n"), Some("/venv/bin/python"));
        assert_eq!(shebang_interpreter(b"#!/venv/bin/python\r\n"), Some("/venv/bin/python"));
        assert_eq!(shebang_interpreter(b"#!/usr/bin/env python3\n"), None, "an argument: another program runs");
        assert_eq!(shebang_interpreter(b"#!python\n"), None);
        assert_eq!(shebang_interpreter(b"\x7fELF"), None);
    }

    fn facts() -> ServerFacts {
        ServerFacts {
            interpreter: "/venv/bin/python".into(),
            env: map(&[
                ("PATH", "/venv/bin:/usr/bin"),
                ("HOME", "/s/home"),
                ("PYTHONUNBUFFERED", "1"),
                ("LANG", "C.UTF-8"),
            ]),
            import_keys: ["PATH", "HOME", "NO_COLOR", "FLYTE_AWS_ENDPOINT", "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION"]
                .into_iter()
                .map(String::from)
                .collect(),
            reinit_keys: ["HOME", "PYTHONPATH", "NO_COLOR"].into_iter().map(String::from).collect(),
            reinit_prefixes: vec!["FLYTE_AWS_".into()],
            start_prefixes: vec!["PYTHON".into(), "LANG".into(), "LD_".into()],
        }
    }

    #[test]
    fn a_task_adding_ordinary_variables_runs_warm() {
        let task = map(&[
            ("PATH", "/venv/bin:/usr/bin"),
            ("HOME", "/scratch/a/home"),
            ("PYTHONUNBUFFERED", "1"),
            ("PYTHONPATH", "/code"),
            ("LANG", "C.UTF-8"),
            ("NO_COLOR", "1"),
            ("FLYTE_AWS_ENDPOINT", "http://s3:9000"),
            ("FLYTE_INTERNAL_EXECUTION_ID", "e1"),
            ("MY_SETTING", "x"),
        ]);
        assert_eq!(env_mismatch(&facts(), &task), None);
    }

    #[test]
    fn variables_consumed_at_start_must_match() {
        let base = map(&[("PATH", "/venv/bin:/usr/bin"), ("PYTHONUNBUFFERED", "1"), ("LANG", "C.UTF-8")]);
        let with = |k: &str, v: &str| {
            let mut t = base.clone();
            t.insert(k.into(), v.into());
            t
        };
        assert_eq!(env_mismatch(&facts(), &base), None);
        let why = env_mismatch(&facts(), &with("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")).unwrap();
        assert!(why.starts_with("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION is consumed"), "{why}");
        assert!(why.ends_with("sets it to `python` (the warm runtime has unset)"), "{why}");
        assert!(env_mismatch(&facts(), &with("PATH", "/other/bin")).unwrap().starts_with("PATH "));
        assert!(env_mismatch(&facts(), &with("PYTHONHASHSEED", "0")).unwrap().starts_with("PYTHONHASHSEED "));
        assert!(env_mismatch(&facts(), &with("LD_PRELOAD", "/x.so")).unwrap().starts_with("LD_PRELOAD "));
        assert!(env_mismatch(&facts(), &with("PYTHONUNBUFFERED", "0")).unwrap().starts_with("PYTHONUNBUFFERED "));
        let mut no_lang = base.clone();
        no_lang.remove("LANG");
        assert!(env_mismatch(&facts(), &no_lang).unwrap().starts_with("LANG "), "a variable the server has, unset");
    }

    #[test]
    fn requests_carry_the_cold_command_line() {
        let env = map(&[("PATH", "/venv/bin"), ("A", "1")]);
        let request = Request {
            id: 7,
            argv: vec!["/venv/bin/pyflyte-execute".into(), "--inputs".into(), "/d/inputs.pb".into()],
            env: &env,
            cwd: "/s/work",
            log: "/s/task.log",
        };
        let line = request.to_line();
        assert!(line.ends_with('\n') && !line[..line.len() - 1].contains('\n'), "one line: {line}");
        let back: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            back,
            serde_json::json!({
                "id": 7,
                "argv": ["/venv/bin/pyflyte-execute", "--inputs", "/d/inputs.pb"],
                "env": {"A": "1", "PATH": "/venv/bin"},
                "cwd": "/s/work",
                "log": "/s/task.log",
            })
        );
    }

    #[test]
    fn replies_parse() {
        assert_eq!(
            parse_reply(r#"{"kind":"started","id":3,"pid":1234,"start":99}"#),
            Ok(Reply::Started { id: 3, pid: 1234, start: Some(99) })
        );
        assert_eq!(
            parse_reply(r#"{"kind":"exited","id":3,"code":null,"signal":9}"#),
            Ok(Reply::Exited { id: 3, code: None, signal: Some(9) })
        );
        assert_eq!(
            parse_reply(r#"{"kind":"refused","id":4,"message":"no"}"#),
            Ok(Reply::Refused { id: 4, message: "no".into() })
        );
        let ready = parse_reply(
            r#"{"kind":"ready","pid":1,"python":"3.11.7","flytekit":"1.16.31","import_keys":["A"],"reinit_keys":["HOME"],"reinit_prefixes":[],"start_prefixes":["PYTHON"]}"#,
        )
        .unwrap();
        assert!(matches!(ready, Reply::Ready { ref flytekit, .. } if flytekit == "1.16.31"));
        assert!(parse_reply("Traceback (most recent call last):").unwrap_err().starts_with("unreadable reply"));
    }

    #[test]
    fn start_ticks_are_field_22() {
        let stat = "4242 (py thon) (x)) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(stat_start_ticks(stat), Some(987_654));
        assert_eq!(stat_start_ticks("4242 (short) S 1"), None);
        assert_eq!(stat_start_ticks("garbage"), None);
    }
}
