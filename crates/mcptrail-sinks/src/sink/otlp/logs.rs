//! Every event as an OTLP log record.
//!
//! - body: the event JSON. With `include_payloads = true` it is the ledger line byte for byte
//!   (a receiver can recompute the record hash); otherwise events holding payloads (tool
//!   arguments, result previews, the prefix of a malformed message) lose those members, and
//!   the body is the rest of the event re-serialised.
//! - `event_name`: `mcptrail.<kind>`; attributes: `mcptrail.event_id` (the dedupe key),
//!   `mcptrail.seq`, `mcptrail.event.kind`, the session, method, tool, request id, outcome,
//!   labels and alert rule where present;
//! - severity from the kind and outcome (alerts ERROR or WARN, failures WARN, the rest INFO);
//! - `trace_id`/`span_id` of the request's SERVER span for requests and responses, so a log
//!   backend links each record to its span.

use super::encode::{trace_and_server_ids, write_request, Batch, EncodeSettings, Item};
use super::proto::Writer;
use super::traces::mcp_session_id;
use super::view::EventView;

/// OTLP `SeverityNumber`s and their texts.
const INFO: (u64, &str) = (9, "INFO");
const WARN: (u64, &str) = (13, "WARN");
const ERROR: (u64, &str) = (17, "ERROR");

/// Severity of an event.
fn severity(v: Option<&EventView<'_>>, kind: &str) -> (u64, &'static str) {
    match kind {
        "alert" => match v.map(|v| v.alert_detail()).and_then(|d| d.severity) {
            Some(s) if s == "critical" || s == "high" => ERROR,
            _ => WARN,
        },
        "malformed"
        | "tool.changed"
        | "system.error"
        | "system.ledger_recovered"
        | "auth.denied"
        | "upstream.error"
        | "governance.forget"
        | "governance.reveal"
        | "governance.retention"
        | "governance.purge" => WARN,
        "mcp.response"
            if v.and_then(|v| v.response_summary.as_ref())
                .is_some_and(|s| s.status != "ok") =>
        {
            WARN
        }
        _ => INFO,
    }
}

/// Write the `ExportLogsServiceRequest` of a batch.
pub(crate) fn encode(batch: &Batch<'_>, settings: &EncodeSettings) -> Option<Vec<u8>> {
    write_request(batch, settings, |scope, resource| {
        let mut wrote = false;
        for it in batch.items.iter().filter(|it| it.resource == resource) {
            // ScopeLogs.log_records = 2
            scope.message(2, |r| write_record(r, it, settings));
            wrote = true;
        }
        wrote
    })
}

fn write_record(w: &mut Writer, it: &Item<'_>, settings: &EncodeSettings) {
    let v = it.view.as_ref();
    let kind = it.rec.kind.as_str();
    let (number, text) = severity(v, kind);
    // LogRecord { time = 1; severity_number = 2; severity_text = 3; body = 5;
    // attributes = 6; trace_id = 9; span_id = 10; observed_time = 11; event_name = 12 }
    w.fixed64(1, it.time_ns);
    w.uint(2, number);
    w.string(3, text);
    w.message(5, |body| match v {
        Some(v) if !settings.include_payloads && v.has_payload() => {
            match payload_cuts(&it.rec.line, v) {
                Some(cuts) => write_cut_line(body, &it.rec.line, &cuts),
                None => body.string_always(1, &without_payloads(&it.rec.line)),
            }
        }
        _ => match std::str::from_utf8(&it.rec.line) {
            Ok(line) => body.string_always(1, line),
            Err(_) => body.string_always(1, &String::from_utf8_lossy(&it.rec.line)),
        },
    });
    w.kv_str(6, "mcptrail.event_id", &it.rec.event_id);
    w.kv_int(6, "mcptrail.seq", it.rec.seq as i64);
    w.kv_str(6, "mcptrail.event.kind", kind);
    if let Some(v) = v {
        if let Some(s) = &v.session_id {
            w.kv_str(6, "mcptrail.session_id", s);
        }
        if let Some(s) = mcp_session_id(v) {
            w.kv_str(6, "mcp.session.id", s);
        }
        if let Some(m) = &v.method {
            w.kv_str(6, "mcp.method.name", m);
        }
        if let Some(t) = &v.tool_invoked {
            w.kv_str(6, "gen_ai.tool.name", t);
        }
        if let Some(p) = &v.prompt_name {
            w.kv_str(6, "gen_ai.prompt.name", p);
        }
        if let Some(id) = v.request_id_text() {
            w.kv_str(6, "jsonrpc.request.id", &id);
        }
        if let Some(s) = &v.response_summary {
            w.kv_str(6, "mcptrail.response.status", &s.status);
        }
        if !v.labels.is_empty() {
            w.kv_str_array(6, "mcptrail.labels", &v.labels);
        }
        if kind == "alert" {
            if let Some(rule) = v.alert_detail().rule {
                w.kv_str(6, "mcptrail.alert.rule", &rule);
            }
        }
        let request_key = match kind {
            "mcp.request" => Some(v.event_id.as_ref()),
            "mcp.response" => v.request_event_id.as_deref(),
            _ => None,
        };
        if let Some(key) = request_key {
            let (trace, server) = trace_and_server_ids(v, key);
            w.bytes(9, &trace);
            w.bytes(10, &server);
        }
    }
    w.fixed64(11, it.time_ns);
    w.string_pieces(12, &[b"mcptrail.", kind.as_bytes()]);
}

