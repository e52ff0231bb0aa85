//! The `nats-server` child process of `aloft up`: JetStream with its store inside the data
//! directory, on loopback, stopped with the parent.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::Error;

/// The nats-server version `scripts/dev-deps.sh` installs (JetStream KV needs 2.10 or later).
pub const NATS_VERSION: &str = "2.15.1";

/// Where to look for `nats-server`, first match wins: the flag, `ALOFT_NATS_SERVER`, `PATH`, then
/// the tools folder of `scripts/dev-deps.sh`.
pub fn find_nats_server(flag: Option<&Path>) -> Result<PathBuf, Error> {
    if let Some(p) = flag {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(Error::Usage(format!("--nats-server {}: no such file", p.display())))
        };
    }
    if let Some(p) = std::env::var_os("ALOFT_NATS_SERVER").map(PathBuf::from) {
        return if p.is_file() {
            Ok(p)
        } else {
            Err(Error::Usage(format!("ALOFT_NATS_SERVER={}: no such file", p.display())))
        };
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join("nats-server");
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    let tools = std::env::var_os("DEV_DEPS_TOOLS")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/aloft/dev-deps")));
    if let Some(t) = tools {
        let candidate = t.join(format!("nats-server-{NATS_VERSION}/nats-server"));
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(Error::Usage(
        "nats-server not found: run scripts/dev-deps.sh (it installs nats-server 2.15), or pass --nats-server PATH"
            .into(),
    ))
}

/// A running nats-server; killed when dropped.
pub struct Nats {
    child: Child,
    /// `nats://127.0.0.1:<port>`.
    pub url: String,
}

impl Nats {
    /// Starts nats-server with JetStream on `port` (0 picks a free one) and waits until it accepts
    /// connections.
    pub async fn start(binary: &Path, data_dir: &Path, port: u16) -> Result<Nats, Error> {
        let port = if port == 0 { free_port()? } else { port };
        let store = data_dir.join("nats");
        std::fs::create_dir_all(&store)
            .map_err(|source| Error::DataDir { path: store.display().to_string(), source })?;
        let log = data_dir.join("nats.log");
        let log_file =
            std::fs::File::create(&log).map_err(|source| Error::DataDir { path: log.display().to_string(), source })?;
        let child = Command::new(binary)
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-n", "aloft-up", "-sd"])
            .arg(&store)
            .stdout(log_file.try_clone().map_err(|source| Error::DataDir { path: log.display().to_string(), source })?)
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Error::Nats(format!("cannot start {}: {e}", binary.display())))?;
        let mut nats = Nats { child, url: format!("nats://127.0.0.1:{port}") };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = nats.child.try_wait() {
                return Err(Error::Nats(format!("nats-server exited with {status} at start (see {})", log.display())));
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return Ok(nats);
            }
            if tokio::time::Instant::now() > deadline {
                return Err(Error::Nats(format!(
                    "nats-server did not listen on port {port} within 15 s (see {})",
                    log.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the server gracefully (SIGTERM lets JetStream flush), killing it after a grace period.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            // SAFETY-free: signalling our own child through the kill command avoids unsafe libc calls.
            let _ = std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
            if tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await.is_ok() {
                return;
            }
        }
        let _ = self.child.kill().await;
    }
}

fn free_port() -> Result<u16, Error> {
    let l =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| Error::Nats(format!("cannot find a free port: {e}")))?;
    Ok(l.local_addr().map_err(|e| Error::Nats(e.to_string()))?.port())
}
