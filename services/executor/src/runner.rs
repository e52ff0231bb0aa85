//! Running one task process on the host: its own process group, stdout and stderr interleaved
//! into one log file, and a kill of the whole group (SIGTERM, a grace period, SIGKILL) on
//! timeout, abort or shutdown, so helpers the task spawned (a `sleep`, a data loader) die with it.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::domain::outcome::ProcessEnd;

/// What to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    /// The program, looked up on `env["PATH"]` when it has no `/`.
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// The whole environment (nothing is inherited).
    pub env: BTreeMap<String, String>,
    /// Working directory.
    pub cwd: PathBuf,
    /// File receiving stdout and stderr (appended).
    pub log: PathBuf,
    /// Folder recording the process groups this executor started, so that a restarted executor
    /// can kill the tasks its crashed predecessor left running (see [`reap_stale_groups`]).
    pub groups: Option<PathBuf>,
}

/// Environment variable carrying a token unique to the attempt, used to recognise our own
/// process groups before killing them (a recorded group id may since have been reused).
pub const GROUP_TOKEN: &str = "ALOFT_TASK_GROUP";

/// What ended the wait for a task process.
enum Woke {
    Exited(Result<ProcessEnd, String>),
    TimedOut(Duration),
    Stopped(Stop),
}

/// Why a running process is stopped before it ends by itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// Its execution was aborted, with the cause.
    Abort(String),
    /// The executor is shutting down.
    Shutdown,
}

/// A started process (the leader of its own process group).
#[derive(Debug)]
pub struct Running {
    leader: Leader,
    group: Pid,
    started: Instant,
    marker: Option<PathBuf>,
}

/// The group leader: a child of this process, or a child of the warm Python runtime's fork
/// server, which reaps it and reports how it ended (this process cannot wait for it).
#[derive(Debug)]
enum Leader {
    Spawned(Child),
    Forked { exit: oneshot::Receiver<ForkedExit>, ended: Option<Result<ProcessEnd, String>> },
}

/// How a forked task process ended, as its parent (the fork server) reaped it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForkedExit {
    /// Exit status.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
}

impl Leader {
    /// Waits for the leader to end; the error says why its end cannot be known.
    async fn wait(&mut self) -> Result<ProcessEnd, String> {
        match self {
            Leader::Spawned(child) => {
                child.wait().await.map(from_status).map_err(|e| format!("cannot wait for the task process: {e}"))
            }
            Leader::Forked { exit, ended } => {
                // Awaited by reference and remembered: this wait may be cancelled (a timeout
                // wins the race) and resumed later, and a oneshot yields its value once.
                if ended.is_none() {
                    *ended = Some(match exit.await {
                        Ok(ForkedExit::Code(code)) => Ok(ProcessEnd::Exited(code)),
                        Ok(ForkedExit::Signal(signal)) => Ok(ProcessEnd::Signaled(signal)),
                        Err(_) => Err("the warm Python runtime stopped while the task was running; \
                                       its process group was killed"
                            .to_string()),
                    });
                }
                ended.clone().expect("set above")
            }
        }
    }
}

/// Starts `process`; the error says why it could not start, naming the program.
pub fn spawn(process: &Process) -> Result<Running, String> {
    let open = || {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&process.log)
            .map_err(|e| format!("cannot open the task log {}: {e}", process.log.display()))
    };
    // One open file description for both streams: writes from stdout and stderr land in the
    // order they happen.
    let stdout = open()?;
    let stderr = stdout.try_clone().map_err(|e| format!("cannot share the task log: {e}"))?;
    let token = group_token(process);
    let mut command = Command::new(&process.program);
    command
        .args(&process.args)
        .env_clear()
        .envs(&process.env)
        .env(GROUP_TOKEN, &token)
        .current_dir(&process.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr))
        .process_group(0)
        // Only the leader; the group is killed explicitly. This covers a dropped attempt.
        .kill_on_drop(true);
    let child = command.spawn().map_err(|e| format!("cannot start `{}`: {e}", process.program))?;
    let pid = child.id().ok_or_else(|| format!("`{}` exited before its pid was read", process.program))?;
    let group = Pid::from_raw(i32::try_from(pid).map_err(|_| format!("pid {pid} out of range"))?);
    let marker = record_group(process.groups.as_deref(), pid, &token, None);
    Ok(Running { leader: Leader::Spawned(child), group, started: Instant::now(), marker })
}

/// The token identifying an attempt's process group (in `ALOFT_TASK_GROUP` and the record).
pub fn group_token(process: &Process) -> String {
    process.log.display().to_string()
}

