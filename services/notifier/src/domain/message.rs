//! The Slack message for a notice: Block Kit blocks with a plain-text fallback, kept within
//! Slack's limits (docs.slack.dev Block Kit reference; the total-size bound of about 13k
//! characters that `msg_blocks_too_long` enforces).
//!
//! The layout is pinned by golden files in `docs/notifications/` (`tests/golden.rs`).

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::notice::Notice;
use super::text::{escape, escape_within, first_lines, human_duration, truncate};

/// Blocks per message.
pub const MAX_BLOCKS: usize = 50;
/// `header` text.
pub const MAX_HEADER: usize = 150;
/// `section.text`.
pub const MAX_SECTION: usize = 3000;
/// `section.fields` items per section, and characters per field.
pub const MAX_FIELDS: usize = 10;
/// Characters per field.
pub const MAX_FIELD: usize = 2000;
/// Our bound on the serialized blocks: under the ~13k where Slack starts answering
/// `msg_blocks_too_long` even when every block is within its own limit.
pub const MAX_BLOCKS_JSON: usize = 12_000;
/// The top-level `text` (notification and fallback); Slack truncates at 40k, people read far less.
pub const MAX_TEXT: usize = 3000;

/// What the Lambda hook added.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Extras {
    /// More `*title*\nvalue` fields, in a section of their own.
    pub fields: Vec<(String, String)>,
    /// More blocks, placed before the button.
    pub blocks: Vec<Value>,
}

/// A message ready to post: the body of an incoming-webhook call, or of `chat.postMessage` once
/// `channel` is added.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Plain-text fallback (notifications, clients without Block Kit).
    pub text: String,
    /// Block Kit blocks.
    pub blocks: Vec<Value>,
}

impl Message {
    /// The JSON body; `channel` for `chat.postMessage`, `None` for a webhook (its channel is fixed).
    pub fn body(&self, channel: Option<&str>) -> Value {
        let mut body =
            json!({ "text": self.text, "blocks": self.blocks, "unfurl_links": false, "unfurl_media": false });
        if let Some(c) = channel {
            body["channel"] = json!(c);
        }
        body
    }
}

fn phase_words(phase: &str) -> (&'static str, &'static str, &'static str) {
    // (emoji, title word, verb phrase)
    match phase {
        "SUCCEEDED" => (":white_check_mark:", "Succeeded", "succeeded"),
        "FAILED" => (":x:", "Failed", "failed"),
        "TIMED_OUT" => (":hourglass:", "Timed out", "timed out"),
        "ABORTED" => (":no_entry_sign:", "Aborted", "was aborted"),
        _ => (":grey_question:", "Finished", "finished"),
    }
}

fn subject(n: &Notice) -> String {
    n.workflow.as_ref().map(|w| w.name.clone()).unwrap_or_else(|| n.execution.clone())
}

fn field(title: &str, value: &str) -> Value {
    let value = if value.is_empty() { "—".to_string() } else { value.to_string() };
    let title = format!("*{}*\n", escape(title));
    let room = MAX_FIELD.saturating_sub(title.chars().count());
    json!({ "type": "mrkdwn", "text": format!("{title}{}", escape_within(&value, room)) })
}

fn versioned(e: &Option<super::notice::EntityRef>) -> String {
    match e {
        Some(e) if e.version.is_empty() => e.name.clone(),
        Some(e) => format!("{} ({})", e.name, e.version),
        None => String::new(),
    }
}

fn section(text: String) -> Value {
    json!({ "type": "section", "text": { "type": "mrkdwn", "text": text } })
}

