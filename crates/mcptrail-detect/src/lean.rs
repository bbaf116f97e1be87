//! Reading ledger lines for detection: only the members the active rules read are built,
//! the rest is skipped over without allocating (serde's `IgnoredAny`, `&RawValue`).
//!
//! A full parse of a ~1 KB event into [`Event`] allocates a dozen strings and a few maps
//! that no rule looks at (hashes, previews, process ids, trace ids, `prev_hash`, the
//! arguments of most calls…). [`Needs`] says, from the compiled rules and the monitors,
//! which optional members are read; [`parse`] builds an `Event` with those and leaves the
//! others empty. Whatever a rule can name is built when a rule names it, so the alerts are
//! those of a full parse; the identity copied onto an alert (`user_identity`, `server` with
//! its command line) is filled in from a full parse of the triggering line when an alert is
//! raised ([`crate::Detector::observe_line`]).
//!
//! Lines are checked less strictly than by [`Event`]'s own `Deserialize` (unknown members
//! are skipped, not refused); `mcptrail verify` is the check of the ledger's shape.

use std::borrow::Cow;

use mcptrail_event::{
    Catalog, Direction, Event, EventKind, HttpDetail, PeerInfo, Redaction, ResponseSummary,
    ServerInfo, SessionDetail, Status, UserIdentity,
};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::field::Path;
use crate::rules::RuleSet;

/// Which optional members of an event the rules and monitors read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    user: bool,
    client: bool,
    host: bool,
    trace: bool,
    request_event_id: bool,
    resource_uri: bool,
    prompt_name: bool,
    tool_schema_hash: bool,
    duration: bool,
    bytes_in: bool,
    redactions: bool,
    catalog: bool,
    session: bool,
    http: bool,
    /// `parameters_used` of every event.
    params: bool,
    /// `parameters_used` of `tools/call` requests (argument shapes of the baselines).
    call_params: bool,
}

impl Needs {
    /// Everything: a lean parse is then a full one (less the integrity members).
    pub fn all() -> Needs {
        Needs {
            user: true,
            client: true,
            host: true,
            trace: true,
            request_event_id: true,
            resource_uri: true,
            prompt_name: true,
            tool_schema_hash: true,
            duration: true,
            bytes_in: true,
            redactions: true,
            catalog: true,
            session: true,
            http: true,
            params: true,
            call_params: true,
        }
    }

    /// What learning a baseline reads ([`crate::Learner`]).
    pub fn for_learning() -> Needs {
        Needs {
            call_params: true,
            ..Needs::default()
        }
    }

    /// What `rules` (and their monitors) read.
    pub fn of(rules: &RuleSet) -> Needs {
        let mut n = Needs::default();
        let mut paths = Vec::new();
        for r in &rules.rules {
            r.paths(&mut paths);
            if r.uses_catalog() {
                n.catalog = true;
            }
        }
        for p in paths {
            match p {
                Path::UserPrincipal | Path::UserSource => n.user = true,
                Path::ClientName | Path::ClientVersion => n.client = true,
                Path::Host => n.host = true,
                Path::TraceId => n.trace = true,
                Path::RequestEventId => n.request_event_id = true,
                Path::ResourceUri => n.resource_uri = true,
                Path::PromptName => n.prompt_name = true,
                Path::ToolSchemaHash => n.tool_schema_hash = true,
                Path::DurationMs => n.duration = true,
                Path::BytesIn => n.bytes_in = true,
                Path::RedactionRules => n.redactions = true,
                Path::CatalogList
                | Path::CatalogChanged
                | Path::CatalogAdded
                | Path::CatalogRemoved => n.catalog = true,
                Path::EndReason => n.session = true,
                Path::HttpRoute
                | Path::HttpClientAddress
                | Path::HttpStatus
                | Path::HttpSessionId => n.http = true,
                Path::Parameters(_) => n.params = true,
                _ => {}
            }
        }
        if rules
            .monitors
            .enabled
            .contains(crate::anomaly::ARGUMENT_SHAPE)
        {
            n.call_params = true;
        }
        n
    }

