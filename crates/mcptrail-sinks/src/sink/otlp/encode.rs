//! A batch of ledger records → the three OTLP export requests (traces, metrics, logs).
//!
//! This file owns what the signals share: parsing each record once into an [`EventView`],
//! grouping events by resource (service, host, agent, server and its tool-catalog hash),
//! trace and span ids, and the small bounded memory kept across batches (tool arguments of
//! requests still waiting for their response, the latest tool catalog hash per session).
//! [`super::traces`], [`super::metrics`] and [`super::logs`] write the messages.

use std::collections::{HashMap, VecDeque};

use sha2::{Digest, Sha256};

use super::config::Signal;
use super::proto::Writer;
use super::view::EventView;
use crate::tail::ShipRecord;

/// Settings the encoders read.
#[derive(Debug, Clone)]
pub(crate) struct EncodeSettings {
    /// Resource attribute `service.name`.
    pub service_name: String,
    /// Tool arguments and results on spans, payload members in log bodies.
    pub include_payloads: bool,
}

/// One record of the batch, parsed.
pub(crate) struct Item<'a> {
    /// The stored line and its head fields.
    pub rec: &'a ShipRecord,
    /// The parsed fields; `None` when the line does not have the shape of an event (it is
    /// still exported as a log record, with its body as stored).
    pub view: Option<EventView<'a>>,
    /// `time` as Unix nanoseconds (0 when unreadable).
    pub time_ns: u64,
    /// Index into [`Batch::resources`].
    pub resource: usize,
}

/// The resource attributes of a group of events.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct ResourceKey {
    pub host: Option<String>,
    pub agent_id: Option<String>,
    pub tap_version: Option<String>,
    pub server_name: Option<String>,
    pub server_version: Option<String>,
    pub server_transport: Option<String>,
    pub tool_catalog_hash: Option<String>,
}

impl ResourceKey {
    /// The attributes in a fixed order (the order of the struct's fields).
    fn fields(&self) -> [Option<&str>; 7] {
        [
            self.host.as_deref(),
            self.agent_id.as_deref(),
            self.tap_version.as_deref(),
            self.server_name.as_deref(),
            self.server_version.as_deref(),
            self.server_transport.as_deref(),
            self.tool_catalog_hash.as_deref(),
        ]
    }

    fn from_fields(f: [Option<&str>; 7]) -> Self {
        let own = |s: Option<&str>| s.map(str::to_string);
        ResourceKey {
            host: own(f[0]),
            agent_id: own(f[1]),
            tap_version: own(f[2]),
            server_name: own(f[3]),
            server_version: own(f[4]),
            server_transport: own(f[5]),
            tool_catalog_hash: own(f[6]),
        }
    }
}

/// A parsed batch.
pub(crate) struct Batch<'a> {
    pub items: Vec<Item<'a>>,
    pub resources: Vec<ResourceKey>,
    /// Earliest and latest event time (ns): the interval of the batch's metric points.
    pub span_ns: (u64, u64),
}

/// Tool arguments of requests seen, kept until their response (or evicted, oldest first,
/// beyond the bounds): a response in a later batch still gets them when the shipper has
/// not restarted in between.
#[derive(Debug, Default)]
pub(crate) struct PendingArguments {
    by_request: HashMap<String, String>,
    order: VecDeque<String>,
    bytes: usize,
}

/// Most requests whose arguments are kept.
const MAX_PENDING_ARGUMENTS: usize = 10_000;
/// Most bytes of arguments kept.
const MAX_PENDING_ARGUMENT_BYTES: usize = 16 << 20;
/// Most sessions whose latest tool catalog hash is kept.
const MAX_CATALOG_SESSIONS: usize = 10_000;

impl PendingArguments {
    fn insert(&mut self, request_event_id: &str, arguments: &str) {
        if arguments.len() > MAX_PENDING_ARGUMENT_BYTES / 4 {
            return;
        }
        self.bytes += arguments.len();
        if let Some(old) = self
            .by_request
            .insert(request_event_id.to_string(), arguments.to_string())
        {
            self.bytes -= old.len();
        } else {
            self.order.push_back(request_event_id.to_string());
        }
        while self.by_request.len() > MAX_PENDING_ARGUMENTS
            || self.bytes > MAX_PENDING_ARGUMENT_BYTES
        {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some(v) = self.by_request.remove(&oldest) {
                self.bytes -= v.len();
            }
        }
    }

    /// The arguments of a request, if still held.
    pub(crate) fn get(&self, request_event_id: &str) -> Option<&str> {
        self.by_request.get(request_event_id).map(String::as_str)
    }

