//! `mcptrail retention plan | run | selfcheck | policy`: the retention engine
//! (`mcptrail-retention`) on this data directory, with the `[retention]` configuration.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use mcptrail_retention::{
    Action, Archive, DirArchive, Engine, EngineConfig, FixedClock, Place, Plan, S3Archive,
    SelfcheckReport, Status, SystemClock,
};

use crate::config::{token_key_path, Config};

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: Sub,
}

#[derive(clap::Subcommand, Debug)]
enum Sub {
    /// What a run would archive and purge now, and why (reads only).
    Plan(Common),
    /// Apply the effective policy: archive, then purge, what the plan says (segments oldest
    /// first, never the active one), leaving signed tombstones; then run the self-check. No
    /// fresh approval: the policy itself was approved (or bootstrapped from `[retention]`).
    Run(RunArgs),
    /// Check that retention, encryption and deletion did what the policy says; recorded as
    /// a `governance.selfcheck` event. Exit 1 when a check fails.
    Selfcheck(Common),
    /// Show the effective policy, where its authority comes from, and the configuration's.
    Policy(Common),
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    #[command(flatten)]
    common: Common,
    /// Keep running: again every DURATION (`30m`, `6h`, `1d`), until killed — the scheduled
    /// retention and self-check. Killing it mid-run is safe (the next run finishes the job).
    #[arg(long, value_name = "DURATION", conflicts_with = "now")]
    every: Option<String>,
}

fn parse_every(s: &str) -> anyhow::Result<std::time::Duration> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.len().saturating_sub(1));
    let n: u64 = num
        .parse()
        .with_context(|| format!("--every {s}: use a number and s, m, h or d (e.g. 6h)"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => bail!("--every {s}: use a number and s, m, h or d (e.g. 6h)"),
    };
    if secs == 0 {
        bail!("--every must be at least 1s");
    }
    Ok(std::time::Duration::from_secs(secs))
}