    /// Whether alerts raised on a lean event must have their identity (`user_identity`,
    /// `server` with its command line) filled in from a full parse of the line.
    pub(crate) fn skips_identity(&self) -> bool {
        true
    }
}

/// The server as rules read it: no command line.
#[derive(Deserialize)]
struct LeanServer {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    version: Option<String>,
    transport: String,
    #[serde(default)]
    url: Option<String>,
}

/// The response summary as rules read it: no preview, no hash.
#[derive(Deserialize)]
struct LeanSummary {
    status: Status,
    #[serde(default)]
    is_error: bool,
    #[serde(default)]
    error_code: Option<i64>,
    #[serde(default)]
    size: u64,
}

#[derive(Deserialize)]
struct Lean<'a> {
    #[serde(borrow)]
    event_id: Cow<'a, str>,
    seq: u64,
    #[serde(borrow)]
    time: Cow<'a, str>,
    kind: EventKind,
    #[serde(borrow, default)]
    user_identity: Option<&'a RawValue>,
    #[serde(borrow, default)]
    agent_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    client: Option<&'a RawValue>,
    #[serde(borrow, default)]
    host: Option<Cow<'a, str>>,
    #[serde(default)]
    server: Option<LeanServer>,
    #[serde(borrow, default)]
    session_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    trace_id: Option<Cow<'a, str>>,
    #[serde(default)]
    direction: Option<Direction>,
    #[serde(borrow, default)]
    method: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    request_event_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    tool_invoked: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    parameters_used: Option<&'a RawValue>,
    #[serde(borrow, default)]
    resource_uri: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    prompt_name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    tool_schema_hash: Option<Cow<'a, str>>,
    #[serde(default)]
    response_summary: Option<LeanSummary>,
    #[serde(default)]
    duration_ms: Option<f64>,
    #[serde(default)]
    bytes_in: Option<u64>,
    #[serde(default)]
    bytes_out: Option<u64>,
    #[serde(default)]
    labels: Vec<String>,
    #[serde(borrow, default)]
    redactions: Option<&'a RawValue>,
    #[serde(borrow, default)]
    catalog: Option<&'a RawValue>,
    #[serde(borrow, default)]
    session: Option<&'a RawValue>,
    #[serde(default)]
    detail: Option<serde_json::Value>,
    #[serde(borrow, default)]
    http: Option<&'a RawValue>,
}

fn own(c: Option<Cow<'_, str>>, want: bool) -> Option<String> {
    if want {
        c.map(Cow::into_owned)
    } else {
        None
    }
}

fn sub<T: serde::de::DeserializeOwned>(
    raw: Option<&RawValue>,
    want: bool,
) -> Result<Option<T>, serde_json::Error> {
    match raw {
        Some(r) if want && r.get() != "null" => serde_json::from_str(r.get()).map(Some),
        _ => Ok(None),
    }
}

