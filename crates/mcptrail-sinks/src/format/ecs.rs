//! Elastic Common Schema (ECS 8.x) documents for the Elasticsearch/OpenSearch sink.
//!
//! The ECS fields a SOC queries and Kibana's apps understand are filled from the event;
//! the whole mcptrail event stays under `mcptrail` (so nothing is lost and the schema-v1
//! field names keep working in queries):
//!
//! | ECS | from |
//! | --- | --- |
//! | `@timestamp` | `time` |
//! | `event.id` | `event_id` (also the document `_id`) |
//! | `event.kind` | `alert` for alerts, `event` otherwise |
//! | `event.category` / `event.type` | `["api"]` / `["access"]` (`["info"]` for non-MCP kinds) |
//! | `event.action` | the JSON-RPC method (`tools/call`), else the kind |
//! | `event.outcome` | `success` / `failure` from `response_summary.status`, else `unknown` |
//! | `event.duration` | `duration_ms` in nanoseconds |
//! | `event.dataset`, `event.module` | `mcptrail.audit`, `mcptrail` |
//! | `event.severity` | 0..=10 as in CEF |
//! | `user.name` | `user_identity.principal` |
//! | `service.name` / `service.version` | the MCP server's name and version |
//! | `trace.id`, `span.id` | `trace_id`, `span_id` |
//! | `source.ip` / `source.port` | `http.client_address` (the gateway's TCP peer) |
//! | `url.path` / `url.full` | the path of `server.url` / the URL without credentials |
//! | `http.request.method`, `http.response.status_code` | `http.method`, `http.status` |
//! | `host.name` | `host` |
//! | `user_agent.name` / `user_agent.version` | the MCP client's name and version (`client`) |
//! | `tags` | `labels` |
//! | `message` | `tools/call get-weather`, an alert's summary, or the kind |
//! | `ecs.version` | `8.11.0` |

use serde_json::{json, Map, Value};

use super::{display_name, severity_0_10, str_at};

/// The ECS version the documents declare.
pub const ECS_VERSION: &str = "8.11.0";

/// The ECS document of an event (the event itself under `mcptrail`).
pub fn event_to_ecs(v: &Value) -> Value {
    let mut doc = ecs_fields(v);
    doc["mcptrail"] = v.clone();
    doc
}

/// Append the ECS document of `rec` to `out`: the ECS fields, then `"mcptrail":` and the
/// stored ledger line itself (not re-serialised: cheaper, and the bytes stay the ledger's).
pub fn write_ecs_document(
    v: &Value,
    line: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), serde_json::Error> {
    serde_json::to_writer(&mut *out, &ecs_fields(v))?;
    let close = out.pop();
    debug_assert_eq!(close, Some(b'}'));
    if out.last() != Some(&b'{') {
        out.push(b',');
    }
    out.extend_from_slice(b"\"mcptrail\":");
    out.extend_from_slice(line);
    out.push(b'}');
    Ok(())
}

/// The ECS fields of an event, without the event itself.
fn ecs_fields(v: &Value) -> Value {
    let kind = str_at(v, "/kind").unwrap_or("");
    let method = str_at(v, "/method");
    let outcome = match str_at(v, "/response_summary/status") {
        Some("ok") => "success",
        Some(_) => "failure",
        None => "unknown",
    };
    let mcp = kind.starts_with("mcp.");
    let mut event = json!({
        "id": str_at(v, "/event_id"),
        "kind": if kind == "alert" { "alert" } else { "event" },
        "category": if mcp { json!(["api"]) } else { json!(["host"]) },
        "type": if mcp { json!(["access"]) } else { json!(["info"]) },
        "action": method.unwrap_or(kind),
        "outcome": outcome,
        "dataset": "mcptrail.audit",
        "module": "mcptrail",
        "provider": "mcptrail",
        "severity": severity_0_10(v),
        "sequence": v.get("seq"),
        "created": str_at(v, "/time"),
    });
    if let Some(ms) = v.get("duration_ms").and_then(Value::as_f64) {
        event["duration"] = json!((ms * 1_000_000.0).round() as i64);
    }
    let mut doc = Map::new();
    doc.insert("@timestamp".into(), json!(str_at(v, "/time")));
    doc.insert("ecs".into(), json!({ "version": ECS_VERSION }));
    doc.insert("message".into(), json!(display_name(v)));
    doc.insert("event".into(), event);
    if let Some(p) = str_at(v, "/user_identity/principal") {
        doc.insert("user".into(), json!({ "name": p }));
    }
    if let Some(name) = str_at(v, "/server/name") {
        let mut service = json!({ "name": name, "type": "mcp" });
        if let Some(ver) = str_at(v, "/server/version") {
            service["version"] = json!(ver);
        }
        doc.insert("service".into(), service);
    }
    if let Some(t) = str_at(v, "/trace_id") {
        doc.insert("trace".into(), json!({ "id": t }));
    }
    if let Some(s) = str_at(v, "/span_id") {
        doc.insert("span".into(), json!({ "id": s }));
    }
    if let Some(addr) = str_at(v, "/http/client_address") {
        let (ip, port) = split_host_port(addr);
        let mut source = json!({ "ip": ip, "address": addr });
        if let Some(p) = port {
            source["port"] = json!(p);
        }
        doc.insert("source".into(), source);
    }
    if let Some(u) = str_at(v, "/server/url") {
        let shown = crate::sink::http::redact_url(u);
        let after_scheme = shown.split_once("://").map_or("", |(_, rest)| rest);
        let path = after_scheme
            .find('/')
            .map_or("/", |i| &after_scheme[i..])
            .to_string();
        doc.insert("url".into(), json!({ "full": shown, "path": path }));
    }
    if let Some(m) = str_at(v, "/http/method") {
        let mut h = json!({ "request": { "method": m } });
        if let Some(s) = v.pointer("/http/status") {
            h["response"] = json!({ "status_code": s });
        }
        doc.insert("http".into(), h);
    }
    if let Some(h) = str_at(v, "/host") {
        doc.insert("host".into(), json!({ "name": h }));
    }
    if let Some(c) = str_at(v, "/client/name") {
        let mut ua = json!({ "name": c });
        if let Some(ver) = str_at(v, "/client/version") {
            ua["version"] = json!(ver);
        }
        doc.insert("user_agent".into(), ua);
    }
    if let Some(labels) = v
        .get("labels")
        .filter(|l| l.as_array().is_some_and(|a| !a.is_empty()))
    {
        doc.insert("tags".into(), labels.clone());
    }
    let mut out = Value::Object(doc);
    strip_nulls(&mut out);
    out
}

