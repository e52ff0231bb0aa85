//! The `aloft` commands as a person runs them, against a real `aloft up` (free ports, a
//! temporary data directory) with workflows run by the real `pyflyte`: tables compared with
//! golden files (`tests/golden/live-*.txt`) after masking what changes from run to run (execution
//! names, times, durations, versions), errors and exit codes, the console page pyflyte links to,
//! and that a restart keeps executions. Also `aloft init` followed by the new project's own tests.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};
use tokio::process::{Child, Command};

const START: Duration = Duration::from_secs(60);
const STOP: Duration = Duration::from_secs(15);
/// pyflyte and the tasks' Python processes are slow on a busy 2-core machine.
const RUN: Duration = Duration::from_secs(240);
const PROJECT: &str = "cli-test";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn venv() -> PathBuf {
    aloft_testkit::deps().python_venv.clone()
}

/// A running `aloft up` and the addresses its banner printed.
struct Up {
    child: Child,
    grpc: SocketAddr,
    notifier: SocketAddr,
    data_dir: PathBuf,
}

fn banner_addr(line: &str, key: &str) -> Option<Result<SocketAddr>> {
    let rest = line.trim_start().strip_prefix(key)?;
    Some(rest.split_whitespace().next().context("address after the key").and_then(|a| Ok(a.parse()?)))
}

impl Up {
    async fn start(data_dir: &Path) -> Result<Up> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_aloft"))
            .args(["up", "--port", "0", "--http-port", "0", "--nats-port", "0", "--notifier-port", "0"])
            .args(["--lineage-port", "0", "--data-dir"])
            .arg(data_dir)
            .arg("--python-venv")
            .arg(venv())
            .env("ALOFT_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
        let (grpc, notifier) = tokio::time::timeout(START, async {
            let (mut grpc, mut notifier) = (None, None);
            while let Some(line) = lines.next_line().await? {
                if let Some(a) = banner_addr(&line, "grpc:") {
                    grpc = Some(a?);
                }
                if let Some(a) = banner_addr(&line, "notifier:") {
                    notifier = Some(a?);
                }
                if let (Some(g), Some(n)) = (grpc, notifier) {
                    return Ok((g, n));
                }
            }
            bail!("aloft up exited before printing its addresses")
        })
        .await
        .context("aloft up did not print its addresses in time")??;
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Up { child, grpc, notifier, data_dir: data_dir.to_path_buf() })
    }

    async fn stop(mut self, signal: Signal) -> Result<std::process::ExitStatus> {
        let pid = self.child.id().context("already exited")?;
        kill(Pid::from_raw(i32::try_from(pid)?), signal)?;
        Ok(tokio::time::timeout(STOP, self.child.wait()).await.context("aloft did not stop in time")??)
    }

    /// Runs an `aloft` command against this Aloft.
    async fn aloft(&self, args: &[&str]) -> Result<Out> {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_aloft"));
        cmd.args(args)
            .env("ALOFT_ENDPOINT", self.grpc.to_string())
            .env("ALOFT_NOTIFIER_ENDPOINT", self.notifier.to_string());
        finish(cmd, START).await
    }

    /// `pyflyte run --remote` of `workflow` in `file`; returns the execution name it printed.
    async fn pyflyte_run(&self, file: &Path, workflow: &str, wait: bool, inputs: &[&str]) -> Result<String> {
        let mut cmd = Command::new(venv().join("bin/pyflyte"));
        cmd.arg("--config").arg(self.data_dir.join("flytekit.yaml")).args(["run", "--remote"]);
        if wait {
            cmd.args(["--wait", "--poll-interval", "1"]);
        }
        cmd.args(["-p", PROJECT, "-d", "development"]).arg(file).arg(workflow).args(inputs);
        cmd.current_dir(file.parent().context("file has a folder")?);
        let out = finish(cmd, RUN).await?;
        ensure!(out.code == Some(0), "pyflyte failed: {}\n{}", out.stdout, out.stderr);
        let name = out
            .stdout
            .split("/executions/")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .with_context(|| format!("no console link in pyflyte's output: {}", out.stdout))?;
        Ok(name.to_string())
    }
}

/// What a finished command printed.
struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

