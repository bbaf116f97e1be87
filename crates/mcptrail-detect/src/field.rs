//! Event paths: the names rules use for fields of an [`Event`] (`tool_invoked`,
//! `response_summary.status`, `detail.host`, …), compiled once at load so that reading a field
//! of an event is a `match`, not a JSON walk. Typed fields are read directly from the struct;
//! only `detail.*` and `parameters_used.*` walk JSON.

use mcptrail_event::Event;
use serde_json::Value;

/// A compiled path into an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Path {
    Kind,
    EventId,
    Seq,
    Time,
    AgentId,
    SessionId,
    Host,
    Method,
    ToolInvoked,
    ResourceUri,
    PromptName,
    ToolSchemaHash,
    Direction,
    RequestEventId,
    TraceId,
    UserPrincipal,
    UserSource,
    ClientName,
    ClientVersion,
    ServerName,
    ServerVersion,
    ServerTransport,
    ServerUrl,
    Status,
    IsError,
    ErrorCode,
    ResponseSize,
    DurationMs,
    BytesIn,
    BytesOut,
    Labels,
    RedactionRules,
    CatalogList,
    CatalogChanged,
    CatalogAdded,
    CatalogRemoved,
    HttpRoute,
    HttpClientAddress,
    HttpStatus,
    HttpSessionId,
    EndReason,
    /// `detail` followed by object keys / array indexes.
    Detail(Vec<String>),
    /// `parameters_used` followed by object keys / array indexes.
    Parameters(Vec<String>),
}

/// The names rules may use, for error messages.
pub(crate) const KNOWN: &str = "kind, event_id, seq, time, agent_id (agent), session_id (session), host, method, \
tool_invoked (tool), resource_uri, prompt_name, tool_schema_hash, direction, request_event_id, trace_id, \
user_identity.principal (user), user_identity.source, client.name, client.version, server.name (server), \
server.version, server.transport, server.url, response_summary.status (status), response_summary.is_error, \
response_summary.error_code, response_summary.size, duration_ms, bytes_in, bytes_out, labels, redactions.rule, \
catalog.list, catalog.changed, catalog.added, catalog.removed, http.route, http.client_address, http.status, \
http.mcp_session_id, session.end_reason, detail.<key>…, parameters_used.<key>…";

impl Path {
    /// Compile a dotted path; `Err` says which names exist.
    pub(crate) fn parse(s: &str) -> Result<Path, String> {
        let p = match s {
            "kind" => Path::Kind,
            "event_id" => Path::EventId,
            "seq" => Path::Seq,
            "time" => Path::Time,
            "agent_id" | "agent" => Path::AgentId,
            "session_id" | "session" => Path::SessionId,
            "host" => Path::Host,
            "method" => Path::Method,
            "tool_invoked" | "tool" => Path::ToolInvoked,
            "resource_uri" => Path::ResourceUri,
            "prompt_name" => Path::PromptName,
            "tool_schema_hash" => Path::ToolSchemaHash,
            "direction" => Path::Direction,
            "request_event_id" => Path::RequestEventId,
            "trace_id" => Path::TraceId,
            "user_identity.principal" | "user" => Path::UserPrincipal,
            "user_identity.source" => Path::UserSource,
            "client.name" => Path::ClientName,
            "client.version" => Path::ClientVersion,
            "server.name" | "server" => Path::ServerName,
            "server.version" => Path::ServerVersion,
            "server.transport" => Path::ServerTransport,
            "server.url" => Path::ServerUrl,
            "response_summary.status" | "status" => Path::Status,
            "response_summary.is_error" => Path::IsError,
            "response_summary.error_code" => Path::ErrorCode,
            "response_summary.size" => Path::ResponseSize,
            "duration_ms" => Path::DurationMs,
            "bytes_in" => Path::BytesIn,
            "bytes_out" => Path::BytesOut,
            "labels" => Path::Labels,
            "redactions.rule" => Path::RedactionRules,
            "catalog.list" => Path::CatalogList,
            "catalog.changed" => Path::CatalogChanged,
            "catalog.added" => Path::CatalogAdded,
            "catalog.removed" => Path::CatalogRemoved,
            "http.route" => Path::HttpRoute,
            "http.client_address" => Path::HttpClientAddress,
            "http.status" => Path::HttpStatus,
            "http.mcp_session_id" => Path::HttpSessionId,
            "session.end_reason" => Path::EndReason,
            _ => {
                let json = |rest: &str| -> Result<Vec<String>, String> {
                    let parts: Vec<String> = rest.split('.').map(str::to_string).collect();
                    if parts.iter().any(String::is_empty) {
                        return Err(format!("`{s}` has an empty segment"));
                    }
                    Ok(parts)
                };
                if let Some(rest) = s.strip_prefix("detail.") {
                    Path::Detail(json(rest)?)
                } else if let Some(rest) = s.strip_prefix("parameters_used.") {
                    Path::Parameters(json(rest)?)
                } else {
                    return Err(format!("unknown event field `{s}`; fields are: {KNOWN}"));
                }
            }
        };
        Ok(p)
    }