    fn forget(&mut self, request_event_id: &str) {
        if let Some(v) = self.by_request.remove(request_event_id) {
            self.bytes -= v.len();
        }
        // `order` keeps the id until it reaches the front; removing a missing key is a no-op.
        if self.order.len() > 2 * MAX_PENDING_ARGUMENTS {
            let live = &self.by_request;
            self.order.retain(|id| live.contains_key(id));
        }
    }

    /// Requests whose arguments are held.
    pub(crate) fn len(&self) -> usize {
        self.by_request.len()
    }
}

/// State an OTLP sink keeps across batches (bounded; lost on restart, which only means an
/// attribute fewer, never an event fewer).
#[derive(Debug, Default)]
pub(crate) struct CrossBatch {
    /// Arguments of requests awaiting their response (only with `include_payloads`).
    pub arguments: PendingArguments,
    catalog_by_session: HashMap<String, String>,
    catalog_order: VecDeque<String>,
}

impl CrossBatch {
    fn note_catalog(&mut self, session: &str, hash: &str) {
        if self
            .catalog_by_session
            .insert(session.to_string(), hash.to_string())
            .is_none()
        {
            self.catalog_order.push_back(session.to_string());
            if self.catalog_order.len() > MAX_CATALOG_SESSIONS {
                if let Some(old) = self.catalog_order.pop_front() {
                    self.catalog_by_session.remove(&old);
                }
            }
        }
    }
}

/// Parse a batch and update the cross-batch memory from it.
pub(crate) fn parse_batch<'a>(
    records: &'a [ShipRecord],
    settings: &EncodeSettings,
    memory: &mut CrossBatch,
) -> Batch<'a> {
    let mut items = Vec::with_capacity(records.len());
    let mut resources: Vec<ResourceKey> = Vec::new();
    let (mut lo, mut hi) = (u64::MAX, 0u64);
    for rec in records {
        let view: Option<EventView<'_>> = serde_json::from_slice(&rec.line).ok();
        let time_ns = unix_nanos(view.as_ref().map_or(rec.time.as_str(), |v| &v.time));
        if time_ns != 0 {
            lo = lo.min(time_ns);
            hi = hi.max(time_ns);
        }
        // The resource's attributes, borrowed: an owned key is made only for a new resource.
        let mut probe: [Option<&str>; 7] = [None; 7];
        if let Some(v) = &view {
            if let (Some(c), Some(s)) = (&v.catalog, &v.session_id) {
                if c.list == "tools" {
                    memory.note_catalog(s, &c.hash);
                }
            }
            if settings.include_payloads && v.kind == "mcp.request" {
                if let Some(p) = v.parameters_used {
                    memory.arguments.insert(&v.event_id, p.get());
                }
            }
            let server = v.server.as_ref();
            probe = [
                v.host.as_deref(),
                v.agent_id.as_deref(),
                v.process.as_ref().and_then(|p| p.tap_version.as_deref()),
                server.and_then(|s| s.name.as_deref()),
                server.and_then(|s| s.version.as_deref()),
                server.and_then(|s| s.transport.as_deref()),
                v.session_id
                    .as_deref()
                    .and_then(|s| memory.catalog_by_session.get(s))
                    .map(String::as_str),
            ];
        }
        let resource = match resources.iter().position(|r| r.fields() == probe) {
            Some(i) => i,
            None => {
                resources.push(ResourceKey::from_fields(probe));
                resources.len() - 1
            }
        };
        items.push(Item {
            rec,
            view,
            time_ns,
            resource,
        });
    }
    if lo > hi {
        let now = unix_nanos_now();
        (lo, hi) = (now, now);
    }
    Batch {
        items,
        resources,
        span_ns: (lo, hi),
    }
}

/// Drop the arguments of requests answered in this batch (after the spans used them).
pub(crate) fn forget_answered(batch: &Batch<'_>, memory: &mut CrossBatch) {
    if memory.arguments.len() == 0 {
        return;
    }
    for it in &batch.items {
        if let Some(id) = it
            .view
            .as_ref()
            .filter(|v| v.kind == "mcp.response")
            .and_then(|v| v.request_event_id.as_deref())
        {
            memory.arguments.forget(id);
        }
    }
}

/// Write the `Resource` (field 1 of `Resource{Spans,Metrics,Logs}`).
pub(crate) fn write_resource(w: &mut Writer, key: &ResourceKey, settings: &EncodeSettings) {
    w.message(1, |r| {
        r.kv_str(1, "service.name", &settings.service_name);
        if let Some(v) = &key.tap_version {
            r.kv_str(1, "service.version", v);
        }
        if let Some(v) = &key.host {
            r.kv_str(1, "host.name", v);
        }
        if let Some(v) = &key.agent_id {
            r.kv_str(1, "mcptrail.agent.id", v);
        }
        if let Some(v) = &key.server_name {
            r.kv_str(1, "mcptrail.server.name", v);
        }
        if let Some(v) = &key.server_version {
            r.kv_str(1, "mcptrail.server.version", v);
        }
        if let Some(v) = &key.server_transport {
            r.kv_str(1, "mcptrail.server.transport", v);
        }
        if let Some(v) = &key.tool_catalog_hash {
            r.kv_str(1, "mcptrail.server.tool_catalog.hash", v);
        }
    });
}

