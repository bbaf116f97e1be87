//! The tap's ledger writer: a thread that group-commits events as they come, retries while the
//! ledger is unwritable (disk full, permissions), and never loses an event silently — if it
//! must shed events to bound memory, it says how many, when, and why, in the ledger itself.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use mcptrail_event::{Event, EventKind};
use mcptrail_ledger::{Ledger, PreparedEvent};
use mcptrail_redact::Redactor;

/// Most events committed in one batch.
const MAX_BATCH: usize = 4096;

/// What the writer did, reported when it stops.
#[derive(Debug, Clone, Default)]
pub struct WriterStats {
    /// Events made durable.
    pub written: u64,
    /// Events that could not be written (ledger unwritable past the memory bound or at exit).
    pub lost: u64,
    /// The last write error, if any.
    pub last_error: Option<String>,
}

/// Handle to the writer thread.
#[derive(Debug)]
pub struct LedgerWriter {
    tx: Sender<Vec<PreparedEvent>>,
    handle: JoinHandle<WriterStats>,
    written: Arc<AtomicU64>,
}

impl LedgerWriter {
    /// Start the writer. While the ledger fails, up to `max_held` events wait in memory; at
    /// exit it keeps retrying for `exit_retry` before giving up.
    pub fn spawn(ledger: Ledger, max_held: usize, exit_retry: Duration) -> Self {
        let (tx, rx) = crossbeam_channel::bounded::<Vec<PreparedEvent>>(4096);
        let written = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&written);
        let handle = std::thread::Builder::new()
            .name("mcptrail-ledger-writer".into())
            .spawn(move || {
                crate::run_in_background();
                run(ledger, rx, max_held, exit_retry, &counter)
            })
            .expect("spawn writer thread");
        LedgerWriter {
            tx,
            handle,
            written,
        }
    }

    /// Events made durable so far (live; for lag metrics).
    pub fn written(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.written)
    }

    /// A sender for serialised events (see [`prepare`]; one `Vec` per batch; it blocks only
    /// if 4096 batches are queued).
    pub fn sender(&self) -> Sender<Vec<PreparedEvent>> {
        self.tx.clone()
    }

    /// Stop accepting events, write what is queued, and report.
    pub fn finish(self) -> WriterStats {
        drop(self.tx);
        self.handle.join().unwrap_or_else(|_| WriterStats {
            last_error: Some("ledger writer panicked".into()),
            ..Default::default()
        })
    }
}

/// Serialise events for the writer, on the caller's thread: that work then overlaps the
/// writer's `fdatasync` instead of queueing behind it. Events that carry payloads go through
/// [`Preparer::prepare`] instead, which redacts them first.
pub fn prepare(events: impl IntoIterator<Item = Event>) -> Vec<PreparedEvent> {
    events
        .into_iter()
        .filter_map(|e| match PreparedEvent::new(e) {
            Ok(p) => Some(p),
            Err(err) => {
                // Not reachable with the event types as they are; say so rather than panic.
                eprintln!("mcptrail: an audit event could not be serialised and is lost: {err}");
                None
            }
        })
        .collect()
}

/// The last step before an event is serialised: redaction (when configured), then previews
/// cut to their configured length. The recorder keeps [`PREVIEW_SCAN_MARGIN`] more characters
/// than the preview shows, so a secret that straddles the cut is still recognised whole and
/// no fragment of it survives the cut.
#[derive(Debug, Clone)]
pub struct Preparer {
    redactor: Option<Arc<Redactor>>,
    preview_chars: usize,
}

/// Characters the recorder keeps past the preview length, for the redactor to see.
pub const PREVIEW_SCAN_MARGIN: usize = 4096;

impl Preparer {
    /// A preparer that redacts with `redactor` (none: payloads are stored as sent) and cuts
    /// previews to `preview_chars`.
    pub fn new(redactor: Option<Arc<Redactor>>, preview_chars: usize) -> Self {
        Preparer {
            redactor,
            preview_chars,
        }
    }

    /// Redact, cut and serialise `events`.
    pub fn prepare(&self, events: impl IntoIterator<Item = Event>) -> Vec<PreparedEvent> {
        prepare(events.into_iter().map(|mut e| {
            if let Some(r) = &self.redactor {
                r.redact_event(&mut e);
            }
            let n = self.preview_chars;
            if let Some(s) = e.response_summary.as_mut() {
                cut(&mut s.preview, n);
                cut(&mut s.error_message, n);
            }
            if let Some(m) = e.malformed.as_mut() {
                cut(&mut m.preview, n);
            }
            e
        }))
    }
}

fn cut(s: &mut Option<String>, n: usize) {
    if let Some(text) = s.as_mut() {
        if let Some((i, _)) = text.char_indices().nth(n) {
            text.truncate(i);
            text.push('…');
        }
    }
}

