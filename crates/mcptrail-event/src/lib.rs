//! mcptrail audit event schema, version 1.
//!
//! One [`Event`] is one JSON object on one line of the ledger. This crate owns the field
//! names and their meaning; the JSON Schema published by `mcptrail schema` is generated from
//! these types ([`json_schema`]), so the documentation and the record cannot drift apart.
//!
//! Stability rules: field names are snake_case and never change meaning within a major
//! version; new optional fields and new kinds are minor versions (`schema_version` "1.x").
//! Absent optional fields are omitted rather than written as `null`.
//!
//! The groups follow DESIGN.md §2: identity of the event, who, where, what, result, cost,
//! governance, and integrity (`seq`, `prev_hash`, filled in by the ledger at append time).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

pub mod activity;
mod kind;
mod time_fmt;

pub use kind::EventKind;
pub use time_fmt::{format_rfc3339_nanos, now_rfc3339_nanos, parse_rfc3339};

/// The schema version written into every event.
pub const SCHEMA_VERSION: &str = "1.2";

/// The `prev_hash` of the very first record of a ledger: 64 hex zeros.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audit event, exactly as stored on one ledger line.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "mcptrail audit event", extend("$id" = "https://mcptrail.dev/schema/event-v1.json"))]
pub struct Event {
    // ---- identity of the event ----
    /// Version of this schema the event was written with ("1.x").
    pub schema_version: String,
    /// UUIDv7 of the event: globally unique, time-ordered, the dedupe key for every consumer.
    pub event_id: String,
    /// Ledger sequence number, contiguous from 1 within one ledger. Assigned at append time.
    pub seq: u64,
    /// Wall-clock time the tap observed the message, RFC 3339 UTC with nanoseconds.
    pub time: String,
    /// What happened; see the `kind` enumeration.
    pub kind: EventKind,

    // ---- who ----
    /// The human or service principal on whose behalf the agent acts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_identity: Option<UserIdentity>,
    /// The agent: `--agent-id`, else the client name announced in `initialize`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// The MCP client, from the `initialize` request's `clientInfo`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<PeerInfo>,
    /// Host name of the machine the tap runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The tap process and the server process it supervises.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessInfo>,

    // ---- where ----
    /// The MCP server: name/version from `initialize`, transport, command line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerInfo>,
    /// The tap session (one `wrap` run = one session), a UUIDv7.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// W3C trace id (32 hex) when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// W3C span id (16 hex) when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub span_id: Option<String>,
    /// Parent span id (16 hex) when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_span_id: Option<String>,

    // ---- what ----
    /// Which way the message travelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
    /// JSON-RPC method (for responses: the method of the request they answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// JSON-RPC id exactly as sent (string or integer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<Value>,
    /// `event_id` of the request a response answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_event_id: Option<String>,
    /// Tool name of a `tools/call`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_invoked: Option<String>,
    /// Arguments of a `tools/call` or `prompts/get`, the `params` of any other request or
    /// notification. Omitted when larger than the stored-payload limit: see `parameters_digest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters_used: Option<Value>,
    /// Size and SHA-256 of the parameters as sent, always present when there were parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters_digest: Option<Digest256>,
    /// Resource URI of `resources/read`, `resources/subscribe` and similar.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_uri: Option<String>,
    /// Prompt name of `prompts/get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_name: Option<String>,
    /// Hash of the invoked tool's definition from the latest `tools/list` of this session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_schema_hash: Option<String>,
    /// MCP protocol version negotiated in `initialize`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol_version: Option<String>,

    // ---- result ----
    /// Outcome of a request, on `mcp.response` events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_summary: Option<ResponseSummary>,

    // ---- cost ----
    /// Time from the request to its response, milliseconds (fractional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<f64>,
    /// Bytes of this message (or of the request, on a response event) towards the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_in: Option<u64>,
    /// Bytes of this message (or of the response) towards the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_out: Option<u64>,

    // ---- governance ----
    /// Data classification labels (e.g. `pii`, `secret`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// What was redacted and by which rule; never the value.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redactions: Vec<Redaction>,
    /// Anomalies the tap noticed in the message; see `Flag`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<Flag>,