/// Write the `InstrumentationScope` (field 1 of `Scope{Spans,Metrics,Logs}`).
pub(crate) fn write_scope(w: &mut Writer) {
    w.message(1, |s| {
        s.string(1, "mcptrail");
        s.string(2, env!("CARGO_PKG_VERSION"));
    });
}

/// Write one `Export*ServiceRequest`: per resource, the scope and the items `body` writes
/// (`body` returns false when it wrote nothing for that resource, which is then left out).
/// Returns `None` when no resource had anything.
pub(crate) fn write_request(
    batch: &Batch<'_>,
    settings: &EncodeSettings,
    mut body: impl FnMut(&mut Writer, usize) -> bool,
) -> Option<Vec<u8>> {
    let mut w = Writer {
        buf: Vec::with_capacity(batch.items.len() * 512),
    };
    let mut any = false;
    for (i, key) in batch.resources.iter().enumerate() {
        let mark = w.buf.len();
        let mut wrote = false;
        w.message(1, |rs| {
            write_resource(rs, key, settings);
            rs.message(2, |scope| {
                write_scope(scope);
                wrote = body(scope, i);
            });
        });
        if wrote {
            any = true;
        } else {
            w.buf.truncate(mark);
        }
    }
    any.then_some(w.buf)
}

/// The ids of the two spans of a request/response pair and of its trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SpanIds {
    pub trace: [u8; 16],
    /// The side facing the requester (kind SERVER).
    pub server: [u8; 8],
    /// The side facing the responder (kind CLIENT), child of `server`.
    pub client: [u8; 8],
    /// The requester's span (`params._meta.traceparent` or the HTTP `traceparent`), parent
    /// of `server`.
    pub parent: Option<[u8; 8]>,
}

/// Ids for the request whose event id is `request_key`. Trace context the tap recorded is
/// used as is (so the spans join the agent's trace, and the span the gateway announced
/// upstream is the CLIENT span's id); what is missing is derived from the request's event id,
/// so sending a batch again yields the same ids.
pub(crate) fn span_ids(v: &EventView<'_>, request_key: &str) -> SpanIds {
    let (trace, server) = trace_and_server_ids(v, request_key);
    let client = v
        .span_id
        .as_deref()
        .and_then(hex_id::<8>)
        .unwrap_or_else(|| first::<8>(&derived_id(b"client", request_key)));
    let parent = v.parent_span_id.as_deref().and_then(hex_id::<8>);
    SpanIds {
        trace,
        server,
        client,
        parent,
    }
}

/// The trace id and the SERVER span's id of [`span_ids`] (what a log record links to),
/// without deriving the CLIENT span's.
pub(crate) fn trace_and_server_ids(v: &EventView<'_>, request_key: &str) -> ([u8; 16], [u8; 8]) {
    let trace = v
        .trace_id
        .as_deref()
        .and_then(hex_id::<16>)
        .unwrap_or_else(|| first::<16>(&derived_id(b"trace", request_key)));
    (trace, first::<8>(&derived_id(b"server", request_key)))
}

/// SHA-256 of `mcptrail-otlp/<label>/<request event id>`: ids that do not change when a
/// batch is sent again.
fn derived_id(label: &[u8], request_key: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"mcptrail-otlp/");
    h.update(label);
    h.update(b"/");
    h.update(request_key.as_bytes());
    h.finalize().into()
}

fn first<const N: usize>(h: &[u8; 32]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&h[..N]);
    out
}

/// A W3C id in lowercase or uppercase hex of exactly `N` bytes, not all zero.
pub(crate) fn hex_id<const N: usize>(s: &str) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    if s.len() != 2 * N || hex::decode_to_slice(s, &mut out).is_err() {
        return None;
    }
    (out != [0u8; N]).then_some(out)
}

/// Unix nanoseconds of an RFC 3339 time (0 when unreadable).
pub(crate) fn unix_nanos(time: &str) -> u64 {
    fast_unix_nanos(time).unwrap_or_else(|| {
        mcptrail_event::parse_rfc3339(time)
            .ok()
            .and_then(|t| u64::try_from(t.unix_timestamp_nanos()).ok())
            .unwrap_or(0)
    })
}

