//! The recorder: turns frames seen by a tap into audit events. It owns the session's state:
//! who the peers are (from `initialize`), which requests are in flight in each direction,
//! the latest tool catalog, and the counters reported by heartbeats and `session.end`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Instant, SystemTime};

use mcptrail_event::{
    format_rfc3339_nanos, new_event_id, sha256_hex, Catalog, CatalogItem, Digest256, Direction,
    Event, EventKind, Flag, MalformedDetail, PeerInfo, ProcessInfo, ResponseSummary, ServerInfo,
    SessionDetail, Status,
};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::framing::{Frame, FrameBody, FrameContext};
use crate::jsonrpc::{classify, Malformed, Message};
use crate::{Identity, TapConfig};

/// What the tap knows about the session before any message.
#[derive(Debug, Clone)]
pub struct SessionContext {
    /// Session id (UUIDv7).
    pub session_id: String,
    /// `--agent-id`, which wins over the client name.
    pub agent_id: Option<String>,
    /// OS identity.
    pub identity: Identity,
    /// The server as configured (transport, command).
    pub server: ServerInfo,
    /// Process ids.
    pub process: ProcessInfo,
}

/// How a session ended, for `session.end`.
#[derive(Debug, Clone, Default)]
pub struct SessionEnd {
    /// `client_eof`, `client_gone`, `server_exited`, `signal`, `tap_error`.
    pub reason: String,
    /// Server exit code.
    pub exit_code: Option<i32>,
    /// Server terminating signal.
    pub exit_signal: Option<String>,
    /// `sigterm` or `sigkill` when the tap had to stop the server.
    pub forced_stop: Option<String>,
}

#[derive(Debug)]
struct Pending {
    event_id: String,
    method: String,
    tool: Option<String>,
    tool_schema_hash: Option<String>,
    resource_uri: Option<String>,
    prompt_name: Option<String>,
    trace_id: Option<String>,
    span_id: Option<String>,
    parent_span_id: Option<String>,
    had_cursor: bool,
    at: Instant,
    bytes: u64,
    closed: Option<Status>,
    request_id: Option<Value>,
}

/// Turns frames into events. Not thread-safe; one per session.
#[derive(Debug)]
pub struct Recorder {
    cfg: TapConfig,
    base: Event,
    agent_fixed: bool,
    client_capabilities: Option<Value>,
    pending: HashMap<(Direction, String), VecDeque<Pending>>,
    catalogs: HashMap<String, BTreeMap<String, String>>,
    started: Instant,
    last_heartbeat: Instant,
    messages_in: u64,
    messages_out: u64,
    bytes_in: u64,
    bytes_out: u64,
    /// Per direction: the read the last frame came from, and the events made from frames of
    /// that read (named in an `undelivered` error if delivering that read fails).
    last_chunk: HashMap<Direction, (u64, Vec<String>)>,
    /// Tool calls answered lately: (request event id, tool, sent, answered). A `net.egress`
    /// record arrives when its connection closes, usually after the call that opened it was
    /// answered; this is how it still finds that call.
    recent_calls: VecDeque<(String, Option<String>, Instant, Instant)>,
    /// Events made for this session so far (every one goes through [`Recorder::event`]);
    /// heartbeats report it as `events_recorded`, so a detector can tell a ledger that lost
    /// or dropped some of them.
    made: std::cell::Cell<u64>,
}

/// Answered tool calls kept for linking egress records.
const RECENT_CALLS: usize = 64;

const KNOWN_METHODS: &[&str] = &[
    "initialize",
    "ping",
    "tools/list",
    "tools/call",
    "prompts/list",
    "prompts/get",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "logging/setLevel",
    "completion/complete",
    "sampling/createMessage",
    "elicitation/create",
    "roots/list",
    "tasks/get",
    "tasks/result",
    "tasks/list",
    "tasks/cancel",
    "notifications/initialized",
    "notifications/cancelled",
    "notifications/progress",
    "notifications/message",
    "notifications/resources/updated",
    "notifications/resources/list_changed",
    "notifications/tools/list_changed",
    "notifications/prompts/list_changed",
    "notifications/roots/list_changed",
    "notifications/elicitation/complete",
    "notifications/tasks/status",
];

impl Recorder {
    /// A recorder for one session.
    pub fn new(cfg: TapConfig, ctx: SessionContext) -> Self {
        let now = Instant::now();
        let mut base = Event::new(EventKind::McpRequest);
        base.user_identity = Some(ctx.identity.user);
        base.host = Some(ctx.identity.host);
        base.agent_id = ctx.agent_id.clone();
        base.session_id = Some(ctx.session_id);
        base.server = Some(ctx.server);
        base.process = Some(ctx.process);
        Recorder {
            cfg,
            base,
            agent_fixed: ctx.agent_id.is_some(),
            client_capabilities: None,
            pending: HashMap::new(),
            catalogs: HashMap::new(),
            started: now,
            last_heartbeat: now,
            messages_in: 0,
            messages_out: 0,
            bytes_in: 0,
            bytes_out: 0,
            last_chunk: HashMap::new(),
            recent_calls: VecDeque::new(),
            made: std::cell::Cell::new(0),
        }
    }

