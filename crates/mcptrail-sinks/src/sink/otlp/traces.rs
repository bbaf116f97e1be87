//! Spans, after the OpenTelemetry semantic conventions for MCP (status: development).
//!
//! Each `mcp.response` event that answers a known request (it names `method` and
//! `request_event_id`) becomes two spans over the same interval, `time - duration_ms` to
//! `time`, named `{mcp.method.name} {target}` (target: the tool or prompt name; none for
//! other methods, so names stay low-cardinality):
//!
//! - kind SERVER: the tap's side facing the requester (the MCP client for client→server
//!   requests), child of the requester's span when the request carried trace context;
//! - kind CLIENT: the tap's side facing the responder (the upstream server), child of the
//!   SERVER span; its id is the span id the gateway announced upstream when it did, so the
//!   server's own spans hang below it.
//!
//! The response event carries everything a span needs (method, tool, ids, timing, outcome),
//! so a span is complete the moment its response is shipped: nothing waits across batches
//! and the cursor never moves past a span not yet exported. Requests that never got an answer
//! get their span from the synthetic response the tap writes (`timeout`, `cancelled`, or
//! `no_response` at session end). Only the tool arguments live on the request event alone:
//! with `include_payloads` they are kept in bounded memory until the response (see
//! [`super::encode::CrossBatch`]).

use super::encode::{
    host_port, span_ids, transports, write_request, Batch, CrossBatch, EncodeSettings,
};
use super::proto::Writer;
use super::view::EventView;

/// `SpanKind` values.
const KIND_SERVER: u64 = 2;
const KIND_CLIENT: u64 = 3;
/// `Status.StatusCode.STATUS_CODE_ERROR`.
const STATUS_ERROR: u64 = 2;

/// Which side a span describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// Facing the requester.
    Server,
    /// Facing the responder.
    Client,
}

/// JSON-RPC codes a server SHOULD NOT count as its own error (the caller's mistake).
const CALLER_ERRORS: &[i64] = &[-32700, -32600, -32601, -32602, -32002];

/// The outcome of an operation as the conventions classify it on one side.
pub(crate) struct Outcome<'v> {
    /// `error.type`, when the operation failed on this side.
    pub error_type: Option<std::borrow::Cow<'v, str>>,
    /// `rpc.response.status_code`.
    pub status_code: Option<String>,
    /// Status description (the JSON-RPC error message).
    pub message: Option<&'v str>,
}

/// How the operation of response `v` ended, seen from `side`.
pub(crate) fn outcome<'v>(v: &'v EventView<'_>, side: Side) -> Outcome<'v> {
    let Some(s) = &v.response_summary else {
        return Outcome {
            error_type: None,
            status_code: None,
            message: None,
        };
    };
    let status_code = s.error_code.map(|c| c.to_string());
    let error_type = match (s.error_code, s.status.as_ref()) {
        (Some(c), _) if side == Side::Server && CALLER_ERRORS.contains(&c) => None,
        (Some(c), _) => Some(c.to_string().into()),
        (None, "ok") => None,
        (None, "error") if s.is_error => Some("tool_error".into()),
        (None, other) => Some(std::borrow::Cow::Borrowed(other)),
    };
    Outcome {
        message: error_type.as_ref().and(s.error_message.as_deref()),
        error_type,
        status_code,
    }
}

/// Whether `v` becomes spans: a response to a known request.
pub(crate) fn is_span_source(v: &EventView<'_>) -> bool {
    v.kind == "mcp.response" && v.method.is_some() && v.request_event_id.is_some()
}

/// The `mcp.session.id`: the MCP session id of Streamable HTTP / SSE, else (stdio has none
/// on the wire) the tap's session id.
pub(crate) fn mcp_session_id<'v>(v: &'v EventView<'_>) -> Option<&'v str> {
    v.http
        .as_ref()
        .and_then(|h| h.mcp_session_id.as_deref())
        .or(v.session_id.as_deref())
}

/// The request went client→server (the usual case; sampling, elicitation and roots go the
/// other way).
fn client_initiated(v: &EventView<'_>) -> bool {
    // The response travels the opposite way of its request.
    v.direction.as_deref() != Some("client_to_server")
}

/// Write the `ExportTraceServiceRequest` of a batch (`None`: no span in it).
pub(crate) fn encode(
    batch: &Batch<'_>,
    settings: &EncodeSettings,
    memory: &CrossBatch,
) -> Option<Vec<u8>> {
    write_request(batch, settings, |scope, resource| {
        let mut wrote = false;
        for it in batch.items.iter().filter(|it| it.resource == resource) {
            let Some(v) = it.view.as_ref().filter(|v| is_span_source(v)) else {
                continue;
            };
            let request_key = v.request_event_id.as_deref().unwrap_or(&v.event_id);
            let ids = span_ids(v, request_key);
            let end = it.time_ns;
            let dur = v
                .duration_ms
                .filter(|d| d.is_finite() && *d >= 0.0)
                .map_or(0, |d| (d * 1e6) as u64);
            let start = end.saturating_sub(dur);
            let arguments = if settings.include_payloads {
                memory.arguments.get(request_key)
            } else {
                None
            };
            for side in [Side::Server, Side::Client] {
                scope.message(2, |span| {
                    write_span(span, v, side, &ids, (start, end), settings, arguments)
                });
            }
            wrote = true;
        }
        wrote
    })
}

/// The span name, `{mcp.method.name} {target}`, as field `field` (written in place).
fn write_span_name(w: &mut Writer, field: u32, v: &EventView<'_>) {
    let method = v.method.as_deref().unwrap_or("");
    match v.tool_invoked.as_deref().or(v.prompt_name.as_deref()) {
        Some(t) => w.string_pieces(field, &[method.as_bytes(), b" ", t.as_bytes()]),
        None => w.string(field, method),
    }
}

