//! The Lambda enrichment hook's contract: what the function receives and what its answer may do
//! (add fields or blocks, change the destination, suppress the message). Pure: the adapter
//! invokes, this decides.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::message::{Extras, Message};
use super::notice::Notice;
use super::routing::{Destination, parse_recipient};

/// The payload the function is invoked with.
#[derive(Debug, Clone, Serialize)]
pub struct HookRequest<'a> {
    /// Stable per (execution, phase, destination): the SDK may invoke twice for one call
    /// (its retries), and a redelivered event invokes again.
    pub idempotency_key: &'a str,
    /// The enriched event.
    pub notice: &'a Notice,
    /// The routed destination key (`channel:#ml-alerts`, `user:U0123ABCD`).
    pub destination: String,
    /// The message the notifier would send without the hook.
    pub message: &'a Message,
}

/// What the function may answer (JSON; every field optional; `null` or `{}` changes nothing).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct HookAnswer {
    /// Send nothing to this destination.
    pub suppress: bool,
    /// Send to this recipient instead (same forms as notification recipients: `#channel`,
    /// a channel id, a user id, a mapped email).
    pub destination: Option<String>,
    /// Fields to add, title -> value.
    pub fields: BTreeMap<String, String>,
    /// Block Kit blocks to add.
    pub blocks: Vec<Value>,
}

/// How one invocation went; the names are what deliveries record in `hook`.
#[derive(Debug, Clone, PartialEq)]
pub enum HookOutcome {
    /// No hook configured.
    Disabled,
    /// It answered and changed nothing.
    Unchanged,
    /// It answered with changes.
    Applied {
        /// Fields and blocks to add.
        extras: Extras,
        /// Where to send instead, if it said so.
        destination: Option<Destination>,
    },
    /// It asked to send nothing.
    Suppressed,
    /// The function failed (`X-Amz-Function-Error`, HTTP 200 nonetheless).
    FunctionError(String),
    /// It did not answer within `lambda.timeout`.
    Timeout,
    /// Lambda throttled the call (429 `TooManyRequestsException`).
    Throttled,
    /// Any other failure: the service, the network, an unreadable answer.
    Error(String),
}

impl HookOutcome {
    /// The word stored with the delivery and used as the counter's name.
    pub fn label(&self) -> &'static str {
        match self {
            HookOutcome::Disabled => "disabled",
            HookOutcome::Unchanged => "unchanged",
            HookOutcome::Applied { .. } => "applied",
            HookOutcome::Suppressed => "suppressed",
            HookOutcome::FunctionError(_) => "function_error",
            HookOutcome::Timeout => "timeout",
            HookOutcome::Throttled => "throttled",
            HookOutcome::Error(_) => "error",
        }
    }

    /// True when the built-in message is sent because the hook failed.
    pub fn is_fallback(&self) -> bool {
        matches!(
            self,
            HookOutcome::FunctionError(_) | HookOutcome::Timeout | HookOutcome::Throttled | HookOutcome::Error(_)
        )
    }
}

/// Reads the function's answer. `users` resolves a changed destination like a recipient.
pub fn interpret(payload: &[u8], users: &BTreeMap<String, String>) -> HookOutcome {
    let text = std::str::from_utf8(payload).unwrap_or("").trim();
    if text.is_empty() || text == "null" {
        return HookOutcome::Unchanged;
    }
    let answer: HookAnswer = match serde_json::from_str(text) {
        Ok(a) => a,
        Err(e) => return HookOutcome::Error(format!("the answer is not the hook's JSON: {e}")),
    };
    if answer.suppress {
        return HookOutcome::Suppressed;
    }
    let destination = answer.destination.as_deref().and_then(|d| parse_recipient(d, users));
    if destination.is_none() && answer.fields.is_empty() && answer.blocks.is_empty() {
        return HookOutcome::Unchanged;
    }
    if let Some(bad) = answer.blocks.iter().find(|b| b.get("type").and_then(Value::as_str).is_none()) {
        return HookOutcome::Error(format!("a block without a type: {bad}"));
    }
    HookOutcome::Applied {
        extras: Extras { fields: answer.fields.into_iter().collect(), blocks: answer.blocks },
        destination,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn users() -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    #[test]
    fn empty_answers_change_nothing() {
        for a in ["", "null", "{}", "  {\"suppress\": false} "] {
            assert_eq!(interpret(a.as_bytes(), &users()), HookOutcome::Unchanged, "{a:?}");
        }
    }

    #[test]
    fn suppress_wins() {
        let a = br##"{"suppress": true, "fields": {"a": "b"}}"##;
        assert_eq!(interpret(a, &users()), HookOutcome::Suppressed);
    }

    #[test]
    fn fields_blocks_and_destination_apply() {
        let a = br##"{"destination": "#ml-oncall", "fields": {"Model": "v3"}, "blocks": [{"type": "divider"}], "other": 1}"##;
        assert_eq!(
            interpret(a, &users()),
            HookOutcome::Applied {
                extras: Extras {
                    fields: vec![("Model".into(), "v3".into())],
                    blocks: vec![json!({"type": "divider"})]
                },
                destination: Some(Destination::Channel("#ml-oncall".into())),
            }
        );
    }

    #[test]
    fn unreadable_answers_are_errors_that_fall_back() {
        let o = interpret(b"[1,2]", &users());
        assert_eq!(o.label(), "error");
        assert!(o.is_fallback());
        assert_eq!(interpret(br#"{"blocks": [{"text": "x"}]}"#, &users()).label(), "error");
        assert!(!HookOutcome::Suppressed.is_fallback());
    }
}