    /// A `net.egress` event for a connection the session's tool server made through the
    /// egress proxy, linked (`request_event_id`, `tool_invoked`) to the tool call that was in
    /// flight when the connection was opened, if one was.
    pub fn egress(&mut self, rec: &mcptrail_egress::EgressRecord, out: &mut Vec<Event>) {
        let mut e = self.event(EventKind::NetEgress, rec.opened_wall);
        rec.fill(&mut e);
        if let Some((id, tool)) = self.call_in_flight(rec.opened_at) {
            e.request_event_id = Some(id);
            e.tool_invoked = tool;
        }
        out.push(e);
    }

    /// The client's tool call that was open at `at`: the latest sent before it and not yet
    /// answered at that moment.
    fn call_in_flight(&self, at: Instant) -> Option<(String, Option<String>)> {
        let open = self
            .pending
            .iter()
            .filter(|((dir, _), _)| *dir == Direction::ClientToServer)
            .flat_map(|(_, q)| q.iter())
            .filter(|p| p.closed.is_none() && p.method == "tools/call" && p.at <= at)
            .map(|p| (p.at, &p.event_id, &p.tool));
        let answered = self
            .recent_calls
            .iter()
            .filter(|(_, _, sent, done)| *sent <= at && at <= *done)
            .map(|(id, tool, sent, _)| (*sent, id, tool));
        open.chain(answered)
            .max_by_key(|(sent, _, _)| *sent)
            .map(|(_, id, tool)| (id.clone(), tool.clone()))
    }

    /// Who later session-level events (heartbeats, `session.end`) are attributed to, and the
    /// HTTP exchange that opened the session: an HTTP tap sets this from the request that
    /// opened it.
    pub fn set_context(&mut self, ctx: &FrameContext) {
        if let Some(u) = &ctx.user {
            self.base.user_identity = Some(u.clone());
        }
        if let Some(h) = &ctx.http {
            let mut h = h.clone();
            h.status = None;
            self.base.http = Some(h);
        }
    }

    /// Record the server's process id once it is known.
    pub fn set_server_pid(&mut self, pid: u32) {
        if let Some(p) = self.base.process.as_mut() {
            p.server_pid = Some(pid);
        }
    }

    fn event(&self, kind: EventKind, wall: SystemTime) -> Event {
        self.made.set(self.made.get() + 1);
        let mut e = self.base.clone();
        e.event_id = new_event_id();
        e.time = format_rfc3339_nanos(wall.into());
        e.kind = kind;
        e
    }

    /// The `session.start` event.
    pub fn session_start(&mut self) -> Event {
        let mut e = self.event(EventKind::SessionStart, SystemTime::now());
        // When heartbeats are due: silence detection judges the session by it before the
        // first heartbeat arrives.
        e.detail = Some(serde_json::json!({
            "heartbeat_interval_s": self.cfg.heartbeat_interval().as_secs(),
        }));
        e
    }

    /// The tap could not deliver read number `chunk` (`bytes` long) to the peer `direction`
    /// points at (its pipe closed). Messages completed in that read were already recorded;
    /// this names them, and says every later message that way never arrived either.
    pub fn delivery_failed(
        &mut self,
        direction: Direction,
        chunk: u64,
        bytes: u64,
        out: &mut Vec<Event>,
    ) {
        let undelivered_events = match self.last_chunk.remove(&direction) {
            Some((c, ids)) if c == chunk => ids,
            _ => Vec::new(),
        };
        let mut e = self.event(EventKind::SystemError, SystemTime::now());
        e.direction = Some(direction);
        let peer = match direction {
            Direction::ClientToServer => "server",
            Direction::ServerToClient => "client",
        };
        e.detail = Some(serde_json::json!({
            "error": "undelivered",
            "message": format!("the {peer} stopped reading: {bytes} bytes were not delivered; the events named here and every later message that way (flagged undelivered) never reached it"),
            "bytes": bytes,
            "undelivered_event_ids": undelivered_events,
        }));
        out.push(e);
    }