/// Builds the message for `notice`, with what the hook added.
pub fn build(notice: &Notice, extras: &Extras) -> Message {
    let (emoji, title, verb) = phase_words(&notice.phase);
    let name = format!("{}/{}/{}", notice.project, notice.domain, notice.execution);
    let duration = notice.duration_seconds.map(human_duration);
    let failed = notice.failure.is_some();

    let header = json!({
        "type": "header",
        "text": { "type": "plain_text", "emoji": true, "text": truncate(&format!("{emoji} {title}: {}", subject(notice)), MAX_HEADER) }
    });
    let mut summary = format!("*<{}|{}>* {verb}", notice.link, escape(&name));
    if let Some(d) = &duration {
        summary.push_str(&format!(" after {d}"));
    }
    let trigger = if notice.principal.is_empty() {
        notice.trigger.clone()
    } else {
        format!("{} by {}", notice.trigger, notice.principal)
    };
    let fields = vec![
        field("Project", &notice.project),
        field("Domain", &notice.domain),
        field("Workflow", &versioned(&notice.workflow)),
        field("Launch plan", &versioned(&notice.launch_plan)),
        field("Owner", notice.owner.as_deref().unwrap_or("")),
        field("Trigger", &trigger),
        field("Duration", duration.as_deref().unwrap_or("")),
        field("Started", notice.started_at.as_deref().unwrap_or("")),
    ];
    let mut required =
        vec![header, section(truncate(&summary, MAX_SECTION)), json!({ "type": "section", "fields": fields })];

    let mut error_block = None;
    if let Some(f) = &notice.failure {
        let mut head = match &f.node {
            Some(node) => format!("*Failing node:* `{}`", escape(node)),
            None => "*Failing node:* unknown".to_string(),
        };
        if !f.code.is_empty() {
            head.push_str(&format!(" ({} error `{}`)", escape(&f.kind), escape(&f.code)));
        }
        error_block = Some((head, f.excerpt.clone()));
    } else if let Some(cause) = notice.abort_cause.as_ref().filter(|c| !c.is_empty()) {
        required.push(section(format!("*Cause:* {}", escape_within(cause, MAX_SECTION - 20))));
    }

    let mut optional: Vec<Value> = Vec::new();
    if !notice.inputs.is_empty() {
        let shown: Vec<String> =
            notice.inputs.iter().map(|i| format!("`{}` = {}", escape(&i.name), escape(&i.value))).collect();
        let count = if notice.input_count > notice.inputs.len() {
            format!(" ({} of {})", notice.inputs.len(), notice.input_count)
        } else {
            String::new()
        };
        optional.push(section(truncate(&format!("*Inputs*{count}\n{}", shown.join("\n")), MAX_SECTION)));
    }
    if !extras.fields.is_empty() {
        let fields: Vec<Value> = extras.fields.iter().take(MAX_FIELDS).map(|(t, v)| field(t, v)).collect();
        optional.push(json!({ "type": "section", "fields": fields }));
    }
    let mut context = Vec::new();
    if !notice.labels.is_empty() {
        let labels: Vec<String> = notice.labels.iter().map(|(k, v)| format!("`{}={}`", escape(k), escape(v))).collect();
        context.push(format!("Labels: {}", labels.join(" ")));
    }
    if !notice.tags.is_empty() {
        let tags: Vec<String> = notice.tags.iter().map(|t| format!("`{}`", escape(t))).collect();
        context.push(format!("Tags: {}", tags.join(" ")));
    }
    if !context.is_empty() {
        optional.push(json!({
            "type": "context",
            "elements": [{ "type": "mrkdwn", "text": truncate(&context.join("  ·  "), MAX_SECTION) }]
        }));
    }
    let mut button = json!({
        "type": "button",
        "action_id": "open_execution",
        "text": { "type": "plain_text", "text": "Open execution" },
        "url": truncate(&notice.link, 3000),
    });
    button["style"] = json!(if failed { "danger" } else { "primary" });
    let actions = json!({ "type": "actions", "elements": [button] });

    // Fit: the hook's blocks go first, then the optional blocks from the end, then the error
    // excerpt shrinks; the header, summary, fields, failing node and button always stay.
    let mut hook_blocks: Vec<Value> = extras.blocks.clone();
    let mut excerpt_budget = MAX_SECTION;
    loop {
        let mut blocks = required.clone();
        if let Some((head, excerpt)) = &error_block {
            let room = excerpt_budget.saturating_sub(head.chars().count() + 8);
            let body = if excerpt.is_empty() || room < 20 {
                head.clone()
            } else {
                format!("{head}\n```{}```", escape_within(excerpt, room))
            };
            blocks.push(section(body));
        }
        blocks.extend(optional.iter().cloned());
        blocks.extend(hook_blocks.iter().cloned());
        blocks.push(actions.clone());
        let size = serde_json::to_string(&blocks).map(|s| s.chars().count()).unwrap_or(usize::MAX);
        if blocks.len() <= MAX_BLOCKS && size <= MAX_BLOCKS_JSON {
            return Message { text: fallback(notice, &name, verb, duration.as_deref()), blocks };
        }
        if hook_blocks.pop().is_some() || optional.pop().is_some() {
            continue;
        }
        if excerpt_budget > 200 && error_block.is_some() {
            excerpt_budget /= 2;
            continue;
        }
        // Only possible with absurd names; the required blocks alone are each within limits.
        return Message { text: fallback(notice, &name, verb, duration.as_deref()), blocks };
    }
}

