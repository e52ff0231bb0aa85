//! The notifier against real NATS and SQLite, Slack-compatible HTTP servers (incoming webhooks
//! and the Web API), a Lambda Invoke API server driven by aws-sdk-lambda, and an admin API that
//! answers from the executions each test describes (see `common`).
//!
//! Each test has its own bus prefix, database, servers and execution names, so they run in
//! parallel.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use aloft_bus::Bus;
use aloft_notifier::{Config, Running};
use aloft_proto::flyteidl::core::workflow_execution::Phase;
use anyhow::{Context, Result, ensure};
use common::{Admin, Lambda, Reply, Slack, deliveries, exec_id, finished_run, publish_terminal, settled, slack_rule};
use tokio_util::sync::CancellationToken;

const LIMIT: Duration = Duration::from_secs(30);

struct Started {
    running: Running,
    token: CancellationToken,
}

async fn start(config: Config) -> Result<Started> {
    let token = CancellationToken::new();
    let running = tokio::time::timeout(Duration::from_secs(15), aloft_notifier::start(config, token.clone()))
        .await
        .context("start timed out")??;
    Ok(Started { running, token })
}

impl Started {
    async fn stop(self) -> Result<()> {
        self.token.cancel();
        tokio::time::timeout(Duration::from_secs(20), self.running.task).await.context("stop timed out")???;
        Ok(())
    }
}

async fn bus(config: &Config) -> Result<Bus> {
    let bus = Bus::connect(config.bus.clone()).await?;
    bus.ensure().await?;
    Ok(bus)
}

fn webhooks(slack: &Slack, names: &[&str]) -> Option<BTreeMap<String, String>> {
    Some(names.iter().map(|n| (n.to_string(), slack.webhook_url(n))).collect())
}

fn by_destination(
    d: &[aloft_proto::aloft::v1::NotificationDelivery],
) -> BTreeMap<String, &aloft_proto::aloft::v1::NotificationDelivery> {
    d.iter().map(|d| (d.destination.clone(), d)).collect()
}

