//! W3C trace context at the gateway: read the caller's `traceparent` (HTTP header, or
//! `params._meta.traceparent` of the JSON-RPC request), open a span per MCP request, and hand
//! the upstream that span as its parent, in the header and in `params._meta.traceparent`:
//! rewritten in place where the request carried one (same length, so nothing else in the body
//! moves), inserted where it did not (the only bytes added; everything else stays as sent).

use std::fmt;

use mcptrail_tap::TraceIds;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
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
    // Written out rather than `format!`ed: this runs for every request.
    let mut traceparent = String::with_capacity(TRACEPARENT_LEN);
    traceparent.push_str("00-");
    traceparent.push_str(&trace_id);
    traceparent.push('-');
    traceparent.push_str(&span_id);
    traceparent.push('-');
    push_hex(&mut traceparent, &[flags]);
    Span {
        traceparent,
        ids: TraceIds {
            trace_id,
            span_id,
            parent_span_id: parent.map(|p| p.parent_id.clone()),
        },
    }
}

/// Random bytes for ids, from the OS's generator, drawn 512 bytes at a time per thread: one
/// `getrandom` call serves about 20 requests instead of two calls each.
fn random_bytes(out: &mut [u8]) {
    use std::cell::RefCell;
    const POOL: usize = 512;
    thread_local! {
        static RANDOM: RefCell<([u8; POOL], usize)> = const { RefCell::new(([0; POOL], POOL)) };
    }
    RANDOM.with(|r| {
        let (pool, used) = &mut *r.borrow_mut();
        if POOL - *used < out.len() {
            getrandom::fill(pool).expect("the OS random source failed");
            *used = 0;
        }
        out.copy_from_slice(&pool[*used..*used + out.len()]);
        // Handed-out bytes are not kept.
        pool[*used..*used + out.len()].fill(0);
        *used += out.len();
    });
}

/// Append `bytes` to `out` as lowercase hex.
fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
}

fn random_hex<const N: usize>() -> String {
    let mut b = [0u8; N];
    loop {
        random_bytes(&mut b);
        if b.iter().any(|&x| x != 0) {
            let mut s = String::with_capacity(2 * N);
            push_hex(&mut s, &b);
            return s;
        }
    }
}

/// `params._meta.traceparent` of a JSON-RPC request body (a single message, not a batch).
pub fn meta_traceparent(body: &[u8]) -> Option<String> {
    // A body that names no `traceparent` (the key spelt out, or written with `\u` escapes)
    // has none: most requests are not parsed here at all.
    let finder = |needle: &[u8]| memchr::memmem::find(body, needle).is_some();
    if !finder(b"traceparent") && !finder(b"\\u") {
        return None;
    }
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

/// Insert `"traceparent":"<tp>"` into `params._meta` of a JSON-RPC request or notification
/// that has none, and return the new body; `None` (leave the body alone) when the body is not a
/// single JSON object with a string `method`, when `params` is present but not an object, when
/// `_meta` is not an object or already names a `traceparent`, or when a key it depends on
/// occurs twice (a server might read either copy). A message without `params` gets
/// `"params":{"_meta":{…}}`, which MCP allows on every request and notification.
pub fn inject_meta_traceparent(body: &[u8], tp: &str) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(body).ok()?;
    let top = entries(text)?;
    let method = unique(&top, "method")?;
    if !method.map(|m| m.get().starts_with('"'))? {
        return None;
    }
    let tp = serde_json::to_string(tp).ok()?;
    let (at, insert) = match unique(&top, "params")? {
        None => {
            // Before the closing brace of the message (it has at least `method`).
            let close = text.rfind('}')?;
            (
                close,
                format!(",\"params\":{{\"_meta\":{{\"traceparent\":{tp}}}}}"),
            )
        }
        Some(params) => {
            let inner = entries(params.get())?;
            let open = offset_in(text, params.get())? + 1;
            match unique(&inner, "_meta")? {
                None => {
                    let sep = if inner.is_empty() { "" } else { "," };
                    (open, format!("\"_meta\":{{\"traceparent\":{tp}}}{sep}"))
                }
                Some(meta) => {
                    let fields = entries(meta.get())?;
                    if fields.iter().any(|(k, _)| k == "traceparent") {
                        return None;
                    }
                    let sep = if fields.is_empty() { "" } else { "," };
                    let open = offset_in(text, meta.get())? + 1;
                    (open, format!("\"traceparent\":{tp}{sep}"))
                }
            }
        }
    };
    let mut out = Vec::with_capacity(body.len() + insert.len());
    out.extend_from_slice(&body[..at]);
    out.extend_from_slice(insert.as_bytes());
    out.extend_from_slice(&body[at..]);
    Some(out)
}

/// The members of a JSON object, in order, duplicates kept; `None` when `text` is not one.
fn entries(text: &str) -> Option<Vec<(Key<'_>, &RawValue)>> {
    struct Entries;
    impl<'de> Visitor<'de> for Entries {
        type Value = Vec<(Key<'de>, &'de RawValue)>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some((k, v)) = map.next_entry::<Key<'de>, &'de RawValue>()? {
                out.push((k, v));
            }
            Ok(out)
        }
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let out = (&mut de).deserialize_map(Entries).ok()?;
    de.end().ok()?;
    Some(out)
}