/// Parse a ledger line into an [`Event`] holding what `needs` asks for.
pub fn parse(line: &[u8], needs: &Needs) -> Result<Event, serde_json::Error> {
    // One UTF-8 check of the whole line (vectorised), then a `&str` reader, which does not
    // check every string it borrows again.
    let text =
        std::str::from_utf8(line).map_err(<serde_json::Error as serde::de::Error>::custom)?;
    let l: Lean<'_> = serde_json::from_str(text)?;
    // Session-level events name who a session is (silence alerts copy it): read in full.
    // They are a few in a hundred.
    if matches!(
        l.kind,
        EventKind::SessionStart | EventKind::SessionEnd | EventKind::SystemHeartbeat
    ) {
        return serde_json::from_str(text);
    }
    // Not `Event::new`: that mints an id and reads the clock.
    let mut e = Event {
        kind: l.kind,
        ..Event::default()
    };
    e.event_id = l.event_id.into_owned();
    e.seq = l.seq;
    e.time = l.time.into_owned();
    e.user_identity = sub::<UserIdentity>(l.user_identity, needs.user)?;
    e.agent_id = own(l.agent_id, true);
    e.client = sub::<PeerInfo>(l.client, needs.client)?;
    e.host = own(l.host, needs.host);
    e.server = l.server.map(|s| ServerInfo {
        name: s.name,
        version: s.version,
        transport: s.transport,
        command: Vec::new(),
        url: s.url,
    });
    e.session_id = own(l.session_id, true);
    e.trace_id = own(l.trace_id, needs.trace);
    e.direction = l.direction;
    e.method = own(l.method, true);
    e.request_event_id = own(l.request_event_id, needs.request_event_id);
    e.tool_invoked = own(l.tool_invoked, true);
    let params = needs.params
        || (needs.call_params
            && l.kind == EventKind::McpRequest
            && e.method.as_deref() == Some("tools/call"));
    e.parameters_used = sub(l.parameters_used, params)?;
    e.resource_uri = own(l.resource_uri, needs.resource_uri);
    e.prompt_name = own(l.prompt_name, needs.prompt_name);
    e.tool_schema_hash = own(l.tool_schema_hash, needs.tool_schema_hash);
    e.response_summary = l.response_summary.map(|r| ResponseSummary {
        status: r.status,
        is_error: r.is_error,
        error_code: r.error_code,
        error_message: None,
        size: r.size,
        sha256: None,
        preview: None,
        content_types: Vec::new(),
    });
    e.duration_ms = if needs.duration { l.duration_ms } else { None };
    e.bytes_in = if needs.bytes_in { l.bytes_in } else { None };
    e.bytes_out = l.bytes_out;
    e.labels = l.labels;
    e.redactions = sub::<Vec<Redaction>>(l.redactions, needs.redactions)?.unwrap_or_default();
    let catalog_kind = matches!(l.kind, EventKind::ToolCatalog | EventKind::ToolChanged);
    e.catalog = sub::<Catalog>(l.catalog, needs.catalog && catalog_kind)?;
    e.session = sub::<SessionDetail>(l.session, needs.session)?;
    e.detail = l.detail;
    e.http = sub::<HttpDetail>(l.http, needs.http)?;
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lean_event_has_what_the_rules_read() {
        let mut full = Event::new(EventKind::McpResponse);
        full.event_id = "e1".into();
        full.seq = 7;
        full.time = "2026-11-25T10:00:00Z".into();
        full.session_id = Some("s\"1".into());
        full.agent_id = Some("a".into());
        full.method = Some("tools/call".into());
        full.tool_invoked = Some("read".into());
        full.duration_ms = Some(12.5);
        full.labels = vec!["pii".into()];
        full.response_summary = Some(ResponseSummary {
            status: Status::Error,
            is_error: true,
            error_code: Some(-32000),
            error_message: Some("no".into()),
            size: 99,
            sha256: Some("ab".into()),
            preview: Some("{\"x\": \"\\u00e9\"}".into()),
            content_types: vec!["text".into()],
        });
        full.user_identity = Some(UserIdentity {
            principal: "tok".into(),
            source: "os".into(),
            ..Default::default()
        });
        full.parameters_used = Some(serde_json::json!({"path": "/x"}));
        full.prev_hash = "00".repeat(32);
        let line = serde_json::to_vec(&full).unwrap();
        let lean = parse(&line, &Needs::default()).unwrap();
        assert_eq!(lean.event_id, "e1");
        assert_eq!(lean.seq, 7);
        assert_eq!(lean.session_id.as_deref(), Some("s\"1"), "escapes are read");
        assert_eq!(lean.response_summary.as_ref().unwrap().size, 99);
        assert_eq!(
            lean.response_summary.as_ref().unwrap().status,
            Status::Error
        );
        assert!(lean.response_summary.as_ref().unwrap().preview.is_none());
        assert!(lean.user_identity.is_none() && lean.parameters_used.is_none());
        assert_eq!(lean.duration_ms, None);
        let all = parse(&line, &Needs::all()).unwrap();
        assert_eq!(all.user_identity, full.user_identity);
        assert_eq!(all.parameters_used, full.parameters_used);
        assert_eq!(all.duration_ms, Some(12.5));
        assert!(parse(b"{\"seq\": 1}", &Needs::all()).is_err());
        assert!(parse(b"not json", &Needs::all()).is_err());
    }
}
