//! The shipping loop of one sink: read → filter → batch → send (retrying with backoff) →
//! commit the cursor; plus the lag figure and the alerts.
//!
//! # Guarantees
//!
//! - **At-least-once.** The cursor moves past a record only after the receiver acknowledged
//!   the batch holding it (or the filter excluded it). A crash, a kill -9, a dead receiver or
//!   a full disk on the receiver means the batch is sent again later, never skipped; receivers
//!   dedupe by `event_id`.
//! - **Bounded memory.** At most one batch (`batch_max_events` / `batch_max_bytes`, plus one
//!   event) is held; the ledger is the buffer.
//! - **No half records.** The tail reader returns complete lines only.
//! - **In order.** Batches go out in `seq` order; one batch at a time per sink.
//! - **One shipper per sink.** A shipper holds `sinks/<name>.lock` (`flock`) while it runs:
//!   `mcptrail ship` refuses to start beside another, and the background shippers of several
//!   concurrent `wrap` processes take turns (one ships, the others wait for the lock), so the
//!   receiver does not get every event once per tap.
//!
//! # Alerts
//!
//! When a sink falls behind (`alert_lag_records`, `alert_lag_secs`) or keeps failing
//! (`alert_failing_secs`), an `alert` event is appended to the ledger, once per episode (the
//! condition has to clear before it is raised again). The ledger serialises writers with an
//! advisory lock, so the shipper appends safely while `wrap` processes write too (the same
//! way ten concurrent taps share one ledger). The alert is then shipped like any event.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use mcptrail_event::{Event, EventKind};
use mcptrail_ledger::{Ledger, LedgerConfig};

use crate::backoff::{Backoff, SplitMix64};
use crate::config::SinkConfig;
use crate::cursor::{Cursor, CursorWriter};
use crate::sink::Sink;
use crate::tail::{ledger_head, LedgerTail, ShipRecord};
use crate::Error;

/// How a shipper runs.
#[derive(Debug, Clone)]
pub struct ShipOptions {
    /// Keep tailing the ledger after catching up (else return once caught up).
    pub follow: bool,
    /// How often to look for new records when caught up.
    pub poll_interval: Duration,
    /// Set to stop. The shipper returns at once (what it had not delivered is delivered by
    /// the next run), or, with `drain_on_stop`, first reads to the end of the ledger and sends
    /// what it finds, one attempt per batch.
    pub stop: Arc<AtomicBool>,
    /// See `stop`: a tap's shippers drain, so the session's last events go out too.
    pub drain_on_stop: bool,
    /// Seed of the backoff jitter (`None`: from the OS).
    pub jitter_seed: Option<u64>,
    /// Stop retrying once deliveries have failed for this long (`None`: retry until
    /// stopped). The cursor stays where it is; [`SinkStatus::gave_up`] says so.
    pub give_up_after: Option<Duration>,
}

impl Default for ShipOptions {
    fn default() -> Self {
        ShipOptions {
            follow: false,
            poll_interval: Duration::from_millis(200),
            stop: Arc::new(AtomicBool::new(false)),
            drain_on_stop: false,
            jitter_seed: None,
            give_up_after: None,
        }
    }
}

/// What a sink has done and how far behind it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SinkStatus {
    /// The sink.
    pub name: String,
    /// Records delivered (acknowledged) in this run.
    pub shipped: u64,
    /// Records the filter excluded in this run.
    pub filtered: u64,
    /// Batches delivered in this run.
    pub batches: u64,
    /// Failed delivery attempts in this run.
    pub failures: u64,
    /// The committed cursor.
    pub cursor: u64,
    /// The newest `seq` of the ledger as last seen.
    pub head: u64,
    /// Time of the oldest record not yet delivered (RFC 3339), when known.
    pub oldest_unshipped: Option<String>,
    /// Since when deliveries fail without a success in between.
    pub failing_since: Option<SystemTime>,
    /// The last delivery error.
    pub last_error: Option<String>,
    /// Alerts appended to the ledger in this run.
    pub alerts_raised: u64,
    /// Why the last alert could not be appended, if it could not.
    pub alert_error: Option<String>,
    /// The run ended because deliveries kept failing (`give_up_after`).
    pub gave_up: bool,
}