    /// Record the result of a scheduled self-verification: a `system.verify` event, and an
    /// `alert` when the ledger did not verify.
    pub fn self_verified(&mut self, check: &crate::selfcheck::SelfCheck, out: &mut Vec<Event>) {
        use mcptrail_ledger::Verdict;
        let wall = SystemTime::now();
        let verdict = match check.verdict {
            Some(Verdict::Intact) => "intact",
            Some(Verdict::Tampered) => "tampered",
            Some(Verdict::CannotVerify) => "cannot_verify",
            None => "error",
        };
        let problems: Vec<Value> = check
            .problems
            .iter()
            .map(|(class, text)| serde_json::json!({"class": class, "problem": text}))
            .collect();
        let mut e = self.event(EventKind::SystemVerify, wall);
        e.detail = Some(serde_json::json!({
            "verdict": verdict,
            "scope": "chain, segments, signed checkpoints and anchors (MACs need the seed: mcptrail verify --seed)",
            "records": check.records,
            "bytes": check.bytes,
            "checkpoints_verified": check.checkpoints_verified,
            "problem_count": check.problem_count,
            "problems": problems,
            "unchecked": check.unchecked,
            "duration_ms": check.duration.as_secs_f64() * 1000.0,
        }));
        out.push(e);
        if check.verdict != Some(Verdict::Intact) {
            let mut a = self.event(EventKind::Alert, wall);
            a.detail = Some(serde_json::json!({
                "rule": "ledger_integrity",
                "severity": if check.verdict == Some(Verdict::Tampered) { "critical" } else { "warning" },
                "summary": match check.verdict {
                    Some(Verdict::Tampered) => format!("the ledger does not verify: {} problem(s); run `mcptrail verify`", check.problem_count),
                    _ => "the ledger could not be fully verified; run `mcptrail verify`".to_string(),
                },
                "problems": problems,
                "unchecked": check.unchecked,
            }));
            out.push(a);
        }
    }

    /// Periodic work: heartbeats and request timeouts.
    pub fn tick(&mut self, now: Instant, out: &mut Vec<Event>) {
        let timeout = self.cfg.request_timeout();
        let wall = SystemTime::now();
        let mut timed_out = Vec::new();
        for ((dir, _), queue) in &mut self.pending {
            for p in queue.iter_mut().filter(|p| p.closed.is_none()) {
                if now.duration_since(p.at) >= timeout {
                    p.closed = Some(Status::Timeout);
                    timed_out.push((*dir, summary_without_response(p, Status::Timeout, now)));
                }
            }
        }
        for (dir, (e, _)) in timed_out {
            out.push(self.synthetic_response(dir, e, wall, Vec::new()));
        }
        if now.duration_since(self.last_heartbeat) >= self.cfg.heartbeat_interval() {
            self.last_heartbeat = now;
            let events_recorded = self.made.get();
            let mut e = self.event(EventKind::SystemHeartbeat, wall);
            e.detail = Some(serde_json::json!({
                "uptime_s": now.duration_since(self.started).as_secs(),
                "messages_in": self.messages_in,
                "messages_out": self.messages_out,
                "pending_requests": self.open_requests(),
                // For silence detection: when the next heartbeat is due, and how many events
                // of this session the tap made before this one.
                "interval_s": self.cfg.heartbeat_interval().as_secs(),
                "events_recorded": events_recorded,
            }));
            out.push(e);
        }
    }

    fn open_requests(&self) -> u64 {
        self.pending
            .values()
            .flatten()
            .filter(|p| p.closed.is_none())
            .count() as u64
    }

    /// Close the session: unanswered requests, then `session.end`.
    pub fn finish(&mut self, end: SessionEnd, out: &mut Vec<Event>) {
        let now = Instant::now();
        let wall = SystemTime::now();
        let mut unanswered = Vec::new();
        for ((dir, _), queue) in self.pending.drain() {
            for p in queue.into_iter().filter(|p| p.closed.is_none()) {
                unanswered.push((dir, summary_without_response(&p, Status::NoResponse, now)));
            }
        }
        unanswered.sort_by(|a, b| a.1 .0.request_event_id.cmp(&b.1 .0.request_event_id));
        let count = unanswered.len() as u64;
        for (dir, (e, _)) in unanswered {
            let ev = self.synthetic_response(dir, e, wall, vec![Flag::Unanswered]);
            out.push(ev);
        }
        let mut e = self.event(EventKind::SessionEnd, wall);
        e.session = Some(SessionDetail {
            end_reason: Some(end.reason),
            exit_code: end.exit_code,
            exit_signal: end.exit_signal,
            forced_stop: end.forced_stop,
            messages_in: Some(self.messages_in),
            messages_out: Some(self.messages_out),
            unanswered: Some(count),
            ..Default::default()
        });
        e.bytes_in = Some(self.bytes_in);
        e.bytes_out = Some(self.bytes_out);
        e.duration_ms = Some(now.duration_since(self.started).as_secs_f64() * 1000.0);
        out.push(e);
    }

    fn synthetic_response(
        &self,
        request_dir: Direction,
        partial: Event,
        wall: SystemTime,
        flags: Vec<Flag>,
    ) -> Event {
        let mut e = self.event(EventKind::McpResponse, wall);
        e.direction = Some(request_dir.reverse());
        e.method = partial.method;
        e.request_id = partial.request_id;
        e.request_event_id = partial.request_event_id;
        e.tool_invoked = partial.tool_invoked;
        e.tool_schema_hash = partial.tool_schema_hash;
        e.resource_uri = partial.resource_uri;
        e.prompt_name = partial.prompt_name;
        e.trace_id = partial.trace_id;
        e.parent_span_id = partial.parent_span_id;
        e.duration_ms = partial.duration_ms;
        e.bytes_in = partial.bytes_in;
        e.response_summary = partial.response_summary;
        e.flags = flags;
        e
    }

