//! The warm Python runtime (ADR 0011): one fork server per executor, started on the first Python
//! task, with flytekit already imported; each eligible attempt runs in a child it forks. The
//! executor still owns the attempt's process group (timeout, abort and shutdown kill it as on the
//! cold path); the server only forks, reaps and reports the exit status.
//!
//! If the server cannot start, stops, or an attempt cannot run there, the attempt runs cold (a
//! fresh process): warm is an optimisation, never a requirement.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::domain::warm::{
    self, Reply, Request, Runtime, ServerFacts, entry_of, env_mismatch, parse_reply, shebang_interpreter,
};
use crate::runner::{self, ForkedExit, GROUP_TOKEN, Process};

/// The fork server's source, written next to its home directory when it starts.
pub const SERVER_SOURCE: &str = include_str!("../python/aloft_forkserver.py");
/// How long the server may take to import flytekit (seconds on a busy 2-core machine).
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a started request may wait for the server's answer (a fork takes milliseconds).
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// After the server failed to start, attempts run cold for this long before it is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(60);

/// Why an attempt does not run warm.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Cold {
    /// Not a warm candidate at all (cold configured, raw container, another program).
    #[error("{0}")]
    Chosen(String),
    /// A candidate, but the runtime cannot take it (unavailable, another interpreter, environment).
    #[error("{0}")]
    Unsuitable(String),
}

/// Why the server could not start an attempt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpawnError {
    /// What makes the cold path's spawn fail (the log cannot be opened, no working directory):
    /// the attempt fails the same way.
    #[error("{0}")]
    Refused(String),
    /// The server is gone or did not answer: run the attempt cold.
    #[error("{0}")]
    Lost(String),
}

/// Why the server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Writing the server's files or starting the interpreter failed.
    #[error("cannot start the fork server with {interpreter}: {source}")]
    Io {
        /// The interpreter.
        interpreter: String,
        /// What failed.
        source: std::io::Error,
    },
    /// The server said it cannot serve, or exited, or said something else.
    #[error("the fork server did not become ready: {0}")]
    NotReady(String),
    /// No ready line within [`READY_TIMEOUT`].
    #[error("the fork server was not ready after {0:?}")]
    Timeout(Duration),
}

/// The executor's warm runtime: the fork server's lifecycle and the choice per attempt.
pub(crate) struct WarmPython {
    default: Runtime,
    /// Where the server's directory is created.
    scratch_dir: PathBuf,
    /// The base layer of every task's environment; the server gets it too (with its own `HOME`
    /// and `TMPDIR`), so that a task's environment usually only adds to the server's.
    base_env: BTreeMap<String, String>,
    state: tokio::sync::Mutex<State>,
}

enum State {
    Idle,
    Up(Arc<Server>),
    Down { since: Instant, why: String },
}

impl WarmPython {
    /// A runtime whose server is started on first use, with `base_env` (its `HOME` and `TMPDIR`
    /// replaced by its own directories).
    pub(crate) fn new(default: Runtime, scratch_dir: impl Into<PathBuf>, base_env: BTreeMap<String, String>) -> Self {
        WarmPython { default, scratch_dir: scratch_dir.into(), base_env, state: tokio::sync::Mutex::new(State::Idle) }
    }

    /// The server and the console script to run for `process`, or why it runs cold.
    pub(crate) async fn choose(&self, process: &Process, raw_container: bool) -> Result<(Arc<Server>, PathBuf), Cold> {
        if raw_container {
            return Err(Cold::Chosen("a raw container".into()));
        }
        let runtime = warm::requested(self.default, &process.env).unwrap_or_else(|(default, why)| {
            tracing::warn!(%why, runtime = %default, "ignoring the task's runtime choice");
            default
        });
        if runtime == Runtime::Cold {
            return Err(Cold::Chosen("python runtime `cold`".into()));
        }
        let Some(entry) = entry_of(&process.program) else {
            return Err(Cold::Chosen(format!("`{}` is not a flytekit entry point", process.program)));
        };
        // As execvp would find it; not found, it runs cold and fails there the usual way.
        let script = which(&process.program, process.env.get("PATH").map(String::as_str).unwrap_or(""))
            .ok_or_else(|| Cold::Unsuitable(format!("`{entry}` is not on the task's PATH")))?;
        let interpreter = read_interpreter(&script)
            .await
            .ok_or_else(|| Cold::Unsuitable(format!("{} is not a Python console script", script.display())))?;
        let server = self.server(&interpreter).await.map_err(Cold::Unsuitable)?;
        if server.facts.interpreter != interpreter {
            return Err(Cold::Unsuitable(format!(
                "{} runs {interpreter}, the warm runtime {}",
                script.display(),
                server.facts.interpreter
            )));
        }
        if let Some(why) = env_mismatch(&server.facts, &process.env) {
            return Err(Cold::Unsuitable(why));
        }
        Ok((server, script))
    }

