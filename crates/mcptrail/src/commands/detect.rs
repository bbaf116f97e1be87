//! `mcptrail detect` (run the rules over the ledger), `mcptrail alerts` (list the alert
//! events), and the streaming detector that `wrap` and `gateway` run in the background.
//!
//! Both detection paths feed ledger events in `seq` order to the same engine, so they raise
//! the same alerts with the same ids; whoever appends skips ids already in the ledger.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use mcptrail_detect::{Alert, BaselineStore, DetectCursor, Detector, Engine, RuleSet, Severity};
use mcptrail_event::{Event, EventKind};
use mcptrail_ledger::{Ledger, LedgerConfig, LedgerReader};

use super::{parse_time_bound, synced_index};
use crate::config::Config;

#[derive(clap::Args, Debug)]
pub(crate) struct DetectArgs {
    /// Only events from this time: RFC 3339, a date, or an age like 14d.
    #[arg(long)]
    since: Option<String>,
    /// Extra rule file (TOML, `[[rules]]`); repeatable. Added to the configured rules.
    #[arg(long = "rules", value_name = "FILE")]
    rules: Vec<PathBuf>,
    /// Without the built-in rule pack.
    #[arg(long)]
    no_builtin: bool,
    /// Append the alerts to the ledger as `alert` events (those already there are skipped).
    #[arg(long)]
    append: bool,
    /// JSON Lines: one `alert` event per alert.
    #[arg(long)]
    json: bool,
    /// First look at the MCP client configurations and record what changed since the last
    /// look (servers unwrapped or added without `mcptrail wrap`) as `system.config` events.
    #[arg(long)]
    scan_clients: bool,
    /// Judge silence (open sessions whose tap stopped writing, hours without ingestion) as
    /// of this time instead of now: RFC 3339, a date, or an age like 1h.
    #[arg(long, value_name = "TIME", conflicts_with = "event_time_only")]
    as_of: Option<String>,
    /// Judge by event time only: no judgement against the wall clock at the end of the
    /// ledger (results then depend on the ledger alone).
    #[arg(long)]
    event_time_only: bool,
    /// Without the stored baselines (the anomaly rules judge nothing).
    #[arg(long)]
    no_baseline: bool,
}

#[derive(clap::Args, Debug)]
pub(crate) struct AlertsArgs {
    /// From this time: RFC 3339, a date, or an age like 2h.
    #[arg(long)]
    since: Option<String>,
    /// Only alerts at least this severe: info, low, medium, high, critical.
    #[arg(long)]
    severity: Option<String>,
    /// Only alerts of this rule.
    #[arg(long)]
    rule: Option<String>,
    /// JSON Lines: the stored alert events.
    #[arg(long)]
    json: bool,
}

fn load_rules(cfg: &Config, extra: &[PathBuf], no_builtin: bool) -> anyhow::Result<RuleSet> {
    let mut dc = cfg.detect.clone();
    if no_builtin {
        dc.builtin = false;
        dc.disable.retain(|id| !id.starts_with("builtin."));
    }
    Ok(RuleSet::load(&dc, extra, cfg.base_dir.as_deref())?)
}

/// Append alert events to the ledger.
fn append_alerts(data_dir: &Path, ledger: &LedgerConfig, alerts: &[Alert]) -> anyhow::Result<()> {
    if alerts.is_empty() {
        return Ok(());
    }
    let now = mcptrail_event::now_rfc3339_nanos();
    let mut events: Vec<Event> = alerts.iter().map(|a| a.to_event(&now)).collect();
    let mut l =
        Ledger::open(data_dir, ledger.clone()).context("opening the ledger to append alerts")?;
    l.append(&mut events)
        .context("appending alerts to the ledger")?;
    Ok(())
}

