//! The `aloft-notifier` binary killed with SIGKILL in the middle of delivering, then started
//! again, on Postgres: every (execution, phase, destination) reaches Slack exactly once.
//!
//! At the moment of the kill, by construction: some messages are delivered, two channels are
//! parked by a 429 Retry-After (their next messages claimed by nobody), one message is in flight
//! to a Slack that has not answered yet (claimed under a lease), and the rest are waiting for
//! their channel's pace. The hung request dies with the process, unanswered, so Slack never
//! posted it; the restarted notifier takes it over once the lease expires.

mod common;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aloft_bus::Bus;
use aloft_proto::flyteidl::core::workflow_execution::Phase;
use anyhow::{Context, Result, bail};
use common::{Admin, Reply, Slack, exec_id, finished_run, publish_terminal, settled, slack_rule};

fn config_file(
    dir: &std::path::Path,
    c: &aloft_notifier::Config,
    webhooks: &BTreeMap<String, String>,
) -> Result<std::path::PathBuf> {
    let hooks: String = webhooks.iter().map(|(k, v)| format!("{k} = \"{v}\"\n")).collect();
    let text = format!(
        "database_url = \"{db}\"\nconsole_url = \"{console}\"\n\
         [bus]\nurl = \"{url}\"\nstream_prefix = \"{sp}\"\nsubject_prefix = \"{subp}\"\n\
         [health]\nlisten = \"{listen}\"\n\
         [metadata]\nendpoint = \"{md}\"\nsettle_wait = \"2s\"\n\
         [slack]\ntimeout = \"5s\"\n[slack.webhooks]\n{hooks}\
         [delivery]\nlease = \"10s\"\nmin_interval = \"1s\"\npoll_interval = \"100ms\"\nbackoff_base = \"200ms\"\nbackoff_max = \"1s\"\n",
        db = c.database_url,
        console = c.console_url,
        url = c.bus.url,
        sp = c.bus.stream_prefix,
        subp = c.bus.subject_prefix,
        listen = c.health.listen,
        md = c.metadata.endpoint,
    );
    let path = dir.join("notifier.toml");
    std::fs::write(&path, text)?;
    Ok(path)
}

fn spawn(config: &std::path::Path, log: &std::path::Path) -> Result<Child> {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
    Ok(Command::new(env!("CARGO_BIN_EXE_aloft-notifier"))
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "info")
        .env_remove("ALOFT_CONFIG")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?)
}

async fn wait_for(limit: Duration, what: &str, done: impl Fn() -> bool) -> Result<()> {
    let start = Instant::now();
    while !done() {
        if start.elapsed() > limit {
            bail!("{what} did not happen within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_delivery_then_restart_sends_each_message_once() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (admin, slack) = (Admin::start().await, Slack::start().await);
    let mut config = common::config(dir.path(), &common::bus_config(), &admin, &slack);
    config.database_url = aloft_testkit::fresh_postgres_url("notifier").await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    config.health.listen = format!("127.0.0.1:{port}");
    let webhooks: BTreeMap<String, String> =
        ["a", "b", "c"].iter().map(|n| (n.to_string(), slack.webhook_url(n))).collect();
    let file = config_file(dir.path(), &config, &webhooks)?;
    let log = dir.path().join("notifier.log");

    // a and b: the first message goes through, the second is told to wait 4 s; c hangs on its
    // first message far longer than the test lives.
    slack.script("webhook:a", vec![Reply::new(200, "ok"), Reply::rate_limited(4)]);
    slack.script("webhook:b", vec![Reply::new(200, "ok"), Reply::rate_limited(4)]);
    slack.script("webhook:c", vec![Reply::slow(Duration::from_secs(120))]);
    let ids: Vec<_> =
        (0..3).map(|i| exec_id("development", &aloft_testkit::unique_name(&format!("kill{i}")))).collect();
    for id in &ids {
        admin.put(finished_run(id, Phase::Succeeded, vec![slack_rule(&[Phase::Succeeded], &["#a", "#b", "#c"])]));
    }
    let bus = Bus::connect(config.bus.clone()).await?;
    bus.ensure().await?;

    let mut first = spawn(&file, &log)?;
    for id in &ids {
        publish_terminal(&bus, id, Phase::Succeeded, "").await?;
    }
    // Kill when the records (read through the first process's own API) show both 429s handled
    // and the request to #c in flight.
    let addr: std::net::SocketAddr = config.health.listen.parse()?;
    let start = Instant::now();
    let moment: Result<()> = loop {
        let mut all = Vec::new();
        for id in &ids {
            all.extend(common::deliveries(addr, id).await.unwrap_or_default());
        }
        let attempts =
            || all.iter().flat_map(|d| d.attempt_log.iter().map(move |a| (d.destination.as_str(), a.outcome.as_str())));
        let parked = attempts().filter(|(_, o)| *o == "rate_limited").count();
        let hung = attempts().any(|(d, o)| d == "channel:#c" && o == "in_flight");
        if parked == 2 && hung {
            break Ok(());
        }
        if start.elapsed() > Duration::from_secs(30) {
            break Err(anyhow::anyhow!("no moment with two 429s recorded and #c in flight within 30 s: {all:#?}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    first.kill()?; // SIGKILL
    first.wait()?;
    if let Err(e) = moment {
        bail!("{e}\nnotifier log:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
    }
    // (the hung request is not among what Slack posted: its answer never left the server)

    let mut second = spawn(&file, &log)?;
    let mut all = Vec::new();
    let outcome: Result<()> = async {
        wait_for(Duration::from_secs(20), "the restarted notifier to listen", || {
            std::net::TcpStream::connect(addr).is_ok()
        })
        .await?;
        for id in &ids {
            all.push(settled(addr, id, 3, Duration::from_secs(60)).await?);
        }
        Ok(())
    }
    .await;
    second.kill()?;
    second.wait()?;
    outcome.with_context(|| format!("notifier log:\n{}", std::fs::read_to_string(&log).unwrap_or_default()))?;

    for d in all.iter().flatten() {
        assert_eq!(d.state, "delivered", "{d:?}");
    }
    for channel in ["webhook:a", "webhook:b", "webhook:c"] {
        let mut got: Vec<String> = slack
            .posted(channel)
            .iter()
            .map(|r| r.body["text"].as_str().unwrap_or("").split(' ').next().unwrap_or("").to_string())
            .collect();
        got.sort();
        let mut want: Vec<String> = ids.iter().map(|i| format!("ml/development/{}", i.name)).collect();
        want.sort();
        assert_eq!(got, want, "{channel}: exactly one message per execution");
    }
    // The hung delivery: interrupted by the kill, then sent by the new replica.
    let hung = all
        .iter()
        .flatten()
        .find(|d| d.destination == "channel:#c" && d.attempt_log.len() > 1)
        .context("no delivery to #c was taken over")?;
    let log: Vec<&str> = hung.attempt_log.iter().map(|a| a.outcome.as_str()).collect();
    assert_eq!(log, ["interrupted", "delivered"]);
    assert_ne!(hung.attempt_log[0].replica, hung.attempt_log[1].replica);
    // The parked ones kept their Retry-After across the restart.
    let parked = all.iter().flatten().filter(|d| d.attempt_log.iter().any(|a| a.outcome == "rate_limited")).count();
    assert_eq!(parked, 2);
    Ok(())
}
