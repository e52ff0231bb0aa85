//! Slack notifications end to end: the real `pyflyte run --remote` runs a succeeding and a
//! failing workflow (`fixtures/runs/notify.py`) through metadata, scheduler and executor; the
//! notifier, on the same bus and in metadata's own database (its tables beside metadata's),
//! reads the terminal events, enriches them from metadata's admin API and posts to a
//! Slack-compatible incoming webhook served by this test. The payloads it receives are checked
//! whole: only times, durations and registration versions vary between runs and are masked.

mod common;
#[path = "common/http_sink.rs"]
mod http_sink;
#[path = "common/stack.rs"]
mod stack;

use std::time::{Duration, Instant};

use aloft_proto::aloft::v1::ListDeliveriesRequest;
use aloft_proto::aloft::v1::notifier_service_client::NotifierServiceClient;
use aloft_proto::flyteidl::core::WorkflowExecutionIdentifier;
use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use stack::{DOMAIN, Stack, Store};

const CONSOLE: &str = "https://aloft.example.com";

/// Masks what differs between runs: field values for times and versions, and durations in text.
fn mask(mut body: Value) -> Value {
    fn after(text: &str) -> String {
        // "failed after 7s" / "after 1m 03s" -> "after <duration>"
        let Some(i) = text.find(" after ") else { return text.to_string() };
        let rest = &text[i + 7..];
        let mut consumed = 0;
        for word in rest.split(' ') {
            if !word.starts_with(|c: char| c.is_ascii_digit()) {
                break;
            }
            consumed += word.len() + 1;
        }
        let consumed = consumed.saturating_sub(1).min(rest.len());
        format!("{} after <duration>{}", &text[..i], &rest[consumed..])
    }
    if let Some(text) = body["text"].as_str() {
        body["text"] = json!(after(text));
    }
    for block in body["blocks"].as_array_mut().into_iter().flatten() {
        if let Some(text) = block["text"]["text"].as_str().map(String::from) {
            block["text"]["text"] = json!(after(&text));
        }
        // get_mut, not IndexMut: indexing a missing key would insert a null
        for field in block.get_mut("fields").and_then(Value::as_array_mut).into_iter().flatten() {
            let text = field["text"].as_str().unwrap_or("").to_string();
            let masked = match text.split_once('\n') {
                Some((title @ ("*Duration*" | "*Started*"), _)) => format!("{title}\n<masked>"),
                Some((title @ ("*Workflow*" | "*Launch plan*"), value)) => match value.rsplit_once(" (") {
                    Some((name, _)) => format!("{title}\n{name} (<version>)"),
                    None => text.clone(),
                },
                _ => text.clone(),
            };
            field["text"] = json!(masked);
        }
    }
    body
}