#[derive(clap::Args, Debug)]
struct Common {
    /// Act as if it were this time (RFC 3339 or a date). `run` accepts only a time that is
    /// not in the future (a future time would purge early).
    #[arg(long, value_name = "TIME")]
    now: Option<String>,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

fn who() -> String {
    nix::unistd::User::from_uid(nix::unistd::geteuid())
        .ok()
        .flatten()
        .map_or_else(|| format!("uid {}", nix::unistd::geteuid()), |u| u.name)
}

fn parse_now(s: &str) -> anyhow::Result<time::OffsetDateTime> {
    let t = super::parse_time_bound(s).with_context(|| format!("--now {s}"))?;
    Ok(mcptrail_event::parse_rfc3339(&t)?)
}

/// The engine of `data_dir` as the configuration describes it.
pub(crate) fn engine(
    cfg: &Config,
    data_dir: &Path,
    now: Option<time::OffsetDateTime>,
) -> anyhow::Result<Engine> {
    let r = &cfg.retention;
    let mut archives: Vec<Arc<dyn Archive>> = Vec::new();
    if let Some(dir) = &r.archive_dir {
        archives.push(Arc::new(DirArchive::new(dir)));
    }
    if let Some(name) = &r.archive_s3_sink {
        let s3 = cfg
            .sinks
            .iter()
            .find(|s| &s.name == name)
            .and_then(|s| match &s.target {
                mcptrail_sinks::SinkTarget::S3(c) => Some(c),
                _ => None,
            })
            .with_context(|| format!("[retention] archive_s3_sink = \"{name}\": no [[sinks]] of type \"s3\" has that name"))?;
        archives.push(Arc::new(S3Archive::new(s3)?));
    }
    let seed = super::load_seed(None, cfg.ledger.mac_seed_path.as_deref(), data_dir)?;
    let verify = mcptrail_ledger::VerifyOptions {
        skip_macs: seed.is_none(),
        seed,
        anchor_dirs: cfg.ledger.anchor_dir.iter().cloned().collect(),
        anchors: mcptrail_sinks::checkpoints::sink_anchors(&cfg.sinks),
        ..Default::default()
    };
    let event_hook: Option<mcptrail_retention::EventHook> = if cfg.redact.enabled {
        let key = mcptrail_redact::TokenKey::load_or_create(&token_key_path(cfg, data_dir))?;
        let redactor = mcptrail_redact::Redactor::new(&cfg.redact, key)?;
        Some(Arc::new(move |e: &mut mcptrail_event::Event| {
            redactor.redact_event(e)
        }))
    } else {
        None
    };
    let master_key = mcptrail_redact::MasterKey::load(cfg.redact.master_key_file.as_deref())
        .ok()
        .map(Arc::new);
    let clock: Arc<dyn mcptrail_retention::Clock> = match now {
        Some(t) => Arc::new(FixedClock::new(t)),
        None => Arc::new(SystemClock),
    };
    Ok(Engine::new(
        data_dir,
        EngineConfig {
            ledger: cfg.ledger.to_ledger_config(),
            archives,
            wait_for_sinks: if r.wait_for_sinks {
                cfg.sinks.iter().map(|s| s.name.clone()).collect()
            } else {
                Vec::new()
            },
            verify,
            event_hook,
            master_key,
        },
        clock,
    ))
}

pub(crate) fn run(
    args: Args,
    data_dir: &Path,
    cfg: &Config,
    config_file: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    if !data_dir.join(mcptrail_ledger::LEDGER_DIR).exists() {
        bail!("no ledger in {}", data_dir.display());
    }
    let configured = cfg.retention.policy()?;
    match args.command {
        Sub::Plan(c) => {
            let e = engine(cfg, data_dir, c.now.as_deref().map(parse_now).transpose()?)?;
            let plan = e.plan_configured(configured.as_ref(), config_file.as_deref())?;
            if c.json {
                println!("{}", serde_json::to_string_pretty(&plan)?);
            } else {
                print_plan(&plan);
            }
            Ok(ExitCode::SUCCESS)
        }
        Sub::Policy(c) => {
            let e = engine(cfg, data_dir, None)?;
            let current = e.effective_policy()?;
            if c.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "effective": current,
                        "configured": configured,
                    }))?
                );
                return Ok(ExitCode::SUCCESS);
            }
            match &current {
                Some(p) => println!(
                    "effective  {} (digest {}, set {} by {}, recorded at seq {})",
                    p.policy.describe(),
                    &p.digest[..12],
                    p.set_at,
                    describe(&p.source),
                    p.event_seq
                ),
                None => println!("effective  none (nothing is archived or purged)"),
            }
            match &configured {
                Some(p) if current.as_ref().is_some_and(|c| c.policy != *p) => println!(
                    "configured {} — differs, not applied: a change needs a second principal's approval (the governance server)",
                    p.describe()
                ),
                Some(p) if current.is_none() => println!(
                    "configured {} — recorded as the effective policy by the first `mcptrail retention run`",
                    p.describe()
                ),
                Some(p) => println!("configured {} (the same)", p.describe()),
                None => println!("configured none ([retention] retention_days is not set)"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Sub::Run(RunArgs { common: c, every }) => {
            let now = c.now.as_deref().map(parse_now).transpose()?;
            if now.is_some_and(|t| t > time::OffsetDateTime::now_utc()) {
                bail!("--now may not be in the future for `run`: it would archive and purge before the policy says (use `retention plan --now` to preview)");
            }
            if let Some(every) = every.as_deref().map(parse_every).transpose()? {
                loop {
                    match run_once(
                        cfg,
                        data_dir,
                        None,
                        configured.as_ref(),
                        config_file.as_deref(),
                        c.json,
                    ) {
                        Ok(_) => {}
                        // One failed run does not end the schedule: the next one retries.
                        Err(e) => eprintln!(
                            "mcptrail: retention run failed: {e:#}; next in {}s",
                            every.as_secs()
                        ),
                    }
                    std::thread::sleep(every);
                }
            }
            run_once(
                cfg,
                data_dir,
                now,
                configured.as_ref(),
                config_file.as_deref(),
                c.json,
            )
        }
        Sub::Selfcheck(c) => {
            let e = engine(cfg, data_dir, c.now.as_deref().map(parse_now).transpose()?)?;
            let sc = e.selfcheck()?;
            if c.json {
                println!("{}", serde_json::to_string_pretty(&sc)?);
            } else {
                print_selfcheck(&sc);
            }
            Ok(if sc.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}

/// One `retention run`: bootstrap the configured policy, run, self-check, print.
fn run_once(
    cfg: &Config,
    data_dir: &Path,
    now: Option<time::OffsetDateTime>,
    configured: Option<&mcptrail_retention::Policy>,
    config_file: Option<&Path>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let e = engine(cfg, data_dir, now)?;
    if let Some(p) = configured {
        let (_, note) = e.bootstrap(p, config_file, &who())?;
        if let Some(n) = note {
            eprintln!("mcptrail: note: {n}");
        }
    }
    let report = e.run()?;
    let sc = e.selfcheck()?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"run": report, "selfcheck": sc}))?
        );
    } else {
        if report.recovered {
            println!("note  finished an interrupted run");
        }
        for d in &report.archived {
            println!(
                "archived  {} (seq {}..={}) to {}; removed here under {}",
                d.segment,
                d.first_seq,
                d.last_seq,
                d.copies.join(", "),
                d.tombstone
            );
        }
        for d in &report.purged {
            println!(
                "purged    {} (seq {}..={}) under {}{}",
                d.segment,
                d.first_seq,
                d.last_seq,
                d.tombstone,
                if d.copies.is_empty() {
                    String::new()
                } else {
                    format!("; {}", d.copies.join("; "))
                }
            );
        }
        for (seg, why) in &report.held {
            println!("held      {seg}: {why}");
        }
        if report.archived.is_empty() && report.purged.is_empty() {
            println!("nothing to archive or purge now");
        }
        if report.index_rows_purged > 0 {
            println!(
                "index     {} removed record(s) deleted from the index",
                report.index_rows_purged
            );
        }
        print_selfcheck(&sc);
    }
    Ok(if sc.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn describe(s: &mcptrail_retention::PolicySource) -> String {
    match s {
        mcptrail_retention::PolicySource::Config { file, by } => format!(
            "{by} from {}",
            file.as_deref().unwrap_or("the configuration")
        ),
        mcptrail_retention::PolicySource::Approved(a) => format!(
            "request {} by {}, approved by {}",
            a.request_id, a.requested_by, a.approved_by
        ),
    }
}

fn print_plan(plan: &Plan) {
    match &plan.policy {
        Some(p) => println!("policy    {} (as of {})", p.policy.describe(), plan.now),
        None => println!("policy    none"),
    }
    for n in &plan.notes {
        println!("note      {n}");
    }
    println!(
        "{:<8}  {:<32} {:<22} {:<9} why",
        "action", "segment", "seq", "where"
    );
    for s in &plan.segments {
        let action = match s.action {
            Action::Keep => "keep",
            Action::Archive => "ARCHIVE",
            Action::Purge => "PURGE",
        };
        let place = match s.place {
            Place::Active => "active",
            Place::Local => "here",
            Place::Archived => "archive",
        };
        let seqs = if s.last_seq == 0 {
            format!("{}..", s.first_seq)
        } else {
            format!("{}..={}", s.first_seq, s.last_seq)
        };
        println!(
            "{action:<8}  {:<32} {seqs:<22} {place:<9} {}",
            s.segment, s.reason
        );
    }
}

pub(crate) fn print_selfcheck(sc: &SelfcheckReport) {
    for c in &sc.checks {
        let tag = match c.status {
            Status::Pass => "PASS",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        };
        let mut lines = c.details.iter();
        println!(
            "{tag}  {:<20} {}",
            c.name,
            lines.next().map(String::as_str).unwrap_or("")
        );
        for l in lines {
            println!("      {:<20} {l}", "");
        }
    }
    println!(
        "{}  self-check {} (recorded as governance.selfcheck, seq {})",
        if sc.ok { "OK  " } else { "FAIL" },
        if sc.ok { "passed" } else { "FAILED" },
        sc.event_seq
    );
}