    /// The running server, starting it (with `interpreter`) if there is none or it died; an error
    /// while it is failing to start (retried after [`RETRY_AFTER`]).
    async fn server(&self, interpreter: &str) -> Result<Arc<Server>, String> {
        let mut state = self.state.lock().await;
        match &*state {
            State::Up(server) if server.is_alive() => return Ok(Arc::clone(server)),
            State::Up(_) => tracing::warn!("the warm Python runtime stopped; starting it again"),
            State::Down { since, why } if since.elapsed() < RETRY_AFTER => {
                return Err(format!("the warm runtime is unavailable: {why}"));
            }
            State::Down { .. } | State::Idle => {}
        }
        let started = Instant::now();
        match Server::start(interpreter, &self.scratch_dir, &self.base_env).await {
            Ok(server) => {
                tracing::info!(
                    interpreter,
                    pid = server.pid,
                    ready_in = ?started.elapsed(),
                    "warm Python runtime ready"
                );
                let server = Arc::new(server);
                *state = State::Up(Arc::clone(&server));
                Ok(server)
            }
            Err(e) => {
                let why = e.to_string();
                tracing::warn!(error = %why, retry_in = ?RETRY_AFTER, "the warm Python runtime cannot start; Python tasks run cold");
                *state = State::Down { since: Instant::now(), why: why.clone() };
                Err(format!("the warm runtime is unavailable: {why}"))
            }
        }
    }

    /// Stops the server (its running children are killed with it).
    pub(crate) async fn stop(&self) {
        let mut state = self.state.lock().await;
        if let State::Up(server) = std::mem::replace(&mut *state, State::Idle) {
            server.stop().await;
        }
    }
}

/// A started fork server.
pub struct Server {
    /// Its pid.
    pub pid: u32,
    /// What it reported at start, and its environment.
    pub facts: ServerFacts,
    child: tokio::sync::Mutex<Child>,
    /// Requests go here; `None` once closed by [`Server::stop`].
    stdin: tokio::sync::Mutex<Option<ChildStdin>>,
    pending: Arc<Mutex<HashMap<u64, Pending>>>,
    /// Cancelled once its replies end (it exited).
    gone: CancellationToken,
    next_id: AtomicU64,
    dir: PathBuf,
}

/// The reply channels of one request.
#[derive(Default)]
struct Pending {
    started: Option<oneshot::Sender<Result<Started, SpawnError>>>,
    exited: Option<oneshot::Sender<ForkedExit>>,
}

/// A forked task process: its pid and start time (see [`Reply::Started`]).
#[derive(Debug, Clone, Copy)]
struct Started {
    pid: u32,
    start: Option<u64>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("pid", &self.pid).field("interpreter", &self.facts.interpreter).finish()
    }
}

