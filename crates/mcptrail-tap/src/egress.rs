//! `mcptrail egress` on its own: the egress proxy as a long-running session of its own
//! (server transport `egress`), for tool servers started elsewhere with `HTTP(S)_PROXY`
//! pointing at it. `wrap --egress` runs the same proxy inside the wrapped session instead
//! (see [`crate::stdio`]), which also links each connection to the tool call in flight.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mcptrail_egress::{EgressConfig, EgressProxy, EgressRecord};
use mcptrail_event::{new_event_id, ProcessInfo, ServerInfo};
use mcptrail_ledger::{Ledger, LedgerConfig};

use crate::recorder::SessionEnd;
use crate::{Identity, LedgerWriter, Preparer, Recorder, SessionContext, TapConfig, TapError};

/// Everything the standalone proxy needs.
#[derive(Debug, Clone)]
pub struct EgressOptions {
    /// The proxy settings (`listen` included).
    pub egress: EgressConfig,
    /// Data directory holding the ledger.
    pub data_dir: PathBuf,
    /// Agent id recorded on its events.
    pub agent_id: Option<String>,
    /// `MCPTRAIL_USER`.
    pub asserted_user: Option<String>,
    /// Tap settings (heartbeats).
    pub tap: TapConfig,
    /// Ledger settings.
    pub ledger: LedgerConfig,
}

/// A running standalone egress session.
pub struct EgressSession {
    proxy: EgressProxy,
    stop: Arc<AtomicBool>,
    recorder: std::thread::JoinHandle<u64>,
    session_id: String,
}

impl EgressSession {
    /// Open the ledger, listen, and record until [`stop`](Self::stop).
    pub fn start(opts: EgressOptions) -> Result<Self, TapError> {
        let ledger = Ledger::open(&opts.data_dir, opts.ledger.clone())?;
        let writer = LedgerWriter::spawn(ledger, 1_000_000, Duration::from_secs(10));
        let session_id = new_event_id();
        let mut recorder = Recorder::new(
            opts.tap.clone(),
            SessionContext {
                session_id: session_id.clone(),
                agent_id: opts.agent_id.clone(),
                identity: Identity::detect(opts.asserted_user.clone()),
                server: ServerInfo {
                    transport: "egress".into(),
                    url: Some(format!("http://{}", opts.egress.listen)),
                    ..Default::default()
                },
                process: ProcessInfo {
                    tap_pid: std::process::id(),
                    server_pid: None,
                    tap_version: env!("CARGO_PKG_VERSION").into(),
                },
            },
        );
        let (tx, rx) = crossbeam_channel::unbounded::<EgressRecord>();
        let proxy = EgressProxy::bind(
            &opts.egress,
            Arc::new(move |r| {
                let _ = tx.send(r);
            }),
        )?;
        let preparer = Preparer::new(None, opts.tap.preview_chars);
        let events = writer.sender();
        let _ = events.send(preparer.prepare([recorder.session_start()]));
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let tick = opts.tap.heartbeat_interval().min(Duration::from_secs(1));
        let handle = std::thread::Builder::new()
            .name("mcptrail-egress-recorder".into())
            .spawn(move || {
                let mut out = Vec::new();
                let mut last_tick = Instant::now();
                loop {
                    match rx.recv_timeout(tick) {
                        Ok(r) => recorder.egress(&r, &mut out),
                        Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                        Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
                    }
                    if last_tick.elapsed() >= tick {
                        last_tick = Instant::now();
                        recorder.tick(last_tick, &mut out);
                    }
                    if !out.is_empty() {
                        let _ = events.send(preparer.prepare(out.drain(..)));
                    }
                    if stop2.load(Ordering::SeqCst) && rx.is_empty() {
                        break;
                    }
                }
                recorder.finish(
                    SessionEnd {
                        reason: "stopped".into(),
                        ..Default::default()
                    },
                    &mut out,
                );
                let _ = events.send(preparer.prepare(out));
                drop(events);
                writer.finish().lost
            })
            .map_err(|source| TapError::Io {
                what: "starting the egress recorder thread",
                source,
            })?;
        Ok(EgressSession {
            proxy,
            stop,
            recorder: handle,
            session_id,
        })
    }

    /// The address the proxy listens on.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.proxy.local_addr()
    }

    /// The session id its events carry.
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// Close the connections still open (recorded as `proxy stopped`), write `session.end`,
    /// and flush the ledger. Returns the number of events that could not be written.
    pub fn stop(self) -> u64 {
        self.proxy.shutdown(Duration::from_secs(2));
        self.stop.store(true, Ordering::SeqCst);
        self.recorder.join().unwrap_or(u64::MAX)
    }
}