/// A task process the warm Python runtime forked for `process` (already running in its own
/// process group `pid`); `exit` reports how it ends. `start` (clock ticks after boot) is recorded
/// with the group: a forked child's `/proc/<pid>/environ` shows the fork server's environment, so
/// the token cannot identify it after a crash, its start time can.
pub fn forked(
    process: &Process,
    pid: u32,
    start: Option<u64>,
    exit: oneshot::Receiver<ForkedExit>,
) -> Result<Running, String> {
    let group = Pid::from_raw(i32::try_from(pid).map_err(|_| format!("pid {pid} out of range"))?);
    let marker = record_group(process.groups.as_deref(), pid, &group_token(process), start);
    Ok(Running { leader: Leader::Forked { exit, ended: None }, group, started: Instant::now(), marker })
}

/// Writes `<dir>/<pgid>` (the token, and `start=<ticks>` when known); best effort: without the
/// record only the crash clean-up is lost, not the task.
fn record_group(dir: Option<&std::path::Path>, pid: u32, token: &str, start: Option<u64>) -> Option<PathBuf> {
    let dir = dir?;
    let path = dir.join(pid.to_string());
    let content = match start {
        Some(ticks) => format!("{token}\nstart={ticks}"),
        None => token.to_string(),
    };
    match std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&path, content)) {
        Ok(()) => Some(path),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot record the task's process group");
            None
        }
    }
}

/// Kills the process groups recorded in `dir` by an executor that died without cleaning up (its
/// tasks keep running as orphans otherwise, and a redelivered run would run them twice), and
/// clears the records. A group is killed only if its leader is still the recorded process: it
/// carries the recorded token in its environment, or (a warm runtime's child) has the recorded
/// start time. Returns how many groups were killed.
pub fn reap_stale_groups(dir: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    let mut killed = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        let pgid = entry.file_name().to_string_lossy().parse::<i32>().ok();
        let record = std::fs::read_to_string(&path).unwrap_or_default();
        let mut lines = record.lines();
        let token = lines.next().unwrap_or_default();
        let start = lines.find_map(|l| l.strip_prefix("start=")).and_then(|t| t.parse::<u64>().ok());
        if let Some(pgid) = pgid {
            let environ = std::fs::read(format!("/proc/{pgid}/environ")).unwrap_or_default();
            let ours = format!("{GROUP_TOKEN}={token}");
            let same_token = !token.is_empty() && environ.split(|b| *b == 0).any(|kv| kv == ours.as_bytes());
            let same_start = start.is_some()
                && std::fs::read_to_string(format!("/proc/{pgid}/stat"))
                    .ok()
                    .and_then(|stat| crate::domain::warm::stat_start_ticks(&stat))
                    == start;
            if (same_token || same_start) && killpg(Pid::from_raw(pgid), Signal::SIGKILL).is_ok() {
                killed += 1;
            }
        }
        let _ = std::fs::remove_file(&path);
    }
    killed
}

impl Drop for Running {
    /// A spawned leader is killed by `kill_on_drop`; a forked one (not our child) is killed here,
    /// with its group, if the attempt is dropped before it ended.
    fn drop(&mut self) {
        if let Leader::Forked { ended: None, .. } = self.leader {
            self.signal(Signal::SIGKILL);
        }
    }
}

impl Running {
    /// The process id (also its process group id).
    pub fn pid(&self) -> u32 {
        self.group.as_raw() as u32
    }

    /// Waits until the process ends by itself, `timeout` (counted from the start) passes, or
    /// `stop` resolves; in the last two cases the whole group is killed first. Any process left
    /// in the group after the leader exits is killed too.
    pub async fn wait(
        mut self,
        timeout: Option<Duration>,
        grace: Duration,
        stop: impl Future<Output = Stop>,
    ) -> ProcessEnd {
        let started = self.started;
        let deadline = async move {
            match timeout {
                Some(limit) => {
                    tokio::time::sleep_until(started + limit).await;
                    limit
                }
                None => std::future::pending().await,
            }
        };
        let woke = tokio::select! {
            end = self.leader.wait() => Woke::Exited(end),
            limit = deadline => Woke::TimedOut(limit),
            stop = stop => Woke::Stopped(stop),
        };
        let end = self.finish(woke, grace).await;
        self.forget_group();
        end
    }