impl SinkStatus {
    /// Records behind the ledger head.
    pub fn lag_records(&self) -> u64 {
        self.head.saturating_sub(self.cursor)
    }

    /// Age of the oldest record not yet delivered.
    pub fn lag_age(&self) -> Option<Duration> {
        let t = mcptrail_event::parse_rfc3339(self.oldest_unshipped.as_deref()?).ok()?;
        let age = time::OffsetDateTime::now_utc() - t;
        Some(age.try_into().unwrap_or_default())
    }
}

/// Where alerts go.
pub trait AlertSink: Send {
    /// Record `alert`; an error is kept in the status, shipping goes on.
    fn raise(&mut self, alert: Event) -> Result<(), String>;
}

/// Alerts appended to the ledger of `data_dir` (opened for each alert: they are rare).
#[derive(Debug, Clone)]
pub struct LedgerAlerts {
    /// The data directory.
    pub data_dir: std::path::PathBuf,
    /// The writer settings (MACs, checkpoints) the taps use.
    pub config: LedgerConfig,
}

impl AlertSink for LedgerAlerts {
    fn raise(&mut self, alert: Event) -> Result<(), String> {
        let mut ledger =
            Ledger::open(&self.data_dir, self.config.clone()).map_err(|e| e.to_string())?;
        ledger
            .append(&mut [alert])
            .map(drop)
            .map_err(|e| e.to_string())
    }
}

/// One sink's consumer.
pub struct Shipper {
    data_dir: std::path::PathBuf,
    cfg: SinkConfig,
    sink: Box<dyn Sink>,
    cursor: Cursor,
    /// Writes the cursor off this thread while `run` runs.
    committer: Option<CursorWriter>,
    alerts: Option<Box<dyn AlertSink>>,
    status: Arc<Mutex<SinkStatus>>,
    lag_alerted: bool,
    failing_alerted: bool,
    head_checked: Option<Instant>,
}