    // ---- kind-specific detail ----
    /// `tool.catalog` / `tool.changed`: the snapshot or the difference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog: Option<Catalog>,
    /// `session.start`, `session.end`, `initialize` responses: lifecycle detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionDetail>,
    /// `malformed`: why the message could not be understood, with a digest of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub malformed: Option<MalformedDetail>,
    /// `system.*`: free-form detail of a system event (counters, repaired ranges, config).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<Value>,
    /// Events recorded by the HTTP gateway: the HTTP exchange the message travelled in
    /// (schema 1.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpDetail>,

    // ---- integrity (assigned by the ledger) ----
    /// Record hash (hex) of the previous ledger line: SHA-256(0x00 ‖ that line's exact stored
    /// bytes without its newline and without its `mac` member), its RFC 9162 leaf hash; 64
    /// zeros for the first record.
    pub prev_hash: String,
    /// Forward-secure MAC of the record: `"<epoch>:<hex>"` (the first record of an epoch adds
    /// `":<hex>"`, the tag that closed the previous epoch), the HMAC-SHA256 under the key of
    /// that epoch of this record's hash (as `prev_hash` defines it). Absent on records written
    /// with MACs turned off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

/// Who the agent acts for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UserIdentity {
    /// The principal as the tap knows it (OS user, or `MCPTRAIL_USER` when set).
    pub principal: String,
    /// How the principal was established: `os` (the OS account running the tap), `env`
    /// (asserted through `MCPTRAIL_USER`, not verified), and at the gateway `jwt` (a verified
    /// bearer token), `header` (set by a trusted auth proxy), `mtls` (a verified client
    /// certificate) or `anonymous` (a route without authentication).
    pub source: String,
    /// The OS account running the tap, always recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_user: Option<String>,
    /// Numeric OS user id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_uid: Option<u32>,
    /// Claims of a verified token the gateway was configured to keep (`keep_claims`), e.g.
    /// `email`, `groups`; redaction policy applies to them like to payloads (schema 1.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claims: Option<Value>,
}

/// The HTTP exchange a gateway event belongs to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpDetail {
    /// The gateway route (its configured name).
    pub route: String,
    /// `GET`, `POST` or `DELETE`.
    pub method: String,
    /// The `Mcp-Session-Id` of the MCP session (Streamable HTTP) or the `sessionId` of a
    /// legacy HTTP+SSE session, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp_session_id: Option<String>,
    /// The client's address as the gateway saw it (the TCP peer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_address: Option<String>,
    /// HTTP status the client was answered with, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
}

/// Name and version a peer announced.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PeerInfo {
    /// `clientInfo.name` / `serverInfo.name`.
    pub name: String,
    /// `clientInfo.version` / `serverInfo.version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// The MCP server an event concerns.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerInfo {
    /// `serverInfo.name` from `initialize`, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `serverInfo.version` from `initialize`, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// `stdio`, `streamable_http` or `sse`.
    pub transport: String,
    /// The command line the tap spawned (stdio).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// The upstream URL (HTTP transports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// Process ids involved.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProcessInfo {
    /// Process id of the tap.
    pub tap_pid: u32,
    /// Process id of the server the tap spawned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_pid: Option<u32>,
    /// mcptrail version of the tap.
    pub tap_version: String,
}

/// Direction a message travelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// From the MCP client (agent host) to the server.
    ClientToServer,
    /// From the server to the client (responses, notifications, sampling/elicitation/roots requests).
    ServerToClient,
}

impl Direction {
    /// The other direction.
    pub fn reverse(self) -> Self {
        match self {
            Direction::ClientToServer => Direction::ServerToClient,
            Direction::ServerToClient => Direction::ClientToServer,
        }
    }

    /// Short arrow for people: `→` towards the server, `←` towards the client.
    pub fn arrow(self) -> &'static str {
        match self {
            Direction::ClientToServer => "→",
            Direction::ServerToClient => "←",
        }
    }
}