fn write_span(
    w: &mut Writer,
    v: &EventView<'_>,
    side: Side,
    ids: &super::encode::SpanIds,
    (start, end): (u64, u64),
    settings: &EncodeSettings,
    arguments: Option<&str>,
) {
    let (id, parent, kind) = match side {
        Side::Server => (ids.server, ids.parent, KIND_SERVER),
        Side::Client => (ids.client, Some(ids.server), KIND_CLIENT),
    };
    w.bytes(1, &ids.trace);
    w.bytes(2, &id);
    if let Some(p) = parent {
        w.bytes(4, &p);
    }
    write_span_name(w, 5, v);
    w.uint(6, kind);
    w.fixed64(7, start);
    w.fixed64(8, end);
    write_operation_attributes(w, 9, v, side);
    let o = outcome(v, side);
    if let Some(code) = &o.status_code {
        w.kv_str(9, "rpc.response.status_code", code);
    }
    if let Some(t) = &o.error_type {
        w.kv_str(9, "error.type", t);
    }
    if let Some(id) = v.request_id_text() {
        w.kv_str(9, "jsonrpc.request.id", &id);
    }
    w.kv_str(9, "jsonrpc.protocol.version", "2.0");
    if let Some(s) = mcp_session_id(v) {
        w.kv_str(9, "mcp.session.id", s);
    }
    if let Some(u) = &v.resource_uri {
        w.kv_str(9, "mcp.resource.uri", u);
    }
    w.kv_str(9, "mcptrail.event_id", &v.event_id);
    if let Some(r) = &v.request_event_id {
        w.kv_str(9, "mcptrail.request_event_id", r);
    }
    if let Some(s) = &v.session_id {
        w.kv_str(9, "mcptrail.session_id", s);
    }
    if let Some(s) = &v.response_summary {
        w.kv_str(9, "mcptrail.response.status", &s.status);
    }
    if let Some(h) = &v.tool_schema_hash {
        w.kv_str(9, "mcptrail.tool.schema_hash", h);
    }
    if let Some(u) = &v.user_identity {
        w.kv_str(9, "mcptrail.user.principal", &u.principal);
        w.kv_str(9, "mcptrail.user.source", &u.source);
    }
    if !v.labels.is_empty() {
        w.kv_str_array(9, "mcptrail.labels", &v.labels);
    }
    if !v.flags.is_empty() {
        w.kv_str_array(9, "mcptrail.flags", &v.flags);
    }
    if settings.include_payloads {
        if let Some(a) = arguments {
            if v.method.as_deref() == Some("prompts/get") {
                write_prompt_variables(w, a);
            } else {
                w.kv_str(9, "gen_ai.tool.call.arguments", a);
            }
        }
        if let Some(p) = v.response_summary.as_ref().and_then(|s| s.preview_text()) {
            w.kv_str(9, "gen_ai.tool.call.result", &p);
        }
    }
    if o.error_type.is_some() {
        w.message(15, |st| {
            if let Some(m) = o.message {
                st.string(2, m);
            }
            st.uint(3, STATUS_ERROR);
        });
    }
}

/// The attributes spans and operation metrics share: method, tool/prompt, operation name,
/// protocol version, transport and the peer's address on this side.
pub(crate) fn write_operation_attributes(
    w: &mut Writer,
    field: u32,
    v: &EventView<'_>,
    side: Side,
) {
    let method = v.method.as_deref().unwrap_or("");
    w.kv_str(field, "mcp.method.name", method);
    if let Some(t) = &v.tool_invoked {
        w.kv_str(field, "gen_ai.tool.name", t);
    }
    if method == "tools/call" {
        w.kv_str(field, "gen_ai.operation.name", "execute_tool");
    }
    if let Some(p) = &v.prompt_name {
        w.kv_str(field, "gen_ai.prompt.name", p);
    }
    if let Some(p) = &v.protocol_version {
        w.kv_str(field, "mcp.protocol.version", p);
    }
    let (client_side, server_side) = transports(v);
    let from_client = client_initiated(v);
    // The requester is on the client side for client-initiated requests.
    let transport = match (side, from_client) {
        (Side::Server, true) | (Side::Client, false) => client_side,
        _ => server_side,
    };
    w.kv_str(field, "network.transport", transport);
    if transport == "tcp" {
        w.kv_str(field, "network.protocol.name", "http");
    }
    match (side, from_client) {
        (Side::Client, true) => {
            if let Some((host, port)) = v
                .server
                .as_ref()
                .and_then(|s| s.url.as_deref())
                .and_then(host_port)
            {
                w.kv_str(field, "server.address", host);
                if let Some(p) = port {
                    w.kv_int(field, "server.port", i64::from(p));
                }
            }
        }
        (Side::Server, true) => {
            if let Some((host, port)) = v
                .http
                .as_ref()
                .and_then(|h| h.client_address.as_deref())
                .and_then(host_port)
            {
                w.kv_str(field, "client.address", host);
                if let Some(p) = port {
                    w.kv_int(field, "client.port", i64::from(p));
                }
            }
        }
        _ => {}
    }
}

/// `gen_ai.prompt.variable.<name>` per argument of a `prompts/get`.
fn write_prompt_variables(w: &mut Writer, arguments: &str) {
    let Ok(map) = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(arguments)
    else {
        return;
    };
    for (k, val) in map {
        let key = format!("gen_ai.prompt.variable.{k}");
        match val {
            serde_json::Value::String(s) => w.kv_str(9, &key, &s),
            other => w.kv_str(9, &key, &other.to_string()),
        }
    }
}