    async fn finish(&mut self, woke: Woke, grace: Duration) -> ProcessEnd {
        match woke {
            Woke::Exited(end) => {
                self.signal(Signal::SIGKILL);
                end.unwrap_or_else(ProcessEnd::StartFailed)
            }
            Woke::TimedOut(limit) => {
                tracing::info!(pid = self.pid(), timeout = %humantime::format_duration(limit), "task timed out; killing its process group");
                self.kill(grace).await;
                ProcessEnd::TimedOut(limit)
            }
            Woke::Stopped(Stop::Abort(cause)) => {
                tracing::info!(pid = self.pid(), %cause, "execution aborted; killing the task's process group");
                self.kill(grace).await;
                ProcessEnd::Aborted(cause)
            }
            Woke::Stopped(Stop::Shutdown) => {
                tracing::info!(pid = self.pid(), "shutting down; killing the task's process group");
                self.kill(grace).await;
                ProcessEnd::Interrupted
            }
        }
    }

    /// SIGTERM to the group, SIGKILL after `grace` if the leader is still there, then SIGKILL to
    /// whatever is left of the group (members that ignored SIGTERM).
    async fn kill(&mut self, grace: Duration) {
        self.signal(Signal::SIGTERM);
        if tokio::time::timeout(grace, self.leader.wait()).await.is_err() {
            self.signal(Signal::SIGKILL);
            if let Err(e) = self.leader.wait().await {
                tracing::warn!(pid = self.pid(), error = %e, "cannot reap the killed task process");
            }
        }
        self.signal(Signal::SIGKILL);
    }

    fn forget_group(&mut self) {
        if let Some(marker) = self.marker.take() {
            let _ = std::fs::remove_file(marker);
        }
    }

    fn signal(&self, signal: Signal) {
        match killpg(self.group, signal) {
            // Nothing left in the group: the usual case after the leader exits.
            Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
            Err(e) => {
                tracing::warn!(pgid = self.group.as_raw(), ?signal, error = %e, "cannot signal the task's process group")
            }
        }
    }
}

fn from_status(status: ExitStatus) -> ProcessEnd {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => ProcessEnd::Exited(code),
        (None, Some(signal)) => ProcessEnd::Signaled(signal),
        (None, None) => ProcessEnd::Exited(-1),
    }
}