/// One line (plus the error's first line) for notifications and Block Kit-less clients.
fn fallback(notice: &Notice, name: &str, verb: &str, duration: Option<&str>) -> String {
    let mut text = format!("{name} ({}) {verb}", subject(notice));
    if let Some(d) = duration {
        text.push_str(&format!(" after {d}"));
    }
    if let Some(f) = &notice.failure {
        if let Some(node) = &f.node {
            text.push_str(&format!(" — failing node {node}"));
        }
        let first = first_lines(f.excerpt.trim(), 1);
        let first = first.lines().next().unwrap_or("");
        if !first.is_empty() {
            text.push_str(&format!(": {first}"));
        }
    }
    if let Some(owner) = &notice.owner {
        text.push_str(&format!(" (owner: {owner})"));
    }
    text.push_str(&format!(" {}", notice.link));
    truncate(&text, MAX_TEXT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::notice::tests_support::notice;
    use crate::domain::notice::{EntityRef, InputValue};

    fn texts(m: &Message) -> String {
        serde_json::to_string(&m.blocks).unwrap()
    }

    #[test]
    fn failure_message_names_node_error_owner_and_link() {
        let m = build(&notice("FAILED"), &Extras::default());
        let all = texts(&m);
        assert!(all.contains("*Failing node:* `n0` (user error `USER:ValueError`)"), "{all}");
        assert!(all.contains("ValueError: x &lt; 0 &amp; y &gt; 1"), "mrkdwn is escaped: {all}");
        assert!(all.contains("ml-platform"));
        assert_eq!(m.blocks.last().unwrap()["elements"][0]["style"], "danger");
        assert_eq!(
            m.text,
            "ml/production/r42 (churn.train) failed after 12m 03s — failing node n0: ValueError: x < 0 & y > 1 \
             (owner: ml-platform) https://aloft.example.com/console/projects/ml/domains/production/executions/r42"
        );
    }

    #[test]
    fn hook_fields_and_blocks_are_added_before_the_button() {
        let extras =
            Extras { fields: vec![("Model".into(), "churn-v3".into())], blocks: vec![json!({"type": "divider"})] };
        let m = build(&notice("SUCCEEDED"), &extras);
        let n = m.blocks.len();
        let fields = m.blocks.iter().position(|b| b["fields"][0]["text"] == "*Model*\nchurn-v3").unwrap();
        assert_eq!(m.blocks[n - 2], json!({"type": "divider"}));
        assert!(fields < n - 2);
        assert_eq!(m.blocks[n - 1]["type"], "actions");
    }

    #[test]
    fn stays_within_slack_limits_whatever_the_input() {
        let mut n = notice("FAILED");
        n.failure.as_mut().unwrap().excerpt = "<&>".repeat(5000);
        n.workflow = Some(EntityRef { name: "w".repeat(400), version: "v".repeat(3000) });
        n.inputs = (0..8).map(|i| InputValue { name: format!("in{i}"), value: "x".repeat(80) }).collect();
        n.input_count = 40;
        let extras = Extras {
            fields: (0..15).map(|i| (format!("f{i}"), "y".repeat(3000))).collect(),
            blocks: (0..60)
                .map(|_| json!({"type": "section", "text": {"type": "mrkdwn", "text": "z".repeat(2900)}}))
                .collect(),
        };
        let m = build(&n, &extras);
        assert!(m.blocks.len() <= MAX_BLOCKS);
        assert!(serde_json::to_string(&m.blocks).unwrap().chars().count() <= MAX_BLOCKS_JSON);
        assert!(m.text.chars().count() <= MAX_TEXT);
        for b in &m.blocks {
            match b["type"].as_str().unwrap() {
                "header" => assert!(b["text"]["text"].as_str().unwrap().chars().count() <= MAX_HEADER),
                "section" => {
                    if let Some(t) = b["text"]["text"].as_str() {
                        assert!(t.chars().count() <= MAX_SECTION);
                    }
                    if let Some(f) = b["fields"].as_array() {
                        assert!(f.len() <= MAX_FIELDS);
                        assert!(f.iter().all(|f| f["text"].as_str().unwrap().chars().count() <= MAX_FIELD));
                    }
                }
                _ => {}
            }
        }
        let all = texts(&m);
        assert!(all.contains("Failing node"), "the failing node always stays");
        assert!(!all.contains("&am…") && !all.contains("&l…"), "no escape is cut in half");
    }

    #[test]
    fn webhook_and_api_bodies() {
        let m = build(&notice("SUCCEEDED"), &Extras::default());
        assert!(m.body(None).get("channel").is_none());
        assert_eq!(m.body(Some("C0123ABCD"))["channel"], "C0123ABCD");
        assert_eq!(m.body(None)["text"], m.text);
    }
}
