//! `mcptrail baseline learn` (learn what each agent normally does from a window of the
//! ledger and store it as the next version) and `mcptrail baseline show` (review a version:
//! the learnt values and, per agent, the thresholds the anomaly rules alert above). The
//! streaming detector relearns through [`learn_and_store`] too.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use mcptrail_detect::baseline::{AgentBaseline, Stat};
use mcptrail_detect::clock::parse_event_time;
use mcptrail_detect::{Baseline, BaselineStore, Learner, Thresholds};
use mcptrail_event::{Event, EventKind};
use mcptrail_ledger::{Ledger, LedgerConfig, LedgerReader};
use serde_json::json;

use super::parse_time_bound;
use crate::config::Config;

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: Sub,
}

#[derive(clap::Subcommand, Debug)]
enum Sub {
    /// Learn a baseline from the ledger and store it as the next version; anomaly rules
    /// judge events after its window against it.
    Learn(LearnArgs),
    /// Show a stored baseline and the thresholds each agent is judged by.
    Show(ShowArgs),
}

#[derive(clap::Args, Debug)]
struct LearnArgs {
    /// Start of the window: RFC 3339, a date, or an age like 14d (default: `[detect.baseline]
    /// window`).
    #[arg(long)]
    since: Option<String>,
    /// End of the window (default: now); the baseline applies to events from here on.
    #[arg(long)]
    until: Option<String>,
}

#[derive(clap::Args, Debug)]
struct ShowArgs {
    /// Only this agent.
    #[arg(long)]
    agent: Option<String>,
    /// This version (default: the newest).
    #[arg(long)]
    version: Option<u64>,
    /// JSON: the stored baseline, with each agent's thresholds and limits.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: Args, cfg: &Config, data_dir: &Path) -> anyhow::Result<ExitCode> {
    match args.command {
        Sub::Learn(a) => learn(a, cfg, data_dir),
        Sub::Show(a) => show(a, cfg, data_dir),
    }
}

fn ms_of(bound: &str) -> anyhow::Result<i64> {
    parse_event_time(bound).with_context(|| format!("`{bound}` is not a time"))
}

/// Learn from the ledger's events in `[since_ms, until_ms)`.
pub(crate) fn learn_window(
    data_dir: &Path,
    since_ms: i64,
    until_ms: i64,
) -> anyhow::Result<Baseline> {
    let mut learner = Learner::new();
    let needs = mcptrail_detect::lean::Needs::for_learning();
    for rec in LedgerReader::open(data_dir, 1)? {
        let rec = rec?;
        let Ok(e) = mcptrail_detect::lean::parse(&rec.line, &needs) else {
            continue;
        };
        match parse_event_time(&e.time) {
            Some(ms) if ms >= since_ms && ms < until_ms => learner.observe(&e),
            _ => {}
        }
    }
    Ok(learner.finish(since_ms, until_ms, &mcptrail_event::now_rfc3339_nanos()))
}

/// Learn, store as the next version, and record the change as a `system.config` event.
pub(crate) fn learn_and_store(
    data_dir: &Path,
    ledger: &LedgerConfig,
    since_ms: i64,
    until_ms: i64,
    by: &str,
) -> anyhow::Result<Baseline> {
    let mut b = learn_window(data_dir, since_ms, until_ms)?;
    let store = BaselineStore::new(data_dir);
    store.store(&mut b)?;
    let mut e = Event::new(EventKind::SystemConfig);
    e.detail = Some(json!({
        "action": "baseline_learnt",
        "version": b.version,
        "since": b.since,
        "until": b.until,
        "events": b.events,
        "agents": b.agents.keys().collect::<Vec<_>>(),
        "by": by,
    }));
    Ledger::open(data_dir, ledger.clone())
        .context("opening the ledger to record the new baseline")?
        .append(&mut [e])
        .context("recording the new baseline")?;
    Ok(b)
}

