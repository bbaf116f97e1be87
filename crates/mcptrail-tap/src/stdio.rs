//! The stdio tap (`mcptrail wrap -- CMD…`): spawn the server, relay both pipes byte for byte,
//! record a parsed copy, forward signals, and end the session the way the MCP stdio transport
//! describes (close the server's stdin, wait, SIGTERM, wait, SIGKILL).
//!
//! Threads: two relays (client→server, server→client) that only read, write, and hand a copy
//! of each complete line to the recorder; the recorder; the ledger writer; a child waiter; a
//! signal listener. The main thread runs the lifecycle state machine.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use mcptrail_event::{new_event_id, Direction, ProcessInfo, ServerInfo};
use mcptrail_ledger::{Ledger, LedgerConfig, PreparedEvent};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::os::unix::process::ExitStatusExt;

use crate::framing::{Frame, LineSplitter};
use crate::queue::{queue, QueueReceiver, QueueSender, Received, Wait};
use crate::recorder::SessionEnd;
use crate::{Identity, LedgerWriter, Preparer, Recorder, SessionContext, TapConfig, TapError};

/// Everything `wrap` needs.
#[derive(Debug, Clone)]
pub struct WrapOptions {
    /// The server command line.
    pub command: Vec<String>,
    /// Data directory holding the ledger.
    pub data_dir: PathBuf,
    /// `--agent-id`.
    pub agent_id: Option<String>,
    /// `MCPTRAIL_USER`.
    pub asserted_user: Option<String>,
    /// Tap settings.
    pub tap: TapConfig,
    /// Ledger settings.
    pub ledger: LedgerConfig,
    /// Redaction applied to every event before it is serialised (none: payloads as sent).
    pub redactor: Option<Arc<mcptrail_redact::Redactor>>,
    /// `--egress`: start the server behind an egress proxy on a free loopback port (its
    /// `listen` is ignored) and record its outbound connections in this session.
    pub egress: Option<mcptrail_egress::EgressConfig>,
}

/// How `wrap` ended.
#[derive(Debug, Clone)]
pub struct WrapOutcome {
    /// The exit code `wrap` should exit with (the server's, or 128 + signal).
    pub exit_code: i32,
    /// Session id recorded.
    pub session_id: String,
    /// Events made durable.
    pub events_written: u64,
    /// Events that could not be written.
    pub events_lost: u64,
}

enum RecorderMsg {
    Frame(Frame),
    /// Writing to the peer failed; this chunk and everything after it in `direction` is lost
    /// to the peer (still recorded, flagged `undelivered`).
    DeliveryFailed {
        direction: Direction,
        chunk: u64,
        bytes: u64,
    },
    ServerPid(u32),
    /// A connection the server made through the egress proxy.
    Egress(Box<mcptrail_egress::EgressRecord>),
    Finish(SessionEnd),
}

#[derive(Debug)]
enum Control {
    ClientEof,
    ClientGone,
    ServerStdoutEof,
    ServerExited(ExitStatus),
    Signal(i32),
}

const READ_BUF: usize = 64 * 1024;

/// While messages flow, the recorder takes them in batches this far apart instead of being
/// woken per message (which on a busy CPU puts its work between client and server). It is
/// also the most a message waits before it is recorded.
const BATCH_WINDOW: Duration = Duration::from_millis(2);

