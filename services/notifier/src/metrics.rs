//! The notifier's Prometheus metrics, fed by [`crate::app::Stats`] (whose counter names are a
//! closed set: `recorded.<state>`, `delivery.<outcome>`, `hook.<outcome>`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// A delivery state.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct StateLabels {
    /// `pending`, `failed` (cannot be delivered: no webhook or token, unresolved recipient) or
    /// `suppressed` (by the hook).
    pub state: String,
}

/// An outcome.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// What happened.
    pub outcome: String,
}

/// The notifier's counters.
#[derive(Debug, Clone)]
pub struct Metrics {
    deliveries: Family<StateLabels, Counter>,
    attempts: Family<OutcomeLabels, Counter>,
    hook: Family<OutcomeLabels, Counter>,
}

impl Metrics {
    /// Registers the counters.
    pub fn register(registry: &mut Registry) -> Metrics {
        let m = Metrics { deliveries: Family::default(), attempts: Family::default(), hook: Family::default() };
        registry.register(
            "notifier_deliveries",
            "Notifications recorded, one per (execution, phase, destination), by initial state",
            m.deliveries.clone(),
        );
        registry.register(
            "notifier_delivery_attempts",
            "Slack calls, by outcome: delivered, rate_limited, retry, failed (permanent or out of attempts)",
            m.attempts.clone(),
        );
        registry.register("notifier_hook_invocations", "Lambda hook calls, by outcome", m.hook.clone());
        m
    }

    /// Counts one `Stats` event.
    pub fn count(&self, name: &str) {
        let Some((kind, value)) = name.split_once('.') else { return };
        match kind {
            "recorded" => self.deliveries.get_or_create(&StateLabels { state: value.into() }).inc(),
            "delivery" => self.attempts.get_or_create(&OutcomeLabels { outcome: value.into() }).inc(),
            // `disabled` is no call at all
            "hook" if value != "disabled" => self.hook.get_or_create(&OutcomeLabels { outcome: value.into() }).inc(),
            _ => 0,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_names_map_to_series() {
        let mut registry = aloft_runtime::metrics::registry("notifier");
        let m = Metrics::register(&mut registry);
        for name in
            ["recorded.pending", "delivery.delivered", "delivery.failed", "hook.timeout", "hook.disabled", "odd"]
        {
            m.count(name);
        }
        let text = aloft_runtime::metrics::encode(&registry);
        assert!(text.contains(r#"aloft_notifier_deliveries_total{state="pending"} 1"#), "{text}");
        assert!(text.contains(r#"aloft_notifier_delivery_attempts_total{outcome="delivered"} 1"#), "{text}");
        assert!(text.contains(r#"aloft_notifier_delivery_attempts_total{outcome="failed"} 1"#), "{text}");
        assert!(text.contains(r#"aloft_notifier_hook_invocations_total{outcome="timeout"} 1"#), "{text}");
        assert!(!text.contains("disabled"), "{text}");
    }
}