/// Outcome of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// A result came back and it is not a tool error.
    Ok,
    /// A JSON-RPC error, or a tool result with `isError: true`.
    Error,
    /// No response within the configured request timeout.
    Timeout,
    /// The requester sent `notifications/cancelled` for it.
    Cancelled,
    /// The session ended before any response arrived.
    NoResponse,
}

impl Status {
    /// The snake_case name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Error => "error",
            Status::Timeout => "timeout",
            Status::Cancelled => "cancelled",
            Status::NoResponse => "no_response",
        }
    }
}

/// What came back for a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResponseSummary {
    /// Outcome.
    pub status: Status,
    /// True for a JSON-RPC error and for a tool result with `isError: true`.
    pub is_error: bool,
    /// JSON-RPC error code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<i64>,
    /// JSON-RPC error message (truncated to the preview length).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    /// Size of the full response message in bytes.
    pub size: u64,
    /// SHA-256 (hex) of the full response message bytes as relayed; absent when no response
    /// arrived (`timeout`, `cancelled`, `no_response`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Short preview of the result: the first text content, else the JSON (truncated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview: Option<String>,
    /// Content item types of a tool result (`text`, `image`, `audio`, `resource`, `resource_link`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub content_types: Vec<String>,
}

/// Size and SHA-256 of a payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Digest256 {
    /// Bytes.
    pub size: u64,
    /// SHA-256, hex.
    pub sha256: String,
}

impl Digest256 {
    /// Digest of a byte slice.
    pub fn of(bytes: &[u8]) -> Self {
        Digest256 {
            size: bytes.len() as u64,
            sha256: sha256_hex(bytes),
        }
    }
}

/// One redaction applied to the event (filled by the redaction stage).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Redaction {
    /// Rule that fired.
    pub rule: String,
    /// JSON path of the redacted value within the event.
    pub path: String,
    /// Action taken (`mask`, `hash`, `encrypt`, `drop`).
    pub action: String,
}

/// Anomalies noticed while parsing a message. The message was forwarded unchanged regardless.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Flag {
    /// The message was one element of a JSON-RPC batch (array).
    Batch,
    /// A request reused an id still pending in the same direction; on a response: it answers
    /// one of several pending requests sharing its id, so its pairing is a guess (the oldest).
    IdReused,
    /// A response whose id matches no pending request.
    UnknownId,
    /// An error response with `id: null`.
    NullId,
    /// The message exceeded the stored-payload limit: parameters or preview summarised.
    Oversize,
    /// The message exceeded the parse limit: only size, hash and a prefix were kept.
    TooLargeToParse,
    /// A method not in the MCP specification the tap knows.
    UnknownMethod,
    /// A response that arrived after its request was recorded as timed out.
    LateResponse,
    /// The message could not be delivered (the receiving side was gone).
    Undelivered,
    /// The JSON-RPC envelope is irregular (missing or wrong `jsonrpc`, both `result` and `error`).
    InvalidEnvelope,
    /// The session ended with this request unanswered.
    Unanswered,
    /// The gateway answered in the server's place (upstream unreachable or failed); the
    /// message never came from the server (schema 1.1).
    Synthesized,
    /// A server-to-client message the server sent again on a resumed SSE stream
    /// (`Last-Event-ID`); it was recorded when first sent (schema 1.1).
    Replayed,
}

/// A `tools/list`, `prompts/list` or `resources/list` snapshot (or the change since the last one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    /// `tools`, `prompts`, `resources` or `resource_templates`.
    pub list: String,
    /// SHA-256 over the sorted item hashes: the "schema version" of this list.
    pub hash: String,
    /// The items of this page, each with the SHA-256 of its canonical JSON definition.
    pub items: Vec<CatalogItem>,
    /// `nextCursor` of a paginated list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    /// On `tool.changed`: items whose definition differs from the previous snapshot.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changed: Vec<String>,
    /// On `tool.changed`: items new since the previous snapshot.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub added: Vec<String>,
    /// On `tool.changed`: items gone since the previous snapshot.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<String>,
}