async fn finish(mut cmd: Command, limit: Duration) -> Result<Out> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    let mut child = cmd.spawn()?;
    let (mut stdout, mut stderr) = (String::new(), String::new());
    let mut o = child.stdout.take().context("stdout")?;
    let mut e = child.stderr.take().context("stderr")?;
    let status = tokio::time::timeout(limit, async {
        let (a, b, s) = tokio::join!(o.read_to_string(&mut stdout), e.read_to_string(&mut stderr), child.wait());
        a?;
        b?;
        anyhow::Ok(s?)
    })
    .await
    .context("command did not finish in time")??;
    Ok(Out { code: status.code(), stdout, stderr })
}

fn ok(out: &Out) -> Result<&str> {
    ensure!(out.code == Some(0), "exit {:?}\nstdout: {}\nstderr: {}", out.code, out.stdout, out.stderr);
    Ok(&out.stdout)
}

/// Masks what differs between runs, token by token, and collapses the column padding (whose
/// width depends on the masked values); `executions` are replaced by `<exec>`, `<exec2>`, ...
fn mask(text: &str, executions: &[&str], endpoint: &str) -> String {
    let is_date = |t: &str| {
        t.len() == 10
            && t.chars().enumerate().all(|(i, c)| if i == 4 || i == 7 { c == '-' } else { c.is_ascii_digit() })
    };
    let is_time = |t: &str| {
        t.len() == 8 && t.chars().enumerate().all(|(i, c)| if i == 2 || i == 5 { c == ':' } else { c.is_ascii_digit() })
    };
    let is_duration = |t: &str| {
        t.strip_suffix('s').is_some_and(|n| {
            n.parse::<f64>().is_ok()
                || n.split_once('m').is_some_and(|(m, s)| m.parse::<u32>().is_ok() && s.parse::<u32>().is_ok())
        })
    };
    let mut out = String::new();
    for line in text.lines() {
        let mut tokens = Vec::new();
        let mut after_version = false;
        for token in line.split_whitespace() {
            let mut t = token.replace(endpoint, "<endpoint>");
            for (i, e) in executions.iter().enumerate() {
                t = t.replace(e, &if i == 0 { "<exec>".to_string() } else { format!("<exec{}>", i + 1) });
            }
            let t = if after_version {
                "<version>)".to_string()
            } else if is_date(&t) {
                "<date>".into()
            } else if is_time(&t) {
                "<time>".into()
            } else if is_duration(&t) {
                "<duration>".into()
            } else {
                t
            };
            after_version = t == "(version";
            tokens.push(t);
        }
        out.push_str(&tokens.join(" "));
        out.push('\n');
    }
    out
}

/// Sorts the rows of the node table: nodes that run in parallel start in any order.
fn sort_node_rows(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let Some(header) = lines.iter().position(|l| l.starts_with("NODE ")) else { return text.to_string() };
    let end = lines[header..].iter().position(|l| l.is_empty()).map(|e| header + e).unwrap_or(lines.len());
    let mut rows: Vec<&str> = lines[header + 1..end].to_vec();
    rows.sort();
    let mut all: Vec<&str> = lines[..=header].to_vec();
    all.extend(rows);
    all.extend(&lines[end..]);
    all.join("\n") + "\n"
}

fn golden(name: &str, actual: &str) -> Result<()> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual)?;
    }
    let expected =
        std::fs::read_to_string(&path).with_context(|| format!("{} (UPDATE_GOLDEN=1 creates it)", path.display()))?;
    assert_eq!(actual, expected, "{name} differs from its golden file; UPDATE_GOLDEN=1 rewrites it");
    Ok(())
}

/// One HTTP/1.1 GET on the admin port, as a browser following pyflyte's link does.
async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let resp = reqwest::Client::new().get(format!("http://{addr}{path}")).send().await?;
    let status = resp.status().as_u16();
    Ok((status, resp.text().await?))
}

