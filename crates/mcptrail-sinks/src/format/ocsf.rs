//! OCSF 1.3 API Activity (class 6003, category 6 Application Activity).
//!
//! An MCP message is an API call: `api.operation` is the JSON-RPC method, the actor is the
//! agent acting for a user, `api.service` the MCP server. Fields OCSF has no place for (the
//! tool, `seq`, labels, the ledger's `prev_hash`) go under `unmapped.mcptrail`. `metadata.uid`
//! is the `event_id`, so receivers dedupe on it.

use serde_json::{json, Map, Value};

use super::{epoch_millis, severity_0_10, str_at};

/// OCSF schema version the events follow.
pub const OCSF_VERSION: &str = "1.3.0";

/// The OCSF API Activity object of an event.
pub fn event_to_ocsf(v: &Value) -> Value {
    let kind = str_at(v, "/kind").unwrap_or("");
    let method = str_at(v, "/method");
    // 1 Create, 2 Read, 3 Update, 4 Delete, 99 Other.
    let activity_id = match method {
        Some(m) if m.ends_with("/list") || m.ends_with("/read") || m.ends_with("/get") => 2,
        _ => 99,
    };
    let status = str_at(v, "/response_summary/status");
    let (status_id, status_name) = match status {
        Some("ok") => (1, "Success"),
        Some(_) => (2, "Failure"),
        None => (0, "Unknown"),
    };
    let severity_id = match severity_0_10(v) {
        10 => 5,
        8 => 4,
        6 => 3,
        4 | 5 => 2,
        _ => 1,
    };
    let mut api = Map::new();
    api.insert("operation".into(), json!(method.unwrap_or(kind)));
    if let Some(id) = v.get("request_id") {
        api.insert("request".into(), json!({ "uid": id.to_string() }));
    }
    if let Some(name) = str_at(v, "/server/name") {
        let mut service = json!({ "name": name });
        if let Some(ver) = str_at(v, "/server/version") {
            service["version"] = json!(ver);
        }
        api.insert("service".into(), service);
    }
    if let Some(code) = super::at(v, "/response_summary/error_code") {
        api.insert("response".into(), json!({ "code": code, "error": status }));
    }
    let mut actor = Map::new();
    if let Some(p) = str_at(v, "/user_identity/principal") {
        actor.insert("user".into(), json!({ "name": p }));
    }
    if let Some(a) = str_at(v, "/agent_id") {
        actor.insert("app_name".into(), json!(a));
    }
    if let Some(s) = str_at(v, "/session_id") {
        actor.insert("session".into(), json!({ "uid": s }));
    }
    let mut out = json!({
        "class_uid": 6003,
        "class_name": "API Activity",
        "category_uid": 6,
        "category_name": "Application Activity",
        "activity_id": activity_id,
        "type_uid": 6003 * 100 + activity_id,
        "severity_id": severity_id,
        "status_id": status_id,
        "status": status_name,
        "time": str_at(v, "/time").and_then(epoch_millis),
        "message": super::display_name(v),
        "metadata": {
            "version": OCSF_VERSION,
            "uid": str_at(v, "/event_id"),
            "original_time": str_at(v, "/time"),
            "product": { "name": "mcptrail", "vendor_name": "mcptrail", "version": env!("CARGO_PKG_VERSION") },
            "labels": v.get("labels").cloned().unwrap_or(json!([])),
            "log_name": "mcptrail-ledger",
        },
        "api": api,
        "actor": actor,
        "src_endpoint": { "hostname": str_at(v, "/host") },
        "unmapped": { "mcptrail": {
            "kind": kind,
            "seq": v.get("seq"),
            "tool": v.get("tool_invoked"),
            "prompt": v.get("prompt_name"),
            "resource_uri": v.get("resource_uri"),
            "direction": v.get("direction"),
            "prev_hash": v.get("prev_hash"),
            "detail": v.get("detail"),
        }},
    });
    if let Some(d) = v.get("duration_ms").and_then(Value::as_f64) {
        out["duration"] = json!(d.round() as i64);
    }
    if let Some(t) = str_at(v, "/trace_id") {
        out["trace"] = json!({ "uid": t, "span": { "uid": str_at(v, "/span_id") } });
    }
    strip_nulls(&mut out);
    out
}

fn strip_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, x| !x.is_null());
            m.values_mut().for_each(strip_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tool_call_maps_to_api_activity() {
        let v = json!({
            "kind": "mcp.response", "event_id": "e1", "seq": 3, "time": "2026-11-25T10:00:00Z",
            "method": "tools/call", "tool_invoked": "get-sum", "request_id": 6,
            "response_summary": {"status": "error"}, "server": {"name": "everything", "transport": "stdio"},
            "user_identity": {"principal": "alice", "source": "os"}, "agent_id": "demo", "session_id": "s1",
            "labels": ["pii"]
        });
        let o = event_to_ocsf(&v);
        assert_eq!(o["class_uid"], 6003);
        assert_eq!(o["type_uid"], 600399);
        assert_eq!(o["status_id"], 2);
        assert_eq!(o["time"], 1_795_600_800_000_i64);
        assert_eq!(o["metadata"]["uid"], "e1");
        assert_eq!(o["api"]["operation"], "tools/call");
        assert_eq!(o["api"]["service"]["name"], "everything");
        assert_eq!(o["actor"]["user"]["name"], "alice");
        assert_eq!(o["unmapped"]["mcptrail"]["tool"], "get-sum");
        assert!(!o.to_string().contains("null"));
    }
}
