//! ArcSight Common Event Format (CEF:0).
//!
//! `CEF:0|Vendor|Product|Version|Signature ID|Name|Severity|Extension`
//!
//! Escaping follows the CEF specification: in header fields a backslash and a pipe are
//! escaped (`\\`, `\|`); in extension values a backslash, an equals sign and line breaks are
//! escaped (`\\`, `\=`, `\n`, `\r`). Headers cannot hold line breaks at all: they become
//! spaces. Extension keys are fixed names chosen here and need no escaping.

use std::fmt::Write;

use serde_json::Value;

use super::{display_name, epoch_millis, severity_0_10, str_at};

/// Escape a CEF header field.
pub fn escape_header(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '|' => out.push_str("\\|"),
            '\r' | '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Escape a CEF extension value.
pub fn escape_extension(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    push_escaped_extension(&mut out, s);
    out
}

/// Append `s` escaped as a CEF extension value.
fn push_escaped_extension(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '=' => out.push_str("\\="),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

/// Append ` key=value` (value escaped) to a CEF line; no space before the first pair.
fn push_pair(out: &mut String, first: &mut bool, key: &str, value: &str) {
    if !std::mem::take(first) {
        out.push(' ');
    }
    out.push_str(key);
    out.push('=');
    push_escaped_extension(out, value);
}

/// The CEF line of an event (without any syslog header).
pub fn event_to_cef(v: &Value) -> String {
    let kind = str_at(v, "/kind").unwrap_or("event");
    let mut out = String::with_capacity(512);
    let _ = write!(
        out,
        "CEF:0|mcptrail|mcptrail|{}|{}|{}|{}|",
        escape_header(env!("CARGO_PKG_VERSION")),
        escape_header(kind),
        escape_header(&display_name(v)),
        severity_0_10(v),
    );
    let first = &mut true;
    let mut num = itoa_buf();
    if let Some(ms) = str_at(v, "/time").and_then(epoch_millis) {
        push_pair(&mut out, first, "rt", num.format(ms));
    }
    if let Some(id) = str_at(v, "/event_id") {
        push_pair(&mut out, first, "externalId", id);
    }
    if let Some(seq) = v.get("seq").and_then(Value::as_u64) {
        push_pair(&mut out, first, "cn1Label", "seq");
        push_pair(&mut out, first, "cn1", num.format(seq));
    }
    if let Some(d) = v.get("duration_ms").and_then(Value::as_f64) {
        push_pair(&mut out, first, "cn2Label", "durationMs");
        push_pair(&mut out, first, "cn2", num.format(d.round() as i64));
    }
    for (label_key, label, key, path) in [
        ("cs1Label", "sessionId", "cs1", "/session_id"),
        ("cs2Label", "agentId", "cs2", "/agent_id"),
        ("cs3Label", "tool", "cs3", "/tool_invoked"),
        ("cs5Label", "mcpServer", "cs5", "/server/name"),
        ("cs6Label", "traceId", "cs6", "/trace_id"),
    ] {
        if let Some(s) = str_at(v, path) {
            push_pair(&mut out, first, label_key, label);
            push_pair(&mut out, first, key, s);
        }
    }
    if let Some(uri) = str_at(v, "/resource_uri") {
        push_pair(&mut out, first, "request", uri);
    }
    if let Some(labels) = v.get("labels").and_then(Value::as_array) {
        let joined: Vec<&str> = labels.iter().filter_map(Value::as_str).collect();
        if !joined.is_empty() {
            push_pair(&mut out, first, "cs4Label", "labels");
            push_pair(&mut out, first, "cs4", &joined.join(","));
        }
    }
    for (key, path) in [
        ("suser", "/user_identity/principal"),
        ("shost", "/host"),
        ("act", "/method"),
        ("outcome", "/response_summary/status"),
    ] {
        if let Some(s) = str_at(v, path) {
            push_pair(&mut out, first, key, s);
        }
    }
    if let Some(pid) = super::at(v, "/process/tap_pid").and_then(Value::as_u64) {
        push_pair(&mut out, first, "spid", num.format(pid));
    }
    if kind == "alert" {
        if let Some(rule) = str_at(v, "/detail/rule") {
            push_pair(&mut out, first, "cat", rule);
        }
    }
    out
}

/// Formats integers without allocating.
fn itoa_buf() -> NumBuf {
    NumBuf(String::with_capacity(24))
}

struct NumBuf(String);

impl NumBuf {
    fn format(&mut self, n: impl std::fmt::Display) -> &str {
        self.0.clear();
        let _ = write!(self.0, "{n}");
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn header_and_extension_escaping() {
        assert_eq!(escape_header(r"a|b\c"), r"a\|b\\c");
        assert_eq!(escape_header("two\nlines"), "two lines");
        assert_eq!(escape_extension("k=v\\x\r\ny|z"), "k\\=v\\\\x\\r\\ny|z");
    }

    #[test]
    fn a_tool_call_with_hostile_names() {
        let v = json!({
            "kind": "mcp.request", "event_id": "019a-e", "seq": 12, "time": "2026-11-25T10:00:00.5Z",
            "method": "tools/call", "tool_invoked": "get|weather=now\\x",
            "session_id": "s-1", "labels": ["pii", "secret"], "host": "vm",
            "user_identity": {"principal": "alice", "source": "os"}
        });
        let cef = event_to_cef(&v);
        let header: Vec<&str> = split_unescaped_pipes(&cef);
        assert_eq!(header.len(), 8, "{cef}");
        assert_eq!(header[0], "CEF:0");
        assert_eq!(header[4], "mcp.request");
        assert_eq!(header[5], r"tools/call get\|weather=now\\x");
        assert_eq!(header[6], "1");
        let ext = header[7];
        assert!(
            ext.starts_with("rt=1795600800500 externalId=019a-e cn1Label=seq cn1=12"),
            "{ext}"
        );
        assert!(ext.contains(r"cs3=get|weather\=now\\x"), "{ext}");
        assert!(ext.contains("cs4=pii,secret"), "{ext}");
        assert!(
            ext.contains("suser=alice") && ext.contains("shost=vm"),
            "{ext}"
        );
    }

    /// Split a CEF line at its first seven unescaped pipes, as a CEF parser does.
    pub(crate) fn split_unescaped_pipes(s: &str) -> Vec<&str> {
        let mut parts = Vec::new();
        let (mut start, mut escaped) = (0, false);
        for (i, c) in s.char_indices() {
            if parts.len() == 7 {
                break;
            }
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '|' => {
                    parts.push(&s[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        parts.push(&s[start..]);
        parts
    }

    proptest::proptest! {
        #[test]
        fn escaped_header_fields_never_split_and_unescape_back(s in "\\PC*") {
            let e = escape_header(&s);
            let line = format!("CEF:0|v|p|1|id|{e}|1|x=1");
            let parts = split_unescaped_pipes(&line);
            proptest::prop_assert_eq!(parts.len(), 8);
            proptest::prop_assert_eq!(unescape(parts[5]), s.replace(['\r', '\n'], " "));
        }

        #[test]
        fn escaped_extension_values_have_no_bare_equals_or_newline(s in "\\PC*|[=\\\\\n\r a-z]*") {
            let e = escape_extension(&s);
            proptest::prop_assert!(!e.contains('\n') && !e.contains('\r'));
            let mut escaped = false;
            for c in e.chars() {
                if escaped { escaped = false; continue; }
                if c == '\\' { escaped = true; continue; }
                proptest::prop_assert!(c != '=', "bare = in {:?}", e);
            }
            proptest::prop_assert!(!escaped, "dangling backslash in {:?}", e);
            proptest::prop_assert_eq!(unescape(&e), s);
        }
    }

    fn unescape(s: &str) -> String {
        let mut out = String::new();
        let mut it = s.chars();
        while let Some(c) = it.next() {
            if c == '\\' {
                match it.next() {
                    Some('n') => out.push('\n'),
                    Some('r') => out.push('\r'),
                    Some(c) => out.push(c),
                    None => {}
                }
            } else {
                out.push(c);
            }
        }
        out
    }
}
