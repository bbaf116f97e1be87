//! Payload formats: what one event becomes on the wire.
//!
//! - `json`: the stored ledger line, byte for byte. A receiver can recompute the record hash
//!   and check the chain; nothing is re-serialised.
//! - `cef`: ArcSight Common Event Format ([`cef`]).
//! - `ocsf`: OCSF API Activity ([`ocsf`]).
//!
//! And how syslog carries it: RFC 5424 headers and RFC 6587 octet counting ([`syslog`]).

pub mod cef;
pub mod ecs;
pub mod ocsf;
pub mod syslog;

use serde_json::Value;

use crate::config::PayloadFormat;
use crate::error::{SendError, SendErrorKind};
use crate::tail::ShipRecord;

/// Append the payload of `rec` in `format` to `out`.
pub fn encode_into(
    format: PayloadFormat,
    rec: &ShipRecord,
    out: &mut Vec<u8>,
) -> Result<(), SendError> {
    match format {
        PayloadFormat::Json => {
            out.extend_from_slice(&rec.line);
            Ok(())
        }
        PayloadFormat::Cef => {
            out.extend_from_slice(cef::event_to_cef(&parse(rec)?).as_bytes());
            Ok(())
        }
        PayloadFormat::Ocsf => serde_json::to_writer(&mut *out, &ocsf::event_to_ocsf(&parse(rec)?))
            .map_err(|e| SendError::new(SendErrorKind::Encode, e.to_string())),
    }
}

/// The whole event as JSON (CEF and OCSF read many fields).
pub(crate) fn parse(rec: &ShipRecord) -> Result<Value, SendError> {
    serde_json::from_slice(&rec.line).map_err(|e| {
        SendError::new(
            SendErrorKind::Encode,
            format!("event seq {} is not valid JSON: {e}", rec.seq),
        )
    })
}

/// The member at a path of plain member names (`/a/b`). Unlike `Value::pointer` it does not
/// unescape `~0`/`~1` (no member name here needs it), so it allocates nothing: the CEF and
/// OCSF encoders look up a dozen fields per event.
pub(crate) fn at<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('/')
        .skip(1)
        .try_fold(v, |node, key| node.as_object()?.get(key))
}

/// A string member at a path (see [`at`]).
pub(crate) fn str_at<'a>(v: &'a Value, path: &str) -> Option<&'a str> {
    at(v, path).and_then(Value::as_str)
}

/// Milliseconds since the Unix epoch of an RFC 3339 time.
pub(crate) fn epoch_millis(time: &str) -> Option<i64> {
    mcptrail_event::parse_rfc3339(time)
        .ok()
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// Severity of an event on a 0..=10 scale (CEF's), from its kind and outcome.
pub(crate) fn severity_0_10(v: &Value) -> u8 {
    match str_at(v, "/kind").unwrap_or("") {
        "alert" => match str_at(v, "/detail/severity").unwrap_or("") {
            "critical" => 10,
            "high" => 8,
            "low" | "info" => 3,
            _ => 6,
        },
        "malformed" | "tool.changed" | "system.error" | "system.ledger_recovered" => 5,
        "mcp.response" if str_at(v, "/response_summary/status").is_some_and(|s| s != "ok") => 4,
        "governance.forget" | "governance.reveal" | "governance.retention" | "governance.purge" => {
            5
        }
        _ => 1,
    }
}

/// A short human name: `tools/call get-weather`, `resources/read file:///x`, or the kind.
pub(crate) fn display_name(v: &Value) -> String {
    let kind = str_at(v, "/kind").unwrap_or("event");
    if kind == "alert" {
        if let Some(s) = str_at(v, "/detail/summary").or(str_at(v, "/detail/rule")) {
            return s.to_string();
        }
    }
    match str_at(v, "/method") {
        Some(m) => match str_at(v, "/tool_invoked")
            .or(str_at(v, "/prompt_name"))
            .or(str_at(v, "/resource_uri"))
        {
            Some(t) => format!("{m} {t}"),
            None => m.to_string(),
        },
        None => kind.to_string(),
    }
}