/// The end of a log file (at most `max_bytes`), for failure messages.
pub async fn read_tail(path: &std::path::Path, max_bytes: u64) -> String {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let Ok(mut file) = tokio::fs::File::open(path).await else { return String::new() };
    let Ok(len) = file.metadata().await.map(|m| m.len()) else { return String::new() };
    if file.seek(std::io::SeekFrom::Start(len.saturating_sub(max_bytes))).await.is_err() {
        return String::new();
    }
    let mut bytes = Vec::new();
    if file.read_to_end(&mut bytes).await.is_err() {
        return String::new();
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_restarted_executor_kills_groups_left_by_a_crashed_one() {
        let dir = tempfile::tempdir().unwrap();
        let groups = dir.path().join(".groups");
        let mut p = sh("sleep 30", dir.path());
        p.groups = Some(groups.clone());
        let running = spawn(&p).unwrap();
        let pid = running.pid();
        assert!(groups.join(pid.to_string()).exists(), "the group is recorded while it runs");
        // The executor dies without cleaning up: nothing kills the task, nothing removes the record.
        std::mem::forget(running);
        // A record whose group id now belongs to someone else is not acted on.
        std::fs::write(groups.join("1"), "not ours").unwrap();
        assert_eq!(reap_stale_groups(&groups), 1);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::path::Path::new(&format!("/proc/{pid}/environ")).exists()
            && std::fs::read_to_string(format!("/proc/{pid}/stat")).map(|s| !s.contains(") Z ")).unwrap_or(false)
        {
            assert!(std::time::Instant::now() < deadline, "the orphaned task was not killed");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(std::fs::read_dir(&groups).unwrap().count(), 0, "records are cleared");
    }

    fn sh(script: &str, dir: &std::path::Path) -> Process {
        Process {
            program: "sh".into(),
            args: vec!["-c".into(), script.into()],
            env: [("PATH".to_string(), std::env::var("PATH").unwrap_or_default())].into_iter().collect(),
            cwd: dir.to_path_buf(),
            log: dir.join("task.log"),
            groups: None,
        }
    }

    fn never() -> impl Future<Output = Stop> {
        std::future::pending()
    }

    fn alive(pid: i32) -> bool {
        // A killed child of an exited parent may linger as a zombie until init reaps it.
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => !stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'),
            Err(_) => false,
        }
    }

    async fn wait_dead(pid: i32) -> bool {
        for _ in 0..50 {
            if !alive(pid) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    #[tokio::test]
    async fn output_is_interleaved_and_status_reported() {
        let dir = tempfile::tempdir().unwrap();
        let p = sh("echo out1; echo err1 >&2; echo out2; echo \"$HOME|$FOO\"; exit 3", dir.path());
        let mut p = p;
        p.env.insert("FOO".into(), "bar".into());
        let end = spawn(&p).unwrap().wait(None, Duration::from_secs(1), never()).await;
        assert_eq!(end, ProcessEnd::Exited(3));
        let log = std::fs::read_to_string(dir.path().join("task.log")).unwrap();
        assert_eq!(log, "out1\nerr1\nout2\n|bar\n", "nothing inherited, streams in order");
    }

    #[tokio::test]
    async fn a_missing_program_does_not_start() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = sh("", dir.path());
        p.program = "no-such-program-aloft".into();
        let err = spawn(&p).unwrap_err();
        assert!(err.starts_with("cannot start `no-such-program-aloft`: "), "{err}");
    }

    #[tokio::test]
    async fn program_is_found_on_the_given_path() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let tool = bin.join("aloft-tool");
        std::fs::write(&tool, "#!/bin/sh\necho from-tool\n").unwrap();
        std::fs::set_permissions(&tool, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let mut p = sh("", dir.path());
        p.program = "aloft-tool".into();
        p.args.clear();
        p.env.insert("PATH".into(), format!("{}:/usr/bin:/bin", bin.display()));
        assert_eq!(spawn(&p).unwrap().wait(None, Duration::from_secs(1), never()).await, ProcessEnd::Exited(0));
        assert_eq!(std::fs::read_to_string(dir.path().join("task.log")).unwrap(), "from-tool\n");
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        // The child ignores SIGTERM: only the final SIGKILL of the group gets it.
        let p = sh("(trap '' TERM; exec sleep 300) & echo $! > child.pid; wait", dir.path());
        let running = spawn(&p).unwrap();
        let started = std::time::Instant::now();
        let end = running.wait(Some(Duration::from_millis(500)), Duration::from_millis(500), never()).await;
        assert_eq!(end, ProcessEnd::TimedOut(Duration::from_millis(500)));
        assert!(started.elapsed() < Duration::from_secs(5));
        let child: i32 = std::fs::read_to_string(dir.path().join("child.pid")).unwrap().trim().parse().unwrap();
        assert!(wait_dead(child).await, "the sleep child survived");
    }

    #[tokio::test]
    async fn stop_kills_and_reports_why() {
        let dir = tempfile::tempdir().unwrap();
        let p = sh("sleep 300 & echo $! > child.pid; wait", dir.path());
        let running = spawn(&p).unwrap();
        let stop = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Stop::Abort("user asked".into())
        };
        let end = running.wait(None, Duration::from_secs(2), stop).await;
        assert_eq!(end, ProcessEnd::Aborted("user asked".into()));
        let child: i32 = std::fs::read_to_string(dir.path().join("child.pid")).unwrap().trim().parse().unwrap();
        assert!(wait_dead(child).await, "the sleep child survived");

        let running = spawn(&sh("sleep 300", dir.path())).unwrap();
        let end = running.wait(None, Duration::from_secs(2), async { Stop::Shutdown }).await;
        assert_eq!(end, ProcessEnd::Interrupted);
    }

    #[tokio::test]
    async fn leftovers_die_when_the_leader_exits() {
        let dir = tempfile::tempdir().unwrap();
        let p = sh("sleep 300 & echo $! > child.pid", dir.path());
        assert_eq!(spawn(&p).unwrap().wait(None, Duration::from_secs(1), never()).await, ProcessEnd::Exited(0));
        let child: i32 = std::fs::read_to_string(dir.path().join("child.pid")).unwrap().trim().parse().unwrap();
        assert!(wait_dead(child).await, "the background sleep survived its task");
    }

    #[tokio::test]
    async fn signals_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let end = spawn(&sh("kill -SEGV $$", dir.path())).unwrap().wait(None, Duration::from_secs(1), never()).await;
        assert_eq!(end, ProcessEnd::Signaled(11));
    }

    #[tokio::test]
    async fn tails_read_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, "0123456789").unwrap();
        assert_eq!(read_tail(&path, 4).await, "6789");
        assert_eq!(read_tail(&path, 100).await, "0123456789");
        assert_eq!(read_tail(&dir.path().join("missing"), 4).await, "");
    }
}