/// The tap's own format, `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`, without a general parser.
fn fast_unix_nanos(t: &str) -> Option<u64> {
    let b = t.as_bytes();
    if b.len() != 30 || b[4] != b'-' || b[10] != b'T' || b[19] != b'.' || b[29] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u64> {
        b[r].iter().try_fold(0u64, |acc, c| {
            c.is_ascii_digit().then(|| acc * 10 + u64::from(c - b'0'))
        })
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s, ns) = (num(11..13)?, num(14..16)?, num(17..19)?, num(20..29)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, mo) = (y as i64 - i64::from(mo <= 2), mo as i64);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (mo + if mo > 2 { -3 } else { 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = u64::try_from(days).ok()? * 86_400 + h * 3600 + mi * 60 + s;
    Some(secs * 1_000_000_000 + ns)
}

/// Now, in Unix nanoseconds.
pub(crate) fn unix_nanos_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The side of a tap an MCP peer talks to: `pipe` for stdio, `tcp` for HTTP.
pub(crate) fn transports(v: &EventView<'_>) -> (&'static str, &'static str) {
    let client_side = if v.http.is_some() { "tcp" } else { "pipe" };
    let server_side = match v.server.as_ref().and_then(|s| s.transport.as_deref()) {
        Some("stdio") => "pipe",
        Some(_) => "tcp",
        None => client_side,
    };
    (client_side, server_side)
}

/// `host` and `port` of a URL or of `host:port` (IPv6 in brackets).
pub(crate) fn host_port(s: &str) -> Option<(&str, Option<u16>)> {
    let rest = s.split_once("://").map_or(s, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if authority.is_empty() {
        return None;
    }
    if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        return Some((host, after.strip_prefix(':').and_then(|p| p.parse().ok())));
    }
    match authority.rsplit_once(':') {
        Some((h, p)) => Some((h, p.parse().ok())),
        None => Some((authority, None)),
    }
}

/// The signals in the order they are sent.
pub(crate) fn ordered(signals: &[Signal]) -> Vec<Signal> {
    Signal::ALL
        .into_iter()
        .filter(|s| signals.contains(s))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_taps_time_format_parses_like_the_general_parser() {
        for t in [
            "2026-11-25T22:04:45.304455123Z",
            "1970-01-01T00:00:00.000000001Z",
            "2000-02-29T23:59:59.999999999Z",
            "2100-03-01T00:00:00.000000000Z",
        ] {
            let general = mcptrail_event::parse_rfc3339(t)
                .unwrap()
                .unix_timestamp_nanos() as u64;
            assert_eq!(fast_unix_nanos(t), Some(general), "{t}");
            assert_eq!(unix_nanos(t), general);
        }
        assert_eq!(
            unix_nanos("2026-11-25T22:04:45Z"),
            1_795_644_285_000_000_000
        );
        assert_eq!(unix_nanos("yesterday"), 0);
    }

    #[test]
    fn ids_come_from_trace_context_or_from_the_request_event_id() {
        let line = r#"{"event_id":"e1","seq":1,"time":"t","kind":"mcp.response","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","span_id":"00f067aa0ba902b7","parent_span_id":"1111111111111111"}"#;
        let v: EventView<'_> = serde_json::from_str(line).unwrap();
        let ids = span_ids(&v, "req-1");
        assert_eq!(hex::encode(ids.trace), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex::encode(ids.client), "00f067aa0ba902b7");
        assert_eq!(
            ids.parent.map(hex::encode).as_deref(),
            Some("1111111111111111")
        );
        let bare: EventView<'_> =
            serde_json::from_str(r#"{"event_id":"e1","seq":1,"time":"t","kind":"mcp.response"}"#)
                .unwrap();
        let a = span_ids(&bare, "req-1");
        assert_eq!(a, span_ids(&bare, "req-1"), "deterministic");
        assert_ne!(a.trace, span_ids(&bare, "req-2").trace);
        assert_ne!(a.server, a.client);
        assert_eq!(a.parent, None);
        assert_eq!(hex_id::<8>("0000000000000000"), None);
    }

    #[test]
    fn addresses() {
        assert_eq!(
            host_port("http://127.0.0.1:8080/mcp"),
            Some(("127.0.0.1", Some(8080)))
        );
        assert_eq!(host_port("[::1]:5000"), Some(("::1", Some(5000))));
        assert_eq!(
            host_port("https://u:p@h.example/x"),
            Some(("h.example", None))
        );
    }

    #[test]
    fn pending_arguments_stay_bounded() {
        let mut p = PendingArguments::default();
        for i in 0..(MAX_PENDING_ARGUMENTS + 10) {
            p.insert(&format!("r{i}"), "{}");
        }
        assert_eq!(p.len(), MAX_PENDING_ARGUMENTS);
        assert_eq!(p.get("r0"), None, "the oldest went first");
        assert_eq!(
            p.get(&format!("r{}", MAX_PENDING_ARGUMENTS + 9)),
            Some("{}")
        );
        p.forget("r100");
        assert_eq!(p.get("r100"), None);
    }
}