fn run(
    mut ledger: Ledger,
    rx: Receiver<Vec<PreparedEvent>>,
    max_held: usize,
    exit_retry: Duration,
    written: &AtomicU64,
) -> WriterStats {
    let mut stats = WriterStats::default();
    let mut held: Vec<PreparedEvent> = Vec::new();
    let mut closed = false;
    let mut closed_at: Option<Instant> = None;
    let mut failing_since: Option<(Instant, String)> = None;
    let mut shed = 0u64;
    let mut backoff = Duration::from_millis(20);
    let mut checkpoint_reported: Option<(Instant, String)> = None;
    loop {
        if held.is_empty() && !closed {
            match rx.recv() {
                Ok(v) => held.extend(v),
                Err(_) => closed = true,
            }
        }
        while held.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(v) => held.extend(v),
                Err(crossbeam_channel::TryRecvError::Empty) => break,
                Err(crossbeam_channel::TryRecvError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        if held.is_empty() {
            if closed {
                // The session is over: have a signed checkpoint cover its last record.
                if let Err(err) = ledger.checkpoint_now() {
                    stats.last_error = Some(err.to_string());
                    if matches!(err, mcptrail_ledger::LedgerError::Anchor { .. }) {
                        // Signed locally, not anchored: record that in the ledger too, and
                        // sign again so the local checkpoint covers that record as well.
                        report_checkpoint_problem(&mut ledger, err, &mut checkpoint_reported);
                        let _ = ledger.checkpoint_now();
                    } else {
                        eprintln!("mcptrail: could not sign the closing checkpoint: {err}");
                    }
                }
                break;
            }
            continue;
        }
        let take = held.len().min(MAX_BATCH);
        let result = ledger.append_prepared(&held[..take]);
        match result {
            Ok(_) => {
                stats.written += take as u64;
                written.fetch_add(take as u64, Ordering::Relaxed);
                held.drain(..take);
                backoff = Duration::from_millis(20);
                if let Some(err) = ledger.take_checkpoint_problem() {
                    report_checkpoint_problem(&mut ledger, err, &mut checkpoint_reported);
                }
                if let Some((since, err)) = failing_since.take() {
                    eprintln!(
                        "mcptrail: ledger writable again after {:.1}s",
                        since.elapsed().as_secs_f64()
                    );
                    let mut e = Event::new(EventKind::SystemError);
                    e.detail = Some(serde_json::json!({
                        "error": "ledger_unwritable",
                        "message": err,
                        "duration_s": since.elapsed().as_secs_f64(),
                        "events_lost": shed,
                        "explanation": "events observed while the ledger could not be written were held in memory and written late; events_lost counts those shed to bound memory",
                    }));
                    held.splice(0..0, prepare([e]));
                    shed = 0;
                }
            }
            Err(err) => {
                let msg = err.to_string();
                if failing_since.is_none() {
                    eprintln!("mcptrail: cannot write the audit ledger ({msg}); holding events in memory and retrying");
                    failing_since = Some((Instant::now(), msg.clone()));
                }
                stats.last_error = Some(msg);
                if closed {
                    let since = *closed_at.get_or_insert_with(Instant::now);
                    if since.elapsed() >= exit_retry {
                        stats.lost += held.len() as u64;
                        eprintln!(
                            "mcptrail: giving up: {} audit events could not be written",
                            stats.lost
                        );
                        break;
                    }
                }
                // Keep draining so the relay never blocks on a dead ledger; shed beyond the bound.
                let deadline = Instant::now() + backoff;
                loop {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() || closed {
                        if closed {
                            std::thread::sleep(left);
                        }
                        break;
                    }
                    match rx.recv_timeout(left) {
                        Ok(v) => held.extend(v),
                        Err(RecvTimeoutError::Timeout) => break,
                        Err(RecvTimeoutError::Disconnected) => closed = true,
                    }
                }
                if held.len() > max_held {
                    let excess = held.len() - max_held;
                    // Shed the newest: the oldest are the context an investigator needs first.
                    held.truncate(max_held);
                    shed += excess as u64;
                    stats.lost += excess as u64;
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
    stats
}

/// A checkpoint could not be signed or anchored (the records are safe): say so on stderr and
/// in the ledger, once per distinct problem and at most every minute.
fn report_checkpoint_problem(
    ledger: &mut Ledger,
    err: mcptrail_ledger::LedgerError,
    last: &mut Option<(Instant, String)>,
) {
    let message = err.to_string();
    if let Some((at, m)) = last {
        if *m == message && at.elapsed() < Duration::from_secs(60) {
            return;
        }
    }
    eprintln!("mcptrail: warning: {message}");
    let mut e = Event::new(EventKind::SystemError);
    e.detail = Some(serde_json::json!({
        "error": "checkpoint_failed",
        "message": message,
        "explanation": "the events are written; a signed checkpoint over them could not be stored or anchored. The next checkpoint tries again; until one is anchored, truncating the newest records would not be detectable from the anchor",
    }));
    // Best effort: the problem is on stderr already if this append fails too.
    let _ = ledger.append(&mut [e]);
    *last = Some((Instant::now(), message));
}