    /// Read this field of `e`.
    pub(crate) fn get<'a>(&self, e: &'a Event) -> Val<'a> {
        fn s(o: Option<&String>) -> Val<'_> {
            o.map_or(Val::Missing, |v| Val::Str(v))
        }
        fn n<T: Into<f64>>(o: Option<T>) -> Val<'static> {
            o.map_or(Val::Missing, |v| Val::Num(v.into()))
        }
        fn u(o: Option<u64>) -> Val<'static> {
            o.map_or(Val::Missing, |v| Val::Num(v as f64))
        }
        fn list(v: &[String]) -> Val<'_> {
            Val::List(v)
        }
        let rs = e.response_summary.as_ref();
        match self {
            Path::Kind => Val::Str(e.kind.as_str()),
            Path::EventId => Val::Str(&e.event_id),
            Path::Seq => Val::Num(e.seq as f64),
            Path::Time => Val::Str(&e.time),
            Path::AgentId => s(e.agent_id.as_ref()),
            Path::SessionId => s(e.session_id.as_ref()),
            Path::Host => s(e.host.as_ref()),
            Path::Method => s(e.method.as_ref()),
            Path::ToolInvoked => s(e.tool_invoked.as_ref()),
            Path::ResourceUri => s(e.resource_uri.as_ref()),
            Path::PromptName => s(e.prompt_name.as_ref()),
            Path::ToolSchemaHash => s(e.tool_schema_hash.as_ref()),
            Path::Direction => match e.direction {
                Some(mcptrail_event::Direction::ClientToServer) => Val::Str("client_to_server"),
                Some(mcptrail_event::Direction::ServerToClient) => Val::Str("server_to_client"),
                None => Val::Missing,
            },
            Path::RequestEventId => s(e.request_event_id.as_ref()),
            Path::TraceId => s(e.trace_id.as_ref()),
            Path::UserPrincipal => s(e.user_identity.as_ref().map(|u| &u.principal)),
            Path::UserSource => s(e.user_identity.as_ref().map(|u| &u.source)),
            Path::ClientName => s(e.client.as_ref().map(|c| &c.name)),
            Path::ClientVersion => s(e.client.as_ref().and_then(|c| c.version.as_ref())),
            Path::ServerName => s(e.server.as_ref().and_then(|c| c.name.as_ref())),
            Path::ServerVersion => s(e.server.as_ref().and_then(|c| c.version.as_ref())),
            Path::ServerTransport => s(e.server.as_ref().map(|c| &c.transport)),
            Path::ServerUrl => s(e.server.as_ref().and_then(|c| c.url.as_ref())),
            Path::Status => rs.map_or(Val::Missing, |r| Val::Str(r.status.as_str())),
            Path::IsError => rs.map_or(Val::Missing, |r| Val::Bool(r.is_error)),
            Path::ErrorCode => rs
                .and_then(|r| r.error_code)
                .map_or(Val::Missing, |c| Val::Num(c as f64)),
            Path::ResponseSize => u(rs.map(|r| r.size)),
            Path::DurationMs => n(e.duration_ms),
            Path::BytesIn => u(e.bytes_in),
            Path::BytesOut => u(e.bytes_out),
            Path::Labels => list(&e.labels),
            Path::RedactionRules => Val::Redactions(&e.redactions),
            Path::CatalogList => s(e.catalog.as_ref().map(|c| &c.list)),
            Path::CatalogChanged => e
                .catalog
                .as_ref()
                .map_or(Val::Missing, |c| list(&c.changed)),
            Path::CatalogAdded => e.catalog.as_ref().map_or(Val::Missing, |c| list(&c.added)),
            Path::CatalogRemoved => e
                .catalog
                .as_ref()
                .map_or(Val::Missing, |c| list(&c.removed)),
            Path::HttpRoute => s(e.http.as_ref().map(|h| &h.route)),
            Path::HttpClientAddress => s(e.http.as_ref().and_then(|h| h.client_address.as_ref())),
            Path::HttpStatus => n(e.http.as_ref().and_then(|h| h.status)),
            Path::HttpSessionId => s(e.http.as_ref().and_then(|h| h.mcp_session_id.as_ref())),
            Path::EndReason => s(e.session.as_ref().and_then(|d| d.end_reason.as_ref())),
            Path::Detail(keys) => walk(e.detail.as_ref(), keys),
            Path::Parameters(keys) => walk(e.parameters_used.as_ref(), keys),
        }
    }
}