pub(crate) fn detect(args: DetectArgs, cfg: &Config, data_dir: &Path) -> anyhow::Result<ExitCode> {
    if !data_dir.join(mcptrail_ledger::LEDGER_DIR).exists() {
        anyhow::bail!(
            "no ledger in {} — record a session with `mcptrail wrap` first, or pass --data-dir",
            data_dir.display()
        );
    }
    let rules = load_rules(cfg, &args.rules, args.no_builtin)?;
    let monitors = rules.monitors().len();
    let since = args.since.as_deref().map(parse_time_bound).transpose()?;
    let as_of = match &args.as_of {
        Some(t) => Some(parse_time_bound(t)?),
        None if args.event_time_only => None,
        None => Some(mcptrail_event::now_rfc3339_nanos()),
    };
    if args.scan_clients {
        let n = super::clients::scan_and_record(
            cfg,
            data_dir,
            &cfg.ledger.to_ledger_config(),
            "mcptrail detect --scan-clients",
            Duration::ZERO,
        )?;
        if n > 0 {
            eprintln!("mcptrail detect: {n} client configuration change(s) recorded in the ledger");
        }
    }
    let mut det = Detector::new(Engine::new(rules));
    if !args.no_baseline {
        for b in BaselineStore::new(data_dir).load_all()? {
            det.engine_mut().add_baseline(b);
        }
    }
    let (mut read, mut unreadable) = (0u64, 0u64);
    let started = Instant::now();
    for rec in LedgerReader::open(data_dir, 1)? {
        let rec = rec?;
        // Only the members the rules read are built (crates/mcptrail-detect/src/lean.rs).
        let Ok(e) = det.parse_line(&rec.line) else {
            unreadable += 1;
            continue;
        };
        if since.as_deref().is_some_and(|s| e.time.as_str() < s) {
            continue;
        }
        read += 1;
        det.observe_line(&e, &rec.line);
    }
    if let Some(t) = &as_of {
        det.judge_as_of(mcptrail_detect::clock::parse_event_time(t).context("--as-of")?);
    }
    let raised = det.take_all();
    let fresh: Vec<Alert> = raised
        .iter()
        .filter(|(_, new)| *new)
        .map(|(a, _)| a.clone())
        .collect();
    if args.append {
        append_alerts(data_dir, &cfg.ledger.to_ledger_config(), &fresh)?;
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let now = mcptrail_event::now_rfc3339_nanos();
    let result = if args.json {
        raised.iter().try_for_each(|(a, _)| {
            serde_json::to_writer(&mut out, &a.to_event(&now))
                .map_err(std::io::Error::other)
                .and_then(|_| out.write_all(b"\n"))
        })
    } else {
        write_alert_table(
            &mut out,
            raised.iter().map(|(a, new)| Row {
                time: &a.event_time,
                severity: a.severity.as_str(),
                rule: &a.rule,
                summary: &a.summary,
                evidence: a.evidence_total,
                note: if *new { "" } else { " (in ledger)" },
            }),
        )
    };
    match result.and_then(|_| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(ExitCode::SUCCESS),
        other => other?,
    }
    let stats = det.engine().stats();
    eprintln!(
        "mcptrail detect: {} rules + {} built-in monitors ({} baseline version(s); silence {}) over {read} events in {:.2}s: {} alerts, {} new{}{}",
        det.engine().rules().len(),
        monitors,
        det.engine().baselines(),
        as_of.as_deref().map_or("by event time only".to_string(), |t| format!("also as of {t}")),
        started.elapsed().as_secs_f64(),
        raised.len(),
        fresh.len(),
        if args.append {
            format!(", {} appended to the ledger", fresh.len())
        } else if !fresh.is_empty() {
            " (run with --append to record them)".to_string()
        } else {
            String::new()
        },
        if unreadable > 0 {
            format!("; {unreadable} ledger lines are not events this version reads (run `mcptrail verify`)")
        } else {
            String::new()
        }
    );
    if stats.groups_evicted > 0 || stats.window_events_dropped > 0 {
        eprintln!(
            "mcptrail detect: warning: memory limits reached ({} groups forgotten, {} window events dropped); raise [detect] max_groups / max_window_events",
            stats.groups_evicted, stats.window_events_dropped
        );
    }
    Ok(ExitCode::SUCCESS)
}

struct Row<'a> {
    time: &'a str,
    severity: &'a str,
    rule: &'a str,
    summary: &'a str,
    evidence: usize,
    note: &'a str,
}

fn write_alert_table<'a>(
    out: &mut impl Write,
    rows: impl Iterator<Item = Row<'a>>,
) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<26} {:<8} {:<34} SUMMARY",
        "TIME (UTC)", "SEVERITY", "RULE"
    )?;
    let mut any = false;
    for r in rows {
        any = true;
        writeln!(
            out,
            "{:<26} {:<8} {:<34} {} [{} event{}]{}",
            r.time.get(..26).unwrap_or(r.time),
            r.severity,
            r.rule,
            r.summary,
            r.evidence,
            if r.evidence == 1 { "" } else { "s" },
            r.note
        )?;
    }
    if !any {
        writeln!(out, "(no alerts)")?;
    }
    Ok(())
}

