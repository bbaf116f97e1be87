//! RFC 5424 syslog messages and RFC 6587 octet-counting frames.
//!
//! `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [mcptrail@32473 event_id="…" seq="…"] MSG`
//!
//! - TIMESTAMP is the event's time in UTC with microseconds (RFC 5424 allows at most six
//!   fractional digits; the ledger keeps nanoseconds).
//! - HOSTNAME, APP-NAME, PROCID and MSGID are PRINTUSASCII without spaces, cut to their
//!   maximum lengths (255, 48, 128, 32); an empty value is the NILVALUE `-`.
//! - The structured data element carries the dedupe key (`event_id`) and `seq`, so a
//!   receiver can drop duplicates without parsing MSG. 32473 is the private enterprise
//!   number RFC 5612 reserves for documentation; an organisation with its own number can
//!   change it later.
//! - Octet counting (`MSG-LEN SP SYSLOG-MSG`) frames every message on TCP and TLS (RFC 6587
//!   §3.4.1, RFC 5425 §4.3), so payloads may contain any byte, line breaks included.

use std::fmt::Write;

use serde_json::Value;

use super::{severity_0_10, str_at};
use crate::tail::ShipRecord;

/// The structured-data id of mcptrail's element.
pub const SD_ID: &str = "mcptrail@32473";

/// Keep PRINTUSASCII (33..=126), cut to `max`; `-` when nothing is left.
pub fn header_field(s: &str, max: usize) -> String {
    let v: String = s
        .chars()
        .filter(|c| ('!'..='~').contains(c))
        .take(max)
        .collect();
    if v.is_empty() {
        "-".into()
    } else {
        v
    }
}

/// Escape an SD-PARAM value: `"`, `\` and `]` get a backslash (RFC 5424 §6.3.3).
pub fn escape_param_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// RFC 5424 severity (0 emergency .. 7 debug) of an event.
pub fn severity(v: Option<&Value>, kind: &str) -> u8 {
    let Some(v) = v else {
        return if kind == "alert" { 4 } else { 6 };
    };
    match severity_0_10(v) {
        10 => 2,
        8 => 3,
        6 => 4,
        4 | 5 => 5,
        _ => 6,
    }
}