/// Sleep up to `d`, waking early when `stop` is set; false if stopped.
fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) -> bool {
    let end = Instant::now() + d;
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let now = Instant::now();
        if now >= end {
            return true;
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}

impl Shipper {
    /// A shipper for `cfg` delivering through `sink`, appending alerts to `alerts`.
    pub fn new(
        data_dir: &std::path::Path,
        cfg: SinkConfig,
        mut sink: Box<dyn Sink>,
        alerts: Option<Box<dyn AlertSink>>,
    ) -> Self {
        sink.attach_ledger(data_dir);
        let status = SinkStatus {
            name: cfg.name.clone(),
            ..SinkStatus::default()
        };
        Shipper {
            data_dir: data_dir.to_path_buf(),
            cursor: Cursor::new(data_dir, &cfg.name),
            committer: None,
            cfg,
            sink,
            alerts,
            status: Arc::new(Mutex::new(status)),
            lag_alerted: false,
            failing_alerted: false,
            head_checked: None,
        }
    }

    /// A live view of the status (for a progress line or `wrap`).
    pub fn status_handle(&self) -> Arc<Mutex<SinkStatus>> {
        self.status.clone()
    }

    fn update(&self, f: impl FnOnce(&mut SinkStatus)) {
        let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut s);
    }

    fn snapshot(&self) -> SinkStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn cursor_error(&self, problem: String) -> Error {
        Error::Cursor {
            sink: self.cfg.name.clone(),
            path: self.cursor.path().to_path_buf(),
            problem,
            fix: format!(
                "shipping stopped so that no event is skipped or sent to the wrong place; if this cursor is stale on purpose, reset it with `mcptrail ship --sink {} --reset-cursor SEQ`",
                self.cfg.name
            ),
        }
    }

    /// Open the ledger at the cursor, checking the record there is the one the cursor names.
    fn open_tail(&mut self) -> Result<LedgerTail, Error> {
        let state = self.cursor.load()?;
        let (seq, id) = state.map_or((0, String::new()), |s| (s.seq, s.event_id));
        self.update(|s| s.cursor = seq);
        if seq == 0 {
            return Ok(LedgerTail::open(&self.data_dir, 1));
        }
        // Retention removed the cursor's record (under signed tombstones, which `verify`
        // checks): it cannot be compared any more; go on after the removed records. Records
        // between the cursor and them were removed before this sink shipped them.
        let removed = mcptrail_ledger::removed_through(&self.data_dir)?.map_or(0, |t| t.last_seq);
        if seq <= removed {
            return Ok(LedgerTail::open(&self.data_dir, removed + 1));
        }
        let mut tail = LedgerTail::open(&self.data_dir, seq);
        match tail.next_record() {
            Ok(Some(r)) if r.seq == seq && r.event_id == id => Ok(tail),
            Ok(Some(r)) => Err(self.cursor_error(format!(
                "the record at seq {seq} has event_id {} but the cursor names {id}: the cursor belongs to another ledger",
                r.event_id
            ))),
            Ok(None) | Err(Error::LedgerContent { .. }) => {
                let head = ledger_head(&self.data_dir)?.map_or(0, |h| h.0);
                Err(self.cursor_error(format!(
                    "it is at seq {seq} but the ledger {}",
                    if head == 0 { "is empty".to_string() } else { format!("ends at seq {head}") }
                )))
            }
            Err(e) => Err(e),
        }
    }

    fn refresh_head(&mut self, force: bool) {
        if !force
            && self
                .head_checked
                .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        self.head_checked = Some(Instant::now());
        if let Ok(Some((seq, _))) = ledger_head(&self.data_dir) {
            self.update(|s| s.head = s.head.max(seq));
        }
    }

    fn check_alerts(&mut self) {
        self.refresh_head(false);
        let st = self.snapshot();
        let policy = self.cfg.alerts;
        let lag = st.lag_records();
        let age = st.lag_age().filter(|_| lag > 0);
        let lagging = policy.lag_records.is_some_and(|t| lag > t)
            || policy.lag_age.zip(age).is_some_and(|(t, a)| a > t);
        let failing_for = st.failing_since.and_then(|t| t.elapsed().ok());
        let failing = policy
            .failing_for
            .zip(failing_for)
            .is_some_and(|(t, f)| f > t);
        let mut raise = Vec::new();
        if lagging && !self.lag_alerted {
            raise.push((
                "sink_lag",
                format!(
                    "sink \"{}\" is {lag} records behind the ledger{}",
                    self.cfg.name,
                    age.map(|a| format!(", the oldest unshipped from {}s ago", a.as_secs()))
                        .unwrap_or_default()
                ),
            ));
        }
        if failing && !self.failing_alerted {
            raise.push((
                "sink_failing",
                format!(
                    "sink \"{}\" has failed for {}s: {}",
                    self.cfg.name,
                    failing_for.unwrap_or_default().as_secs(),
                    st.last_error.as_deref().unwrap_or("unknown error")
                ),
            ));
        }
        self.lag_alerted = lagging;
        self.failing_alerted = failing;
        if self.alerts.is_none() {
            return;
        }
        for (rule, summary) in raise {
            let mut e = Event::new(EventKind::Alert);
            e.detail = Some(serde_json::json!({
                "rule": rule,
                "severity": "high",
                "summary": summary,
                "sink": self.cfg.name,
                "sink_type": self.cfg.target.type_name(),
                "lag_records": lag,
                "cursor": st.cursor,
                "head": st.head,
                "oldest_unshipped": st.oldest_unshipped,
                "failing_secs": failing_for.map(|f| f.as_secs()),
                "last_error": st.last_error,
            }));
            let raised = self.alerts.as_mut().expect("checked above").raise(e);
            match raised {
                Ok(()) => self.update(|s| {
                    s.alerts_raised += 1;
                    s.alert_error = None;
                }),
                Err(err) => self.update(|s| s.alert_error = Some(err)),
            }
        }
    }

    /// Deliver `batch` (retrying until it is acknowledged or `stop`), then commit `upto`.
    /// Returns false when stopped before delivering.
    fn deliver(
        &mut self,
        batch: &[ShipRecord],
        upto: &(u64, String),
        backoff: &mut Backoff,
        opts: &ShipOptions,
        final_attempt: bool,
    ) -> Result<bool, Error> {
        loop {
            match self.sink.send(batch) {
                Ok(()) => {
                    backoff.reset();
                    self.commit(upto.0, &upto.1)?;
                    let n = batch.len() as u64;
                    self.update(|s| {
                        s.shipped += n;
                        s.batches += 1;
                        s.cursor = upto.0;
                        s.head = s.head.max(upto.0);
                        s.failing_since = None;
                        s.oldest_unshipped = None;
                    });
                    self.check_alerts();
                    return Ok(true);
                }
                Err(e) => {
                    self.update(|s| {
                        s.failures += 1;
                        s.last_error = Some(e.to_string());
                        s.failing_since.get_or_insert_with(SystemTime::now);
                    });
                    self.check_alerts();
                    if final_attempt {
                        return Ok(false);
                    }
                    let failing_for = self
                        .snapshot()
                        .failing_since
                        .and_then(|t| t.elapsed().ok())
                        .unwrap_or_default();
                    if opts.give_up_after.is_some_and(|g| failing_for >= g) {
                        self.update(|s| s.gave_up = true);
                        return Ok(false);
                    }
                    let delay = backoff
                        .next_delay()
                        .max(e.retry_after.unwrap_or_default().min(self.cfg.backoff.max));
                    if !sleep_unless_stopped(delay, &opts.stop) {
                        return Ok(false);
                    }
                }
            }
        }
    }

    /// Take the sink's lock: at once, or (following) when the shipper holding it stops.
    /// `None` when stopped while waiting.
    fn lock(&self, opts: &ShipOptions) -> Result<Option<std::fs::File>, Error> {
        loop {
            match try_lock_sink(&self.data_dir, &self.cfg.name) {
                Err(Error::Busy { .. }) if opts.follow => {
                    if !sleep_unless_stopped(Duration::from_secs(1), &opts.stop) {
                        return Ok(None);
                    }
                }
                other => return other.map(Some),
            }
        }
    }

    /// Move the cursor to `seq` (acknowledged or filtered): handed to the background writer
    /// while `run` runs, written in place otherwise.
    fn commit(&self, seq: u64, event_id: &str) -> Result<(), Error> {
        match &self.committer {
            Some(w) => w.commit(&self.cursor, seq, event_id),
            None => self.cursor.store(seq, event_id),
        }
    }

    /// Ship until caught up (or, with `follow`, until `stop`). Errors are what stops a sink
    /// for good (a corrupt cursor, an unreadable ledger, another shipper of the same sink);
    /// delivery failures are retried.
    ///
    /// The cursor is written by a thread of its own ([`CursorWriter`]): the next batch goes
    /// out while the last acknowledged position is made durable, and `run` returns only once
    /// the last one is on disk (the sink's lock is held until then).
    pub fn run(&mut self, opts: &ShipOptions) -> Result<SinkStatus, Error> {
        let Some(_lock) = self.lock(opts)? else {
            return Ok(self.snapshot());
        };
        self.committer = Some(CursorWriter::start(self.cursor.clone()));
        let shipped = self.ship(opts);
        let written = self.committer.take().map_or(Ok(()), CursorWriter::finish);
        let status = shipped?;
        written?;
        Ok(status)
    }

    fn ship(&mut self, opts: &ShipOptions) -> Result<SinkStatus, Error> {
        let mut tail = self.open_tail()?;
        let mut backoff = Backoff::new(
            self.cfg.backoff,
            opts.jitter_seed
                .map_or_else(SplitMix64::from_os, SplitMix64::new),
        );
        let policy = self.cfg.batch;
        let mut batch: Vec<ShipRecord> = Vec::with_capacity(policy.max_events.min(4096));
        let mut batch_bytes = 0usize;
        let mut batch_started: Option<Instant> = None;
        // The last record read (shipped or filtered) and the last committed.
        let mut upto: Option<(u64, String)> = None;
        let mut filtered_since_commit = 0u64;
        // Whether the status holds the time of the first record read since the last commit.
        let mut oldest_known = false;
        self.refresh_head(true);
        loop {
            let stopping = opts.stop.load(Ordering::Relaxed);
            if stopping && !opts.drain_on_stop {
                break;
            }
            let mut at_end = false;
            let mut fatal: Option<Error> = None;
            // When stopping, this still drains what the ledger holds (one attempt per batch):
            // a tap's last events, written just before it stops its shippers, go out too.
            while batch.len() < policy.max_events && batch_bytes < policy.max_bytes {
                let next = match tail.next_record() {
                    Ok(next) => next,
                    Err(e) => {
                        // Deliver what was read before the problem, then stop there.
                        fatal = Some(e);
                        at_end = true;
                        break;
                    }
                };
                match next {
                    Some(rec) => {
                        if !oldest_known {
                            let t = rec.time.clone();
                            self.update(|s| s.oldest_unshipped = Some(t));
                            oldest_known = true;
                        }
                        upto = Some((rec.seq, rec.event_id.clone()));
                        if self.cfg.filter.accepts(&rec.kind, &rec.labels) {
                            batch_started.get_or_insert_with(Instant::now);
                            batch_bytes += rec.line.len();
                            batch.push(rec);
                        } else {
                            filtered_since_commit += 1;
                            self.update(|s| s.filtered += 1);
                        }
                    }
                    None => {
                        at_end = true;
                        break;
                    }
                }
            }
            if let Some((seq, _)) = &upto {
                let seq = *seq;
                self.update(|s| s.head = s.head.max(seq));
            }
            let full = batch.len() >= policy.max_events || batch_bytes >= policy.max_bytes;
            let waited = batch_started.is_some_and(|t| t.elapsed() >= policy.max_wait);
            let send_now = !batch.is_empty()
                && (full || waited || stopping || fatal.is_some() || (at_end && !opts.follow));
            if send_now {
                let target = upto.clone().expect("a batch implies a record");
                if !self.deliver(&batch, &target, &mut backoff, opts, stopping)? {
                    break;
                }
                batch.clear();
                batch_bytes = 0;
                batch_started = None;
                filtered_since_commit = 0;
                oldest_known = false;
            } else if batch.is_empty()
                && filtered_since_commit > 0
                && (at_end || filtered_since_commit >= 10_000 || stopping)
            {
                // Only filtered records since the last commit: move the cursor past them.
                let (seq, id) = upto.clone().expect("filtered records were read");
                self.commit(seq, &id)?;
                self.update(|s| {
                    s.cursor = seq;
                    s.oldest_unshipped = None;
                });
                filtered_since_commit = 0;
                oldest_known = false;
            }
            if let Some(e) = fatal {
                return Err(e);
            }
            if stopping {
                if at_end {
                    break;
                }
                continue;
            }
            if at_end {
                if batch.is_empty() && filtered_since_commit == 0 {
                    self.update(|s| s.oldest_unshipped = None);
                    oldest_known = false;
                }
                self.check_alerts();
                if !opts.follow && batch.is_empty() {
                    break;
                }
                let wait = match batch_started {
                    Some(t) => policy
                        .max_wait
                        .saturating_sub(t.elapsed())
                        .min(opts.poll_interval),
                    None => opts.poll_interval,
                };
                sleep_unless_stopped(wait, &opts.stop);
            }
        }
        self.refresh_head(true);
        Ok(self.snapshot())
    }
}