fn outcomes(d: &aloft_proto::aloft::v1::NotificationDelivery) -> Vec<String> {
    d.attempt_log.iter().map(|a| a.outcome.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_answers_decide_delivery_retry_and_permanent_failure() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (admin, slack) = (Admin::start().await, Slack::start().await);
    let mut config = common::config(dir.path(), &common::bus_config(), &admin, &slack);
    config.slack.webhooks = webhooks(&slack, &["fine", "limited", "flaky", "revoked", "archived"]);
    slack.script("webhook:limited", vec![Reply::rate_limited(1)]);
    slack.script("webhook:flaky", vec![Reply::new(500, "rollup_error")]);
    slack.script("webhook:revoked", vec![Reply::new(404, "no_service")]);
    slack.script("webhook:archived", vec![Reply::new(410, "channel_is_archived")]);
    let id = exec_id("development", &aloft_testkit::unique_name("wh"));
    let rules = vec![slack_rule(&[Phase::Failed], &["#fine", "#limited", "#flaky", "#revoked", "#archived"])];
    admin.put(finished_run(&id, Phase::Failed, rules));
    admin.project(common::PROJECT, &[("team", "ml-platform")]);

    let n = start(config.clone()).await?;
    publish_terminal(&bus(&config).await?, &id, Phase::Failed, "").await?;
    let d = settled(n.running.health_addr, &id, 5, LIMIT).await?;
    let d = by_destination(&d);

    let fine = d["channel:#fine"];
    assert_eq!(
        (fine.state.as_str(), fine.target.as_str(), fine.hook.as_str()),
        ("delivered", "webhook:#fine", "disabled")
    );
    assert_eq!(outcomes(fine), ["delivered"]);
    assert_eq!(outcomes(d["channel:#limited"]), ["rate_limited", "delivered"]);
    assert_eq!(outcomes(d["channel:#flaky"]), ["retry", "delivered"]);
    assert_eq!(d["channel:#revoked"].state, "failed");
    assert_eq!(d["channel:#revoked"].last_error, "HTTP 404: no_service");
    assert_eq!(d["channel:#archived"].state, "failed");
    assert_eq!(d["channel:#archived"].last_error, "HTTP 410: channel_is_archived");
    assert_eq!(d["channel:#archived"].attempt_log[0].http_status, 410);

    // Slack saw: one message each where it worked, no retry where it never will, and the
    // rate-limited channel was not posted to again before its Retry-After.
    assert_eq!(slack.received().iter().filter(|r| r.key == "webhook:revoked").count(), 1);
    assert_eq!(slack.received().iter().filter(|r| r.key == "webhook:archived").count(), 1);
    let limited: Vec<_> = slack.received().into_iter().filter(|r| r.key == "webhook:limited").collect();
    assert_eq!(limited.len(), 2);
    let waited = limited[1].at - limited[0].at;
    ensure!(waited >= Duration::from_millis(950), "retried after {waited:?}, before Retry-After: 1");
    for key in ["webhook:fine", "webhook:limited", "webhook:flaky"] {
        assert_eq!(slack.posted(key).len(), 1, "{key}");
    }

    // The webhook body: Block Kit, fallback text, no channel (the webhook fixes it).
    let body = &slack.posted("webhook:fine")[0].body;
    assert!(body.get("channel").is_none());
    let text = body["text"].as_str().unwrap();
    assert!(text.contains("failing node n0: ValueError: refusing x=7"), "{text}");
    assert!(text.contains("(owner: ml-platform)"), "{text}");
    let blocks = serde_json::to_string(&body["blocks"])?;
    assert!(blocks.contains(&format!(
        "https://aloft.example.com/console/projects/ml/domains/development/executions/{}",
        id.name
    )));
    assert!(blocks.contains("*Failing node:* `n0`"), "{blocks}");
    n.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_api_answers_are_read_from_json() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (admin, slack) = (Admin::start().await, Slack::start().await);
    let mut config = common::config(dir.path(), &common::bus_config(), &admin, &slack);
    config.slack.bot_token = Some("xoxb-test-token".into());
    config.slack.users = Some([("alice@example.com".to_string(), "U0ALICE01".to_string())].into());
    slack.script(
        "api:#busy",
        vec![Reply { retry_after: Some(1), ..Reply::new(429, r#"{"ok":false,"error":"ratelimited"}"#) }],
    );
    slack.script("api:#locked", vec![Reply::new(200, r#"{"ok":false,"error":"invalid_auth"}"#)]);
    slack.script("api:#gone", vec![Reply::new(200, r#"{"ok":false,"error":"channel_not_found"}"#)]);
    slack.script("api:#shaky", vec![Reply::new(503, "upstream unavailable")]);
    let id = exec_id("development", &aloft_testkit::unique_name("api"));
    let to = ["C0GOOD0001", "alice@example.com", "#busy", "#locked", "#gone", "#shaky", "bob@example.com"];
    admin.put(finished_run(&id, Phase::Succeeded, vec![slack_rule(&[Phase::Succeeded], &to)]));

    let n = start(config.clone()).await?;
    publish_terminal(&bus(&config).await?, &id, Phase::Succeeded, "").await?;
    let d = settled(n.running.health_addr, &id, 7, LIMIT).await?;
    let d = by_destination(&d);

    let good = d["channel:C0GOOD0001"];
    assert_eq!((good.state.as_str(), good.target.as_str()), ("delivered", "chat.postMessage:C0GOOD0001"));
    assert!(!good.slack_ts.is_empty(), "chat.postMessage's ts is kept");
    assert_eq!(d["user:U0ALICE01"].state, "delivered", "a mapped email becomes a direct message");
    assert_eq!(outcomes(d["channel:#busy"]), ["rate_limited", "delivered"]);
    assert_eq!(outcomes(d["channel:#shaky"]), ["retry", "delivered"]);
    assert_eq!(
        (d["channel:#locked"].state.as_str(), d["channel:#locked"].last_error.as_str()),
        ("failed", "invalid_auth")
    );
    assert_eq!(d["channel:#gone"].last_error, "channel_not_found");
    let bob = d["recipient:bob@example.com"];
    assert_eq!(bob.state, "failed");
    assert!(bob.attempt_log.is_empty() && bob.last_error.contains("slack.users"), "{bob:?}");

    let posted = slack.posted("api:C0GOOD0001");
    assert_eq!(posted.len(), 1);
    assert_eq!(posted[0].authorization.as_deref(), Some("Bearer xoxb-test-token"));
    assert_eq!(posted[0].body["channel"], "C0GOOD0001");
    assert!(posted[0].body["text"].as_str().unwrap().contains("succeeded after 42s"));
    assert_eq!(slack.posted("api:U0ALICE01").len(), 1);
    assert_eq!(slack.received().iter().filter(|r| r.key == "api:#locked").count(), 1, "invalid_auth is not retried");
    n.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lambda_hook_enriches_redirects_suppresses_and_falls_back() -> Result<()> {
    let (admin, slack, lambda) = (Admin::start().await, Slack::start().await, Lambda::start().await);
    admin.project(common::PROJECT, &[("team", "ml-platform")]);
    // (function, expected hook label, webhook that receives it, whether it carries the hook's field)
    let cases = [
        ("enrich", "applied", Some("ml-oncall"), true),
        ("quiet", "suppressed", None, false),
        ("broken", "function_error", Some("team"), false),
        ("slow", "timeout", Some("team"), false),
        ("throttled", "throttled", Some("team"), false),
    ];
    let mut notifiers = Vec::new();
    for (function, ..) in cases {
        let dir = tempfile::tempdir()?;
        let mut config = common::config(dir.path(), &common::bus_config(), &admin, &slack);
        config.slack.webhooks = webhooks(&slack, &["team", "ml-oncall"]);
        config.routing.default_channel = Some("team".into());
        config.lambda.function = function.into();
        config.lambda.endpoint_url = Some(lambda.url());
        config.lambda.region = Some("us-east-1".into());
        config.lambda.access_key_id = Some("AKIDTEST".into());
        config.lambda.secret_access_key = Some("test-secret".into());
        config.lambda.timeout = Duration::from_secs(1);
        config.delivery.min_interval = Duration::from_millis(100);
        let id = exec_id("production", &aloft_testkit::unique_name(function));
        // no rules: the project policy for production (failures) routes it to the default channel
        admin.put(finished_run(&id, Phase::Failed, Vec::new()));
        let n = start(config.clone()).await?;
        publish_terminal(&bus(&config).await?, &id, Phase::Failed, "").await?;
        notifiers.push((n, id, dir));
    }
    for ((n, id, _dir), (function, label, webhook, enriched)) in notifiers.iter().zip(cases) {
        let d = settled(n.running.health_addr, id, 1, LIMIT).await?;
        let d = &d[0];
        assert_eq!(d.destination, "channel:#team", "{function}: the routed destination stays the key");
        assert_eq!(d.hook, label, "{function}");
        assert_eq!(n.running.stats.get(&format!("hook.{label}")), 1, "{function}: counted");
        match webhook {
            None => assert_eq!(d.state, "suppressed", "{function}"),
            Some(w) => {
                assert_eq!((d.state.as_str(), d.target.clone()), ("delivered", format!("webhook:#{w}")), "{function}");
                let body = serde_json::from_str::<serde_json::Value>(&d.payload)?;
                let blocks = serde_json::to_string(&body["blocks"])?;
                assert_eq!(blocks.contains("*Model*\\nchurn-v3"), enriched, "{function}: {blocks}");
                assert_eq!(blocks.contains(r#"{"type":"divider"}"#), enriched, "{function}");
                assert!(blocks.contains("*Failing node:* `n0`"), "{function}: the built-in content stays");
            }
        }
    }
    // What the function was invoked with: the enriched event, the destination and the message.
    let (name, payload) =
        lambda.invocations().into_iter().find(|(f, _)| f == "enrich").context("enrich was not invoked")?;
    assert_eq!(name, "enrich");
    assert_eq!(payload["destination"], "channel:#team");
    assert_eq!(payload["notice"]["owner"], "ml-platform");
    assert_eq!(payload["notice"]["failure"]["node"], "n0");
    assert!(payload["idempotency_key"].as_str().unwrap().ends_with("/FAILED/channel:#team"));
    assert!(payload["message"]["blocks"].is_array());
    // suppressed: nothing reached Slack for it; the four others reached it once each
    let total: usize = ["webhook:team", "webhook:ml-oncall"].iter().map(|k| slack.posted(k).len()).sum();
    assert_eq!(total, 4);
    for (n, _, _) in notifiers {
        n.stop().await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_message_per_destination_despite_redelivery_and_two_replicas() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (admin, slack) = (Admin::start().await, Slack::start().await);
    let mut config = common::config(dir.path(), &common::bus_config(), &admin, &slack);
    config.slack.webhooks = webhooks(&slack, &["a", "b"]);
    config.delivery.min_interval = Duration::from_millis(400);
    let ids: Vec<_> = (0..5).map(|i| exec_id("development", &aloft_testkit::unique_name(&format!("dup{i}")))).collect();
    for id in &ids {
        admin.put(finished_run(id, Phase::Succeeded, vec![slack_rule(&[Phase::Succeeded], &["#a", "#b"])]));
    }
    let (one, two) = (start(config.clone()).await?, start(config.clone()).await?);
    let bus = bus(&config).await?;
    for id in &ids {
        // the same event twice under different envelope ids, as a publisher retrying past the
        // bus's duplicate window would send it
        publish_terminal(&bus, id, Phase::Succeeded, "").await?;
        publish_terminal(&bus, id, Phase::Succeeded, "/again").await?;
    }
    for id in &ids {
        settled(one.running.health_addr, id, 2, LIMIT).await?;
    }
    // a little longer, for any duplicate still on its way
    tokio::time::sleep(Duration::from_millis(800)).await;
    for channel in ["webhook:a", "webhook:b"] {
        let posted = slack.posted(channel);
        let mut names: Vec<String> = posted
            .iter()
            .map(|r| r.body["text"].as_str().unwrap_or("").split(' ').next().unwrap_or("").to_string())
            .collect();
        names.sort();
        let mut want: Vec<String> = ids.iter().map(|i| format!("ml/development/{}", i.name)).collect();
        want.sort();
        assert_eq!(names, want, "{channel}: one message per execution");
        // ~1 message per interval per channel, across both replicas
        for pair in posted.windows(2) {
            let gap = pair[1].at - pair[0].at;
            ensure!(gap >= Duration::from_millis(350), "{channel}: two messages {gap:?} apart");
        }
    }
    let by_replica: Vec<String> = deliveries(one.running.health_addr, &ids[0])
        .await?
        .iter()
        .flat_map(|d| d.attempt_log.iter().map(|a| a.replica.clone()))
        .collect();
    ensure!(
        by_replica.iter().all(|r| *r == one.running.replica || *r == two.running.replica),
        "attempts name their replica: {by_replica:?}"
    );
    one.stop().await?;
    two.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_down_retries_the_event_and_non_terminal_events_are_ignored() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let slack = Slack::start().await;
    // an admin server that is not there yet: the event is nak'ed and retried
    let admin = Admin::start().await;
    let mut config = common::config(dir.path(), &common::bus_config(), &admin, &slack);
    config.slack.webhooks = webhooks(&slack, &["a"]);
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    config.metadata.endpoint = format!("http://{closed}");
    let id = exec_id("development", &aloft_testkit::unique_name("down"));
    let n = start(config.clone()).await?;
    let bus = bus(&config).await?;
    publish_terminal(&bus, &id, Phase::Running, "").await?;
    publish_terminal(&bus, &id, Phase::Succeeded, "").await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(deliveries(n.running.health_addr, &id).await?.is_empty());
    assert!(slack.received().is_empty());
    n.stop().await?;

    // metadata is back (same database, same durable consumer): the event is handled
    admin.put(finished_run(&id, Phase::Succeeded, vec![slack_rule(&[Phase::Succeeded], &["#a"])]));
    config.metadata.endpoint = admin.endpoint();
    let n = start(config.clone()).await?;
    let d = settled(n.running.health_addr, &id, 1, LIMIT).await?;
    assert_eq!(d[0].state, "delivered");
    assert_eq!(slack.posted("webhook:a").len(), 1, "RUNNING notified nothing");
    n.stop().await
}
