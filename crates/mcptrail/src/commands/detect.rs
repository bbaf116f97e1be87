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
use mcptrail_detect::{Alert, DetectCursor, Detector, Engine, RuleSet, Severity};
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
    let since = args.since.as_deref().map(parse_time_bound).transpose()?;
    let mut det = Detector::new(Engine::new(rules));
    let (mut read, mut unreadable) = (0u64, 0u64);
    let started = Instant::now();
    for rec in LedgerReader::open(data_dir, 1)? {
        let rec = rec?;
        let Ok(e) = serde_json::from_slice::<Event>(&rec.line) else {
            unreadable += 1;
            continue;
        };
        if since.as_deref().is_some_and(|s| e.time.as_str() < s) {
            continue;
        }
        read += 1;
        det.observe(&e);
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
        "mcptrail detect: {} rules over {read} events in {:.2}s: {} alerts, {} new{}{}",
        det.engine().rules().len(),
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
    let spawned = std::thread::Builder::new()
        .name("mcptrail-detect".into())
        .spawn(move || follow(&data_dir, &ledger, rules, poll, &stop2));
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
    let mut appended = 0u64;
    let mut last: Option<(u64, String)> = None;
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        while let Some(rec) = tail.next_record()? {
            if let Ok(e) = serde_json::from_slice::<Event>(&rec.line) {
                det.observe(&e);
            }
            last = Some((rec.seq, rec.event_id));
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
        follow(dir.path(), &cfg, rules, Duration::from_millis(10), &stop).unwrap();
        let st = DetectCursor::new(dir.path()).load().unwrap().unwrap();
        assert_eq!(st.seq, 3, "it read on to the end");
    }
}
