//! `aloft up` as a person runs it: the real binary as a child process with a temporary data
//! directory and free ports. It serves the admin API, writes the flytekit config, stops cleanly
//! on SIGTERM and SIGINT, and keeps its data across restarts. Failures are one line with exit
//! status 2 (usage) or 1 (runtime).

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use aloft_proto::flyteidl::admin;
use aloft_proto::flyteidl::service::admin_service_client::AdminServiceClient;
use anyhow::{Context as _, Result, bail, ensure};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};
use tokio::process::{Child, Command};

/// Start-up includes creating the SQLite database and running its migrations.
const START: Duration = Duration::from_secs(30);
const STOP: Duration = Duration::from_secs(10);

fn aloft() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_aloft"));
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    cmd
}

/// A running `aloft up` and the gRPC address it printed.
struct Up {
    child: Child,
    grpc: SocketAddr,
}

/// Starts `aloft up` on free ports and waits for its banner's `grpc:` line.
async fn up(data_dir: &Path) -> Result<Up> {
    let mut child = aloft()
        .args(["up", "--port", "0", "--http-port", "0", "--nats-port", "0", "--notifier-port", "0"])
        .args(["--lineage-port", "0", "--data-dir"])
        .arg(data_dir)
        .env("ALOFT_LOG", "warn")
        .spawn()?;
    let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
    let grpc = tokio::time::timeout(START, async {
        while let Some(line) = lines.next_line().await? {
            if let Some(addr) = line.trim_start().strip_prefix("grpc:") {
                let addr = addr.split_whitespace().next().context("grpc line has an address")?;
                return Ok(addr.parse::<SocketAddr>()?);
            }
        }
        bail!("aloft up exited before printing its address")
    })
    .await
    .context("aloft up did not print its address in time")??;
    // Keep reading so a full pipe never blocks the child's output.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(Up { child, grpc })
}

impl Up {
    async fn client(&self) -> Result<AdminServiceClient<tonic::transport::Channel>> {
        let channel = tonic::transport::Channel::from_shared(format!("http://{}", self.grpc))?.connect().await?;
        Ok(AdminServiceClient::new(channel))
    }

    /// Sends `signal` and returns the exit status once the process has stopped.
    async fn stop(mut self, signal: Signal) -> Result<std::process::ExitStatus> {
        let pid = self.child.id().context("already exited")?;
        kill(Pid::from_raw(i32::try_from(pid)?), signal)?;
        Ok(tokio::time::timeout(STOP, self.child.wait()).await.context("aloft did not stop in time")??)
    }
}

/// Runs `aloft` to completion and returns (status, stdout, stderr).
async fn finish(args: &[&str]) -> Result<(std::process::ExitStatus, String, String)> {
    let mut child = aloft().args(args).spawn()?;
    let (mut out, mut err) = (String::new(), String::new());
    let mut stdout = child.stdout.take().context("stdout")?;
    let mut stderr = child.stderr.take().context("stderr")?;
    let status = tokio::time::timeout(START, async {
        let (a, b, status) =
            tokio::join!(stdout.read_to_string(&mut out), stderr.read_to_string(&mut err), child.wait());
        a?;
        b?;
        anyhow::Ok(status?)
    })
    .await
    .context("aloft did not finish in time")??;
    Ok((status, out, err))
}

#[tokio::test]
async fn up_serves_the_admin_api_and_keeps_data_across_restarts() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let data_dir = tmp.path().join("aloft-data");

    let first = up(&data_dir).await?;
    let yaml = std::fs::read_to_string(data_dir.join("flytekit.yaml"))?;
    ensure!(yaml.contains(&format!("endpoint: dns:///{}\n", first.grpc)), "{yaml}");
    ensure!(yaml.contains("insecure: true"), "{yaml}");
    ensure!(data_dir.join("metadata.db").is_file());

    let mut client = first.client().await?;
    let domains = client.get_domains(admin::GetDomainRequest {}).await?.into_inner().domains;
    let ids: Vec<&str> = domains.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["development", "staging", "production"]);
    let project = admin::Project { id: "restart-check".into(), name: "restart check".into(), ..Default::default() };
    client.register_project(admin::ProjectRegisterRequest { project: Some(project) }).await?;
    drop(client);
    let status = first.stop(Signal::SIGTERM).await?;
    ensure!(status.success(), "SIGTERM: {status}");

    let second = up(&data_dir).await?;
    let mut client = second.client().await?;
    let got = client.get_project(admin::ProjectGetRequest { id: "restart-check".into(), ..Default::default() }).await?;
    assert_eq!(got.into_inner().name, "restart check");
    drop(client);
    let status = second.stop(Signal::SIGINT).await?;
    ensure!(status.success(), "SIGINT (Ctrl-C): {status}");
    Ok(())
}

#[tokio::test]
async fn taken_port_is_one_line_naming_the_flag_and_exits_1() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = taken.local_addr()?.port().to_string();
    let dir = tmp.path().display().to_string();
    let (status, _, err) = finish(&[
        "up",
        "--data-dir",
        &dir,
        "--port",
        &port,
        "--http-port",
        "0",
        "--nats-port",
        "0",
        "--notifier-port",
        "0",
    ])
    .await?;
    assert_eq!(status.code(), Some(1), "{err}");
    let last = err.lines().last().unwrap_or_default();
    ensure!(last.starts_with(&format!("aloft: cannot listen on 127.0.0.1:{port} (--port): ")), "{err}");
    Ok(())
}

#[tokio::test]
async fn bad_usage_and_data_dir_exit_2() -> Result<()> {
    let (status, _, err) = finish(&["up", "--port", "http"]).await?;
    assert_eq!(status.code(), Some(2), "{err}");
    let (status, _, err) = finish(&["frobnicate"]).await?;
    assert_eq!(status.code(), Some(2), "{err}");

    let tmp = tempfile::tempdir()?;
    let file = tmp.path().join("not-a-dir");
    std::fs::write(&file, "x")?;
    let path = file.display().to_string();
    let (status, _, err) =
        finish(&["up", "--data-dir", &path, "--port", "0", "--http-port", "0", "--nats-port", "0"]).await?;
    assert_eq!(status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    ensure!(err.starts_with(&format!("aloft: data directory {path}: ")), "{err}");
    Ok(())
}

#[tokio::test]
async fn version_and_help_are_honest() -> Result<()> {
    let (status, out, _) = finish(&["version"]).await?;
    ensure!(status.success());
    assert_eq!(out, format!("aloft {}\n", env!("CARGO_PKG_VERSION")));
    let (status, out, _) = finish(&["up", "--help"]).await?;
    ensure!(status.success());
    ensure!(out.contains("scheduler, executor") && out.contains("nats-server"), "{out}");
    ensure!(out.contains("--data-dir") && out.contains("30080"), "{out}");
    Ok(())
}
