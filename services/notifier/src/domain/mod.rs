//! The notifier's decisions, pure and synchronous: which events matter ([`notice`]), who hears
//! about them ([`routing`]), what the message says ([`message`]), what the Lambda hook's answer
//! does ([`hook`]) and what Slack's answer means ([`slack`]). Everything with I/O is in
//! `adapters`; `app` strings them together.

pub mod hook;
pub mod message;
pub mod notice;
pub mod routing;
pub mod sla;
pub mod slack;
pub mod text;

use std::collections::BTreeSet;

use hook::HookOutcome;
use message::{Extras, Message};
use notice::Notice;
use routing::Destination;
use slack::Target;

/// One delivery to record, decided from a notice, a routed destination and the hook's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    /// The routed destination's key: with the execution and phase, the exactly-once key.
    pub destination: String,
    /// Where and how it is sent, or why it cannot be (recorded as a permanent failure).
    pub target: Result<Target, String>,
    /// The message.
    pub message: Message,
    /// What the hook did ([`HookOutcome::label`]).
    pub hook: &'static str,
    /// The hook asked for nothing to be sent.
    pub suppressed: bool,
}

/// Applies the hook's outcome to the built-in message and resolves the (possibly changed)
/// destination. A failed hook leaves the built-in message and destination.
pub fn plan(
    notice: &Notice,
    routed: &Destination,
    hook: &HookOutcome,
    webhooks: &BTreeSet<String>,
    bot: bool,
) -> Planned {
    let (extras, destination) = match hook {
        HookOutcome::Applied { extras, destination } => (extras.clone(), destination.clone().unwrap_or(routed.clone())),
        _ => (Extras::default(), routed.clone()),
    };
    Planned {
        destination: routed.key(),
        target: slack::resolve(&destination, webhooks, bot),
        message: message::build(notice, &extras),
        hook: hook.label(),
        suppressed: matches!(hook, HookOutcome::Suppressed),
    }
}

/// The built-in message, as the hook sees it before deciding.
pub fn default_message(notice: &Notice) -> Message {
    message::build(notice, &Extras::default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::notice::tests_support::notice;

    #[test]
    fn failed_hooks_keep_the_built_in_message_and_destination() {
        let n = notice("FAILED");
        let routed = Destination::Channel("#team".into());
        let hooks: BTreeSet<String> = ["#team".to_string()].into();
        let p = plan(&n, &routed, &HookOutcome::Timeout, &hooks, false);
        assert_eq!(p.hook, "timeout");
        assert_eq!(p.message, default_message(&n));
        assert_eq!(p.target.unwrap().key(), "webhook:#team");
        assert!(!p.suppressed);
    }

    #[test]
    fn an_applied_hook_changes_target_but_not_the_key() {
        let n = notice("FAILED");
        let routed = Destination::Channel("#team".into());
        let outcome = HookOutcome::Applied {
            extras: Extras { fields: vec![("Model".into(), "v3".into())], blocks: vec![] },
            destination: Some(Destination::User("U0123ABCD".into())),
        };
        let p = plan(&n, &routed, &outcome, &BTreeSet::new(), true);
        assert_eq!(p.destination, "channel:#team");
        assert_eq!(p.target.unwrap().key(), "chat.postMessage:U0123ABCD");
        assert_ne!(p.message, default_message(&n));
        let p = plan(&n, &routed, &HookOutcome::Suppressed, &BTreeSet::new(), true);
        assert!(p.suppressed);
    }
}
