//! The gateway's recording side: one thread owns a [`Recorder`] per MCP session (keyed by
//! route and `Mcp-Session-Id`), turns the frames the proxy hands it into events, redacts them
//! ([`Preparer`]) and passes them to the ledger writer. Request handlers only copy bytes and
//! send a message on a channel, so recording never sits between client and server.
//!
//! The gateway itself is recorded as a session too (`server.transport = "gateway"`): its
//! start, heartbeats, scheduled ledger self-checks and end.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use mcptrail_event::{
    format_rfc3339_nanos, new_event_id, Event, EventKind, ProcessInfo, ServerInfo, UserIdentity,
};
use mcptrail_ledger::PreparedEvent;
use mcptrail_tap::selfcheck::SelfChecker;
use mcptrail_tap::{Frame, Identity, Preparer, Recorder, SessionContext, TapConfig};

/// Most a message waits before it is recorded while traffic flows (see `Recording::run`).
const BATCH_WINDOW: Duration = Duration::from_millis(2);

/// Which recorded session a message belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct SessionKey {
    /// Route name.
    pub route: Arc<str>,
    /// `Mcp-Session-Id` (or legacy `sessionId`); for servers without sessions,
    /// `stateless:<principal>`.
    pub id: String,
}

/// What the recorder needs to open a session it has not seen.
#[derive(Debug, Clone)]
pub(crate) struct SessionOpen {
    /// The upstream as configured.
    pub server: ServerInfo,
    /// The route's `agent_id`.
    pub agent_id: Option<String>,
}

/// Messages from request handlers to the recording thread.
#[derive(Debug)]
pub(crate) enum RecordMsg {
    /// A message seen in a session.
    Frame {
        /// The session.
        key: SessionKey,
        /// How to open it if new.
        open: Arc<SessionOpen>,
        /// The message.
        frame: Frame,
    },
    /// An event made by the proxy itself (`auth.denied`, `upstream.error`, refusals); when
    /// `key` names a live session, the event joins it.
    Event {
        /// The session, if any.
        key: Option<SessionKey>,
        /// The event.
        event: Box<Event>,
    },
    /// A connection a stdio route's server made through its egress proxy.
    Egress {
        /// The session whose server made it.
        key: SessionKey,
        /// The connection.
        record: Box<mcptrail_egress::EgressRecord>,
    },
    /// A session ended (DELETE answered, or the upstream no longer knows it).
    End {
        /// The session.
        key: SessionKey,
        /// `session.end` reason.
        reason: &'static str,
    },
}

/// Live figures for `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct RecordStats {
    /// Sessions open in the record.
    pub active_sessions: AtomicU64,
    /// Events handed to the ledger writer.
    pub events_queued: AtomicU64,
}

struct Live {
    recorder: Recorder,
    session_id: String,
    server: ServerInfo,
    agent_id: Option<String>,
    last_seen: Instant,
}

/// The recording thread's state.
pub(crate) struct Recording {
    cfg: TapConfig,
    identity_host: String,
    process: ProcessInfo,
    sessions: HashMap<SessionKey, Live>,
    gateway: Recorder,
    preparer: Preparer,
    events: Sender<Vec<PreparedEvent>>,
    idle: Duration,
    stats: Arc<RecordStats>,
    out: Vec<Event>,
}

/// Start the recording thread. It runs until every sender of `rx` is dropped, then ends every
/// open session (`gateway_shutdown`) and the gateway's own session.
#[allow(clippy::too_many_arguments)]
pub(crate) fn spawn(
    cfg: TapConfig,
    listen: String,
    preparer: Preparer,
    events: Sender<Vec<PreparedEvent>>,
    rx: Receiver<RecordMsg>,
    idle: Duration,
    checker: SelfChecker,
    stats: Arc<RecordStats>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let identity = Identity::detect(None);
    let process = ProcessInfo {
        tap_pid: std::process::id(),
        server_pid: None,
        tap_version: env!("CARGO_PKG_VERSION").into(),
    };
    let gateway = Recorder::new(
        cfg.clone(),
        SessionContext {
            session_id: new_event_id(),
            agent_id: None,
            identity: identity.clone(),
            server: ServerInfo {
                name: Some("mcptrail-gateway".into()),
                transport: "gateway".into(),
                url: Some(listen),
                ..Default::default()
            },
            process: process.clone(),
        },
    );
    let mut rec = Recording {
        cfg,
        identity_host: identity.host,
        process,
        sessions: HashMap::new(),
        gateway,
        preparer,
        events,
        idle,
        stats,
        out: Vec::new(),
    };
    std::thread::Builder::new()
        .name("mcptrail-gateway-recorder".into())
        .spawn(move || {
            // Recording is background work: request relays go first on a busy CPU.
            mcptrail_tap::run_in_background();
            rec.run(rx, checker)
        })
}