/// The RFC 5424 timestamp of an RFC 3339 time: UTC, microseconds.
pub fn timestamp(time: &str) -> String {
    let Ok(t) = mcptrail_event::parse_rfc3339(time) else {
        return "-".into();
    };
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

/// Static parts of every message of one sink.
#[derive(Debug, Clone)]
pub struct SyslogHeader {
    /// Facility 0..=23.
    pub facility: u8,
    /// APP-NAME.
    pub app_name: String,
    /// HOSTNAME when the event has no `host`.
    pub fallback_host: String,
}

/// Write the RFC 5424 message of `rec` with `payload` as MSG into `out`. `event` is the parsed
/// event when the format needed it (for the severity); otherwise only the kind is used.
pub fn write_message(
    h: &SyslogHeader,
    rec: &ShipRecord,
    event: Option<&Value>,
    payload: &[u8],
    out: &mut Vec<u8>,
) {
    let pri = u16::from(h.facility) * 8 + u16::from(severity(event, &rec.kind));
    let host = event
        .and_then(|v| str_at(v, "/host"))
        .map(str::to_string)
        .or_else(|| host_of_line(&rec.line))
        .unwrap_or_else(|| h.fallback_host.clone());
    let mut s = String::with_capacity(160);
    let _ = write!(
        s,
        "<{pri}>1 {} {} {} - {} [{SD_ID} event_id=\"{}\" seq=\"{}\"] ",
        timestamp(&rec.time),
        header_field(&host, 255),
        header_field(&h.app_name, 48),
        header_field(&rec.kind, 32),
        escape_param_value(&rec.event_id),
        rec.seq,
    );
    out.extend_from_slice(s.as_bytes());
    out.extend_from_slice(payload);
}

/// The `host` member of a stored line, without parsing the whole event.
fn host_of_line(line: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct HostOnly {
        host: Option<String>,
    }
    serde_json::from_slice::<HostOnly>(line).ok()?.host
}

/// Frame `message` with octet counting: `LEN SP MESSAGE`.
pub fn octet_frame(message: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(message.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(message);
}

/// Split a stream of octet-counted frames (what a receiver does); `None` if malformed.
pub fn parse_frames(mut stream: &[u8]) -> Option<Vec<&[u8]>> {
    let mut out = Vec::new();
    while !stream.is_empty() {
        let sp = stream.iter().position(|&b| b == b' ')?;
        let len: usize = std::str::from_utf8(&stream[..sp]).ok()?.parse().ok()?;
        let rest = &stream[sp + 1..];
        if rest.len() < len {
            return None;
        }
        out.push(&rest[..len]);
        stream = &rest[len..];
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(line: &str) -> ShipRecord {
        ShipRecord::from_line(line.as_bytes().to_vec()).unwrap()
    }

    #[test]
    fn formats_an_rfc5424_message() {
        let r = rec(
            r#"{"seq":7,"event_id":"01ab\"]x","kind":"mcp.request","time":"2026-11-25T10:58:37.622267123Z","host":"vm 1"}"#,
        );
        let h = SyslogHeader {
            facility: 13,
            app_name: "mcptrail".into(),
            fallback_host: "fallback".into(),
        };
        let mut out = Vec::new();
        write_message(&h, &r, None, b"{}", &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"<110>1 2026-11-25T10:58:37.622267Z vm1 mcptrail - mcp.request [mcptrail@32473 event_id="01ab\"\]x" seq="7"] {}"#
        );
    }

    #[test]
    fn timestamps_are_utc_microseconds() {
        assert_eq!(
            timestamp("2026-11-25T11:00:00.000000999+01:00"),
            "2026-11-25T10:00:00.000000Z"
        );
        assert_eq!(timestamp("garbage"), "-");
    }

    #[test]
    fn header_fields_are_printable_and_bounded() {
        assert_eq!(header_field("", 5), "-");
        assert_eq!(header_field("héllo wörld", 5), "hllow");
        assert_eq!(header_field(&"x".repeat(100), 48).len(), 48);
    }

    #[test]
    fn octet_counting_round_trips_with_newlines_and_spaces() {
        let msgs: [&[u8]; 3] = [b"a b c", b"line\nbreak", "ünïcode".as_bytes()];
        let mut stream = Vec::new();
        for m in msgs {
            octet_frame(m, &mut stream);
        }
        assert!(stream.starts_with(b"5 a b c10 line\nbreak"));
        assert_eq!(parse_frames(&stream).unwrap(), msgs.to_vec());
        assert!(parse_frames(b"10 short").is_none());
    }

    proptest::proptest! {
        #[test]
        fn sd_param_values_escape_every_special(s in "\\PC*") {
            let e = escape_param_value(&s);
            // Every ", \ and ] is preceded by a backslash that is not itself escaped.
            let mut chars = e.chars();
            let mut back = String::new();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    let n = chars.next();
                    proptest::prop_assert!(matches!(n, Some('"' | '\\' | ']')), "{:?}", e);
                    back.push(n.unwrap());
                } else {
                    proptest::prop_assert!(c != '"' && c != ']', "{:?}", e);
                    back.push(c);
                }
            }
            proptest::prop_assert_eq!(back, s);
        }

        #[test]
        fn frames_split_back(msgs in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..200), 0..20)) {
            let mut stream = Vec::new();
            for m in &msgs {
                octet_frame(m, &mut stream);
            }
            let back: Vec<Vec<u8>> = parse_frames(&stream).unwrap().into_iter().map(<[u8]>::to_vec).collect();
            proptest::prop_assert_eq!(back, msgs);
        }
    }
}
