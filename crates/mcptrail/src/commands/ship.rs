//! `mcptrail ship`: deliver the ledger to the configured `[[sinks]]` (until caught up, or
//! `--follow` to keep tailing), show each sink's cursor and lag (`--status`), or set a cursor
//! deliberately (`--reset-cursor`). Also the sinks check of `doctor`.

use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use mcptrail_sinks::{
    Cursor, LedgerAlerts, LedgerTail, ShipOptions, Shipper, SinkConfig, SinkStatus,
};

use crate::config::Config;

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Only this sink (repeat for several); default: every configured sink.
    #[arg(long = "sink", value_name = "NAME")]
    sinks: Vec<String>,
    /// Keep tailing the ledger as it grows, until SIGINT or SIGTERM.
    #[arg(long, conflicts_with_all = ["status", "reset_cursor"])]
    follow: bool,
    /// Without --follow: give up on a sink whose deliveries have failed for this long (exit 1;
    /// its cursor stays, so the next run resumes there).
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    give_up_after: u64,
    /// With --follow: print each sink's progress and lag this often (0: only at the end).
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    report_every: u64,
    /// Print each sink's cursor and lag; ship nothing.
    #[arg(long, conflicts_with = "reset_cursor")]
    status: bool,
    /// Set the cursor of the sink named by --sink to SEQ, then exit: the next run ships from
    /// SEQ + 1 (0: everything again; receivers dedupe by event_id).
    #[arg(long, value_name = "SEQ")]
    reset_cursor: Option<u64>,
}