/// Where the `parameters_used` and `response_summary.preview` members sit in the stored line
/// (the parsed view points into the line), so they can be left out without re-serialising
/// the rest: sorted, disjoint byte ranges, each with the comma that joined it. `None` when the
/// line is not laid out as the ledger writes it (then [`without_payloads`]).
fn payload_cuts(line: &[u8], v: &EventView<'_>) -> Option<[(usize, usize); 2]> {
    if v.malformed.is_some() {
        return None;
    }
    let base = line.as_ptr() as usize;
    // Empty ranges for members that are absent.
    let mut cuts = [(0usize, 0usize); 2];
    for (slot, (key, raw)) in [
        (&b"\"parameters_used\":"[..], v.parameters_used),
        (
            &b"\"preview\":"[..],
            v.response_summary.as_ref().and_then(|s| s.preview),
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let Some(raw) = raw else { continue };
        let start = (raw.get().as_ptr() as usize).checked_sub(base)?;
        let end = start + raw.get().len();
        if end > line.len() || !line[..start].ends_with(key) {
            return None;
        }
        let mut from = start - key.len();
        let mut to = end;
        if from > 0 && line[from - 1] == b',' {
            from -= 1;
        } else if line.get(to) == Some(&b',') {
            to += 1;
        }
        cuts[slot] = (from, to);
    }
    cuts.sort_unstable();
    // Overlapping cuts (a line not written by the ledger) are refused.
    let [(_, to0), (from1, _)] = cuts;
    (to0 <= from1).then_some(cuts)
}

/// The body's `string_value` (field 1): the line without the `cuts`, written in place.
fn write_cut_line(body: &mut Writer, line: &[u8], cuts: &[(usize, usize); 2]) {
    let [(f0, t0), (f1, t1)] = *cuts;
    let pieces = [&line[..f0], &line[t0..f1], &line[t1..]];
    match std::str::from_utf8(line) {
        // Cuts fall on ASCII bytes (`,` and `"`), so the pieces of a UTF-8 line are UTF-8.
        Ok(_) => body.string_pieces(1, &pieces),
        Err(_) => body.string_always(1, &String::from_utf8_lossy(&pieces.concat())),
    }
}

/// The event JSON without the payload members `include_payloads = false` keeps out.
fn without_payloads(line: &[u8]) -> String {
    let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(line) else {
        return String::from_utf8_lossy(line).into_owned();
    };
    if let Some(o) = v.as_object_mut() {
        o.remove("parameters_used");
        for (member, inner) in [("response_summary", "preview"), ("malformed", "preview")] {
            if let Some(m) = o.get_mut(member).and_then(|m| m.as_object_mut()) {
                m.remove(inner);
            }
        }
    }
    v.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_members_are_removed_and_the_rest_kept() {
        let line = br#"{"event_id":"e","time":"t","kind":"mcp.response","parameters_used":{"k":"v"},"response_summary":{"status":"ok","preview":"secret result","size":3}}"#;
        let out = without_payloads(line);
        assert!(
            !out.contains("secret result") && !out.contains("\"k\""),
            "{out}"
        );
        assert!(
            out.contains("\"size\":3") && out.contains("\"event_id\":\"e\""),
            "{out}"
        );
    }

    #[test]
    fn cutting_by_position_gives_what_re_serialising_gives() {
        use crate::sink::otlp::proto::{fields, Field};
        for line in [
            &br#"{"event_id":"e","time":"t","kind":"mcp.request","parameters_used":{"k":"v\u00e9"},"seq":1}"#[..],
            br#"{"event_id":"e","time":"t","kind":"mcp.response","response_summary":{"preview":"secret","status":"ok","size":3},"seq":2}"#,
            br#"{"event_id":"e","time":"t","kind":"mcp.response","parameters_used":[1],"response_summary":{"status":"ok","preview":"p"}}"#,
        ] {
            let v: EventView<'_> = serde_json::from_slice(line).unwrap();
            let cuts = payload_cuts(line, &v).expect("a ledger-shaped line");
            let mut w = Writer::default();
            write_cut_line(&mut w, line, &cuts);
            let Some(&[(1, Field::Len(text))]) = fields(&w.buf).as_deref() else {
                panic!("one string field: {:?}", w.buf)
            };
            let cut: serde_json::Value = serde_json::from_slice(text).unwrap();
            let reserialised: serde_json::Value =
                serde_json::from_str(&without_payloads(line)).unwrap();
            assert_eq!(cut, reserialised, "{}", String::from_utf8_lossy(line));
        }
    }
}