/// One catalog entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CatalogItem {
    /// Tool or prompt name, or resource URI.
    pub name: String,
    /// SHA-256 of the item's canonical JSON (keys sorted).
    pub hash: String,
}

/// Lifecycle detail of a session.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionDetail {
    /// Capabilities the client announced in `initialize`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_capabilities: Option<Value>,
    /// Capabilities the server announced in its `initialize` result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_capabilities: Option<Value>,
    /// Why the session ended: `client_eof`, `client_gone`, `server_exited`, `signal`, `tap_error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<String>,
    /// Exit code of the server process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Signal that terminated the server process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_signal: Option<String>,
    /// Whether the tap had to send SIGTERM/SIGKILL to stop the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forced_stop: Option<String>,
    /// Messages seen client→server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages_in: Option<u64>,
    /// Messages seen server→client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages_out: Option<u64>,
    /// Requests still unanswered when the session ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unanswered: Option<u64>,
}

/// Why a message could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MalformedDetail {
    /// `invalid_utf8`, `invalid_json`, `not_jsonrpc`, `too_large`, `empty_batch`, `unterminated`.
    pub reason: String,
    /// Parser message (position of the error), never the payload itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Size and SHA-256 of the raw bytes as relayed.
    pub digest: Digest256,
    /// The first bytes, lossily decoded and truncated to the preview length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview: Option<String>,
}

/// SHA-256 of bytes, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A fresh UUIDv7 as a string.
pub fn new_event_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

impl Event {
    /// The members [`activity::Tally`] counts.
    pub fn activity_facts(&self) -> activity::ActivityFacts<'_> {
        let r = self.response_summary.as_ref();
        activity::ActivityFacts {
            kind: self.kind.as_str(),
            method: self.method.as_deref(),
            direction: self.direction,
            status: r.map(|r| r.status),
            is_error: r.is_some_and(|r| r.is_error),
            size: r.map(|r| r.size),
            bytes_out: self.bytes_out,
        }
    }

    /// A new event of `kind`, stamped now, with a fresh id. `seq` and `prev_hash` are left for
    /// the ledger to assign.
    pub fn new(kind: EventKind) -> Self {
        Event {
            schema_version: SCHEMA_VERSION.to_string(),
            event_id: new_event_id(),
            seq: 0,
            time: now_rfc3339_nanos(),
            kind,
            prev_hash: String::new(),
            mac: None,
            ..Default::default()
        }
    }
}

/// The JSON Schema (draft 2020-12) of [`Event`], as published by `mcptrail schema`.
pub fn json_schema() -> Value {
    let schema = schemars::schema_for!(Event);
    serde_json::to_value(schema).expect("schema serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_omits_absent_fields() {
        let mut e = Event::new(EventKind::McpRequest);
        e.seq = 7;
        e.prev_hash = GENESIS_HASH.into();
        e.method = Some("tools/call".into());
        let line = serde_json::to_string(&e).unwrap();
        assert!(!line.contains("null"), "absent fields are omitted: {line}");
        assert!(line.contains(r#""kind":"mcp.request""#));
        let back: Event = serde_json::from_str(&line).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn event_ids_are_uuid_v7_and_ordered() {
        let a = new_event_id();
        let b = new_event_id();
        assert_eq!(uuid::Uuid::parse_str(&a).unwrap().get_version_num(), 7);
        assert!(a < b);
    }

    #[test]
    fn schema_names_every_essential_field() {
        let s = json_schema().to_string();
        for f in [
            "time",
            "agent_id",
            "session_id",
            "tool_invoked",
            "parameters_used",
            "response_summary",
            "user_identity",
            "schema_version",
            "event_id",
            "seq",
        ] {
            assert!(s.contains(&format!("\"{f}\"")), "schema lacks {f}");
        }
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let mut v = serde_json::to_value(Event::new(EventKind::SessionStart)).unwrap();
        v["surprise"] = Value::Bool(true);
        assert!(serde_json::from_value::<Event>(v).is_err());
    }
}
