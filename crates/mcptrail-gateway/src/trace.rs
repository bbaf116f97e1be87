//! W3C trace context at the gateway: read the caller's `traceparent` (HTTP header, or
//! `params._meta.traceparent` of the JSON-RPC request), open a span per MCP request, and hand
//! the upstream that span as its parent, in the header and, where the request carried one, in
//! `_meta` (rewritten in place: same length, so nothing else in the body moves).

use mcptrail_tap::TraceIds;
use serde_json::Value;

/// A parsed `traceparent` (version 00 layout; later versions are read the same way, as the
/// W3C recommendation asks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent {
    /// 32 lower-case hex digits, not all zero.
    pub trace_id: String,
    /// 16 lower-case hex digits, not all zero.
    pub parent_id: String,
    /// Trace flags (bit 0: sampled).
    pub flags: u8,
}

/// Length of a version-00 `traceparent`.
pub const TRACEPARENT_LEN: usize = 55;

impl TraceParent {
    /// Parse a `traceparent` value; `None` when it is invalid (then a new trace starts).
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        let mut parts = s.split('-');
        let (version, trace, parent, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let hex = |p: &str, n: usize| {
            p.len() == n && p.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        };
        if !hex(version, 2) || version == "ff" || !hex(trace, 32) || !hex(parent, 16) {
            return None;
        }
        if !hex(flags, 2) || (version == "00" && parts.next().is_some()) {
            return None;
        }
        if trace.bytes().all(|b| b == b'0') || parent.bytes().all(|b| b == b'0') {
            return None;
        }
        Some(TraceParent {
            trace_id: trace.to_string(),
            parent_id: parent.to_string(),
            flags: u8::from_str_radix(flags, 16).ok()?,
        })
    }
}

/// The span the gateway opens for one request: its ids, and the `traceparent` that names it
/// as the parent of whatever the upstream does.
#[derive(Debug, Clone)]
pub struct Span {
    /// Ids recorded on the events.
    pub ids: TraceIds,
    /// `00-<trace>-<span>-<flags>`.
    pub traceparent: String,
}

/// Open a span: a child of `parent` when the caller sent one, else the root of a new trace
/// (sampled).
pub fn open_span(parent: Option<&TraceParent>) -> Span {
    let trace_id = parent.map_or_else(random_hex::<16>, |p| p.trace_id.clone());
    let span_id = random_hex::<8>();
    let flags = parent.map_or(1, |p| p.flags);
    Span {
        traceparent: format!("00-{trace_id}-{span_id}-{flags:02x}"),
        ids: TraceIds {
            trace_id,
            span_id,
            parent_span_id: parent.map(|p| p.parent_id.clone()),
        },
    }
}

fn random_hex<const N: usize>() -> String {
    let mut b = [0u8; N];
    loop {
        getrandom::fill(&mut b).expect("the OS random source failed");
        if b.iter().any(|&x| x != 0) {
            return hex::encode(b);
        }
    }
}

/// `params._meta.traceparent` of a JSON-RPC request body (a single message, not a batch).
pub fn meta_traceparent(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Msg {
        params: Option<Value>,
    }
    let msg: Msg = serde_json::from_slice(body).ok()?;
    msg.params?
        .get("_meta")?
        .get("traceparent")?
        .as_str()
        .map(String::from)
}

/// Replace the `_meta.traceparent` value `old` with `new` in `body`, in place. Only done when
/// both are version-00 length and `old` occurs exactly once as a JSON string, so the rewrite
/// cannot touch anything else; returns whether it was done.
pub fn rewrite_meta_traceparent(body: &mut [u8], old: &str, new: &str) -> bool {
    if old.len() != TRACEPARENT_LEN || new.len() != TRACEPARENT_LEN {
        return false;
    }
    let needle = format!("\"{old}\"");
    let finder = memchr::memmem::Finder::new(needle.as_bytes());
    let mut hits = finder.find_iter(body);
    let (Some(at), None) = (hits.next(), hits.next()) else {
        return false;
    };
    body[at + 1..at + 1 + TRACEPARENT_LEN].copy_from_slice(new.as_bytes());
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_valid_and_rejects_invalid() {
        let p = TraceParent::parse(TP).unwrap();
        assert_eq!(p.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(p.parent_id, "00f067aa0ba902b7");
        assert_eq!(p.flags, 1);
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad}");
        }
        // A later version may carry more fields.
        assert!(TraceParent::parse(&format!("01{}-more", &TP[2..])).is_some());
    }

    #[test]
    fn spans_continue_the_callers_trace() {
        let parent = TraceParent::parse(TP).unwrap();
        let s = open_span(Some(&parent));
        assert_eq!(s.ids.trace_id, parent.trace_id);
        assert_eq!(s.ids.parent_span_id.as_deref(), Some("00f067aa0ba902b7"));
        assert_ne!(s.ids.span_id, parent.parent_id);
        let again = TraceParent::parse(&s.traceparent).unwrap();
        assert_eq!(again.parent_id, s.ids.span_id);
        assert_eq!(again.flags, 1);
        let root = open_span(None);
        assert_eq!(root.ids.parent_span_id, None);
        assert_eq!(root.traceparent.len(), TRACEPARENT_LEN);
    }

    #[test]
    fn meta_rewrite_is_in_place_and_unambiguous() {
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"x","_meta":{{"traceparent":"{TP}"}}}}}}"#
        );
        assert_eq!(meta_traceparent(body.as_bytes()).as_deref(), Some(TP));
        let span = open_span(TraceParent::parse(TP).as_ref());
        let mut b = body.clone().into_bytes();
        assert!(rewrite_meta_traceparent(&mut b, TP, &span.traceparent));
        assert_eq!(b.len(), body.len());
        assert_eq!(
            meta_traceparent(&b).as_deref(),
            Some(span.traceparent.as_str())
        );
        // The same value twice (e.g. echoed in the arguments): left alone.
        let twice = body.replace(r#""name":"x""#, &format!(r#""name":"{TP}""#));
        let mut b = twice.clone().into_bytes();
        assert!(!rewrite_meta_traceparent(&mut b, TP, &span.traceparent));
        assert_eq!(b, twice.into_bytes());
    }
}