/// `1.2.3.4:5` → ("1.2.3.4", Some(5)); `[::1]:5` → ("::1", Some(5)); anything else whole.
fn split_host_port(addr: &str) -> (&str, Option<u16>) {
    if let Some(rest) = addr.strip_prefix('[') {
        if let Some((ip, port)) = rest.split_once("]:") {
            return (ip, port.parse().ok());
        }
        return (rest.trim_end_matches(']'), None);
    }
    match addr.rsplit_once(':') {
        Some((ip, port)) if !ip.contains(':') => (ip, port.parse().ok()),
        _ => (addr, None),
    }
}

fn strip_nulls(v: &mut Value) {
    if let Value::Object(m) = v {
        m.retain(|_, x| !x.is_null());
        m.values_mut().for_each(strip_nulls);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gateway_tool_call_maps_to_ecs() {
        let v = json!({
            "kind": "mcp.response", "event_id": "0190-e1", "seq": 3, "time": "2026-11-25T10:00:00Z",
            "method": "tools/call", "tool_invoked": "get-sum", "duration_ms": 1.5,
            "response_summary": {"status": "error"}, "server": {"name": "everything", "version": "2.0", "transport": "http", "url": "http://u:pw@127.0.0.1:3001/mcp?k=1"},
            "user_identity": {"principal": "alice", "source": "oidc"}, "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
            "span_id": "00f067aa0ba902b7", "http": {"route": "everything", "method": "POST", "client_address": "127.0.0.1:50123", "status": 200},
            "host": "h1", "labels": ["pii"], "client": {"name": "claude-code", "version": "1.0"}
        });
        let d = event_to_ecs(&v);
        assert_eq!(d["@timestamp"], "2026-11-25T10:00:00Z");
        assert_eq!(d["event"]["id"], "0190-e1");
        assert_eq!(d["event"]["kind"], "event");
        assert_eq!(d["event"]["action"], "tools/call");
        assert_eq!(d["event"]["outcome"], "failure");
        assert_eq!(d["event"]["duration"], 1_500_000);
        assert_eq!(d["user"]["name"], "alice");
        assert_eq!(d["service"]["name"], "everything");
        assert_eq!(d["trace"]["id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(d["span"]["id"], "00f067aa0ba902b7");
        assert_eq!(d["source"]["ip"], "127.0.0.1");
        assert_eq!(d["source"]["port"], 50123);
        assert_eq!(d["url"]["path"], "/mcp");
        assert!(!d["url"]["full"].as_str().unwrap().contains("pw"));
        assert_eq!(d["http"]["response"]["status_code"], 200);
        assert_eq!(d["tags"], json!(["pii"]));
        assert_eq!(d["message"], "tools/call get-sum");
        assert_eq!(d["mcptrail"], v, "the whole event is kept");
    }

    #[test]
    fn the_written_document_embeds_the_ledger_line_verbatim() {
        let line = br#"{"kind":"mcp.request","event_id":"e9","time":"2026-11-25T10:00:00Z","method":"ping"}"#;
        let v: Value = serde_json::from_slice(line).unwrap();
        let mut out = Vec::new();
        write_ecs_document(&v, line, &mut out).unwrap();
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(
            text.ends_with(&format!("\"mcptrail\":{}}}", String::from_utf8_lossy(line))),
            "{text}"
        );
        let parsed: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(parsed, event_to_ecs(&v));
    }

    #[test]
    fn alerts_are_alerts_and_host_ports_split() {
        let d = event_to_ecs(
            &json!({"kind": "alert", "event_id": "a", "time": "t", "detail": {"summary": "sink lag"}}),
        );
        assert_eq!(d["event"]["kind"], "alert");
        assert_eq!(d["event"]["outcome"], "unknown");
        assert_eq!(d["message"], "sink lag");
        assert_eq!(split_host_port("[::1]:80"), ("::1", Some(80)));
        assert_eq!(split_host_port("::1"), ("::1", None));
    }
}