#[tokio::test(flavor = "multi_thread")]
async fn commands_against_a_running_aloft_and_after_a_restart() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let data_dir = tmp.path().join("aloft-data");
    let up = Up::start(&data_dir).await?;
    let endpoint = up.grpc.to_string();

    // projects
    let created =
        up.aloft(&["projects", "create", PROJECT, "--team", "ml-platform", "--slack-channel", "#ml-alerts"]).await?;
    ensure!(ok(&created)?.starts_with("created project cli-test\n"), "{}", created.stdout);
    golden("live-projects.txt", ok(&up.aloft(&["projects", "list"]).await?)?)?;
    let bad = up.aloft(&["projects", "create", "Not Valid"]).await?;
    assert_eq!(bad.code, Some(2), "{}", bad.stderr);

    // a successful run: list, show, inputs, outputs, logs
    let quickstart = repo().join("examples/quickstart/pipeline.py");
    let name = up.pyflyte_run(&quickstart, "listing_report", true, &["--category", "shoes"]).await?;
    let list = up.aloft(&["executions", "list", "-p", PROJECT]).await?;
    golden("live-executions.txt", &mask(ok(&list)?, &[&name], &endpoint))?;
    let show = up.aloft(&["executions", "show", &name, "-p", PROJECT]).await?;
    golden("live-show.txt", &sort_node_rows(&mask(ok(&show)?, &[&name], &endpoint)))?;
    golden("live-inputs.txt", ok(&up.aloft(&["inputs", &name, "-p", PROJECT]).await?)?)?;
    golden("live-outputs.txt", ok(&up.aloft(&["outputs", &name, "-p", PROJECT]).await?)?)?;
    let node_outputs = up.aloft(&["outputs", &format!("{PROJECT}/development/{name}"), "n9"]).await?;
    ensure!(ok(&node_outputs)?.contains("{\"shoes\": 17.42}"), "{}", node_outputs.stdout);
    let log = up.aloft(&["logs", &name, "n9", "-p", PROJECT]).await?;
    ensure!(ok(&log)?.contains("shoes: 26 listings, mean 17.42"), "{}", log.stdout);
    let json = up.aloft(&["executions", "list", "-p", PROJECT, "--output", "json"]).await?;
    let rows: serde_json::Value = serde_json::from_str(ok(&json)?)?;
    assert_eq!(rows[0]["name"], name.as_str());
    assert_eq!(rows[0]["phase"], "SUCCEEDED");

    // unknown names, a dead endpoint, an attempt that does not exist: one line, exit 1
    let missing = up.aloft(&["executions", "show", "nope", "-p", PROJECT]).await?;
    assert_eq!(
        (missing.code, missing.stderr.as_str()),
        (Some(1), "aloft: execution cli-test/development/nope not found\n")
    );
    let no_node = up.aloft(&["logs", &name, "n99", "-p", PROJECT]).await?;
    assert_eq!(no_node.code, Some(1));
    assert_eq!(no_node.stderr, format!("aloft: node n99 of execution cli-test/development/{name} not found\n"));
    let no_attempt = up.aloft(&["logs", &name, "n9", "--attempt", "4", "-p", PROJECT]).await?;
    assert_eq!(no_attempt.code, Some(1));
    ensure!(no_attempt.stderr.starts_with("aloft: attempt 4 of node n9 of execution"), "{}", no_attempt.stderr);
    let dead = up.aloft(&["projects", "list", "--endpoint", "127.0.0.1:1"]).await?;
    assert_eq!(dead.code, Some(1));
    ensure!(dead.stderr.starts_with("aloft: cannot reach aloft at 127.0.0.1:1: "), "{}", dead.stderr);
    assert_eq!(dead.stderr.lines().count(), 1, "{}", dead.stderr);
    let unknown_project = up.aloft(&["executions", "list", "-p", "no-such-project"]).await?;
    assert_eq!(
        (unknown_project.code, unknown_project.stderr.as_str()),
        (Some(1), "aloft: project no-such-project not found\n")
    );

    // watch, relaunch, terminate, notifications
    let watched = up.aloft(&["executions", "watch", &name, "-p", PROJECT]).await?;
    ensure!(ok(&watched)?.contains("SUCCEEDED  (10/10 nodes done)"), "{}", watched.stdout);
    let relaunched = up.aloft(&["executions", "relaunch", &name, "-p", PROJECT, "-o", "json"]).await?;
    let new: serde_json::Value = serde_json::from_str(ok(&relaunched)?)?;
    let new_name = new["name"].as_str().context("relaunch names the new execution")?.to_string();
    let watched = up.aloft(&["executions", "watch", &new_name, "-p", PROJECT, "--interval", "0.5"]).await?;
    ok(&watched)?;
    let again = up.aloft(&["executions", "show", &new_name, "-p", PROJECT, "-o", "json"]).await?;
    let again: serde_json::Value = serde_json::from_str(ok(&again)?)?;
    assert_eq!(again["execution"]["mode"], "relaunch");
    assert_eq!(again["execution"]["reference"], format!("{PROJECT}/development/{name}").as_str());
    let finished = up.aloft(&["executions", "terminate", &name, "-p", PROJECT]).await?;
    assert_eq!(finished.code, Some(1));
    ensure!(finished.stderr.contains("already ended SUCCEEDED; nothing to terminate"), "{}", finished.stderr);
    // development runs are not announced by default (the policy is for production failures)
    let notes = up.aloft(&["notifications", &name, "-p", PROJECT]).await?;
    ensure!(ok(&notes)?.starts_with("no notifications for cli-test/development/"), "{}", notes.stdout);

    // a failing run: watch exits 3 and show names the error
    let fails = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fails.py");
    let failed = up.pyflyte_run(&fails, "boom", false, &[]).await?;
    let watched = up.aloft(&["executions", "watch", &failed, "-p", PROJECT]).await?;
    assert_eq!(watched.code, Some(3), "{}\n{}", watched.stdout, watched.stderr);
    assert_eq!(watched.stderr, format!("aloft: execution cli-test/development/{failed} ended FAILED\n"));
    ensure!(watched.stdout.contains("n is 42; this task always fails"), "{}", watched.stdout);

    // the console page pyflyte links to, on the admin port
    let page = format!("/console/projects/{PROJECT}/domains/development/executions/{name}");
    let (status, html) = http_get(up.grpc, &page).await?;
    assert_eq!(status, 200, "{html}");
    for needle in ["SUCCEEDED", "pipeline.report", "/nodes/n9/attempts/0/log", "&quot;shoes&quot;"] {
        ensure!(html.contains(needle), "{needle} not in {html}");
    }
    let (status, log) = http_get(up.grpc, &format!("{page}/nodes/n9/attempts/0/log")).await?;
    ensure!(status == 200 && log.contains("shoes: 26 listings"), "{status} {log}");
    let (status, html) = http_get(up.grpc, "/console").await?;
    ensure!(status == 200 && html.contains("ml-platform"), "{status} {html}");
    let (status, _) =
        http_get(up.grpc, &format!("/console/projects/{PROJECT}/domains/development/executions/nope")).await?;
    assert_eq!(status, 404);

    // a restart keeps projects and executions
    let status = up.stop(Signal::SIGINT).await?;
    ensure!(status.success(), "Ctrl-C: {status}");
    let up = Up::start(&data_dir).await?;
    let list = up.aloft(&["executions", "list", "-p", PROJECT, "-o", "json"]).await?;
    let rows: serde_json::Value = serde_json::from_str(ok(&list)?)?;
    let names: Vec<&str> = rows.as_array().context("a list")?.iter().filter_map(|r| r["name"].as_str()).collect();
    for n in [&name, &new_name, &failed] {
        ensure!(names.contains(&n.as_str()), "{n} missing after restart: {names:?}");
    }
    let log = up.aloft(&["logs", &name, "n9", "-p", PROJECT]).await?;
    ensure!(ok(&log)?.contains("shoes: 26 listings"), "{}", log.stdout);
    let status = up.stop(Signal::SIGTERM).await?;
    ensure!(status.success(), "SIGTERM: {status}");
    Ok(())
}

#[tokio::test]
async fn init_creates_a_project_whose_own_tests_pass() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("demo-model");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_aloft"));
    cmd.args(["init", "demo-model", "--team", "forecasting", "--dir"]).arg(&dir);
    let out = finish(cmd, START).await?;
    ensure!(ok(&out)?.contains("demo_model/workflows.py"), "{}", out.stdout);
    ensure!(std::fs::read_to_string(dir.join("owners.yaml"))?.contains("team: forecasting"));

    let mut pytest = Command::new(venv().join("bin/python"));
    // HOME inside the temporary folder: flytekit's local cache must not leak between runs.
    pytest.args(["-m", "pytest", "-p", "no:cacheprovider"]).current_dir(&dir).env("HOME", tmp.path());
    let out = finish(pytest, RUN).await?;
    ensure!(out.code == Some(0), "the generated project's tests failed:\n{}\n{}", out.stdout, out.stderr);
    ensure!(out.stdout.contains("6 passed"), "{}", out.stdout);

    let mut again = Command::new(env!("CARGO_BIN_EXE_aloft"));
    again.args(["init", "demo-model", "--dir"]).arg(&dir);
    let out = finish(again, START).await?;
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    Ok(())
}