impl Server {
    /// Writes the server into a fresh directory under `<scratch_dir>/.warm-python`, starts it with `interpreter`
    /// and `env` (`HOME` and `TMPDIR` set to directories of its own) and waits until it has
    /// imported flytekit.
    pub async fn start(
        interpreter: &str,
        scratch_dir: &Path,
        env: &BTreeMap<String, String>,
    ) -> Result<Server, StartError> {
        let io = |source| StartError::Io { interpreter: interpreter.to_string(), source };
        let unique = uuid::Uuid::new_v4().simple().to_string();
        let dir = crate::warm_dir(&scratch_dir.to_string_lossy()).join(&unique[..8]);
        let (home, tmp) = (dir.join("home"), dir.join("tmp"));
        for d in [&home, &tmp] {
            tokio::fs::create_dir_all(d).await.map_err(io)?;
        }
        let script = dir.join("aloft_forkserver.py");
        tokio::fs::write(&script, SERVER_SOURCE).await.map_err(io)?;
        let mut env = env.clone();
        env.insert("HOME".into(), home.to_string_lossy().into_owned());
        env.insert("TMPDIR".into(), tmp.to_string_lossy().into_owned());
        let mut child = Command::new(interpreter)
            .arg(&script)
            .env_clear()
            .envs(&env)
            .current_dir(&dir)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(io)?;
        let pid = child.id().unwrap_or_default();
        let stdin = child.stdin.take().expect("piped");
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        let stderr = child.stderr.take().expect("piped");
        // What the server (not a task: those write to their logs) prints goes to our log.
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::info!(target: "aloft_executor::warm::server", "{line}");
            }
        });
        let ready = tokio::time::timeout(READY_TIMEOUT, lines.next_line()).await;
        let fail = |e: StartError| {
            let _ = std::fs::remove_dir_all(&dir);
            e
        };
        let line = match ready {
            Err(_) => return Err(fail(StartError::Timeout(READY_TIMEOUT))),
            Ok(Err(e)) => return Err(fail(StartError::NotReady(format!("cannot read its output: {e}")))),
            Ok(Ok(None)) => {
                let status = child.wait().await.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                return Err(fail(StartError::NotReady(format!("it exited ({status}); see its output above"))));
            }
            Ok(Ok(Some(line))) => line,
        };
        let facts = match parse_reply(&line) {
            Ok(Reply::Ready {
                python, flytekit, import_keys, reinit_keys, reinit_prefixes, start_prefixes, ..
            }) => {
                tracing::debug!(%python, %flytekit, import_keys = import_keys.len(), "fork server facts");
                ServerFacts {
                    interpreter: interpreter.to_string(),
                    env,
                    import_keys,
                    reinit_keys,
                    reinit_prefixes,
                    start_prefixes,
                }
            }
            Ok(Reply::Failed { message }) => return Err(fail(StartError::NotReady(message))),
            Ok(other) => return Err(fail(StartError::NotReady(format!("unexpected first reply {other:?}")))),
            Err(e) => return Err(fail(StartError::NotReady(e))),
        };
        let pending: Arc<Mutex<HashMap<u64, Pending>>> = Arc::default();
        let gone = CancellationToken::new();
        tokio::spawn(read_replies(lines, Arc::clone(&pending), gone.clone()));
        Ok(Server {
            pid,
            facts,
            child: tokio::sync::Mutex::new(child),
            stdin: tokio::sync::Mutex::new(Some(stdin)),
            pending,
            gone,
            next_id: AtomicU64::new(1),
            dir,
        })
    }

    /// Still serving.
    pub fn is_alive(&self) -> bool {
        !self.gone.is_cancelled()
    }

    /// Runs `process` (its program resolved to `script`) in a forked child; the returned
    /// [`runner::Running`] behaves like a spawned one (timeout, abort and shutdown kill its group).
    pub async fn spawn(&self, script: &Path, process: &Process) -> Result<runner::Running, SpawnError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (started_tx, started_rx) = oneshot::channel();
        let (exited_tx, exited_rx) = oneshot::channel();
        let mut env = process.env.clone();
        env.insert(GROUP_TOKEN.to_string(), runner::group_token(process));
        let cwd = process.cwd.to_string_lossy();
        let log = process.log.to_string_lossy();
        let argv = std::iter::once(script.to_string_lossy().into_owned()).chain(process.args.iter().cloned()).collect();
        let line = Request { id, argv, env: &env, cwd: &cwd, log: &log }.to_line();
        self.pending
            .lock()
            .expect("pending lock")
            .insert(id, Pending { started: Some(started_tx), exited: Some(exited_tx) });
        let lost = |why: String| {
            self.pending.lock().expect("pending lock").remove(&id);
            SpawnError::Lost(why)
        };
        {
            let mut stdin = self.stdin.lock().await;
            let Some(stdin) = stdin.as_mut() else {
                return Err(lost("the warm runtime was stopped".into()));
            };
            if let Err(e) = async {
                stdin.write_all(line.as_bytes()).await?;
                stdin.flush().await
            }
            .await
            {
                return Err(lost(format!("cannot write to the warm runtime: {e}")));
            }
        }
        let Started { pid, start } = match tokio::time::timeout(START_TIMEOUT, started_rx).await {
            Ok(Ok(Ok(started))) => started,
            Ok(Ok(Err(e))) => return Err(e),
            Ok(Err(_)) => return Err(lost("the warm runtime stopped before starting the task".into())),
            Err(_) => return Err(lost(format!("the warm runtime did not start the task within {START_TIMEOUT:?}"))),
        };
        runner::forked(process, pid, start, exited_rx).map_err(SpawnError::Lost)
    }

    /// Closes its input (it kills its running children and exits) and waits for it.
    pub async fn stop(&self) {
        // Dropping our end of the pipe is what the server sees as end of input.
        drop(self.stdin.lock().await.take());
        let mut child = self.child.lock().await;
        if tokio::time::timeout(Duration::from_secs(5), child.wait()).await.is_err() {
            let _ = child.kill().await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Dispatches the server's replies to the waiting attempts until its output ends; then every
/// attempt still waiting learns the server is gone (their senders are dropped).
async fn read_replies(
    mut lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    pending: Arc<Mutex<HashMap<u64, Pending>>>,
    gone: CancellationToken,
) {
    while let Ok(Some(line)) = lines.next_line().await {
        let reply = match parse_reply(&line) {
            Ok(reply) => reply,
            Err(e) => {
                tracing::warn!(error = %e, "ignoring a line from the warm Python runtime");
                continue;
            }
        };
        let mut pending = pending.lock().expect("pending lock");
        match reply {
            Reply::Started { id, pid, start } => {
                let taken =
                    pending.get_mut(&id).and_then(|p| p.started.take()).map(|tx| tx.send(Ok(Started { pid, start })));
                if !matches!(taken, Some(Ok(()))) {
                    // Nobody waits for it any more (the attempt gave up and ran cold, or was
                    // dropped): it must not run unobserved.
                    pending.remove(&id);
                    tracing::warn!(pid, "killing a warm task process nobody waits for");
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(pid as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
            Reply::Refused { id, message } => {
                if let Some(tx) = pending.remove(&id).and_then(|p| p.started) {
                    let _ = tx.send(Err(SpawnError::Refused(message)));
                }
            }
            Reply::Exited { id, code, signal } => {
                let end = match (code, signal) {
                    (_, Some(signal)) => ForkedExit::Signal(signal),
                    (code, None) => ForkedExit::Code(code.unwrap_or(-1)),
                };
                if let Some(tx) = pending.remove(&id).and_then(|p| p.exited) {
                    let _ = tx.send(end);
                }
            }
            other => tracing::warn!(reply = ?other, "unexpected reply from the warm Python runtime"),
        }
    }
    gone.cancel();
    pending.lock().expect("pending lock").clear();
}

/// `program` as `execvp` finds it on `path`: itself when it has a `/`, else the first executable
/// file of that name in the path's directories.
fn which(program: &str, path: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if program.contains('/') {
        let p = PathBuf::from(program);
        return executable(&p).then_some(p);
    }
    path.split(':').map(|dir| Path::new(if dir.is_empty() { "." } else { dir }).join(program)).find(|p| executable(p))
}

/// The interpreter named by the script's first line.
async fn read_interpreter(script: &Path) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut head = vec![0; 4096];
    let mut file = tokio::fs::File::open(script).await.ok()?;
    let n = file.read(&mut head).await.ok()?;
    let first = head[..n].split(|b| *b == b'\n').next()?;
    shebang_interpreter(first).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_follows_execvp() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(a.join("tool"), "not executable").unwrap();
        std::fs::write(b.join("tool"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(b.join("tool"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = format!("{}:{}", a.display(), b.display());
        assert_eq!(which("tool", &path), Some(b.join("tool")), "the first executable one");
        assert_eq!(which("missing", &path), None);
        let absolute = b.join("tool").to_string_lossy().into_owned();
        assert_eq!(which(&absolute, ""), Some(b.join("tool")), "a path is taken as is");
    }
}