/// Run the stdio tap until the session ends.
pub fn run_wrap(opts: WrapOptions) -> Result<WrapOutcome, TapError> {
    let ledger = Ledger::open(&opts.data_dir, opts.ledger.clone())?;
    let writer = LedgerWriter::spawn(ledger, 1_000_000, Duration::from_secs(10));
    let session_id = new_event_id();
    let ctx = SessionContext {
        session_id: session_id.clone(),
        agent_id: opts.agent_id.clone(),
        identity: Identity::detect(opts.asserted_user.clone()),
        server: ServerInfo {
            transport: "stdio".into(),
            command: opts.command.clone(),
            ..Default::default()
        },
        process: ProcessInfo {
            tap_pid: std::process::id(),
            server_pid: None,
            tap_version: env!("CARGO_PKG_VERSION").into(),
        },
    };
    let mut recorder = Recorder::new(opts.tap.clone(), ctx);
    let preparer = Preparer::new(opts.redactor.clone(), opts.tap.preview_chars);
    let events_tx = writer.sender();

    let (rec_tx, rec_rx) = queue::<RecorderMsg>(16 * 1024);
    let egress = match &opts.egress {
        Some(cfg) => Some(start_egress(cfg, rec_tx.clone())?),
        None => None,
    };
    let mut command = Command::new(&opts.command[0]);
    if let Some(proxy) = &egress {
        mcptrail_egress::set_child_env(proxy.local_addr(), |var, value| match value {
            Some(v) => {
                command.env(var, v);
            }
            None => {
                command.env_remove(var);
            }
        });
    }
    let spawned = command
        .args(&opts.command[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn();
    let mut child: Child = match spawned {
        Ok(c) => c,
        Err(source) => {
            let mut out = vec![recorder.session_start()];
            recorder.finish(
                SessionEnd {
                    reason: "spawn_failed".into(),
                    ..Default::default()
                },
                &mut out,
            );
            let _ = events_tx.send(preparer.prepare(out));
            drop(events_tx);
            writer.finish();
            return Err(TapError::Spawn {
                command: opts.command[0].clone(),
                source,
            });
        }
    };
    let pid = child.id();
    recorder.set_server_pid(pid);
    let start = recorder.session_start();
    let _ = events_tx.send(preparer.prepare([start]));

    let child_stdin = Arc::new(Mutex::new(child.stdin.take()));
    let child_stdout = child.stdout.take().expect("piped");
    let (ctl_tx, ctl_rx) = crossbeam_channel::unbounded::<Control>();

    // Recorder thread.
    let tick = opts.tap.heartbeat_interval().min(Duration::from_secs(1));
    let checker = crate::selfcheck::spawn(
        opts.data_dir.clone(),
        opts.ledger.checkpoints.anchor_dir.iter().cloned().collect(),
        (opts.tap.self_verify_interval_secs > 0)
            .then(|| Duration::from_secs(opts.tap.self_verify_interval_secs)),
    );
    let rec_preparer = preparer.clone();
    let rec_handle = std::thread::Builder::new()
        .name("mcptrail-recorder".into())
        .spawn(move || {
            crate::run_in_background();
            record(recorder, rec_rx, events_tx, rec_preparer, tick, checker)
        })
        .map_err(|source| TapError::Io {
            what: "starting the recorder thread",
            source,
        })?;

    // Relay: client → server.
    let our_stdin = dup_stdin()?;
    {
        let child_stdin = Arc::clone(&child_stdin);
        let rec_tx = rec_tx.clone();
        let ctl_tx = ctl_tx.clone();
        let max = opts.tap.max_message_bytes;
        std::thread::Builder::new()
            .name("mcptrail-relay-in".into())
            .spawn(move || relay_client_to_server(our_stdin, child_stdin, rec_tx, ctl_tx, max))
            .map_err(|source| TapError::Io {
                what: "starting the relay thread",
                source,
            })?;
    }
    // Relay: server → client.
    let our_stdout = dup_stdout()?;
    let out_handle = {
        let rec_tx = rec_tx.clone();
        let ctl_tx = ctl_tx.clone();
        let max = opts.tap.max_message_bytes;
        std::thread::Builder::new()
            .name("mcptrail-relay-out".into())
            .spawn(move || relay_server_to_client(child_stdout, our_stdout, rec_tx, ctl_tx, max))
            .map_err(|source| TapError::Io {
                what: "starting the relay thread",
                source,
            })?
    };
    // Child waiter.
    {
        let ctl_tx = ctl_tx.clone();
        std::thread::Builder::new()
            .name("mcptrail-child-wait".into())
            .spawn(move || {
                if let Ok(st) = child.wait() {
                    let _ = ctl_tx.send(Control::ServerExited(st));
                }
            })
            .map_err(|source| TapError::Io {
                what: "starting the waiter thread",
                source,
            })?;
    }
    // Signals: forwarded to the server, never fatal to the tap itself.
    {
        let ctl_tx = ctl_tx.clone();
        let mut signals = signal_hook::iterator::Signals::new([
            signal_hook::consts::SIGINT,
            signal_hook::consts::SIGTERM,
            signal_hook::consts::SIGHUP,
        ])
        .map_err(|source| TapError::Io {
            what: "installing signal handlers",
            source,
        })?;
        std::thread::Builder::new()
            .name("mcptrail-signals".into())
            .spawn(move || {
                for s in signals.forever() {
                    if ctl_tx.send(Control::Signal(s)).is_err() {
                        break;
                    }
                }
            })
            .map_err(|source| TapError::Io {
                what: "starting the signal thread",
                source,
            })?;
    }
    drop(ctl_tx);
    rec_tx.push(RecorderMsg::ServerPid(pid));

    let end = lifecycle(&ctl_rx, &child_stdin, pid, opts.tap.shutdown_grace());
    // The server is gone; let the out-relay drain what it wrote last (bounded: a grandchild
    // may hold the pipe open).
    let drain_deadline = Instant::now() + Duration::from_secs(2);
    while !out_handle.is_finished() && Instant::now() < drain_deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let exit_code = end.1;
    // The server is gone and with it its connections: their records are in (or, for a
    // connection a grandchild keeps open, are written now as `proxy stopped`).
    if let Some(proxy) = egress {
        proxy.shutdown(Duration::from_secs(2));
    }
    rec_tx.push(RecorderMsg::Finish(end.0));
    drop(rec_tx);
    let _ = rec_handle.join();
    let stats = writer.finish();
    Ok(WrapOutcome {
        exit_code,
        session_id,
        events_written: stats.written,
        events_lost: stats.lost,
    })
}

/// The egress proxy of one session, on a free loopback port, handing its records to the
/// session's recorder.
fn start_egress(
    cfg: &mcptrail_egress::EgressConfig,
    rec_tx: QueueSender<RecorderMsg>,
) -> Result<mcptrail_egress::EgressProxy, TapError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|source| TapError::Io {
        what: "opening the egress proxy's port",
        source,
    })?;
    let observer = move |r: mcptrail_egress::EgressRecord| {
        rec_tx.push(RecorderMsg::Egress(Box::new(r)));
    };
    mcptrail_egress::EgressProxy::serve(cfg, listener, Arc::new(observer)).map_err(TapError::Egress)
}