fn learn(args: LearnArgs, cfg: &Config, data_dir: &Path) -> anyhow::Result<ExitCode> {
    if !data_dir.join(mcptrail_ledger::LEDGER_DIR).exists() {
        anyhow::bail!(
            "no ledger in {} — record sessions with `mcptrail wrap` first, or pass --data-dir",
            data_dir.display()
        );
    }
    let since = parse_time_bound(args.since.as_deref().unwrap_or(&cfg.detect.baseline.window))?;
    let until = match &args.until {
        Some(u) => parse_time_bound(u)?,
        None => mcptrail_event::now_rfc3339_nanos(),
    };
    let (since_ms, until_ms) = (ms_of(&since)?, ms_of(&until)?);
    if since_ms >= until_ms {
        anyhow::bail!("--since {since} is not before --until {until}");
    }
    let who = format!("{} with mcptrail baseline learn", user_name());
    let b = learn_and_store(
        data_dir,
        &cfg.ledger.to_ledger_config(),
        since_ms,
        until_ms,
        &who,
    )?;
    println!(
        "baseline v{} learnt from {} events between {} and {}: {} agent(s){}",
        b.version,
        b.events,
        b.since,
        b.until,
        b.agents.len(),
        if b.agents.is_empty() {
            String::new()
        } else {
            format!(
                " ({})",
                b.agents
                    .iter()
                    .map(|(a, ab)| format!("{a}: {} sessions, {} calls", ab.sessions, ab.calls))
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        }
    );
    println!(
        "stored in {}; anomaly rules judge events from {} on against it (`mcptrail baseline show` to review)",
        BaselineStore::new(data_dir).dir().display(),
        b.until
    );
    Ok(ExitCode::SUCCESS)
}

fn user_name() -> String {
    let uid = nix::unistd::geteuid();
    nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map_or_else(|| format!("uid {uid}"), |u| u.name)
}

fn thresholds_for(cfg: &Config, agent: &str) -> Thresholds {
    let b = &cfg.detect.baseline;
    match b.agents.get(agent) {
        Some(o) => b.thresholds.with(o),
        None => b.thresholds,
    }
}

fn show(args: ShowArgs, cfg: &Config, data_dir: &Path) -> anyhow::Result<ExitCode> {
    // The settings are checked as the detector would load them.
    mcptrail_detect::RuleSet::load(&cfg.detect, &[], cfg.base_dir.as_deref())?;
    let store = BaselineStore::new(data_dir);
    let all = store.load_all()?;
    let Some(b) = (match args.version {
        Some(v) => all.iter().find(|b| b.version == v),
        None => all.last(),
    }) else {
        match args.version {
            Some(v) => anyhow::bail!(
                "no baseline v{v} in {} (stored: {})",
                store.dir().display(),
                if all.is_empty() {
                    "none".to_string()
                } else {
                    all.iter()
                        .map(|b| format!("v{}", b.version))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ),
            None => anyhow::bail!(
                "no baseline learnt yet in {}: run `mcptrail baseline learn --since 14d`",
                store.dir().display()
            ),
        }
    };
    let agents: Vec<(&String, &AgentBaseline)> = b
        .agents
        .iter()
        .filter(|(a, _)| args.agent.as_deref().is_none_or(|x| x == a.as_str()))
        .collect();
    if let Some(a) = &args.agent {
        if agents.is_empty() {
            anyhow::bail!(
                "agent `{a}` is not in baseline v{} (agents: {})",
                b.version,
                b.agents.keys().cloned().collect::<Vec<_>>().join(", ")
            );
        }
    }
    let bc = &cfg.detect.baseline;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if args.json {
        let per_agent: serde_json::Map<String, serde_json::Value> = agents
            .iter()
            .map(|(a, ab)| {
                let t = thresholds_for(cfg, a);
                (
                    (*a).clone(),
                    json!({
                        "thresholds": t,
                        "limits": ab.limits(&t),
                        "judged": ab.sessions >= bc.min_sessions,
                        "judged_per_day": ab.sessions >= bc.min_sessions && ab.active_days >= bc.min_days,
                    }),
                )
            })
            .collect();
        let mut v = serde_json::to_value(b)?;
        if args.agent.is_some() {
            v["agents"] = json!(agents
                .iter()
                .map(|(a, ab)| ((*a).clone(), serde_json::to_value(ab).expect("serialises")))
                .collect::<serde_json::Map<_, _>>());
        }
        v["review"] = json!({
            "min_sessions": bc.min_sessions,
            "min_days": bc.min_days,
            "agents": per_agent,
        });
        serde_json::to_writer_pretty(&mut out, &v)?;
        writeln!(out)?;
        out.flush()?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "baseline v{} — learnt {} from {} events, {} → {}",
        b.version, b.learnt_at, b.events, b.since, b.until
    )?;
    writeln!(
        out,
        "judges events from {} on (newer stored versions take over from their own `until`); stored: {}",
        b.until,
        all.iter()
            .map(|x| format!("v{}", x.version))
            .collect::<Vec<_>>()
            .join(", ")
    )?;
    let t = bc.thresholds;
    let hours: Vec<String> = b
        .ingestion
        .hour_of_day_mean
        .iter()
        .enumerate()
        .map(|(h, m)| format!("{h:02}h {m:.0}"))
        .collect();
    writeln!(
        out,
        "ingestion (events per hour, mean by UTC hour over {:.1} days): {}",
        b.ingestion.days,
        hours.join("  ")
    )?;
    writeln!(
        out,
        "  alert (builtin.silence.ingestion_drop) when an hour has fewer than {:.0} % of its mean, for hours with a mean of at least {} and {} days of history",
        (1.0 - t.ingestion_drop) * 100.0,
        t.min_hourly_events,
        bc.min_days
    )?;
    for (agent, ab) in agents {
        let t = thresholds_for(cfg, agent);
        let l = ab.limits(&t);
        let custom = if bc.agents.contains_key(agent.as_str()) {
            " [thresholds from [detect.baseline.agents]]"
        } else {
            ""
        };
        writeln!(out)?;
        writeln!(
            out,
            "agent {agent} — {} sessions, {} active days, {} calls, {} results ({:.1} % failed){custom}",
            ab.sessions,
            ab.active_days,
            ab.calls,
            ab.results,
            ab.error_rate() * 100.0
        )?;
        let judged = if ab.sessions < bc.min_sessions {
            format!(
                "NOT judged: {} sessions < min_sessions {}",
                ab.sessions, bc.min_sessions
            )
        } else if ab.active_days < bc.min_days {
            format!(
                "judged; per-day metrics not: {} days < min_days {}",
                ab.active_days, bc.min_days
            )
        } else {
            "judged".to_string()
        };
        writeln!(out, "  {judged}")?;
        writeln!(
            out,
            "  {:<24} {:>10} {:>10} {:>10} {:>10}   alert above",
            "metric", "p50", "p95", "p99", "max"
        )?;
        let row = |out: &mut dyn Write,
                   name: &str,
                   s: &Stat,
                   limit: f64,
                   how: String|
         -> std::io::Result<()> {
            writeln!(
                out,
                "  {:<24} {:>10} {:>10} {:>10} {:>10}   {} ({how})",
                name,
                num(s.p50),
                num(s.p95),
                num(s.p99),
                num(s.max),
                num(limit)
            )
        };
        let vol = |floor: f64| {
            format!(
                "volume_factor {} × p99, at least {}",
                t.volume_factor,
                num(floor)
            )
        };
        row(
            &mut out,
            "result bytes / session",
            &ab.session_bytes,
            l.session_bytes,
            vol(t.min_bytes),
        )?;
        row(
            &mut out,
            "results / session",
            &ab.session_records,
            l.session_records,
            vol(t.min_records),
        )?;
        row(
            &mut out,
            "result bytes / day",
            &ab.daily_bytes,
            l.daily_bytes,
            vol(t.min_bytes),
        )?;
        row(
            &mut out,
            "results / day",
            &ab.daily_records,
            l.daily_records,
            vol(t.min_records),
        )?;
        row(
            &mut out,
            "tool calls / hour",
            &ab.hourly_calls,
            l.hourly_calls,
            format!(
                "rate_factor {} × p99, at least {}",
                t.rate_factor,
                num(t.min_hourly_calls)
            ),
        )?;
        writeln!(
            out,
            "  {:<24} {:>10.1} %{:>33}   {:.1} % (error_factor {} × rate, at least {} points above; ≥ {} results in the hour)",
            "failed results / hour",
            ab.error_rate() * 100.0,
            "",
            l.error_rate * 100.0,
            t.error_factor,
            t.error_margin * 100.0,
            t.min_error_results
        )?;
        let total = ab.calls.max(1) as f64;
        let rare: Vec<String> = (0..24)
            .filter(|h| (ab.hour_of_day[*h] as f64 / total) < t.rare_hour_share)
            .map(|h| format!("{h:02}"))
            .collect();
        writeln!(
            out,
            "  hours of day (UTC):      {}",
            ab.hour_of_day
                .iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .map(|(h, n)| format!("{h:02}h {n}"))
                .collect::<Vec<_>>()
                .join("  ")
        )?;
        writeln!(
            out,
            "    alert on calls at {} (under {:.2} % of the calls){}",
            if rare.is_empty() {
                "no hour".to_string()
            } else {
                rare.join(" ")
            },
            t.rare_hour_share * 100.0,
            if ab.calls < t.min_profile_calls || t.rare_hour_share == 0.0 {
                format!(
                    "; off: fewer than min_profile_calls {} calls, or rare_hour_share 0",
                    t.min_profile_calls
                )
            } else {
                String::new()
            }
        )?;
        writeln!(
            out,
            "  destinations:            {}{}",
            if ab.destinations.is_empty() {
                "none".to_string()
            } else {
                ab.destinations
                    .iter()
                    .map(|(h, n)| format!("{h} ({n})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
            if t.new_destinations {
                "; alert on any other host"
            } else {
                "; new hosts not alerted"
            }
        )?;
        for (name, tb) in &ab.tools {
            let shapes: Vec<String> = tb
                .shapes
                .iter()
                .map(|(s, n)| format!("{{{s}}} {n}"))
                .collect();
            writeln!(
                out,
                "  tool {name}: {} calls; result bytes p50 {} p99 {} max {}; {}; shapes: {}",
                tb.calls,
                num(tb.response_bytes.p50),
                num(tb.response_bytes.p99),
                num(tb.response_bytes.max),
                match tb.response_limit(&t) {
                    Some(l) => format!("alert above {} bytes", num(l)),
                    None => format!("not judged (< {} calls)", t.min_tool_calls),
                },
                shapes.join(", ")
            )?;
        }
        for (name, sb) in &ab.servers {
            writeln!(
                out,
                "  server {name}: {} results, {} failed",
                sb.results, sb.errors
            )?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn num(v: f64) -> String {
    mcptrail_detect::baseline::fmt_number(v)
}