fn selected<'a>(cfg: &'a Config, names: &[String]) -> anyhow::Result<Vec<&'a SinkConfig>> {
    if cfg.sinks.is_empty() {
        anyhow::bail!("no [[sinks]] in the configuration: add one to mcptrail.toml (see README, \"Shipping to sinks\") or pass --config");
    }
    if names.is_empty() {
        return Ok(cfg.sinks.iter().collect());
    }
    names
        .iter()
        .map(|n| {
            cfg.sinks.iter().find(|s| &s.name == n).ok_or_else(|| {
                anyhow::anyhow!(
                    "no sink named `{n}`; configured: {}",
                    cfg.sinks
                        .iter()
                        .map(|s| s.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
        })
        .collect()
}

/// `3s`, `4m 10s`, `2h 5m`, `3d 4h`.
pub(crate) fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

fn lag_text(s: &SinkStatus) -> String {
    let mut t = format!("cursor {} of {} (lag {}", s.cursor, s.head, s.lag_records());
    if let Some(age) = s.lag_age().filter(|_| s.lag_records() > 0) {
        t.push_str(&format!(", oldest unshipped {} old", human_duration(age)));
    }
    t.push(')');
    t
}

pub(crate) fn run(args: Args, cfg: &Config, data_dir: &Path) -> anyhow::Result<ExitCode> {
    let sinks = selected(cfg, &args.sinks)?;
    if let Some(seq) = args.reset_cursor {
        let [sink] = sinks.as_slice() else {
            anyhow::bail!("--reset-cursor needs exactly one --sink NAME");
        };
        return reset_cursor(data_dir, sink, seq);
    }
    if !data_dir.join(mcptrail_ledger::LEDGER_DIR).is_dir() {
        anyhow::bail!(
            "no ledger in {}: record with `mcptrail wrap` first, or pass --data-dir",
            data_dir.display()
        );
    }
    if args.status {
        for s in &sinks {
            let st = mcptrail_sinks::lag(data_dir, s)?;
            println!(
                "sink {} ({}): {}",
                s.name,
                s.target.type_name(),
                lag_text(&st)
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let stop = Arc::new(AtomicBool::new(false));
    // The first SIGINT/SIGTERM stops after the batch in flight (the cursor stays consistent);
    // a second one exits at once (still safe: an uncommitted batch is sent again next time).
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, 130, stop.clone())
            .context("installing signal handlers")?;
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handlers")?;
    }
    // Set every sink up (keys, certificates) before any starts shipping.
    let built = sinks
        .into_iter()
        .map(|s| mcptrail_sinks::build(s).map(|sink| (s, sink)))
        .collect::<Result<Vec<_>, _>>()?;
    let mut threads = Vec::new();
    for (s, sink) in built {
        let alerts = LedgerAlerts {
            data_dir: data_dir.to_path_buf(),
            config: cfg.ledger.to_ledger_config(),
        };
        let mut shipper = Shipper::new(data_dir, s.clone(), sink, Some(Box::new(alerts)));
        let opts = ShipOptions {
            follow: args.follow,
            stop: stop.clone(),
            give_up_after: (!args.follow).then(|| Duration::from_secs(args.give_up_after)),
            ..ShipOptions::default()
        };
        let label = format!("{} ({})", s.name, s.target.type_name());
        let status = shipper.status_handle();
        threads.push((
            label,
            status,
            std::thread::spawn(move || shipper.run(&opts)),
        ));
    }
    if args.follow && args.report_every > 0 {
        // A progress line per sink now and then, for a `ship --follow` service's log.
        let every = Duration::from_secs(args.report_every);
        let mut last = std::time::Instant::now();
        while threads.iter().any(|(_, _, t)| !t.is_finished()) {
            std::thread::sleep(Duration::from_millis(100));
            if last.elapsed() >= every {
                last = std::time::Instant::now();
                for (label, status, _) in &threads {
                    let st = status.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    let failing = st
                        .failing_since
                        .map(|_| format!("; failing: {}", st.last_error.as_deref().unwrap_or("?")))
                        .unwrap_or_default();
                    println!(
                        "sink {label}: shipped {} so far; {}{failing}",
                        st.shipped,
                        lag_text(&st)
                    );
                }
            }
        }
    }
    let mut code = ExitCode::SUCCESS;
    for (label, _, t) in threads {
        match t.join() {
            Ok(Ok(st)) => {
                let head = if st.gave_up {
                    code = ExitCode::from(1);
                    format!(
                        "gave up after failing for {}s: {}",
                        args.give_up_after,
                        st.last_error.as_deref().unwrap_or("unknown error")
                    )
                } else {
                    format!("shipped {} events in {} batch(es)", st.shipped, st.batches)
                };
                let mut line = format!("sink {label}: {head}; filtered {}", st.filtered);
                if st.failures > 0 && !st.gave_up {
                    line.push_str(&format!(", {} failed attempts retried", st.failures));
                }
                println!("{line}; {}", lag_text(&st));
                if st.alerts_raised > 0 {
                    println!(
                        "sink {label}: {} alert(s) recorded in the ledger",
                        st.alerts_raised
                    );
                }
                if let Some(e) = &st.alert_error {
                    eprintln!("mcptrail: sink {label}: an alert could not be recorded: {e}");
                }
            }
            Ok(Err(e)) => {
                eprintln!("mcptrail: error: sink {label}: {e}");
                code = ExitCode::from(2);
            }
            Err(_) => {
                eprintln!("mcptrail: error: sink {label}: the shipping thread panicked");
                code = ExitCode::from(2);
            }
        }
    }
    Ok(code)
}

fn reset_cursor(data_dir: &Path, sink: &SinkConfig, seq: u64) -> anyhow::Result<ExitCode> {
    // Not while a shipper of this sink runs: it would overwrite the cursor at its next commit.
    let _lock = mcptrail_sinks::try_lock_sink(data_dir, &sink.name)?;
    let cursor = Cursor::new(data_dir, &sink.name);
    let event_id = if seq == 0 {
        String::new()
    } else {
        let mut tail = LedgerTail::open(data_dir, seq);
        match tail.next_record()? {
            Some(r) if r.seq == seq => r.event_id,
            _ => anyhow::bail!(
                "the ledger in {} has no record with seq {seq}",
                data_dir.display()
            ),
        }
    };
    let before = cursor.load().ok().flatten().map(|c| c.seq);
    cursor.store(seq, &event_id)?;
    println!(
        "sink {}: cursor set to seq {seq}{} — the next `mcptrail ship` delivers from seq {}",
        sink.name,
        before.map(|b| format!(" (was {b})")).unwrap_or_default(),
        seq + 1
    );
    Ok(ExitCode::SUCCESS)
}

/// `doctor`'s view of one sink: connectivity and lag.
pub(crate) struct SinkHealth {
    /// 0 pass, 1 warn, 2 fail.
    pub(crate) severity: u8,
    pub(crate) line: String,
    pub(crate) fix: Option<String>,
}

/// Probe each sink (connect, no event sent — a webhook gets a signed empty batch) and read
/// its cursor lag.
pub(crate) fn health(data_dir: &Path, cfg: &Config) -> Vec<SinkHealth> {
    cfg.sinks
        .iter()
        .map(|s| {
            let label = format!("{} ({})", s.name, s.target.type_name());
            let probe = mcptrail_sinks::build(s)
                .map_err(|e| (e.to_string(), "fix the sink's settings in mcptrail.toml".to_string()))
                .and_then(|mut sink| {
                    sink.probe().map_err(|e| {
                        (e.to_string(), match e.kind {
                            mcptrail_sinks::SendErrorKind::Connect => "start the receiver or correct its address; events wait in the ledger meanwhile".to_string(),
                            _ => "check the receiver's configuration (stream, credentials, URL)".to_string(),
                        })
                    })
                });
            let lag = if data_dir.join(mcptrail_ledger::LEDGER_DIR).is_dir() {
                mcptrail_sinks::lag(data_dir, s).map_err(|e| e.to_string())
            } else {
                Ok(SinkStatus::default())
            };
            match (probe, lag) {
                (_, Err(e)) => SinkHealth {
                    severity: 2,
                    line: format!("{label}: {e}"),
                    fix: Some(format!("inspect the cursor; `mcptrail ship --sink {} --reset-cursor SEQ` sets it", s.name)),
                },
                (Err((e, fix)), Ok(st)) => SinkHealth {
                    severity: 2,
                    line: format!("{label}: {e}; {}", lag_text(&st)),
                    fix: Some(fix),
                },
                (Ok(what), Ok(st)) => {
                    let behind = s.alerts.lag_records.is_some_and(|t| st.lag_records() > t)
                        || s.alerts.lag_age.zip(st.lag_age()).is_some_and(|(t, a)| st.lag_records() > 0 && a > t);
                    SinkHealth {
                        severity: u8::from(behind),
                        line: format!("{label}: {what}; {}", lag_text(&st)),
                        fix: behind.then(|| format!("run `mcptrail ship --sink {}` (or keep `mcptrail ship --follow` running)", s.name)),
                    }
                }
            }
        })
        .collect()
}