/// One background shipper: its name, live status and thread.
type RunningSink = (
    String,
    Arc<Mutex<SinkStatus>>,
    std::thread::JoinHandle<Result<SinkStatus, Error>>,
);

/// Running shippers (one thread per sink), e.g. inside `wrap`.
pub struct ShippingHandle {
    stop: Arc<AtomicBool>,
    threads: Vec<RunningSink>,
}

impl ShippingHandle {
    /// The current status of every sink.
    pub fn statuses(&self) -> Vec<SinkStatus> {
        self.threads
            .iter()
            .map(|(_, s, _)| s.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .collect()
    }

    /// Ask every shipper to send what it holds once more and stop; wait up to `grace`. A
    /// shipper still busy then is left behind (its cursor is safe: what it did not commit is
    /// shipped again next time).
    pub fn stop(self, grace: Duration) -> Vec<(String, Result<SinkStatus, String>)> {
        self.stop.store(true, Ordering::Relaxed);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline && self.threads.iter().any(|(_, _, t)| !t.is_finished()) {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.threads
            .into_iter()
            .map(|(name, status, t)| {
                if !t.is_finished() {
                    let s = status.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    return (name, Ok(s));
                }
                let r = match t.join() {
                    Ok(r) => r.map_err(|e| e.to_string()),
                    Err(_) => Err("the shipping thread panicked".to_string()),
                };
                (name, r)
            })
            .collect()
    }
}

/// Start one background shipper per sink, tailing the ledger of `data_dir` (follow mode), at
/// a low scheduling priority. A sink that cannot be set up (a missing key, say) is returned
/// with its error and the others start: recording must not depend on shipping, and what a
/// sink misses waits in the ledger for `mcptrail ship`.
pub fn spawn(
    data_dir: &std::path::Path,
    sinks: &[SinkConfig],
    alerts: Option<LedgerAlerts>,
) -> (ShippingHandle, Vec<Error>) {
    let mut built = Vec::new();
    let mut failed = Vec::new();
    for cfg in sinks {
        match crate::sink::build(cfg) {
            Ok(sink) => built.push((cfg.clone(), sink)),
            Err(e) => failed.push(e),
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for (cfg, sink) in built {
        let name = cfg.name.clone();
        let alerts = alerts.clone().map(|a| Box::new(a) as Box<dyn AlertSink>);
        let mut shipper = Shipper::new(data_dir, cfg, sink, alerts);
        let status = shipper.status_handle();
        let opts = ShipOptions {
            follow: true,
            stop: stop.clone(),
            drain_on_stop: true,
            ..ShipOptions::default()
        };
        let spawned = std::thread::Builder::new()
            .name(format!("mcptrail-sink-{name}"))
            .spawn(move || {
                run_in_background();
                shipper.run(&opts)
            });
        match spawned {
            Ok(t) => threads.push((name, status, t)),
            Err(e) => failed.push(Error::Setup {
                sink: name,
                message: format!("cannot start its thread: {e}"),
            }),
        }
    }
    (ShippingHandle { stop, threads }, failed)
}

/// Lower the calling thread's priority (Linux keeps a nice value per thread): shipping is
/// background work, the relay and the recorder come first. Best effort.
pub(crate) fn run_in_background() {
    let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 10);
}

/// Take `sinks/<name>.lock` (held while the returned file is open), or [`Error::Busy`] when
/// another shipper of that sink holds it. Anything that moves a cursor holds it.
pub fn try_lock_sink(data_dir: &std::path::Path, name: &str) -> Result<std::fs::File, Error> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = data_dir.join(crate::cursor::SINKS_DIR);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(Error::io(&dir))?;
    let path = dir.join(format!("{name}.lock"));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(Error::io(&path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Busy {
            sink: name.to_string(),
            path,
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io(&path)(e)),
    }
}

/// A sink's cursor position and lag without shipping (for `doctor` and `ship --status`).
pub fn lag(data_dir: &std::path::Path, cfg: &SinkConfig) -> Result<SinkStatus, Error> {
    let cursor = Cursor::new(data_dir, &cfg.name).load()?;
    let seq = cursor.map_or(0, |c| c.seq);
    let head = ledger_head(data_dir)?.map_or(0, |h| h.0);
    let mut s = SinkStatus {
        name: cfg.name.clone(),
        cursor: seq,
        head,
        ..SinkStatus::default()
    };
    if head > seq {
        let mut tail = LedgerTail::open(data_dir, seq + 1);
        if let Ok(Some(r)) = tail.next_record() {
            s.oldest_unshipped = Some(r.time);
        }
    }
    Ok(s)
}