/// An object's key: borrowed from the text, or unescaped into a copy when it has escapes.
#[derive(Debug)]
struct Key<'de>(std::borrow::Cow<'de, str>);

impl PartialEq<str> for Key<'_> {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// `Some(None)` when `key` is absent, `Some(Some(v))` when present once, `None` when twice.
fn unique<'a>(entries: &[(Key<'_>, &'a RawValue)], key: &str) -> Option<Option<&'a RawValue>> {
    let mut hits = entries.iter().filter(|(k, _)| k == key).map(|(_, v)| *v);
    match (hits.next(), hits.next()) {
        (first, None) => Some(first),
        _ => None,
    }
}

/// Byte offset of `part` (a slice borrowed from `whole`) within `whole`.
fn offset_in(whole: &str, part: &str) -> Option<usize> {
    let at = (part.as_ptr() as usize).checked_sub(whole.as_ptr() as usize)?;
    (at + part.len() <= whole.len()).then_some(at)
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
    fn meta_traceparent_is_found_however_the_key_is_spelt() {
        let plain = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"m","params":{{"_meta":{{"traceparent":"{TP}"}}}}}}"#
        );
        assert_eq!(meta_traceparent(plain.as_bytes()).as_deref(), Some(TP));
        // The same key with escapes: no `traceparent` in the bytes, still the same member.
        let escaped = plain.replace("traceparent", r"trace\u0070arent");
        assert!(!escaped.contains("traceparent"));
        assert_eq!(meta_traceparent(escaped.as_bytes()).as_deref(), Some(TP));
        let none = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}"#;
        assert_eq!(meta_traceparent(none.as_bytes()), None);
    }

    #[test]
    fn ids_stay_distinct_across_refills_of_the_random_pool() {
        // 24 bytes per root span: 300 spans draw the 512-byte pool about 14 times over.
        let mut seen = std::collections::HashSet::new();
        for _ in 0..300 {
            let s = open_span(None);
            assert!(
                TraceParent::parse(&s.traceparent).is_some(),
                "{}",
                s.traceparent
            );
            assert!(seen.insert(s.ids.trace_id), "trace id repeated");
            assert!(seen.insert(s.ids.span_id), "span id repeated");
        }
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

    fn injected(body: &str) -> Option<String> {
        inject_meta_traceparent(body.as_bytes(), TP).map(|b| String::from_utf8(b).unwrap())
    }

    #[test]
    fn injects_where_absent_and_changes_nothing_else() {
        let cases = [
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":{}}}"#,
                format!(
                    r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"_meta":{{"traceparent":"{TP}"}},"name":"x","arguments":{{}}}}}}"#
                ),
            ),
            (
                r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#,
                format!(
                    r#"{{"jsonrpc":"2.0","id":2,"method":"tools/list","params":{{"_meta":{{"traceparent":"{TP}"}}}}}}"#
                ),
            ),
            (
                r#"{"jsonrpc":"2.0","id":3,"method":"ping","params":{}}"#,
                format!(
                    r#"{{"jsonrpc":"2.0","id":3,"method":"ping","params":{{"_meta":{{"traceparent":"{TP}"}}}}}}"#
                ),
            ),
            (
                r#" { "method" : "x" , "params" : { "_meta" : { "progressToken" : 7 } } } "#,
                format!(
                    r#" {{ "method" : "x" , "params" : {{ "_meta" : {{"traceparent":"{TP}", "progressToken" : 7 }} }} }} "#
                ),
            ),
            (
                r#"{"method":"x","params":{"_meta":{}}}"#,
                format!(r#"{{"method":"x","params":{{"_meta":{{"traceparent":"{TP}"}}}}}}"#),
            ),
        ];
        for (body, want) in cases {
            let got = injected(body).unwrap_or_else(|| panic!("not injected: {body}"));
            assert_eq!(got, want);
            assert_eq!(meta_traceparent(got.as_bytes()).as_deref(), Some(TP));
        }
    }

    #[test]
    fn leaves_alone_what_it_should_not_touch() {
        for body in [
            format!(r#"{{"method":"x","params":{{"_meta":{{"traceparent":"{TP}"}}}}}}"#),
            r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#.to_string(),
            r#"{"jsonrpc":"2.0","id":1,"result":{}}"#.to_string(),
            r#"{"method":1}"#.to_string(),
            r#"{"method":"x","params":[1,2]}"#.to_string(),
            r#"{"method":"x","params":{"_meta":"nope"}}"#.to_string(),
            r#"{"method":"x","params":{"_meta":{},"_meta":{}}}"#.to_string(),
            r#"{"method":"x","method":"y"}"#.to_string(),
            // Keys written with escapes are the same keys.
            r#"{"method":"x","\u006dethod":"y"}"#.to_string(),
            format!(r#"{{"method":"x","params":{{"_meta":{{"trace\u0070arent":"{TP}"}}}}}}"#),
            r#"{"method":"x"} trailing"#.to_string(),
            r#"{"method":"x""#.to_string(),
            String::new(),
        ] {
            assert_eq!(injected(&body), None, "{body}");
        }
        assert_eq!(inject_meta_traceparent(b"{\"method\":\"\xff\"}", TP), None);
    }
}