impl Recording {
    fn run(&mut self, rx: Receiver<RecordMsg>, checker: SelfChecker) {
        let start = self.gateway.session_start();
        self.out.push(start);
        self.flush();
        let tick = Duration::from_secs(1);
        let mut last_tick = Instant::now();
        loop {
            match rx.recv_timeout(tick) {
                Ok(msg) => {
                    self.handle(msg);
                    // While messages flow, take them in batches BATCH_WINDOW apart: a sleeping
                    // recorder is not woken per message (a futex call and a context switch
                    // on the request path each time), and the writer gets one batch to commit.
                    std::thread::sleep(BATCH_WINDOW);
                    while let Ok(msg) = rx.try_recv() {
                        self.handle(msg);
                        if self.out.len() >= 1024 {
                            self.flush();
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if last_tick.elapsed() >= tick {
                last_tick = Instant::now();
                self.tick(last_tick);
                while let Ok(check) = checker.results.try_recv() {
                    self.gateway.self_verified(&check, &mut self.out);
                }
            }
            self.flush();
        }
        let keys: Vec<SessionKey> = self.sessions.keys().cloned().collect();
        for key in keys {
            self.end(&key, "gateway_shutdown");
        }
        while let Ok(check) = checker.results.try_recv() {
            self.gateway.self_verified(&check, &mut self.out);
        }
        self.gateway.finish(
            mcptrail_tap::SessionEnd {
                reason: "gateway_shutdown".into(),
                ..Default::default()
            },
            &mut self.out,
        );
        self.flush();
    }

    fn handle(&mut self, msg: RecordMsg) {
        match msg {
            RecordMsg::Frame { key, open, frame } => {
                let live = match self.sessions.get_mut(&key) {
                    Some(l) => l,
                    None => {
                        let user = frame
                            .context
                            .as_ref()
                            .and_then(|c| c.user.clone())
                            .unwrap_or_else(|| UserIdentity {
                                principal: "anonymous".into(),
                                source: "anonymous".into(),
                                ..Default::default()
                            });
                        let session_id = new_event_id();
                        let mut recorder = Recorder::new(
                            self.cfg.clone(),
                            SessionContext {
                                session_id: session_id.clone(),
                                agent_id: open.agent_id.clone(),
                                identity: Identity {
                                    user,
                                    host: self.identity_host.clone(),
                                },
                                server: open.server.clone(),
                                process: self.process.clone(),
                            },
                        );
                        if let Some(ctx) = &frame.context {
                            recorder.set_context(ctx);
                        }
                        // The session began with this message, however late it is recorded.
                        let mut start = recorder.session_start();
                        start.time = format_rfc3339_nanos(frame.wall.into());
                        self.out.push(start);
                        self.stats.active_sessions.fetch_add(1, Ordering::Relaxed);
                        self.sessions.entry(key).or_insert(Live {
                            recorder,
                            session_id,
                            server: open.server.clone(),
                            agent_id: open.agent_id.clone(),
                            last_seen: Instant::now(),
                        })
                    }
                };
                live.last_seen = Instant::now();
                live.recorder.on_frame(frame, &mut self.out);
            }
            RecordMsg::Event { key, mut event } => {
                if let Some(live) = key.as_ref().and_then(|k| self.sessions.get(k)) {
                    event.session_id = Some(live.session_id.clone());
                    event.server = Some(live.server.clone());
                    if event.agent_id.is_none() {
                        event.agent_id = live.agent_id.clone();
                    }
                }
                if event.host.is_none() {
                    event.host = Some(self.identity_host.clone());
                }
                if event.process.is_none() {
                    event.process = Some(self.process.clone());
                }
                self.out.push(*event);
            }
            RecordMsg::Egress { key, record } => match self.sessions.get_mut(&key) {
                Some(live) => live.recorder.egress(&record, &mut self.out),
                // The session was already closed in the record: the gateway's own session
                // keeps the connection.
                None => self.gateway.egress(&record, &mut self.out),
            },
            RecordMsg::End { key, reason } => self.end(&key, reason),
        }
    }

    fn end(&mut self, key: &SessionKey, reason: &str) {
        if let Some(mut live) = self.sessions.remove(key) {
            live.recorder.finish(
                mcptrail_tap::SessionEnd {
                    reason: reason.into(),
                    ..Default::default()
                },
                &mut self.out,
            );
            self.stats.active_sessions.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn tick(&mut self, now: Instant) {
        let idle: Vec<SessionKey> = self
            .sessions
            .iter()
            .filter(|(_, l)| now.duration_since(l.last_seen) >= self.idle)
            .map(|(k, _)| k.clone())
            .collect();
        for key in idle {
            self.end(&key, "idle_timeout");
        }
        for live in self.sessions.values_mut() {
            live.recorder.tick(now, &mut self.out);
        }
        self.gateway.tick(now, &mut self.out);
    }

    fn flush(&mut self) {
        if self.out.is_empty() {
            return;
        }
        let n = self.out.len() as u64;
        let batch = self.preparer.prepare(self.out.drain(..));
        self.stats.events_queued.fetch_add(n, Ordering::Relaxed);
        let _ = self.events.send(batch);
    }
}

/// A bare event of `kind`, timed now, for the proxy's own events.
pub(crate) fn event(kind: EventKind) -> Event {
    let mut e = Event::new(kind);
    e.event_id = new_event_id();
    e.time = format_rfc3339_nanos(SystemTime::now().into());
    e
}