pub(crate) fn alerts(args: AlertsArgs, data_dir: &Path) -> anyhow::Result<ExitCode> {
    let min = args
        .severity
        .as_deref()
        .map(|s| {
            Severity::parse(s).with_context(|| {
                format!("unknown severity `{s}`: use info, low, medium, high or critical")
            })
        })
        .transpose()?;
    let idx = synced_index(data_dir)?;
    let filter = mcptrail_index::Filter {
        kind: Some(EventKind::Alert.as_str().to_string()),
        since: args.since.as_deref().map(parse_time_bound).transpose()?,
        ..Default::default()
    };
    let events: Vec<Event> = idx
        .query(&filter)?
        .into_iter()
        .filter(|e| {
            let d = e.detail.as_ref();
            let sev = d
                .and_then(|d| d["severity"].as_str())
                .and_then(Severity::parse);
            let rule = d.and_then(|d| d["rule"].as_str());
            min.is_none_or(|m| sev.is_some_and(|s| s >= m))
                && args.rule.as_deref().is_none_or(|r| rule == Some(r))
        })
        .collect();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let result = if args.json {
        events.iter().try_for_each(|e| {
            serde_json::to_writer(&mut out, e)
                .map_err(std::io::Error::other)
                .and_then(|_| out.write_all(b"\n"))
        })
    } else {
        write_alert_table(
            &mut out,
            events.iter().map(|e| {
                let d = e.detail.as_ref();
                let s = |k: &str| d.and_then(|d| d[k].as_str()).unwrap_or("-");
                Row {
                    time: &e.time,
                    severity: s("severity"),
                    rule: s("rule"),
                    summary: s("summary"),
                    evidence: d.and_then(|d| d["evidence_total"].as_u64()).unwrap_or(0) as usize,
                    note: "",
                }
            }),
        )
    };
    match result.and_then(|_| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        other => other.map(|_| ExitCode::SUCCESS).map_err(Into::into),
    }
}

/// The streaming detector of a tap.
pub(crate) struct DetectingHandle {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<anyhow::Result<u64>>,
}

/// Start the streaming detector in the background when `[detect] streaming = true`: it
/// tails the ledger from its cursor and appends alerts, off the relay path (own thread). A
/// detector that cannot start is a warning; recording goes on and `mcptrail detect` catches
/// up later.
pub(crate) fn start_detecting(
    cfg: &Config,
    data_dir: &Path,
    ledger: &LedgerConfig,
) -> Option<DetectingHandle> {
    if !cfg.detect.streaming {
        return None;
    }
    let rules = match load_rules(cfg, &[], false) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mcptrail: warning: the streaming detector is off: {e:#}");
            return None;
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let (data_dir, ledger, stop2) = (data_dir.to_path_buf(), ledger.clone(), stop.clone());
    let poll = Duration::from_millis(cfg.detect.poll_interval_ms.clamp(10, 60_000));
    let cfg = cfg.clone();
    let spawned = std::thread::Builder::new()
        .name("mcptrail-detect".into())
        .spawn(move || follow(&data_dir, &ledger, rules, poll, &stop2, &cfg));
    match spawned {
        Ok(thread) => Some(DetectingHandle { stop, thread }),
        Err(e) => {
            eprintln!("mcptrail: warning: the streaming detector could not start: {e}");
            None
        }
    }
}

/// Let the detector read what the session wrote last and append its alerts (up to `grace`).
pub(crate) fn stop_detecting(handle: Option<DetectingHandle>, grace: Duration) {
    let Some(h) = handle else { return };
    h.stop.store(true, Ordering::Relaxed);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && !h.thread.is_finished() {
        std::thread::sleep(Duration::from_millis(10));
    }
    if !h.thread.is_finished() {
        eprintln!("mcptrail: warning: the detector did not finish in time; it resumes from its cursor next run");
        return;
    }
    match h.thread.join() {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => eprintln!("mcptrail: warning: the streaming detector stopped: {e:#}"),
        Err(_) => eprintln!("mcptrail: warning: the streaming detector panicked"),
    }
}

fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) -> bool {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        std::thread::sleep((end - Instant::now()).min(Duration::from_millis(20)));
    }
    true
}