/// The lifecycle state machine. Returns how the session ended and the exit code to use.
fn lifecycle(
    ctl: &Receiver<Control>,
    child_stdin: &Mutex<Option<ChildStdin>>,
    pid: u32,
    grace: Duration,
) -> (SessionEnd, i32) {
    let mut end = SessionEnd::default();
    let mut status: Option<ExitStatus> = None;
    let mut stdout_closed = false;
    let mut exited_at: Option<Instant> = None;
    // (deadline, next signal to send)
    let mut stop: Option<(Instant, Signal)> = None;
    let close_stdin = || {
        if let Ok(mut g) = child_stdin.try_lock() {
            g.take();
        }
    };
    loop {
        if let Some(at) = exited_at {
            if stdout_closed || at.elapsed() > Duration::from_millis(500) {
                break;
            }
        }
        let wait = match (stop, exited_at) {
            (_, Some(at)) => Duration::from_millis(500).saturating_sub(at.elapsed()),
            (Some((deadline, _)), None) => deadline.saturating_duration_since(Instant::now()),
            (None, None) => Duration::from_secs(3600),
        };
        match ctl.recv_timeout(wait) {
            Ok(Control::ClientEof) => {
                set_reason(&mut end, "client_eof");
                close_stdin();
                if stop.is_none() && status.is_none() {
                    stop = Some((Instant::now() + grace, Signal::SIGTERM));
                }
            }
            Ok(Control::ClientGone) => {
                set_reason(&mut end, "client_gone");
                close_stdin();
                if stop.is_none() && status.is_none() {
                    stop = Some((Instant::now() + grace, Signal::SIGTERM));
                }
            }
            Ok(Control::Signal(s)) => {
                let name = Signal::try_from(s).map(|s| s.as_str()).unwrap_or("unknown");
                set_reason(&mut end, &format!("signal:{name}"));
                if status.is_none() {
                    if let Ok(sig) = Signal::try_from(s) {
                        let _ = kill(Pid::from_raw(pid as i32), sig);
                        // A server that survives the forwarded signal is stopped like one
                        // that ignores EOF: after the grace period SIGTERM, then SIGKILL.
                        if stop.is_none() {
                            let next = if sig == Signal::SIGTERM {
                                Signal::SIGKILL
                            } else {
                                Signal::SIGTERM
                            };
                            stop = Some((Instant::now() + grace, next));
                        }
                    }
                }
            }
            Ok(Control::ServerExited(st)) => {
                set_reason(&mut end, "server_exited");
                status = Some(st);
                exited_at = Some(Instant::now());
                close_stdin();
            }
            Ok(Control::ServerStdoutEof) => stdout_closed = true,
            Err(RecvTimeoutError::Timeout) => {
                if let (Some((deadline, sig)), None) = (stop, status) {
                    if Instant::now() >= deadline {
                        let _ = kill(Pid::from_raw(pid as i32), sig);
                        end.forced_stop = Some(
                            if sig == Signal::SIGKILL {
                                "sigkill"
                            } else {
                                "sigterm"
                            }
                            .into(),
                        );
                        stop = (sig == Signal::SIGTERM)
                            .then(|| (Instant::now() + grace, Signal::SIGKILL));
                    }
                }
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    let code = match status {
        Some(st) => {
            end.exit_code = st.code();
            end.exit_signal = st
                .signal()
                .and_then(|s| Signal::try_from(s).ok())
                .map(|s| s.as_str().to_string());
            st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0))
        }
        None => 1,
    };
    (end, code)
}

fn set_reason(end: &mut SessionEnd, reason: &str) {
    if end.reason.is_empty() {
        end.reason = reason.to_string();
    }
}

fn record(
    mut recorder: Recorder,
    rx: QueueReceiver<RecorderMsg>,
    events: Sender<Vec<PreparedEvent>>,
    preparer: Preparer,
    tick: Duration,
    checker: crate::selfcheck::SelfChecker,
) {
    let mut out = Vec::new();
    let mut batch = Vec::new();
    let mut last_tick = Instant::now();
    let mut wait = Wait::Eager;
    loop {
        // Busy: collect for BATCH_WINDOW, then record the lot; quiet: wake on the next message.
        let timeout = if wait == Wait::Lazy {
            BATCH_WINDOW
        } else {
            tick
        };
        match rx.recv_batch(&mut batch, timeout, wait) {
            Received::Disconnected => return,
            Received::Items => wait = Wait::Lazy,
            Received::Timeout => wait = Wait::Eager,
        }
        for msg in batch.drain(..) {
            match msg {
                RecorderMsg::Frame(f) => recorder.on_frame(f, &mut out),
                RecorderMsg::ServerPid(pid) => recorder.set_server_pid(pid),
                RecorderMsg::Egress(rec) => recorder.egress(&rec, &mut out),
                RecorderMsg::DeliveryFailed {
                    direction,
                    chunk,
                    bytes,
                } => recorder.delivery_failed(direction, chunk, bytes, &mut out),
                RecorderMsg::Finish(end) => {
                    while let Ok(check) = checker.results.try_recv() {
                        recorder.self_verified(&check, &mut out);
                    }
                    recorder.finish(end, &mut out);
                    let _ = events.send(preparer.prepare(out));
                    return;
                }
            }
        }
        if last_tick.elapsed() >= tick {
            last_tick = Instant::now();
            recorder.tick(last_tick, &mut out);
            while let Ok(check) = checker.results.try_recv() {
                recorder.self_verified(&check, &mut out);
            }
        }
        if !out.is_empty() && events.send(preparer.prepare(out.drain(..))).is_err() {
            return;
        }
    }
}

fn relay_client_to_server(
    from: File,
    to: Arc<Mutex<Option<ChildStdin>>>,
    rec: QueueSender<RecorderMsg>,
    ctl: Sender<Control>,
    max: usize,
) {
    relay(from, Direction::ClientToServer, &rec, max, |chunk| {
        let mut guard = to.lock().unwrap_or_else(|p| p.into_inner());
        let ok = match guard.as_mut() {
            Some(stdin) => stdin.write_all(chunk).is_ok(),
            None => false,
        };
        if !ok {
            // Dropping our end tells the server, if it still runs, that no more input comes.
            guard.take();
        }
        ok
    });
    let _ = ctl.send(Control::ClientEof);
}

fn relay_server_to_client(
    from: std::process::ChildStdout,
    mut to: File,
    rec: QueueSender<RecorderMsg>,
    ctl: Sender<Control>,
    max: usize,
) {
    let mut told = false;
    relay(from, Direction::ServerToClient, &rec, max, |chunk| {
        let ok = to.write_all(chunk).is_ok();
        if !ok && !told {
            told = true;
            let _ = ctl.send(Control::ClientGone);
        }
        ok
    });
    let _ = ctl.send(Control::ServerStdoutEof);
}

/// Copy `from` to `deliver` chunk by chunk until EOF. The copy of each complete line goes to
/// the recorder *before* its last byte is delivered: whatever the peer answers is caused by
/// bytes it received, so the recorder always sees a request before its response, and a
/// message's time is when the tap read it, not when a busy thread got round to it.
fn relay(
    mut from: impl Read,
    direction: Direction,
    rec: &QueueSender<RecorderMsg>,
    max: usize,
    mut deliver: impl FnMut(&[u8]) -> bool,
) {
    let mut buf = vec![0u8; READ_BUF];
    let mut splitter = LineSplitter::new(direction, max);
    let mut undelivered = false;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        // Queued before delivery, the recorder woken after it: see `queue`.
        splitter.feed(&buf[..n], undelivered, &mut |f| {
            rec.push_quiet(RecorderMsg::Frame(f))
        });
        if !undelivered && !deliver(&buf[..n]) {
            undelivered = true;
            rec.push_quiet(RecorderMsg::DeliveryFailed {
                direction,
                chunk: splitter.chunks(),
                bytes: n as u64,
            });
        }
        rec.wake();
    }
    splitter.finish(&mut |f| rec.push(RecorderMsg::Frame(f)));
}

/// Our stdin as an unbuffered `File` (a duplicate descriptor).
fn dup_stdin() -> Result<File, TapError> {
    let fd = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|source| TapError::Io {
            what: "duplicating stdin",
            source,
        })?;
    Ok(File::from(fd))
}

/// Our stdout as an unbuffered `File`: `std::io::Stdout` is line-buffered, a relay must not be.
fn dup_stdout() -> Result<File, TapError> {
    let fd = std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|source| TapError::Io {
            what: "duplicating stdout",
            source,
        })?;
    Ok(File::from(fd))
}