    /// Turn one frame into its events.
    pub fn on_frame(&mut self, frame: Frame, out: &mut Vec<Event>) {
        let dir = frame.direction;
        let size = match &frame.body {
            FrameBody::Line(l) | FrameBody::Unterminated(l) => l.len() as u64,
            FrameBody::TooLarge { size, .. } => *size,
        };
        match dir {
            Direction::ClientToServer => {
                self.messages_in += 1;
                self.bytes_in += size;
            }
            Direction::ServerToClient => {
                self.messages_out += 1;
                self.bytes_out += size;
            }
        }
        let start = out.len();
        match &frame.body {
            FrameBody::TooLarge {
                size,
                sha256,
                prefix,
            } => {
                let mut e = self.event(EventKind::Malformed, frame.wall);
                e.direction = Some(dir);
                e.malformed = Some(MalformedDetail {
                    reason: "too_large".into(),
                    error: Some(format!("message of {size} bytes exceeds tap.max_message_bytes ({}); forwarded unchanged, not parsed", self.cfg.max_message_bytes)),
                    digest: Digest256 { size: *size, sha256: sha256.clone() },
                    preview: Some(preview_bytes(prefix, self.cfg.preview_scan_chars())),
                });
                e.flags.push(Flag::TooLargeToParse);
                set_bytes(&mut e, dir, *size);
                out.push(e);
            }
            FrameBody::Line(line) | FrameBody::Unterminated(line) => {
                let unterminated = matches!(frame.body, FrameBody::Unterminated(_));
                match classify(line) {
                    Ok(messages) => {
                        for (msg, batch) in messages {
                            self.on_message(msg, batch, line, &frame, out);
                        }
                    }
                    Err(Malformed { reason, error }) => {
                        let mut e = self.event(EventKind::Malformed, frame.wall);
                        e.direction = Some(dir);
                        e.malformed = Some(MalformedDetail {
                            reason: if unterminated { "unterminated" } else { reason }.into(),
                            error: if unterminated {
                                Some(format!("stream ended inside a message ({reason})"))
                            } else {
                                error
                            },
                            digest: Digest256::of(line),
                            preview: Some(preview_bytes(line, self.cfg.preview_scan_chars())),
                        });
                        set_bytes(&mut e, dir, line.len() as u64);
                        out.push(e);
                    }
                }
            }
        }
        if frame.undelivered {
            for e in &mut out[start..] {
                e.flags.push(Flag::Undelivered);
            }
        }
        if let Some(ctx) = &frame.context {
            for e in &mut out[start..] {
                if let Some(u) = &ctx.user {
                    e.user_identity = Some(u.clone());
                }
                if let Some(h) = &ctx.http {
                    e.http = Some(h.clone());
                }
                e.flags.extend(ctx.flags.iter().copied());
            }
        }
        let chunk = self.last_chunk.entry(dir).or_default();
        if chunk.0 != frame.chunk {
            *chunk = (frame.chunk, Vec::new());
        }
        chunk
            .1
            .extend(out[start..].iter().map(|e| e.event_id.clone()));
    }

