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
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '=' => out.push_str("\\="),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}

/// The CEF line of an event (without any syslog header).
pub fn event_to_cef(v: &Value) -> String {
    let kind = str_at(v, "/kind").unwrap_or("event");
    let mut out = format!(
        "CEF:0|mcptrail|mcptrail|{}|{}|{}|{}|",
        escape_header(env!("CARGO_PKG_VERSION")),
        escape_header(kind),
        escape_header(&display_name(v)),
        severity_0_10(v),
    );
    let mut ext: Vec<(&str, String)> = Vec::new();
    if let Some(ms) = str_at(v, "/time").and_then(epoch_millis) {
        ext.push(("rt", ms.to_string()));
    }
    if let Some(id) = str_at(v, "/event_id") {
        ext.push(("externalId", id.to_string()));
    }
    if let Some(seq) = v.get("seq").and_then(Value::as_u64) {
        ext.push(("cn1Label", "seq".into()));
        ext.push(("cn1", seq.to_string()));
    }
    if let Some(d) = v.get("duration_ms").and_then(Value::as_f64) {
        ext.push(("cn2Label", "durationMs".into()));
        ext.push(("cn2", format!("{}", d.round() as i64)));
    }
    let labelled: [(&str, &str, &str, &str); 6] = [
        ("cs1Label", "sessionId", "cs1", "/session_id"),
        ("cs2Label", "agentId", "cs2", "/agent_id"),
        ("cs3Label", "tool", "cs3", "/tool_invoked"),
        ("cs5Label", "mcpServer", "cs5", "/server/name"),
        ("cs6Label", "traceId", "cs6", "/trace_id"),
        ("request", "", "", "/resource_uri"),
    ];
    for (label_key, label, key, pointer) in labelled {
        if let Some(s) = str_at(v, pointer) {
            if key.is_empty() {
                ext.push((label_key, s.to_string()));
            } else {
                ext.push((label_key, label.to_string()));
                ext.push((key, s.to_string()));
            }
        }
    }
    if let Some(labels) = v.get("labels").and_then(Value::as_array) {
        let joined: Vec<&str> = labels.iter().filter_map(Value::as_str).collect();
        if !joined.is_empty() {
            ext.push(("cs4Label", "labels".into()));
            ext.push(("cs4", joined.join(",")));
        }
    }
    for (key, pointer) in [
        ("suser", "/user_identity/principal"),
        ("shost", "/host"),
        ("act", "/method"),
        ("outcome", "/response_summary/status"),
    ] {
        if let Some(s) = str_at(v, pointer) {
            ext.push((key, s.to_string()));
        }
    }
    if let Some(pid) = v.pointer("/process/tap_pid").and_then(Value::as_u64) {
        ext.push(("spid", pid.to_string()));
    }
    if kind == "alert" {
        if let Some(rule) = str_at(v, "/detail/rule") {
            ext.push(("cat", rule.to_string()));
        }
    }
    for (i, (k, val)) in ext.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let _ = write!(out, "{k}={}", escape_extension(val));
    }
    out
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
