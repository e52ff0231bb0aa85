//! The fork server of the warm Python runtime on its own (`aloft_executor::warm::Server`), with the
//! real venv of `scripts/dev-deps.sh`: what it reports, the process group it hands over, and that
//! its children die with it. Whole attempts through the executor are in `tasks.rs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aloft_executor::domain::outcome::ProcessEnd;
use aloft_executor::runner::{Process, Stop};
use aloft_executor::warm::{Server, SpawnError};
use anyhow::Result;

fn python() -> String {
    format!("{}/bin/python", aloft_testkit::deps().python_venv.display())
}

fn env(home: &Path) -> BTreeMap<String, String> {
    let venv = aloft_testkit::deps().python_venv.display().to_string();
    [
        ("PATH".to_string(), format!("{venv}/bin:/usr/bin:/bin")),
        ("VIRTUAL_ENV".to_string(), venv),
        ("HOME".to_string(), home.display().to_string()),
        ("TMPDIR".to_string(), home.display().to_string()),
        ("PYTHONUNBUFFERED".to_string(), "1".to_string()),
    ]
    .into_iter()
    .collect()
}

/// A script run by the venv's interpreter (as console scripts are).
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!{}\n{body}\n", python())).unwrap();
    path
}

fn process(dir: &Path, program: &Path, args: &[&str]) -> Process {
    Process {
        program: program.display().to_string(),
        args: args.iter().map(|s| s.to_string()).collect(),
        env: env(dir),
        cwd: dir.to_path_buf(),
        log: dir.join("task.log"),
        groups: Some(dir.join(".groups")),
    }
}

fn never() -> impl std::future::Future<Output = Stop> {
    std::future::pending()
}

fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'),
        Err(_) => false,
    }
}

async fn dies(pid: i32) -> bool {
    for _ in 0..100 {
        if !alive(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn children_run_in_their_own_group_with_the_given_environment_and_log() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(&python(), dir.path(), &env(dir.path())).await?;
    assert_eq!(server.facts.interpreter, python());
    assert!(server.facts.import_keys.contains("FLYTE_INTERNAL_EXECUTION_ID"), "flytekit's import was recorded");
    let body = "import os, sys\nprint('out', os.environ['FOO'], os.getcwd(), sys.argv[1:])\n\
                print('err', file=sys.stderr)\nassert os.getpgid(0) == os.getpid()\nsys.exit(3)";
    let program = script(dir.path(), "hello", body);
    let mut p = process(dir.path(), &program, &["a", "b c"]);
    p.env.insert("FOO".into(), "bar".into());
    let running = server.spawn(&program, &p).await?;
    let pid = running.pid();
    let record = std::fs::read_to_string(dir.path().join(".groups").join(pid.to_string()))?;
    assert!(record.lines().nth(1).is_some_and(|l| l.starts_with("start=")), "start time recorded: {record}");
    let end = running.wait(None, Duration::from_secs(1), never()).await;
    assert_eq!(end, ProcessEnd::Exited(3));
    let log = std::fs::read_to_string(dir.path().join("task.log"))?;
    assert_eq!(log, format!("out bar {} ['a', 'b c']\nerr\n", dir.path().display()));
    assert!(!dir.path().join(".groups").join(pid.to_string()).exists(), "the record is removed");

    let killer = script(dir.path(), "killer", "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)");
    let end = server.spawn(&killer, &process(dir.path(), &killer, &[])).await?;
    assert_eq!(end.wait(None, Duration::from_secs(1), never()).await, ProcessEnd::Signaled(11));
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn what_stops_a_cold_start_is_refused_the_same_way() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(&python(), dir.path(), &env(dir.path())).await?;
    let program = script(dir.path(), "ok", "pass");
    let mut p = process(dir.path(), &program, &[]);
    p.cwd = dir.path().join("missing");
    match server.spawn(&program, &p).await {
        Err(SpawnError::Refused(why)) => assert!(why.contains("no directory"), "{why}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    let mut p = process(dir.path(), &program, &[]);
    p.log = dir.path().join("missing").join("task.log");
    match server.spawn(&program, &p).await {
        Err(SpawnError::Refused(why)) => assert!(why.starts_with("cannot open the task log"), "{why}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn timeout_kills_the_group_of_a_forked_child() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(&python(), dir.path(), &env(dir.path())).await?;
    // The task ignores SIGTERM and has a child: only the group's SIGKILL ends both.
    let body = "import signal, subprocess, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n\
                c = subprocess.Popen(['sleep', '300'])\nopen('child.pid', 'w').write(str(c.pid))\ntime.sleep(300)";
    let program = script(dir.path(), "stubborn", body);
    let running = server.spawn(&program, &process(dir.path(), &program, &[])).await?;
    let pid = running.pid() as i32;
    let end = running.wait(Some(Duration::from_secs(2)), Duration::from_millis(300), never()).await;
    assert_eq!(end, ProcessEnd::TimedOut(Duration::from_secs(2)));
    let child: i32 = std::fs::read_to_string(dir.path().join("child.pid"))?.trim().parse()?;
    assert!(dies(pid).await && dies(child).await, "the forked task or its child survived");
    assert!(server.is_alive(), "the server outlives its children");
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn children_die_with_the_server() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(&python(), dir.path(), &env(dir.path())).await?;
    let program = script(dir.path(), "sleeper", "import time\ntime.sleep(300)");
    let running = server.spawn(&program, &process(dir.path(), &program, &[])).await?;
    let pid = running.pid() as i32;
    let waiting = tokio::spawn(running.wait(None, Duration::from_secs(1), never()));
    let stopping = std::time::Instant::now();
    server.stop().await;
    // Not the 5 s kill fallback of `stop`: the server itself ends on end of input.
    assert!(stopping.elapsed() < Duration::from_secs(4), "the server did not exit when its input closed");
    assert!(dies(pid).await, "the task outlived its server");
    match waiting.await? {
        ProcessEnd::StartFailed(why) => assert!(why.contains("warm Python runtime stopped"), "{why}"),
        other => panic!("expected a lost task, got {other:?}"),
    }
    assert!(!server.is_alive());
    let program = script(dir.path(), "late", "pass");
    assert!(matches!(server.spawn(&program, &process(dir.path(), &program, &[])).await, Err(SpawnError::Lost(_))));
    Ok(())
}

#[tokio::test]
async fn an_interpreter_without_flytekit_never_becomes_ready() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let err = Server::start("/usr/bin/python3", dir.path(), &env(dir.path())).await.unwrap_err().to_string();
    if std::path::Path::new("/usr/bin/python3").exists() {
        assert!(err.contains("ModuleNotFoundError"), "{err}");
    }
    let err = Server::start("/no/such/python", dir.path(), &env(dir.path())).await.unwrap_err().to_string();
    assert!(err.starts_with("cannot start the fork server with /no/such/python"), "{err}");
    Ok(())
}