/// Tail the ledger, detect, append, commit the cursor; until `stop`, then drain once.
/// Returns the number of alerts appended.
fn follow(
    data_dir: &Path,
    ledger: &LedgerConfig,
    rules: RuleSet,
    poll: Duration,
    stop: &AtomicBool,
    cfg: &Config,
) -> anyhow::Result<u64> {
    let cursor = DetectCursor::new(data_dir);
    // One detector per data directory: concurrent taps take turns.
    let _lock = loop {
        if let Some(l) = cursor.try_lock()? {
            break l;
        }
        if !sleep_unless_stopped(Duration::from_millis(500), stop) {
            return Ok(0);
        }
    };
    let removed = mcptrail_ledger::removed_through(data_dir)?.map_or(0, |t| t.last_seq);
    let (start, mut committed) = match cursor.load()? {
        None => (1, 0),
        // Retention removed the cursor's record (under signed tombstones): it cannot be
        // compared any more; go on after the removed records.
        Some(s) if s.seq <= removed => (removed + 1, s.seq),
        Some(s) => {
            let mut check = mcptrail_sinks::LedgerTail::open(data_dir, s.seq);
            match check.next_record()? {
                Some(r) if r.seq == s.seq && r.event_id == s.event_id => (s.replay_from, s.seq),
                Some(r) => anyhow::bail!(
                    "detector cursor {} names event {} at seq {}, the ledger has {}: it belongs to another ledger; move it aside",
                    cursor.path().display(),
                    s.event_id,
                    s.seq,
                    r.event_id
                ),
                None => anyhow::bail!(
                    "detector cursor {} is at seq {}, past the end of the ledger; move it aside",
                    cursor.path().display(),
                    s.seq
                ),
            }
        }
    };
    let mut tail = mcptrail_sinks::LedgerTail::open(data_dir, start);
    let mut det = Detector::new(Engine::new(rules));
    let mut chores = Chores::new(cfg, data_dir);
    chores.load_baselines(&mut det)?;
    let mut appended = 0u64;
    let mut last: Option<(u64, String)> = None;
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        while let Some(rec) = tail.next_record()? {
            if let Ok(e) = det.parse_line(&rec.line) {
                det.observe_line(&e, &rec.line);
            }
            last = Some((rec.seq, rec.event_id));
        }
        if !stopping {
            chores.run(&mut det, data_dir, ledger);
        }
        // At the end of what is written: alerts already in the ledger have been seen.
        let fresh = det.take_new();
        append_alerts(data_dir, ledger, &fresh)?;
        appended += fresh.len() as u64;
        if let Some((seq, id)) = &last {
            if *seq > committed {
                cursor.store(*seq, id, det.replay_from())?;
                committed = *seq;
            }
        }
        if stopping {
            return Ok(appended);
        }
        sleep_unless_stopped(poll, stop);
    }
}

/// The streaming detector's periodic work besides tailing: pick up baseline versions stored
/// by `mcptrail baseline learn`, relearn on `[detect.baseline] relearn_every`, judge silence
/// against the wall clock, scan client configurations on `[detect.clients] scan_every`. A
/// chore that fails is a warning; detection goes on.
struct Chores {
    cfg: Config,
    store: BaselineStore,
    newest: u64,
    first: bool,
    checked: Instant,
    judged: Instant,
    scanned: Option<Instant>,
    relearn_every: Option<Duration>,
    window_ms: i64,
    scan_every: Option<Duration>,
}

impl Chores {
    fn new(cfg: &Config, data_dir: &Path) -> Chores {
        let ms = |s: &str| mcptrail_detect::clock::parse_duration(s).ok();
        let b = &cfg.detect.baseline;
        Chores {
            cfg: cfg.clone(),
            store: BaselineStore::new(data_dir),
            newest: 0,
            first: true,
            checked: Instant::now(),
            judged: Instant::now(),
            scanned: None,
            relearn_every: b
                .relearn_every
                .as_deref()
                .and_then(ms)
                .map(|m| Duration::from_millis(m as u64)),
            window_ms: ms(&b.window).unwrap_or(14 * 86_400_000),
            scan_every: cfg
                .detect
                .clients
                .scan_every
                .as_deref()
                .and_then(ms)
                .map(|m| Duration::from_millis(m as u64)),
        }
    }