fn expected(project: &str, name: &str, failed: bool, error: &str) -> Value {
    let link = format!("{CONSOLE}/console/projects/{project}/domains/{DOMAIN}/executions/{name}");
    let (emoji, title, verb) =
        if failed { (":x:", "Failed", "failed") } else { (":white_check_mark:", "Succeeded", "succeeded") };
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "emoji": true, "text": format!("{emoji} {title}: notify.scoring")}}),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": format!("*<{link}|{project}/{DOMAIN}/{name}>* {verb} after <duration>")}}),
        json!({"type": "section", "fields": [
            {"type": "mrkdwn", "text": format!("*Project*\n{project}")},
            {"type": "mrkdwn", "text": format!("*Domain*\n{DOMAIN}")},
            {"type": "mrkdwn", "text": "*Workflow*\nnotify.scoring (<version>)"},
            {"type": "mrkdwn", "text": "*Launch plan*\nnotify.scoring (<version>)"},
            {"type": "mrkdwn", "text": "*Owner*\nml-platform"},
            {"type": "mrkdwn", "text": "*Trigger*\nmanual"},
            {"type": "mrkdwn", "text": "*Duration*\n<masked>"},
            {"type": "mrkdwn", "text": "*Started*\n<masked>"},
        ]}),
    ];
    if failed {
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": format!(
            // flytekit reports user exceptions under this code; the message names the ValueError
            "*Failing node:* `n1` (user error `USER:RuntimeError`)\n```{error}```"
        )}}));
    }
    let rows = if failed { 60 } else { 10 };
    blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": format!("*Inputs*\n`rows` = {rows}")}}));
    blocks.push(json!({"type": "actions", "elements": [{
        "type": "button", "action_id": "open_execution", "style": if failed { "danger" } else { "primary" },
        "text": {"type": "plain_text", "text": "Open execution"}, "url": link,
    }]}));
    let mut text = format!("{project}/{DOMAIN}/{name} (notify.scoring) {verb} after <duration>");
    if failed {
        text.push_str(&format!(" — failing node n1: {}", error.lines().next().unwrap_or("")));
    }
    text.push_str(&format!(" (owner: ml-platform) {link}"));
    json!({"text": text, "blocks": blocks, "unfurl_links": false, "unfurl_media": false})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_and_a_succeeding_run_reach_the_team_channel() -> Result<()> {
    let s = Stack::start(Store::Local).await?;
    let (webhook, received) = http_sink::http_sink().await?;

    // The team's project, with its labels: owner, channel, and "everything in development".
    s.register_project(&[("team", "ml-platform"), ("slack-channel", "ml-alerts"), ("notify-development", "all")])
        .await?;

    let mut config = aloft_notifier::Config { bus: s.bus.clone(), ..Default::default() };
    config.health.listen = "127.0.0.1:0".into();
    config.database_url = s.database_url().to_string();
    config.console_url = CONSOLE.into();
    config.metadata.endpoint = format!("http://{}", s.metadata.endpoint());
    config.slack.webhooks = Some([("ml-alerts".to_string(), format!("{webhook}/services/T0/B0/e2e"))].into());
    let token = CancellationToken::new();
    let notifier = aloft_notifier::start(config, token.clone()).await.context("starting aloft-notifier")?;

    let (ok_name, failed_name) = ("ok1", "bad1");
    let (ok, failed) = tokio::join!(
        s.run_ok(ok_name, "notify.py", "scoring", &["--rows", "10"]),
        s.pyflyte_run(failed_name, true, "notify.py", "scoring", &["--rows", "60"]),
    );
    ok?;
    let failed = failed?;
    ensure!(!failed.status.success(), "the failing run must fail\n{}", failed.dump());

    let start = Instant::now();
    let messages = loop {
        let got = received.lock().unwrap().clone();
        if got.len() >= 2 {
            break got;
        }
        if start.elapsed() > Duration::from_secs(60) {
            bail!("slack received {} messages within 60 s: {got:#?}", got.len());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let messages_now = received.lock().unwrap().clone();
    ensure!(messages_now.len() == 2, "exactly one message per execution: {messages_now:#?}");
    for (path, _) in &messages {
        assert_eq!(path, "/services/T0/B0/e2e");
    }
    let find = |name: &str| {
        messages
            .iter()
            .map(|(_, b)| b.clone())
            .find(|b| b["text"].as_str().is_some_and(|t| t.contains(&format!("/{name} "))))
            .with_context(|| format!("no message about {name}: {messages:#?}"))
    };
    let (ok_message, failed_message) = (find(ok_name)?, find(failed_name)?);
    eprintln!("success message:\n{ok_message:#}\nfailure message:\n{failed_message:#}");
    assert_eq!(mask(ok_message), expected(&s.project, ok_name, false, ""));

    // The error excerpt is the executor's message for the Python exception, message first.
    let excerpt = failed_message["blocks"][3]["text"]["text"]
        .as_str()
        .and_then(|t| t.split_once("```").map(|(_, e)| e.trim_end_matches("```").to_string()))
        .context("no error excerpt")?;
    ensure!(
        excerpt.starts_with("ValueError: too many rows to score: 120 (limit 100)"),
        "the excerpt starts with the exception: {excerpt}"
    );
    ensure!(excerpt.lines().count() <= 13, "only the first lines: {excerpt}");
    assert_eq!(mask(failed_message), expected(&s.project, failed_name, true, &excerpt));

    // The record, through the notifier's own API.
    let mut api = NotifierServiceClient::new(
        tonic::transport::Channel::from_shared(format!("http://{}", notifier.health_addr))?.connect().await?,
    );
    let id = WorkflowExecutionIdentifier {
        project: s.project.clone(),
        domain: DOMAIN.into(),
        name: failed_name.into(),
        org: String::new(),
    };
    let deliveries =
        api.list_deliveries(ListDeliveriesRequest { execution_id: Some(id) }).await?.into_inner().deliveries;
    ensure!(deliveries.len() == 1, "{deliveries:#?}");
    let d = &deliveries[0];
    assert_eq!(
        (d.phase.as_str(), d.destination.as_str(), d.target.as_str(), d.state.as_str(), d.attempts),
        ("FAILED", "channel:#ml-alerts", "webhook:#ml-alerts", "delivered", 1)
    );

    token.cancel();
    notifier.task.await??;
    s.stop().await
}