    fn on_message(
        &mut self,
        msg: Message<'_>,
        batch: bool,
        line: &[u8],
        frame: &Frame,
        out: &mut Vec<Event>,
    ) {
        let dir = frame.direction;
        match msg {
            Message::Request {
                id,
                method,
                params,
                irregular,
            } => {
                let mut e = self.event(EventKind::McpRequest, frame.wall);
                if method == "initialize" && dir == Direction::ClientToServer {
                    self.learn_client(params);
                    e.client = self.base.client.clone();
                    e.agent_id = self.base.agent_id.clone();
                    e.protocol_version = params_str(params, "protocolVersion");
                }
                e.direction = Some(dir);
                e.request_id = serde_json::from_str(id.get()).ok();
                self.describe_params(&mut e, &method, params);
                apply_trace(&mut e, frame);
                e.method = Some(method.clone());
                set_bytes(&mut e, dir, line.len() as u64);
                flag_message(&mut e, &method, batch, irregular);
                let key = (dir, id_key(id));
                // Almost always one request per id: a queue of one is a small allocation,
                // where the default first growth (four `Pending`s, ≈ 1 KiB) made glibc
                // consolidate its free lists on every request.
                let queue = self
                    .pending
                    .entry(key)
                    .or_insert_with(|| VecDeque::with_capacity(1));
                flag_if(
                    &mut e,
                    queue.iter().any(|p| p.closed.is_none()),
                    Flag::IdReused,
                );
                queue.push_back(Pending {
                    event_id: e.event_id.clone(),
                    method,
                    tool: e.tool_invoked.clone(),
                    tool_schema_hash: e.tool_schema_hash.clone(),
                    resource_uri: e.resource_uri.clone(),
                    prompt_name: e.prompt_name.clone(),
                    trace_id: e.trace_id.clone(),
                    span_id: e.span_id.clone(),
                    parent_span_id: e.parent_span_id.clone(),
                    had_cursor: e.method.as_deref().is_some_and(|m| m.ends_with("/list"))
                        && params_str(params, "cursor").is_some(),
                    at: frame.at,
                    bytes: line.len() as u64,
                    closed: None,
                    request_id: e.request_id.clone(),
                });
                out.push(e);
            }
            Message::Notification {
                method,
                params,
                irregular,
            } => {
                let mut e = self.event(EventKind::McpNotification, frame.wall);
                e.direction = Some(dir);
                self.describe_params(&mut e, &method, params);
                apply_trace(&mut e, frame);
                set_bytes(&mut e, dir, line.len() as u64);
                flag_message(&mut e, &method, batch, irregular);
                let cancelled = if method == "notifications/cancelled" {
                    self.cancel(dir, params, frame)
                } else {
                    None
                };
                e.method = Some(method);
                out.push(e);
                out.extend(cancelled);
            }
            Message::Response {
                id,
                result,
                error,
                irregular,
            } => {
                self.on_response(dir, id, result, error, irregular, batch, line, frame, out);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_response(
        &mut self,
        dir: Direction,
        id: Option<&RawValue>,
        result: Option<&RawValue>,
        error: Option<&RawValue>,
        irregular: bool,
        batch: bool,
        line: &[u8],
        frame: &Frame,
        out: &mut Vec<Event>,
    ) {
        let mut e = self.event(EventKind::McpResponse, frame.wall);
        e.direction = Some(dir);
        e.request_id = id
            .and_then(|id| serde_json::from_str::<Value>(id.get()).ok())
            .filter(|v| !v.is_null());
        flag_if(&mut e, batch, Flag::Batch);
        flag_if(&mut e, irregular, Flag::InvalidEnvelope);
        let null_id = id.is_none_or(|id| id.get() == "null");
        let request_dir = dir.reverse();
        let pending = if null_id {
            None
        } else {
            let key = (request_dir, id_key(id.expect("checked")));
            let p = self.pending.get_mut(&key).and_then(|q| {
                // Several open requests share this id: which one this answers cannot be known.
                // Take the oldest (JSON-RPC peers answer in any order, so this is a guess) and
                // say so with the flag.
                if q.iter().filter(|p| p.closed.is_none()).count() > 1 {
                    e.flags.push(Flag::IdReused);
                }
                // Prefer the oldest open request; else the oldest closed one (a late answer).
                let pos = q.iter().position(|p| p.closed.is_none()).unwrap_or(0);
                q.remove(pos)
            });
            if self.pending.get(&key).is_some_and(|q| q.is_empty()) {
                self.pending.remove(&key);
            }
            p
        };
        if null_id {
            e.flags.push(Flag::NullId);
        } else if pending.is_none() {
            e.flags.push(Flag::UnknownId);
        }
        let mut summary = summarise_response(result, error, line, self.cfg.preview_scan_chars());
        let method = pending.as_ref().map(|p| p.method.clone());
        if let Some(p) = pending
            .as_ref()
            .filter(|p| p.method == "tools/call" && request_dir == Direction::ClientToServer)
        {
            if self.recent_calls.len() == RECENT_CALLS {
                self.recent_calls.pop_front();
            }
            self.recent_calls
                .push_back((p.event_id.clone(), p.tool.clone(), p.at, frame.at));
        }
        if let Some(p) = &pending {
            if p.closed.is_some() {
                e.flags.push(Flag::LateResponse);
            }
            e.method = Some(p.method.clone());
            e.request_event_id = Some(p.event_id.clone());
            e.tool_invoked = p.tool.clone();
            e.tool_schema_hash = p.tool_schema_hash.clone();
            e.resource_uri = p.resource_uri.clone();
            e.prompt_name = p.prompt_name.clone();
            e.trace_id = p.trace_id.clone();
            e.span_id = p.span_id.clone();
            e.parent_span_id = p.parent_span_id.clone();
            e.duration_ms = Some(frame.at.saturating_duration_since(p.at).as_secs_f64() * 1000.0);
            match dir {
                Direction::ServerToClient => e.bytes_in = Some(p.bytes),
                Direction::ClientToServer => e.bytes_out = Some(p.bytes),
            }
        }
        set_bytes(&mut e, dir, line.len() as u64);
        let parsed_result: Option<Value> = result.and_then(|r| serde_json::from_str(r.get()).ok());
        if method.as_deref() == Some("tools/call") {
            if let Some(r) = &parsed_result {
                describe_tool_result(r, &mut summary, self.cfg.preview_scan_chars());
            }
        }
        if method.as_deref() == Some("initialize") && dir == Direction::ServerToClient {
            if let Some(r) = &parsed_result {
                self.learn_server(r);
                e.server = self.base.server.clone();
                e.protocol_version = self.base.protocol_version.clone();
                e.session = Some(SessionDetail {
                    client_capabilities: self.client_capabilities.clone(),
                    server_capabilities: r.get("capabilities").cloned(),
                    ..Default::default()
                });
            }
        }
        e.response_summary = Some(summary);
        let catalog_events = match (&method, &parsed_result, &pending) {
            (Some(m), Some(r), Some(p)) if error.is_none() => {
                self.catalog(m, r, p.had_cursor, &e, frame.wall)
            }
            _ => Vec::new(),
        };
        out.push(e);
        out.extend(catalog_events);
    }

    /// `notifications/cancelled` from `dir` cancels a request `dir` sent.
    fn cancel(
        &mut self,
        dir: Direction,
        params: Option<&RawValue>,
        frame: &Frame,
    ) -> Option<Event> {
        let params: Value = serde_json::from_str(params?.get()).ok()?;
        let id = params.get("requestId")?;
        let key = (dir, id_key_value(id));
        let p = self
            .pending
            .get_mut(&key)?
            .iter_mut()
            .find(|p| p.closed.is_none())?;
        p.closed = Some(Status::Cancelled);
        let (partial, _) = summary_without_response(p, Status::Cancelled, frame.at);
        let mut partial = partial;
        if let Some(s) = partial.response_summary.as_mut() {
            s.error_message = params
                .get("reason")
                .and_then(Value::as_str)
                .map(|r| truncate_chars(r, self.cfg.preview_scan_chars()));
        }
        Some(self.synthetic_response(dir, partial, frame.wall, Vec::new()))
    }

    fn learn_client(&mut self, params: Option<&RawValue>) {
        let Some(params) = params.and_then(|p| serde_json::from_str::<Value>(p.get()).ok()) else {
            return;
        };
        if let Some(info) = params.get("clientInfo") {
            let name = info
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("unknown")
                .to_string();
            let version = info
                .get("version")
                .and_then(Value::as_str)
                .map(String::from);
            if !self.agent_fixed {
                self.base.agent_id = Some(name.clone());
            }
            self.base.client = Some(PeerInfo { name, version });
        }
        self.client_capabilities = params.get("capabilities").cloned();
    }

    fn learn_server(&mut self, result: &Value) {
        if let Some(pv) = result.get("protocolVersion").and_then(Value::as_str) {
            self.base.protocol_version = Some(pv.to_string());
        }
        if let (Some(info), Some(server)) = (result.get("serverInfo"), self.base.server.as_mut()) {
            server.name = info.get("name").and_then(Value::as_str).map(String::from);
            server.version = info
                .get("version")
                .and_then(Value::as_str)
                .map(String::from);
        }
    }

    /// Fill the "what" fields of a request or notification from its params.
    fn describe_params(&self, e: &mut Event, method: &str, params: Option<&RawValue>) {
        let Some(raw) = params else { return };
        e.parameters_digest = Some(Digest256::of(raw.get().as_bytes()));
        let store = raw.get().len() <= self.cfg.max_stored_payload_bytes;
        flag_if(e, !store, Flag::Oversize);
        let Ok(mut v) = serde_json::from_str::<Value>(raw.get()) else {
            return;
        };
        if let Some(tp) = v
            .get("_meta")
            .and_then(|m| m.get("traceparent"))
            .and_then(Value::as_str)
        {
            if let Some((trace, parent)) = parse_traceparent(tp) {
                e.trace_id = Some(trace);
                e.parent_span_id = Some(parent);
            }
        }
        let str_field = |k: &str| v.get(k).and_then(Value::as_str).map(String::from);
        let used = match method {
            "tools/call" => {
                e.tool_invoked = str_field("name");
                if let Some(t) = &e.tool_invoked {
                    e.tool_schema_hash = self.catalogs.get("tools").and_then(|c| c.get(t)).cloned();
                }
                v.as_object_mut().and_then(|o| o.remove("arguments"))
            }
            "prompts/get" => {
                e.prompt_name = str_field("name");
                v.as_object_mut().and_then(|o| o.remove("arguments"))
            }
            "resources/read"
            | "resources/subscribe"
            | "resources/unsubscribe"
            | "notifications/resources/updated" => {
                e.resource_uri = str_field("uri");
                Some(v)
            }
            _ => Some(v),
        };
        if store {
            e.parameters_used = used;
        }
    }

    /// `tool.catalog` (and `tool.changed`) for a list result.
    fn catalog(
        &mut self,
        method: &str,
        result: &Value,
        had_cursor: bool,
        resp: &Event,
        wall: SystemTime,
    ) -> Vec<Event> {
        let (list, field, name_key) = match method {
            "tools/list" => ("tools", "tools", "name"),
            "prompts/list" => ("prompts", "prompts", "name"),
            "resources/list" => ("resources", "resources", "uri"),
            "resources/templates/list" => {
                ("resource_templates", "resourceTemplates", "uriTemplate")
            }
            _ => return Vec::new(),
        };
        let Some(items) = result.get(field).and_then(Value::as_array) else {
            return Vec::new();
        };
        let mut entries: Vec<CatalogItem> = items
            .iter()
            .map(|it| CatalogItem {
                name: it
                    .get(name_key)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                hash: sha256_hex(canonical_json(it).as_bytes()),
            })
            .collect();
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        let mut h = String::new();
        for it in &entries {
            h.push_str(&it.name);
            h.push('\0');
            h.push_str(&it.hash);
            h.push('\n');
        }
        let next_cursor = result
            .get("nextCursor")
            .and_then(Value::as_str)
            .map(String::from);
        let full_list = next_cursor.is_none() && !had_cursor;
        let mut snap = self.event(EventKind::ToolCatalog, wall);
        snap.direction = resp.direction;
        snap.method = resp.method.clone();
        snap.request_event_id = resp.request_event_id.clone();
        snap.catalog = Some(Catalog {
            list: list.into(),
            hash: sha256_hex(h.as_bytes()),
            items: entries.clone(),
            next_cursor,
            changed: Vec::new(),
            added: Vec::new(),
            removed: Vec::new(),
        });
        let mut out = vec![snap];

        let known = self.catalogs.entry(list.to_string()).or_default();
        let first = known.is_empty();
        let (mut changed, mut added) = (Vec::new(), Vec::new());
        for it in &entries {
            match known.get(&it.name) {
                Some(h) if *h != it.hash => changed.push(it.name.clone()),
                None if !first => added.push(it.name.clone()),
                _ => {}
            }
        }
        let removed: Vec<String> = if full_list && !first {
            known
                .keys()
                .filter(|k| !entries.iter().any(|e| &e.name == *k))
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        if full_list {
            known.clear();
        }
        for it in entries {
            known.insert(it.name, it.hash);
        }
        if !changed.is_empty() || !added.is_empty() || !removed.is_empty() {
            let mut ch = self.event(EventKind::ToolChanged, wall);
            ch.direction = resp.direction;
            ch.method = resp.method.clone();
            ch.request_event_id = resp.request_event_id.clone();
            let mut cat = out[0].catalog.clone().expect("set above");
            cat.changed = changed;
            cat.added = added;
            cat.removed = removed;
            ch.catalog = Some(cat);
            out.push(ch);
        }
        out
    }
}

fn summary_without_response(p: &Pending, status: Status, now: Instant) -> (Event, ()) {
    let e = Event {
        method: Some(p.method.clone()),
        request_id: p.request_id.clone(),
        request_event_id: Some(p.event_id.clone()),
        tool_invoked: p.tool.clone(),
        tool_schema_hash: p.tool_schema_hash.clone(),
        resource_uri: p.resource_uri.clone(),
        prompt_name: p.prompt_name.clone(),
        trace_id: p.trace_id.clone(),
        span_id: p.span_id.clone(),
        parent_span_id: p.parent_span_id.clone(),
        duration_ms: Some(now.saturating_duration_since(p.at).as_secs_f64() * 1000.0),
        bytes_in: Some(p.bytes),
        response_summary: Some(ResponseSummary {
            status,
            is_error: false,
            error_code: None,
            error_message: None,
            size: 0,
            sha256: None,
            preview: None,
            content_types: Vec::new(),
        }),
        ..Default::default()
    };
    (e, ())
}

fn summarise_response(
    result: Option<&RawValue>,
    error: Option<&RawValue>,
    line: &[u8],
    preview_chars: usize,
) -> ResponseSummary {
    let mut s = ResponseSummary {
        status: Status::Ok,
        is_error: false,
        error_code: None,
        error_message: None,
        size: line.len() as u64,
        sha256: Some(sha256_hex(line)),
        preview: None,
        content_types: Vec::new(),
    };
    if let Some(err) = error.and_then(|e| serde_json::from_str::<Value>(e.get()).ok()) {
        s.status = Status::Error;
        s.is_error = true;
        s.error_code = err.get("code").and_then(Value::as_i64);
        s.error_message = err
            .get("message")
            .and_then(Value::as_str)
            .map(|m| truncate_chars(m, preview_chars));
    } else if let Some(r) = result {
        s.preview = Some(truncate_chars(r.get(), preview_chars));
    }
    s
}

fn describe_tool_result(r: &Value, s: &mut ResponseSummary, preview_chars: usize) {
    if r.get("isError").and_then(Value::as_bool) == Some(true) {
        s.status = Status::Error;
        s.is_error = true;
    }
    if let Some(content) = r.get("content").and_then(Value::as_array) {
        for c in content {
            if let Some(t) = c.get("type").and_then(Value::as_str) {
                if !s.content_types.iter().any(|x| x == t) {
                    s.content_types.push(t.to_string());
                }
            }
        }
        if let Some(text) = content
            .iter()
            .find_map(|c| c.get("text").and_then(Value::as_str))
        {
            s.preview = Some(truncate_chars(text, preview_chars));
        }
    }
}

fn set_bytes(e: &mut Event, dir: Direction, n: u64) {
    match dir {
        Direction::ClientToServer => e.bytes_in = Some(n),
        Direction::ServerToClient => e.bytes_out = Some(n),
    }
}

fn flag_if(e: &mut Event, cond: bool, f: Flag) {
    if cond {
        e.flags.push(f);
    }
}

/// Flags every request and notification can carry.
fn flag_message(e: &mut Event, method: &str, batch: bool, irregular: bool) {
    flag_if(e, batch, Flag::Batch);
    flag_if(e, irregular, Flag::InvalidEnvelope);
    flag_if(e, !KNOWN_METHODS.contains(&method), Flag::UnknownMethod);
}

fn params_str(params: Option<&RawValue>, key: &str) -> Option<String> {
    let v: Value = serde_json::from_str(params?.get()).ok()?;
    v.get(key).and_then(Value::as_str).map(String::from)
}

/// A key identifying a JSON-RPC id: `1` and `"1"` are different ids.
fn id_key(raw: &RawValue) -> String {
    match serde_json::from_str::<Value>(raw.get()) {
        Ok(v) => id_key_value(&v),
        Err(_) => format!("raw:{}", raw.get()),
    }
}

fn id_key_value(v: &Value) -> String {
    match v {
        Value::String(s) => format!("s:{s}"),
        Value::Number(n) => format!("n:{n}"),
        other => format!("o:{other}"),
    }
}

/// The span an HTTP tap opened for the message replaces what `_meta.traceparent` said (the
/// caller's span becomes the parent).
fn apply_trace(e: &mut Event, frame: &Frame) {
    if let Some(t) = frame.context.as_ref().and_then(|c| c.trace.as_ref()) {
        e.trace_id = Some(t.trace_id.clone());
        e.span_id = Some(t.span_id.clone());
        e.parent_span_id = t.parent_span_id.clone();
    }
}

/// `00-<trace 32 hex>-<parent 16 hex>-<flags>` → (trace_id, parent_span_id).
fn parse_traceparent(tp: &str) -> Option<(String, String)> {
    let mut parts = tp.trim().split('-');
    let (_ver, trace, parent) = (parts.next()?, parts.next()?, parts.next()?);
    let hex_ok = |s: &str, n| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex_ok(trace, 32) && hex_ok(parent, 16) && trace != "0".repeat(32))
        .then(|| (trace.to_ascii_lowercase(), parent.to_ascii_lowercase()))
}

/// JSON with object keys sorted at every level: the hashing form of catalog items.
pub(crate) fn canonical_json(v: &Value) -> String {
    fn write(v: &Value, out: &mut String) {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(k.clone()).to_string());
                    out.push(':');
                    write(&m[k], out);
                }
                out.push('}');
            }
            Value::Array(a) => {
                out.push('[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(x, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut s = String::new();
    write(v, &mut s);
    s
}

fn truncate_chars(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

fn preview_bytes(b: &[u8], n: usize) -> String {
    let cut = &b[..b.len().min(n * 4)];
    truncate_chars(&String::from_utf8_lossy(cut), n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_deeply() {
        let v: Value =
            serde_json::from_str(r#"{"b":1,"a":{"d":[{"z":1,"y":2}],"c":"x"}}"#).unwrap();
        assert_eq!(
            canonical_json(&v),
            r#"{"a":{"c":"x","d":[{"y":2,"z":1}]},"b":1}"#
        );
    }

    #[test]
    fn traceparent_parsing() {
        assert_eq!(
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            Some((
                "4bf92f3577b34da6a3ce929d0e0e4736".into(),
                "00f067aa0ba902b7".into()
            ))
        );
        assert_eq!(parse_traceparent("00-0000-00f067aa0ba902b7-01"), None);
        assert_eq!(parse_traceparent("garbage"), None);
    }

    #[test]
    fn truncation_is_char_safe() {
        assert_eq!(truncate_chars("héllo", 2), "hé…");
        assert_eq!(truncate_chars("hi", 5), "hi");
    }

    #[test]
    fn ids_of_different_types_differ() {
        let a = RawValue::from_string("1".into()).unwrap();
        let b = RawValue::from_string("\"1\"".into()).unwrap();
        assert_ne!(id_key(&a), id_key(&b));
    }
}