fn walk<'a>(root: Option<&'a Value>, keys: &[String]) -> Val<'a> {
    let mut v = match root {
        Some(v) => v,
        None => return Val::Missing,
    };
    for k in keys {
        v = match v {
            Value::Object(m) => match m.get(k) {
                Some(x) => x,
                None => return Val::Missing,
            },
            Value::Array(a) => match k.parse::<usize>().ok().and_then(|i| a.get(i)) {
                Some(x) => x,
                None => return Val::Missing,
            },
            _ => return Val::Missing,
        };
    }
    Val::from_json(v)
}

/// The value of a field of one event.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Val<'a> {
    /// Absent (or JSON `null`).
    Missing,
    Str(&'a str),
    Num(f64),
    Bool(bool),
    /// A list of strings (`labels`, `catalog.changed`): a matcher holds when it holds for one
    /// element.
    List(&'a [String]),
    /// The rule names of `redactions`.
    Redactions(&'a [mcptrail_event::Redaction]),
    /// A JSON array or object from `detail`/`parameters_used`.
    Json(&'a Value),
}

impl<'a> Val<'a> {
    pub(crate) fn from_json(v: &'a Value) -> Val<'a> {
        match v {
            Value::Null => Val::Missing,
            Value::String(s) => Val::Str(s),
            Value::Number(n) => n.as_f64().map_or(Val::Missing, Val::Num),
            Value::Bool(b) => Val::Bool(*b),
            other => Val::Json(other),
        }
    }

    /// Whether the field is there (a list or array: non-empty).
    pub(crate) fn exists(&self) -> bool {
        match self {
            Val::Missing => false,
            Val::List(l) => !l.is_empty(),
            Val::Redactions(r) => !r.is_empty(),
            Val::Json(Value::Array(a)) => !a.is_empty(),
            _ => true,
        }
    }

    /// Whether `f` holds for the value, or for one element of a list.
    pub(crate) fn any(&self, f: &mut dyn FnMut(Val<'_>) -> bool) -> bool {
        match self {
            Val::Missing => false,
            Val::List(l) => l.iter().any(|s| f(Val::Str(s))),
            Val::Redactions(r) => r.iter().any(|x| f(Val::Str(&x.rule))),
            Val::Json(Value::Array(a)) => a.iter().any(|v| f(Val::from_json(v))),
            other => f(*other),
        }
    }

    /// The value as text, for group keys, distinct counts and summaries.
    pub(crate) fn text(&self) -> Option<String> {
        match self {
            Val::Missing => None,
            Val::Str(s) => Some((*s).to_string()),
            Val::Num(n) => Some(if n.fract() == 0.0 && n.abs() < 1e15 {
                format!("{}", *n as i64)
            } else {
                format!("{n}")
            }),
            Val::Bool(b) => Some(b.to_string()),
            Val::List(l) => Some(l.join(",")),
            Val::Redactions(r) => Some(
                r.iter()
                    .map(|x| x.rule.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            Val::Json(v) => Some(v.to_string()),
        }
    }

    /// Append [`Val::text`] to `out` (strings without an allocation); `false` when missing.
    pub(crate) fn push_text(&self, out: &mut String) -> bool {
        match self {
            Val::Missing => false,
            Val::Str(s) => {
                out.push_str(s);
                true
            }
            other => match other.text() {
                Some(t) => {
                    out.push_str(&t);
                    true
                }
                None => false,
            },
        }
    }

    /// The value as a number (numeric strings too).
    pub(crate) fn num(&self) -> Option<f64> {
        match self {
            Val::Num(n) => Some(*n),
            Val::Str(s) => s.parse().ok(),
            Val::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcptrail_event::EventKind;

    #[test]
    fn paths_read_typed_fields_and_detail() {
        let mut e = Event::new(EventKind::NetEgress);
        e.session_id = Some("s1".into());
        e.bytes_out = Some(42);
        e.labels = vec!["pii".into(), "secret".into()];
        e.detail = Some(
            serde_json::json!({"host": "evil.test", "port": 443, "matched": null, "tags": ["a"]}),
        );
        let get = |p: &str| Path::parse(p).unwrap().get(&e).text();
        assert_eq!(get("kind").as_deref(), Some("net.egress"));
        assert_eq!(get("session").as_deref(), Some("s1"));
        assert_eq!(get("bytes_out").as_deref(), Some("42"));
        assert_eq!(get("detail.host").as_deref(), Some("evil.test"));
        assert_eq!(get("detail.port").as_deref(), Some("443"));
        assert_eq!(get("detail.matched"), None);
        assert_eq!(get("detail.tags.0").as_deref(), Some("a"));
        assert_eq!(get("detail.nope.deeper"), None);
        assert_eq!(get("labels").as_deref(), Some("pii,secret"));
        assert!(!Path::parse("status").unwrap().get(&e).exists());
        let err = Path::parse("tool_name").unwrap_err();
        assert!(err.contains("unknown event field `tool_name`") && err.contains("tool_invoked"));
        assert!(Path::parse("detail..x").is_err());
    }
}