    /// Add the stored versions not loaded yet.
    fn load_baselines(&mut self, det: &mut Detector) -> anyhow::Result<()> {
        for b in self.store.load_all()? {
            if b.version > self.newest {
                self.newest = b.version;
                det.engine_mut().add_baseline(b);
            }
        }
        Ok(())
    }

    fn run(&mut self, det: &mut Detector, data_dir: &Path, ledger: &LedgerConfig) {
        let warn = |what: &str, e: anyhow::Error| {
            eprintln!("mcptrail: warning: the streaming detector could not {what}: {e:#}");
        };
        let check_every = self
            .relearn_every
            .map_or(Duration::from_secs(5), |r| r.min(Duration::from_secs(5)));
        // The first run does its chores at once (e.g. learn the first baseline); a chore that
        // fails is tried again at the next check, not at every poll.
        if self.first || self.checked.elapsed() >= check_every {
            self.first = false;
            self.checked = Instant::now();
            if let Err(e) = self.load_baselines(det) {
                warn("load the stored baselines", e);
            }
            if let Some(every) = self.relearn_every {
                if let Err(e) = self.relearn(det, data_dir, ledger, every) {
                    warn("relearn the baseline", e);
                }
            }
        }
        if let Some(every) = self.scan_every {
            if self.scanned.is_none_or(|t| t.elapsed() >= every) {
                self.scanned = Some(Instant::now());
                if let Err(e) = super::clients::scan_and_record(
                    &self.cfg,
                    data_dir,
                    ledger,
                    "the streaming detector ([detect.clients] scan_every)",
                    Duration::from_secs(1),
                ) {
                    warn("scan the MCP client configurations", e);
                }
            }
        }
        if self.judged.elapsed() >= Duration::from_secs(1) {
            self.judged = Instant::now();
            let now =
                mcptrail_detect::clock::parse_event_time(&mcptrail_event::now_rfc3339_nanos());
            if let Some(now) = now {
                det.judge_as_of(now);
            }
        }
    }

    fn relearn(
        &mut self,
        det: &mut Detector,
        data_dir: &Path,
        ledger: &LedgerConfig,
        every: Duration,
    ) -> anyhow::Result<()> {
        let now = mcptrail_detect::clock::parse_event_time(&mcptrail_event::now_rfc3339_nanos())
            .context("the clock")?;
        let latest_until = self.store.latest()?.map(|b| b.effective_from());
        if latest_until.is_some_and(|u| now - u < every.as_millis() as i64) {
            return Ok(());
        }
        let b = super::baseline::learn_and_store(
            data_dir,
            ledger,
            now - self.window_ms,
            now,
            "the streaming detector ([detect.baseline] relearn_every)",
        )?;
        self.newest = self.newest.max(b.version);
        det.engine_mut().add_baseline(b);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The streaming detector's cursor names a record retention then removed: it resumes
    /// after the removed records instead of refusing the cursor as another ledger's.
    #[test]
    fn the_streaming_detector_resumes_after_records_retention_removed() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LedgerConfig {
            segment_max_bytes: 1,
            fsync: false,
            ..LedgerConfig::default()
        };
        let mut l = mcptrail_ledger::Ledger::open(dir.path(), cfg.clone()).unwrap();
        let mut ids = Vec::new();
        for _ in 0..3 {
            let mut e = Event::new(mcptrail_event::EventKind::SystemHeartbeat);
            ids.push(e.event_id.clone());
            l.append(std::slice::from_mut(&mut e)).unwrap();
        }
        drop(l);
        DetectCursor::new(dir.path()).store(1, &ids[0], 1).unwrap();
        let first = mcptrail_ledger::list_segments(&dir.path().join(mcptrail_ledger::LEDGER_DIR))
            .unwrap()[0]
            .path
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        mcptrail_ledger::remove_segments(
            dir.path(),
            &[mcptrail_ledger::Removal {
                segment: first,
                state: mcptrail_ledger::TombstoneState::Purged,
                archive: None,
            }],
            &mcptrail_ledger::RemovalOptions::default(),
        )
        .unwrap();
        let rules = RuleSet::load(&mcptrail_detect::DetectConfig::default(), &[], None).unwrap();
        let stop = AtomicBool::new(true);
        follow(
            dir.path(),
            &cfg,
            rules,
            Duration::from_millis(10),
            &stop,
            &Config::default(),
        )
        .unwrap();
        let st = DetectCursor::new(dir.path()).load().unwrap().unwrap();
        assert_eq!(st.seq, 3, "it read on to the end");
    }
}
