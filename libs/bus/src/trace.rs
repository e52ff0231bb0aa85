//! W3C trace context carried in message headers (`traceparent`, `tracestate`).
//!
//! The bus only carries the two headers through; producing them from the current span and
//! continuing a trace from them is the telemetry layer's job, so no OpenTelemetry dependency here.

use std::collections::HashMap;

/// Header name of the W3C trace parent.
pub const TRACEPARENT: &str = "traceparent";
/// Header name of the W3C vendor trace state.
pub const TRACESTATE: &str = "tracestate";

/// The W3C trace context of a message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceContext {
    /// `traceparent`, e.g. `00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01`.
    pub traceparent: Option<String>,
    /// `tracestate`, vendor-specific, only meaningful next to a `traceparent`.
    pub tracestate: Option<String>,
}

impl TraceContext {
    /// A context with just a trace parent.
    pub fn new(traceparent: impl Into<String>) -> TraceContext {
        TraceContext { traceparent: Some(traceparent.into()), tracestate: None }
    }

    /// True when there is nothing to propagate.
    pub fn is_empty(&self) -> bool {
        self.traceparent.is_none() && self.tracestate.is_none()
    }

    /// Picks `traceparent`/`tracestate` out of a header or metadata map (names compared
    /// case-insensitively, as HTTP and gRPC do).
    pub fn from_map(map: &HashMap<String, String>) -> TraceContext {
        let find = |name: &str| map.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone());
        TraceContext { traceparent: find(TRACEPARENT), tracestate: find(TRACESTATE) }
    }

    /// The headers to send: only well-formed values, so a bad context from a caller never turns a
    /// publish into an error or puts garbage on the wire. `tracestate` without a valid
    /// `traceparent` is meaningless (W3C trace context, section 3.3) and is dropped with it.
    pub fn to_headers(&self) -> Vec<(&'static str, String)> {
        let Some(parent) = self.traceparent.as_deref().map(str::trim) else {
            return Vec::new();
        };
        if !is_valid_traceparent(parent) {
            tracing::warn!(traceparent = parent, "dropping malformed traceparent");
            return Vec::new();
        }
        let mut headers = vec![(TRACEPARENT, parent.to_string())];
        if let Some(state) = self.tracestate.as_deref().map(str::trim)
            && !state.is_empty()
            && state.chars().all(|c| c == ' ' || c.is_ascii_graphic())
        {
            headers.push((TRACESTATE, state.to_string()));
        }
        headers
    }
}

/// Checks the `traceparent` shape: `version-traceid-parentid-flags`, lowercase hex of 2, 32, 16
/// and 2 digits, version not `ff`, ids not all zero. Later versions may append fields.
pub fn is_valid_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    let hex =
        |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let zero = |s: &str| s.bytes().all(|b| b == b'0');
    if parts.len() < 4 {
        return false;
    }
    let (version, trace_id, parent_id, flags) = (parts[0], parts[1], parts[2], parts[3]);
    if !hex(version, 2) || version == "ff" || (version == "00" && parts.len() != 4) {
        return false;
    }
    hex(trace_id, 32) && !zero(trace_id) && hex(parent_id, 16) && !zero(parent_id) && hex(flags, 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn valid_traceparents() {
        assert!(is_valid_traceparent(PARENT));
        assert!(is_valid_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-extra"));
    }

    #[test]
    fn invalid_traceparents() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\nX: y",
        ] {
            assert!(!is_valid_traceparent(bad), "{bad:?}");
        }
    }

    #[test]
    fn headers_carry_valid_context_only() {
        let ctx = TraceContext { traceparent: Some(PARENT.into()), tracestate: Some("congo=t61rcWkgMzE".into()) };
        assert_eq!(
            ctx.to_headers(),
            vec![(TRACEPARENT, PARENT.to_string()), (TRACESTATE, "congo=t61rcWkgMzE".to_string())]
        );
        let bad_parent = TraceContext { traceparent: Some("nope".into()), tracestate: Some("a=b".into()) };
        assert!(bad_parent.to_headers().is_empty());
        let state_only = TraceContext { traceparent: None, tracestate: Some("a=b".into()) };
        assert!(state_only.to_headers().is_empty());
        let bad_state = TraceContext { traceparent: Some(PARENT.into()), tracestate: Some("a=b\r\nx".into()) };
        assert_eq!(bad_state.to_headers().len(), 1);
        assert!(TraceContext::default().is_empty());
    }

    #[test]
    fn from_map_is_case_insensitive() {
        let map = HashMap::from([("Traceparent".to_string(), PARENT.to_string()), ("other".into(), "x".into())]);
        let ctx = TraceContext::from_map(&map);
        assert_eq!(ctx, TraceContext::new(PARENT));
    }
}
